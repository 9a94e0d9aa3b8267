package dev.lora4j.cuda;

import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.util.Locale;
import java.util.SplittableRandom;

/**
 * Times each memory-bound op of a training step on the GPU, on activations of a Mistral-7B layer (4096 x 4096, the
 * hidden size, and 4096 x 14336, the MLP's), and prints microseconds per call and the bandwidth it reached: the bytes
 * the op must read and write once, divided by its time. Each op runs back to back {@code iterations} times between two
 * synchronisations, after as many untimed calls (at least 10), so that the host side of each call (argument checks,
 * uploads of positions and ids) is compiled by then and its first calls' costs are not counted.
 *
 * <pre>java ... dev.lora4j.cuda.ElementwiseBenchmark [dtype BF16|F32] [iterations 50] [rows 4096]</pre>
 */
public final class ElementwiseBenchmark {
    private static final int HIDDEN = 4096, INTERMEDIATE = 14336, HEAD_DIM = 128;
    /** Rows of the embedding table: enough for scattered reads, small enough for the host array it is made from. */
    private static final int VOCAB = 8192;

    public static void main(String[] args) {
        DType type = args.length > 0 ? DType.valueOf(args[0]) : DType.BF16;
        int iterations = args.length > 1 ? Integer.parseInt(args[1]) : 50;
        int rows = args.length > 2 ? Integer.parseInt(args[2]) : 4096;
        try (CudaBackend gpu = CudaBackend.open(CudaProbe.deviceOrdinal(), type)) {
            System.out.printf(Locale.ROOT, "%s%nelement-wise ops, %s activations, %d rows, %d calls each%n",
                    gpu.description(), type, rows, iterations);
            System.out.printf(Locale.ROOT, "%-18s %-14s %10s %10s%n", "op", "shape", "us/call", "GB/s");
            for (int width : new int[] {HIDDEN, INTERMEDIATE}) run(gpu, type, rows, width, iterations);
            crossEntropy(gpu, iterations);
        }
    }

