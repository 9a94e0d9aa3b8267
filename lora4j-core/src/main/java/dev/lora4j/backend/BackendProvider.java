package dev.lora4j.backend;

import dev.lora4j.tensor.DType;

/**
 * How a backend in another module (the CUDA backend) makes itself known to the core: a
 * {@link java.util.ServiceLoader} service, so that the core never depends on the CUDA bindings.
 */
public interface BackendProvider {

    /** The device name users type: "cuda". */
    String name();

    /**
     * Whether this backend can run here. Must not throw: a missing driver, library, GPU or kernel image is
     * reported as {@link Availability#unavailable} with one line saying what is missing.
     */
    Availability probe();

    /** Opens the backend; call only when {@link #probe()} said it is available. */
    Backend open();

    /**
     * Opens the backend with activations of dtype {@code activations} ({@link Backend#activationType()}); null for
     * the backend's default. A backend that keeps only one activation dtype refuses any other.
     */
    default Backend open(DType activations) {
        Backend b = open();
        if (activations == null || b.activationType() == activations) return b;
        DType kept = b.activationType();
        b.close();
        throw new IllegalArgumentException("the " + name() + " backend keeps activations in " + kept + ", not " + activations);
    }

    record Availability(boolean available, String detail) {
        public static Availability available(String detail) { return new Availability(true, detail); }
        public static Availability unavailable(String reason) { return new Availability(false, reason); }
    }
}
