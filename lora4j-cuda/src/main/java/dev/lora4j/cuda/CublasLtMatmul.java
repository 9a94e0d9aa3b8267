package dev.lora4j.cuda;

import dev.lora4j.tensor.DType;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.EnumMap;
import java.util.LinkedHashMap;
import java.util.Map;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * {@code out[n, m] (+)= x[n, k] · w[m, k]ᵀ} on the tensor cores through cuBLASLt, x and w of one element type
 * (BF16, F16 or F32), out F32, accumulation in FP32.
 *
 * <p>cuBLASLt is column-major, and a row-major [r, c] matrix is the column-major c×r matrix with leading
 * dimension c. So: A = w, stored as column-major k×m (ld k), used transposed (m×k); B = x, stored as column-major
 * k×n (ld k), used as it is; D = out, column-major m×n (ld m). Then D = op(A)·B = w·xᵀ = (x·wᵀ)ᵀ, which is exactly
 * out in row-major order.
 * This "TN" form is the one every cuBLASLt kernel family supports.
 *
 * <p>Descriptors, layouts and the heuristic's choice of algorithm are cached per shape, element type and pointer
 * alignment (the heuristic assumes 256-byte aligned pointers unless told otherwise, and views of tensors are not).
 */
final class CublasLtMatmul {
    /** Workspace cuBLASLt may use for split-K and similar algorithms. */
    static final long WORKSPACE_BYTES = 32L << 20;
    private static final int MAX_PLANS = 512;

    private final CublasLt lt;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment handle;
    private final long workspace;
    private final MemorySegment one;
    private final MemorySegment zero;
    private final Map<DType, MemorySegment> descriptors = new EnumMap<>(DType.class);
    private final LinkedHashMap<Key, Plan> plans = new LinkedHashMap<>(64, 0.75f, true) {
        @Override
        protected boolean removeEldestEntry(Map.Entry<Key, Plan> eldest) {
            if (size() <= MAX_PLANS) return false;
            eldest.getValue().destroy(lt);
            return true;
        }
    };

    private record Key(DType type, long n, long m, long k, int alignW, int alignX, int alignOut) {}

    /** The layouts of one shape and the algorithm the heuristic chose for it (a cublasLtMatmulHeuristicResult_t). */
    private record Plan(MemorySegment layoutW, MemorySegment layoutX, MemorySegment layoutOut, MemorySegment heuristic,
                        Arena arena) {
        void destroy(CublasLt lt) {
            lt.matrixLayoutDestroy(layoutW);
            lt.matrixLayoutDestroy(layoutX);
            lt.matrixLayoutDestroy(layoutOut);
            arena.close();
        }
    }

    /** Creates the cuBLASLt handle; the context must be current and {@code workspace} hold {@link #WORKSPACE_BYTES}. */
    CublasLtMatmul(CublasLt lt, long workspace) {
        this.lt = lt;
        this.workspace = workspace;
        MemorySegment out = arena.allocate(ADDRESS);
        try {
            lt.check(lt.create(out), "cublasLtCreate");
        } catch (RuntimeException e) {
            arena.close();
            throw e;
        }
        handle = out.get(ADDRESS, 0);
        one = arena.allocateFrom(JAVA_FLOAT, 1f);
        zero = arena.allocateFrom(JAVA_FLOAT, 0f);
    }

    /**
     * Queues {@code out = x · wᵀ} (or {@code out += x · wᵀ}) on {@code stream}. Addresses are device pointers;
     * x and w hold elements of {@code type}, out F32. n, m, k &gt; 0.
     */
    synchronized void multiply(DType type, long w, long x, long out, long n, long m, long k, boolean accumulate,
                               MemorySegment stream) {
        Key key = new Key(type, n, m, k, alignment(w), alignment(x), alignment(out));
        Plan plan = plans.get(key);
        if (plan == null) {
            plan = plan(key);
            plans.put(key, plan);
        }
        String call = "cublasLtMatmul(" + type + " [" + n + ", " + k + "] x [" + m + ", " + k + "]^T)";
        lt.check(lt.matmul(handle, descriptor(type), one, w, plan.layoutW(), x, plan.layoutX(), accumulate ? one : zero,
                out, plan.layoutOut(), out, plan.layoutOut(), plan.heuristic(), workspace, WORKSPACE_BYTES, stream), call);
    }

    synchronized void close() {
        try {
            for (Plan p : plans.values()) p.destroy(lt);
            plans.clear();
            for (MemorySegment d : descriptors.values()) lt.matmulDescDestroy(d);
            descriptors.clear();
            lt.destroy(handle);
        } finally {
            arena.close();
        }
    }

