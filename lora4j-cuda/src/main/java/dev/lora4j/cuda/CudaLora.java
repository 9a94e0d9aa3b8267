package dev.lora4j.cuda;

import dev.lora4j.backend.DropoutHash;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.util.ArrayList;
import java.util.List;

/**
 * The CUDA backend's LoRA down projection with its dropout and scaling, and its gradients (lora.cu): x is read once
 * per call and its dropout mask drawn on the fly, never stored; the backward pass draws it once for dX and gradA.
 *
 * <p>BF16 activations multiply on the tensor cores in passes of up to 64 ranks, F32 activations on the CUDA cores in
 * FP32, in passes of 16 ranks; with more ranks than one pass takes, x is read once per pass and dX is rounded to
 * its dtype after each pass. The sums over x's columns (hidden) and over its rows (gradA) are split over blocks by a
 * partition that depends on the shapes alone ({@link #splitLength}): each block writes FP32 partial sums to a scratch
 * block from the caching allocator, and a last kernel adds them in split order, multiplies by scaling/(1-p) and writes
 * hidden, or adds to gradA. No atomics, so results repeat bit for bit on a given GPU.
 */
final class CudaLora {
    /** lora.cu: L4J_LORA_THREADS, the tile sizes and the shared row lengths (in bf16) of the tensor-core kernels. */
    static final int THREADS = 256;
    static final int FORWARD_ROWS = 128, FORWARD_LD = 72;
    static final int BACKWARD_ROWS = 64, BACKWARD_COLUMNS = 128, BACKWARD_LD = 136;
    /** Ranks of one tensor-core pass, and of one CUDA-core pass (L4J_LORA_CORE_RANKS). */
    static final int MMA_RANKS = 64, CORE_RANKS = 16;
    /** lora.cu's CUDA-core kernels: rows of a forward block (8 warps of L4J_LORA_CORE_ROWS), columns of a backward one. */
    static final int CORE_FORWARD_ROWS = 32, CORE_BACKWARD_COLUMNS = 64;
    /**
     * Columns of x one forward block sums over, and rows one backward block sums over, per 16 ranks of the adapter: the
     * scratch partial sums stay at about n·k/128 floats for any rank (7.3 MB for 4,096 tokens of a 14,336-wide input),
     * against x's 117 MB, while there are enough blocks to fill the GPU. {@code -Dlora4j.cuda.lora-split} (a multiple
     * of 64) replaces it for tuning; any value keeps results repeatable, as the partition still depends on the shapes
     * alone.
     */
    static final int SPLIT_PER_16_RANKS = splitProperty();

    private static int splitProperty() {
        int split = Integer.getInteger("lora4j.cuda.lora-split", 512);
        if (split <= 0 || split % 64 != 0) {
            throw new IllegalArgumentException("-Dlora4j.cuda.lora-split=" + split + ": use a positive multiple of 64");
        }
        return split;
    }

    private final CudaBackend backend;

    CudaLora(CudaBackend backend) {
        this.backend = backend;
    }

    /** Shared bytes of the tensor-core kernels with {@code rg} groups of 16 ranks (lora.cu's l4j_lora_*_shared). */
    static int forwardSharedBytes(int rg) { return 2 * (FORWARD_ROWS + 16 * rg) * FORWARD_LD * 2; }

    /** With {@code old}, also two tiles of dX's old values: the vector path prefetches them when dX accumulates. */
    static int backwardSharedBytes(int rg, boolean old) {
        return (16 * rg * BACKWARD_LD + (old ? 4 : 2) * BACKWARD_ROWS * BACKWARD_LD + 2 * BACKWARD_ROWS * (16 * rg + 8)) * 2;
    }

    /** CUDA-core backward: each warp's 16 x 64 gradA sums, added in warp order. */
    static final int CORE_BACKWARD_SHARED = 8 * CORE_RANKS * CORE_BACKWARD_COLUMNS * Float.BYTES;

