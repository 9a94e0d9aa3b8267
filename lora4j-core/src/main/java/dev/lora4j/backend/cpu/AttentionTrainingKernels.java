package dev.lora4j.backend.cpu;

import jdk.incubator.vector.FloatVector;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

import static dev.lora4j.backend.cpu.VectorShapes.F;
import static dev.lora4j.backend.cpu.VectorShapes.L;
import static dev.lora4j.backend.cpu.VectorShapes.LE;
import static dev.lora4j.backend.cpu.VectorShapes.f32;
import static jdk.incubator.vector.VectorOperators.ADD;

/**
 * Attention of one whole sequence for training: the forward pass that also keeps each softmax's log-sum-exp,
 * and the backward pass that recomputes the probabilities from it instead of storing them (as flash attention
 * does). On F32 data, free of threading concerns: the caller packs the operands once ({@link Packed}) and runs
 * the tasks on its threads.
 *
 * <p>With S = scale·Q·Kᵀ (masked: causal and sliding window), P = exp(S - lse), O = P·V, the gradients are
 * dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P ∘ (dP - D) with D_i = dO_i · O_i, dQ = scale·dS·K and dK = scale·dSᵀ·Q. The
 * backward pass is split in two so that every result element has exactly one writer: dQ by blocks of query rows,
 * dK and dV by blocks of key rows (each summing over the query heads that share the KV head).
 *
 * <p>Every product is a {@link ProductTiles} product over packed arrays. Per KV head, the keys and values are
 * packed both row-major ([position][dim], for P·V, dS·K) and transposed ([dim][position], for Q·Kᵀ, dO·Vᵀ), and
 * the queries of the heads that share it (and their output gradients) row-major in the order (position, head):
 * the rows a block needs are then contiguous. Rows are padded to whole vectors with zeros.
 */
final class AttentionTrainingKernels {
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    /** Query heads per block of the forward pass and of dQ (rows × heads of a group). */
    private static final int QUERIES_PER_BLOCK = 64;
    /** Key positions per block of dK and dV: a multiple of every vector length. */
    static final int KEY_BLOCK = 64;

    private AttentionTrainingKernels() {}

    /** The shape of one attention call and the index arithmetic over it. */
    record Shape(int n, int nHeads, int nKvHeads, int headDim, int window) {
        int group() { return nHeads / nKvHeads; }

        float scale() { return (float) (1.0 / Math.sqrt(headDim)); }

        /** The first key position the query at position i sees. */
        int firstKey(int i) { return window > 0 ? Math.max(0, i - window + 1) : 0; }

        /** The last query position that sees the key at position t. */
        int lastQuery(int t) { return window > 0 ? (int) Math.min(n - 1L, (long) t + window - 1) : n - 1; }

        /** Head length padded to whole vectors: the row length of the packed arrays. */
        int paddedDim() { return roundUp(headDim); }

        /** Positions padded to whole vectors: the row length of the transposed packs. */
        int paddedN() { return roundUp(n); }

        /** Query rows per block, so that a block has about {@value #QUERIES_PER_BLOCK} query heads. */
        int rowsPerBlock() { return Math.max(1, QUERIES_PER_BLOCK / group()); }
    }

    static int roundUp(int x) {
        return (x + L - 1) / L * L;
    }

    /** The operands of one call, packed by the issuing thread's workers and read by every task. */
    static final class Packed {
        final Shape s;
        /**
         * Per KV head: [paddedN][paddedDim] row-major keys (backward) and values (forward); [paddedDim][paddedN]
         * transposed keys and values (backward). Fresh arrays: the padding is zeros.
         */
        final float[] kRows, vRows, kCols, vCols;
        /** Per KV head: [n·group][paddedDim] queries and output gradients, row (i·group + g) for head kvh·group + g. */
        final float[] qRows, dORows;
        /** lse and D = rowsum(dO ∘ O), [n][nHeads]; D only for the backward pass. */
        final float[] lse, d;

