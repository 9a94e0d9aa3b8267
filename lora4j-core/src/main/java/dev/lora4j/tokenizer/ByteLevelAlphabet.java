package dev.lora4j.tokenizer;

/**
 * GPT-2's reversible map between bytes and printable characters: byte-level BPE vocabularies spell every byte
 * as one of these 256 characters, so that whitespace and control bytes never appear in a token's text.
 * Printable Latin-1 bytes map to themselves; the other 68 bytes map to U+0100.. in byte order.
 */
final class ByteLevelAlphabet {
    private static final char[] BYTE_TO_CHAR = new char[256];
    private static final byte[] CHAR_TO_BYTE = new byte[0x200];
    private static final boolean[] IS_BYTE_CHAR = new boolean[0x200];

    static {
        int next = 0;
        for (int b = 0; b < 256; b++) {
            boolean printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            char c = printable ? (char) b : (char) (256 + next++);
            BYTE_TO_CHAR[b] = c;
            CHAR_TO_BYTE[c] = (byte) b;
            IS_BYTE_CHAR[c] = true;
        }
    }

    private ByteLevelAlphabet() {}

    static char charOf(int unsignedByte) {
        return BYTE_TO_CHAR[unsignedByte];
    }

    /** The byte a character stands for, or -1 when the character is not in the alphabet. */
    static int byteOf(int codePoint) {
        return codePoint >= 0 && codePoint < IS_BYTE_CHAR.length && IS_BYTE_CHAR[codePoint] ? CHAR_TO_BYTE[codePoint] & 0xFF : -1;
    }

    /** The UTF-8 bytes of a text, each spelled as its alphabet character. */
    static String encode(String text) {
        byte[] utf8 = Utf8.encode(text);
        char[] out = new char[utf8.length];
        for (int i = 0; i < utf8.length; i++) out[i] = BYTE_TO_CHAR[utf8[i] & 0xFF];
        return new String(out);
    }
}
