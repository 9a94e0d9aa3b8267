package dev.lora4j.bench;

import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

import java.util.concurrent.TimeUnit;

/**
 * The CPU training ops that dominate a LoRA step, on a batch of n tokens:
 * <ul>
 *   <li>{@code backwardInput}: dX = dY · W through a frozen k×k weight (every projection of every layer);</li>
 *   <li>{@code backwardWeight}: dW = dYᵀ · X for a full k×k weight;</li>
 *   <li>{@code loraBackwardWeightA} / {@code loraBackwardWeightB}: the gradients of a rank-16 adapter's A
 *       ([16, k]) and B ([k, 16]);</li>
 *   <li>{@code attentionForward} / {@code attentionBackward}: one sequence of n tokens, 8 query heads over 2 KV
 *       heads of 128;</li>
 *   <li>{@code crossEntropy}: n rows of a 32000-token vocabulary.</li>
 * </ul>
 * Matmul forms are 2·n·k·m flops; attention counts 4·headDim flops per attended query-key pair and head forward,
 * 10·headDim backward (the scores again, dP, dV, dQ, dK).
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-Xmx4g"})
@State(Scope.Benchmark)
public class TrainingBenchmark {
    @Param({"256"}) public int n;
    @Param({"2048"}) public int k;
    @Param({"BF16"}) public String weights;

    static final int RANK = 16, HEADS = 8, KV_HEADS = 2, HEAD_DIM = 128, VOCAB = 32000;

    CpuBackend backend;
    Tensor x, w, dy, dx, dw, loraDyA, loraDwA, loraXb, loraDwB;
    Tensor q, kk, v, out, lse, dOut, dq, dk, dv, logits, logitsCopy, losses;
    int[] targets;

    @Setup(Level.Trial)
    public void setUp() {
        backend = new CpuBackend();
        x = BenchTensors.random(backend, DType.F32, 1, 1f, n, k);
        w = BenchTensors.random(backend, DType.valueOf(weights), 2, 0.02f, k, k);
        dy = BenchTensors.random(backend, DType.F32, 3, 1f, n, k);
        dx = backend.allocate(DType.F32, n, k);
        dw = backend.allocate(DType.F32, k, k);
        loraDyA = BenchTensors.random(backend, DType.F32, 4, 1f, n, RANK);
        loraDwA = backend.allocate(DType.F32, RANK, k);
        loraXb = BenchTensors.random(backend, DType.F32, 5, 1f, n, RANK);
        loraDwB = backend.allocate(DType.F32, k, RANK);
        q = BenchTensors.random(backend, DType.F32, 6, 1f, n, HEADS * HEAD_DIM);
        kk = BenchTensors.random(backend, DType.F32, 7, 1f, n, KV_HEADS * HEAD_DIM);
        v = BenchTensors.random(backend, DType.F32, 8, 1f, n, KV_HEADS * HEAD_DIM);
        dOut = BenchTensors.random(backend, DType.F32, 9, 1f, n, HEADS * HEAD_DIM);
        out = backend.allocate(DType.F32, n, HEADS * HEAD_DIM);
        lse = backend.allocate(DType.F32, n, HEADS);
        dq = backend.allocate(DType.F32, n, HEADS * HEAD_DIM);
        dk = backend.allocate(DType.F32, n, KV_HEADS * HEAD_DIM);
        dv = backend.allocate(DType.F32, n, KV_HEADS * HEAD_DIM);
        backend.attentionForward(q, kk, v, HEADS, KV_HEADS, HEAD_DIM, 0, out, lse);
        logits = BenchTensors.random(backend, DType.F32, 10, 5f, n, VOCAB);
        logitsCopy = backend.allocate(DType.F32, n, VOCAB);
        losses = backend.allocate(DType.F32, n);
        targets = new int[n];
        for (int i = 0; i < n; i++) targets[i] = (i * 7919) % VOCAB;
    }

    @TearDown(Level.Trial)
    public void tearDown() { backend.close(); }

    @Benchmark
    public Tensor backwardInput() {
        backend.matmulBackwardInput(dy, w, dx, false);
        return dx;
    }

    @Benchmark
    public Tensor backwardWeight() {
        backend.matmulBackwardWeight(dy, x, dw, false);
        return dw;
    }

    @Benchmark
    public Tensor loraBackwardWeightA() {
        backend.matmulBackwardWeight(loraDyA, x, loraDwA, true);
        return loraDwA;
    }

    @Benchmark
    public Tensor loraBackwardWeightB() {
        backend.matmulBackwardWeight(dy, loraXb, loraDwB, true);
        return loraDwB;
    }

    @Benchmark
    public Tensor attentionForward() {
        backend.attentionForward(q, kk, v, HEADS, KV_HEADS, HEAD_DIM, 0, out, lse);
        return out;
    }

    @Benchmark
    public Tensor attentionBackward() {
        backend.attentionBackward(q, kk, v, out, lse, dOut, HEADS, KV_HEADS, HEAD_DIM, 0, dq, dk, dv);
        return dq;
    }

    /** Includes restoring the logits (a copy of n·32000 floats), since the op overwrites them. */
    @Benchmark
    public Tensor crossEntropy() {
        backend.copy(logits, logitsCopy);
        backend.crossEntropy(logitsCopy, targets, 1f / n, losses);
        return losses;
    }

    /** Flops of one call, for GFLOP/s; 0 when the benchmark is not counted in flops. */
    static double flops(String benchmark, int n, int k) {
        double pairs = (double) n * (n + 1) / 2 * HEADS;
        return switch (benchmark) {
            case "backwardInput", "backwardWeight" -> 2.0 * n * k * k;
            case "loraBackwardWeightA", "loraBackwardWeightB" -> 2.0 * n * k * RANK;
            case "attentionForward" -> 4.0 * HEAD_DIM * pairs;
            case "attentionBackward" -> 10.0 * HEAD_DIM * pairs;
            default -> 0;
        };
    }
}