    /** Whether these kernels take the call: an F32 adapter on a GPU whose blocks may have the largest tile's memory. */
    static boolean serves(Tensor a, int maxSharedPerBlock) {
        return a.dtype() == DType.F32 && backwardSharedBytes(4, true) <= maxSharedPerBlock;
    }

    /** The columns (forward) or rows (backward) of one block's sums for an adapter of rank r. */
    static int splitLength(int r) { return SPLIT_PER_16_RANKS * Math.ceilDiv(Math.max(r, 1), 16); }

    static String forwardKernel(int rg, boolean vector) { return "lora4j_lora_down_mma_" + rg + (vector ? "_vec" : "_any"); }

    static String backwardKernel(int rg, boolean vector) {
        return "lora4j_lora_down_backward_mma_" + rg + (vector ? "_vec" : "_any");
    }

    static final String FORWARD_CORES = "lora4j_lora_down_cores_f32";
    static final String BACKWARD_CORES = "lora4j_lora_down_backward_cores_f32";
    static final String GRAD_A = "lora4j_lora_grad_a";

    static String hiddenKernel(DType t) { return "lora4j_lora_hidden_" + CudaKernels.suffix(t); }

    static List<String> kernelNames() {
        List<String> names = new ArrayList<>();
        for (int rg : new int[] {1, 2, 4}) {
            for (boolean vector : new boolean[] {true, false}) {
                names.add(forwardKernel(rg, vector));
                names.add(backwardKernel(rg, vector));
            }
        }
        names.addAll(List.of(FORWARD_CORES, BACKWARD_CORES, GRAD_A, hiddenKernel(DType.F32), hiddenKernel(DType.BF16),
                UP_BACKWARD));
        return names;
    }

    /** Groups of 16 ranks of a tensor-core pass over {@code ranks} ranks: 1, 2 or 4. */
    private static int rankGroups(int ranks) {
        return ranks <= 16 ? 1 : ranks <= 32 ? 2 : 4;
    }

    /** {@code hidden = scaling · dropout(x) · aᵀ}; see {@link dev.lora4j.backend.Backend#loraDown}. */
    void down(CudaTensor x, CudaTensor a, float scaling, float p, long seed, CudaTensor hidden) {
        Shape s = Shape.of("loraDown", x, a);
        if (hidden.dtype() != x.dtype() || hidden.rows() != s.n || hidden.dim(-1) != s.r) {
            throw new IllegalArgumentException("loraDown: hidden " + hidden + " must be [" + s.n + ", " + s.r + "] of "
                    + x.dtype() + " for x " + x + " and a " + a);
        }
        int threshold = DropoutHash.dropThreshold(p);
        float factor = scaling * CudaBackend.dropoutScale(p);
        int n = s.n, k = s.k, r = s.r;
        if (n == 0 || r == 0) return;
        if (k == 0) {
            backend.zero(hidden);
            return;
        }
        int split = splitLength(r), splits = Math.ceilDiv(k, split);
        CudaKernels kernels = backend.kernels();
        try (CudaTensor partial = backend.uninitialized(DType.F32, (long) splits * n * r)) {
            if (x.dtype() == DType.BF16) {
                boolean vector = k % 8 == 0 && x.address() % 16 == 0;
                long grid = (long) Math.ceilDiv(n, FORWARD_ROWS) * splits;
                for (int j0 = 0; j0 < r; j0 += MMA_RANKS) {
                    int ranks = Math.min(MMA_RANKS, r - j0), rg = rankGroups(ranks);
                    kernels.launch(forwardKernel(rg, vector), grid, THREADS, forwardSharedBytes(rg), backend.stream(),
                            KernelArgs.start().ptr(x.address()).ptr(a.address() + 4L * j0 * k)
                                    .ptr(partial.address() + 4L * j0).i32(n).i32(k).i32(ranks).i32(r).i32(split)
                                    .i64(seed).i32(threshold));
                }
            } else {
                long grid = (long) Math.ceilDiv(n, CORE_FORWARD_ROWS) * splits;
                for (int j0 = 0; j0 < r; j0 += CORE_RANKS) {
                    int ranks = Math.min(CORE_RANKS, r - j0);
                    kernels.launch(FORWARD_CORES, grid, THREADS, 0, backend.stream(),
                            KernelArgs.start().ptr(x.address()).ptr(a.address() + 4L * j0 * k)
                                    .ptr(partial.address() + 4L * j0).i32(n).i32(k).i32(ranks).i32(r).i32(split)
                                    .i64(seed).i32(threshold));
                }
            }
            long count = (long) n * r;
            kernels.launch(hiddenKernel(x.dtype()), CudaKernels.gridFor(count), CudaKernels.ELEMENTWISE_THREADS, 0,
                    backend.stream(), KernelArgs.start().ptr(partial.address()).ptr(hidden.address()).i64(count)
                            .i32(splits).f32(factor));
        } // the scratch goes back to the cache; later work on the stream runs after the kernels that read it
    }

