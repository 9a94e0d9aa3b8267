package dev.lora4j.cuda;

import dev.lora4j.tensor.DType;

import java.util.function.BiConsumer;

/**
 * The two CUDA backends a GPU test class runs its kernels on, one with F32 activations and one with BF16, opened once
 * before the class and closed after it. Where the CUDA backend cannot run (no GPU, driver or library; no device
 * emulator in CI) every test of the class is skipped with the probe's one-line reason. {@link GpuAndCpu} is the same
 * for a class that compares the GPU with the CPU.
 *
 * <pre>
 * private static CudaBackend f32;
 * private static CudaBackend bf16;
 * &#64;RegisterExtension
 * static final GpuBackends backends = GpuBackends.assigning((a, b) -&gt; { f32 = a; bf16 = b; });
 * </pre>
 */
final class GpuBackends extends GpuTestExtension {
    private final BiConsumer<CudaBackend, CudaBackend> assign;
    private CudaBackend f32;
    private CudaBackend bf16;

    private GpuBackends(BiConsumer<CudaBackend, CudaBackend> assign) {
        this.assign = assign;
    }

    /** {@code assign} receives the F32-activation backend and the BF16 one once they are open. */
    static GpuBackends assigning(BiConsumer<CudaBackend, CudaBackend> assign) {
        return new GpuBackends(assign);
    }

    @Override
    protected void open() {
        f32 = CudaBackend.open(CudaProbe.deviceOrdinal(), DType.F32);
        bf16 = CudaBackend.open(CudaProbe.deviceOrdinal(), DType.BF16);
        assign.accept(f32, bf16);
    }

    @Override
    protected void close() {
        try {
            f32.close();
        } finally {
            bf16.close();
            assign.accept(null, null);
        }
    }
}
