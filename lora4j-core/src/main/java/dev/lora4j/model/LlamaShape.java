package dev.lora4j.model;

import dev.lora4j.io.ModelConfig;
import dev.lora4j.io.RopeScaling;
import dev.lora4j.tensor.DType;

import java.util.Arrays;

/**
 * Everything the Llama-family decoder needs to know about a model, resolved and checked: dimensions, which
 * projections carry a bias, the attention window of each layer, and the rotary frequencies. Llama, Mistral and
 * Qwen2 differ only in these values, so one forward pass serves all three.
 *
 * @param slidingWindows per layer, the number of most recent positions a query may see (itself included);
 *                       0 for full causal attention
 * @param invFreq        rotary inverse frequencies, [headDim / 2], with any rope scaling folded in
 * @param maxPositions   {@code max_position_embeddings}: the context the model was trained for
 * @param positionLimit  the most positions the frequencies are right for: {@code maxPositions} for dynamic NTK
 *                       rope (which transformers changes beyond it), {@link Integer#MAX_VALUE} otherwise
 */
public record LlamaShape(
        String modelType,
        int vocabSize,
        int hiddenSize,
        int intermediateSize,
        int numLayers,
        int numHeads,
        int numKvHeads,
        int headDim,
        float rmsNormEps,
        boolean qkvBias,
        boolean outputBias,
        boolean mlpBias,
        boolean tiedEmbeddings,
        int[] slidingWindows,
        float[] invFreq,
        int maxPositions,
        int positionLimit) {

    public LlamaShape {
        require(vocabSize > 0, "vocab_size must be positive, got " + vocabSize);
        require(hiddenSize > 0, "hidden_size must be positive, got " + hiddenSize);
        require(intermediateSize > 0, "intermediate_size must be positive, got " + intermediateSize);
        require(numLayers > 0, "num_hidden_layers must be positive, got " + numLayers);
        require(numHeads > 0, "num_attention_heads must be positive, got " + numHeads);
        require(numKvHeads > 0 && numHeads % numKvHeads == 0, "num_key_value_heads (" + numKvHeads
                + ") must divide num_attention_heads (" + numHeads + ")");
        require(headDim > 0 && headDim % 2 == 0, "head_dim must be a positive even number, got " + headDim);
        require(rmsNormEps > 0, "rms_norm_eps must be positive, got " + rmsNormEps);
        require(slidingWindows.length == numLayers, "expected " + numLayers + " sliding windows, got " + slidingWindows.length);
        for (int w : slidingWindows) require(w >= 0, "sliding_window must be >= 0, got " + w);
        require(invFreq.length == headDim / 2, "rope frequencies: expected " + headDim / 2 + ", got " + invFreq.length);
        require(maxPositions > 0, "max_position_embeddings must be positive, got " + maxPositions);
        require(positionLimit > 0, "position limit must be positive, got " + positionLimit);
        slidingWindows = slidingWindows.clone();
        invFreq = invFreq.clone();
    }

    /**
     * The shape of the model a {@code config.json} describes. Which projections have biases and which layers use a
     * sliding window follow transformers' per-architecture rules, already resolved by {@link ModelConfig}.
     */
    public static LlamaShape of(ModelConfig c) {
        int[] windows = new int[c.numHiddenLayers()];
        for (int l = 0; l < windows.length; l++) windows[l] = c.slidingWindowFor(l);
        RopeScaling scaling = c.ropeScaling();
        float[] invFreq;
        int positionLimit = Integer.MAX_VALUE;
        if (scaling == null) {
            invFreq = RopeFrequencies.unscaled(c.headDim(), c.ropeTheta());
        } else {
            switch (scaling.ropeType()) {
                case "linear" -> invFreq = RopeFrequencies.linear(c.headDim(), c.ropeTheta(), scaling.factor());
                case "llama3" -> invFreq = RopeFrequencies.llama3(c.headDim(), c.ropeTheta(), scaling.factor(),
                        scaling.lowFreqFactor(), scaling.highFreqFactor(), scaling.originalMaxPositionEmbeddings());
                case "dynamic" -> {
                    // Dynamic NTK rope is the plain rope until the sequence outgrows max_position_embeddings.
                    invFreq = RopeFrequencies.unscaled(c.headDim(), c.ropeTheta());
                    positionLimit = c.maxPositionEmbeddings();
                }
                default -> throw new IllegalArgumentException("config.json: rope type '" + scaling.ropeType()
                        + "' is not supported; supported: default, linear, dynamic, llama3");
            }
        }
        return new LlamaShape(c.modelType(), c.vocabSize(), c.hiddenSize(), c.intermediateSize(), c.numHiddenLayers(),
                c.numAttentionHeads(), c.numKeyValueHeads(), c.headDim(), (float) c.rmsNormEps(), c.qkvBias(),
                c.outputProjectionBias(), c.mlpBias(), c.tieWordEmbeddings(), windows, invFreq,
                c.maxPositionEmbeddings(), positionLimit);
    }

    @Override public int[] slidingWindows() { return slidingWindows.clone(); }

    @Override public float[] invFreq() { return invFreq.clone(); }

    public int slidingWindow(int layer) { return slidingWindows[layer]; }

    /** Width of the query projection's output: heads × head dimension (not always the hidden size). */
    public int queryDim() { return numHeads * headDim; }

    /** Width of a key or value row: the KV heads × head dimension. */
    public int kvDim() { return numKvHeads * headDim; }

    /** Parameters by module, computed from the shape (what the checkpoint must hold). */
    public ParameterCounts parameterCounts() {
        long d = hiddenSize, q = queryDim(), kv = kvDim(), ff = intermediateSize;
        long embeddings = (long) vocabSize * d;
        long attentionPerLayer = d * q + 2 * d * kv + q * d
                + (qkvBias ? q + 2 * kv : 0) + (outputBias ? d : 0);
        long mlpPerLayer = 3 * d * ff + (mlpBias ? 2 * ff + d : 0);
        long norms = (2L * numLayers + 1) * d;
        long lmHead = tiedEmbeddings ? 0 : (long) vocabSize * d;
        return new ParameterCounts(embeddings, attentionPerLayer * numLayers, mlpPerLayer * numLayers, norms,
                lmHead, tiedEmbeddings);
    }

    /**
     * Parameter counts by module. {@code lmHead} is 0 when the output projection is the embedding table
     * ({@code tie_word_embeddings}): the table is counted once, as Hugging Face's {@code num_parameters()} does.
     */
    public record ParameterCounts(long embeddings, long attention, long mlp, long norms, long lmHead, boolean tied) {
        public long total() { return embeddings + attention + mlp + norms + lmHead; }

        /** Bytes the loaded weights take with matrices and biases in {@code storage}: norms are always F32. */
        public long bytes(DType storage) {
            return storage.bytesFor(total() - norms) + DType.F32.bytesFor(norms);
        }
    }

    private static void require(boolean ok, String message) {
        if (!ok) throw new IllegalArgumentException("model shape: " + message);
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof LlamaShape s && modelType.equals(s.modelType) && vocabSize == s.vocabSize
                && hiddenSize == s.hiddenSize && intermediateSize == s.intermediateSize && numLayers == s.numLayers
                && numHeads == s.numHeads && numKvHeads == s.numKvHeads && headDim == s.headDim
                && rmsNormEps == s.rmsNormEps && qkvBias == s.qkvBias && outputBias == s.outputBias
                && mlpBias == s.mlpBias && tiedEmbeddings == s.tiedEmbeddings
                && Arrays.equals(slidingWindows, s.slidingWindows) && Arrays.equals(invFreq, s.invFreq)
                && maxPositions == s.maxPositions && positionLimit == s.positionLimit;
    }

    @Override
    public int hashCode() {
        return Arrays.hashCode(new int[]{modelType.hashCode(), vocabSize, hiddenSize, intermediateSize, numLayers,
                numHeads, numKvHeads, headDim, Arrays.hashCode(slidingWindows)});
    }

    @Override
    public String toString() {
        return modelType + "(vocab " + vocabSize + ", hidden " + hiddenSize + ", mlp " + intermediateSize + ", "
                + numLayers + " layers, " + numHeads + " heads / " + numKvHeads + " KV heads of " + headDim + ")";
    }
}