    /** {@code gradA += scaling · dHiddenᵀ · dropout(x)}, {@code dX (+)= dropout'(scaling · dHidden · a)}. */
    void downBackward(CudaTensor x, CudaTensor a, float scaling, float p, long seed, CudaTensor dHidden,
                      CudaTensor gradA, CudaTensor dX, boolean accumulate) {
        Shape s = Shape.of("loraDownBackward", x, a);
        if (dHidden.dtype() != x.dtype() || dX.dtype() != x.dtype() || gradA.dtype() != DType.F32
                || dHidden.rows() != s.n || dHidden.dim(-1) != s.r || gradA.rows() != s.r || gradA.dim(-1) != s.k
                || dX.rows() != s.n || dX.dim(-1) != s.k) {
            throw new IllegalArgumentException("loraDownBackward: x " + x + ", a " + a + ", dHidden " + dHidden + ", gradA "
                    + gradA + ", dX " + dX + " (needs x [n, k], a [r, k] F32, dHidden [n, r] and dX [n, k] of x's dtype,"
                    + " gradA [r, k] F32)");
        }
        int threshold = DropoutHash.dropThreshold(p);
        float factor = scaling * CudaBackend.dropoutScale(p);
        int n = s.n, k = s.k, r = s.r;
        if (n == 0 || k == 0) return;
        if (r == 0) {
            if (!accumulate) backend.zero(dX);
            return;
        }
        int split = splitLength(r), splits = Math.ceilDiv(n, split);
        long elements = (long) r * k;
        CudaKernels kernels = backend.kernels();
        try (CudaTensor partial = backend.uninitialized(DType.F32, splits * elements)) {
            if (x.dtype() == DType.BF16) {
                boolean vector = k % 8 == 0 && x.address() % 16 == 0 && dX.address() % 16 == 0;
                long grid = (long) Math.ceilDiv(k, BACKWARD_COLUMNS) * splits;
                for (int j0 = 0; j0 < r; j0 += MMA_RANKS) {
                    int ranks = Math.min(MMA_RANKS, r - j0), rg = rankGroups(ranks);
                    boolean add = accumulate || j0 > 0;
                    kernels.launch(backwardKernel(rg, vector), grid, THREADS, backwardSharedBytes(rg, vector && add),
                            backend.stream(), backwardArgs(x, a, dHidden, dX, partial, s, j0, ranks, split, elements, seed,
                                    threshold, factor, add));
                }
            } else {
                long grid = (long) Math.ceilDiv(k, CORE_BACKWARD_COLUMNS) * splits;
                for (int j0 = 0; j0 < r; j0 += CORE_RANKS) {
                    int ranks = Math.min(CORE_RANKS, r - j0);
                    kernels.launch(BACKWARD_CORES, grid, THREADS, CORE_BACKWARD_SHARED, backend.stream(),
                            backwardArgs(x, a, dHidden, dX, partial, s, j0, ranks, split, elements, seed, threshold,
                                    factor, accumulate || j0 > 0));
                }
            }
            kernels.launch(GRAD_A, CudaKernels.gridFor(elements), CudaKernels.ELEMENTWISE_THREADS, 0, backend.stream(),
                    KernelArgs.start().ptr(partial.address()).ptr(gradA.address()).i64(elements).i32(splits).f32(factor));
        }
    }

