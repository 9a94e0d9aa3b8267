package dev.lora4j.train.data;

import java.util.Arrays;

/**
 * One tokenized sequence: input ids and labels of the same length, labels unshifted as in Hugging Face (label i is
 * the token at position i, or {@link #IGNORE} where no loss is wanted; the model predicts label i+1 from
 * position i).
 */
public record TokenizedSequence(int[] inputIds, int[] labels) {
    /** Hugging Face's ignore_index. */
    public static final int IGNORE = -100;

    public TokenizedSequence {
        if (inputIds.length != labels.length) {
            throw new IllegalArgumentException("input ids (" + inputIds.length + ") and labels (" + labels.length + ") differ in length");
        }
    }

    public int length() {
        return inputIds.length;
    }

    /** Labels that are not ignored, before the shift (what TRL's "fully masked" filter counts). */
    public boolean hasAnyLabel() {
        for (int l : labels) if (l != IGNORE) return true;
        return false;
    }

    /** Positions the loss is computed at: labels 1..n-1 that are not ignored (the first label has no predictor). */
    public int targetCount() {
        int n = 0;
        for (int i = 1; i < labels.length; i++) if (labels[i] != IGNORE) n++;
        return n;
    }

    /** The first {@code n} positions (TRL's truncation_mode "keep_start"). */
    public TokenizedSequence truncate(int n) {
        return n >= length() ? this : new TokenizedSequence(Arrays.copyOf(inputIds, n), Arrays.copyOf(labels, n));
    }

    public TokenizedSequence slice(int from, int to) {
        return new TokenizedSequence(Arrays.copyOfRange(inputIds, from, to), Arrays.copyOfRange(labels, from, to));
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof TokenizedSequence s && Arrays.equals(inputIds, s.inputIds) && Arrays.equals(labels, s.labels);
    }

    @Override
    public int hashCode() {
        return 31 * Arrays.hashCode(inputIds) + Arrays.hashCode(labels);
    }

    @Override
    public String toString() {
        return "TokenizedSequence" + Arrays.toString(inputIds) + " labels " + Arrays.toString(labels);
    }
}
