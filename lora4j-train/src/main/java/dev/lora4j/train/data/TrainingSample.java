package dev.lora4j.train.data;

import java.util.List;

/**
 * One item of a training dataset, what a batch counts: an example, or a packed bin of examples. The sequences of
 * a bin stay separate rows for the model, so that they neither attend to each other nor share positions: what
 * TRL's best-fit-decreasing packing achieves with position ids that restart at each sequence and
 * FlashAttention's variable-length kernels.
 */
public record TrainingSample(List<TokenizedSequence> sequences) {
    public TrainingSample {
        sequences = List.copyOf(sequences);
        if (sequences.isEmpty()) throw new IllegalArgumentException("a sample needs at least one sequence");
    }

    public static TrainingSample of(TokenizedSequence sequence) {
        return new TrainingSample(List.of(sequence));
    }

    public int tokens() {
        int n = 0;
        for (TokenizedSequence s : sequences) n += s.length();
        return n;
    }

    public int targetCount() {
        int n = 0;
        for (TokenizedSequence s : sequences) n += s.targetCount();
        return n;
    }
}
