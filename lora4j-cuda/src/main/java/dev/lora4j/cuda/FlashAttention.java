package dev.lora4j.cuda;

import dev.lora4j.tensor.DType;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;

/**
 * Training attention on the tensor cores (attention_flash.cu): the forward pass and its gradients for head sizes
 * 64 and 128, tiled flash-attention style so that no [n, n] matrix exists. q, k, v and dOut are multiplied as BF16
 * (F32 activations are rounded to nearest even once, into scratch copies; BF16 activations are used as they are),
 * with FP32 accumulation and FP32 softmax statistics; outputs and gradients are stored in the activations' type, lse
 * as F32. Every output element has one writer and a fixed order of summation, so results repeat bit for bit. The
 * backward pass keeps the score gradients dS of the dk/dv pass for the dq pass where they fit {@link #DS_BUDGET_BYTES}
 * (query heads in chunks), and otherwise has dq recompute them.
 *
 * <p>The other head sizes, and GPUs whose blocks cannot have the backward kernels' shared memory, use the FP32
 * kernels of attention.cu and attention_backward.cu.
 */
final class FlashAttention {
    /** attention_flash.cu: L4J_FA_THREADS and L4J_FA_ROWS (the rows of every tile). */
    static final int THREADS = 128;
    static final int TILE_ROWS = 64;
    /** One warp per (row, head) in the backward pass's preparation. */
    private static final int PREP_THREADS = 256;
    private static final float LOG2_E = (float) (1.0 / Math.log(2.0));

    private final CudaKernels kernels;
    private final DeviceAllocator allocator;
    private final MemorySegment stream;

    FlashAttention(CudaKernels kernels, DeviceAllocator allocator, MemorySegment stream) {
        this.kernels = kernels;
        this.allocator = allocator;
        this.stream = stream;
    }

    /** Whether these kernels serve {@code headDim} on a GPU whose blocks may have {@code maxSharedPerBlock} bytes. */
    static boolean serves(int headDim, int maxSharedPerBlock) {
        return (headDim == 64 || headDim == 128) && backwardSharedBytes(headDim) <= maxSharedPerBlock;
    }

    /** attention_flash.cu's l4j_fa_tile_bytes: 64 rows of headDim + 8 bf16 (the padding spreads ldmatrix over banks). */
    static int tileBytes(int headDim) { return TILE_ROWS * (headDim + 8) * 2; }

    /** l4j_fa_forward_shared: a query tile per head of the block and two buffers each of key and value tiles. */
    static int forwardSharedBytes(int headDim, int headsPerBlock) { return (headsPerBlock + 4) * tileBytes(headDim); }

    /**
     * System property: query heads per forward block, 1 or 2 (of one KV head, sharing its key and value tiles), to
     * compare the two on a GPU; where the heads of a KV head do not split so, blocks take one head.
     */
    static final String HEADS_PER_BLOCK_PROPERTY = "lora4j.cuda.attention-heads-per-block";
    /** Forward blocks of 1 or 2 query heads: the kernels attention_flash.cu has. */
    static final List<Integer> HEADS_PER_BLOCK_CHOICES = List.of(1, 2);
    /**
     * One head per block. Two share every key and value tile, but as one 8-warp block per SM instead of two 4-warp
     * blocks (about 250 registers a thread either way), and the H200 ran the forward pass of 4 x 1024 tokens, 32/8
     * heads of 128, in 0.282 ms with one head against 0.309 ms with two (AttentionTrainingBenchmark, BF16): the two
     * blocks overlap each other's barriers, which the shared tiles do not make up for.
     */
    static final int DEFAULT_HEADS_PER_BLOCK = 1;

    /** The larger of l4j_fa_dq_shared (six tiles) and l4j_fa_dkv_shared (six tiles, two buffers of lse and Dsum rows). */
    static int backwardSharedBytes(int headDim) { return 6 * tileBytes(headDim) + 4 * TILE_ROWS * Float.BYTES; }

    /** l4j_flash_backward_dq_stored: two key tiles and two stored dS tiles. */
    static int dqStoredSharedBytes(int headDim) { return 2 * tileBytes(headDim) + 2 * DS_TILE_BYTES; }

    /** L4J_FA_DS_TILE in bytes: one 64 x 64 tile of BF16 score gradients. */
    static final int DS_TILE_BYTES = TILE_ROWS * TILE_ROWS * 2;

