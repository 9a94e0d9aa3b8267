package dev.lora4j.backend.cpu;

import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Half;
import jdk.incubator.vector.FloatVector;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static dev.lora4j.backend.cpu.VectorShapes.F;
import static dev.lora4j.backend.cpu.VectorShapes.L;
import static dev.lora4j.backend.cpu.VectorShapes.bf16;
import static dev.lora4j.backend.cpu.VectorShapes.f32;
import static jdk.incubator.vector.VectorOperators.ADD;

/**
 * {@code out[n, m] = x[n, k] · w[m, k]ᵀ} on one block of rows and output features, free of threading concerns.
 *
 * <p>The product is a set of dot products of x rows with w rows, both contiguous in k. Two paths compute them
 * with the same arithmetic, so a row's result is bit-for-bit the same whichever path and block computed it:
 * <ul>
 *   <li><b>Streaming</b> (fewer than {@value #TILE} x rows, the decode of one token): every F32 or BF16 weight is
 *       read once, straight from its tensor (BF16 widened in registers), {@value #STREAMS} rows at a time, over
 *       all of k, against each x row held in cache.</li>
 *   <li><b>Packed</b> (a prompt): a slice of k of the block's x rows and weight rows is copied (weights widened
 *       to F32) into per-thread arrays, and a register tile of {@value #TILE} x rows by {@value #TILE} weight
 *       rows keeps sixteen vector accumulators: each vector loaded is used four times, and the arrays, unlike
 *       memory segments, let the JIT drop the bounds checks from the loop. {@value #SUB_BLOCK} x rows at a time
 *       meet every weight row of the block, so they stay in the L1 cache while the weights stream from L2.
 *       Results gather in a per-thread array and reach out once per block.</li>
 * </ul>
 * The packed path takes rows {@value #K_SLICE} elements at a time, so that a tile's operands fit the caches, and
 * carries each dot product's lane-wise partial sums from slice to slice: on both paths a dot product is one chain
 * of FMAs per vector lane over all of k, then one {@link Lanes#sum} of the lanes, then the elements past the last
 * whole vector.
 */
final class MatmulKernels {
    static final int TILE = 4;
    /** Weight rows the streaming path reads at once. */
    static final int STREAMS = 8;
    static final int K_SLICE = 512;
    /** x rows per pass over the weight block: 16 packed rows of a slice are 32 KiB, which stay in L1. */
    static final int SUB_BLOCK = 16;
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ValueLayout.OfShort I16 = ValueLayout.JAVA_SHORT_UNALIGNED;
    /** The partial sums a dot product starts from: four rows of zero vectors. */
    private static final float[] ZEROS = new float[TILE * L];

    private MatmulKernels() {}

    /** Rows [r0, r1) and output features [c0, c1) of the product; adds to out when {@code accumulate}. */
    static void block(MemorySegment x, MemorySegment w, DType wt, MemorySegment out, int k, int m,
                      int r0, int r1, int c0, int c1, boolean accumulate) {
        // F16 has no in-register widening (see FloatConversions.f16ToF32), so it is always packed.
        if (r1 - r0 < TILE && wt != DType.F16) streamed(x, w, wt, out, k, m, r0, r1, c0, c1, accumulate);
        else packed(x, w, wt, out, k, m, r0, r1, c0, c1, accumulate);
    }

