package dev.lora4j.cuda;

import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * The cuBLASLt functions lora4j calls, bound through the Foreign Function & Memory API, with the enum values it
 * uses. Values come from cublasLt.h, cublas_api.h and library_types.h (unchanged from CUDA 11 to 13).
 * {@code cublasStatus_t} and enums are {@code int}; {@code size_t}, {@code uint64_t} and {@code int64_t} are
 * {@code long}; descriptors and handles are addresses. Device pointers ({@code const void*} in the header) are
 * passed as {@code long}: on the 64-bit Linux ABIs both go in the same integer register, and this keeps device
 * addresses out of host {@link MemorySegment}s.
 */
final class CublasLt {
    static final int SUCCESS = 0;

    // cudaDataType_t (library_types.h)
    static final int CUDA_R_32F = 0;
    static final int CUDA_R_16F = 2;
    static final int CUDA_R_16BF = 14;
    // cublasComputeType_t (cublas_api.h)
    static final int CUBLAS_COMPUTE_32F = 68;
    // cublasOperation_t
    static final int CUBLAS_OP_N = 0;
    static final int CUBLAS_OP_T = 1;
    // cublasLtMatmulDescAttributes_t: int32_t values
    static final int CUBLASLT_MATMUL_DESC_TRANSA = 3;
    static final int CUBLASLT_MATMUL_DESC_TRANSB = 4;
    // cublasLtMatmulPreferenceAttributes_t
    static final int CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1;    // uint64_t
    static final int CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK = 3;  // uint32_t
    /** cublasLtReductionScheme_t: split-K partial sums kept in the compute type (FP32) in the workspace. */
    static final int CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE = 2;
    static final int CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES = 5;  // uint32_t
    static final int CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 6;
    static final int CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES = 7;
    static final int CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 8;

    /**
     * cublasLtMatmulHeuristicResult_t: cublasLtMatmulAlgo_t algo (uint64_t[8], 64 bytes), size_t workspaceSize
     * (offset 64), cublasStatus_t state (72), float wavesCount (76), int reserved[4] (80); 96 bytes in all.
     */
    static final long HEURISTIC_RESULT_BYTES = 96;
    static final long HEURISTIC_ALGO_OFFSET = 0;
    static final long HEURISTIC_WORKSPACE_OFFSET = 64;
    static final long HEURISTIC_STATE_OFFSET = 72;

    private static final Linker LINKER = Linker.nativeLinker();

    private final String origin;
    private final MethodHandle create, destroy, getVersion, getStatusName, getStatusString, matmulDescCreate,
            matmulDescSetAttribute, matmulDescDestroy, matrixLayoutCreate, matrixLayoutDestroy, preferenceCreate,
            preferenceSetAttribute, preferenceDestroy, algoGetHeuristic, matmul;

    CublasLt(SymbolLookup lib, String origin) {
        this.origin = origin;
        create = bind(lib, "cublasLtCreate", JAVA_INT, ADDRESS);
        destroy = bind(lib, "cublasLtDestroy", JAVA_INT, ADDRESS);
        getVersion = bind(lib, "cublasLtGetVersion", JAVA_LONG);
        getStatusName = bind(lib, "cublasLtGetStatusName", ADDRESS, JAVA_INT);
        getStatusString = bind(lib, "cublasLtGetStatusString", ADDRESS, JAVA_INT);
        matmulDescCreate = bind(lib, "cublasLtMatmulDescCreate", JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT);
        matmulDescSetAttribute = bind(lib, "cublasLtMatmulDescSetAttribute", JAVA_INT, ADDRESS, JAVA_INT, ADDRESS, JAVA_LONG);
        matmulDescDestroy = bind(lib, "cublasLtMatmulDescDestroy", JAVA_INT, ADDRESS);
        matrixLayoutCreate = bind(lib, "cublasLtMatrixLayoutCreate", JAVA_INT, ADDRESS, JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG);
        matrixLayoutDestroy = bind(lib, "cublasLtMatrixLayoutDestroy", JAVA_INT, ADDRESS);
        preferenceCreate = bind(lib, "cublasLtMatmulPreferenceCreate", JAVA_INT, ADDRESS);
        preferenceSetAttribute = bind(lib, "cublasLtMatmulPreferenceSetAttribute", JAVA_INT, ADDRESS, JAVA_INT, ADDRESS, JAVA_LONG);
        preferenceDestroy = bind(lib, "cublasLtMatmulPreferenceDestroy", JAVA_INT, ADDRESS);
        algoGetHeuristic = bind(lib, "cublasLtMatmulAlgoGetHeuristic", JAVA_INT, ADDRESS, ADDRESS, ADDRESS, ADDRESS,
                ADDRESS, ADDRESS, ADDRESS, JAVA_INT, ADDRESS, ADDRESS);
        matmul = bind(lib, "cublasLtMatmul", JAVA_INT,
                ADDRESS, ADDRESS,          // handle, matmul descriptor
                ADDRESS,                   // alpha (host)
                JAVA_LONG, ADDRESS,        // A, Adesc
                JAVA_LONG, ADDRESS,        // B, Bdesc
                ADDRESS,                   // beta (host)
                JAVA_LONG, ADDRESS,        // C, Cdesc
                JAVA_LONG, ADDRESS,        // D, Ddesc
                ADDRESS,                   // algo
                JAVA_LONG, JAVA_LONG,      // workspace, workspace bytes
                ADDRESS);                  // stream
    }