    /**
     * The most scratch memory the backward pass spends on stored score gradients dS (which spare the dq pass two of
     * its three products): query heads go in chunks whose dS fits, and where chunks would have too few blocks to
     * fill a GPU, dq recomputes S and dP instead. 128 MiB keeps all 32 heads of a 1024-token sequence (36 MB) in one
     * chunk and those of a 2048-token one (138 MB) in two.
     */
    static final long DS_BUDGET_BYTES = 128L << 20;
    /** System property: another budget for stored dS, in bytes (0: dq always recomputes), to compare the two paths. */
    static final String DS_BUDGET_PROPERTY = "lora4j.cuda.attention-ds-budget";
    /** Fewer blocks than this per chunk leave GPUs of a hundred or more SMs partly idle behind the longest block. */
    static final long MIN_CHUNK_BLOCKS = 512;

    /** The activation types the kernels store: F32 and BF16. */
    private static final List<DType> TYPES = List.of(DType.F32, DType.BF16);

    /** The forward kernel of head size {@code headDim} storing out as {@code type}. */
    static String forwardKernel(int headDim, DType type) { return forwardKernel(headDim, type, 1); }

    /** The forward kernel whose blocks take {@code headsPerBlock} query heads of one KV head. */
    static String forwardKernel(int headDim, DType type, int headsPerBlock) {
        return "lora4j_flash_attention_forward_" + headDim + "_" + CudaKernels.suffix(type)
                + (headsPerBlock == 1 ? "" : "_x" + headsPerBlock);
    }

    static String dkvKernel(int headDim, DType type) {
        return "lora4j_flash_attention_backward_dkv_" + headDim + "_" + CudaKernels.suffix(type);
    }

    static String dqKernel(int headDim, DType type) {
        return "lora4j_flash_attention_backward_dq_" + headDim + "_" + CudaKernels.suffix(type);
    }

    static String dqStoredKernel(int headDim, DType type) {
        return "lora4j_flash_attention_backward_dq_stored_" + headDim + "_" + CudaKernels.suffix(type);
    }

    static String prepKernel(DType type) { return "lora4j_flash_attention_backward_prep_" + CudaKernels.suffix(type); }

    static String groupSumKernel(DType type) { return "lora4j_flash_attention_group_sum_" + CudaKernels.suffix(type); }

    static final String FRAGMENT_PROBE = "lora4j_flash_attention_fragment_probe";
    static final String COPY_BF16 = "lora4j_flash_attention_copy_bf16";

    static List<String> kernelNames() {
        List<String> names = new ArrayList<>();
        for (DType t : TYPES) {
            for (int d : new int[] {64, 128}) {
                for (int hg : HEADS_PER_BLOCK_CHOICES) names.add(forwardKernel(d, t, hg));
                names.add(dkvKernel(d, t));
                names.add(dqKernel(d, t));
                names.add(dqStoredKernel(d, t));
            }
            names.add(prepKernel(t));
            names.add(groupSumKernel(t));
        }
        names.add(FRAGMENT_PROBE);
        names.add(COPY_BF16);
        return names;
    }

    private static void requireActivationType(DType type) {
        if (!TYPES.contains(type)) throw new IllegalArgumentException("attention activations must be F32 or BF16, got " + type);
    }

    /**
     * An operand as 16-byte aligned BF16, as cp.async reads it: the tensor itself, or a copy (F32 rounded, or BF16
     * that starts off the alignment) that {@code scratch} collects for release.
     */
    private long bf16(long address, DType type, long count, List<Long> scratch) {
        if (type == DType.BF16 && address % 16 == 0) return address;
        long copy = allocator.allocate(2 * count);
        scratch.add(copy);
        String kernel = type == DType.BF16 ? COPY_BF16 : CudaKernels.convert(DType.F32, DType.BF16);
        kernels.launch(kernel, CudaKernels.gridFor(count), CudaKernels.ELEMENTWISE_THREADS, 0, stream,
                KernelArgs.start().ptr(address).ptr(copy).i64(count));
        return copy;
    }

    private void release(List<Long> scratch) {
        for (long p : scratch) allocator.release(p);
    }

