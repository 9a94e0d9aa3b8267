package dev.lora4j.cuda;

import dev.lora4j.quant.QuantType;
import dev.lora4j.tensor.DType;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * lora4j's kernels (src/main/cuda) loaded from the fatbin into the backend's context, by name, and launched on its
 * stream. The names here are the {@code extern "C"} names in the .cu files.
 */
final class CudaKernels {
    /** Threads per block of the grid-stride element-wise kernels. */
    static final int ELEMENTWISE_THREADS = 256;
    /** attention.cu: L4J_ATTN_THREADS, L4J_ATTN_TILE and the largest head it accumulates. */
    static final int ATTENTION_THREADS = 128;
    static final int ATTENTION_TILE = 64;
    static final int ATTENTION_MAX_HEAD_DIM = 512;
    /** attention_backward.cu: the head-dimension classes it is instantiated for, threads and tile rows. */
    static final int[] ATTENTION_BACKWARD_HEAD_DIMS = {64, 128, 256};
    static final int ATTENTION_BACKWARD_THREADS = 256;
    static final int ATTENTION_BACKWARD_TILE = 32;
    /** reduce.cu: column sums take 32 columns per block of 256 threads. */
    static final int COLUMN_SUM_COLUMNS = 32;
    static final int COLUMN_SUM_THREADS = 256;
    /** rmsnorm.cu: L4J_ROW_GROUPS (groups of 8 a thread holds) and L4J_ROW_MAX_THREADS. */
    static final int ROW_GROUPS = 4;
    static final int ROW_MAX_THREADS = 512;
    /**
     * rmsnorm.cu: L4J_WGRAD_ROWS, the rows of a chunk of the weight gradient's partial sums, and the columns (and
     * threads) of one of its blocks.
     */
    static final int WEIGHT_GRAD_ROWS = 64;
    static final int WEIGHT_GRAD_COLUMNS = 256;
    /** rmsnorm.cu's sum of the partial sums: 32 columns per block, L4J_WGRAD_SUM_LANES row lanes each. */
    static final int WEIGHT_GRAD_SUM_COLUMNS = 32;
    static final int WEIGHT_GRAD_SUM_LANES = 8;
    /**
     * rmsnorm.cu's fused backward pass (input and weight gradients in one read of x and dy) takes rows whose every
     * group a block holds in registers: up to {@link #ROW_GROUPS} groups of {@link #GROUP} per thread, at most
     * {@link #ROW_MAX_THREADS} threads.
     */
    static final int FUSED_RMSNORM_MAX_WIDTH = ROW_GROUPS * 8 * ROW_MAX_THREADS;
    /**
     * Rows each block of the fused backward pass takes in turn: fewer give more blocks in flight, more give fewer
     * partial sums to write and add (-Dlora4j.cuda.rmsnorm-rows-per-block).
     */
    static final int FUSED_RMSNORM_ROWS_PER_BLOCK = Integer.getInteger("lora4j.cuda.rmsnorm-rows-per-block", 8);
    /** embedding.cu: L4J_EMBEDDING_ITEMS, groups of 8 elements a thread of a lookup block copies at once. */
    static final int EMBEDDING_ITEMS = 4;
    /** rope.cu: L4J_ROPE_THREADS. */
    static final int ROPE_THREADS = 256;
    /** reduce.cu: L4J_SQUARES_THREADS and L4J_SQUARES_MAX_BLOCKS. */
    static final int SQUARES_THREADS = 256;
    static final int SQUARES_MAX_BLOCKS = 1024;
    /** cross_entropy.cu: L4J_CE_THREADS. */
    static final int CROSS_ENTROPY_THREADS = 512;
    /** cross_entropy.cu: rows of at most HELD_THREADS * HELD logits are held in registers (L4J_CE_HELD...). */
    static final int CROSS_ENTROPY_HELD_THREADS = 1024;
    static final int CROSS_ENTROPY_HELD_MAX_VOCAB = CROSS_ENTROPY_HELD_THREADS * 32;
    /** quant.cu: L4J_QUANT_THREADS (one warp per block of values), L4J_DEQUANT_THREADS and L4J_DEQUANT_STEPS. */
    static final int QUANT_THREADS = 256;
    static final int DEQUANT_THREADS = 256;
    static final int DEQUANT_STEPS = 4;
    /** Dynamic shared memory a block gets without opting in. */
    private static final int DEFAULT_SHARED_LIMIT = 48 * 1024;

