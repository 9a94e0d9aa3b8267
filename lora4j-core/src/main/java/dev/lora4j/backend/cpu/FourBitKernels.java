package dev.lora4j.backend.cpu;

import dev.lora4j.backend.cpu.FourBitDecoder.Rounding;
import jdk.incubator.vector.ByteVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static dev.lora4j.backend.cpu.FourBitDecoder.PACKED_BYTES;
import static dev.lora4j.backend.cpu.FourBitDecoder.STEP;
import static dev.lora4j.backend.cpu.FourBitDecoder.DUP_FIRST;
import static dev.lora4j.backend.cpu.FourBitDecoder.DUP_SECOND;
import static dev.lora4j.backend.cpu.FourBitDecoder.NIBBLE_SHIFTS;
import static dev.lora4j.backend.cpu.VectorShapes.F;
import static dev.lora4j.backend.cpu.VectorShapes.I;
import static dev.lora4j.backend.cpu.VectorShapes.L;
import static dev.lora4j.backend.cpu.VectorShapes.LE;
import static jdk.incubator.vector.VectorOperators.LSHR;

/**
 * {@code out[n, m] = x[n, k] · w[m, k]ᵀ} with w a 4-bit weight, on one block of rows and output features, with the
 * arithmetic of {@link MatmulKernels} on the weight {@link FourBitDecoder} decodes: every dot product one chain of
 * FMAs per vector lane over all of k, one {@link Lanes#sum} of the lanes, then the elements past the last whole
 * vector. So each result is bit for bit the dense kernels' on the dequantized weight.
 * <ul>
 *   <li><b>Fused</b> (up to {@value #MAX_FUSED_ROWS} x rows: generation, one token or a few): the packed codes
 *       are read once, {@value #STREAMS} weight rows at a time for one x row, two for more, and decoded in
 *       registers straight into the FMAs: per vector step of a row, the packed bytes of two vectors of weights
 *       are loaded and widened to int lanes once, then for each vector a permute gives every lane its byte, a
 *       shift its nibble, a permute its value (see {@link FourBitDecoder}), and one FMA per x row uses it.
 *       Needs 16-lane vectors (a block's table in one register), k a multiple of the block size (so that the
 *       rows' blocks line up) and a rounding done in vector lanes.</li>
 *   <li><b>Packed</b> (a prompt, or a weight the fused path does not take): a slice of k of the block's weight
 *       rows is decoded into the per-thread array {@link MatmulKernels} packs dense weights into, and the same
 *       register tiles ({@link MatmulKernels#tile}, {@link MatmulKernels#row}) run on it.</li>
 * </ul>
 */
final class FourBitKernels {
    /** Weight rows the fused path decodes at once. */
    static final int STREAMS = 4;
    /** x rows the fused path takes, at most: beyond, the decoded weights are worth packing for the register tiles. */
    static final int MAX_FUSED_ROWS = 8;
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    private FourBitKernels() {}

    /** Whether the fused path can compute products of x rows of length k with w. */
    static boolean fuses(FourBitDecoder w, Rounding r, int k) {
        return L == 16 && r.inVectors() && k % w.blockSize() == 0;
    }