    /**
     * out [n, nHeads*headDim] and lse [n, nHeads] (F32, natural log) from q [n, nHeads*headDim] and k, v
     * [n, nKvHeads*headDim], all rows contiguous; q, k, v and out are activations of {@code type}, F32 or BF16.
     */
    void forward(long q, long k, long v, DType type, long out, long lse, int n, int nHeads, int nKvHeads, int headDim,
                 int window) {
        forward(q, k, v, type, out, lse, n, nHeads, nKvHeads, headDim, window,
                headsPerBlock(nHeads, nKvHeads, headsPerBlockSetting()));
    }

    /**
     * {@link #forward} with blocks of {@code headsPerBlock} query heads (one of {@link #HEADS_PER_BLOCK_CHOICES},
     * dividing nHeads / nKvHeads): the same bits whatever the choice, for tests and comparisons.
     */
    void forward(long q, long k, long v, DType type, long out, long lse, int n, int nHeads, int nKvHeads, int headDim,
                 int window, int headsPerBlock) {
        requireActivationType(type);
        if (!HEADS_PER_BLOCK_CHOICES.contains(headsPerBlock) || (nHeads / nKvHeads) % headsPerBlock != 0) {
            throw new IllegalArgumentException("attention forward blocks of " + headsPerBlock + " query heads: expected "
                    + HEADS_PER_BLOCK_CHOICES + " dividing the " + nHeads / nKvHeads + " query heads of a KV head");
        }
        List<Long> scratch = new ArrayList<>();
        try {
            long qb = bf16(q, type, (long) n * nHeads * headDim, scratch);
            long kb = bf16(k, type, (long) n * nKvHeads * headDim, scratch);
            long vb = bf16(v, type, (long) n * nKvHeads * headDim, scratch);
            float scaleLog2 = scale(headDim) * LOG2_E;
            kernels.launch(forwardKernel(headDim, type, headsPerBlock),
                    (long) Math.ceilDiv(n, TILE_ROWS) * (nHeads / headsPerBlock), THREADS * headsPerBlock,
                    forwardSharedBytes(headDim, headsPerBlock), stream,
                    KernelArgs.start().ptr(qb).ptr(kb).ptr(vb).ptr(out).ptr(lse).i32(n).i32(nHeads).i32(nKvHeads)
                            .i32(window).f32(scaleLog2));
        } finally {
            release(scratch);
        }
    }

    /**
     * dq, dk and dv (overwritten) of {@link #forward}'s attention, given its out and lse and the output gradient
     * dOut; q, k, v, out, dOut and the gradients are activations of {@code type}, F32 or BF16. dk and dv sum over
     * the query heads of each KV head in head order.
     */
    void backward(long q, long k, long v, DType type, long out, long lse, long dOut, long dq, long dk, long dv, int n,
                  int nHeads, int nKvHeads, int headDim, int window) {
        backward(q, k, v, type, out, lse, dOut, dq, dk, dv, n, nHeads, nKvHeads, headDim, window,
                dsChunkHeads(n, nHeads, window, dsBudgetBytes()));
    }