    private static void streamed(MemorySegment x, MemorySegment w, DType wt, MemorySegment out, int k, int m,
                                 int r0, int r1, int c0, int c1, boolean accumulate) {
        float[] sums = new float[STREAMS], lanes = new float[STREAMS * L];
        long xRow = (long) k * Float.BYTES, wRow = wt.bytesFor(k);
        long[] rows = new long[STREAMS];
        for (int c = c0; c < c1; c += STREAMS) {
            int cols = Math.min(STREAMS, c1 - c);
            // A partial group repeats its last row; the extra results are never stored.
            for (int i = 0; i < STREAMS; i++) rows[i] = (c + Math.min(i, cols - 1)) * wRow;
            for (int r = r0; r < r1; r++) {
                if (wt == DType.BF16) bf16Rows(x, r * xRow, w, rows, k, lanes, sums);
                else f32Rows(x, r * xRow, w, rows, k, lanes, sums);
                long o = (long) r * m + c;
                for (int j = 0; j < cols; j++) out.setAtIndex(F32, o + j, accumulate ? out.getAtIndex(F32, o + j) + sums[j] : sums[j]);
            }
        }
    }

    private static void packed(MemorySegment x, MemorySegment w, DType wt, MemorySegment out, int k, int m,
                               int r0, int r1, int c0, int c1, boolean accumulate) {
        float[] sums = new float[TILE * TILE];
        int rows = r1 - r0, features = c1 - c0;
        int slots = Parallel.ceilDiv(features, TILE) * TILE; // per row; a partial group's extra slots are scratch
        Scratch scratch = Scratch.get();
        float[] xp = scratch.xPack(rows * Math.min(K_SLICE, k));
        float[] wp = scratch.wPack(features * Math.min(K_SLICE, k));
        float[] partial = scratch.partialSums(rows * slots * L);
        float[] block = scratch.outPack(rows * features);
        for (int j0 = 0; j0 < k; j0 += K_SLICE) {
            int len = Math.min(K_SLICE, k - j0);
            boolean first = j0 == 0, last = j0 + len == k;
            for (int r = 0; r < rows; r++) MemorySegment.copy(x, F32, ((long) (r0 + r) * k + j0) * Float.BYTES, xp, r * len, len);
            for (int c = 0; c < features; c++) FloatConversions.toFloatArray(w, wt, (long) (c0 + c) * k + j0, wp, c * len, len);
            for (int sb = 0; sb < rows; sb += SUB_BLOCK) {
                int sbEnd = Math.min(rows, sb + SUB_BLOCK);
                for (int c = 0; c < features; c += TILE) {
                    int cols = Math.min(TILE, features - c);
                    // A partial group repeats its last row; the extra results are never kept.
                    int p0 = c * len, p1 = (c + Math.min(1, cols - 1)) * len;
                    int p2 = (c + Math.min(2, cols - 1)) * len, p3 = (c + Math.min(3, cols - 1)) * len;
                    int r = sb;
                    for (; r + TILE <= sbEnd; r += TILE) {
                        tile(xp, r * len, len, wp, p0, p1, p2, p3, len, partial, (r * slots + c) * L, slots * L, first, last, sums);
                        if (last) collect(block, features, r, TILE, c, cols, sums);
                    }
                    for (; r < sbEnd; r++) {
                        row(xp, r * len, wp, p0, p1, p2, p3, len, partial, (r * slots + c) * L, first, last, sums);
                        if (last) collect(block, features, r, 1, c, cols, sums);
                    }
                }
            }
        }
        for (int r = 0; r < rows; r++) {
            long o = ((long) (r0 + r) * m + c0) * Float.BYTES;
            if (accumulate) CpuKernels.addArray(out, o, block, r * features, features);
            else MemorySegment.copy(block, r * features, out, F32, o, features);
        }
    }

    /** Puts a register tile's sums among the block's results. */
    private static void collect(float[] block, int features, int r, int rows, int c, int cols, float[] sums) {
        for (int i = 0; i < rows; i++) System.arraycopy(sums, i * TILE, block, (r + i) * features + c, cols);
    }