    String origin() { return origin; }

    /** The library's version as major*10000 + minor*100 + patch, e.g. 130001. */
    long version() {
        try { return (long) getVersion.invokeExact(); } catch (Throwable t) { throw CudaDriver.rethrow(t); }
    }

    /** The version as "13.0.1". */
    String versionString() {
        long v = version();
        return (v / 10000) + "." + (v / 100 % 100) + "." + (v % 100);
    }

    int create(MemorySegment handle) {
        try { return (int) create.invokeExact(handle); } catch (Throwable t) { throw CudaDriver.rethrow(t); }
    }

    int destroy(MemorySegment handle) {
        try { return (int) destroy.invokeExact(handle); } catch (Throwable t) { throw CudaDriver.rethrow(t); }
    }

    int matmulDescCreate(MemorySegment desc, int computeType, int scaleType) {
        try { return (int) matmulDescCreate.invokeExact(desc, computeType, scaleType); } catch (Throwable t) { throw CudaDriver.rethrow(t); }
    }

    int matmulDescSetAttribute(MemorySegment desc, int attribute, MemorySegment value, long bytes) {
        try { return (int) matmulDescSetAttribute.invokeExact(desc, attribute, value, bytes); } catch (Throwable t) { throw CudaDriver.rethrow(t); }
    }

    int matmulDescDestroy(MemorySegment desc) {
        try { return (int) matmulDescDestroy.invokeExact(desc); } catch (Throwable t) { throw CudaDriver.rethrow(t); }
    }

    int matrixLayoutCreate(MemorySegment layout, int dataType, long rows, long cols, long ld) {
        try { return (int) matrixLayoutCreate.invokeExact(layout, dataType, rows, cols, ld); } catch (Throwable t) { throw CudaDriver.rethrow(t); }
    }

    int matrixLayoutDestroy(MemorySegment layout) {
        try { return (int) matrixLayoutDestroy.invokeExact(layout); } catch (Throwable t) { throw CudaDriver.rethrow(t); }
    }

    int preferenceCreate(MemorySegment pref) {
        try { return (int) preferenceCreate.invokeExact(pref); } catch (Throwable t) { throw CudaDriver.rethrow(t); }
    }

    int preferenceSetAttribute(MemorySegment pref, int attribute, MemorySegment value, long bytes) {
        try { return (int) preferenceSetAttribute.invokeExact(pref, attribute, value, bytes); } catch (Throwable t) { throw CudaDriver.rethrow(t); }
    }

    int preferenceDestroy(MemorySegment pref) {
        try { return (int) preferenceDestroy.invokeExact(pref); } catch (Throwable t) { throw CudaDriver.rethrow(t); }
    }

    int algoGetHeuristic(MemorySegment handle, MemorySegment desc, MemorySegment a, MemorySegment b, MemorySegment c,
                         MemorySegment d, MemorySegment pref, int requested, MemorySegment results, MemorySegment returned) {
        try {
            return (int) algoGetHeuristic.invokeExact(handle, desc, a, b, c, d, pref, requested, results, returned);
        } catch (Throwable t) {
            throw CudaDriver.rethrow(t);
        }
    }

    int matmul(MemorySegment handle, MemorySegment desc, MemorySegment alpha, long a, MemorySegment aDesc, long b,
               MemorySegment bDesc, MemorySegment beta, long c, MemorySegment cDesc, long d, MemorySegment dDesc,
               MemorySegment algo, long workspace, long workspaceBytes, MemorySegment stream) {
        try {
            return (int) matmul.invokeExact(handle, desc, alpha, a, aDesc, b, bDesc, beta, c, cDesc, d, dDesc, algo,
                    workspace, workspaceBytes, stream);
        } catch (Throwable t) {
            throw CudaDriver.rethrow(t);
        }
    }

    /** Throws a {@link CudaException} naming {@code call} unless {@code status} is CUBLAS_STATUS_SUCCESS. */
    void check(int status, String call) {
        if (status == SUCCESS) return;
        String name = statusText(getStatusName, status);
        String text = statusText(getStatusString, status);
        String message = call + " failed: " + name + (text.isEmpty() || text.equals(name) ? "" : " (" + text + ")");
        throw new CudaException(message, status, name);
    }

    private static String statusText(MethodHandle fn, int status) {
        try {
            MemorySegment p = (MemorySegment) fn.invokeExact(status);
            if (p.equals(MemorySegment.NULL)) return "cublasStatus_t " + status;
            return p.reinterpret(4096).getString(0);
        } catch (Throwable t) {
            return "cublasStatus_t " + status;
        }
    }

    private static MethodHandle bind(SymbolLookup lib, String name, MemoryLayout result, MemoryLayout... args) {
        MemorySegment symbol = lib.find(name).orElseThrow(() -> new CudaException(
                "the cuBLASLt library has no function " + name + ": lora4j needs cuBLASLt from CUDA 12 or 13"));
        return LINKER.downcallHandle(symbol, FunctionDescriptor.of(result, args));
    }
}
