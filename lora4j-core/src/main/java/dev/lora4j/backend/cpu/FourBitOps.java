package dev.lora4j.backend.cpu;

import dev.lora4j.backend.cpu.FourBitDecoder.Rounding;
import dev.lora4j.quant.HostQuantizer;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.quant.QuantizedArrays;
import dev.lora4j.quant.QuantizedTensor;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorOperators;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

import static dev.lora4j.backend.cpu.VectorShapes.L;

/**
 * The 4-bit ops of {@link CpuBackend}: quantization ({@link HostQuantizer} on the weight's floats), dequantization,
 * and the two products with a quantized weight, {@code out = x · wᵀ} and {@code dX = dY · w}.
 *
 * <p>The products never hold the weight dequantized. Every weight is the value bitsandbytes' 4-bit matmul sees
 * (dequantized to the weight's original dtype, then cast to the compute dtype; see {@link HostQuantizer#matmulValue})
 * and every sum is added in the dense kernels' order, so the results are bit for bit those of the dense ops on the
 * dequantized weight, whatever the number of threads:
 * <ul>
 *   <li>the forward product of up to eight rows (generation) decodes the packed codes in registers, straight into
 *       its FMAs ({@link FourBitKernels#fused}): the weight is read once, at half a byte per weight;</li>
 *   <li>a longer forward product (a prompt, a training batch) decodes a slice of weight rows at a time into the
 *       arrays the dense register tiles read ({@link FourBitKernels#packed});</li>
 *   <li>the backward product decodes a slice of rows by a block of columns where the dense kernel widens it.</li>
 * </ul>
 */
final class FourBitOps {
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ValueLayout.OfShort I16 = ValueLayout.JAVA_SHORT_UNALIGNED;
    /** x rows and weight rows per block of the packed product (CpuBackend.matmul's blocks). */
    private static final int ROW_BLOCK = 128, FEATURE_BLOCK = 128;
    /** Weights per task of the fused product, at least: smaller weights are not worth a hand-off. */
    private static final int FUSED_GRAIN = 1 << 16;
    /** Elements per dequantization task: a multiple of every block size. */
    private static final int DEQUANT_CHUNK = 1 << 16;

    /** Per-thread packing arrays of the backward product, sized as MatmulBackwardKernels'. */
    private static final ThreadLocal<float[][]> PACKS = ThreadLocal.withInitial(() -> new float[][] {
            new float[MatmulBackwardKernels.MAX_P_BLOCK * MatmulBackwardKernels.T_SLICE],
            new float[MatmulBackwardKernels.T_SLICE * MatmulBackwardKernels.J_BLOCK],
            new float[MatmulBackwardKernels.MAX_P_BLOCK * MatmulBackwardKernels.J_BLOCK]});

    private final CpuBackend backend;
    private final Parallel parallel;
    private final int threads;

    FourBitOps(CpuBackend backend, Parallel parallel, int threads) {
        this.backend = backend;
        this.parallel = parallel;
        this.threads = threads;
    }

    // ---- quantization --------------------------------------------------------------------------------------

    QuantizedTensor quantize(Tensor weight, QuantSpec spec) {
        if (weight.dtype() != DType.F32 && weight.dtype() != DType.BF16 && weight.dtype() != DType.F16) {
            throw new IllegalArgumentException("quantize4bit: the weight must be F32, BF16 or F16, got " + weight);
        }
        if (weight.numel() > Integer.MAX_VALUE - 8) {
            throw new IllegalArgumentException("quantize4bit: " + weight + " has more than 2^31 elements; quantize it in parts");
        }
        MemorySegment src = seg(weight);
        int n = (int) weight.numel();
        float[] values = new float[n];
        parallel.forRange(Parallel.ceilDiv(n, DEQUANT_CHUNK), 1, (from, to) -> {
            int start = from * DEQUANT_CHUNK, end = (int) Math.min(n, (long) to * DEQUANT_CHUNK);
            FloatConversions.toFloatArray(src, weight.dtype(), start, values, start, end - start);
        });
        QuantizedArrays q = HostQuantizer.quantize(values, spec, "the " + weight.dtype() + " weight " + Arrays.toString(weight.shape()));
        Tensor packed = bytes(q.packed());
        if (!spec.doubleQuant()) {
            return new QuantizedTensor(spec, weight.dtype(), weight.shape(), packed, floats(q.absmax()), null, null, 0f);
        }
        return new QuantizedTensor(spec, weight.dtype(), weight.shape(), packed, bytes(q.absmaxCodes()),
                floats(q.nestedAbsmax()), floats(q.nestedCode()), q.nestedOffset());
    }

    private Tensor bytes(byte[] b) {
        Tensor t = backend.allocate(DType.U8, b.length);
        MemorySegment.copy(b, 0, seg(t), ValueLayout.JAVA_BYTE, 0, b.length);
        return t;
    }

    private Tensor floats(float[] f) {
        Tensor t = backend.allocate(DType.F32, f.length);
        MemorySegment.copy(f, 0, seg(t), F32, 0, f.length);
        return t;
    }

