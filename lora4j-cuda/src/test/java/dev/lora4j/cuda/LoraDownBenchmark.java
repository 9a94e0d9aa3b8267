package dev.lora4j.cuda;

import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.util.Locale;
import java.util.SplittableRandom;

/**
 * Times LoRA's A side on the GPU, the way TrainableLlama ran it before the fused ops and through them, on activations
 * of a Mistral-7B layer (4096 tokens x 4096, the attention projections' input, and x 14336, down_proj's):
 * <ul>
 *   <li>forward, composed: dropout(x) into a scratch tensor, hidden = scratch·Aᵀ (cuBLASLt), hidden *= scaling;
 *       fused: {@code loraDown};</li>
 *   <li>backward, composed: dHidden *= scaling, dropout(x) again, gradA += dHiddenᵀ·scratch, t = dHidden·A,
 *       dropout(t), dX += t; fused: {@code loraDownBackward} (dX accumulated, as the model does).</li>
 * </ul>
 * Prints microseconds per call, and GB/s: the bytes the fused op must move once (forward: x; backward: x, and dX read
 * and written), divided by the time, so that both paths are measured against the same work. Each path runs back to
 * back {@code iterations} times between two synchronisations, after 3 untimed calls; the results of the two paths are
 * compared once (largest difference relative to the largest value). The composed path also needs the scratch tensor,
 * as large as x.
 *
 * <pre>java ... dev.lora4j.cuda.LoraDownBenchmark [dtype BF16|F32] [iterations 50] [rows 4096] [rank 16] [p 0.05,0]</pre>
 */
public final class LoraDownBenchmark {
    private static final int HIDDEN = 4096, INTERMEDIATE = 14336;
    private static final float SCALING = 2f;
    private static final long SEED = 1234;

    public static void main(String[] args) {
        DType type = args.length > 0 ? DType.valueOf(args[0]) : DType.BF16;
        int iterations = args.length > 1 ? Integer.parseInt(args[1]) : 50;
        int rows = args.length > 2 ? Integer.parseInt(args[2]) : 4096;
        int rank = args.length > 3 ? Integer.parseInt(args[3]) : 16;
        String[] ps = (args.length > 4 ? args[4] : "0.05,0").split(",");
        try (CudaBackend gpu = CudaBackend.open(CudaProbe.deviceOrdinal(), type)) {
            System.out.printf(Locale.ROOT, "%s%nLoRA A side, %s activations, %d rows, rank %d, %d calls each%n",
                    gpu.description(), type, rows, rank, iterations);
            System.out.printf(Locale.ROOT, "%-9s %-12s %-6s %-10s %10s %10s %10s%n", "pass", "shape", "p", "path", "us/call",
                    "GB/s", "speed-up");
            for (int width : new int[] {HIDDEN, INTERMEDIATE}) {
                for (String p : ps) run(gpu, type, rows, width, rank, Float.parseFloat(p.strip()), iterations);
            }
        }
    }