    /** lora_up.cu: the fused backward of the up projection, its block's columns, rows per step and shared bytes. */
    static final String UP_BACKWARD = "lora4j_lora_up_backward_bf16";
    static final int UP_BLOCK_COLUMNS = 512, UP_ROWS = 64, UP_MAX_RANK = 16;
    /** lora_up.cu's shared row lengths in bf16: a 128-column sub-tile of dY, and the rank rows of hidden and b. */
    static final int UP_LD = 128 + 8, UP_RANK_LD = UP_MAX_RANK + 8;
    /** l4j_lora_up_shared: two dY tiles, two hidden tiles, the block's b columns, all bf16. */
    static final int UP_SHARED = (2 * UP_ROWS * UP_LD + 2 * UP_ROWS * UP_RANK_LD + UP_BLOCK_COLUMNS * UP_RANK_LD) * 2;
    /**
     * Set to {@code false} to run the up projection's backward as the two products instead of {@link #upBackward}
     * (on by default: 1.2x to 2.6x faster than the two products on the H200, docs/benchmarks.md). Read at every call,
     * so that a benchmark can time both paths in one process.
     */
    static final String UP_BACKWARD_PROPERTY = "lora4j.cuda.fused-lora-up-backward";

    /** Whether the fused up-projection backward takes these operands (see lora_up.cu). */
    static boolean servesUp(Tensor dY, Tensor hidden, Tensor b) {
        return !"false".equalsIgnoreCase(System.getProperty(UP_BACKWARD_PROPERTY, "true"))
                && dY.dtype() == DType.BF16 && hidden.dtype() == DType.BF16
                && b.dtype() == DType.F32 && hidden.dim(-1) <= UP_MAX_RANK && dY.dim(-1) % 8 == 0
                && dY.dim(-1) <= Integer.MAX_VALUE && dY.rows() <= Integer.MAX_VALUE;
    }

    /** The most bytes gradB's partial sums of the fused up-projection backward may take (splits x m x r floats). */
    static final long UP_PARTIAL_BYTES = 8L << 20;

    /**
     * The rows one block of the fused up-projection backward sums over: 512, halved while the grid would leave SMs
     * idle (two blocks each wanted), never under one step of 64, nor so few that gradB's partial sums pass
     * {@link #UP_PARTIAL_BYTES}: they are scratch beside the activations at training's peak.
     */
    static int upBlockRows(long n, long m, int r, int multiprocessors) {
        long colBlocks = Math.ceilDiv(m, UP_BLOCK_COLUMNS);
        int rows = 512;
        while (rows > UP_ROWS && colBlocks * Math.ceilDiv(n, rows) < 2L * multiprocessors
                && Math.ceilDiv(n, rows / 2) * m * r * Float.BYTES <= UP_PARTIAL_BYTES) {
            rows /= 2;
        }
        return rows;
    }