    /**
     * Four packed x rows (x0 + i·xs) by four packed w rows (w0..w3) over one slice of len elements. The sixteen
     * lane-wise partial sums go on from those of the earlier slices, kept in {@code acc} (the accumulator of x row
     * i and w row j at a0 + i·accRow + j·L), and are stored back there; after the last slice they are added up
     * into sums[i·4 + j], so every dot product is one chain of FMAs per lane and one sum of the lanes whatever
     * the slicing.
     */
    static void tile(float[] x, int x0, int xs, float[] w, int w0, int w1, int w2, int w3, int len,
                     float[] acc, int a0, int accRow, boolean first, boolean last, float[] sums) {
        int x1 = x0 + xs, x2 = x1 + xs, x3 = x2 + xs;
        // The first slice starts from zeros: read from a zero array rather than choose between two vectors, which
        // the JIT would box.
        float[] from = first ? ZEROS : acc;
        int f0 = first ? 0 : a0, fr = first ? 0 : accRow;
        int f1 = f0 + fr, f2 = f1 + fr, f3 = f2 + fr;
        FloatVector a00 = FloatVector.fromArray(F, from, f0), a01 = FloatVector.fromArray(F, from, f0 + L);
        FloatVector a02 = FloatVector.fromArray(F, from, f0 + 2 * L), a03 = FloatVector.fromArray(F, from, f0 + 3 * L);
        FloatVector a10 = FloatVector.fromArray(F, from, f1), a11 = FloatVector.fromArray(F, from, f1 + L);
        FloatVector a12 = FloatVector.fromArray(F, from, f1 + 2 * L), a13 = FloatVector.fromArray(F, from, f1 + 3 * L);
        FloatVector a20 = FloatVector.fromArray(F, from, f2), a21 = FloatVector.fromArray(F, from, f2 + L);
        FloatVector a22 = FloatVector.fromArray(F, from, f2 + 2 * L), a23 = FloatVector.fromArray(F, from, f2 + 3 * L);
        FloatVector a30 = FloatVector.fromArray(F, from, f3), a31 = FloatVector.fromArray(F, from, f3 + L);
        FloatVector a32 = FloatVector.fromArray(F, from, f3 + 2 * L), a33 = FloatVector.fromArray(F, from, f3 + 3 * L);
        int kv = len - len % L;
        for (int j = 0; j < kv; j += L) {
            FloatVector b0 = FloatVector.fromArray(F, w, w0 + j), b1 = FloatVector.fromArray(F, w, w1 + j);
            FloatVector b2 = FloatVector.fromArray(F, w, w2 + j), b3 = FloatVector.fromArray(F, w, w3 + j);
            FloatVector a = FloatVector.fromArray(F, x, x0 + j);
            a00 = a.fma(b0, a00); a01 = a.fma(b1, a01); a02 = a.fma(b2, a02); a03 = a.fma(b3, a03);
            a = FloatVector.fromArray(F, x, x1 + j);
            a10 = a.fma(b0, a10); a11 = a.fma(b1, a11); a12 = a.fma(b2, a12); a13 = a.fma(b3, a13);
            a = FloatVector.fromArray(F, x, x2 + j);
            a20 = a.fma(b0, a20); a21 = a.fma(b1, a21); a22 = a.fma(b2, a22); a23 = a.fma(b3, a23);
            a = FloatVector.fromArray(F, x, x3 + j);
            a30 = a.fma(b0, a30); a31 = a.fma(b1, a31); a32 = a.fma(b2, a32); a33 = a.fma(b3, a33);
        }
        int t1 = a0 + accRow, t2 = t1 + accRow, t3 = t2 + accRow;
        a00.intoArray(acc, a0); a01.intoArray(acc, a0 + L); a02.intoArray(acc, a0 + 2 * L); a03.intoArray(acc, a0 + 3 * L);
        a10.intoArray(acc, t1); a11.intoArray(acc, t1 + L); a12.intoArray(acc, t1 + 2 * L); a13.intoArray(acc, t1 + 3 * L);
        a20.intoArray(acc, t2); a21.intoArray(acc, t2 + L); a22.intoArray(acc, t2 + 2 * L); a23.intoArray(acc, t2 + 3 * L);
        a30.intoArray(acc, t3); a31.intoArray(acc, t3 + L); a32.intoArray(acc, t3 + 2 * L); a33.intoArray(acc, t3 + 3 * L);
        if (!last) return;
        for (int i = 0; i < TILE; i++) {
            int xi = x0 + i * xs;
            sums[i * TILE] = laneSum(acc, a0 + i * accRow) + tail(x, xi, w, w0, kv, len);
            sums[i * TILE + 1] = laneSum(acc, a0 + i * accRow + L) + tail(x, xi, w, w1, kv, len);
            sums[i * TILE + 2] = laneSum(acc, a0 + i * accRow + 2 * L) + tail(x, xi, w, w2, kv, len);
            sums[i * TILE + 3] = laneSum(acc, a0 + i * accRow + 3 * L) + tail(x, xi, w, w3, kv, len);
        }
    }

