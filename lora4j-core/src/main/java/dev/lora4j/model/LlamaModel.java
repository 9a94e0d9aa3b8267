package dev.lora4j.model;

import dev.lora4j.backend.Backend;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * The Llama-family decoder (Llama 2/3, Mistral, Qwen2) as a sequence of {@link Backend} operations:
 * embedding, then per layer {@code x += o_proj(attention(rope(q), rope(k), v))} and
 * {@code x += down_proj(silu(gate_proj(h)) * up_proj(h))} on RMS-normalised inputs, then the final norm and the
 * output projection. Keys and values go straight into the {@link KvCache}, so a prompt is processed once and each
 * new token costs one position.
 *
 * <p>Activation buffers are allocated once, for {@code maxBatchTokens} positions; longer inputs are processed in
 * chunks of that many positions, each attending to the cached keys of the chunks before it, which gives the same
 * result as one pass. An instance serves one sequence at a time: it is not thread-safe.
 */
public final class LlamaModel implements AutoCloseable {
    /** Positions processed per pass when the caller does not say: enough to keep matmuls efficient. */
    public static final int DEFAULT_MAX_BATCH_TOKENS = 128;

    private final Backend backend;
    private final LlamaShape shape;
    private final LlamaWeights weights;
    private final int maxBatchTokens;
    private final Tensor invFreq;
    // Activations for up to maxBatchTokens positions, in the backend's activation dtype.
    private final Tensor residual;   // [B, hidden]: the residual stream
    private final Tensor normed;     // [B, hidden]: RMS-normalised input of a block, or a projection before it joins the stream
    private final Tensor query;      // [B, heads * headDim]
    private final Tensor attended;   // [B, heads * headDim]
    private final Tensor gate;       // [B, intermediate]
    private final Tensor up;         // [B, intermediate]
    private final Tensor gated;      // [B, intermediate]: silu(gate) * up
    // Logits are F32 whatever the activation dtype: the output product writes F32 from BF16 inputs, and sampling
    // and comparisons read them with FP32 precision.
    private final Tensor lastLogits; // [1, vocab]
    private Tensor chunkLogits;      // [B, vocab], allocated on first use of allLogits
    private final List<Tensor> owned = new ArrayList<>();
    private boolean closed;

    public LlamaModel(Backend backend, LlamaWeights weights) {
        this(backend, weights, DEFAULT_MAX_BATCH_TOKENS);
    }

    public LlamaModel(Backend backend, LlamaWeights weights, int maxBatchTokens) {
        if (maxBatchTokens < 1) throw new IllegalArgumentException("maxBatchTokens must be >= 1, got " + maxBatchTokens);
        this.backend = backend;
        this.weights = weights;
        this.shape = weights.shape();
        this.maxBatchTokens = maxBatchTokens;
        DType act = backend.activationType();
        try {
            invFreq = own(backend.fromFloats(shape.invFreq(), DType.F32, shape.headDim() / 2));
            residual = own(backend.allocate(act, maxBatchTokens, shape.hiddenSize()));
            normed = own(backend.allocate(act, maxBatchTokens, shape.hiddenSize()));
            query = own(backend.allocate(act, maxBatchTokens, shape.queryDim()));
            attended = own(backend.allocate(act, maxBatchTokens, shape.queryDim()));
            gate = own(backend.allocate(act, maxBatchTokens, shape.intermediateSize()));
            up = own(backend.allocate(act, maxBatchTokens, shape.intermediateSize()));
            gated = own(backend.allocate(act, maxBatchTokens, shape.intermediateSize()));
            lastLogits = own(backend.allocate(DType.F32, 1, shape.vocabSize()));
        } catch (RuntimeException | OutOfMemoryError e) {
            closeOwned();
            throw e;
        }
    }

    public LlamaShape shape() { return shape; }

    public LlamaWeights weights() { return weights; }

    public Backend backend() { return backend; }

    public int maxBatchTokens() { return maxBatchTokens; }

    /** A cache for up to {@code capacity} positions (prompt and generated tokens together). */
    public KvCache newCache(int capacity) {
        return new KvCache(backend, shape, capacity);
    }

    /**
     * Runs {@code tokens} at positions {@code startPos, startPos+1, ...}, appending their keys and values to the
     * cache, and returns the logits of the last position ([vocab], F32 on the host).
     *
     * @param startPos where the tokens go; at most {@code cache.length()} (equal to continue a sequence, smaller
     *                 to rewind and overwrite)
     */
    public float[] forward(int[] tokens, int startPos, KvCache cache) {
        checkInput(tokens, startPos, cache);
        int n = tokens.length;
        int chunkStart = 0;
        while (chunkStart < n) {
            int count = Math.min(maxBatchTokens, n - chunkStart);
            runLayers(tokens, chunkStart, count, startPos + chunkStart, cache);
            chunkStart += count;
        }
        int lastRow = (n - 1) % maxBatchTokens;
        Tensor h = normed.rows(0, 1);
        backend.rmsNorm(residual.rows(lastRow, 1), weights.finalNorm(), shape.rmsNormEps(), h);
        backend.matmul(h, weights.lmHead(), lastLogits);
        cache.advanceTo(startPos + n);
        return backend.toFloats(lastLogits);
    }

