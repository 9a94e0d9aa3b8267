package dev.lora4j.tokenizer;

import java.util.Arrays;

/**
 * Decodes tokens one at a time with the reference's incremental algorithm: keep a short window of ids, decode
 * it, and return what follows the text already returned. The window always keeps the token before the new ones,
 * so rules that depend on a token's neighbour (SentencePiece's "strip the leading space of the first token")
 * act as they do on the whole text; text ending in U+FFFD is held back, since it is usually an incomplete
 * UTF-8 sequence that the next byte token completes. Not thread-safe: one per generation.
 */
public final class StreamingDecoder {
    private final Tokenizer tokenizer;
    private final boolean skipSpecialTokens;
    private int[] ids = new int[16];
    private int count;
    private String prefix = "";
    private int prefixIndex;

    StreamingDecoder(Tokenizer tokenizer, boolean skipSpecialTokens) {
        this.tokenizer = tokenizer;
        this.skipSpecialTokens = skipSpecialTokens;
    }

    /** Adds one token and returns the text it completes (possibly empty). */
    public String push(int id) {
        if (prefix.isEmpty() && count > 0) {
            String newPrefix = tokenizer.decode(ids, 0, count, skipSpecialTokens);
            if (!newPrefix.endsWith(String.valueOf(Utf8.REPLACEMENT))) {
                prefix = newPrefix;
                prefixIndex = count;
            }
        }
        if (count == ids.length) ids = Arrays.copyOf(ids, count * 2);
        ids[count++] = id;
        String text = tokenizer.decode(ids, 0, count, skipSpecialTokens);
        if (text.length() <= prefix.length() || text.endsWith(String.valueOf(Utf8.REPLACEMENT))) return "";
        String fresh = freshText(text);
        int newPrefixIndex = count - prefixIndex;
        System.arraycopy(ids, prefixIndex, ids, 0, count - prefixIndex);
        count -= prefixIndex;
        prefix = tokenizer.decode(ids, 0, count, skipSpecialTokens);
        prefixIndex = newPrefixIndex;
        return fresh;
    }

    /**
     * What the window adds to the text already returned. Normally the window's text extends that text; it does
     * not when a run of byte tokens turns out to be invalid UTF-8 as a whole (the reference fails there), and
     * then the tokens after the returned text are decoded on their own.
     */
    private String freshText(String text) {
        return text.startsWith(prefix) ? text.substring(prefix.length()) : tokenizer.decode(ids, prefixIndex, count, skipSpecialTokens);
    }

    /** Returns any text still held back (such as an incomplete UTF-8 sequence, as U+FFFD) and starts afresh. */
    public String flush() {
        String text = tokenizer.decode(ids, 0, count, skipSpecialTokens);
        String rest = text.length() > prefix.length() || !text.startsWith(prefix) ? freshText(text) : "";
        count = 0;
        prefix = "";
        prefixIndex = 0;
        return rest;
    }
}
