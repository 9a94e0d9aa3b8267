package dev.lora4j.train.bench;

import dev.lora4j.backend.Backend;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Locale;
import java.util.stream.IntStream;

/**
 * The speed of one large product with a BF16 weight through {@link Backend#matmul}, the op every projection of the
 * model runs: the ceiling model FLOPs utilisation is measured against. The input is in the backend's activation
 * dtype, so where that is F32 the figure includes rounding the input to BF16 for the tensor cores, as every
 * projection of a training step does.
 *
 * @param size          the product is [size, size] · [size, size]ᵀ
 * @param flopsPerSecond 2·size³ per product over the fastest of three timed rounds
 */
public record GemmPeak(int size, DType weightType, DType inputType, int productsPerRound, double secondsPerProduct,
                       double flopsPerSecond) {

    /** The size measured on a GPU: large enough that the tensor cores run at their sustained rate. */
    public static final int GPU_SIZE = 8192;
    /** The size measured on a CPU: enough work to time, little enough to take a second or two. */
    public static final int CPU_SIZE = 1024;

    public double teraflopsPerSecond() {
        return flopsPerSecond / 1e12;
    }

    /** "812.3 TFLOP/s", or on a CPU "95.2 GFLOP/s". */
    public String rate() {
        return flopsPerSecond >= 1e12 ? String.format(Locale.ROOT, "%.1f TFLOP/s", flopsPerSecond / 1e12)
                : String.format(Locale.ROOT, "%.1f GFLOP/s", flopsPerSecond / 1e9);
    }

    /** Measures products of two random [size, size] matrices, the weight in BF16, on the backend. */
    public static GemmPeak measure(Backend backend, int size) {
        if (size < 16) throw new IllegalArgumentException("the GEMM size must be at least 16, got " + size);
        DType input = backend.activationType();
        long elements = (long) size * size;
        try (Tensor x = random(backend, elements, input, size, 1);
             Tensor w = random(backend, elements, DType.BF16, size, 2);
             Tensor out = backend.allocate(input, size, size)) {
            // A second of products first: the GPU reaches its sustained clocks, the CPU backend's kernels get compiled.
            long t0 = System.nanoTime();
            int warm = 0;
            do {
                backend.matmul(x, w, out);
                if (++warm % 8 == 0 || warm < 8) backend.synchronize();
            } while (System.nanoTime() - t0 < 1_000_000_000L);
            backend.synchronize();
            double once = Math.max(1e-6, (System.nanoTime() - t0) / 1e9 / warm);
            // Rounds of about a quarter of a second: long enough that launch and timer overheads vanish.
            int reps = (int) Math.max(1, Math.min(1000, Math.round(0.25 / once)));
            double best = Double.MAX_VALUE;
            for (int round = 0; round < 3; round++) {
                long start = System.nanoTime();
                for (int i = 0; i < reps; i++) backend.matmul(x, w, out);
                backend.synchronize();
                best = Math.min(best, (System.nanoTime() - start) / 1e9 / reps);
            }
            return new GemmPeak(size, DType.BF16, input, reps, best, 2.0 * size * (double) size * size / best);
        }
    }

    /** A tensor of uniform values in [-1, 1), from a seeded hash of the element index (fast on many cores). */
    private static Tensor random(Backend backend, long elements, DType dtype, int size, long seed) {
        try (Arena arena = Arena.ofShared()) { // shared: the rows are filled by many threads
            MemorySegment host = arena.allocate(ValueLayout.JAVA_FLOAT, elements);
            IntStream.range(0, size).parallel().forEach(row -> {
                long base = (long) row * size;
                for (int j = 0; j < size; j++) {
                    long z = (base + j + 1) * 0x9E3779B97F4A7C15L + seed;
                    z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
                    z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
                    z ^= z >>> 31;
                    host.setAtIndex(ValueLayout.JAVA_FLOAT, base + j, ((z >>> 40) * 0x1.0p-24f) * 2f - 1f);
                }
            });
            return backend.upload(host, DType.F32, dtype, size, size);
        }
    }
}
