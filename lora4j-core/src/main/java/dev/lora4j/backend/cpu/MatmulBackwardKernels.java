package dev.lora4j.backend.cpu;

import dev.lora4j.tensor.DType;
import jdk.incubator.vector.FloatVector;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

import static dev.lora4j.backend.cpu.VectorShapes.F;
import static dev.lora4j.backend.cpu.VectorShapes.L;

/**
 * The two backward forms of {@code out = x · wᵀ}, free of threading concerns. Both have the shape
 * {@code C[p, j] = Σ_t A(p, t) · B[t, j]} with B's rows contiguous in j:
 * <ul>
 *   <li>input gradient: {@code dX[r, j] = Σ_c dY[r, c] · w[c, j]}: A = dY as it is, B = w (F32, BF16 or F16);</li>
 *   <li>weight gradient: {@code dW[c, j] = Σ_r dY[r, c] · x[r, j]}: A = dY transposed, B = x.</li>
 * </ul>
 * A task computes a block of up to {@value #MAX_P_BLOCK} rows of C by {@value #J_BLOCK} columns. The sum over t is taken
 * {@value #T_SLICE} terms at a time: the slice of B is widened to F32 and packed into a per-thread array (rows
 * padded to whole vectors), the slice of A into groups of {@value #P_TILE} rows interleaved by t, and a register
 * tile of {@value #P_TILE} rows by two vectors of columns keeps eight accumulators while it walks the slice: each
 * B vector loaded is used four times, each A value broadcast is used twice. The block of C gathers in an array
 * and reaches the output once. Every element is summed over t in increasing order, whatever the blocks and the
 * threads, so results do not depend on the number of threads.
 */
final class MatmulBackwardKernels {
    static final int P_TILE = 4;
    /** Rows of C per block, at most: the packed slice of B is reused by all of them. */
    static final int MAX_P_BLOCK = 256;
    /** Columns of C per block: a whole number of three-vector strips for 256- and 512-bit vectors. */
    static final int J_BLOCK = 240;
    /** Terms of the sum per packed slice: a strip of the packed B slice (128 × 3 vectors, 24 KiB) stays in L1. */
    static final int T_SLICE = 128;
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    /** Per-thread packing arrays: A's slice, B's slice, the block of C. */
    private static final ThreadLocal<float[][]> PACKS = ThreadLocal.withInitial(() -> new float[][] {
            new float[MAX_P_BLOCK * T_SLICE], new float[T_SLICE * J_BLOCK], new float[MAX_P_BLOCK * J_BLOCK]});

    private MatmulBackwardKernels() {}

    /** How A is laid out in dY: {@code ROWS} for A(p, t) = dY[p, t], {@code COLUMNS} for A(p, t) = dY[t, p]. */
    enum Coefficients { ROWS, COLUMNS }

    /**
     * The block [p0, p1) × [j0, j1) (at most {@value #MAX_P_BLOCK} × {@value #J_BLOCK}) of C[P, J] (row length J) (+)= Σ_t A(p, t)·B[t, j] over t in [0, T), with
     * A in {@code a} (its rows {@code aRow} floats long) and B in {@code b} of dtype {@code bt} (rows J long).
     */
    static void block(MemorySegment a, int aRow, Coefficients layout, MemorySegment b, DType bt, MemorySegment c,
                      int t, int jTotal, int p0, int p1, int j0, int j1, boolean accumulate) {
        float[][] packs = PACKS.get();
        float[] ap = packs[0], bp = packs[1], cp = packs[2];
        int rows = p1 - p0, width = j1 - j0;
        int padded = (width + L - 1) / L * L; // B's packed row length: whole vectors, zeros past width
        int tiles = (rows + P_TILE - 1) / P_TILE;
        Arrays.fill(cp, 0, tiles * P_TILE * padded, 0f);
        for (int t0 = 0; t0 < t; t0 += T_SLICE) {
            int len = Math.min(T_SLICE, t - t0);
            packA(a, aRow, layout, p0, rows, t0, len, ap);
            for (int r = 0; r < len; r++) {
                FloatConversions.toFloatArray(b, bt, (long) (t0 + r) * jTotal + j0, bp, r * padded, width);
                if (padded > width) Arrays.fill(bp, r * padded + width, (r + 1) * padded, 0f);
            }
            int jv = 0;
            for (; jv + 3 * L <= padded; jv += 3 * L) {
                for (int tile = 0; tile < tiles; tile++) tile3(ap, tile * len * P_TILE, bp, jv, padded, len, cp, tile * P_TILE * padded + jv);
            }
            for (; jv + 2 * L <= padded; jv += 2 * L) {
                for (int tile = 0; tile < tiles; tile++) tile2(ap, tile * len * P_TILE, bp, jv, padded, len, cp, tile * P_TILE * padded + jv);
            }
            if (jv < padded) {
                for (int tile = 0; tile < tiles; tile++) tile1(ap, tile * len * P_TILE, bp, jv, padded, len, cp, tile * P_TILE * padded + jv);
            }
        }
        for (int r = 0; r < rows; r++) {
            long o = ((long) (p0 + r) * jTotal + j0) * Float.BYTES;
            if (accumulate) CpuKernels.addArray(c, o, cp, r * padded, width);
            else MemorySegment.copy(cp, r * padded, c, F32, o, width);
        }
    }

