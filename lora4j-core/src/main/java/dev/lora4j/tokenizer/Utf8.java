package dev.lora4j.tokenizer;

import java.io.ByteArrayOutputStream;

/**
 * UTF-8 with the exact replacement rules of the reference tokenizer: a lone surrogate in Java text encodes as
 * U+FFFD, and lossy decoding replaces each maximal invalid subsequence by one U+FFFD (the Unicode "maximal
 * subpart" practice), so that decoded text matches character for character.
 */
final class Utf8 {
    static final char REPLACEMENT = '\uFFFD';

    private Utf8() {}

    static byte[] encode(String text) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(text.length() + 16);
        for (int i = 0; i < text.length(); ) {
            int cp = text.codePointAt(i);
            i += Character.charCount(cp);
            if (cp >= 0xD800 && cp <= 0xDFFF) cp = REPLACEMENT;
            if (cp < 0x80) {
                out.write(cp);
            } else if (cp < 0x800) {
                out.write(0xC0 | (cp >> 6));
                out.write(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                out.write(0xE0 | (cp >> 12));
                out.write(0x80 | ((cp >> 6) & 0x3F));
                out.write(0x80 | (cp & 0x3F));
            } else {
                out.write(0xF0 | (cp >> 18));
                out.write(0x80 | ((cp >> 12) & 0x3F));
                out.write(0x80 | ((cp >> 6) & 0x3F));
                out.write(0x80 | (cp & 0x3F));
            }
        }
        return out.toByteArray();
    }

    /** Replaces lone surrogates by U+FFFD: the text every later stage sees is then valid Unicode. */
    static String sanitize(String text) {
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            if (Character.isSurrogate(c)) {
                boolean paired = Character.isHighSurrogate(c) && i + 1 < text.length() && Character.isLowSurrogate(text.charAt(i + 1));
                if (!paired) return new String(encode(text), java.nio.charset.StandardCharsets.UTF_8);
                i++;
            }
        }
        return text;
    }

    /** Decodes the bytes, or returns null when they are not valid UTF-8. */
    static String decodeStrict(byte[] bytes, int length) {
        StringBuilder sb = new StringBuilder(length);
        return decode(bytes, length, sb, false) ? sb.toString() : null;
    }

    static String decodeLossy(byte[] bytes, int length) {
        StringBuilder sb = new StringBuilder(length);
        decode(bytes, length, sb, true);
        return sb.toString();
    }

    private static boolean decode(byte[] b, int n, StringBuilder out, boolean lossy) {
        int i = 0;
        while (i < n) {
            int b0 = b[i] & 0xFF;
            if (b0 < 0x80) {
                out.append((char) b0);
                i++;
                continue;
            }
            int width;
            int lo = 0x80, hi = 0xBF;
            if (b0 >= 0xC2 && b0 <= 0xDF) width = 2;
            else if (b0 >= 0xE0 && b0 <= 0xEF) {
                width = 3;
                if (b0 == 0xE0) lo = 0xA0;
                else if (b0 == 0xED) hi = 0x9F;
            } else if (b0 >= 0xF0 && b0 <= 0xF4) {
                width = 4;
                if (b0 == 0xF0) lo = 0x90;
                else if (b0 == 0xF4) hi = 0x8F;
            } else width = 0;
            // Length of the longest valid prefix of a sequence starting here: that prefix becomes one U+FFFD.
            int valid = 1;
            if (width > 0) {
                for (int k = 1; k < width && i + k < n; k++) {
                    int bk = b[i + k] & 0xFF;
                    boolean ok = k == 1 ? bk >= lo && bk <= hi : bk >= 0x80 && bk <= 0xBF;
                    if (!ok) break;
                    valid++;
                }
            }
            if (width == 0 || valid < width) {
                if (!lossy) return false;
                out.append(REPLACEMENT);
                i += valid;
                continue;
            }
            int cp = b0 & (0xFF >> (width + 1));
            for (int k = 1; k < width; k++) cp = (cp << 6) | (b[i + k] & 0x3F);
            out.appendCodePoint(cp);
            i += width;
        }
        return true;
    }
}