    /**
     * Rows [r0, r1) (at most {@value #MAX_FUSED_ROWS}) and output features [c0, c1) of the product, fused; adds to
     * out when {@code accumulate}. One x row meets {@value #STREAMS} weight rows at a time; more meet two at a
     * time, four x rows per pass, so that each decoded vector serves four FMAs.
     */
    static void fused(MemorySegment x, FourBitDecoder w, Rounding r, MemorySegment out, int k, int m,
                      int r0, int r1, int c0, int c1, boolean accumulate) {
        int rows = r1 - r0, blocks = k / w.blockSize();
        float[] xr = Scratch.get().xPack(rows * k);
        MemorySegment.copy(x, F32, (long) r0 * k * Float.BYTES, xr, 0, rows * k);
        int group = rows == 1 ? STREAMS : 2;
        float[] sums = new float[STREAMS * 2], lanes = new float[STREAMS * 2 * L], scales = new float[blocks];
        long[] first = new long[group];
        int[] tables = new int[group * blocks * 16];
        for (int c = c0; c < c1; c += group) {
            int cols = Math.min(group, c1 - c);
            // A partial group repeats its last weight row (a partial pass its last x row); the extra results are
            // never stored.
            for (int i = 0; i < group; i++) {
                first[i] = (long) (c + Math.min(i, cols - 1)) * k;
                w.tables(first[i] / w.blockSize(), blocks, r, tables, i * blocks * 16, scales);
            }
            if (rows == 1) {
                fusedRows(xr, 0, w, first, k, tables, lanes, sums);
                store(out, (long) r0 * m + c, sums, cols, accumulate);
                continue;
            }
            for (int p = 0; p < rows; p += 4) {
                int n = Math.min(4, rows - p);
                int x0 = p * k, x1 = (p + Math.min(1, n - 1)) * k, x2 = (p + Math.min(2, n - 1)) * k, x3 = (p + Math.min(3, n - 1)) * k;
                fusedPairs(xr, x0, x1, x2, x3, w, first, k, tables, lanes, sums);
                for (int i = 0; i < n; i++) store(out, (long) (r0 + p + i) * m + c, sums, 2 * i, cols, accumulate);
            }
        }
    }

    private static void store(MemorySegment out, long o, float[] sums, int cols, boolean accumulate) {
        store(out, o, sums, 0, cols, accumulate);
    }

    private static void store(MemorySegment out, long o, float[] sums, int from, int cols, boolean accumulate) {
        for (int j = 0; j < cols; j++) out.setAtIndex(F32, o + j, accumulate ? out.getAtIndex(F32, o + j) + sums[from + j] : sums[from + j]);
    }

    /**
     * One x row (at x[x0]) by {@value #STREAMS} weight rows (first elements first[i], each at the start of a block,
     * tables made into {@code tables}, rows apart): sums[0..4). (The tables come through an array because the
     * JIT would not inline their making into a kernel this large, and would box them.)
     */
    static void fusedRows(float[] x, int x0, FourBitDecoder w, long[] first, int k, int[] tables, float[] lanes, float[] sums) {
        MemorySegment packed = w.packed();
        int blockSize = w.blockSize();
        long p0 = first[0] >>> 1, p1 = first[1] >>> 1, p2 = first[2] >>> 1, p3 = first[3] >>> 1;
        int t1 = k / blockSize * 16, t2 = 2 * t1, t3 = 3 * t1;
        FloatVector a0 = FloatVector.zero(F), a1 = a0, a2 = a0, a3 = a0;
        for (int j0 = 0, t = 0; j0 < k; j0 += blockSize, t += 16) {
            IntVector v0 = IntVector.fromArray(I, tables, t), v1 = IntVector.fromArray(I, tables, t1 + t);
            IntVector v2 = IntVector.fromArray(I, tables, t2 + t), v3 = IntVector.fromArray(I, tables, t3 + t);
            int j1 = j0 + blockSize;
            for (int j = j0; j < j1; j += STEP) {
                FloatVector xa = FloatVector.fromArray(F, x, x0 + j), xb = FloatVector.fromArray(F, x, x0 + j + L);
                long o = j >>> 1;
                IntVector q = (IntVector) ByteVector.fromMemorySegment(PACKED_BYTES, packed, p0 + o, LE).castShape(I, 0);
                a0 = xb.fma(q.rearrange(DUP_SECOND).lanewise(LSHR, NIBBLE_SHIFTS).selectFrom(v0).reinterpretAsFloats(),
                        xa.fma(q.rearrange(DUP_FIRST).lanewise(LSHR, NIBBLE_SHIFTS).selectFrom(v0).reinterpretAsFloats(), a0));
                q = (IntVector) ByteVector.fromMemorySegment(PACKED_BYTES, packed, p1 + o, LE).castShape(I, 0);
                a1 = xb.fma(q.rearrange(DUP_SECOND).lanewise(LSHR, NIBBLE_SHIFTS).selectFrom(v1).reinterpretAsFloats(),
                        xa.fma(q.rearrange(DUP_FIRST).lanewise(LSHR, NIBBLE_SHIFTS).selectFrom(v1).reinterpretAsFloats(), a1));
                q = (IntVector) ByteVector.fromMemorySegment(PACKED_BYTES, packed, p2 + o, LE).castShape(I, 0);
                a2 = xb.fma(q.rearrange(DUP_SECOND).lanewise(LSHR, NIBBLE_SHIFTS).selectFrom(v2).reinterpretAsFloats(),
                        xa.fma(q.rearrange(DUP_FIRST).lanewise(LSHR, NIBBLE_SHIFTS).selectFrom(v2).reinterpretAsFloats(), a2));
                q = (IntVector) ByteVector.fromMemorySegment(PACKED_BYTES, packed, p3 + o, LE).castShape(I, 0);
                a3 = xb.fma(q.rearrange(DUP_SECOND).lanewise(LSHR, NIBBLE_SHIFTS).selectFrom(v3).reinterpretAsFloats(),
                        xa.fma(q.rearrange(DUP_FIRST).lanewise(LSHR, NIBBLE_SHIFTS).selectFrom(v3).reinterpretAsFloats(), a3));
            }
        }
        a0.intoArray(lanes, 0); a1.intoArray(lanes, L); a2.intoArray(lanes, 2 * L); a3.intoArray(lanes, 3 * L);
        // k is a multiple of the block size, hence of L: no elements past the last whole vector.
        for (int i = 0; i < STREAMS; i++) sums[i] = Lanes.sum(FloatVector.fromArray(F, lanes, i * L));
    }