    /**
     * Packs A(p, t) for p in [p0, p0+rows), t in [t0, t0+len) as groups of P_TILE rows, t-major within a group:
     * ap[(tile·len + t)·P_TILE + i] = A(p0 + tile·P_TILE + i, t0 + t); rows past the block are zeros.
     */
    private static void packA(MemorySegment a, int aRow, Coefficients layout, int p0, int rows, int t0, int len, float[] ap) {
        int tiles = (rows + P_TILE - 1) / P_TILE;
        if (rows < tiles * P_TILE) Arrays.fill(ap, (tiles - 1) * len * P_TILE, tiles * len * P_TILE, 0f);
        if (layout == Coefficients.ROWS) {
            for (int p = 0; p < rows; p++) {
                long row = (long) (p0 + p) * aRow + t0;
                int base = p / P_TILE * len * P_TILE + p % P_TILE;
                for (int t = 0; t < len; t++) ap[base + t * P_TILE] = a.getAtIndex(F32, row + t);
            }
        } else { // walk dY along its rows: reading down a column would touch a cache line per element
            for (int t = 0; t < len; t++) {
                long row = (long) (t0 + t) * aRow + p0;
                for (int p = 0; p < rows; p++) ap[p / P_TILE * len * P_TILE + t * P_TILE + p % P_TILE] = a.getAtIndex(F32, row + p);
            }
        }
    }

    /** cp[c0 + i·stride + (0..2L)] += Σ_t ap[a0 + t·4 + i] · bp[t·stride + jv + (0..2L)] for i in 0..3. */
    private static void tile2(float[] ap, int a0, float[] bp, int jv, int stride, int len, float[] cp, int c0) {
        int c1 = c0 + stride, c2 = c1 + stride, c3 = c2 + stride;
        FloatVector s00 = FloatVector.fromArray(F, cp, c0), s01 = FloatVector.fromArray(F, cp, c0 + L);
        FloatVector s10 = FloatVector.fromArray(F, cp, c1), s11 = FloatVector.fromArray(F, cp, c1 + L);
        FloatVector s20 = FloatVector.fromArray(F, cp, c2), s21 = FloatVector.fromArray(F, cp, c2 + L);
        FloatVector s30 = FloatVector.fromArray(F, cp, c3), s31 = FloatVector.fromArray(F, cp, c3 + L);
        for (int t = 0; t < len; t++) {
            int bo = t * stride + jv, ao = a0 + t * P_TILE;
            FloatVector b0 = FloatVector.fromArray(F, bp, bo), b1 = FloatVector.fromArray(F, bp, bo + L);
            FloatVector x = FloatVector.broadcast(F, ap[ao]);
            s00 = b0.fma(x, s00);
            s01 = b1.fma(x, s01);
            x = FloatVector.broadcast(F, ap[ao + 1]);
            s10 = b0.fma(x, s10);
            s11 = b1.fma(x, s11);
            x = FloatVector.broadcast(F, ap[ao + 2]);
            s20 = b0.fma(x, s20);
            s21 = b1.fma(x, s21);
            x = FloatVector.broadcast(F, ap[ao + 3]);
            s30 = b0.fma(x, s30);
            s31 = b1.fma(x, s31);
        }
        s00.intoArray(cp, c0); s01.intoArray(cp, c0 + L);
        s10.intoArray(cp, c1); s11.intoArray(cp, c1 + L);
        s20.intoArray(cp, c2); s21.intoArray(cp, c2 + L);
        s30.intoArray(cp, c3); s31.intoArray(cp, c3 + L);
    }