    /** The activation dtypes the kernels are instantiated for (before NAMES, which lists their kernels). */
    static final List<DType> ACTIVATION_TYPES = List.of(DType.F32, DType.BF16);

    /**
     * The types of the parameters, gradients and AdamW moments that AdamW and the gradient norm's sum of squares take
     * (before NAMES): F32, or BF16 for full fine-tuning in pure BF16.
     */
    static final List<DType> STATE_TYPES = List.of(DType.F32, DType.BF16);

    /** Every kernel the backend launches. */
    static final List<String> NAMES = names();

    /** Blocks of {@link #ELEMENTWISE_THREADS} one multiprocessor holds at once (2048 threads on sm_80 and newer). */
    static final int RESIDENT_BLOCKS_PER_SM = 8;
    /** Elements per thread and access of the vectorised element-wise kernels: common.cuh's L4J_GROUP. */
    static final int GROUP = 8;

    private final CudaDriver cu;
    private final int multiprocessors;
    private final MemorySegment module;
    private final Map<String, MemorySegment> functions = new HashMap<>();
    /** Each kernel's parameter sizes as the driver reports them; empty with a driver that cannot say. */
    private final Map<String, long[]> parameterSizes = new HashMap<>();
    /** The dynamic shared memory each kernel has been allowed beyond the default, by name. */
    private final Map<String, Integer> sharedLimits = new ConcurrentHashMap<>();