    /**
     * {@link Lanes#sum} of the vector stored at acc[at]. The kernels store their accumulators and sum them from
     * memory: sixteen sums inlined into a tile would pass the JIT's inlining budget, and a vector handed to a call
     * that is not inlined is boxed.
     */
    private static float laneSum(float[] acc, int at) {
        return Lanes.sum(FloatVector.fromArray(F, acc, at));
    }

    /** One packed x row by four packed w rows, carrying its partial sums like {@link #tile}: sums[0..3]. */
    static void row(float[] x, int x0, float[] w, int w0, int w1, int w2, int w3, int len,
                    float[] acc, int a0, boolean first, boolean last, float[] sums) {
        float[] from = first ? ZEROS : acc;
        int f0 = first ? 0 : a0;
        FloatVector a0v = FloatVector.fromArray(F, from, f0), a1v = FloatVector.fromArray(F, from, f0 + L);
        FloatVector a2v = FloatVector.fromArray(F, from, f0 + 2 * L), a3v = FloatVector.fromArray(F, from, f0 + 3 * L);
        int kv = len - len % L;
        for (int j = 0; j < kv; j += L) {
            FloatVector a = FloatVector.fromArray(F, x, x0 + j);
            a0v = a.fma(FloatVector.fromArray(F, w, w0 + j), a0v);
            a1v = a.fma(FloatVector.fromArray(F, w, w1 + j), a1v);
            a2v = a.fma(FloatVector.fromArray(F, w, w2 + j), a2v);
            a3v = a.fma(FloatVector.fromArray(F, w, w3 + j), a3v);
        }
        a0v.intoArray(acc, a0); a1v.intoArray(acc, a0 + L); a2v.intoArray(acc, a0 + 2 * L); a3v.intoArray(acc, a0 + 3 * L);
        if (!last) return;
        sums[0] = laneSum(acc, a0) + tail(x, x0, w, w0, kv, len);
        sums[1] = laneSum(acc, a0 + L) + tail(x, x0, w, w1, kv, len);
        sums[2] = laneSum(acc, a0 + 2 * L) + tail(x, x0, w, w2, kv, len);
        sums[3] = laneSum(acc, a0 + 3 * L) + tail(x, x0, w, w3, kv, len);
    }

