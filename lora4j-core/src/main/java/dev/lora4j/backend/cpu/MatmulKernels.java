package dev.lora4j.backend.cpu;

import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Half;
import jdk.incubator.vector.FloatVector;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static dev.lora4j.backend.cpu.VectorShapes.F;
import static dev.lora4j.backend.cpu.VectorShapes.L;
import static dev.lora4j.backend.cpu.VectorShapes.bf16;
import static dev.lora4j.backend.cpu.VectorShapes.f16;
import static dev.lora4j.backend.cpu.VectorShapes.f32;
import static jdk.incubator.vector.VectorOperators.ADD;

/**
 * {@code out[n, m] = x[n, k] · w[m, k]ᵀ} on one block of rows and output features, free of threading concerns.
 *
 * <p>The product is a set of dot products of x rows with w rows, both contiguous in k. A register tile of
 * {@value #TILE} x rows by {@value #TILE} w rows keeps sixteen vector accumulators: each loaded vector of x is
 * used against four w rows and each vector of w against four x rows, so the loads per FMA are halved compared
 * with one dot product at a time. With fewer than {@value #TILE} x rows (decode) the weights are streamed once,
 * straight from their storage dtype; with more, a 16-bit weight tile is first widened to F32 into per-thread
 * scratch and then reused across every x row of the block.
 */
final class MatmulKernels {
    static final int TILE = 4;
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ValueLayout.OfShort I16 = ValueLayout.JAVA_SHORT_UNALIGNED;

    private MatmulKernels() {}

    /** Rows [r0, r1) and output features [c0, c1) of the product. */
    static void block(MemorySegment x, MemorySegment w, DType wt, MemorySegment out, int k, int m,
                      int r0, int r1, int c0, int c1, boolean accumulate) {
        float[] sums = new float[TILE * TILE];
        long xRow = (long) k * Float.BYTES;
        boolean tiled = r1 - r0 >= TILE;
        MemorySegment tile = tiled && wt != DType.F32 ? Scratch.get().tile((long) TILE * k) : null;
        for (int c = c0; c < c1; c += TILE) {
            int cols = Math.min(TILE, c1 - c);
            // A partial group repeats its last row; the extra results are never stored.
            int c1w = c + Math.min(1, cols - 1), c2w = c + Math.min(2, cols - 1), c3w = c + Math.min(3, cols - 1);
            if (!tiled) {
                long wRow = wt.bytesFor(k);
                long w0 = c * wRow, w1 = c1w * wRow, w2 = c2w * wRow, w3 = c3w * wRow;
                for (int r = r0; r < r1; r++) {
                    long xr = r * xRow;
                    switch (wt) {
                        case F32 -> f32Row(x, xr, w, w0, w1, w2, w3, k, sums);
                        case BF16 -> bf16Row(x, xr, w, w0, w1, w2, w3, k, sums);
                        case F16 -> f16Row(x, xr, w, w0, w1, w2, w3, k, sums);
                        default -> throw new IllegalArgumentException("matmul weights must be F32, BF16 or F16, got " + wt);
                    }
                    store(out, m, r, 1, c, cols, sums, accumulate);
                }
                continue;
            }
            MemorySegment ws;
            long w0, w1, w2, w3;
            if (wt == DType.F32) {
                ws = w;
                w0 = c * xRow; w1 = c1w * xRow; w2 = c2w * xRow; w3 = c3w * xRow;
            } else {
                ws = tile;
                for (int i = 0; i < cols; i++) {
                    FloatConversions.convert(w, wt, (long) (c + i) * k, tile, DType.F32, (long) i * k, k);
                }
                w0 = 0; w1 = (c1w - c) * xRow; w2 = (c2w - c) * xRow; w3 = (c3w - c) * xRow;
            }
            int r = r0;
            for (; r + TILE <= r1; r += TILE) {
                f32Tile(x, r * xRow, xRow, ws, w0, w1, w2, w3, k, sums);
                store(out, m, r, TILE, c, cols, sums, accumulate);
            }
            for (; r < r1; r++) {
                f32Row(x, r * xRow, ws, w0, w1, w2, w3, k, sums);
                store(out, m, r, 1, c, cols, sums, accumulate);
            }
        }
    }

