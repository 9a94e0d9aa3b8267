package dev.lora4j.tokenizer;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;

/**
 * Finds added tokens in text: leftmost match first, longest among those starting there, then the single_word,
 * lstrip and rstrip rules, exactly as the reference applies them. The text between matches stays text.
 */
final class AddedTokenMatcher {
    private static final Pattern WORD_CHAR = Pattern.compile("\\w", Pattern.UNICODE_CHARACTER_CLASS);

    private static final class Node {
        final Map<Character, Node> children = new HashMap<>(4);
        AddedToken token;
    }

    private final Node root = new Node();
    private final boolean empty;

    /** patterns: the text to look for (the content, or its normalized form) for each token. */
    AddedTokenMatcher(Map<String, AddedToken> patterns) {
        for (Map.Entry<String, AddedToken> e : patterns.entrySet()) {
            String p = e.getKey();
            if (p.isEmpty()) continue;
            Node node = root;
            for (int i = 0; i < p.length(); i++) node = node.children.computeIfAbsent(p.charAt(i), c -> new Node());
            node.token = e.getValue();
        }
        empty = root.children.isEmpty();
    }

    /** Splits a text piece into added-token pieces and the text around them; empty pieces are dropped. */
    List<Piece> split(Piece piece) {
        String s = piece.text();
        if (empty || s.isEmpty()) return s.isEmpty() ? List.of() : List.of(piece);
        List<Piece> out = new ArrayList<>();
        int startOffset = 0;
        int i = 0;
        while (i < s.length()) {
            Node node = root.children.get(s.charAt(i));
            if (node == null) {
                i++;
                continue;
            }
            AddedToken found = null;
            int foundEnd = -1;
            for (int j = i + 1; ; j++) {
                if (node.token != null) {
                    found = node.token;
                    foundEnd = j;
                }
                if (j >= s.length()) break;
                node = node.children.get(s.charAt(j));
                if (node == null) break;
            }
            if (found == null) {
                i++;
                continue;
            }
            int start = i, stop = foundEnd;
            i = foundEnd;
            if (found.singleWord()) {
                boolean startSpace = start == 0 || !endsWithWordChar(s, start);
                boolean stopSpace = stop == s.length() || !startsWithWordChar(s, stop);
                if (!startSpace || !stopSpace) continue;
            }
            if (found.lstrip()) {
                int newStart = start;
                while (newStart > 0 && Normalizer.isWhitespace(s.codePointBefore(newStart))) newStart -= Character.charCount(s.codePointBefore(newStart));
                // Spaces a previous match already took stay with it.
                start = Math.max(newStart, startOffset);
            }
            if (found.rstrip()) {
                while (stop < s.length() && Normalizer.isWhitespace(s.codePointAt(stop))) stop += Character.charCount(s.codePointAt(stop));
            }
            if (startOffset < start) out.add(Piece.text(s.substring(startOffset, start), piece.atTextStart() && startOffset == 0));
            out.add(new Piece(s.substring(start, stop), found.id(), piece.atTextStart() && start == 0));
            startOffset = stop;
        }
        if (startOffset < s.length()) out.add(Piece.text(s.substring(startOffset), piece.atTextStart() && startOffset == 0));
        return out;
    }

    private static boolean endsWithWordChar(String s, int end) {
        return WORD_CHAR.matcher(Character.toString(s.codePointBefore(end))).matches();
    }

    private static boolean startsWithWordChar(String s, int start) {
        return WORD_CHAR.matcher(Character.toString(s.codePointAt(start))).matches();
    }
}
