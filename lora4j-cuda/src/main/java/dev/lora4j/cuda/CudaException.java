package dev.lora4j.cuda;

/** A CUDA driver or cuBLASLt call that failed: the message names the call, the error's name and its meaning. */
public final class CudaException extends RuntimeException {
    /** CUDA_ERROR_OUT_OF_MEMORY in the driver API. */
    static final int OUT_OF_MEMORY = 2;

    private final int code;
    private final String errorName;

    CudaException(String message, int code, String errorName) {
        super(message);
        this.code = code;
        this.errorName = errorName;
    }

    CudaException(String message) {
        this(message, -1, "");
    }

    /** The CUresult or cublasStatus_t value, or -1 for errors found by lora4j itself. */
    public int code() { return code; }

    /** The error's symbolic name ("CUDA_ERROR_OUT_OF_MEMORY", "CUBLAS_STATUS_NOT_SUPPORTED"), or "". */
    public String errorName() { return errorName; }
}