    /**
     * One x row (byte offset x0) by {@value #STREAMS} F32 w rows (byte offsets rows[i]), read from their
     * tensor: sums[0..8), through {@code lanes} (8 vectors). Eight rows at once keep enough reads in flight to
     * draw on DRAM's bandwidth.
     */
    static void f32Rows(MemorySegment x, long x0, MemorySegment w, long[] rows, int len, float[] lanes, float[] sums) {
        long w0 = rows[0], w1 = rows[1], w2 = rows[2], w3 = rows[3];
        long w4 = rows[4], w5 = rows[5], w6 = rows[6], w7 = rows[7];
        FloatVector a0 = FloatVector.zero(F), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        int kv = len - len % L;
        for (int j = 0; j < kv; j += L) {
            long o = (long) j * Float.BYTES;
            FloatVector a = f32(x, x0 + o);
            a0 = a.fma(f32(w, w0 + o), a0);
            a1 = a.fma(f32(w, w1 + o), a1);
            a2 = a.fma(f32(w, w2 + o), a2);
            a3 = a.fma(f32(w, w3 + o), a3);
            a4 = a.fma(f32(w, w4 + o), a4);
            a5 = a.fma(f32(w, w5 + o), a5);
            a6 = a.fma(f32(w, w6 + o), a6);
            a7 = a.fma(f32(w, w7 + o), a7);
        }
        a0.intoArray(lanes, 0); a1.intoArray(lanes, L); a2.intoArray(lanes, 2 * L); a3.intoArray(lanes, 3 * L);
        a4.intoArray(lanes, 4 * L); a5.intoArray(lanes, 5 * L); a6.intoArray(lanes, 6 * L); a7.intoArray(lanes, 7 * L);
        for (int i = 0; i < STREAMS; i++) sums[i] = laneSum(lanes, i * L);
        if (kv < len) {
            for (int i = 0; i < STREAMS; i++) sums[i] += tail(x, x0, w, DType.F32, rows[i], kv, len);
        }
    }

    /** The same for BF16 w rows, widened in registers. */
    static void bf16Rows(MemorySegment x, long x0, MemorySegment w, long[] rows, int len, float[] lanes, float[] sums) {
        long w0 = rows[0], w1 = rows[1], w2 = rows[2], w3 = rows[3];
        long w4 = rows[4], w5 = rows[5], w6 = rows[6], w7 = rows[7];
        FloatVector a0 = FloatVector.zero(F), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        int kv = len - len % L;
        for (int j = 0; j < kv; j += L) {
            FloatVector a = f32(x, x0 + (long) j * Float.BYTES);
            long o = (long) j * 2;
            a0 = a.fma(bf16(w, w0 + o), a0);
            a1 = a.fma(bf16(w, w1 + o), a1);
            a2 = a.fma(bf16(w, w2 + o), a2);
            a3 = a.fma(bf16(w, w3 + o), a3);
            a4 = a.fma(bf16(w, w4 + o), a4);
            a5 = a.fma(bf16(w, w5 + o), a5);
            a6 = a.fma(bf16(w, w6 + o), a6);
            a7 = a.fma(bf16(w, w7 + o), a7);
        }
        a0.intoArray(lanes, 0); a1.intoArray(lanes, L); a2.intoArray(lanes, 2 * L); a3.intoArray(lanes, 3 * L);
        a4.intoArray(lanes, 4 * L); a5.intoArray(lanes, 5 * L); a6.intoArray(lanes, 6 * L); a7.intoArray(lanes, 7 * L);
        for (int i = 0; i < STREAMS; i++) sums[i] = laneSum(lanes, i * L);
        if (kv < len) {
            for (int i = 0; i < STREAMS; i++) sums[i] += tail(x, x0, w, DType.BF16, rows[i], kv, len);
        }
    }

    /** Σ x[j]·w[j] over the elements [from, len) that do not fill a vector, packed operands. */
    private static float tail(float[] x, int x0, float[] w, int w0, int from, int len) {
        float s = 0f;
        for (int j = from; j < len; j++) s += x[x0 + j] * w[w0 + j];
        return s;
    }

    /** The same for operands in their tensors (byte offsets of element 0). */
    private static float tail(MemorySegment x, long x0, MemorySegment w, DType wt, long w0, int from, int len) {
        float s = 0f;
        for (int j = from; j < len; j++) {
            float wj = wt == DType.F32 ? w.get(F32, w0 + (long) j * Float.BYTES) : Half.bf16ToFloat(w.get(I16, w0 + (long) j * 2));
            s += x.get(F32, x0 + (long) j * Float.BYTES) * wj;
        }
        return s;
    }
}
