package dev.lora4j.api;

/**
 * Where a model runs. {@link #CUDA} falls back to the CPU, with a notice, when no usable GPU is found;
 * {@link #AUTO} takes the GPU when there is one, silently.
 */
public enum Device {
    CPU("cpu"),
    CUDA("cuda"),
    AUTO("auto");

    private final String backendName;

    Device(String backendName) {
        this.backendName = backendName;
    }

    /** The name {@link dev.lora4j.backend.Backends#open} takes. */
    public String backendName() {
        return backendName;
    }
}
