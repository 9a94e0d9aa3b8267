package dev.lora4j.tokenizer;

import java.util.ArrayList;
import java.util.List;
import java.util.function.IntPredicate;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The "pre_tokenizer" stage of tokenizer.json: splits runs of text into the words that the model tokenizes one
 * at a time (and for byte-level vocabularies, respells them in the byte alphabet). Pieces that are already added
 * tokens pass through untouched; empty pieces are dropped.
 */
interface PreTokenizer {
    List<Piece> apply(List<Piece> pieces);

    record Sequence(List<PreTokenizer> steps) implements PreTokenizer {
        public List<Piece> apply(List<Piece> pieces) {
            for (PreTokenizer p : steps) pieces = p.apply(pieces);
            return pieces;
        }
    }

    record Split(Pattern pattern, SplitBehavior behavior, boolean invert) implements PreTokenizer {
        public List<Piece> apply(List<Piece> pieces) {
            return splitEach(pieces, piece -> behavior.split(piece, regexMatches(pattern, piece.text(), invert)));
        }
    }

    /**
     * GPT-2 style: an optional space before every run, the GPT-2 split regex when use_regex is true, then every
     * byte respelled in the byte alphabet.
     */
    record ByteLevel(boolean addPrefixSpace, boolean useRegex) implements PreTokenizer {
        private static final Pattern GPT2 = SplitRegex.compile(SplitRegex.GPT2, "ByteLevel pre-tokenizer");

        public List<Piece> apply(List<Piece> pieces) {
            List<Piece> out = new ArrayList<>(pieces.size() * 4);
            for (Piece piece : pieces) {
                if (piece.isToken()) {
                    out.add(piece);
                    continue;
                }
                Piece p = piece;
                if (addPrefixSpace && !p.text().startsWith(" ")) p = Piece.text(" " + p.text(), p.atTextStart());
                List<Piece> parts = useRegex ? SplitBehavior.ISOLATED.split(p, regexMatches(GPT2, p.text(), false)) : List.of(p);
                for (Piece part : parts) {
                    if (!part.text().isEmpty()) out.add(Piece.text(ByteLevelAlphabet.encode(part.text()), part.atTextStart()));
                }
            }
            return out;
        }
    }

    enum PrependScheme { FIRST, ALWAYS, NEVER }

    /** SentencePiece style: spaces become the replacement character "▁", which then starts each word. */
    record Metaspace(int replacement, PrependScheme prependScheme, boolean split) implements PreTokenizer {
        public List<Piece> apply(List<Piece> pieces) {
            String rep = Character.toString(replacement);
            return splitEach(pieces, piece -> {
                String text = piece.text().replace(" ", rep);
                boolean prepend = switch (prependScheme) {
                    case ALWAYS -> !text.startsWith(rep);
                    case FIRST -> !text.startsWith(rep) && piece.atTextStart();
                    case NEVER -> false;
                };
                Piece p = Piece.text(prepend ? rep + text : text, piece.atTextStart());
                if (!split) return List.of(p);
                return SplitBehavior.MERGED_WITH_NEXT.split(p, charMatches(p.text(), cp -> cp == replacement));
            });
        }
    }

    record Digits(boolean individualDigits) implements PreTokenizer {
        public List<Piece> apply(List<Piece> pieces) {
            SplitBehavior b = individualDigits ? SplitBehavior.ISOLATED : SplitBehavior.CONTIGUOUS;
            return splitEach(pieces, piece -> b.split(piece, charMatches(piece.text(), PreTokenizer::isNumeric)));
        }
    }

    record WhitespaceSplit() implements PreTokenizer {
        public List<Piece> apply(List<Piece> pieces) {
            return splitEach(pieces, piece -> SplitBehavior.REMOVED.split(piece, charMatches(piece.text(), Normalizer::isWhitespace)));
        }
    }

    /** Words of \w characters and runs of other non-space characters; whitespace is dropped. */
    record Whitespace() implements PreTokenizer {
        private static final Pattern WORDS = Pattern.compile("\\w+|[^\\w\\s]+", Pattern.UNICODE_CHARACTER_CLASS);

        public List<Piece> apply(List<Piece> pieces) {
            return splitEach(pieces, piece -> SplitBehavior.REMOVED.split(piece, regexMatches(WORDS, piece.text(), true)));
        }
    }

    private static boolean isNumeric(int cp) {
        int t = Character.getType(cp);
        return t == Character.DECIMAL_DIGIT_NUMBER || t == Character.LETTER_NUMBER || t == Character.OTHER_NUMBER;
    }

    private static List<Piece> splitEach(List<Piece> pieces, java.util.function.Function<Piece, List<Piece>> splitter) {
        List<Piece> out = new ArrayList<>(pieces.size() * 2);
        for (Piece piece : pieces) {
            if (piece.isToken()) {
                out.add(piece);
                continue;
            }
            for (Piece part : splitter.apply(piece)) {
                if (!part.text().isEmpty()) out.add(part);
            }
        }
        return out;
    }

    /**
     * Covers the text with consecutive ranges, each flagged as a match or not: {start, end, 1|0}. An empty text
     * gives one empty non-match.
     */
    static List<int[]> regexMatches(Pattern pattern, String text, boolean invert) {
        List<int[]> ranges = new ArrayList<>();
        int match = invert ? 0 : 1, gap = invert ? 1 : 0;
        if (text.isEmpty()) {
            ranges.add(new int[] {0, 0, gap});
            return ranges;
        }
        Matcher m = pattern.matcher(text);
        int prev = 0;
        while (m.find()) {
            if (prev != m.start()) ranges.add(new int[] {prev, m.start(), gap});
            ranges.add(new int[] {m.start(), m.end(), match});
            prev = m.end();
        }
        if (prev != text.length()) ranges.add(new int[] {prev, text.length(), gap});
        return ranges;
    }

    /** Like regexMatches, with each character that satisfies the predicate as a match of its own. */
    static List<int[]> charMatches(String text, IntPredicate isMatch) {
        List<int[]> ranges = new ArrayList<>();
        if (text.isEmpty()) {
            ranges.add(new int[] {0, 0, 0});
            return ranges;
        }
        int last = 0;
        for (int i = 0; i < text.length(); ) {
            int cp = text.codePointAt(i);
            int next = i + Character.charCount(cp);
            if (isMatch.test(cp)) {
                if (last < i) ranges.add(new int[] {last, i, 0});
                ranges.add(new int[] {i, next, 1});
                last = next;
            }
            i = next;
        }
        if (last < text.length()) ranges.add(new int[] {last, text.length(), 0});
        return ranges;
    }
}
