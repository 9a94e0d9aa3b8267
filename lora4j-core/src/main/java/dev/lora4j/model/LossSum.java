package dev.lora4j.model;

/**
 * The summed cross-entropy of a batch's target tokens (natural log) and how many tokens it sums over, so that
 * gradient-accumulation steps and evaluation batches combine exactly: add the sums and counts, then divide.
 */
public record LossSum(double sum, long tokens) {

    public static final LossSum ZERO = new LossSum(0, 0);

    /** The mean loss per token; NaN when no token had a target. */
    public double mean() { return tokens == 0 ? Double.NaN : sum / tokens; }

    public LossSum plus(LossSum other) { return new LossSum(sum + other.sum, tokens + other.tokens); }
}