    /**
     * {@link #backward} with the score gradients stored for {@code dsChunk} query heads at a time, or with dq
     * recomputing them where {@code dsChunk} is 0: every path, for tests.
     */
    void backward(long q, long k, long v, DType type, long out, long lse, long dOut, long dq, long dk, long dv, int n,
                  int nHeads, int nKvHeads, int headDim, int window, int dsChunk) {
        requireActivationType(type);
        List<Long> scratch = new ArrayList<>();
        try {
            long qCount = (long) n * nHeads * headDim, kvCount = (long) n * nKvHeads * headDim;
            long rowsHeads = (long) n * nHeads;
            long qb = bf16(q, type, qCount, scratch);
            long kb = bf16(k, type, kvCount, scratch);
            long vb = bf16(v, type, kvCount, scratch);
            // The preparation computes Dsum and, for F32 dOut, its BF16 copy; BF16 dOut is multiplied as it is.
            long dOutB, dOutCopy = 0;
            if (type == DType.BF16) {
                dOutB = bf16(dOut, type, qCount, scratch);
            } else {
                dOutB = dOutCopy = allocator.allocate(2 * qCount);
                scratch.add(dOutCopy);
            }
            long dsum = allocator.allocate(4 * rowsHeads);
            scratch.add(dsum);
            int warpsPerBlock = PREP_THREADS / 32;
            kernels.launch(prepKernel(type), Math.ceilDiv(rowsHeads, warpsPerBlock), PREP_THREADS, 0, stream,
                    KernelArgs.start().ptr(out).ptr(dOut).ptr(dOutCopy).ptr(dsum).i64(rowsHeads).i32(headDim));

            float scale = scale(headDim), scaleLog2 = scale * LOG2_E;
            int tiles = Math.ceilDiv(n, TILE_ROWS);
            int shared = backwardSharedBytes(headDim);

            // One query head per KV head writes dk and dv directly; a group writes one F32 slice per head (scratch of
            // n·nHeads·headDim floats each), summed after in head order.
            int group = nHeads / nKvHeads;
            long dkParts = dk, dvParts = dv;
            DType partType = type;
            if (group > 1) {
                dkParts = allocator.allocate(4 * kvCount * group);
                scratch.add(dkParts);
                dvParts = allocator.allocate(4 * kvCount * group);
                scratch.add(dvParts);
                partType = DType.F32;
            }
            int band = dsBand(tiles, window);
            int chunk = Math.min(dsChunk, nHeads);
            long ds = 0;
            if (chunk > 0) {
                ds = allocator.allocate((long) chunk * dsTiles(tiles, band) * DS_TILE_BYTES);
                scratch.add(ds);
            }
            for (int head0 = 0; head0 < nHeads; head0 += chunk > 0 ? chunk : nHeads) {
                int heads = chunk > 0 ? Math.min(chunk, nHeads - head0) : nHeads;
                kernels.launch(dkvKernel(headDim, partType), (long) tiles * heads, THREADS, shared, stream,
                        KernelArgs.start().ptr(qb).ptr(kb).ptr(vb).ptr(dOutB).ptr(lse).ptr(dsum).ptr(dkParts)
                                .ptr(dvParts).ptr(ds).i32(n).i32(nHeads).i32(nKvHeads).i32(window).i32(head0)
                                .f32(scale));
                if (chunk > 0) {
                    kernels.launch(dqStoredKernel(headDim, type), (long) tiles * heads, THREADS,
                            dqStoredSharedBytes(headDim), stream,
                            KernelArgs.start().ptr(kb).ptr(ds).ptr(dq).i32(n).i32(nHeads).i32(nKvHeads).i32(window)
                                    .i32(head0).f32(scale));
                } else {
                    kernels.launch(dqKernel(headDim, type), (long) tiles * nHeads, THREADS, shared, stream,
                            KernelArgs.start().ptr(qb).ptr(kb).ptr(vb).ptr(dOutB).ptr(lse).ptr(dsum).ptr(dq).i32(n)
                                    .i32(nHeads).i32(nKvHeads).i32(window).f32(scale).f32(scaleLog2));
                }
            }
            if (group > 1) {
                for (long[] parts : new long[][] {{dkParts, dk}, {dvParts, dv}}) {
                    kernels.launch(groupSumKernel(type), CudaKernels.gridFor(Math.ceilDiv(kvCount, CudaKernels.GROUP)),
                            CudaKernels.ELEMENTWISE_THREADS, 0,
                            stream, KernelArgs.start().ptr(parts[0]).ptr(parts[1]).i64(kvCount).i32(group));
                }
            }
        } finally {
            release(scratch);
        }
    }

    /**
     * One warp's a·b + c (16 x 16 x 16; a and b BF16 bits, row-major; c F32) three times into d [3][16][16], with the
     * operand fragments gathered by PTX's layout tables, by ldmatrix, and by ldmatrix from b transposed
     * (attention_flash.cu's lora4j_flash_attention_fragment_probe): the layouts the kernels rely on, checkable
     * against a plain product on the GPU and in the device emulator.
     */
    void fragmentProbe(long a, long b, long c, long d) {
        kernels.launch(FRAGMENT_PROBE, 1, 32, 3 * 16 * 24 * 2, stream, KernelArgs.start().ptr(a).ptr(b).ptr(c).ptr(d));
    }

