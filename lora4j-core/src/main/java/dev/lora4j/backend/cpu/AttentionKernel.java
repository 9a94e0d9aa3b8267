package dev.lora4j.backend.cpu;

import jdk.incubator.vector.FloatVector;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

import static dev.lora4j.backend.cpu.VectorShapes.F;
import static dev.lora4j.backend.cpu.VectorShapes.L;
import static dev.lora4j.backend.cpu.VectorShapes.LE;
import static jdk.incubator.vector.VectorOperators.ADD;
import static jdk.incubator.vector.VectorOperators.MAX;

/**
 * Causal attention of a block of query rows for the query heads that share one KV head, on F32 data.
 *
 * <p>Attention is bound by reading the cache, whose rows hold a head's keys or values as a short run at a
 * stride of the whole KV width (4 KiB for Llama-3-8B). Read in place, consecutive rows fall into the same few
 * L1 cache sets and evict each other. So the cache is read {@value #KEY_BLOCK} rows at a time and packed
 * contiguously into per-thread arrays, and then every query head of the block (its rows times the heads of the
 * group) uses the packed rows it may attend to. Softmax is the plain two-pass one (scores, then weights), in
 * FP32.
 */
final class AttentionKernel {
    /** Cache rows per block: 32 rows of a 128-wide head are 16 KiB, held in L1 while the query heads use them. */
    static final int KEY_BLOCK = 32;
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    private AttentionKernel() {}

    /**
     * Query rows [i0, i1) at positions startPos + i, heads [kvh·group, (kvh+1)·group), attend to the cache rows
     * their position and the sliding window allow.
     *
     * @param qRow  byte length of a query (and output) row
     * @param kvRow byte length of a cache row
     */
    static void attendBlock(MemorySegment q, MemorySegment k, MemorySegment v, MemorySegment out, int i0, int i1,
                            int startPos, int kvh, int group, int headDim, int slidingWindow, float scale,
                            long qRow, long kvRow) {
        int queries = (i1 - i0) * group;
        long headBytes = (long) headDim * Float.BYTES;
        long kv0 = kvh * headBytes;
        Scratch scratch = Scratch.get();
        float[] qp = scratch.attentionQueries(queries * headDim);
        float[] cache = scratch.attentionCache(KEY_BLOCK * headDim);
        float[] lanes = new float[4 * L];
        // Query head qi is row i0 + qi / group, head kvh·group + qi % group; it attends to cache rows [first, last].
        int[] first = new int[queries], last = new int[queries];
        long[] offset = new long[queries];
        int lo = Integer.MAX_VALUE, hi = 0;
        for (int qi = 0; qi < queries; qi++) {
            int i = i0 + qi / group, pos = startPos + i;
            first[qi] = slidingWindow > 0 ? Math.max(0, pos - slidingWindow + 1) : 0;
            last[qi] = pos;
            offset[qi] = i * qRow + (long) (kvh * group + qi % group) * headBytes;
            lo = Math.min(lo, first[qi]);
            hi = Math.max(hi, pos);
            MemorySegment.copy(q, F32, offset[qi], qp, qi * headDim, headDim);
        }
        int span = hi - lo + 1;
        float[] s = scratch.scores(queries * span); // query head qi's score of cache row t is at qi·span + t - lo
        float[] acc = scratch.attentionOutput(queries * headDim);

        for (int t0 = lo; t0 <= hi; t0 += KEY_BLOCK) {
            int t1 = Math.min(hi + 1, t0 + KEY_BLOCK);
            pack(k, kv0, kvRow, t0, t1, headDim, cache);
            for (int qi = 0; qi < queries; qi++) {
                int from = Math.max(t0, first[qi]), to = Math.min(t1, last[qi] + 1);
                int at = qi * span - lo, qo = qi * headDim;
                int t = from;
                for (; t + 4 <= to; t += 4) scores4(qp, qo, cache, (t - t0) * headDim, headDim, scale, s, at + t, lanes);
                for (; t < to; t++) s[at + t] = dot(qp, qo, cache, (t - t0) * headDim, headDim) * scale;
            }
        }

        float[] inverseSums = new float[queries];
        for (int qi = 0; qi < queries; qi++) {
            int at = qi * span - lo;
            inverseSums[qi] = 1f / softmaxNumerators(s, at + first[qi], last[qi] - first[qi] + 1);
        }
        Arrays.fill(acc, 0, queries * headDim, 0f);
        for (int t0 = lo; t0 <= hi; t0 += KEY_BLOCK) {
            int t1 = Math.min(hi + 1, t0 + KEY_BLOCK);
            pack(v, kv0, kvRow, t0, t1, headDim, cache);
            for (int qi = 0; qi < queries; qi++) {
                int from = Math.max(t0, first[qi]), to = Math.min(t1, last[qi] + 1);
                if (from < to) accumulate(cache, (from - t0) * headDim, to - from, headDim, s, qi * span - lo + from, acc, qi * headDim);
            }
        }
        for (int qi = 0; qi < queries; qi++) {
            long o = offset[qi];
            int a = qi * headDim;
            FloatVector inv = FloatVector.broadcast(F, inverseSums[qi]);
            int j = 0;
            for (; j + L <= headDim; j += L) FloatVector.fromArray(F, acc, a + j).mul(inv).intoMemorySegment(out, o + (long) j * 4, LE);
            for (; j < headDim; j++) out.set(F32, o + (long) j * 4, acc[a + j] * inverseSums[qi]);
        }
    }