        Packed(Shape s, boolean backward) {
            this.s = s;
            int kv = s.nKvHeads() * s.paddedN() * s.paddedDim(), q = s.nKvHeads() * s.n() * s.group() * s.paddedDim();
            kRows = backward ? new float[kv] : null;
            vRows = backward ? null : new float[kv];
            kCols = new float[kv];
            vCols = backward ? new float[kv] : null;
            qRows = new float[q];
            dORows = backward ? new float[q] : null;
            lse = new float[s.n() * s.nHeads()];
            d = backward ? new float[s.n() * s.nHeads()] : null;
        }

        /** Packs positions [from, to): their keys, values and queries (and output gradients for the backward pass). */
        void pack(MemorySegment q, MemorySegment k, MemorySegment v, MemorySegment dOut, int from, int to) {
            int hd = s.headDim(), hdp = s.paddedDim(), np = s.paddedN(), group = s.group(), nq = s.n() * group;
            for (int t = from; t < to; t++) {
                for (int kvh = 0; kvh < s.nKvHeads(); kvh++) {
                    long src = ((long) t * s.nKvHeads() + kvh) * hd * Float.BYTES;
                    int at = (kvh * np + t) * hdp;
                    if (kRows != null) MemorySegment.copy(k, F32, src, kRows, at, hd);
                    if (vRows != null) MemorySegment.copy(v, F32, src, vRows, at, hd);
                    for (int j = 0; j < hd; j++) {
                        kCols[(kvh * hdp + j) * np + t] = k.get(F32, src + j * 4L);
                        if (vCols != null) vCols[(kvh * hdp + j) * np + t] = v.get(F32, src + j * 4L);
                    }
                    for (int g = 0; g < group; g++) {
                        long qs = ((long) t * s.nHeads() + kvh * group + g) * hd * Float.BYTES;
                        int qa = (kvh * nq + t * group + g) * hdp;
                        MemorySegment.copy(q, F32, qs, qRows, qa, hd);
                        if (dORows != null) MemorySegment.copy(dOut, F32, qs, dORows, qa, hd);
                    }
                }
            }
        }
    }

    /** D[i·nHeads + h] = dO · O of rows [from, to), every head. */
    static void rowDots(MemorySegment dOut, MemorySegment out, Shape s, float[] d, int from, int to) {
        int hd = s.headDim();
        for (int r = from; r < to; r++) {
            for (int h = 0; h < s.nHeads(); h++) {
                long o = ((long) r * s.nHeads() + h) * hd * Float.BYTES;
                FloatVector acc = FloatVector.zero(F);
                int j = 0;
                for (; j + L <= hd; j += L) acc = f32(dOut, o + j * 4L).fma(f32(out, o + j * 4L), acc);
                float sum = Lanes.sum(acc);
                for (; j < hd; j++) sum += dOut.get(F32, o + j * 4L) * out.get(F32, o + j * 4L);
                d[r * s.nHeads() + h] = sum;
            }
        }
    }

    /** Per-thread working arrays of the tasks, grown to the largest request. */
    private static final class Work {
        float[] a = new float[0], b = new float[0], s = new float[0], p = new float[0], acc = new float[0], acc2 = new float[0];

        static float[] grow(float[] x, int size) {
            return x.length >= size ? x : new float[Math.max(size, x.length * 3 / 2)];
        }
    }

    private static final ThreadLocal<Work> WORK = ThreadLocal.withInitial(Work::new);

