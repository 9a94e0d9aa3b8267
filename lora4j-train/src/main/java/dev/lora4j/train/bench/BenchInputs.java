package dev.lora4j.train.bench;

import dev.lora4j.model.LlamaShape;
import dev.lora4j.model.TrainablePlan;

/**
 * What a benchmark trains on and starts from when they must be another implementation's, so that the losses of both
 * can be compared step by step: token batches read from a file ({@code --tokens}) instead of synthetic ones, and an
 * adapter's weights ({@code --init-adapter}) instead of those lora4j draws. Either may be null.
 */
public record BenchInputs(TokenBatches tokens, InitialAdapter initialAdapter) {

    /** Synthetic batches and lora4j's own initial adapters. */
    public static final BenchInputs NONE = new BenchInputs(null, null);

    /**
     * Checks that the inputs fit a configuration on this model shape, before any device work.
     *
     * @return a note worth printing (the adapter's dropout differs from the benchmark's), or null
     */
    public String checkFits(BenchSettings s, LlamaShape shape) {
        if (tokens != null) tokens.checkFits(s.seq(), s.microBatch(), shape.vocabSize());
        return initialAdapter == null ? null : initialAdapter.checkFits(s, TrainablePlan.of(shape, s.fineTuneMethod()));
    }

    /** The token file, or null for synthetic batches. */
    public String tokensSource() {
        return tokens == null ? null : tokens.file().toString();
    }

    /** The initial adapter's folder, or null when lora4j draws the initial adapters. */
    public String initialAdapterSource() {
        return initialAdapter == null ? null : initialAdapter.folder().toString();
    }
}
