package dev.lora4j.backend.cpu;

import jdk.incubator.vector.FloatVector;

import java.util.Arrays;

import static dev.lora4j.backend.cpu.VectorShapes.F;
import static dev.lora4j.backend.cpu.VectorShapes.L;

/**
 * Small matrix products on float arrays, {@code C[r, j] += Σ_t A(r, t) · B[t, j]}, the shape shared by the matmul
 * backward forms and every product inside attention's forward and backward passes.
 *
 * <p>A is first packed into groups of {@value #TILE} rows interleaved by t ({@link #packRows}, {@link #packColumns}),
 * so that a register tile of four rows of C by up to three vectors of columns reads four consecutive values of
 * A per term; B and C are used in place, rows contiguous. Each B vector loaded serves four rows, each A value
 * broadcast serves up to three vectors, and twelve accumulators hide the FMA latency. The terms are taken
 * {@value #TERM_SLICE} at a time so that the strip of B a tile walks stays in the L1 cache. Each element of C is
 * summed over t in increasing order.
 */
final class ProductTiles {
    static final int TILE = 4;
    static final int TERM_SLICE = 128;

    private ProductTiles() {}

    /** Rows rounded up to whole tiles: the rows C must have room for (the extra rows get zeros added). */
    static int paddedRows(int rows) {
        return (rows + TILE - 1) / TILE * TILE;
    }

    /** Floats {@link #packRows} and {@link #packColumns} write for {@code rows} × {@code terms}. */
    static int packedSize(int rows, int terms) {
        return paddedRows(rows) * terms;
    }

    /** Packs A(r, t) = src[off + r·stride + t]·scale for r < rows, t < terms (zeros for the rows past the last). */
    static void packRows(float[] src, int off, int stride, int rows, int terms, float scale, float[] ap) {
        for (int r = 0; r < rows; r++) {
            int from = off + r * stride, to = r / TILE * terms * TILE + r % TILE;
            for (int t = 0; t < terms; t++) ap[to + t * TILE] = src[from + t] * scale;
        }
        zeroMissingRows(rows, terms, ap);
    }

    /** Packs A(r, t) = src[off + t·stride + r]: the transpose of a row-major block. */
    static void packColumns(float[] src, int off, int stride, int rows, int terms, float[] ap) {
        for (int t = 0; t < terms; t++) {
            int from = off + t * stride;
            for (int r = 0; r < rows; r++) ap[r / TILE * terms * TILE + t * TILE + r % TILE] = src[from + r];
        }
        zeroMissingRows(rows, terms, ap);
    }

    private static void zeroMissingRows(int rows, int terms, float[] ap) {
        if (rows % TILE != 0) {
            int tile = rows / TILE;
            for (int t = 0; t < terms; t++) Arrays.fill(ap, (tile * terms + t) * TILE + rows % TILE, (tile * terms + t + 1) * TILE, 0f);
        }
    }

    /**
     * {@code c[cOff + r·cStride + j] += Σ_{t < terms} A(r, t) · b[bOff + t·bStride + j]} for r < paddedRows(rows)
     * and j < cols, a multiple of the vector length; A packed for rows × terms.
     */
    static void multiplyAdd(float[] ap, int rows, int terms, float[] b, int bOff, int bStride, int cols,
                            float[] c, int cOff, int cStride) {
        int tiles = (rows + TILE - 1) / TILE;
        for (int t0 = 0; t0 < terms; t0 += TERM_SLICE) {
            int len = Math.min(TERM_SLICE, terms - t0);
            int bSlice = bOff + t0 * bStride;
            int j = 0;
            for (; j + 3 * L <= cols; j += 3 * L) {
                for (int tile = 0; tile < tiles; tile++) {
                    tile3(ap, (tile * terms + t0) * TILE, b, bSlice + j, bStride, len, c, cOff + tile * TILE * cStride + j, cStride);
                }
            }
            for (; j + 2 * L <= cols; j += 2 * L) {
                for (int tile = 0; tile < tiles; tile++) {
                    tile2(ap, (tile * terms + t0) * TILE, b, bSlice + j, bStride, len, c, cOff + tile * TILE * cStride + j, cStride);
                }
            }
            for (; j < cols; j += L) {
                // One vector wide (a LoRA rank of 16): two tiles at once, so that eight accumulators hide the latency.
                int tile = 0;
                for (; tile + 1 < tiles; tile += 2) {
                    tile1x2(ap, (tile * terms + t0) * TILE, ((tile + 1) * terms + t0) * TILE, b, bSlice + j, bStride, len, c,
                            cOff + tile * TILE * cStride + j, cStride);
                }
                if (tile < tiles) {
                    tile1(ap, (tile * terms + t0) * TILE, b, bSlice + j, bStride, len, c, cOff + tile * TILE * cStride + j, cStride);
                }
            }
        }
    }

