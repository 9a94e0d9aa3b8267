package dev.lora4j.train.data;

import dev.lora4j.tokenizer.StreamingDecoder;
import dev.lora4j.tokenizer.Tokenizer;

/**
 * The character range of the source text that each token of its encoding covers, found by decoding the tokens
 * one at a time (the tokenizer keeps no offsets). Byte-level tokenizers give back the text exactly. SentencePiece
 * tokenizers may add or drop spaces (a leading "▁"); the decoded text is then aligned to the source with
 * whitespace differences allowed. Tokens that only complete together (the bytes of one character) share the range
 * of the token that completes them.
 */
final class TokenOffsets {
    private TokenOffsets() {}

    /** {@code [starts, ends]}, in characters of {@code text}; null when the decoded text cannot be aligned to it. */
    static int[][] of(Tokenizer tokenizer, int[] ids, String text) {
        StreamingDecoder decoder = tokenizer.streamingDecoder(false);
        int n = ids.length;
        int[] start = new int[n], end = new int[n];
        StringBuilder decoded = new StringBuilder();
        for (int k = 0; k < n; k++) {
            start[k] = decoded.length();
            decoded.append(decoder.push(ids[k]));
            end[k] = decoded.length();
        }
        decoded.append(decoder.flush());
        if (n > 0) end[n - 1] = decoded.length();
        // A token whose text was held back belongs with the token that released it.
        for (int k = n - 2; k >= 0; k--) {
            if (start[k] == end[k] && end[k] == start[k + 1]) end[k] = end[k + 1];
        }
        String d = decoded.toString();
        if (d.equals(text)) return new int[][]{start, end};
        int[] map = align(d, text);
        if (map == null) return null;
        for (int k = 0; k < n; k++) {
            start[k] = map[start[k]];
            end[k] = map[end[k]];
        }
        return new int[][]{start, end};
    }

    /**
     * Maps each position of {@code decoded} (and its end) to a position of {@code original}, where the two differ
     * only in whitespace; null when they differ otherwise.
     */
    static int[] align(String decoded, String original) {
        int[] map = new int[decoded.length() + 1];
        int i = 0, j = 0;
        while (i < decoded.length()) {
            if (j < original.length() && decoded.charAt(i) == original.charAt(j)) {
                map[i++] = j++;
            } else if (Character.isWhitespace(decoded.charAt(i))) {
                map[i++] = j;
            } else if (j < original.length() && Character.isWhitespace(original.charAt(j))) {
                j++;
            } else {
                return null;
            }
        }
        while (j < original.length() && Character.isWhitespace(original.charAt(j))) j++;
        if (j != original.length()) return null;
        map[decoded.length()] = j;
        return map;
    }
}
