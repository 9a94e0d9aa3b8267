package dev.lora4j.backend.cpu;

import dev.lora4j.tensor.DType;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

import static dev.lora4j.backend.cpu.VectorShapes.L;

/**
 * The two backward forms of {@code out = x · wᵀ}, free of threading concerns. Both have the shape
 * {@code C[p, j] = Σ_t A(p, t) · B[t, j]} with B's rows contiguous in j:
 * <ul>
 *   <li>input gradient: {@code dX[r, j] = Σ_c dY[r, c] · w[c, j]}: A = dY as it is, B = w (F32, BF16 or F16);</li>
 *   <li>weight gradient: {@code dW[c, j] = Σ_r dY[r, c] · x[r, j]}: A = dY transposed, B = x.</li>
 * </ul>
 * A task computes a block of up to {@value #MAX_P_BLOCK} rows of C by {@value #J_BLOCK} columns. The sum over t
 * is taken {@value #T_SLICE} terms at a time: the slice of B is widened to F32 and packed into a per-thread array
 * (rows padded to whole vectors), the slice of A into groups of rows interleaved by t, and {@link ProductTiles}
 * multiplies them in register tiles. The block of C gathers in an array and reaches the output once. Every
 * element is summed over t in increasing order, whatever the blocks and the threads, so results do not depend
 * on the number of threads.
 */
final class MatmulBackwardKernels {
    static final int P_TILE = ProductTiles.TILE;
    /** Rows of C per block, at most: the packed slice of B is reused by all of them. */
    static final int MAX_P_BLOCK = 256;
    /** Columns of C per block: a whole number of three-vector strips for 256- and 512-bit vectors. */
    static final int J_BLOCK = 240;
    /** Terms of the sum per packed slice: a strip of the packed B slice (128 × 3 vectors, 24 KiB) stays in L1. */
    static final int T_SLICE = ProductTiles.TERM_SLICE;
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    /** Per-thread packing arrays: A's slice, B's slice, the block of C. */
    private static final ThreadLocal<float[][]> PACKS = ThreadLocal.withInitial(() -> new float[][] {
            new float[MAX_P_BLOCK * T_SLICE], new float[T_SLICE * J_BLOCK], new float[MAX_P_BLOCK * J_BLOCK]});

    private MatmulBackwardKernels() {}

    /** How A is laid out in dY: {@code ROWS} for A(p, t) = dY[p, t], {@code COLUMNS} for A(p, t) = dY[t, p]. */
    enum Coefficients { ROWS, COLUMNS }

    /**
     * The block [p0, p1) × [j0, j1) (at most {@value #MAX_P_BLOCK} × {@value #J_BLOCK}) of C[P, J] (rows J long)
     * (+)= Σ_t A(p, t)·B[t, j] over t in [0, T), with A in {@code a} (its rows {@code aRow} floats long) and B in
     * {@code b} of dtype {@code bt} (rows J long).
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
            ProductTiles.multiplyAdd(ap, rows, len, bp, 0, padded, padded, cp, 0, padded);
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
}
