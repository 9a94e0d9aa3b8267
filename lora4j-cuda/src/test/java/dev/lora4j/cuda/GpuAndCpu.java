package dev.lora4j.cuda;

import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.util.function.BiConsumer;

/**
 * The backends a GPU test class compares: the CUDA backend (F32 or BF16 activations) and a CPU backend, opened once
 * before the class and closed after it. Where the CUDA backend cannot run (no GPU, driver or library; no device
 * emulator in CI) every test of the class is skipped with the probe's one-line reason.
 *
 * <pre>
 * private static CudaBackend gpu;
 * private static CpuBackend cpu;
 * &#64;RegisterExtension
 * static final GpuAndCpu backends = GpuAndCpu.assigning((g, c) -&gt; { gpu = g; cpu = c; });
 * </pre>
 */
final class GpuAndCpu extends GpuTestExtension {
    private final DType activations;
    private final BiConsumer<CudaBackend, CpuBackend> assign;
    private CudaBackend gpu;
    private CpuBackend cpu;

    private GpuAndCpu(DType activations, BiConsumer<CudaBackend, CpuBackend> assign) {
        this.activations = activations;
        this.assign = assign;
    }

    /** F32 activations on the GPU; {@code assign} receives both backends once they are open. */
    static GpuAndCpu assigning(BiConsumer<CudaBackend, CpuBackend> assign) {
        return new GpuAndCpu(DType.F32, assign);
    }

    /** As {@link #assigning(BiConsumer)}, with the GPU's activations in {@code activations}. */
    static GpuAndCpu assigning(DType activations, BiConsumer<CudaBackend, CpuBackend> assign) {
        return new GpuAndCpu(activations, assign);
    }

    /** The same tensor on both backends: {@code g} on the GPU, {@code c} on the CPU. */
    record Pair(Tensor g, Tensor c) implements AutoCloseable {
        @Override public void close() {
            try {
                g.close();
            } finally {
                c.close();
            }
        }
    }

    /** The same values on both backends. */
    Pair pair(float[] values, DType dtype, long... shape) {
        return new Pair(gpu.fromFloats(values, dtype, shape), cpu.fromFloats(values, dtype, shape));
    }

    /** Fresh tensors of the same dtype and shape on both backends. */
    Pair zeros(DType dtype, long... shape) {
        return new Pair(gpu.allocate(dtype, shape), cpu.allocate(dtype, shape));
    }

    @Override
    protected void open() {
        gpu = CudaBackend.open(CudaProbe.deviceOrdinal(), activations);
        cpu = new CpuBackend();
        assign.accept(gpu, cpu);
    }

    @Override
    protected void close() {
        try {
            gpu.close();
        } finally {
            cpu.close();
            assign.accept(null, null);
        }
    }
}
