package dev.lora4j.model;

import java.util.Arrays;

/**
 * A batch of token sequences for training or evaluation. Row i holds {@code inputIds[i]} and its
 * {@code labels[i]} of the same length, unshifted as Hugging Face passes them: the model predicts
 * {@code labels[i][t+1]} from position t (transformers shifts inside its loss); a label of -100 is ignored. Rows may
 * differ in length and are not padded.
 *
 * @param dropoutSeed the seed of the LoRA dropout masks of this batch (the same on every backend)
 */
public record TrainingBatch(int[][] inputIds, int[][] labels, long dropoutSeed) {

    /** Hugging Face's ignore_index. */
    public static final int IGNORE = -100;

    public TrainingBatch {
        if (inputIds == null || labels == null) throw new IllegalArgumentException("inputIds and labels are required");
        if (inputIds.length == 0) throw new IllegalArgumentException("a batch needs at least one row");
        if (inputIds.length != labels.length) {
            throw new IllegalArgumentException("the batch has " + inputIds.length + " rows of input ids but "
                    + labels.length + " rows of labels");
        }
        for (int i = 0; i < inputIds.length; i++) {
            if (inputIds[i] == null || inputIds[i].length == 0) throw new IllegalArgumentException("row " + i + " has no tokens");
            if (labels[i] == null || labels[i].length != inputIds[i].length) {
                throw new IllegalArgumentException("row " + i + " has " + inputIds[i].length + " input ids but "
                        + (labels[i] == null ? "no" : labels[i].length) + " labels; they must be equally long");
            }
        }
    }

    /** Labels equal to the inputs: language modelling on every token. */
    public static TrainingBatch languageModelling(int[][] inputIds, long dropoutSeed) {
        int[][] labels = new int[inputIds.length][];
        for (int i = 0; i < inputIds.length; i++) labels[i] = inputIds[i].clone();
        return new TrainingBatch(inputIds, labels, dropoutSeed);
    }

    public int rows() { return inputIds.length; }

    /** Tokens in all rows together. */
    public int totalTokens() {
        int n = 0;
        for (int[] row : inputIds) n += row.length;
        return n;
    }

    /** How many positions have a target (a next-token label that is not ignored): the loss's token count. */
    public long targetCount() {
        long n = 0;
        for (int[] row : labels) for (int t = 1; t < row.length; t++) if (row[t] != IGNORE) n++;
        return n;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof TrainingBatch b && Arrays.deepEquals(inputIds, b.inputIds) && Arrays.deepEquals(labels, b.labels)
                && dropoutSeed == b.dropoutSeed;
    }

    @Override
    public int hashCode() { return Arrays.deepHashCode(inputIds) * 31 + Long.hashCode(dropoutSeed); }

    @Override
    public String toString() { return "TrainingBatch[" + rows() + " rows, " + totalTokens() + " tokens]"; }
}