    /** As {@link #tile2} for three vectors of columns: twelve accumulators. */
    private static void tile3(float[] ap, int a0, float[] bp, int jv, int stride, int len, float[] cp, int c0) {
        int c1 = c0 + stride, c2 = c1 + stride, c3 = c2 + stride;
        FloatVector s00 = FloatVector.fromArray(F, cp, c0), s01 = FloatVector.fromArray(F, cp, c0 + L), s02 = FloatVector.fromArray(F, cp, c0 + 2 * L);
        FloatVector s10 = FloatVector.fromArray(F, cp, c1), s11 = FloatVector.fromArray(F, cp, c1 + L), s12 = FloatVector.fromArray(F, cp, c1 + 2 * L);
        FloatVector s20 = FloatVector.fromArray(F, cp, c2), s21 = FloatVector.fromArray(F, cp, c2 + L), s22 = FloatVector.fromArray(F, cp, c2 + 2 * L);
        FloatVector s30 = FloatVector.fromArray(F, cp, c3), s31 = FloatVector.fromArray(F, cp, c3 + L), s32 = FloatVector.fromArray(F, cp, c3 + 2 * L);
        for (int t = 0; t < len; t++) {
            int bo = t * stride + jv, ao = a0 + t * P_TILE;
            FloatVector b0 = FloatVector.fromArray(F, bp, bo), b1 = FloatVector.fromArray(F, bp, bo + L);
            FloatVector b2 = FloatVector.fromArray(F, bp, bo + 2 * L);
            FloatVector x = FloatVector.broadcast(F, ap[ao]);
            s00 = b0.fma(x, s00);
            s01 = b1.fma(x, s01);
            s02 = b2.fma(x, s02);
            x = FloatVector.broadcast(F, ap[ao + 1]);
            s10 = b0.fma(x, s10);
            s11 = b1.fma(x, s11);
            s12 = b2.fma(x, s12);
            x = FloatVector.broadcast(F, ap[ao + 2]);
            s20 = b0.fma(x, s20);
            s21 = b1.fma(x, s21);
            s22 = b2.fma(x, s22);
            x = FloatVector.broadcast(F, ap[ao + 3]);
            s30 = b0.fma(x, s30);
            s31 = b1.fma(x, s31);
            s32 = b2.fma(x, s32);
        }
        s00.intoArray(cp, c0); s01.intoArray(cp, c0 + L); s02.intoArray(cp, c0 + 2 * L);
        s10.intoArray(cp, c1); s11.intoArray(cp, c1 + L); s12.intoArray(cp, c1 + 2 * L);
        s20.intoArray(cp, c2); s21.intoArray(cp, c2 + L); s22.intoArray(cp, c2 + 2 * L);
        s30.intoArray(cp, c3); s31.intoArray(cp, c3 + L); s32.intoArray(cp, c3 + 2 * L);
    }

    /** As {@link #tile2} for one vector of columns. */
    private static void tile1(float[] ap, int a0, float[] bp, int jv, int stride, int len, float[] cp, int c0) {
        int c1 = c0 + stride, c2 = c1 + stride, c3 = c2 + stride;
        FloatVector s0 = FloatVector.fromArray(F, cp, c0), s1 = FloatVector.fromArray(F, cp, c1);
        FloatVector s2 = FloatVector.fromArray(F, cp, c2), s3 = FloatVector.fromArray(F, cp, c3);
        for (int t = 0; t < len; t++) {
            FloatVector b0 = FloatVector.fromArray(F, bp, t * stride + jv);
            int ao = a0 + t * P_TILE;
            s0 = b0.fma(FloatVector.broadcast(F, ap[ao]), s0);
            s1 = b0.fma(FloatVector.broadcast(F, ap[ao + 1]), s1);
            s2 = b0.fma(FloatVector.broadcast(F, ap[ao + 2]), s2);
            s3 = b0.fma(FloatVector.broadcast(F, ap[ao + 3]), s3);
        }
        s0.intoArray(cp, c0);
        s1.intoArray(cp, c1);
        s2.intoArray(cp, c2);
        s3.intoArray(cp, c3);
    }
}
