package dev.lora4j.cuda;

import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.util.Locale;

/**
 * Times the per-step passes of full fine-tuning over F32 weights on the GPU: the AdamW update (reads weight,
 * gradient and both moments, writes weight and moments), zeroing the gradient, and rounding the weight to its BF16
 * working copy; prints microseconds per call and the bandwidth reached (bytes that must move once over the time).
 *
 * <pre>java ... dev.lora4j.cuda.OptimizerStepBenchmark [elements 268435456] [iterations 10]</pre>
 */
public final class OptimizerStepBenchmark {
    public static void main(String[] args) {
        long n = args.length > 0 ? Long.parseLong(args[0]) : 1L << 28;
        int iterations = args.length > 1 ? Integer.parseInt(args[1]) : 10;
        try (CudaBackend gpu = CudaBackend.open(CudaProbe.deviceOrdinal(), DType.BF16);
             Tensor w = gpu.allocate(DType.F32, n); Tensor g = gpu.allocate(DType.F32, n);
             Tensor m = gpu.allocate(DType.F32, n); Tensor v = gpu.allocate(DType.F32, n);
             Tensor copy = gpu.allocate(DType.BF16, n)) {
            for (Tensor t : new Tensor[] {w, g, m, v}) gpu.zero(t);
            System.out.printf(Locale.ROOT, "%s%n%d F32 elements, %d calls each%n", gpu.description(), n, iterations);
            long[] step = {1};
            time(gpu, "adamw", 28 * n, iterations,
                    () -> gpu.adamw(w, g, m, v, 2e-4f, 0.9f, 0.999f, 1e-8f, 0.01f, step[0]++));
            time(gpu, "zero", 4 * n, iterations, () -> gpu.zero(g));
            time(gpu, "copy F32->BF16", 6 * n, iterations, () -> gpu.copy(w, copy));
        }
    }

    private static void time(CudaBackend gpu, String op, long bytes, int iterations, Runnable call) {
        call.run();
        gpu.synchronize();
        long t0 = System.nanoTime();
        for (int i = 0; i < iterations; i++) call.run();
        gpu.synchronize();
        double seconds = (System.nanoTime() - t0) / 1e9 / iterations;
        System.out.printf(Locale.ROOT, "%-16s %10.1f us %10.1f GB/s%n", op, seconds * 1e6, bytes / seconds / 1e9);
    }
}