    /** Copies the head's run of cache rows [t0, t1) contiguously into {@code packed}. */
    private static void pack(MemorySegment cache, long kv0, long kvRow, int t0, int t1, int headDim, float[] packed) {
        for (int t = t0; t < t1; t++) MemorySegment.copy(cache, F32, kv0 + t * kvRow, packed, (t - t0) * headDim, headDim);
    }

    /** Four consecutive packed keys (from index k0) against one query: s[at..at+3] = dot · scale. */
    private static void scores4(float[] q, int q0, float[] k, int k0, int headDim, float scale, float[] s, int at,
                                float[] lanes) {
        int k1 = k0 + headDim, k2 = k1 + headDim, k3 = k2 + headDim;
        FloatVector a0 = FloatVector.zero(F), a1 = a0, a2 = a0, a3 = a0;
        int hv = headDim - headDim % L;
        for (int j = 0; j < hv; j += L) {
            FloatVector qv = FloatVector.fromArray(F, q, q0 + j);
            a0 = qv.fma(FloatVector.fromArray(F, k, k0 + j), a0);
            a1 = qv.fma(FloatVector.fromArray(F, k, k1 + j), a1);
            a2 = qv.fma(FloatVector.fromArray(F, k, k2 + j), a2);
            a3 = qv.fma(FloatVector.fromArray(F, k, k3 + j), a3);
        }
        // Summed from memory: four lane sums inlined here would leave vectors to be boxed (see MatmulKernels.laneSum).
        a0.intoArray(lanes, 0); a1.intoArray(lanes, L); a2.intoArray(lanes, 2 * L); a3.intoArray(lanes, 3 * L);
        float d0 = laneSum(lanes, 0), d1 = laneSum(lanes, L), d2 = laneSum(lanes, 2 * L), d3 = laneSum(lanes, 3 * L);
        for (int j = hv; j < headDim; j++) {
            float qj = q[q0 + j];
            d0 += qj * k[k0 + j];
            d1 += qj * k[k1 + j];
            d2 += qj * k[k2 + j];
            d3 += qj * k[k3 + j];
        }
        s[at] = d0 * scale;
        s[at + 1] = d1 * scale;
        s[at + 2] = d2 * scale;
        s[at + 3] = d3 * scale;
    }

    private static float laneSum(float[] v, int at) {
        return Lanes.sum(FloatVector.fromArray(F, v, at));
    }

    private static float dot(float[] a, int a0, float[] b, int b0, int count) {
        FloatVector acc = FloatVector.zero(F);
        int cv = count - count % L;
        for (int j = 0; j < cv; j += L) acc = FloatVector.fromArray(F, a, a0 + j).fma(FloatVector.fromArray(F, b, b0 + j), acc);
        float sum = Lanes.sum(acc);
        for (int j = cv; j < count; j++) sum += a[a0 + j] * b[b0 + j];
        return sum;
    }

