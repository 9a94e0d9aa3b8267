package dev.lora4j.cuda;

import dev.lora4j.tensor.DType;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.Map;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * Matrix products through cuBLASLt, on the tensor cores for BF16/F16 operands, in true FP32 (no TF32) for F32
 * operands; both operands of one element type, accumulation in FP32, the result F32, or BF16 from BF16 operands
 * (rounded to nearest even once, after the addition when the product accumulates into it).
 *
 * <p>cuBLASLt is column-major, and a row-major [r, c] matrix is the column-major c×r matrix with leading
 * dimension c (its transpose). lora4j's three products, all on row-major tensors, become:
 * <ul>
 *   <li>forward, {@code out[n,m] = x[n,k] · w[m,k]ᵀ}: outᵀ (m×n, ld m) = op_T(w stored k×m, ld k) · (x stored k×n,
 *       ld k), the "TN" form every cuBLASLt kernel family supports;</li>
 *   <li>input gradient, {@code dX[n,k] = dY[n,m] · w[m,k]}: dXᵀ (k×n, ld k) = (w stored k×m, ld k) · (dY stored m×n,
 *       ld m), "NN";</li>
 *   <li>weight gradient, {@code dW[m,k] = dY[n,m]ᵀ · x[n,k]}: dWᵀ (k×m, ld k) = (x stored k×n, ld k) ·
 *       op_T(dY stored m×n, ld m), "NT".</li>
 * </ul>
 *
 * <p>Descriptors, layouts and the heuristic's choice of algorithm are cached per form, shape, element type and
 * pointer alignment (the heuristic assumes 256-byte aligned pointers unless told otherwise, and views of tensors
 * are not).
 */
final class CublasLtMatmul {
    /** Workspace cuBLASLt may use for split-K and similar algorithms. */
    static final long WORKSPACE_BYTES = 32L << 20;
    /** How many of the heuristic's answers {@link GemmAlgorithmChoice#TIMED} times. */
    static final int CANDIDATES = 12;
    /** -Dlora4j.cuda.gemm-trials=print writes each timed shape's candidates and times to standard error. */
    static final String TRIALS_PROPERTY = "lora4j.cuda.gemm-trials";
    /** Each candidate runs for about this long when timed (after one untimed call). */
    private static final long TRIAL_NANOS = 1_000_000;
    private static final int MAX_PLANS = 512;

    private final CublasLt lt;
    private final GemmAlgorithmChoice choice;
    private final Runnable synchronize;
    private final DeviceAllocator allocator;
    private final boolean printTrials = "print".equals(System.getProperty(TRIALS_PROPERTY));
    private final Arena arena = Arena.ofShared();
    private final MemorySegment handle;
    private final long workspace;
    private final MemorySegment one;
    private final MemorySegment zero;
    private final Map<Form, MemorySegment> descriptors = new HashMap<>();
    private final LinkedHashMap<Key, Plan> plans = new LinkedHashMap<>(64, 0.75f, true) {
        @Override
        protected boolean removeEldestEntry(Map.Entry<Key, Plan> eldest) {
            if (size() <= MAX_PLANS) return false;
            eldest.getValue().destroy(lt);
            return true;
        }
    };

    /** The element type of the operands, that of the result (C and D), and whether each operand is used transposed. */
    private record Form(DType type, DType output, boolean transA, boolean transB) {
        Form {
            dataType(type);
            if (output != DType.F32 && !(output == DType.BF16 && type == DType.BF16)) {
                throw new IllegalArgumentException("a product of " + type + " operands cannot be written as " + output
                        + " (F32 always; BF16 from BF16 operands)");
            }
        }
    }

    /** D (rows × cols, ld ldd) = op(A) (rows × inner, ld lda) · op(B) (inner × cols, ld ldb), column-major. */
    private record Key(Form form, long rows, long cols, long inner, long lda, long ldb, long ldd, int alignA, int alignB,
                       int alignC, int alignD) {}

