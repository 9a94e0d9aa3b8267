package dev.lora4j.model;

import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.EnumMap;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The weights of a Llama-family decoder on one backend. Projection matrices keep the torch Linear layout
 * {@code [out_features, in_features]}; norm weights are F32; biases are null where the architecture has none.
 * When the embeddings are tied, {@link #lmHead()} is the embedding table itself.
 *
 * <p>{@link LlamaWeightLoader} fills it from a safetensors checkpoint; tests build it from tensors directly.
 */
public final class LlamaWeights implements AutoCloseable {

    /** One decoder layer's weights, named after the Hugging Face modules they come from. */
    public record Layer(Tensor inputNorm,
                        Tensor qProj, Tensor kProj, Tensor vProj, Tensor oProj,
                        Tensor qBias, Tensor kBias, Tensor vBias, Tensor oBias,
                        Tensor postAttentionNorm,
                        Tensor gateProj, Tensor upProj, Tensor downProj,
                        Tensor gateBias, Tensor upBias, Tensor downBias) {

        List<Tensor> tensors() {
            List<Tensor> all = new ArrayList<>(Arrays.asList(inputNorm, qProj, kProj, vProj, oProj, qBias, kBias,
                    vBias, oBias, postAttentionNorm, gateProj, upProj, downProj, gateBias, upBias, downBias));
            all.removeIf(t -> t == null);
            return all;
        }
    }

    private final LlamaShape shape;
    private final Tensor embedTokens;
    private final List<Layer> layers;
    private final Tensor finalNorm;
    private final Tensor lmHead;
    private final Set<Tensor> borrowed;
    private boolean closed;

    /** Checks every tensor's shape against the model shape; {@code lmHead} must be null when embeddings are tied. */
    public LlamaWeights(LlamaShape shape, Tensor embedTokens, List<Layer> layers, Tensor finalNorm, Tensor lmHead) {
        this(shape, embedTokens, layers, finalNorm, lmHead, List.of());
    }

    /**
     * Weights some of whose tensors belong to another owner: {@link #close()} leaves {@code borrowed} open. Used for
     * a view of a model with a few tensors replaced (merged adapters) that shares the rest.
     */
    LlamaWeights(LlamaShape shape, Tensor embedTokens, List<Layer> layers, Tensor finalNorm, Tensor lmHead,
                 List<Tensor> borrowed) {
        Set<Tensor> notOwned = Collections.newSetFromMap(new IdentityHashMap<>());
        notOwned.addAll(borrowed);
        this.borrowed = notOwned;
        this.shape = shape;
        this.embedTokens = embedTokens;
        this.layers = List.copyOf(layers);
        this.finalNorm = finalNorm;
        if (shape.tiedEmbeddings() && lmHead != null && lmHead != embedTokens) {
            throw new IllegalArgumentException("tie_word_embeddings is true: the output projection is the embedding table, not a separate tensor");
        }
        if (!shape.tiedEmbeddings() && lmHead == null) {
            throw new IllegalArgumentException("lm_head.weight is missing and tie_word_embeddings is false");
        }
        this.lmHead = shape.tiedEmbeddings() ? embedTokens : lmHead;
        checkShapes();
    }

    public LlamaShape shape() { return shape; }

    public Tensor embedTokens() { return embedTokens; }

    public Layer layer(int i) { return layers.get(i); }

    public List<Layer> layers() { return layers; }

    public Tensor finalNorm() { return finalNorm; }

    public Tensor lmHead() { return lmHead; }

    /** Every distinct tensor, each once (the tied table is not counted twice). */
    public List<Tensor> tensors() {
        Set<Tensor> seen = Collections.newSetFromMap(new IdentityHashMap<>());
        List<Tensor> all = new ArrayList<>();
        for (Tensor t : allWithDuplicates()) if (seen.add(t)) all.add(t);
        return all;
    }

    /** Bytes held on the backend, by storage dtype. */
    public Map<DType, Long> bytesByDType() {
        Map<DType, Long> bytes = new EnumMap<>(DType.class);
        for (Tensor t : tensors()) bytes.merge(t.dtype(), t.byteSize(), Long::sum);
        return bytes;
    }

    public long byteSize() {
        long total = 0;
        for (Tensor t : tensors()) total += t.byteSize();
        return total;
    }

    /** The dtype most of the bytes are stored in (the projections' dtype). */
    public DType storageType() {
        return bytesByDType().entrySet().stream().max(Map.Entry.comparingByValue()).map(Map.Entry::getKey)
                .orElse(DType.F32);
    }

    private List<Tensor> allWithDuplicates() {
        List<Tensor> all = new ArrayList<>();
        all.add(embedTokens);
        for (Layer l : layers) all.addAll(l.tensors());
        all.add(finalNorm);
        all.add(lmHead);
        return all;
    }

    private void checkShapes() {
        LlamaShape s = shape;
        long d = s.hiddenSize(), q = s.queryDim(), kv = s.kvDim(), ff = s.intermediateSize(), v = s.vocabSize();
        if (layers.size() != s.numLayers()) {
            throw new IllegalArgumentException("expected " + s.numLayers() + " layers of weights, got " + layers.size());
        }
        expect("model.embed_tokens.weight", embedTokens, v, d);
        expect("model.norm.weight", finalNorm, d);
        if (!s.tiedEmbeddings()) expect("lm_head.weight", lmHead, v, d);
        for (int i = 0; i < layers.size(); i++) {
            Layer l = layers.get(i);
            String p = "model.layers." + i + ".";
            expect(p + "input_layernorm.weight", l.inputNorm(), d);
            expect(p + "post_attention_layernorm.weight", l.postAttentionNorm(), d);
            expect(p + "self_attn.q_proj.weight", l.qProj(), q, d);
            expect(p + "self_attn.k_proj.weight", l.kProj(), kv, d);
            expect(p + "self_attn.v_proj.weight", l.vProj(), kv, d);
            expect(p + "self_attn.o_proj.weight", l.oProj(), d, q);
            expect(p + "mlp.gate_proj.weight", l.gateProj(), ff, d);
            expect(p + "mlp.up_proj.weight", l.upProj(), ff, d);
            expect(p + "mlp.down_proj.weight", l.downProj(), d, ff);
            optional(p + "self_attn.q_proj.bias", l.qBias(), s.qkvBias(), q);
            optional(p + "self_attn.k_proj.bias", l.kBias(), s.qkvBias(), kv);
            optional(p + "self_attn.v_proj.bias", l.vBias(), s.qkvBias(), kv);
            optional(p + "self_attn.o_proj.bias", l.oBias(), s.outputBias(), d);
            optional(p + "mlp.gate_proj.bias", l.gateBias(), s.mlpBias(), ff);
            optional(p + "mlp.up_proj.bias", l.upBias(), s.mlpBias(), ff);
            optional(p + "mlp.down_proj.bias", l.downBias(), s.mlpBias(), d);
            requireF32(p + "input_layernorm.weight", l.inputNorm());
            requireF32(p + "post_attention_layernorm.weight", l.postAttentionNorm());
        }
        requireF32("model.norm.weight", finalNorm);
    }

    private static void expect(String name, Tensor t, long... shape) {
        if (t == null) throw new IllegalArgumentException(name + " is missing");
        if (!Arrays.equals(t.shape(), shape)) {
            throw new IllegalArgumentException(name + ": expected shape " + Arrays.toString(shape) + ", found "
                    + Arrays.toString(t.shape()));
        }
    }

    private static void optional(String name, Tensor t, boolean expected, long length) {
        if (expected) {
            expect(name, t, length);
        } else if (t != null) {
            throw new IllegalArgumentException(name + " is present but the configuration says this projection has no bias");
        }
    }

    private static void requireF32(String name, Tensor t) {
        if (t.dtype() != DType.F32) throw new IllegalArgumentException(name + ": norm weights must be F32, got " + t.dtype());
    }

    @Override
    public void close() {
        if (closed) return;
        closed = true;
        for (Tensor t : tensors()) if (!borrowed.contains(t)) t.close();
    }
}