    /** The heads per forward block asked for: {@link #HEADS_PER_BLOCK_PROPERTY}, or {@link #DEFAULT_HEADS_PER_BLOCK}. */
    static int headsPerBlockSetting() {
        String value = System.getProperty(HEADS_PER_BLOCK_PROPERTY);
        if (value == null || value.isBlank()) return DEFAULT_HEADS_PER_BLOCK;
        try {
            int heads = Integer.parseInt(value.strip());
            if (HEADS_PER_BLOCK_CHOICES.contains(heads)) return heads;
        } catch (NumberFormatException e) {
            // reported below
        }
        throw new IllegalArgumentException("-D" + HEADS_PER_BLOCK_PROPERTY + "=" + value + ": expected one of "
                + HEADS_PER_BLOCK_CHOICES + " (query heads of a KV head per forward block)");
    }

    /**
     * The most query heads per forward block, up to {@code wanted}, that divide the query heads of a KV head (so that
     * a block's heads share their keys and values).
     */
    static int headsPerBlock(int nHeads, int nKvHeads, int wanted) {
        int group = nHeads / nKvHeads, best = 1;
        for (int hg : HEADS_PER_BLOCK_CHOICES) {
            if (hg <= wanted && group % hg == 0) best = Math.max(best, hg);
        }
        return best;
    }

    /** The budget for stored dS in effect: {@link #DS_BUDGET_PROPERTY}, or {@link #DS_BUDGET_BYTES}. */
    static long dsBudgetBytes() {
        String value = System.getProperty(DS_BUDGET_PROPERTY);
        if (value == null || value.isBlank()) return DS_BUDGET_BYTES;
        try {
            long bytes = Long.parseLong(value.strip());
            if (bytes >= 0) return bytes;
        } catch (NumberFormatException e) {
            // reported below
        }
        throw new IllegalArgumentException("-D" + DS_BUDGET_PROPERTY + "=" + value
                + ": expected a number of bytes, 0 or more (0: dq recomputes the score gradients)");
    }

    /**
     * How the backward pass of this shape gets dq, for reports: from stored dS (and how much scratch it takes) or by
     * recomputing it.
     */
    static String dqPlan(int n, int nHeads, int window) {
        int chunk = dsChunkHeads(n, nHeads, window, dsBudgetBytes());
        if (chunk == 0) return "dq recomputes S and dP";
        int tiles = Math.ceilDiv(n, TILE_ROWS);
        long bytes = (long) chunk * dsTiles(tiles, dsBand(tiles, window)) * DS_TILE_BYTES;
        return String.format(java.util.Locale.ROOT, "dq from stored dS, %d of %d query heads at a time (%.1f MiB)",
                chunk, nHeads, bytes / 1048576.0);
    }

    /**
     * The most key tiles one query tile sees (attention_flash.cu's band): all {@code tiles}, or with a window, the
     * tiles that its window reaches.
     */
    static int dsBand(int tiles, int window) {
        if (window <= 0) return tiles;
        return (int) Math.min(tiles, Math.ceilDiv((long) window - 1, TILE_ROWS) + 1);
    }

    /** l4j_fa_ds_tiles: the dS tiles of one query head, the band's rows of min(i + 1, band) tiles. */
    static long dsTiles(int tiles, int band) {
        long full = Math.min(tiles, band);
        return full * (full + 1) / 2 + (tiles - full) * band;
    }

    /**
     * Query heads per chunk of stored dS within {@code budgetBytes}, chunks as even as possible; 0 where dq is to
     * recompute S and dP: not even one head's dS fits, or chunks would be too small to fill a GPU.
     */
    static int dsChunkHeads(int n, int nHeads, int window, long budgetBytes) {
        int tiles = Math.ceilDiv(n, TILE_ROWS);
        long perHead = dsTiles(tiles, dsBand(tiles, window)) * DS_TILE_BYTES;
        long fit = Math.min(nHeads, budgetBytes / perHead);
        if (fit < 1) return 0;
        int chunks = (int) Math.ceilDiv(nHeads, fit);
        int chunk = Math.ceilDiv(nHeads, chunks);
        int smallest = nHeads - (chunks - 1) * chunk;
        if (chunks > 1 && (long) smallest * tiles < MIN_CHUNK_BLOCKS) return 0;
        return chunk;
    }

    /** 1/sqrt(headDim) in FP32, as every backend scales the scores. */
    private static float scale(int headDim) { return (float) (1.0 / Math.sqrt(headDim)); }
}