    /**
     * Like {@link #forward}, but returns the logits of every position: row i is the next-token distribution after
     * {@code tokens[i]} ([tokens.length][vocab]). Used to compare with a reference implementation and to score
     * text; generation only needs {@link #forward}.
     */
    public float[][] allLogits(int[] tokens, int startPos, KvCache cache) {
        checkInput(tokens, startPos, cache);
        if (chunkLogits == null) chunkLogits = own(backend.allocate(DType.F32, maxBatchTokens, shape.vocabSize()));
        int n = tokens.length;
        float[][] out = new float[n][];
        int chunkStart = 0;
        while (chunkStart < n) {
            int count = Math.min(maxBatchTokens, n - chunkStart);
            runLayers(tokens, chunkStart, count, startPos + chunkStart, cache);
            Tensor h = normed.rows(0, count);
            Tensor logits = chunkLogits.rows(0, count);
            backend.rmsNorm(residual.rows(0, count), weights.finalNorm(), shape.rmsNormEps(), h);
            backend.matmul(h, weights.lmHead(), logits);
            float[] flat = backend.toFloats(logits);
            int vocab = shape.vocabSize();
            for (int i = 0; i < count; i++) {
                out[chunkStart + i] = Arrays.copyOfRange(flat, i * vocab, (i + 1) * vocab);
            }
            chunkStart += count;
        }
        cache.advanceTo(startPos + n);
        return out;
    }

    /** Tokens [from, from+count) at positions pos0, pos0+1, ...: leaves their final hidden states in {@code residual}. */
    private void runLayers(int[] tokens, int from, int count, int pos0, KvCache cache) {
        int[] ids = Arrays.copyOfRange(tokens, from, from + count);
        int[] positions = new int[count];
        for (int i = 0; i < count; i++) positions[i] = pos0 + i;
        Tensor x = residual.rows(0, count), h = normed.rows(0, count), q = query.rows(0, count),
                att = attended.rows(0, count), g = gate.rows(0, count), u = up.rows(0, count),
                act = gated.rows(0, count);
        float eps = shape.rmsNormEps();
        int headDim = shape.headDim();

        backend.embedding(weights.embedTokens(), ids, x);
        for (int l = 0; l < shape.numLayers(); l++) {
            LlamaWeights.Layer w = weights.layer(l);
            Tensor k = cache.keys(l).rows(pos0, count), v = cache.values(l).rows(pos0, count);

            backend.rmsNorm(x, w.inputNorm(), eps, h);
            linear(h, w.qProj(), w.qBias(), q);
            linear(h, w.kProj(), w.kBias(), k);
            linear(h, w.vProj(), w.vBias(), v);
            backend.rope(q, headDim, positions, invFreq);
            backend.rope(k, headDim, positions, invFreq);
            backend.attention(q, cache.keys(l).rows(0, pos0 + count), cache.values(l).rows(0, pos0 + count),
                    pos0, shape.numHeads(), shape.numKvHeads(), headDim, shape.slidingWindow(l), att);
            addLinear(att, w.oProj(), w.oBias(), x, h);

            backend.rmsNorm(x, w.postAttentionNorm(), eps, h);
            linear(h, w.gateProj(), w.gateBias(), g);
            linear(h, w.upProj(), w.upBias(), u);
            backend.swiglu(g, u, act);
            addLinear(act, w.downProj(), w.downBias(), x, h);
        }
    }

    /** {@code out = in · wᵀ + bias}. */
    private void linear(Tensor in, Tensor w, Tensor bias, Tensor out) {
        backend.matmul(in, w, out);
        if (bias != null) backend.addBias(out, bias);
    }

    /**
     * {@code x += in · wᵀ + bias}. Without a bias the product is accumulated straight into the residual stream;
     * with one, it is formed in {@code scratch} first so the sum is {@code x + (in·wᵀ + b)} as torch adds it.
     */
    private void addLinear(Tensor in, Tensor w, Tensor bias, Tensor x, Tensor scratch) {
        if (bias == null) {
            backend.matmul(in, w, x, true);
        } else {
            backend.matmul(in, w, scratch);
            backend.addBias(scratch, bias);
            backend.add(x, scratch);
        }
    }

    private void checkInput(int[] tokens, int startPos, KvCache cache) {
        if (closed) throw new IllegalStateException("model used after close");
        if (tokens.length == 0) throw new IllegalArgumentException("no tokens to run");
        if (cache.backend() != backend) throw new IllegalArgumentException("the KV cache belongs to another backend");
        if (cache.kvDim() != shape.kvDim()) throw new IllegalArgumentException("the KV cache was made for another model shape");
        if (startPos < 0 || startPos > cache.length()) {
            throw new IllegalArgumentException("start position " + startPos + " must be within [0, " + cache.length()
                    + "] (the cache holds " + cache.length() + " positions)");
        }
        if ((long) startPos + tokens.length > cache.capacity()) {
            throw new IllegalArgumentException("sequence of " + (startPos + tokens.length)
                    + " positions does not fit the KV cache of " + cache.capacity() + " positions");
        }
        if ((long) startPos + tokens.length > shape.positionLimit()) {
            throw new IllegalArgumentException("sequence of " + (startPos + tokens.length) + " positions is longer than "
                    + shape.positionLimit() + " (max_position_embeddings), beyond which this model's dynamic rope"
                    + " scaling changes its frequencies; lora4j runs such models up to max_position_embeddings");
        }
        for (int t : tokens) {
            if (t < 0 || t >= shape.vocabSize()) {
                throw new IllegalArgumentException("token id " + t + " is outside the vocabulary [0, " + shape.vocabSize() + ")");
            }
        }
    }

    private Tensor own(Tensor t) {
        owned.add(t);
        return t;
    }

    private void closeOwned() {
        for (Tensor t : owned) t.close();
        owned.clear();
    }

    /** Frees the activations and the weights; the backend stays open. */
    @Override
    public void close() {
        if (closed) return;
        closed = true;
        closeOwned();
        weights.close();
    }
}