    /** Four rows of C by three vectors: twelve accumulators. */
    private static void tile3(float[] ap, int a0, float[] b, int b0, int bStride, int len, float[] c, int c0, int cStride) {
        int c1 = c0 + cStride, c2 = c1 + cStride, c3 = c2 + cStride;
        FloatVector s00 = FloatVector.fromArray(F, c, c0), s01 = FloatVector.fromArray(F, c, c0 + L), s02 = FloatVector.fromArray(F, c, c0 + 2 * L);
        FloatVector s10 = FloatVector.fromArray(F, c, c1), s11 = FloatVector.fromArray(F, c, c1 + L), s12 = FloatVector.fromArray(F, c, c1 + 2 * L);
        FloatVector s20 = FloatVector.fromArray(F, c, c2), s21 = FloatVector.fromArray(F, c, c2 + L), s22 = FloatVector.fromArray(F, c, c2 + 2 * L);
        FloatVector s30 = FloatVector.fromArray(F, c, c3), s31 = FloatVector.fromArray(F, c, c3 + L), s32 = FloatVector.fromArray(F, c, c3 + 2 * L);
        for (int t = 0; t < len; t++) {
            int bo = b0 + t * bStride, ao = a0 + t * TILE;
            FloatVector b0v = FloatVector.fromArray(F, b, bo), b1v = FloatVector.fromArray(F, b, bo + L);
            FloatVector b2v = FloatVector.fromArray(F, b, bo + 2 * L);
            FloatVector x = FloatVector.broadcast(F, ap[ao]);
            s00 = b0v.fma(x, s00);
            s01 = b1v.fma(x, s01);
            s02 = b2v.fma(x, s02);
            x = FloatVector.broadcast(F, ap[ao + 1]);
            s10 = b0v.fma(x, s10);
            s11 = b1v.fma(x, s11);
            s12 = b2v.fma(x, s12);
            x = FloatVector.broadcast(F, ap[ao + 2]);
            s20 = b0v.fma(x, s20);
            s21 = b1v.fma(x, s21);
            s22 = b2v.fma(x, s22);
            x = FloatVector.broadcast(F, ap[ao + 3]);
            s30 = b0v.fma(x, s30);
            s31 = b1v.fma(x, s31);
            s32 = b2v.fma(x, s32);
        }
        s00.intoArray(c, c0); s01.intoArray(c, c0 + L); s02.intoArray(c, c0 + 2 * L);
        s10.intoArray(c, c1); s11.intoArray(c, c1 + L); s12.intoArray(c, c1 + 2 * L);
        s20.intoArray(c, c2); s21.intoArray(c, c2 + L); s22.intoArray(c, c2 + 2 * L);
        s30.intoArray(c, c3); s31.intoArray(c, c3 + L); s32.intoArray(c, c3 + 2 * L);
    }

    /** Four rows of C by two vectors. */
    private static void tile2(float[] ap, int a0, float[] b, int b0, int bStride, int len, float[] c, int c0, int cStride) {
        int c1 = c0 + cStride, c2 = c1 + cStride, c3 = c2 + cStride;
        FloatVector s00 = FloatVector.fromArray(F, c, c0), s01 = FloatVector.fromArray(F, c, c0 + L);
        FloatVector s10 = FloatVector.fromArray(F, c, c1), s11 = FloatVector.fromArray(F, c, c1 + L);
        FloatVector s20 = FloatVector.fromArray(F, c, c2), s21 = FloatVector.fromArray(F, c, c2 + L);
        FloatVector s30 = FloatVector.fromArray(F, c, c3), s31 = FloatVector.fromArray(F, c, c3 + L);
        for (int t = 0; t < len; t++) {
            int bo = b0 + t * bStride, ao = a0 + t * TILE;
            FloatVector b0v = FloatVector.fromArray(F, b, bo), b1v = FloatVector.fromArray(F, b, bo + L);
            FloatVector x = FloatVector.broadcast(F, ap[ao]);
            s00 = b0v.fma(x, s00);
            s01 = b1v.fma(x, s01);
            x = FloatVector.broadcast(F, ap[ao + 1]);
            s10 = b0v.fma(x, s10);
            s11 = b1v.fma(x, s11);
            x = FloatVector.broadcast(F, ap[ao + 2]);
            s20 = b0v.fma(x, s20);
            s21 = b1v.fma(x, s21);
            x = FloatVector.broadcast(F, ap[ao + 3]);
            s30 = b0v.fma(x, s30);
            s31 = b1v.fma(x, s31);
        }
        s00.intoArray(c, c0); s01.intoArray(c, c0 + L);
        s10.intoArray(c, c1); s11.intoArray(c, c1 + L);
        s20.intoArray(c, c2); s21.intoArray(c, c2 + L);
        s30.intoArray(c, c3); s31.intoArray(c, c3 + L);
    }