    CudaKernels(CudaDriver cu, int multiprocessors) {
        this.cu = cu;
        this.multiprocessors = Math.max(1, multiprocessors);
        byte[] image = KernelImage.bytes();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment img = arena.allocate(image.length, 16);
            MemorySegment.copy(image, 0, img, java.lang.foreign.ValueLayout.JAVA_BYTE, 0, image.length);
            MemorySegment out = arena.allocate(ADDRESS);
            int r = cu.moduleLoadData(out, img);
            if (r == 209) { // CUDA_ERROR_NO_BINARY_FOR_GPU
                throw new CudaException("cuModuleLoadData failed: CUDA_ERROR_NO_BINARY_FOR_GPU: lora4j's kernel image"
                        + " has no code for this GPU (it holds " + String.join(", ",
                        FatbinContents.parse(image).targets()) + ")", r, "CUDA_ERROR_NO_BINARY_FOR_GPU");
            }
            cu.check(r, "cuModuleLoadData(" + KernelImage.RESOURCE_FOLDER + KernelImage.FATBIN_RESOURCE + ")");
            module = out.get(ADDRESS, 0);
            for (String name : NAMES) {
                r = cu.moduleGetFunction(out, module, arena.allocateFrom(name));
                if (r != CudaDriver.SUCCESS) {
                    cu.moduleUnload(module);
                    throw cu.error(r, "cuModuleGetFunction(" + name + ")"
                            + " [the kernel image is older than this lora4j: rebuild lora4j-cuda]");
                }
                functions.put(name, out.get(ADDRESS, 0));
            }
            if (cu.hasFuncGetParamInfo()) {
                MemorySegment offset = arena.allocate(JAVA_LONG), size = arena.allocate(JAVA_LONG);
                for (String name : NAMES) {
                    List<Long> sizes = new ArrayList<>();
                    while (cu.funcGetParamInfo(functions.get(name), sizes.size(), offset, size) == CudaDriver.SUCCESS) {
                        sizes.add(size.get(JAVA_LONG, 0));
                    }
                    // Every kernel takes parameters: none reported means the driver cannot tell, not a check to make.
                    if (!sizes.isEmpty()) parameterSizes.put(name, sizes.stream().mapToLong(Long::longValue).toArray());
                }
                // Checks are made only if the driver describes a known kernel as expected:
                // lora4j_rmsnorm_f32(const float*, const float*, float, float*, int).
                if (!java.util.Arrays.equals(parameterSizes.get(rmsNorm(DType.F32, DType.F32)), new long[] {8, 8, 4, 8, 4})) {
                    parameterSizes.clear();
                }
            }
        }
    }

    /**
     * Launches kernel {@code name} with a 1-D grid and block on {@code stream}. {@code args} must match the kernel's
     * parameter list in number and size.
     */
    void launch(String name, long gridX, int blockX, int sharedBytes, MemorySegment stream, KernelArgs args) {
        MemorySegment fn = functions.get(name);
        if (fn == null) throw new IllegalStateException("no kernel named " + name);
        checkArguments(name, args);
        if (gridX < 1 || gridX > Integer.MAX_VALUE) {
            throw new IllegalArgumentException(name + ": grid of " + gridX + " blocks is outside [1, 2^31-1]");
        }
        if (sharedBytes > DEFAULT_SHARED_LIMIT && sharedLimits.getOrDefault(name, DEFAULT_SHARED_LIMIT) < sharedBytes) {
            // Blocks may only use more than 48 KiB of dynamic shared memory once the kernel is allowed to.
            cu.check(cu.funcSetAttribute(fn, CudaDriver.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, sharedBytes),
                    "cuFuncSetAttribute(" + name + ", MAX_DYNAMIC_SHARED_SIZE_BYTES, " + sharedBytes + ")");
            sharedLimits.merge(name, sharedBytes, Math::max);
        }
        int r = cu.launchKernel(fn, (int) gridX, 1, 1, blockX, 1, 1, sharedBytes, stream, args.pointerArray(),
                MemorySegment.NULL);
        if (r != CudaDriver.SUCCESS) {
            throw cu.error(r, "cuLaunchKernel(" + name + ", grid " + gridX + ", block " + blockX + ")");
        }
    }

    /** Whether launches are checked against the kernels' parameter sizes (drivers for CUDA 12.4 and newer). */
    boolean checksArguments() { return !parameterSizes.isEmpty(); }

    /**
     * The arguments must match the kernel's parameters in number and size: the driver copies as many bytes as each
     * parameter has from wherever kernelParams points, so a missing or mistyped argument would otherwise be read as
     * garbage without an error.
     */
    private void checkArguments(String name, KernelArgs args) {
        long[] expected = parameterSizes.get(name);
        if (expected == null) return;
        boolean same = expected.length == args.count();
        for (int i = 0; same && i < expected.length; i++) same = expected[i] == args.size(i);
        if (!same) {
            throw new IllegalStateException("kernel " + name + " takes " + expected.length + " parameters of "
                    + java.util.Arrays.toString(expected) + " bytes, but the launch passed " + args.count() + " of "
                    + args.sizes() + " bytes");
        }
    }

    /** Blocks for a grid-stride loop over {@code n} elements: enough to fill the GPU, never more than needed. */
    static long gridFor(long n) {
        return Math.max(1, Math.min(Math.ceilDiv(n, ELEMENTWISE_THREADS), 1L << 20));
    }

    /**
     * Blocks for a kernel that takes {@link #GROUP} elements per thread and pass (the vectorised element-wise ones):
     * one per group of elements, at most one full wave of resident blocks, through which the kernel's grid-stride loop
     * then walks.
     */
    long groupGrid(long n) {
        long blocks = Math.ceilDiv(Math.ceilDiv(n, GROUP), ELEMENTWISE_THREADS);
        return Math.max(1, Math.min(blocks, (long) multiprocessors * RESIDENT_BLOCKS_PER_SM));
    }

    /**
     * Threads of an RMSNorm block (forward, backward and the weight gradient's scale: all must use the same, as it sets
     * the order of the row's sum): one per {@link #ROW_GROUPS} groups of {@link #GROUP} elements of the row, in whole
     * warps, at most {@link #ROW_MAX_THREADS}.
     */
    static int rowThreads(long d) {
        long groups = Math.ceilDiv(d, GROUP);
        long threads = Math.ceilDiv(Math.ceilDiv(groups, ROW_GROUPS), 32) * 32;
        return (int) Math.max(32, Math.min(ROW_MAX_THREADS, threads));
    }

    /**
     * Groups of {@link #GROUP} pairs a RoPE block of {@link #ROPE_THREADS} threads rotates in one pass: each thread loads
     * 64 bytes of pairs at once (rope.cu: two groups of BF16, one of F32).
     */
    static int ropeGroupsPerBlock(DType act) {
        return ROPE_THREADS * (int) (4 / act.bytesFor(1));
    }

    /** Blocks for a kernel that takes one row per block and walks the rows by a grid-stride loop. */
    long rowGrid(long rows) {
        return Math.max(1, Math.min(rows, (long) multiprocessors * RESIDENT_BLOCKS_PER_SM));
    }

    void unload() {
        cu.moduleUnload(module);
    }

    /** The suffix of a kernel specialised for an element type: f32, bf16, f16, f64. */
    static String suffix(DType t) {
        return switch (t) {
            case F32 -> "f32";
            case BF16 -> "bf16";
            case F16 -> "f16";
            case F64 -> "f64";
            default -> throw new IllegalArgumentException("no CUDA kernel for element type " + t);
        };
    }

    static String convert(DType from, DType to) { return "lora4j_convert_" + suffix(from) + "_" + suffix(to); }

    // ---- kernels over activations ----
    // Activations are F32 or BF16 (the backend's activation dtype). A kernel whose tensors are all activations is named
    // after their type (lora4j_swiglu_f32, lora4j_swiglu_bf16); one whose name carries the type of another operand
    // (a weight, a table, the KV cache) keeps that name for F32 activations and takes "bf16act_" before that type
    // for BF16 ones (lora4j_rmsnorm_bf16: F32 x and a BF16 weight; lora4j_rmsnorm_bf16act_bf16: both BF16).

    /** The suffix of a kernel over activations of type {@code act} with another operand of type {@code other}. */
    private static String withOther(DType act, DType other) {
        return switch (act) {
            case F32 -> suffix(other);
            case BF16 -> "bf16act_" + suffix(other);
            default -> throw new IllegalArgumentException("no CUDA kernel for activations of type " + act);
        };
    }

    /** The suffix of a kernel whose tensors are all activations of type {@code act}. */
    private static String of(DType act) {
        if (!ACTIVATION_TYPES.contains(act)) throw new IllegalArgumentException("no CUDA kernel for activations of type " + act);
        return suffix(act);
    }

    static String embedding(DType act, DType table) { return "lora4j_embedding_" + withOther(act, table); }

    static String rmsNorm(DType act, DType weight) { return "lora4j_rmsnorm_" + withOther(act, weight); }

    static String addBias(DType act, DType bias) { return "lora4j_add_bias_" + withOther(act, bias); }

    /** Inference attention: q and out of the activation type, k and v of the cache's. */
    static String attention(DType act, DType kv) { return "lora4j_attention_" + withOther(act, kv); }

    /** x += y: both activations, or (BF16 activations only) an F32 y. */
    static String add(DType x, DType y) {
        if (x == y) return "lora4j_add_" + of(x);
        if (x == DType.BF16 && y == DType.F32) return "lora4j_add_bf16act_f32";
        throw new IllegalArgumentException("no CUDA kernel adds " + y + " to " + x);
    }

    static String swiglu(DType act) { return "lora4j_swiglu_" + of(act); }

    /** swiglu_lora.cu: SwiGLU with both adapters' B products, BF16 activations only. */
    static final String SWIGLU_LORA = "lora4j_swiglu_lora_bf16";

    static String rope(DType act) { return "lora4j_rope_" + of(act); }

    static final String ADD = add(DType.F32, DType.F32);

    // ---- training ----

    static String rmsNormBackward(DType act, DType weight) { return "lora4j_rmsnorm_backward_" + withOther(act, weight); }

    static String rmsNormBackwardFused(DType act, DType weight) {
        return "lora4j_rmsnorm_backward_fused_" + withOther(act, weight);
    }

    static String scale(DType t) { return "lora4j_scale_" + suffix(t); }

    /** The dq kernel for head-dimension class {@code hd} (one of {@link #ATTENTION_BACKWARD_HEAD_DIMS}). */
    static String attentionBackwardDq(DType act, int hd) {
        return "lora4j_attention_backward_dq_" + (act == DType.F32 ? "" : of(act) + "_") + hd;
    }

    static String attentionBackwardDkv(DType act, int hd) {
        return "lora4j_attention_backward_dkv_" + (act == DType.F32 ? "" : of(act) + "_") + hd;
    }

    static String attentionLse(DType act) { return "lora4j_attention_lse_" + of(act); }

    static String attentionBackwardDsum(DType act) { return "lora4j_attention_backward_dsum_" + of(act); }

    static String sumRows(DType act) { return "lora4j_sum_rows_" + of(act); }

    static String rmsNormInverse(DType act) { return "lora4j_rmsnorm_inverse_" + of(act); }

    static String rmsNormWeightGrad(DType act) { return "lora4j_rmsnorm_weight_grad_" + of(act); }

    static String ropeBackward(DType act) { return "lora4j_rope_backward_" + of(act); }

    static String swigluBackward(DType act) { return "lora4j_swiglu_backward_" + of(act); }

    static String embeddingBackward(DType act) { return "lora4j_embedding_backward_" + of(act); }

    static String dropout(DType act) { return "lora4j_dropout_" + of(act); }

    static final String RMSNORM_WEIGHT_GRAD_SUM = "lora4j_rmsnorm_weight_grad_sum";
    static final String SUM_SQUARES_TOTAL = "lora4j_sum_squares_total";
    static final String CROSS_ENTROPY = "lora4j_cross_entropy_f32";
    static final String CROSS_ENTROPY_HELD = "lora4j_cross_entropy_held_f32";
    /** elementwise.cu: zero fills of a table of tensors, L4J_ZERO_CHUNK bytes per block. */
    static final String ZERO_ALL = "lora4j_zero_all";
    static final int ZERO_CHUNK = 65536;

    /** reduce.cu: the first stage of the sum of squares of an F32 or BF16 tensor. */
    static String sumSquaresPartial(DType t) {
        if (!STATE_TYPES.contains(t)) throw new IllegalArgumentException("no CUDA sum of squares of " + t + " values");
        return "lora4j_sum_squares_partial_" + suffix(t);
    }

    /**
     * optimizer.cu: AdamW over a parameter and its moments of type {@code param} and a gradient of type {@code grad},
     * lora4j_adamw_&lt;param&gt;_&lt;grad&gt;; the all-F32 kernel keeps its name from before parameters could be BF16.
     */
    static String adamw(DType param, DType grad) {
        if (!STATE_TYPES.contains(param) || !STATE_TYPES.contains(grad)) {
            throw new IllegalArgumentException("no CUDA AdamW kernel for a " + param + " parameter with a " + grad + " gradient");
        }
        if (param == DType.F32 && grad == DType.F32) return "lora4j_adamw_f32";
        return "lora4j_adamw_" + suffix(param) + "_" + suffix(grad);
    }

    /** optimizer.cu: AdamW over a table of tensors of these dtypes, one launch for all (lora4j_adamw_all_...). */
    static String adamwAll(DType param, DType grad) {
        adamw(param, grad); // the same pairs
        return "lora4j_adamw_all_" + suffix(param) + "_" + suffix(grad);
    }

    /**
     * The elements of one tensor each block of the many-tensor AdamW takes (optimizer.cu): a multiple of 8, so that
     * chunks stay 16-byte aligned (-Dlora4j.cuda.adamw-chunk).
     */
    static final int ADAMW_CHUNK = adamwChunk(Integer.getInteger("lora4j.cuda.adamw-chunk", 16384));

    static int adamwChunk(int chunk) {
        if (chunk < GROUP || chunk % GROUP != 0) {
            throw new IllegalArgumentException("-Dlora4j.cuda.adamw-chunk=" + chunk + ": use a positive multiple of "
                    + GROUP);
        }
        return chunk;
    }

    /** optimizer8bit.cu: bitsandbytes' 8-bit blockwise and 32-bit AdamW. */
    static final String ADAMW_8BIT = "lora4j_adamw_8bit_f32";
    static final String ADAMW_32BIT = "lora4j_adamw_32bit_f32";

    // ---- 4-bit quantization (quant.cu) ----

    static String quantize4bit(QuantType type, DType weight) {
        return "lora4j_quantize4bit_" + type.bnbName() + "_" + suffix(weight);
    }

    /** The dequantization kernel: vector (16-byte aligned output) or scalar (any alignment). */
    static String dequantize4bit(DType out, boolean vector) {
        return "lora4j_dequantize4bit_" + (vector ? "vector_" : "scalar_") + suffix(out);
    }

    static final String QUANTIZE_ABSMAX_8BIT = "lora4j_quantize_absmax_8bit";

    private static List<String> names() {
        List<String> n = new ArrayList<>();
        List<DType> floats = List.of(DType.F32, DType.BF16, DType.F16);
        for (DType a : List.of(DType.F32, DType.BF16, DType.F16, DType.F64)) {
            for (DType b : List.of(DType.F32, DType.BF16, DType.F16, DType.F64)) if (a != b) n.add(convert(a, b));
        }
        for (DType t : floats) {
            n.add(scale(t));
            for (QuantType q : QuantType.values()) n.add(quantize4bit(q, t));
            n.add(dequantize4bit(t, true));
            n.add(dequantize4bit(t, false));
        }
        for (DType act : ACTIVATION_TYPES) {
            for (DType t : floats) {
                n.add(embedding(act, t));
                n.add(rmsNorm(act, t));
                n.add(addBias(act, t));
                n.add(attention(act, t));
                n.add(rmsNormBackward(act, t));
                n.add(rmsNormBackwardFused(act, t));
            }
            n.add(add(act, act));
            n.add(swiglu(act));
            n.add(rope(act));
            for (int hd : ATTENTION_BACKWARD_HEAD_DIMS) {
                n.add(attentionBackwardDq(act, hd));
                n.add(attentionBackwardDkv(act, hd));
            }
            n.addAll(List.of(attentionLse(act), attentionBackwardDsum(act), sumRows(act), rmsNormInverse(act),
                    rmsNormWeightGrad(act), ropeBackward(act), swigluBackward(act), embeddingBackward(act), dropout(act)));
        }
        for (DType t : STATE_TYPES) {
            n.add(sumSquaresPartial(t));
            for (DType grad : STATE_TYPES) {
                n.add(adamw(t, grad));
                n.add(adamwAll(t, grad));
            }
        }
        n.add(add(DType.BF16, DType.F32));
        n.add(SWIGLU_LORA);
        n.addAll(FlashAttention.kernelNames());
        n.addAll(CudaLora.kernelNames());
        n.addAll(List.of(SUM_SQUARES_TOTAL, CROSS_ENTROPY, CROSS_ENTROPY_HELD, ZERO_ALL, ADAMW_8BIT, ADAMW_32BIT,
                QUANTIZE_ABSMAX_8BIT, RMSNORM_WEIGHT_GRAD_SUM));
        return List.copyOf(n);
    }
}