    private MemorySegment descriptor(DType type) {
        MemorySegment d = descriptors.get(type);
        if (d != null) return d;
        try (Arena tmp = Arena.ofConfined()) {
            MemorySegment out = tmp.allocate(ADDRESS);
            lt.check(lt.matmulDescCreate(out, CublasLt.CUBLAS_COMPUTE_32F, CublasLt.CUDA_R_32F), "cublasLtMatmulDescCreate");
            d = out.get(ADDRESS, 0);
            MemorySegment op = tmp.allocate(JAVA_INT);
            op.set(JAVA_INT, 0, CublasLt.CUBLAS_OP_T);
            lt.check(lt.matmulDescSetAttribute(d, CublasLt.CUBLASLT_MATMUL_DESC_TRANSA, op, 4), "cublasLtMatmulDescSetAttribute(TRANSA)");
            op.set(JAVA_INT, 0, CublasLt.CUBLAS_OP_N);
            lt.check(lt.matmulDescSetAttribute(d, CublasLt.CUBLASLT_MATMUL_DESC_TRANSB, op, 4), "cublasLtMatmulDescSetAttribute(TRANSB)");
        }
        descriptors.put(type, d);
        return d;
    }

    private Plan plan(Key key) {
        int dataType = dataType(key.type());
        Arena planArena = Arena.ofShared();
        MemorySegment layoutW = null, layoutX = null, layoutOut = null;
        try (Arena tmp = Arena.ofConfined()) {
            layoutW = layout(tmp, dataType, key.k(), key.m(), key.k());
            layoutX = layout(tmp, dataType, key.k(), key.n(), key.k());
            layoutOut = layout(tmp, CublasLt.CUDA_R_32F, key.m(), key.n(), key.m());

            MemorySegment out = tmp.allocate(ADDRESS);
            lt.check(lt.preferenceCreate(out), "cublasLtMatmulPreferenceCreate");
            MemorySegment pref = out.get(ADDRESS, 0);
            try {
                MemorySegment u64 = tmp.allocateFrom(JAVA_LONG, WORKSPACE_BYTES);
                lt.check(lt.preferenceSetAttribute(pref, CublasLt.CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, u64, 8),
                        "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)");
                setAlignment(tmp, pref, CublasLt.CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.alignW());
                setAlignment(tmp, pref, CublasLt.CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.alignX());
                setAlignment(tmp, pref, CublasLt.CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.alignOut());
                setAlignment(tmp, pref, CublasLt.CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.alignOut());

                MemorySegment result = planArena.allocate(CublasLt.HEURISTIC_RESULT_BYTES, 8);
                MemorySegment count = tmp.allocate(JAVA_INT);
                String what = "cublasLtMatmulAlgoGetHeuristic(" + key.type() + " [" + key.n() + ", " + key.k() + "] x ["
                        + key.m() + ", " + key.k() + "]^T)";
                lt.check(lt.algoGetHeuristic(handle, descriptor(key.type()), layoutW, layoutX, layoutOut, layoutOut, pref,
                        1, result, count), what);
                if (count.get(JAVA_INT, 0) < 1 || result.get(JAVA_INT, CublasLt.HEURISTIC_STATE_OFFSET) != CublasLt.SUCCESS) {
                    throw new CudaException(what + " found no algorithm for this shape and alignment (alignments "
                            + key.alignW() + "/" + key.alignX() + "/" + key.alignOut() + " bytes)");
                }
                if (result.get(JAVA_LONG, CublasLt.HEURISTIC_WORKSPACE_OFFSET) > WORKSPACE_BYTES) {
                    throw new CudaException(what + " chose an algorithm needing more than the workspace");
                }
                return new Plan(layoutW, layoutX, layoutOut, result.asSlice(CublasLt.HEURISTIC_ALGO_OFFSET), planArena);
            } finally {
                lt.preferenceDestroy(pref);
            }
        } catch (RuntimeException e) {
            if (layoutW != null) lt.matrixLayoutDestroy(layoutW);
            if (layoutX != null) lt.matrixLayoutDestroy(layoutX);
            if (layoutOut != null) lt.matrixLayoutDestroy(layoutOut);
            planArena.close();
            throw e;
        }
    }

    private MemorySegment layout(Arena tmp, int dataType, long rows, long cols, long ld) {
        MemorySegment out = tmp.allocate(ADDRESS);
        lt.check(lt.matrixLayoutCreate(out, dataType, rows, cols, ld),
                "cublasLtMatrixLayoutCreate(" + rows + " x " + cols + ", ld " + ld + ")");
        return out.get(ADDRESS, 0);
    }

    private void setAlignment(Arena tmp, MemorySegment pref, int attribute, int bytes) {
        MemorySegment u32 = tmp.allocateFrom(JAVA_INT, bytes);
        lt.check(lt.preferenceSetAttribute(pref, attribute, u32, 4), "cublasLtMatmulPreferenceSetAttribute(" + attribute + ")");
    }

    /** The largest power of two up to 256 that divides the address. */
    static int alignment(long address) {
        return (int) Math.min(256, Long.lowestOneBit(address == 0 ? 256 : address));
    }

    static int dataType(DType t) {
        return switch (t) {
            case F32 -> CublasLt.CUDA_R_32F;
            case BF16 -> CublasLt.CUDA_R_16BF;
            case F16 -> CublasLt.CUDA_R_16F;
            default -> throw new IllegalArgumentException("matmul weights must be F32, BF16 or F16, got " + t);
        };
    }
}