    /**
     * Output rows [i0, i1) of the query heads of KV head kvh, and their lse: scores against every key they may see
     * (a run of positions aligned to the vector length), softmax with the max subtracted, then the weighted values.
     */
    static void forwardBlock(Packed pk, MemorySegment out, MemorySegment lse, int i0, int i1, int kvh) {
        Shape s = pk.s;
        Work w = WORK.get();
        int group = s.group(), hd = s.headDim(), hdp = s.paddedDim(), np = s.paddedN();
        int rows = (i1 - i0) * group, padded = ProductTiles.paddedRows(rows);
        int kLo = s.firstKey(i0) / L * L, span = roundUp(i1 - kLo);
        float[] scores = scores(pk, w, i0, i1, kvh, kLo, span);
        float[] max = new float[rows], sum = new float[rows];
        for (int r = 0; r < rows; r++) {
            int i = i0 + r / group, first = s.firstKey(i) - kLo, last = i - kLo, at = r * span;
            float m = Float.NEGATIVE_INFINITY;
            for (int c = first; c <= last; c++) m = Math.max(m, scores[at + c]);
            Arrays.fill(scores, at, at + first, 0f);
            sum[r] = exponentials(scores, at + first, last - first + 1, m);
            Arrays.fill(scores, at + last + 1, at + span, 0f);
            max[r] = m;
        }
        w.a = Work.grow(w.a, ProductTiles.packedSize(rows, span));
        ProductTiles.packRows(scores, 0, span, rows, span, 1f, w.a);
        w.acc = Work.grow(w.acc, padded * hdp);
        Arrays.fill(w.acc, 0, padded * hdp, 0f);
        ProductTiles.multiplyAdd(w.a, rows, span, pk.vRows, (kvh * np + kLo) * hdp, hdp, hdp, w.acc, 0, hdp);
        for (int r = 0; r < rows; r++) {
            int i = i0 + r / group, h = kvh * group + r % group;
            long o = ((long) i * s.nHeads() + h) * hd * Float.BYTES;
            float inv = 1f / sum[r];
            store(w.acc, r * hdp, inv, out, o, hd);
            lse.setAtIndex(F32, (long) i * s.nHeads() + h, (float) (max[r] + Math.log(sum[r])));
        }
    }

    /** dQ of rows [i0, i1), the query heads of KV head kvh. */
    static void queryGradientBlock(Packed pk, MemorySegment dq, int i0, int i1, int kvh) {
        Shape s = pk.s;
        Work w = WORK.get();
        int group = s.group(), hd = s.headDim(), hdp = s.paddedDim(), np = s.paddedN(), nq = s.n() * group;
        int rows = (i1 - i0) * group, padded = ProductTiles.paddedRows(rows);
        int kLo = s.firstKey(i0) / L * L, span = roundUp(i1 - kLo);
        float[] scores = scores(pk, w, i0, i1, kvh, kLo, span);
        w.a = Work.grow(w.a, ProductTiles.packedSize(rows, Math.max(hd, span)));
        ProductTiles.packRows(pk.dORows, (kvh * nq + i0 * group) * hdp, hdp, rows, hd, 1f, w.a);
        w.p = Work.grow(w.p, padded * span);
        Arrays.fill(w.p, 0, padded * span, 0f);
        ProductTiles.multiplyAdd(w.a, rows, hd, pk.vCols, kvh * hdp * np + kLo, np, span, w.p, 0, span);
        for (int r = 0; r < rows; r++) {
            int i = i0 + r / group, h = kvh * group + r % group, at = r * span;
            int first = s.firstKey(i) - kLo, last = i - kLo;
            Arrays.fill(scores, at, at + first, 0f);
            gradientOfScores(scores, w.p, at + first, last - first + 1, pk.lse[i * s.nHeads() + h], pk.d[i * s.nHeads() + h]);
            Arrays.fill(scores, at + last + 1, at + span, 0f);
        }
        ProductTiles.packRows(scores, 0, span, rows, span, 1f, w.a);
        w.acc = Work.grow(w.acc, padded * hdp);
        Arrays.fill(w.acc, 0, padded * hdp, 0f);
        ProductTiles.multiplyAdd(w.a, rows, span, pk.kRows, (kvh * np + kLo) * hdp, hdp, hdp, w.acc, 0, hdp);
        for (int r = 0; r < rows; r++) {
            int i = i0 + r / group, h = kvh * group + r % group;
            store(w.acc, r * hdp, s.scale(), dq, ((long) i * s.nHeads() + h) * hd * Float.BYTES, hd);
        }
    }

