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
 *       read once, straight from its tensor (BF16 widened in registers), {@value #STREAMS} rows at a time,
 *       against each x row held in cache.</li>
 *   <li><b>Packed</b> (a prompt): a slice of k of the block's x rows and weight rows is copied (weights widened
 *       to F32) into per-thread arrays, and a register tile of {@value #TILE} x rows by {@value #TILE} weight
 *       rows keeps sixteen vector accumulators: each vector loaded is used four times, and the arrays, unlike
 *       memory segments, let the JIT drop the bounds checks from the loop. {@value #SUB_BLOCK} x rows at a time
 *       meet every weight row of the block, so they stay in the L1 cache while the weights stream from L2.
 *       Results gather in a per-thread array and reach out once per block.</li>
 * </ul>
 * Rows are taken {@value #K_SLICE} elements at a time, so that a tile's operands fit the caches, and the partial
 * dot products of the slices are added in the same order on both paths.
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
        float[] sums = new float[STREAMS];
        float[] totals = new float[(r1 - r0) * STREAMS]; // per row, the slices' sums, added as the packed path does
        long xRow = (long) k * Float.BYTES, wRow = wt.bytesFor(k);
        long[] rows = new long[STREAMS];
        for (int c = c0; c < c1; c += STREAMS) {
            int cols = Math.min(STREAMS, c1 - c);
            // A partial group repeats its last row; the extra results are never stored.
            for (int i = 0; i < STREAMS; i++) rows[i] = (c + Math.min(i, cols - 1)) * wRow;
            for (int j0 = 0; j0 < k; j0 += K_SLICE) {
                int len = Math.min(K_SLICE, k - j0);
                long xj = (long) j0 * Float.BYTES, wj = wt.bytesFor(j0);
                for (int r = r0; r < r1; r++) {
                    if (wt == DType.BF16) bf16Rows(x, r * xRow + xj, w, rows, wj, len, sums);
                    else f32Rows(x, r * xRow + xj, w, rows, wj, len, sums);
                    int t = (r - r0) * STREAMS;
                    for (int j = 0; j < cols; j++) totals[t + j] = j0 > 0 ? totals[t + j] + sums[j] : sums[j];
                }
            }
            for (int r = r0; r < r1; r++) {
                long o = (long) r * m + c;
                int t = (r - r0) * STREAMS;
                for (int j = 0; j < cols; j++) {
                    out.setAtIndex(F32, o + j, accumulate ? out.getAtIndex(F32, o + j) + totals[t + j] : totals[t + j]);
                }
            }
        }
    }

    private static void packed(MemorySegment x, MemorySegment w, DType wt, MemorySegment out, int k, int m,
                               int r0, int r1, int c0, int c1, boolean accumulate) {
        float[] sums = new float[TILE * TILE];
        int rows = r1 - r0, features = c1 - c0;
        Scratch scratch = Scratch.get();
        float[] xp = scratch.xPack(rows * Math.min(K_SLICE, k));
        float[] wp = scratch.wPack(features * Math.min(K_SLICE, k));
        float[] block = scratch.outPack(rows * features);
        for (int j0 = 0; j0 < k; j0 += K_SLICE) {
            int len = Math.min(K_SLICE, k - j0);
            boolean add = j0 > 0;
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
                        tile(xp, r * len, len, wp, p0, p1, p2, p3, len, sums);
                        collect(block, features, r, TILE, c, cols, sums, add);
                    }
                    for (; r < sbEnd; r++) {
                        row(xp, r * len, wp, p0, p1, p2, p3, len, sums);
                        collect(block, features, r, 1, c, cols, sums, add);
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

    /** Adds a register tile's sums to the block's results (or sets them, for the first slice of k). */
    private static void collect(float[] block, int features, int r, int rows, int c, int cols, float[] sums, boolean add) {
        for (int i = 0; i < rows; i++) {
            int o = (r + i) * features + c;
            for (int j = 0; j < cols; j++) block[o + j] = add ? block[o + j] + sums[i * TILE + j] : sums[i * TILE + j];
        }
    }

    /** Four packed x rows (x0 + i·xs) by four packed w rows (w0..w3), len elements: sums[i·4 + j]. */
    static void tile(float[] x, int x0, int xs, float[] w, int w0, int w1, int w2, int w3, int len, float[] sums) {
        int x1 = x0 + xs, x2 = x1 + xs, x3 = x2 + xs;
        FloatVector a00 = FloatVector.zero(F), a01 = a00, a02 = a00, a03 = a00;
        FloatVector a10 = a00, a11 = a00, a12 = a00, a13 = a00;
        FloatVector a20 = a00, a21 = a00, a22 = a00, a23 = a00;
        FloatVector a30 = a00, a31 = a00, a32 = a00, a33 = a00;
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
        sums[0] = Lanes.sum(a00); sums[1] = Lanes.sum(a01); sums[2] = Lanes.sum(a02); sums[3] = Lanes.sum(a03);
        sums[4] = Lanes.sum(a10); sums[5] = Lanes.sum(a11); sums[6] = Lanes.sum(a12); sums[7] = Lanes.sum(a13);
        sums[8] = Lanes.sum(a20); sums[9] = Lanes.sum(a21); sums[10] = Lanes.sum(a22); sums[11] = Lanes.sum(a23);
        sums[12] = Lanes.sum(a30); sums[13] = Lanes.sum(a31); sums[14] = Lanes.sum(a32); sums[15] = Lanes.sum(a33);
        if (kv < len) {
            for (int i = 0; i < TILE; i++) {
                int xi = x0 + i * xs;
                sums[i * TILE] += tail(x, xi, w, w0, kv, len);
                sums[i * TILE + 1] += tail(x, xi, w, w1, kv, len);
                sums[i * TILE + 2] += tail(x, xi, w, w2, kv, len);
                sums[i * TILE + 3] += tail(x, xi, w, w3, kv, len);
            }
        }
    }

    /** One packed x row by four packed w rows: sums[0..3]. */
    static void row(float[] x, int x0, float[] w, int w0, int w1, int w2, int w3, int len, float[] sums) {
        FloatVector a0 = FloatVector.zero(F), a1 = a0, a2 = a0, a3 = a0;
        int kv = len - len % L;
        for (int j = 0; j < kv; j += L) {
            FloatVector a = FloatVector.fromArray(F, x, x0 + j);
            a0 = a.fma(FloatVector.fromArray(F, w, w0 + j), a0);
            a1 = a.fma(FloatVector.fromArray(F, w, w1 + j), a1);
            a2 = a.fma(FloatVector.fromArray(F, w, w2 + j), a2);
            a3 = a.fma(FloatVector.fromArray(F, w, w3 + j), a3);
        }
        sums[0] = Lanes.sum(a0) + tail(x, x0, w, w0, kv, len);
        sums[1] = Lanes.sum(a1) + tail(x, x0, w, w1, kv, len);
        sums[2] = Lanes.sum(a2) + tail(x, x0, w, w2, kv, len);
        sums[3] = Lanes.sum(a3) + tail(x, x0, w, w3, kv, len);
    }

    /**
     * One x row (byte offset x0) by {@value #STREAMS} F32 w rows (byte offsets rows[i] + wj), read from their
     * tensor: sums[0..8). Eight rows at once keep enough reads in flight to draw on DRAM's bandwidth.
     */
    static void f32Rows(MemorySegment x, long x0, MemorySegment w, long[] rows, long wj, int len, float[] sums) {
        long w0 = rows[0] + wj, w1 = rows[1] + wj, w2 = rows[2] + wj, w3 = rows[3] + wj;
        long w4 = rows[4] + wj, w5 = rows[5] + wj, w6 = rows[6] + wj, w7 = rows[7] + wj;
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
        sums[0] = Lanes.sum(a0); sums[1] = Lanes.sum(a1); sums[2] = Lanes.sum(a2); sums[3] = Lanes.sum(a3);
        sums[4] = Lanes.sum(a4); sums[5] = Lanes.sum(a5); sums[6] = Lanes.sum(a6); sums[7] = Lanes.sum(a7);
        if (kv < len) {
            for (int i = 0; i < STREAMS; i++) sums[i] += tail(x, x0, w, DType.F32, rows[i] + wj, kv, len);
        }
    }

    /** The same for BF16 w rows, widened in registers. */
    static void bf16Rows(MemorySegment x, long x0, MemorySegment w, long[] rows, long wj, int len, float[] sums) {
        long w0 = rows[0] + wj, w1 = rows[1] + wj, w2 = rows[2] + wj, w3 = rows[3] + wj;
        long w4 = rows[4] + wj, w5 = rows[5] + wj, w6 = rows[6] + wj, w7 = rows[7] + wj;
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
        sums[0] = Lanes.sum(a0); sums[1] = Lanes.sum(a1); sums[2] = Lanes.sum(a2); sums[3] = Lanes.sum(a3);
        sums[4] = Lanes.sum(a4); sums[5] = Lanes.sum(a5); sums[6] = Lanes.sum(a6); sums[7] = Lanes.sum(a7);
        if (kv < len) {
            for (int i = 0; i < STREAMS; i++) sums[i] += tail(x, x0, w, DType.BF16, rows[i] + wj, kv, len);
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
