package dev.lora4j.cuda;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.BackendProvider;
import dev.lora4j.tensor.DType;

/**
 * Makes the CUDA backend known to {@code Backends} (a {@link java.util.ServiceLoader} service). The probe loads the
 * driver and cuBLASLt once per process and reads the chosen GPU's properties; it never throws.
 */
public final class CudaBackendProvider implements BackendProvider {

    @Override public String name() { return "cuda"; }

    @Override
    public Availability probe() {
        try {
            return CudaProbe.probe(CudaPlatform.shared(), CudaProbe.deviceOrdinal());
        } catch (Throwable t) {
            return Availability.unavailable("CUDA probe failed: " + LibrarySearch.oneLine(t));
        }
    }

    @Override
    public Backend open() {
        return CudaBackend.open();
    }

    /** F32 or BF16 activations; null for those of {@code -Dlora4j.cuda.activations}. */
    @Override
    public Backend open(DType activations) {
        return activations == null ? open() : CudaBackend.open(CudaProbe.deviceOrdinal(), activations);
    }
}
