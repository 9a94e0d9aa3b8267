package dev.lora4j.tokenizer;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * What a split does with the delimiters it finds (tokenizer.json's "behavior"), with the reference's exact
 * folding rules, including its quirks (two adjacent delimiters are not merged with each other under
 * MergedWithPrevious/MergedWithNext).
 */
enum SplitBehavior {
    REMOVED, ISOLATED, MERGED_WITH_PREVIOUS, MERGED_WITH_NEXT, CONTIGUOUS;

    static SplitBehavior fromJson(String name, String where) {
        return switch (name) {
            case "Removed" -> REMOVED;
            case "Isolated" -> ISOLATED;
            case "MergedWithPrevious" -> MERGED_WITH_PREVIOUS;
            case "MergedWithNext" -> MERGED_WITH_NEXT;
            case "Contiguous" -> CONTIGUOUS;
            default -> throw new TokenizerException(where + ": unknown split behavior \"" + name
                    + "\"; expected one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous");
        };
    }

    /** Splits the piece along the ranges ({start, end, isMatch}) that cover its text. */
    List<Piece> split(Piece piece, List<int[]> ranges) {
        List<int[]> kept = new ArrayList<>(ranges.size());
        switch (this) {
            case ISOLATED -> ranges.forEach(r -> kept.add(new int[] {r[0], r[1]}));
            case REMOVED -> ranges.stream().filter(r -> r[2] == 0).forEach(r -> kept.add(new int[] {r[0], r[1]}));
            case CONTIGUOUS -> {
                boolean previous = false;
                for (int[] r : ranges) {
                    boolean match = r[2] == 1;
                    if (match == previous && !kept.isEmpty()) kept.getLast()[1] = r[1];
                    else kept.add(new int[] {r[0], r[1]});
                    previous = match;
                }
            }
            case MERGED_WITH_PREVIOUS -> {
                boolean previous = false;
                for (int[] r : ranges) {
                    boolean match = r[2] == 1;
                    if (match && !previous && !kept.isEmpty()) kept.getLast()[1] = r[1];
                    else kept.add(new int[] {r[0], r[1]});
                    previous = match;
                }
            }
            case MERGED_WITH_NEXT -> {
                boolean previous = false;
                for (int i = ranges.size() - 1; i >= 0; i--) {
                    int[] r = ranges.get(i);
                    boolean match = r[2] == 1;
                    if (match && !previous && !kept.isEmpty()) kept.getLast()[0] = r[0];
                    else kept.add(new int[] {r[0], r[1]});
                    previous = match;
                }
                java.util.Collections.reverse(kept);
            }
        }
        List<Piece> out = new ArrayList<>(kept.size());
        String text = piece.text();
        for (int[] k : kept) {
            if (k[1] > k[0]) out.add(Piece.text(text.substring(k[0], k[1]), piece.atTextStart() && k[0] == 0));
        }
        return out;
    }

    @Override
    public String toString() {
        return name().toLowerCase(Locale.ROOT);
    }
}