    /**
     * The layouts of one shape, the heuristic's answers for it (cublasLtMatmulHeuristicResult_t, best first) and the
     * one in use: the first until {@link GemmAlgorithmChoice#TIMED} has timed them.
     */
    private static final class Plan {
        final MemorySegment layoutA, layoutB, layoutD, results;
        final int candidates;
        final Arena arena;
        int chosen;
        boolean settled;

        Plan(MemorySegment layoutA, MemorySegment layoutB, MemorySegment layoutD, MemorySegment results,
             int candidates, Arena arena, boolean settled) {
            this.layoutA = layoutA;
            this.layoutB = layoutB;
            this.layoutD = layoutD;
            this.results = results;
            this.candidates = candidates;
            this.arena = arena;
            this.settled = settled || candidates == 1;
        }

        MemorySegment algorithm(int index) {
            return results.asSlice(index * CublasLt.HEURISTIC_RESULT_BYTES + CublasLt.HEURISTIC_ALGO_OFFSET, 64);
        }

        MemorySegment algorithm() { return algorithm(chosen); }

        void destroy(CublasLt lt) {
            lt.matrixLayoutDestroy(layoutA);
            lt.matrixLayoutDestroy(layoutB);
            lt.matrixLayoutDestroy(layoutD);
            arena.close();
        }
    }

