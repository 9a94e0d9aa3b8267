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
 * {@code CpuBackend.attention} with Llama-3-8B's head layout (32 query heads, 8 KV heads, head dim 128): one
 * decode step at the end of a 1024-token context, and a 128-token prefill from position 0. Reported as GFLOP/s
 * (4·headDim flops per attended query-key pair and head: the dot product and the weighted sum).
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-Xmx2g"})
@State(Scope.Benchmark)
public class AttentionBenchmark {
    /** "decode": one query at position context-1; "prefill": context queries from position 0. */
    @Param({"decode", "prefill"}) public String phase;
    @Param({"1024"}) public int context;
    @Param({"32"}) public int heads;
    @Param({"8"}) public int kvHeads;
    @Param({"128"}) public int headDim;

    CpuBackend backend;
    Tensor q, k, v, out;
    int startPos;

    @Setup(Level.Trial)
    public void setUp() {
        backend = new CpuBackend();
        int n = phase.equals("decode") ? 1 : context;
        startPos = context - n;
        q = BenchTensors.random(backend, DType.F32, 1, 1f, n, (long) heads * headDim);
        k = BenchTensors.random(backend, DType.F32, 2, 1f, context, (long) kvHeads * headDim);
        v = BenchTensors.random(backend, DType.F32, 3, 1f, context, (long) kvHeads * headDim);
        out = backend.allocate(DType.F32, n, (long) heads * headDim);
    }

    @TearDown(Level.Trial)
    public void tearDown() { backend.close(); }

    @Benchmark
    public Tensor attention() {
        backend.attention(q, k, v, startPos, heads, kvHeads, headDim, 0, out);
        return out;
    }

    /** Query-key pairs a causal pass attends to. */
    static long pairs(String phase, int context) {
        return phase.equals("decode") ? context : (long) context * (context + 1) / 2;
    }
}
