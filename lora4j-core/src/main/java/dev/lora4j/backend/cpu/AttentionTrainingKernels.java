package dev.lora4j.backend.cpu;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * Attention of one whole sequence for training: the forward pass that also keeps each softmax's log-sum-exp,
 * and the backward pass that recomputes the probabilities from it instead of storing them (as flash attention
 * does). On F32 data, free of threading concerns.
 *
 * <p>With S = scale·q·kᵀ (masked: causal and sliding window), P = exp(S - lse), O = P·V, the gradients are
 * dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P ∘ (dP - D) with D_i = dO_i · O_i, dQ = scale·dS·K and dK = scale·dSᵀ·Q. The
 * backward pass is split in two so that every result element has exactly one writer: dQ by query rows, dK and
 * dV by key rows (each summing over the query heads that share the KV head).
 */
final class AttentionTrainingKernels {
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    private AttentionTrainingKernels() {}

    /** The shape of one attention call and the index arithmetic over it. */
    record Shape(int n, int nHeads, int nKvHeads, int headDim, int window) {
        int group() { return nHeads / nKvHeads; }

        float scale() { return (float) (1.0 / Math.sqrt(headDim)); }

        /** The first key position the query at position i sees. */
        int firstKey(int i) { return window > 0 ? Math.max(0, i - window + 1) : 0; }

        /** The last query position that sees the key at position t. */
        int lastQuery(int t) { return window > 0 ? (int) Math.min(n - 1L, (long) t + window - 1) : n - 1; }

        /** Element offset of query (or output) row i, head h. */
        long q(int i, int h) { return ((long) i * nHeads + h) * headDim; }

        /** Element offset of key (or value) row t, KV head kvh. */
        long kv(int t, int kvh) { return ((long) t * nKvHeads + kvh) * headDim; }
    }

    /** Output row i, head h, and its lse. {@code scores} has room for i + 1 values. */
    static void forward(MemorySegment q, MemorySegment k, MemorySegment v, MemorySegment out, MemorySegment lse,
                        Shape s, int i, int h, float[] scores) {
        int kvh = h / s.group(), first = s.firstKey(i), hd = s.headDim();
        long qo = s.q(i, h);
        float scale = s.scale(), max = Float.NEGATIVE_INFINITY;
        for (int t = first; t <= i; t++) {
            float score = dot(q, qo, k, s.kv(t, kvh), hd) * scale;
            scores[t - first] = score;
            max = Math.max(max, score);
        }
        float sum = 0;
        for (int t = first; t <= i; t++) {
            float e = (float) Math.exp(scores[t - first] - max);
            scores[t - first] = e;
            sum += e;
        }
        float[] acc = new float[hd];
        for (int t = first; t <= i; t++) axpy(scores[t - first], v, s.kv(t, kvh), acc);
        float inv = 1f / sum;
        for (int j = 0; j < hd; j++) out.setAtIndex(F32, qo + j, acc[j] * inv);
        lse.setAtIndex(F32, (long) i * s.nHeads() + h, (float) (max + Math.log(sum)));
    }

    /** D[i·nHeads + h] = dO · O of row i, head h. */
    static float rowDot(MemorySegment dOut, MemorySegment out, Shape s, int i, int h) {
        return dot(dOut, s.q(i, h), out, s.q(i, h), s.headDim());
    }

    /** dQ of row i, head h. */
    static void queryGradient(MemorySegment q, MemorySegment k, MemorySegment v, MemorySegment lse,
                              MemorySegment dOut, float[] d, MemorySegment dq, Shape s, int i, int h) {
        int kvh = h / s.group(), hd = s.headDim();
        long qo = s.q(i, h);
        float scale = s.scale(), l = lse.getAtIndex(F32, (long) i * s.nHeads() + h), di = d[i * s.nHeads() + h];
        float[] acc = new float[hd];
        for (int t = s.firstKey(i); t <= i; t++) {
            long ko = s.kv(t, kvh);
            float p = (float) Math.exp(dot(q, qo, k, ko, hd) * scale - l);
            float dp = dot(dOut, qo, v, ko, hd);
            axpy(p * (dp - di), k, ko, acc);
        }
        for (int j = 0; j < hd; j++) dq.setAtIndex(F32, qo + j, acc[j] * scale);
    }

    /** dK and dV of key row t, KV head kvh, summed over the query rows and heads that attend to it. */
    static void keyValueGradient(MemorySegment q, MemorySegment k, MemorySegment v, MemorySegment lse,
                                 MemorySegment dOut, float[] d, MemorySegment dk, MemorySegment dv, Shape s,
                                 int t, int kvh) {
        int hd = s.headDim(), group = s.group();
        long ko = s.kv(t, kvh);
        float scale = s.scale();
        float[] accK = new float[hd], accV = new float[hd];
        for (int i = t; i <= s.lastQuery(t); i++) {
            for (int g = 0; g < group; g++) {
                int h = kvh * group + g;
                long qo = s.q(i, h);
                int row = i * s.nHeads() + h;
                float p = (float) Math.exp(dot(q, qo, k, ko, hd) * scale - lse.getAtIndex(F32, row));
                float dp = dot(dOut, qo, v, ko, hd);
                axpy(p, dOut, qo, accV);
                axpy(p * (dp - d[row]), q, qo, accK);
            }
        }
        for (int j = 0; j < hd; j++) {
            dk.setAtIndex(F32, ko + j, accK[j] * scale);
            dv.setAtIndex(F32, ko + j, accV[j]);
        }
    }

    private static float dot(MemorySegment a, long ao, MemorySegment b, long bo, int count) {
        float s = 0;
        for (int j = 0; j < count; j++) s = Math.fma(a.getAtIndex(F32, ao + j), b.getAtIndex(F32, bo + j), s);
        return s;
    }

    private static void axpy(float a, MemorySegment x, long xo, float[] acc) {
        for (int j = 0; j < acc.length; j++) acc[j] = Math.fma(a, x.getAtIndex(F32, xo + j), acc[j]);
    }
}