    /**
     * Four x rows (at x[x0], ..., x[x3]) by two weight rows (as in {@link #fusedRows}): sums[2i + g] for x row i
     * and weight row g. Each decoded vector is used by four pairs of FMAs.
     */
    static void fusedPairs(float[] x, int x0, int x1, int x2, int x3, FourBitDecoder w, long[] first, int k,
                           int[] tables, float[] lanes, float[] sums) {
        MemorySegment packed = w.packed();
        int blockSize = w.blockSize();
        long p0 = first[0] >>> 1, p1 = first[1] >>> 1;
        int t1 = k / blockSize * 16;
        FloatVector a00 = FloatVector.zero(F), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
        for (int j0 = 0, t = 0; j0 < k; j0 += blockSize, t += 16) {
            IntVector v0 = IntVector.fromArray(I, tables, t), v1 = IntVector.fromArray(I, tables, t1 + t);
            int j1 = j0 + blockSize;
            for (int j = j0; j < j1; j += STEP) {
                long o = j >>> 1;
                IntVector q = (IntVector) ByteVector.fromMemorySegment(PACKED_BYTES, packed, p0 + o, LE).castShape(I, 0);
                FloatVector f0 = q.rearrange(DUP_FIRST).lanewise(LSHR, NIBBLE_SHIFTS).selectFrom(v0).reinterpretAsFloats();
                FloatVector s0 = q.rearrange(DUP_SECOND).lanewise(LSHR, NIBBLE_SHIFTS).selectFrom(v0).reinterpretAsFloats();
                q = (IntVector) ByteVector.fromMemorySegment(PACKED_BYTES, packed, p1 + o, LE).castShape(I, 0);
                FloatVector f1 = q.rearrange(DUP_FIRST).lanewise(LSHR, NIBBLE_SHIFTS).selectFrom(v1).reinterpretAsFloats();
                FloatVector s1 = q.rearrange(DUP_SECOND).lanewise(LSHR, NIBBLE_SHIFTS).selectFrom(v1).reinterpretAsFloats();
                FloatVector xa = FloatVector.fromArray(F, x, x0 + j), xb = FloatVector.fromArray(F, x, x0 + j + L);
                a00 = xb.fma(s0, xa.fma(f0, a00));
                a01 = xb.fma(s1, xa.fma(f1, a01));
                xa = FloatVector.fromArray(F, x, x1 + j);
                xb = FloatVector.fromArray(F, x, x1 + j + L);
                a10 = xb.fma(s0, xa.fma(f0, a10));
                a11 = xb.fma(s1, xa.fma(f1, a11));
                xa = FloatVector.fromArray(F, x, x2 + j);
                xb = FloatVector.fromArray(F, x, x2 + j + L);
                a20 = xb.fma(s0, xa.fma(f0, a20));
                a21 = xb.fma(s1, xa.fma(f1, a21));
                xa = FloatVector.fromArray(F, x, x3 + j);
                xb = FloatVector.fromArray(F, x, x3 + j + L);
                a30 = xb.fma(s0, xa.fma(f0, a30));
                a31 = xb.fma(s1, xa.fma(f1, a31));
            }
        }
        a00.intoArray(lanes, 0); a01.intoArray(lanes, L); a10.intoArray(lanes, 2 * L); a11.intoArray(lanes, 3 * L);
        a20.intoArray(lanes, 4 * L); a21.intoArray(lanes, 5 * L); a30.intoArray(lanes, 6 * L); a31.intoArray(lanes, 7 * L);
        for (int i = 0; i < 8; i++) sums[i] = Lanes.sum(FloatVector.fromArray(F, lanes, i * L));
    }

