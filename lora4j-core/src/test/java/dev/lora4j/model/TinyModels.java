package dev.lora4j.model;

import dev.lora4j.backend.Backend;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Half;
import dev.lora4j.tensor.Tensor;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;

/** Small random Llama-family models for tests: host weights for {@link ReferenceLlama} and the same on a backend. */
public final class TinyModels {
    private TinyModels() {}

    /** Llama-style: grouped-query attention, a head dimension that makes q wider than the hidden size, no biases. */
    public static LlamaShape llama() {
        return shape("llama", 4, 2, 12, false, false, false, false, new int[]{0, 0});
    }

    /** Qwen2-style: tied embeddings, q/k/v biases, a sliding window on the second layer only. */
    public static LlamaShape qwen2(int window) {
        return shape("qwen2", 4, 1, 8, true, false, false, true, new int[]{0, window});
    }

    /** Mistral-style: a sliding window on every layer. */
    public static LlamaShape mistral(int window) {
        return shape("mistral", 4, 2, 8, false, false, false, false, new int[]{window, window});
    }

    /** Llama with attention_bias and mlp_bias: every projection has a bias. */
    public static LlamaShape llamaWithBiases() {
        return shape("llama", 2, 2, 16, false, true, true, true, new int[]{0, 0});
    }

    public static LlamaShape shape(String type, int heads, int kvHeads, int headDim, boolean tied, boolean oBias,
                            boolean mlpBias, boolean qkvBias, int[] windows) {
        return new LlamaShape(type, 61, 32, 40, windows.length, heads, kvHeads, headDim, 1e-5f, qkvBias, oBias,
                mlpBias, tied, windows, RopeFrequencies.unscaled(headDim, 10000), 4096,
                Integer.MAX_VALUE);
    }

    /** Random weights with the given storage dtype; norm weights near 1. Values are those the dtype can hold. */
    public static ReferenceLlama.Weights randomWeights(LlamaShape s, DType storage, long seed) {
        Random r = new Random(seed);
        int d = s.hiddenSize(), q = s.queryDim(), kv = s.kvDim(), ff = s.intermediateSize();
        double[][] embed = matrix(r, s.vocabSize(), d, 0.5, storage);
        ReferenceLlama.Layer[] layers = new ReferenceLlama.Layer[s.numLayers()];
        for (int l = 0; l < layers.length; l++) {
            layers[l] = new ReferenceLlama.Layer(norm(r, d),
                    matrix(r, q, d, 0.2, storage), matrix(r, kv, d, 0.2, storage), matrix(r, kv, d, 0.2, storage),
                    matrix(r, d, q, 0.2, storage),
                    s.qkvBias() ? vector(r, q, 0.3, storage) : null, s.qkvBias() ? vector(r, kv, 0.3, storage) : null,
                    s.qkvBias() ? vector(r, kv, 0.3, storage) : null, s.outputBias() ? vector(r, d, 0.3, storage) : null,
                    norm(r, d),
                    matrix(r, ff, d, 0.2, storage), matrix(r, ff, d, 0.2, storage), matrix(r, d, ff, 0.2, storage),
                    s.mlpBias() ? vector(r, ff, 0.3, storage) : null, s.mlpBias() ? vector(r, ff, 0.3, storage) : null,
                    s.mlpBias() ? vector(r, d, 0.3, storage) : null);
        }
        double[][] lmHead = s.tiedEmbeddings() ? null : matrix(r, s.vocabSize(), d, 0.3, storage);
        return new ReferenceLlama.Weights(embed, layers, norm(r, d), lmHead);
    }

    /** The same weights as backend tensors. */
    public static LlamaWeights upload(Backend b, LlamaShape s, ReferenceLlama.Weights w, DType storage) {
        List<LlamaWeights.Layer> layers = new ArrayList<>();
        for (ReferenceLlama.Layer L : w.layers()) {
            layers.add(new LlamaWeights.Layer(f32(b, L.inputNorm()),
                    t(b, L.q(), storage), t(b, L.k(), storage), t(b, L.v(), storage), t(b, L.o(), storage),
                    t(b, L.qBias(), storage), t(b, L.kBias(), storage), t(b, L.vBias(), storage), t(b, L.oBias(), storage),
                    f32(b, L.postNorm()),
                    t(b, L.gate(), storage), t(b, L.up(), storage), t(b, L.down(), storage),
                    t(b, L.gateBias(), storage), t(b, L.upBias(), storage), t(b, L.downBias(), storage)));
        }
        return new LlamaWeights(s, t(b, w.embed(), storage), layers, f32(b, w.finalNorm()),
                w.lmHead() == null ? null : t(b, w.lmHead(), storage));
    }

    private static double[][] matrix(Random r, int rows, int cols, double std, DType storage) {
        double[][] m = new double[rows][];
        for (int i = 0; i < rows; i++) m[i] = vector(r, cols, std, storage);
        return m;
    }

    private static double[] vector(Random r, int n, double std, DType storage) {
        double[] v = new double[n];
        for (int i = 0; i < n; i++) v[i] = representable((float) (r.nextGaussian() * std), storage);
        return v;
    }

    private static double[] norm(Random r, int n) {
        double[] v = new double[n];
        for (int i = 0; i < n; i++) v[i] = (float) (1 + 0.2 * r.nextGaussian());
        return v;
    }

    private static double representable(float f, DType storage) {
        return switch (storage) {
            case F32 -> f;
            case BF16 -> Half.bf16ToFloat(Half.floatToBf16(f));
            case F16 -> Half.f16ToFloat(Half.floatToF16(f));
            default -> throw new IllegalArgumentException(storage.toString());
        };
    }

    private static Tensor f32(Backend b, double[] v) {
        return t(b, v, DType.F32);
    }

    private static Tensor t(Backend b, double[] v, DType storage) {
        if (v == null) return null;
        float[] f = new float[v.length];
        for (int i = 0; i < v.length; i++) f[i] = (float) v[i];
        return b.fromFloats(f, storage, v.length);
    }

    private static Tensor t(Backend b, double[][] m, DType storage) {
        int rows = m.length, cols = m[0].length;
        float[] f = new float[rows * cols];
        for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) f[i * cols + j] = (float) m[i][j];
        return b.fromFloats(f, storage, rows, cols);
    }
}
