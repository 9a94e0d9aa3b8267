package dev.lora4j.cuda;

import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.util.Locale;
import java.util.SplittableRandom;

/**
 * Times the backward pass of LoRA's up projection on the GPU for each output width of a Mistral-7B layer (1024: k and
 * v; 4096: q, o and down; 14336: gate and up), BF16 activations: the two cuBLASLt products (gradB += dYᵀ·hidden, then
 * dHidden = dY·b) against lora_up.cu's one read of dY ({@code -Dlora4j.cuda.fused-lora-up-backward}, switched here
 * call by call). Prints microseconds per call and GB/s of dY (the bytes the fused op must read once), and the largest
 * difference between the two paths' results relative to the largest value. Each path runs {@code iterations} times
 * back to back between two synchronisations, after 3 untimed calls.
 *
 * <pre>java ... dev.lora4j.cuda.LoraUpBackwardBenchmark [iterations 50] [rows 4096] [rank 16]</pre>
 */
public final class LoraUpBackwardBenchmark {
    public static void main(String[] args) {
        int iterations = args.length > 0 ? Integer.parseInt(args[0]) : 50;
        int rows = args.length > 1 ? Integer.parseInt(args[1]) : 4096;
        int rank = args.length > 2 ? Integer.parseInt(args[2]) : 16;
        try (CudaBackend gpu = CudaBackend.open(CudaProbe.deviceOrdinal(), DType.BF16)) {
            System.out.printf(Locale.ROOT, "%s%nLoRA up-projection backward, BF16 activations, %d rows, rank %d, %d calls each%n",
                    gpu.description(), rows, rank, iterations);
            System.out.printf(Locale.ROOT, "%-12s %-9s %10s %10s %10s%n", "dY", "path", "us/call", "GB/s", "speed-up");
            for (int width : new int[] {1024, 4096, 14336}) run(gpu, rows, width, rank, iterations);
        }
    }

    private static void run(CudaBackend gpu, int rows, int width, int rank, int iterations) {
        try (Tensor dY = gpu.fromFloats(random((long) rows * width, 1, 1), DType.BF16, rows, width);
             Tensor hidden = gpu.fromFloats(random((long) rows * rank, 2, 1), DType.BF16, rows, rank);
             Tensor b = gpu.fromFloats(random((long) width * rank, 3, 0.02), DType.F32, width, rank);
             Tensor gradTwo = gpu.allocate(DType.F32, width, rank); Tensor gradOne = gpu.allocate(DType.F32, width, rank);
             Tensor dhTwo = gpu.allocate(DType.BF16, rows, rank); Tensor dhOne = gpu.allocate(DType.BF16, rows, rank)) {
            double two = time(gpu, false, iterations, () -> gpu.loraUpBackward(dY, hidden, b, gradTwo, dhTwo));
            double one = time(gpu, true, iterations, () -> gpu.loraUpBackward(dY, hidden, b, gradOne, dhOne));
            double bytes = 2.0 * rows * width;
            String shape = rows + "x" + width;
            System.out.printf(Locale.ROOT, "%-12s %-9s %10.1f %10.1f %10s%n", shape, "products", two, bytes / two / 1e3, "1.00x");
            System.out.printf(Locale.ROOT, "%-12s %-9s %10.1f %10.1f %9.2fx%n", shape, "fused", one, bytes / one / 1e3,
                    two / one);
            // Both gradB buffers took the same number of calls from zero: compare them, and the last dHidden.
            System.out.printf(Locale.ROOT, "  fused against products: gradB %.1e, dHidden %.1e%n",
                    relative(gpu.toFloats(gradOne), gpu.toFloats(gradTwo)), relative(gpu.toFloats(dhOne), gpu.toFloats(dhTwo)));
        }
    }

    /** Microseconds per call of {@code op} with the fused path on or off. */
    private static double time(CudaBackend gpu, boolean fused, int iterations, Runnable op) {
        String property = CudaLora.UP_BACKWARD_PROPERTY;
        String before = System.getProperty(property);
        System.setProperty(property, Boolean.toString(fused));
        try {
            for (int i = 0; i < 3; i++) op.run();
            gpu.synchronize();
            long t0 = System.nanoTime();
            for (int i = 0; i < iterations; i++) op.run();
            gpu.synchronize();
            return (System.nanoTime() - t0) / 1e3 / iterations;
        } finally {
            if (before == null) System.clearProperty(property);
            else System.setProperty(property, before);
        }
    }

    private static double relative(float[] a, float[] b) {
        double diff = 0, max = 0;
        for (int i = 0; i < a.length; i++) {
            diff = Math.max(diff, Math.abs(a[i] - b[i]));
            max = Math.max(max, Math.abs(b[i]));
        }
        return max == 0 ? diff : diff / max;
    }

    private static float[] random(long n, long seed, double scale) {
        SplittableRandom rnd = new SplittableRandom(seed);
        float[] v = new float[Math.toIntExact(n)];
        for (int i = 0; i < v.length; i++) v[i] = (float) ((rnd.nextDouble() * 2 - 1) * scale);
        return v;
    }
}