    /** Eight rows of C (two tiles of A, at a0 and a1) by one vector. */
    private static void tile1x2(float[] ap, int a0, int a1, float[] b, int b0, int bStride, int len, float[] c, int c0, int cStride) {
        FloatVector s0 = FloatVector.fromArray(F, c, c0), s1 = FloatVector.fromArray(F, c, c0 + cStride);
        FloatVector s2 = FloatVector.fromArray(F, c, c0 + 2 * cStride), s3 = FloatVector.fromArray(F, c, c0 + 3 * cStride);
        FloatVector s4 = FloatVector.fromArray(F, c, c0 + 4 * cStride), s5 = FloatVector.fromArray(F, c, c0 + 5 * cStride);
        FloatVector s6 = FloatVector.fromArray(F, c, c0 + 6 * cStride), s7 = FloatVector.fromArray(F, c, c0 + 7 * cStride);
        for (int t = 0; t < len; t++) {
            FloatVector bv = FloatVector.fromArray(F, b, b0 + t * bStride);
            int x = a0 + t * TILE, y = a1 + t * TILE;
            s0 = bv.fma(FloatVector.broadcast(F, ap[x]), s0);
            s1 = bv.fma(FloatVector.broadcast(F, ap[x + 1]), s1);
            s2 = bv.fma(FloatVector.broadcast(F, ap[x + 2]), s2);
            s3 = bv.fma(FloatVector.broadcast(F, ap[x + 3]), s3);
            s4 = bv.fma(FloatVector.broadcast(F, ap[y]), s4);
            s5 = bv.fma(FloatVector.broadcast(F, ap[y + 1]), s5);
            s6 = bv.fma(FloatVector.broadcast(F, ap[y + 2]), s6);
            s7 = bv.fma(FloatVector.broadcast(F, ap[y + 3]), s7);
        }
        s0.intoArray(c, c0);
        s1.intoArray(c, c0 + cStride);
        s2.intoArray(c, c0 + 2 * cStride);
        s3.intoArray(c, c0 + 3 * cStride);
        s4.intoArray(c, c0 + 4 * cStride);
        s5.intoArray(c, c0 + 5 * cStride);
        s6.intoArray(c, c0 + 6 * cStride);
        s7.intoArray(c, c0 + 7 * cStride);
    }

    /** Four rows of C by one vector. */
    private static void tile1(float[] ap, int a0, float[] b, int b0, int bStride, int len, float[] c, int c0, int cStride) {
        int c1 = c0 + cStride, c2 = c1 + cStride, c3 = c2 + cStride;
        FloatVector s0 = FloatVector.fromArray(F, c, c0), s1 = FloatVector.fromArray(F, c, c1);
        FloatVector s2 = FloatVector.fromArray(F, c, c2), s3 = FloatVector.fromArray(F, c, c3);
        for (int t = 0; t < len; t++) {
            FloatVector bv = FloatVector.fromArray(F, b, b0 + t * bStride);
            int ao = a0 + t * TILE;
            s0 = bv.fma(FloatVector.broadcast(F, ap[ao]), s0);
            s1 = bv.fma(FloatVector.broadcast(F, ap[ao + 1]), s1);
            s2 = bv.fma(FloatVector.broadcast(F, ap[ao + 2]), s2);
            s3 = bv.fma(FloatVector.broadcast(F, ap[ao + 3]), s3);
        }
        s0.intoArray(c, c0);
        s1.intoArray(c, c1);
        s2.intoArray(c, c2);
        s3.intoArray(c, c3);
    }
}