    /** {@code gradB += dYᵀ · hidden}, {@code dHidden = dY · b} in one read of dY; see Backend#loraUpBackward. */
    void upBackward(CudaTensor dY, CudaTensor hidden, CudaTensor b, CudaTensor gradB, CudaTensor dHidden,
                    int multiprocessors) {
        long n = dY.rows(), m = dY.dim(-1);
        int r = (int) hidden.dim(-1);
        if (hidden.rows() != n || b.rows() != m || b.dim(-1) != r || gradB.dtype() != DType.F32 || gradB.rows() != m
                || gradB.dim(-1) != r || dHidden.dtype() != hidden.dtype() || dHidden.rows() != n || dHidden.dim(-1) != r
                || dY.address() % 16 != 0) {
            throw new IllegalArgumentException("loraUpBackward: dY " + dY + ", hidden " + hidden + ", b " + b + ", gradB "
                    + gradB + ", dHidden " + dHidden + " (needs dY [n, m] 16-byte aligned, hidden and dHidden [n, r] of"
                    + " its dtype, b and gradB [m, r] F32)");
        }
        if (n == 0 || m == 0 || r == 0) {
            if (r > 0 && n > 0) backend.zero(dHidden);
            return;
        }
        int blockRows = upBlockRows(n, m, r, multiprocessors);
        int colBlocks = (int) Math.ceilDiv(m, UP_BLOCK_COLUMNS), splits = (int) Math.ceilDiv(n, blockRows);
        CudaKernels kernels = backend.kernels();
        try (CudaTensor partialDb = backend.uninitialized(DType.F32, (long) splits * m * r);
             CudaTensor partialDh = backend.uninitialized(DType.F32, (long) colBlocks * n * r)) {
            kernels.launch(UP_BACKWARD, (long) colBlocks * splits, THREADS, UP_SHARED, backend.stream(),
                    KernelArgs.start().ptr(dY.address()).ptr(hidden.address()).ptr(b.address()).ptr(partialDb.address())
                            .ptr(partialDh.address()).i32((int) n).i32((int) m).i32(r).i32(blockRows));
            long dbCount = m * r, dhCount = n * r;
            kernels.launch(GRAD_A, CudaKernels.gridFor(dbCount), CudaKernels.ELEMENTWISE_THREADS, 0, backend.stream(),
                    KernelArgs.start().ptr(partialDb.address()).ptr(gradB.address()).i64(dbCount).i32(splits).f32(1f));
            kernels.launch(hiddenKernel(dHidden.dtype()), CudaKernels.gridFor(dhCount), CudaKernels.ELEMENTWISE_THREADS, 0,
                    backend.stream(), KernelArgs.start().ptr(partialDh.address()).ptr(dHidden.address()).i64(dhCount)
                            .i32(colBlocks).f32(1f));
        }
    }

    /** The arguments of both backward kernels for the pass over ranks [j0, j0 + ranks). */
    private static KernelArgs backwardArgs(CudaTensor x, CudaTensor a, CudaTensor dHidden, CudaTensor dX,
                                           CudaTensor partial, Shape s, int j0, int ranks, int split, long elements,
                                           long seed, int threshold, float factor, boolean accumulate) {
        return KernelArgs.start().ptr(x.address()).ptr(a.address() + 4L * j0 * s.k)
                .ptr(dHidden.address() + x.dtype().bytesFor(j0)).ptr(dX.address())
                .ptr(partial.address() + 4L * j0 * s.k).i32(s.n).i32(s.k).i32(ranks).i32(s.r).i32(split).i64(elements)
                .i64(seed).i32(threshold).f32(factor).i32(accumulate ? 1 : 0);
    }

    private record Shape(int n, int k, int r) {
        static Shape of(String op, CudaTensor x, CudaTensor a) {
            if (x.dtype() != DType.F32 && x.dtype() != DType.BF16) {
                throw new IllegalArgumentException(op + ": x must be F32 or BF16 (an activation), got " + x);
            }
            if (a.dtype() != DType.F32) throw new IllegalArgumentException(op + ": a must be F32, got " + a);
            if (a.dim(-1) != x.dim(-1)) {
                throw new IllegalArgumentException(op + ": a " + a + " must be [r, k] for x " + x + " [n, k]");
            }
            if (x.rows() > Integer.MAX_VALUE || x.dim(-1) > Integer.MAX_VALUE || a.rows() > Integer.MAX_VALUE) {
                throw new IllegalArgumentException(op + ": dimensions must each be below 2^31: x " + x + ", a " + a);
            }
            return new Shape((int) x.rows(), (int) x.dim(-1), (int) a.rows());
        }
    }
}
