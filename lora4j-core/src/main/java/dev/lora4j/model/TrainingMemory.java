package dev.lora4j.model;

import dev.lora4j.io.ModelConfig;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.tensor.DType;

import java.util.Locale;

/**
 * The memory a training run needs on its device, computed from the configuration before anything is allocated:
 * frozen weights in their storage dtype (norm weights F32; under QLoRA the projections take
 * {@link dev.lora4j.quant.QuantSpec#bytesFor} each), trainable parameters, their gradients and AdamW's two moments
 * in the dtypes {@link TrainablePlan#trainedType} and {@link TrainablePlan#gradientType} give (with BF16 activations,
 * trainable F32 weights that products multiply also have BF16 working copies, counted with the trainable weights), and the activation and gradient buffers of one micro-batch in the activation dtype
 * ({@link TrainableLlama}'s plan, the same sizes it allocates), in which evaluation batches of no more tokens also run.
 * Backend workspaces (cuBLASLt, attention tiles) come on top.
 */
public record TrainingMemory(long frozenWeights, long trainableWeights, long gradients, long optimizerStates,
                             long activations) {

    public long total() {
        return frozenWeights + trainableWeights + gradients + optimizerStates + activations;
    }

    /**
     * @param baseStorage         the dtype frozen weights are kept in (the checkpoint's, usually BF16; under QLoRA
     *                            the embeddings', lm_head's and biases')
     * @param activationType      the backend's activation dtype: the activation buffers are of it, and with BF16
     *                            every trainable product weight has a BF16 working copy
     * @param tokensPerMicroBatch the most tokens one forwardBackward call sees (rows × sequence length)
     */
    public static TrainingMemory estimate(ModelConfig config, FineTuneMethod method, DType baseStorage, DType activationType,
                                          int tokensPerMicroBatch, boolean gradientCheckpointing, long lossChunkBytes) {
        LlamaShape shape = LlamaShape.of(config);
        TrainablePlan plan = TrainablePlan.of(shape, method);
        long trainable = plan.trainableCount();
        // The base tensors that do not train, in their storage dtype; norm weights are always F32. A modules_to_save
        // copy replaces its original, except that a tied table keeps serving the other side.
        QuantSpec quant = method.quantization();
        long frozen = 0;
        for (String name : LlamaWeightLoader.requiredNames(shape)) {
            if (plan.trains(name)) continue;
            long numel = plan.numel(name);
            if (quant != null && TrainablePlan.isProjectionWeight(name)) frozen += quant.bytesFor(numel);
            else frozen += (name.endsWith("norm.weight") ? DType.F32 : baseStorage).bytesFor(numel);
        }
        if (shape.tiedEmbeddings() && plan.copies().contains("model.embed_tokens.weight")) {
            frozen += baseStorage.bytesFor(plan.numel("lm_head.weight"));
        }
        int capacity = (int) Math.min(Integer.MAX_VALUE, (tokensPerMicroBatch + 63L) / 64 * 64);
        long activations = TrainingBuffers.bytesFor(shape, plan.loraModules(), capacity, true, gradientCheckpointing,
                lossChunkBytes, activationType);
        long adapters = 0;
        for (TrainablePlan.LoraModule m : plan.loraModules()) adapters += m.parameterCount();
        long weights = DType.F32.bytesFor(adapters), gradients = weights;
        for (String name : plan.fullTensors().keySet()) {
            weights += plan.trainedType(name).bytesFor(plan.numel(name));
            gradients += plan.gradientType(name).bytesFor(plan.numel(name));
        }
        // AdamW keeps both moments in each parameter's dtype, as torch does.
        return new TrainingMemory(frozen, weights + workingCopyBytes(plan, activationType), gradients, 2 * weights,
                activations);
    }

    /**
     * The BF16 working copies {@link TrainableLlama} keeps under BF16 activations: one per trainable projection weight
     * and for a trainable lm_head (the table itself when tied embeddings train together).
     */
    static long workingCopyBytes(TrainablePlan plan, DType activationType) {
        if (activationType != DType.BF16) return 0;
        long elements = 0;
        for (String name : plan.fullTensors().keySet()) {
            boolean product = TrainablePlan.isProjectionWeight(name) || name.equals("lm_head.weight");
            if (product && plan.trainedType(name) == DType.F32) elements += plan.numel(name);
        }
        LlamaShape s = plan.shape();
        if (s.tiedEmbeddings() && !plan.unties() && plan.trains("model.embed_tokens.weight")
                && plan.trainedType("model.embed_tokens.weight") == DType.F32) {
            elements += plan.numel("lm_head.weight");
        }
        return DType.BF16.bytesFor(elements);
    }

    @Override
    public String toString() {
        return String.format(Locale.ROOT, "%.2f GiB: frozen weights %.2f, trainable %.2f, gradients %.2f, AdamW states %.2f,"
                        + " activations %.2f", gib(total()), gib(frozenWeights), gib(trainableWeights),
                gib(gradients), gib(optimizerStates), gib(activations));
    }

    private static double gib(long bytes) { return bytes / (double) (1L << 30); }
}