    void dequantize(QuantizedTensor q, Tensor out) {
        DType ot = out.dtype();
        if (ot != DType.F32 && ot != DType.BF16 && ot != DType.F16) {
            throw new IllegalArgumentException("dequantize4bit: out must be F32, BF16 or F16, got " + out);
        }
        if (out.numel() != q.numel()) {
            throw new IllegalArgumentException("dequantize4bit: out " + out + " must have the " + q.numel() + " elements of " + q);
        }
        FourBitDecoder decoder = new FourBitDecoder(q);
        Rounding rounding = Rounding.of(ot, DType.F32);
        MemorySegment o = seg(out);
        long n = q.numel();
        long chunks = (n + DEQUANT_CHUNK - 1) / DEQUANT_CHUNK;
        if (chunks > Integer.MAX_VALUE) throw new IllegalArgumentException("dequantize4bit: too many elements in " + q);
        parallel.forRange((int) chunks, 1, (from, to) -> {
            float[] buf = new float[DEQUANT_CHUNK], lut = new float[16];
            short[] halves = ot == DType.F16 ? new short[DEQUANT_CHUNK] : null;
            for (int c = from; c < to; c++) {
                long start = (long) c * DEQUANT_CHUNK;
                int len = (int) Math.min(DEQUANT_CHUNK, n - start);
                decoder.decode(start, len, rounding, buf, 0, lut);
                switch (ot) {
                    case F32 -> MemorySegment.copy(buf, 0, o, F32, start * Float.BYTES, len);
                    case BF16 -> {
                        // The values are BF16 already (NaNs quiet): their top halves are the BF16 bits.
                        int i = 0;
                        for (; i <= len - L; i += L) {
                            IntVector top = FloatVector.fromArray(VectorShapes.F, buf, i).reinterpretAsInts().lanewise(VectorOperators.LSHR, 16);
                            ((ShortVector) top.convertShape(VectorOperators.I2S, VectorShapes.H, 0)).intoMemorySegment(o, (start + i) * 2, VectorShapes.LE);
                        }
                        for (; i < len; i++) o.setAtIndex(I16, start + i, (short) (Float.floatToRawIntBits(buf[i]) >>> 16));
                    }
                    default -> {
                        for (int i = 0; i < len; i++) halves[i] = Float.floatToFloat16(buf[i]);
                        MemorySegment.copy(halves, 0, o, I16, start * 2, len);
                    }
                }
            }
        });
    }

    // ---- products ------------------------------------------------------------------------------------------

    /** {@code out[n, m] (+)= x[n, k] · wᵀ} with w the [m, k] quantized weight. */
    void matmul(Tensor x, QuantizedTensor w, Tensor out, boolean accumulate) {
        requireF32(x, "matmul x");
        requireF32(out, "matmul out");
        long n = x.rows(), k = x.dim(-1), m = w.rows();
        if (w.dim(-1) != k || out.rows() != n || out.dim(-1) != m) {
            throw new IllegalArgumentException("matmul shapes: x " + x + ", w " + w + ", out " + out);
        }
        requireIntSizes("matmul", n, k, m);
        if (n == 0 || m == 0) return;
        FourBitDecoder decoder = new FourBitDecoder(w);
        Rounding rounding = Rounding.of(w.originalType(), w.spec().computeType());
        MemorySegment xs = seg(x), os = seg(out);
        int rows = (int) n, depth = (int) k, features = (int) m;
        if (rows <= FourBitKernels.MAX_FUSED_ROWS && FourBitKernels.fuses(decoder, rounding, depth)) {
            // Ranges of whole groups of weight rows, at least FUSED_GRAIN weights each.
            int streams = FourBitKernels.STREAMS;
            int groups = Parallel.ceilDiv(features, streams);
            int grain = Math.max(1, FUSED_GRAIN / (streams * depth));
            parallel.forRange(groups, grain, (from, to) -> FourBitKernels.fused(xs, decoder, rounding, os, depth, features,
                    0, rows, from * streams, Math.min(features, to * streams), accumulate));
            return;
        }
        // The blocks of CpuBackend.matmul: up to ROW_BLOCK x rows by FEATURE_BLOCK weight rows, enough of them for
        // every thread to get several. Each block decodes its weight rows once per slice of k.
        int rowBlock = rows < MatmulKernels.TILE ? rows : ROW_BLOCK;
        int rowBlocks = Parallel.ceilDiv(rows, rowBlock);
        int groups = Parallel.ceilDiv(features, MatmulKernels.TILE);
        int featureBlocks = Math.min(groups, Math.max(Parallel.ceilDiv(features, FEATURE_BLOCK), Parallel.ceilDiv(threads * 8, rowBlocks)));
        parallel.forEach(rowBlocks * featureBlocks, task -> {
            int rb = task / featureBlocks, fb = task % featureBlocks;
            int r0 = rb * rowBlock, r1 = Math.min(rows, r0 + rowBlock);
            int c0 = (int) ((long) groups * fb / featureBlocks) * MatmulKernels.TILE;
            int c1 = Math.min(features, (int) ((long) groups * (fb + 1) / featureBlocks) * MatmulKernels.TILE);
            FourBitKernels.packed(xs, decoder, rounding, os, depth, features, r0, r1, c0, c1, accumulate);
        });
    }

