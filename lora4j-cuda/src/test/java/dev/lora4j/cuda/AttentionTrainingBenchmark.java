package dev.lora4j.cuda;

import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.util.Locale;
import java.util.SplittableRandom;

/**
 * Times training attention on the GPU as a training step calls it: attentionForward, then attentionBackward, once per
 * packed sequence of a micro-batch (row views of one activation buffer), and prints milliseconds and TFLOP/s. The
 * defaults are a Mistral-7B layer's: 4 sequences of 1024 tokens, 32 query heads over 8 KV heads of 128, causal.
 * FLOPs are counted per attended (query, key) pair and head, as flash-attention reports them: 4·headDim forward
 * (q·k and p·v), 10·headDim backward (the two forward products recomputed or reused, dv, dp, dk and dq: 2.5x).
 *
 * <pre>java ... dev.lora4j.cuda.AttentionTrainingBenchmark [sequences 4] [n 1024] [heads 32] [kvHeads 8]
 *     [headDim 128] [window 0] [iterations 20] [dtype F32|BF16]</pre>
 *
 * F32 activations include their rounding to BF16 copies on every call; training with BF16 activations
 * ({@code -Dlora4j.cuda.activations=bf16}) passes them as they are. {@code -Dlora4j.cuda.attention-ds-budget=0} times
 * the backward pass whose dq recomputes the score gradients instead of reading them back;
 * {@code -Dlora4j.cuda.attention-heads-per-block=1|2} the forward pass with blocks of one query head or of two that
 * share their KV head's tiles.
 */
public final class AttentionTrainingBenchmark {
    public static void main(String[] args) {
        int sequences = arg(args, 0, 4), n = arg(args, 1, 1024), heads = arg(args, 2, 32), kvHeads = arg(args, 3, 8);
        int headDim = arg(args, 4, 128), window = arg(args, 5, 0), iterations = arg(args, 6, 20);
        DType type = args.length > 7 ? DType.valueOf(args[7]) : DType.F32;
        long rows = (long) sequences * n, qw = (long) heads * headDim, kw = (long) kvHeads * headDim;
        long pairs = 0;
        for (int i = 0; i < n; i++) pairs += window > 0 ? Math.min(i + 1, window) : i + 1;
        double forwardFlops = 4.0 * headDim * pairs * heads * sequences;
        double backwardFlops = 2.5 * forwardFlops;

        try (CudaBackend gpu = CudaBackend.open();
             Tensor q = gpu.fromFloats(random(rows * qw, 1), type, rows, qw);
             Tensor k = gpu.fromFloats(random(rows * kw, 2), type, rows, kw);
             Tensor v = gpu.fromFloats(random(rows * kw, 3), type, rows, kw);
             Tensor dOut = gpu.fromFloats(random(rows * qw, 4), type, rows, qw);
             Tensor out = gpu.allocate(type, rows, qw); Tensor lse = gpu.allocate(DType.F32, rows, heads);
             Tensor dq = gpu.allocate(type, rows, qw); Tensor dk = gpu.allocate(type, rows, kw);
             Tensor dv = gpu.allocate(type, rows, kw)) {
            System.out.printf(Locale.ROOT, "%s%nattention: %d x %d tokens, %d/%d heads of %d, window %d, %s activations, "
                            + "%s kernels%n", gpu.description(), sequences, n, heads, kvHeads, headDim, window, type,
                    gpu.attentionOnTensorCores(headDim) ? "tensor-core (BF16 operands)" : "FP32");
            if (gpu.attentionOnTensorCores(headDim)) {
                System.out.printf(Locale.ROOT, "forward: %d query head(s) per block%n",
                        FlashAttention.headsPerBlock(heads, kvHeads, FlashAttention.headsPerBlockSetting()));
                System.out.printf(Locale.ROOT, "backward: %s%n", FlashAttention.dqPlan(n, heads, window));
            }
            double forward = Double.MAX_VALUE, backward = Double.MAX_VALUE, total = 0;
            for (int it = -3; it < iterations; it++) { // 3 rounds of warm-up: kernel loading, allocator, clocks
                gpu.synchronize();
                long t0 = System.nanoTime();
                for (int s = 0; s < sequences; s++) {
                    long r = (long) s * n;
                    gpu.attentionForward(q.rows(r, n), k.rows(r, n), v.rows(r, n), heads, kvHeads, headDim, window,
                            out.rows(r, n), lse.rows(r, n));
                }
                gpu.synchronize();
                long t1 = System.nanoTime();
                for (int s = 0; s < sequences; s++) {
                    long r = (long) s * n;
                    gpu.attentionBackward(q.rows(r, n), k.rows(r, n), v.rows(r, n), out.rows(r, n), lse.rows(r, n),
                            dOut.rows(r, n), heads, kvHeads, headDim, window, dq.rows(r, n), dk.rows(r, n),
                            dv.rows(r, n));
                }
                gpu.synchronize();
                long t2 = System.nanoTime();
                if (it < 0) continue;
                forward = Math.min(forward, (t1 - t0) / 1e6);
                backward = Math.min(backward, (t2 - t1) / 1e6);
                total += (t2 - t0) / 1e6;
            }
            for (Tensor t : new Tensor[] {out, dq, dk, dv}) {
                for (float f : gpu.toFloats(t)) {
                    if (!Float.isFinite(f)) throw new IllegalStateException("a non-finite result: the kernels are broken");
                }
            }
            double mean = total / iterations;
            System.out.printf(Locale.ROOT, "forward  (best of %d): %8.3f ms  %7.1f TFLOP/s%n", iterations, forward,
                    forwardFlops / forward / 1e9);
            System.out.printf(Locale.ROOT, "backward (best of %d): %8.3f ms  %7.1f TFLOP/s%n", iterations, backward,
                    backwardFlops / backward / 1e9);
            System.out.printf(Locale.ROOT, "forward + backward (best): %8.3f ms  %7.1f TFLOP/s; mean %.3f ms%n",
                    forward + backward, (forwardFlops + backwardFlops) / (forward + backward) / 1e9, mean);
            System.out.printf(Locale.ROOT, "peak device memory in use: %.1f MiB%n", gpu.peakMemoryInUse() / 1048576.0);
        }
    }

    private static int arg(String[] args, int i, int otherwise) {
        return args.length > i ? Integer.parseInt(args[i]) : otherwise;
    }

    private static float[] random(long count, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        float[] v = new float[Math.toIntExact(count)];
        for (int i = 0; i < v.length; i++) v[i] = (float) (r.nextDouble() * 2 - 1);
        return v;
    }
}