    /** Replaces s[at..at+len) by exp(s - max) and returns their sum. */
    private static float softmaxNumerators(float[] s, int at, int len) {
        FloatVector mv = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
        int t = 0;
        for (; t + L <= len; t += L) mv = mv.max(FloatVector.fromArray(F, s, at + t));
        float max = mv.reduceLanes(MAX);
        for (; t < len; t++) max = Math.max(max, s[at + t]);
        FloatVector sv = FloatVector.zero(F);
        t = 0;
        for (; t + L <= len; t += L) {
            FloatVector e = Exp.exp(FloatVector.fromArray(F, s, at + t).sub(max));
            e.intoArray(s, at + t);
            sv = sv.add(e);
        }
        float sum = Lanes.sum(sv);
        for (; t < len; t++) {
            s[at + t] = Exp.exp(s[at + t] - max);
            sum += s[at + t];
        }
        return sum;
    }

    /**
     * acc[a0..a0+headDim) += Σ p[p0 + t]·v_t over {@code rows} packed value rows from index v0. Up to eight
     * vectors of the head stay in registers across the rows.
     */
    private static void accumulate(float[] v, int v0, int rows, int headDim, float[] p, int p0, float[] acc, int a0) {
        int j = 0;
        for (; j + 8 * L <= headDim; j += 8 * L) {
            int a = a0 + j;
            FloatVector s0 = FloatVector.fromArray(F, acc, a), s1 = FloatVector.fromArray(F, acc, a + L);
            FloatVector s2 = FloatVector.fromArray(F, acc, a + 2 * L), s3 = FloatVector.fromArray(F, acc, a + 3 * L);
            FloatVector s4 = FloatVector.fromArray(F, acc, a + 4 * L), s5 = FloatVector.fromArray(F, acc, a + 5 * L);
            FloatVector s6 = FloatVector.fromArray(F, acc, a + 6 * L), s7 = FloatVector.fromArray(F, acc, a + 7 * L);
            for (int t = 0; t < rows; t++) {
                FloatVector pt = FloatVector.broadcast(F, p[p0 + t]);
                int r = v0 + t * headDim + j;
                s0 = FloatVector.fromArray(F, v, r).fma(pt, s0);
                s1 = FloatVector.fromArray(F, v, r + L).fma(pt, s1);
                s2 = FloatVector.fromArray(F, v, r + 2 * L).fma(pt, s2);
                s3 = FloatVector.fromArray(F, v, r + 3 * L).fma(pt, s3);
                s4 = FloatVector.fromArray(F, v, r + 4 * L).fma(pt, s4);
                s5 = FloatVector.fromArray(F, v, r + 5 * L).fma(pt, s5);
                s6 = FloatVector.fromArray(F, v, r + 6 * L).fma(pt, s6);
                s7 = FloatVector.fromArray(F, v, r + 7 * L).fma(pt, s7);
            }
            s0.intoArray(acc, a); s1.intoArray(acc, a + L); s2.intoArray(acc, a + 2 * L); s3.intoArray(acc, a + 3 * L);
            s4.intoArray(acc, a + 4 * L); s5.intoArray(acc, a + 5 * L); s6.intoArray(acc, a + 6 * L); s7.intoArray(acc, a + 7 * L);
        }
        for (; j + 2 * L <= headDim; j += 2 * L) {
            int a = a0 + j;
            FloatVector s0 = FloatVector.fromArray(F, acc, a), s1 = FloatVector.fromArray(F, acc, a + L);
            for (int t = 0; t < rows; t++) {
                FloatVector pt = FloatVector.broadcast(F, p[p0 + t]);
                int r = v0 + t * headDim + j;
                s0 = FloatVector.fromArray(F, v, r).fma(pt, s0);
                s1 = FloatVector.fromArray(F, v, r + L).fma(pt, s1);
            }
            s0.intoArray(acc, a);
            s1.intoArray(acc, a + L);
        }
        for (; j + L <= headDim; j += L) {
            FloatVector s0 = FloatVector.fromArray(F, acc, a0 + j);
            for (int t = 0; t < rows; t++) {
                s0 = FloatVector.fromArray(F, v, v0 + t * headDim + j).fma(FloatVector.broadcast(F, p[p0 + t]), s0);
            }
            s0.intoArray(acc, a0 + j);
        }
        for (; j < headDim; j++) {
            float s0 = acc[a0 + j];
            for (int t = 0; t < rows; t++) s0 += p[p0 + t] * v[v0 + t * headDim + j];
            acc[a0 + j] = s0;
        }
    }
}
