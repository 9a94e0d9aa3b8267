package dev.lora4j.api;

import dev.lora4j.model.LlamaModel;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.tensor.DType;

import java.util.function.Consumer;

/**
 * How to load a model.
 *
 * @param weightType     the dtype weights are kept in: F32, BF16 or F16; null keeps the checkpoint's dtype
 *                       (saving memory for BF16 checkpoints; the forward pass computes in F32 either way)
 * @param maxBatchTokens positions processed per forward pass; longer prompts are processed in chunks
 * @param notices        receives one-line notices, such as a GPU fallback; null discards them
 * @param quantization   quantize the layer projections to 4 bits while loading (bitsandbytes NF4/FP4, the QLoRA
 *                       way: embeddings, norms and lm_head stay 16-bit); null loads them as stored. A model saved
 *                       in 4 bits loads in 4 bits either way, and then this only chooses the compute dtype.
 */
public record LoadOptions(DType weightType, int maxBatchTokens, Consumer<String> notices, QuantSpec quantization) {

    public LoadOptions {
        if (weightType != null && weightType != DType.F32 && weightType != DType.BF16 && weightType != DType.F16) {
            throw new IllegalArgumentException("weights can be kept as F32, BF16 or F16, not " + weightType);
        }
        if (maxBatchTokens < 1) throw new IllegalArgumentException("maxBatchTokens must be >= 1, got " + maxBatchTokens);
        if (notices == null) notices = line -> { };
    }

    public LoadOptions(DType weightType, int maxBatchTokens, Consumer<String> notices) {
        this(weightType, maxBatchTokens, notices, null);
    }

    /** Weights as stored, the default batch, notices printed to standard error. */
    public static LoadOptions defaults() {
        return new LoadOptions(null, LlamaModel.DEFAULT_MAX_BATCH_TOKENS, System.err::println);
    }

    public LoadOptions withWeightType(DType type) {
        return new LoadOptions(type, maxBatchTokens, notices, quantization);
    }

    public LoadOptions withMaxBatchTokens(int tokens) {
        return new LoadOptions(weightType, tokens, notices, quantization);
    }

    public LoadOptions withNotices(Consumer<String> sink) {
        return new LoadOptions(weightType, maxBatchTokens, sink, quantization);
    }

    /** Quantize the projections to 4 bits on load ({@link QuantSpec#QLORA} is the QLoRA recipe); null: as stored. */
    public LoadOptions withQuantization(QuantSpec spec) {
        return new LoadOptions(weightType, maxBatchTokens, notices, spec);
    }
}
