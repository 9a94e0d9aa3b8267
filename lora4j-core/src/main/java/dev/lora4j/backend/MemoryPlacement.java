package dev.lora4j.backend;

/** Where a tensor's memory lives (see {@link Backend#allocatePaged} and {@link Backend#placement}). */
public enum MemoryPlacement {
    /** Ordinary host memory: every tensor of the CPU backend. */
    HOST("host memory"),
    /** Device memory. */
    DEVICE("device memory"),
    /** Unified memory that prefers the device and that the driver may move to host memory when the device runs short. */
    MANAGED("managed memory (on the device, evictable to the host)"),
    /** Pinned host memory mapped into the device's address space: kernels reach it over the bus, it takes no device memory. */
    MAPPED_HOST("pinned host memory mapped into the device");

    private final String description;

    MemoryPlacement(String description) {
        this.description = description;
    }

    /** A few words for humans. */
    public String description() {
        return description;
    }
}