    private static void run(CudaBackend gpu, DType type, int rows, int width, int rank, float p, int iterations) {
        long n = (long) rows * width, e = type.bytesFor(1);
        String shape = rows + "x" + width;
        try (Tensor x = gpu.fromFloats(random(n, 1), type, rows, width);
             Tensor a = gpu.fromFloats(random((long) rank * width, 2, 0.02), DType.F32, rank, width);
             Tensor dHidden = gpu.fromFloats(random((long) rows * rank, 3), type, rows, rank);
             Tensor scaled = gpu.allocate(type, rows, rank);
             Tensor hiddenOld = gpu.allocate(type, rows, rank); Tensor hiddenNew = gpu.allocate(type, rows, rank);
             Tensor gradOld = gpu.allocate(DType.F32, rank, width); Tensor gradNew = gpu.allocate(DType.F32, rank, width);
             Tensor dxOld = gpu.fromFloats(random(n, 4), type, rows, width);
             Tensor dxNew = gpu.fromFloats(random(n, 4), type, rows, width);
             Tensor scratch = gpu.allocate(type, rows, width)) {
            Runnable forwardOld = () -> {
                Tensor src = x;
                if (p > 0) {
                    gpu.dropout(x, p, SEED, scratch);
                    src = scratch;
                }
                gpu.matmul(src, a, hiddenOld);
                gpu.scale(hiddenOld, SCALING);
            };
            Runnable forwardNew = () -> gpu.loraDown(x, a, SCALING, p, SEED, hiddenNew);
            Runnable backwardOld = () -> {
                gpu.copy(dHidden, scaled);
                gpu.scale(scaled, SCALING);
                if (p == 0) {
                    gpu.matmulBackwardWeight(scaled, x, gradOld, true);
                    gpu.matmulBackwardInput(scaled, a, dxOld, true);
                    return;
                }
                gpu.dropout(x, p, SEED, scratch);
                gpu.matmulBackwardWeight(scaled, scratch, gradOld, true);
                gpu.matmulBackwardInput(scaled, a, scratch, false);
                gpu.dropout(scratch, p, SEED, scratch);
                gpu.add(dxOld, scratch);
            };
            Runnable backwardNew = () -> gpu.loraDownBackward(x, a, SCALING, p, SEED, dHidden, gradNew, dxNew, true);

            forwardOld.run();
            forwardNew.run();
            backwardOld.run();
            backwardNew.run();
            String agree = String.format(Locale.ROOT, "composed vs fused after one call: hidden %.1e, gradA %.1e, dX %.1e",
                    relativeDifference(gpu, hiddenOld, hiddenNew), relativeDifference(gpu, gradOld, gradNew),
                    relativeDifference(gpu, dxOld, dxNew));

            String ps = String.format(Locale.ROOT, "%.2f", p);
            double fOld = time(gpu, forwardOld, iterations), fNew = time(gpu, forwardNew, iterations);
            print("forward", shape, ps, "composed", fOld, n * e, 1);
            print("forward", shape, ps, "fused", fNew, n * e, fOld / fNew);
            double bOld = time(gpu, backwardOld, iterations), bNew = time(gpu, backwardNew, iterations);
            print("backward", shape, ps, "composed", bOld, 3 * n * e, 1);
            print("backward", shape, ps, "fused", bNew, 3 * n * e, bOld / bNew);
            System.out.printf(Locale.ROOT, "  %s; the composed path's scratch: %.1f MiB%n", agree,
                    scratch.byteSize() / (double) (1 << 20));
        }
    }

    private static void print(String pass, String shape, String p, String path, double seconds, long bytes, double speedUp) {
        System.out.printf(Locale.ROOT, "%-9s %-12s %-6s %-10s %10.1f %10.1f %9.2fx%n", pass, shape, p, path, seconds * 1e6,
                bytes / seconds / 1e9, speedUp);
    }

    /** Seconds per call. */
    private static double time(CudaBackend gpu, Runnable call, int iterations) {
        for (int i = 0; i < 3; i++) call.run();
        gpu.synchronize();
        long t0 = System.nanoTime();
        for (int i = 0; i < iterations; i++) call.run();
        gpu.synchronize();
        return (System.nanoTime() - t0) / 1e9 / iterations;
    }

    /** max |a - b| / max |a|. */
    private static double relativeDifference(CudaBackend gpu, Tensor a, Tensor b) {
        float[] x = gpu.toFloats(a), y = gpu.toFloats(b);
        double diff = 0, scale = 0;
        for (int i = 0; i < x.length; i++) {
            diff = Math.max(diff, Math.abs((double) x[i] - y[i]));
            scale = Math.max(scale, Math.abs(x[i]));
        }
        return diff / Math.max(scale, Double.MIN_NORMAL);
    }

    private static float[] random(long n, long seed) {
        return random(n, seed, 1);
    }

    private static float[] random(long n, long seed, double amplitude) {
        SplittableRandom r = new SplittableRandom(seed);
        float[] v = new float[Math.toIntExact(n)];
        for (int i = 0; i < v.length; i++) v[i] = (float) ((r.nextDouble() * 2 - 1) * amplitude);
        return v;
    }
}