    /**
     * Creates the cuBLASLt handle; the context must be current and {@code workspace} hold {@link #WORKSPACE_BYTES}.
     * {@code synchronize} waits for the stream the products are queued on, and {@code allocator} lends the timed
     * choice a scratch output for products that add to theirs.
     */
    CublasLtMatmul(CublasLt lt, long workspace, GemmAlgorithmChoice choice, Runnable synchronize,
                   DeviceAllocator allocator) {
        this.lt = lt;
        this.workspace = workspace;
        this.choice = choice;
        this.synchronize = synchronize;
        this.allocator = allocator;
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
     * x and w hold elements of {@code type}, out elements of {@code output}. n, m, k &gt; 0.
     */
    void multiply(DType type, DType output, long w, long x, long out, long n, long m, long k, boolean accumulate,
                  MemorySegment stream) {
        gemm(new Form(type, output, true, false), w, k, x, k, out, out, m, m, n, k, accumulate, stream,
                "cublasLtMatmul(" + type + " [" + n + ", " + k + "] x [" + m + ", " + k + "]^T -> " + output + ")");
    }

    /**
     * Queues {@code out = addend + x · wᵀ}, the addend read by the product's epilogue (cuBLASLt's C) from its own
     * buffer, of out's element type and shape (it may be out).
     */
    void multiplyAdd(DType type, DType output, long w, long x, long addend, long out, long n, long m, long k,
                     MemorySegment stream) {
        gemm(new Form(type, output, true, false), w, k, x, k, addend, out, m, m, n, k, true, stream,
                "cublasLtMatmul(" + type + " [" + n + ", " + k + "] x [" + m + ", " + k + "]^T + C -> " + output + ")");
    }

    /** {@link #multiply(DType, DType, long, long, long, long, long, long, boolean, MemorySegment)} into F32. */
    void multiply(DType type, long w, long x, long out, long n, long m, long k, boolean accumulate,
                  MemorySegment stream) {
        multiply(type, DType.F32, w, x, out, n, m, k, accumulate, stream);
    }

    /**
     * Queues {@code dX (+)= dY · w} for row-major dY [n, m] (starting at column offset 0 of rows {@code ldDy} long),
     * w [m, k] and dX [n, k]: dY and w hold elements of {@code type}, dX elements of {@code output}. n, m, k &gt; 0.
     */
    void multiplyBackwardInput(DType type, DType output, long dY, long ldDy, long w, long dX, long n, long m, long k,
                               boolean accumulate, MemorySegment stream) {
        gemm(new Form(type, output, false, false), w, k, dY, ldDy, dX, dX, k, k, n, m, accumulate, stream,
                "cublasLtMatmul(" + type + " [" + n + ", " + m + "] x [" + m + ", " + k + "] -> " + output + ")");
    }

    /** {@link #multiplyBackwardInput(DType, DType, long, long, long, long, long, long, long, boolean, MemorySegment)} into F32. */
    void multiplyBackwardInput(DType type, long dY, long ldDy, long w, long dX, long n, long m, long k,
                               boolean accumulate, MemorySegment stream) {
        multiplyBackwardInput(type, DType.F32, dY, ldDy, w, dX, n, m, k, accumulate, stream);
    }

    /**
     * Queues {@code dW (+)= dYᵀ · x} for row-major dY [n, m] and x [n, k] of elements of {@code type} (F32, or BF16
     * on the tensor cores) and dW [m, k] of elements of {@code output}. n, m, k &gt; 0.
     */
    void multiplyBackwardWeight(DType type, DType output, long dY, long x, long dW, long n, long m, long k,
                                boolean accumulate, MemorySegment stream) {
        gemm(new Form(type, output, false, true), x, k, dY, m, dW, dW, k, k, m, n, accumulate, stream,
                "cublasLtMatmul(" + type + " [" + n + ", " + m + "]^T x [" + n + ", " + k + "] -> " + output + ")");
    }

    /** {@link #multiplyBackwardWeight(DType, DType, long, long, long, long, long, long, boolean, MemorySegment)} in F32. */
    void multiplyBackwardWeight(long dY, long x, long dW, long n, long m, long k, boolean accumulate,
                                MemorySegment stream) {
        multiplyBackwardWeight(DType.F32, DType.F32, dY, x, dW, n, m, k, accumulate, stream);
    }

    /** D = op(A)·op(B) (+ C when accumulating; C has D's layout and is D unless a caller says otherwise). */
    private synchronized void gemm(Form form, long a, long lda, long b, long ldb, long c, long d, long ldd, long rows,
                                   long cols, long inner, boolean accumulate, MemorySegment stream, String call) {
        Key key = new Key(form, rows, cols, inner, lda, ldb, ldd, alignment(a), alignment(b), alignment(c),
                alignment(d));
        Plan plan = plans.get(key);
        if (plan == null) {
            plan = plan(key, call);
            plans.put(key, plan);
        }
        if (!plan.settled) {
            // Timing runs the product repeatedly into its output: d itself when the call overwrites d, else a scratch
            // block of d's size and alignment (its contents do not matter to the time).
            if (!accumulate) {
                choose(plan, form, a, b, d, false, stream, call);
            } else {
                long bytes = (long) form.output().bytesFor(1) * key.ldd() * key.cols() + 256;
                long scratch = allocator.allocate(bytes);
                try {
                    long at = scratch + ((d - scratch) & 255);
                    choose(plan, form, a, b, at, true, stream, call);
                } finally {
                    allocator.release(scratch);
                }
            }
        }
        lt.check(run(plan, plan.chosen, form, a, b, c, d, accumulate, stream), call);
    }

    private int run(Plan plan, int index, Form form, long a, long b, long d, boolean accumulate, MemorySegment stream) {
        return run(plan, index, form, a, b, d, d, accumulate, stream);
    }

    private int run(Plan plan, int index, Form form, long a, long b, long c, long d, boolean accumulate,
                    MemorySegment stream) {
        return lt.matmul(handle, descriptor(form), one, a, plan.layoutA, b, plan.layoutB, accumulate ? one : zero,
                c, plan.layoutD, d, plan.layoutD, plan.algorithm(index), workspace, WORKSPACE_BYTES, stream);
    }

    /** Times every candidate of {@code plan} on these operands (d overwritten) and keeps the fastest. */
    private void choose(Plan plan, Form form, long a, long b, long d, boolean accumulate, MemorySegment stream,
                        String call) {
        double[] nanos = new double[plan.candidates];
        double best = Double.MAX_VALUE;
        for (int i = 0; i < plan.candidates; i++) {
            nanos[i] = time(plan, i, form, a, b, d, accumulate, stream);
            if (nanos[i] < best) {
                best = nanos[i];
                plan.chosen = i;
            }
        }
        plan.settled = true;
        if (printTrials) {
            StringBuilder line = new StringBuilder("gemm trial ").append(call).append(':');
            for (int i = 0; i < nanos.length; i++) {
                line.append(i == plan.chosen ? " *" : " ")
                        .append(Double.isInfinite(nanos[i]) ? "failed" : String.format(java.util.Locale.ROOT, "%.1f", nanos[i] / 1e3));
            }
            System.err.println(line.append(" us"));
        }
    }

    /** Nanoseconds per call of candidate {@code index}, or infinity when cuBLASLt refuses to run it. */
    private double time(Plan plan, int index, Form form, long a, long b, long d, boolean accumulate,
                        MemorySegment stream) {
        if (run(plan, index, form, a, b, d, accumulate, stream) != CublasLt.SUCCESS) return Double.POSITIVE_INFINITY;
        synchronize.run();
        long t0 = System.nanoTime();
        lt.check(run(plan, index, form, a, b, d, accumulate, stream), "cublasLtMatmul (timing)");
        synchronize.run();
        long once = Math.max(1, System.nanoTime() - t0);
        int repeats = (int) Math.clamp(TRIAL_NANOS / once, 2, 50);
        t0 = System.nanoTime();
        for (int r = 0; r < repeats; r++) {
            lt.check(run(plan, index, form, a, b, d, accumulate, stream), "cublasLtMatmul (timing)");
        }
        synchronize.run();
        return (double) (System.nanoTime() - t0) / repeats;
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

    private MemorySegment descriptor(Form form) {
        MemorySegment d = descriptors.get(form);
        if (d != null) return d;
        try (Arena tmp = Arena.ofConfined()) {
            MemorySegment out = tmp.allocate(ADDRESS);
            lt.check(lt.matmulDescCreate(out, CublasLt.CUBLAS_COMPUTE_32F, CublasLt.CUDA_R_32F), "cublasLtMatmulDescCreate");
            d = out.get(ADDRESS, 0);
            MemorySegment op = tmp.allocate(JAVA_INT);
            op.set(JAVA_INT, 0, form.transA() ? CublasLt.CUBLAS_OP_T : CublasLt.CUBLAS_OP_N);
            lt.check(lt.matmulDescSetAttribute(d, CublasLt.CUBLASLT_MATMUL_DESC_TRANSA, op, 4), "cublasLtMatmulDescSetAttribute(TRANSA)");
            op.set(JAVA_INT, 0, form.transB() ? CublasLt.CUBLAS_OP_T : CublasLt.CUBLAS_OP_N);
            lt.check(lt.matmulDescSetAttribute(d, CublasLt.CUBLASLT_MATMUL_DESC_TRANSB, op, 4), "cublasLtMatmulDescSetAttribute(TRANSB)");
        }
        descriptors.put(form, d);
        return d;
    }

    private Plan plan(Key key, String call) {
        Form form = key.form();
        int dataType = dataType(form.type());
        Arena planArena = Arena.ofShared();
        MemorySegment layoutA = null, layoutB = null, layoutD = null;
        try (Arena tmp = Arena.ofConfined()) {
            // Stored shapes: a transposed operand is stored as the transpose of what the product uses.
            layoutA = form.transA() ? layout(tmp, dataType, key.inner(), key.rows(), key.lda())
                    : layout(tmp, dataType, key.rows(), key.inner(), key.lda());
            layoutB = form.transB() ? layout(tmp, dataType, key.cols(), key.inner(), key.ldb())
                    : layout(tmp, dataType, key.inner(), key.cols(), key.ldb());
            layoutD = layout(tmp, dataType(form.output()), key.rows(), key.cols(), key.ldd());

            MemorySegment out = tmp.allocate(ADDRESS);
            lt.check(lt.preferenceCreate(out), "cublasLtMatmulPreferenceCreate");
            MemorySegment pref = out.get(ADDRESS, 0);
            try {
                MemorySegment u64 = tmp.allocateFrom(JAVA_LONG, WORKSPACE_BYTES);
                lt.check(lt.preferenceSetAttribute(pref, CublasLt.CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, u64, 8),
                        "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)");
                // Split-K may only keep its partial sums in FP32: the in-place and output-type schemes add partial
                // sums stored in the output's type, which for a BF16 output rounds twice (seen on the H200 as one-ulp
                // errors in BF16 input gradients of short products).
                setUint32(tmp, pref, CublasLt.CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                        CublasLt.CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE);
                setUint32(tmp, pref, CublasLt.CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.alignA());
                setUint32(tmp, pref, CublasLt.CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.alignB());
                setUint32(tmp, pref, CublasLt.CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.alignC());
                setUint32(tmp, pref, CublasLt.CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.alignD());

                int requested = choice == GemmAlgorithmChoice.TIMED ? CANDIDATES : 1;
                MemorySegment results = planArena.allocate(CublasLt.HEURISTIC_RESULT_BYTES * requested, 8);
                MemorySegment count = tmp.allocate(JAVA_INT);
                String what = "cublasLtMatmulAlgoGetHeuristic for " + call;
                lt.check(lt.algoGetHeuristic(handle, descriptor(form), layoutA, layoutB, layoutD, layoutD, pref,
                        requested, results, count), what);
                int usable = usableAnswers(results, count.get(JAVA_INT, 0));
                if (usable < 1) {
                    throw new CudaException(what + " found no algorithm for this shape and alignment (alignments "
                            + key.alignA() + "/" + key.alignB() + "/" + key.alignD() + " bytes and "
                            + WORKSPACE_BYTES + " bytes of workspace)");
                }
                return new Plan(layoutA, layoutB, layoutD, results, usable, planArena,
                        choice == GemmAlgorithmChoice.HEURISTIC);
            } finally {
                lt.preferenceDestroy(pref);
            }
        } catch (RuntimeException e) {
            if (layoutA != null) lt.matrixLayoutDestroy(layoutA);
            if (layoutB != null) lt.matrixLayoutDestroy(layoutB);
            if (layoutD != null) lt.matrixLayoutDestroy(layoutD);
            planArena.close();
            throw e;
        }
    }

    /** How many of the first {@code returned} answers succeeded and fit the workspace (they come first, best first). */
    private static int usableAnswers(MemorySegment results, int returned) {
        int usable = 0;
        while (usable < returned) {
            long at = usable * CublasLt.HEURISTIC_RESULT_BYTES;
            if (results.get(JAVA_INT, at + CublasLt.HEURISTIC_STATE_OFFSET) != CublasLt.SUCCESS
                    || results.get(JAVA_LONG, at + CublasLt.HEURISTIC_WORKSPACE_OFFSET) > WORKSPACE_BYTES) break;
            usable++;
        }
        return usable;
    }

    private MemorySegment layout(Arena tmp, int dataType, long rows, long cols, long ld) {
        MemorySegment out = tmp.allocate(ADDRESS);
        lt.check(lt.matrixLayoutCreate(out, dataType, rows, cols, ld),
                "cublasLtMatrixLayoutCreate(" + rows + " x " + cols + ", ld " + ld + ")");
        return out.get(ADDRESS, 0);
    }

    /** Sets a uint32_t preference (the alignments, the reduction-scheme mask). */
    private void setUint32(Arena tmp, MemorySegment pref, int attribute, int bytes) {
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