    private static void store(MemorySegment out, int m, int r, int rows, int c, int cols, float[] sums, boolean accumulate) {
        for (int i = 0; i < rows; i++) {
            long o = (long) (r + i) * m + c;
            for (int j = 0; j < cols; j++) {
                float s = sums[i * TILE + j];
                out.setAtIndex(F32, o + j, accumulate ? out.getAtIndex(F32, o + j) + s : s);
            }
        }
    }

    /** Four x rows (byte offsets x0 + i·xs) by four F32 w rows (byte offsets w0..w3): sums[i·4 + j]. */
    static void f32Tile(MemorySegment x, long x0, long xs, MemorySegment w, long w0, long w1, long w2, long w3,
                        int k, float[] sums) {
        long x1 = x0 + xs, x2 = x1 + xs, x3 = x2 + xs;
        FloatVector a00 = FloatVector.zero(F), a01 = a00, a02 = a00, a03 = a00;
        FloatVector a10 = a00, a11 = a00, a12 = a00, a13 = a00;
        FloatVector a20 = a00, a21 = a00, a22 = a00, a23 = a00;
        FloatVector a30 = a00, a31 = a00, a32 = a00, a33 = a00;
        int kv = k - k % L;
        for (int j = 0; j < kv; j += L) {
            long o = (long) j * Float.BYTES;
            FloatVector b0 = f32(w, w0 + o), b1 = f32(w, w1 + o), b2 = f32(w, w2 + o), b3 = f32(w, w3 + o);
            FloatVector a = f32(x, x0 + o);
            a00 = a.fma(b0, a00); a01 = a.fma(b1, a01); a02 = a.fma(b2, a02); a03 = a.fma(b3, a03);
            a = f32(x, x1 + o);
            a10 = a.fma(b0, a10); a11 = a.fma(b1, a11); a12 = a.fma(b2, a12); a13 = a.fma(b3, a13);
            a = f32(x, x2 + o);
            a20 = a.fma(b0, a20); a21 = a.fma(b1, a21); a22 = a.fma(b2, a22); a23 = a.fma(b3, a23);
            a = f32(x, x3 + o);
            a30 = a.fma(b0, a30); a31 = a.fma(b1, a31); a32 = a.fma(b2, a32); a33 = a.fma(b3, a33);
        }
        sums[0] = a00.reduceLanes(ADD); sums[1] = a01.reduceLanes(ADD); sums[2] = a02.reduceLanes(ADD); sums[3] = a03.reduceLanes(ADD);
        sums[4] = a10.reduceLanes(ADD); sums[5] = a11.reduceLanes(ADD); sums[6] = a12.reduceLanes(ADD); sums[7] = a13.reduceLanes(ADD);
        sums[8] = a20.reduceLanes(ADD); sums[9] = a21.reduceLanes(ADD); sums[10] = a22.reduceLanes(ADD); sums[11] = a23.reduceLanes(ADD);
        sums[12] = a30.reduceLanes(ADD); sums[13] = a31.reduceLanes(ADD); sums[14] = a32.reduceLanes(ADD); sums[15] = a33.reduceLanes(ADD);
        for (int i = 0; i < TILE; i++) tail(x, x0 + i * xs, w, DType.F32, w0, w1, w2, w3, kv, k, sums, i * TILE);
    }