    /** {@code dX[n, k] (+)= dY[n, m] · w} with w the [m, k] quantized weight. */
    void matmulBackwardInput(Tensor dY, QuantizedTensor w, Tensor dX, boolean accumulate) {
        requireF32(dY, "matmulBackwardInput dY");
        requireF32(dX, "matmulBackwardInput dX");
        long n = dY.rows(), m = dY.dim(-1), k = w.dim(-1);
        if (w.rows() != m || dX.rows() != n || dX.dim(-1) != k) {
            throw new IllegalArgumentException("matmulBackwardInput shapes: dY " + dY + " [n, m], w " + w + " [m, k], dX "
                    + dX + " [n, k]");
        }
        requireIntSizes("matmulBackwardInput", n, m, k);
        if (n == 0 || k == 0) return;
        FourBitDecoder decoder = new FourBitDecoder(w);
        Rounding rounding = Rounding.of(w.originalType(), w.spec().computeType());
        MemorySegment a = seg(dY), c = seg(dX);
        int rows = (int) n, terms = (int) m, width = (int) k;
        // The blocks of C as CpuTrainingOps forms them for a dense weight (any blocking gives the same sums).
        int jBlock = MatmulBackwardKernels.J_BLOCK, pTile = MatmulBackwardKernels.P_TILE;
        int jBlocks = Parallel.ceilDiv(width, jBlock);
        int pBlocks = Math.max(Parallel.ceilDiv(rows, MatmulBackwardKernels.MAX_P_BLOCK),
                Math.min(Parallel.ceilDiv(rows, 16), Parallel.ceilDiv(threads * 3, jBlocks)));
        int pBlock = (Parallel.ceilDiv(rows, pBlocks) + pTile - 1) / pTile * pTile;
        int blocks = Parallel.ceilDiv(rows, pBlock);
        parallel.forEach(blocks * jBlocks, task -> {
            int p0 = task / jBlocks * pBlock, j0 = task % jBlocks * jBlock;
            backwardBlock(a, terms, decoder, rounding, c, terms, width, p0, Math.min(rows, p0 + pBlock), j0,
                    Math.min(width, j0 + jBlock), accumulate);
        });
    }

    /**
     * MatmulBackwardKernels.block for A = dY (rows) and B = the quantized weight: the block [p0, p1) × [j0, j1) of
     * C (+)= Σ_t A(p, t)·B[t, j], the terms in slices of T_SLICE, each slice of B decoded where the dense kernel
     * widens it, so the sums are the dense kernel's, term by term.
     */
    private static void backwardBlock(MemorySegment a, int aRow, FourBitDecoder b, Rounding rounding,
                                      MemorySegment c, int t, int jTotal, int p0, int p1, int j0, int j1, boolean accumulate) {
        float[][] packs = PACKS.get();
        float[] ap = packs[0], bp = packs[1], cp = packs[2], lut = new float[16];
        int pTile = MatmulBackwardKernels.P_TILE;
        int rows = p1 - p0, width = j1 - j0;
        int padded = (width + L - 1) / L * L;
        int tiles = (rows + pTile - 1) / pTile;
        Arrays.fill(cp, 0, tiles * pTile * padded, 0f);
        for (int t0 = 0; t0 < t; t0 += MatmulBackwardKernels.T_SLICE) {
            int len = Math.min(MatmulBackwardKernels.T_SLICE, t - t0);
            if (rows < tiles * pTile) Arrays.fill(ap, (tiles - 1) * len * pTile, tiles * len * pTile, 0f);
            for (int p = 0; p < rows; p++) {
                long row = (long) (p0 + p) * aRow + t0;
                int base = p / pTile * len * pTile + p % pTile;
                for (int i = 0; i < len; i++) ap[base + i * pTile] = a.getAtIndex(F32, row + i);
            }
            for (int r = 0; r < len; r++) {
                b.decode((long) (t0 + r) * jTotal + j0, width, rounding, bp, r * padded, lut);
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

    // ---- helpers -------------------------------------------------------------------------------------------

    private static MemorySegment seg(Tensor t) {
        if (!(t instanceof CpuTensor c)) throw new IllegalArgumentException(t + " is not a CPU tensor");
        return c.segment();
    }

    private static void requireF32(Tensor t, String what) {
        if (t.dtype() != DType.F32) throw new IllegalArgumentException(what + " must be F32, got " + t);
    }

    private static void requireIntSizes(String op, long... sizes) {
        for (long s : sizes) {
            if (s > Integer.MAX_VALUE) throw new IllegalArgumentException(op + ": dimensions must each be below 2^31, got " + Arrays.toString(sizes));
        }
    }
}
