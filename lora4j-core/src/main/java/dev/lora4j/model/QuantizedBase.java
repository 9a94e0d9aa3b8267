package dev.lora4j.model;

import dev.lora4j.backend.Backend;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.quant.QuantizedTensor;
import dev.lora4j.tensor.Tensor;

import java.util.ArrayList;
import java.util.List;

/**
 * The frozen base of a QLoRA run: every layer's seven projections as 4-bit {@link QuantizedTensor}s, everything else
 * (embeddings, lm_head, biases, F32 norm weights) as loaded, which is what bitsandbytes' Linear4bit replacement
 * leaves of a model. A base may arrive dense (quantized here), or already 4-bit (quantized on load, or a checkpoint
 * saved in 4 bits, whose projections transformers was told to skip stay dense as they are there).
 */
final class QuantizedBase {
    private QuantizedBase() {}

    /** How the first 4-bit projection of these weights is quantized, or null when every projection is dense. */
    static QuantSpec stored(LlamaWeights weights) {
        for (LlamaWeights.Layer layer : weights.layers()) {
            for (Projection p : Projection.values()) {
                if (p.weight(layer) instanceof QuantizedTensor q) return q.spec();
            }
        }
        return null;
    }

    /**
     * The method a run over these weights takes. Over 4-bit weights LoRA becomes QLoRA with the weights' own
     * quantization (the compute dtype asked for, if any, wins: it is a choice of the run, not of the stored codes);
     * full fine-tuning is refused, and so is QLoRA asking for another code, block size or double quantization.
     */
    static FineTuneMethod reconcile(FineTuneMethod asked, LlamaWeights weights) {
        return reconcile(asked, stored(weights));
    }

    /** As {@link #reconcile(FineTuneMethod, LlamaWeights)}, for weights stored as {@code stored} (null: dense). */
    static FineTuneMethod reconcile(FineTuneMethod asked, QuantSpec stored) {
        if (stored == null) return asked;
        return switch (asked) {
            case FineTuneMethod.Full f -> throw new IllegalArgumentException("the model's projections are stored in 4 bits ("
                    + describe(stored) + "): full fine-tuning needs 16- or 32-bit weights; train adapters over them with"
                    + " method qlora, or fine-tune the 16-bit model in full");
            case FineTuneMethod.Lora l when !l.quantized() -> new FineTuneMethod.Lora(l.config(), stored);
            case FineTuneMethod.Lora l -> {
                QuantSpec q = l.quantization();
                if (q.type() != stored.type() || q.blockSize() != stored.blockSize() || q.doubleQuant() != stored.doubleQuant()) {
                    throw new IllegalArgumentException("the model is already quantized as " + describe(stored)
                            + ", but " + describe(q) + " was asked for; leave out the quantization settings to train"
                            + " over the stored 4-bit weights, or start from the 16-bit model");
                }
                yield new FineTuneMethod.Lora(l.config(), new QuantSpec(stored.type(), stored.blockSize(),
                        stored.doubleQuant(), q.computeType()));
            }
        };
    }

    /**
     * The weights with their projections 4-bit under {@code spec}: a dense base has every projection quantized (each
     * dense original closed as soon as its 4-bit form exists, so the dense model never sits beside the whole
     * quantized one); a base that is already 4-bit keeps its dense projections (the modules a checkpoint saved in
     * 4 bits left out) and has its 4-bit ones dequantize to {@code spec}'s compute dtype. New tensors are added to
     * {@code created}.
     */
    static LlamaWeights quantize(Backend backend, LlamaWeights base, QuantSpec spec, List<Tensor> created) {
        boolean alreadyQuantized = stored(base) != null;
        List<LlamaWeights.Layer> layers = new ArrayList<>();
        for (int i = 0; i < base.layers().size(); i++) {
            LlamaWeights.Layer L = base.layer(i);
            Tensor[] w = new Tensor[Projection.values().length];
            for (Projection p : Projection.values()) {
                Tensor weight = p.weight(L);
                w[p.ordinal()] = alreadyQuantized && !(weight instanceof QuantizedTensor) ? weight
                        : quantized(backend, weight, spec, created, p.path(i));
            }
            layers.add(new LlamaWeights.Layer(L.inputNorm(), w[0], w[1], w[2], w[3], L.qBias(), L.kBias(), L.vBias(),
                    L.oBias(), L.postAttentionNorm(), w[4], w[5], w[6], L.gateBias(), L.upBias(), L.downBias()));
        }
        LlamaShape s = base.shape();
        return new LlamaWeights(s, base.embedTokens(), layers, base.finalNorm(), s.tiedEmbeddings() ? null : base.lmHead());
    }

    private static Tensor quantized(Backend backend, Tensor weight, QuantSpec spec, List<Tensor> created, String path) {
        if (weight instanceof QuantizedTensor q) {
            if (q.spec().equals(spec)) return q;
            QuantSpec s = q.spec();
            if (s.type() != spec.type() || s.blockSize() != spec.blockSize() || s.doubleQuant() != spec.doubleQuant()) {
                throw new IllegalArgumentException(path + " is quantized as " + describe(s) + ", unlike the model's other"
                        + " projections (" + describe(spec) + ")");
            }
            // Same codes and state, dequantized to another compute dtype: a new view of the same parts.
            QuantizedTensor r = new QuantizedTensor(spec, q.originalType(), q.shape(), q.packed(), q.absmax(),
                    q.nestedAbsmax(), q.nestedCode(), q.nestedOffset());
            created.add(r);
            return r;
        }
        QuantizedTensor q = backend.quantize4bit(weight, spec);
        created.add(q);
        weight.close();
        return q;
    }

    /** "NF4 with double quantization, block 64, BF16 compute". */
    static String describe(QuantSpec q) {
        return q.type() + (q.doubleQuant() ? " with double quantization" : " without double quantization")
                + ", block " + q.blockSize() + ", " + q.computeType() + " compute";
    }
}