    /**
     * Rows [r0, r1) and output features [c0, c1) of the product by MatmulKernels' packed path, the weight slices
     * decoded instead of widened; adds to out when {@code accumulate}.
     */
    static void packed(MemorySegment x, FourBitDecoder w, Rounding rounding, MemorySegment out, int k, int m,
                       int r0, int r1, int c0, int c1, boolean accumulate) {
        int tile = MatmulKernels.TILE, kSlice = MatmulKernels.K_SLICE, subBlock = MatmulKernels.SUB_BLOCK;
        float[] sums = new float[tile * tile];
        int rows = r1 - r0, features = c1 - c0;
        int slots = Parallel.ceilDiv(features, tile) * tile;
        Scratch scratch = Scratch.get();
        float[] xp = scratch.xPack(rows * Math.min(kSlice, k));
        float[] wp = scratch.wPack(features * Math.min(kSlice, k));
        float[] partial = scratch.partialSums(rows * slots * L);
        float[] block = scratch.outPack(rows * features);
        float[] lut = new float[16];
        for (int j0 = 0; j0 < k; j0 += kSlice) {
            int len = Math.min(kSlice, k - j0);
            boolean first = j0 == 0, last = j0 + len == k;
            for (int r = 0; r < rows; r++) MemorySegment.copy(x, F32, ((long) (r0 + r) * k + j0) * Float.BYTES, xp, r * len, len);
            for (int c = 0; c < features; c++) w.decode((long) (c0 + c) * k + j0, len, rounding, wp, c * len, lut);
            for (int sb = 0; sb < rows; sb += subBlock) {
                int sbEnd = Math.min(rows, sb + subBlock);
                for (int c = 0; c < features; c += tile) {
                    int cols = Math.min(tile, features - c);
                    // A partial group repeats its last row; the extra results are never kept.
                    int q0 = c * len, q1 = (c + Math.min(1, cols - 1)) * len;
                    int q2 = (c + Math.min(2, cols - 1)) * len, q3 = (c + Math.min(3, cols - 1)) * len;
                    int r = sb;
                    for (; r + tile <= sbEnd; r += tile) {
                        MatmulKernels.tile(xp, r * len, len, wp, q0, q1, q2, q3, len, partial, (r * slots + c) * L, slots * L, first, last, sums);
                        if (last) collect(block, features, r, tile, c, cols, sums);
                    }
                    for (; r < sbEnd; r++) {
                        MatmulKernels.row(xp, r * len, wp, q0, q1, q2, q3, len, partial, (r * slots + c) * L, first, last, sums);
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

    private static void collect(float[] block, int features, int r, int rows, int c, int cols, float[] sums) {
        for (int i = 0; i < rows; i++) System.arraycopy(sums, i * MatmulKernels.TILE, block, (r + i) * features + c, cols);
    }
}