    /** One x row by four F32 w rows: sums[0..3]. */
    static void f32Row(MemorySegment x, long x0, MemorySegment w, long w0, long w1, long w2, long w3, int k, float[] sums) {
        FloatVector a0 = FloatVector.zero(F), a1 = a0, a2 = a0, a3 = a0;
        int kv = k - k % L;
        for (int j = 0; j < kv; j += L) {
            long o = (long) j * Float.BYTES;
            FloatVector a = f32(x, x0 + o);
            a0 = a.fma(f32(w, w0 + o), a0);
            a1 = a.fma(f32(w, w1 + o), a1);
            a2 = a.fma(f32(w, w2 + o), a2);
            a3 = a.fma(f32(w, w3 + o), a3);
        }
        sums[0] = a0.reduceLanes(ADD); sums[1] = a1.reduceLanes(ADD); sums[2] = a2.reduceLanes(ADD); sums[3] = a3.reduceLanes(ADD);
        tail(x, x0, w, DType.F32, w0, w1, w2, w3, kv, k, sums, 0);
    }

    /** One x row by four BF16 w rows, widened in registers: sums[0..3]. */
    static void bf16Row(MemorySegment x, long x0, MemorySegment w, long w0, long w1, long w2, long w3, int k, float[] sums) {
        FloatVector a0 = FloatVector.zero(F), a1 = a0, a2 = a0, a3 = a0;
        int kv = k - k % L;
        for (int j = 0; j < kv; j += L) {
            FloatVector a = f32(x, x0 + (long) j * Float.BYTES);
            long o = (long) j * 2;
            a0 = a.fma(bf16(w, w0 + o), a0);
            a1 = a.fma(bf16(w, w1 + o), a1);
            a2 = a.fma(bf16(w, w2 + o), a2);
            a3 = a.fma(bf16(w, w3 + o), a3);
        }
        sums[0] = a0.reduceLanes(ADD); sums[1] = a1.reduceLanes(ADD); sums[2] = a2.reduceLanes(ADD); sums[3] = a3.reduceLanes(ADD);
        tail(x, x0, w, DType.BF16, w0, w1, w2, w3, kv, k, sums, 0);
    }

    /** One x row by four F16 w rows, widened in registers: sums[0..3]. */
    static void f16Row(MemorySegment x, long x0, MemorySegment w, long w0, long w1, long w2, long w3, int k, float[] sums) {
        FloatVector a0 = FloatVector.zero(F), a1 = a0, a2 = a0, a3 = a0;
        int kv = k - k % L;
        for (int j = 0; j < kv; j += L) {
            FloatVector a = f32(x, x0 + (long) j * Float.BYTES);
            long o = (long) j * 2;
            a0 = a.fma(f16(w, w0 + o), a0);
            a1 = a.fma(f16(w, w1 + o), a1);
            a2 = a.fma(f16(w, w2 + o), a2);
            a3 = a.fma(f16(w, w3 + o), a3);
        }
        sums[0] = a0.reduceLanes(ADD); sums[1] = a1.reduceLanes(ADD); sums[2] = a2.reduceLanes(ADD); sums[3] = a3.reduceLanes(ADD);
        tail(x, x0, w, DType.F16, w0, w1, w2, w3, kv, k, sums, 0);
    }

    /** Adds the products of elements [from, k), the part shorter than a vector, to sums[at..at+3]. */
    private static void tail(MemorySegment x, long x0, MemorySegment w, DType wt, long w0, long w1, long w2, long w3,
                             int from, int k, float[] sums, int at) {
        if (from == k) return;
        long[] rows = {w0, w1, w2, w3};
        for (int c = 0; c < TILE; c++) {
            float s = 0f;
            for (int j = from; j < k; j++) s += x.get(F32, x0 + (long) j * Float.BYTES) * weight(w, wt, rows[c], j);
            sums[at + c] += s;
        }
    }

    private static float weight(MemorySegment w, DType wt, long rowOffset, int j) {
        return switch (wt) {
            case F32 -> w.get(F32, rowOffset + (long) j * Float.BYTES);
            case BF16 -> Half.bf16ToFloat(w.get(I16, rowOffset + (long) j * 2));
            case F16 -> Half.f16ToFloat(w.get(I16, rowOffset + (long) j * 2));
            default -> throw new IllegalArgumentException("matmul weights must be F32, BF16 or F16, got " + wt);
        };
    }
}