    private static void run(CudaBackend gpu, DType type, int rows, int width, int iterations) {
        long n = (long) rows * width;
        long e = type.bytesFor(1);
        String shape = rows + "x" + width;
        int[] positions = new int[rows];
        for (int i = 0; i < rows; i++) positions[i] = i % 1024;
        int[] ids = new int[rows];
        SplittableRandom r = new SplittableRandom(7);
        for (int i = 0; i < rows; i++) ids[i] = r.nextInt(VOCAB);
        float[] invFreq = new float[HEAD_DIM / 2];
        for (int i = 0; i < invFreq.length; i++) invFreq[i] = (float) Math.pow(10000.0, -2.0 * i / HEAD_DIM);
        try (Tensor a = gpu.fromFloats(random(n, 1), type, rows, width);
             Tensor b = gpu.fromFloats(random(n, 2), type, rows, width);
             Tensor c = gpu.fromFloats(random(n, 3), type, rows, width);
             Tensor d = gpu.allocate(type, rows, width); Tensor f = gpu.allocate(type, rows, width);
             Tensor wide = gpu.allocate(type == DType.F32 ? DType.BF16 : DType.F32, rows, width);
             Tensor weight = gpu.fromFloats(random(width, 4), DType.BF16, width);
             Tensor dWeight = gpu.allocate(DType.F32, width);
             Tensor freq = gpu.fromFloats(invFreq, DType.F32, invFreq.length);
             Tensor table = gpu.fromFloats(random((long) VOCAB * width, 5), DType.BF16, VOCAB, width)) {
            time(gpu, "add", shape, 3 * n * e, iterations, () -> gpu.add(d, a));
            time(gpu, "scale", shape, 2 * n * e, iterations, () -> gpu.scale(d, 1.0000001f));
            time(gpu, "dropout", shape, 2 * n * e, iterations, () -> gpu.dropout(a, 0.05f, 1234, d));
            time(gpu, "swiglu", shape, 3 * n * e, iterations, () -> gpu.swiglu(a, b, d));
            time(gpu, "swigluBackward", shape, 5 * n * e, iterations, () -> gpu.swigluBackward(a, b, c, d, f));
            time(gpu, "rmsNorm", shape, 2 * n * e + 2L * width, iterations, () -> gpu.rmsNorm(a, weight, 1e-5f, d));
            time(gpu, "rmsNormBackward", shape, 3 * n * e + 2L * width, iterations,
                    () -> gpu.rmsNormBackward(a, weight, 1e-5f, b, d, null));
            // Training's form: the input gradient added into the residual stream's (dX read and written).
            time(gpu, "rmsNormBackward+=", shape, 4 * n * e + 2L * width, iterations,
                    () -> gpu.rmsNormBackward(a, weight, 1e-5f, b, d, null, true));
            // Full fine-tuning's form, which also adds the weight's gradient (the same bytes at least).
            time(gpu, "rmsNormBackward+dW", shape, 3 * n * e + 2L * width, iterations,
                    () -> gpu.rmsNormBackward(a, weight, 1e-5f, b, d, dWeight));
            // And its training form: both, the input gradient added into the residual stream's.
            time(gpu, "rmsNormBackward+=dW", shape, 4 * n * e + 2L * width, iterations,
                    () -> gpu.rmsNormBackward(a, weight, 1e-5f, b, d, dWeight, true));
            time(gpu, "rope", shape, 2 * n * e, iterations, () -> gpu.rope(d, HEAD_DIM, positions, freq));
            time(gpu, "ropeBackward", shape, 2 * n * e, iterations, () -> gpu.ropeBackward(d, HEAD_DIM, positions, freq));
            time(gpu, "embedding", shape, n * 2 + n * e, iterations, () -> gpu.embedding(table, ids, d));
            time(gpu, "copy->" + wide.dtype(), shape, n * e + wide.dtype().bytesFor(n), iterations, () -> gpu.copy(a, wide));
            time(gpu, "copy<-" + wide.dtype(), shape, n * e + wide.dtype().bytesFor(n), iterations, () -> gpu.copy(wide, d));
        }
    }

    /**
     * The loss over one chunk of F32 logits as training computes it: 1,048 rows of a 32,000-token vocabulary (128 MiB,
     * held in registers) and 261 of 128,256 (streamed); read and written in place once at least.
     */
    private static void crossEntropy(CudaBackend gpu, int iterations) {
        for (int[] shape : new int[][] {{1048, 32000}, {261, 128256}}) {
            int rows = shape[0], vocab = shape[1];
            int[] targets = new int[rows];
            for (int i = 0; i < rows; i++) targets[i] = (i * 7919) % vocab;
            try (Tensor logits = gpu.fromFloats(random((long) rows * vocab, 6), DType.F32, rows, vocab);
                 Tensor losses = gpu.allocate(DType.F32, rows)) {
                time(gpu, "crossEntropy", rows + "x" + vocab, 8L * rows * vocab, iterations,
                        () -> gpu.crossEntropy(logits, targets, 1e-4f, losses));
            }
        }
    }

    private static void time(CudaBackend gpu, String op, String shape, long bytes, int iterations, Runnable call) {
        for (int i = 0; i < Math.max(10, iterations); i++) call.run();
        gpu.synchronize();
        long t0 = System.nanoTime();
        for (int i = 0; i < iterations; i++) call.run();
        gpu.synchronize();
        double seconds = (System.nanoTime() - t0) / 1e9 / iterations;
        System.out.printf(Locale.ROOT, "%-18s %-14s %10.1f %10.1f%n", op, shape, seconds * 1e6, bytes / seconds / 1e9);
    }

    private static float[] random(long n, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        float[] v = new float[Math.toIntExact(n)];
        for (int i = 0; i < v.length; i++) v[i] = (float) (r.nextDouble() * 2 - 1);
        return v;
    }
}