    /**
     * dK and dV of key rows [t0, t1) (t0 a multiple of the vector length) of KV head kvh, summed over the query
     * rows that see them, a few rows (all heads of the group) at a time.
     */
    static void keyValueGradientBlock(Packed pk, MemorySegment dk, MemorySegment dv, int t0, int t1, int kvh) {
        Shape s = pk.s;
        Work w = WORK.get();
        int group = s.group(), hd = s.headDim(), hdp = s.paddedDim(), np = s.paddedN(), nq = s.n() * group;
        int keys = t1 - t0, cols = roundUp(keys), paddedKeys = ProductTiles.paddedRows(keys);
        w.acc = Work.grow(w.acc, paddedKeys * hdp);
        w.acc2 = Work.grow(w.acc2, paddedKeys * hdp);
        float[] dkAcc = w.acc, dvAcc = w.acc2;
        Arrays.fill(dkAcc, 0, paddedKeys * hdp, 0f);
        Arrays.fill(dvAcc, 0, paddedKeys * hdp, 0f);
        int last = s.lastQuery(t1 - 1), step = s.rowsPerBlock();
        for (int r0 = t0; r0 <= last; r0 += step) {
            int r1 = Math.min(last + 1, r0 + step), rows = (r1 - r0) * group, padded = ProductTiles.paddedRows(rows);
            int q0 = (kvh * nq + r0 * group) * hdp;
            w.a = Work.grow(w.a, ProductTiles.packedSize(Math.max(rows, keys), Math.max(hd, rows)));
            w.s = Work.grow(w.s, padded * cols);
            w.p = Work.grow(w.p, padded * cols);
            float[] sc = w.s, dp = w.p;
            Arrays.fill(sc, 0, padded * cols, 0f);
            Arrays.fill(dp, 0, padded * cols, 0f);
            ProductTiles.packRows(pk.qRows, q0, hdp, rows, hd, s.scale(), w.a);
            ProductTiles.multiplyAdd(w.a, rows, hd, pk.kCols, kvh * hdp * np + t0, np, cols, sc, 0, cols);
            ProductTiles.packRows(pk.dORows, q0, hdp, rows, hd, 1f, w.a);
            ProductTiles.multiplyAdd(w.a, rows, hd, pk.vCols, kvh * hdp * np + t0, np, cols, dp, 0, cols);
            for (int r = 0; r < rows; r++) {
                int i = r0 + r / group, h = kvh * group + r % group, at = r * cols;
                // The keys of the block this query sees: [max(t0, its first key), min(t1 - 1, i)].
                int lo = Math.max(0, s.firstKey(i) - t0), hi = Math.min(keys - 1, i - t0);
                if (lo > hi) {
                    Arrays.fill(sc, at, at + cols, 0f);
                    Arrays.fill(dp, at, at + cols, 0f);
                    continue;
                }
                Arrays.fill(sc, at, at + lo, 0f);
                Arrays.fill(dp, at, at + lo, 0f);
                probabilitiesAndGradients(sc, dp, at + lo, hi - lo + 1, pk.lse[i * s.nHeads() + h], pk.d[i * s.nHeads() + h]);
                Arrays.fill(sc, at + hi + 1, at + cols, 0f);
                Arrays.fill(dp, at + hi + 1, at + cols, 0f);
            }
            ProductTiles.packColumns(sc, 0, cols, keys, rows, w.a);
            ProductTiles.multiplyAdd(w.a, keys, rows, pk.dORows, q0, hdp, hdp, dvAcc, 0, hdp);
            ProductTiles.packColumns(dp, 0, cols, keys, rows, w.a);
            ProductTiles.multiplyAdd(w.a, keys, rows, pk.qRows, q0, hdp, hdp, dkAcc, 0, hdp);
        }
        for (int c = 0; c < keys; c++) {
            long o = ((long) (t0 + c) * s.nKvHeads() + kvh) * hd * Float.BYTES;
            store(dkAcc, c * hdp, s.scale(), dk, o, hd);
            store(dvAcc, c * hdp, 1f, dv, o, hd);
        }
    }

    /** The scaled scores of the query heads of rows [i0, i1), KV head kvh, against key positions [kLo, kLo + span). */
    private static float[] scores(Packed pk, Work w, int i0, int i1, int kvh, int kLo, int span) {
        Shape s = pk.s;
        int group = s.group(), hd = s.headDim(), hdp = s.paddedDim(), np = s.paddedN(), nq = s.n() * group;
        int rows = (i1 - i0) * group, padded = ProductTiles.paddedRows(rows);
        w.a = Work.grow(w.a, ProductTiles.packedSize(rows, Math.max(hd, span)));
        ProductTiles.packRows(pk.qRows, (kvh * nq + i0 * group) * hdp, hdp, rows, hd, s.scale(), w.a);
        w.s = Work.grow(w.s, padded * span);
        Arrays.fill(w.s, 0, padded * span, 0f);
        ProductTiles.multiplyAdd(w.a, rows, hd, pk.kCols, kvh * hdp * np + kLo, np, span, w.s, 0, span);
        return w.s;
    }

    /** x[at..at+len) = exp(x - max); returns their sum. */
    private static float exponentials(float[] x, int at, int len, float max) {
        FloatVector sv = FloatVector.zero(F);
        int c = 0;
        for (; c + L <= len; c += L) {
            FloatVector e = Exp.exp(FloatVector.fromArray(F, x, at + c).sub(max));
            e.intoArray(x, at + c);
            sv = sv.add(e);
        }
        float sum = Lanes.sum(sv);
        for (; c < len; c++) {
            x[at + c] = Exp.exp(x[at + c] - max);
            sum += x[at + c];
        }
        return sum;
    }

    /** s[at..at+len) = P ∘ (dP - D) with P = exp(s - lse) and dP in dp[at..]. */
    private static void gradientOfScores(float[] s, float[] dp, int at, int len, float lse, float d) {
        int c = 0;
        for (; c + L <= len; c += L) {
            FloatVector p = Exp.exp(FloatVector.fromArray(F, s, at + c).sub(lse));
            p.mul(FloatVector.fromArray(F, dp, at + c).sub(d)).intoArray(s, at + c);
        }
        for (; c < len; c++) {
            float p = Exp.exp(s[at + c] - lse);
            s[at + c] = p * (dp[at + c] - d);
        }
    }

    /** With P = exp(s - lse): s[at..at+len) = P and dp[at..at+len) = P ∘ (dp - D). */
    private static void probabilitiesAndGradients(float[] s, float[] dp, int at, int len, float lse, float d) {
        int c = 0;
        for (; c + L <= len; c += L) {
            FloatVector p = Exp.exp(FloatVector.fromArray(F, s, at + c).sub(lse));
            p.intoArray(s, at + c);
            p.mul(FloatVector.fromArray(F, dp, at + c).sub(d)).intoArray(dp, at + c);
        }
        for (; c < len; c++) {
            float p = Exp.exp(s[at + c] - lse);
            s[at + c] = p;
            dp[at + c] = p * (dp[at + c] - d);
        }
    }

    /** out (from byte o) = acc[a0 .. a0 + count) · factor. */
    private static void store(float[] acc, int a0, float factor, MemorySegment out, long o, int count) {
        int j = 0;
        for (; j + L <= count; j += L) FloatVector.fromArray(F, acc, a0 + j).mul(factor).intoMemorySegment(out, o + j * 4L, LE);
        for (; j < count; j++) out.set(F32, o + j * 4L, acc[a0 + j] * factor);
    }
}
