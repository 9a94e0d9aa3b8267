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

/** {@code CpuBackend.rmsNorm} over n rows of width d: memory-bound, reported as GB/s read and written. */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-Xmx2g"})
@State(Scope.Benchmark)
public class RmsNormBenchmark {
    @Param({"1", "128"}) public int n;
    @Param({"4096"}) public int d;

    CpuBackend backend;
    Tensor x, weight, out;

    @Setup(Level.Trial)
    public void setUp() {
        backend = new CpuBackend();
        x = BenchTensors.random(backend, DType.F32, 1, 1f, n, d);
        weight = BenchTensors.random(backend, DType.F32, 2, 1f, d);
        out = backend.allocate(DType.F32, n, d);
    }

    @TearDown(Level.Trial)
    public void tearDown() { backend.close(); }

    @Benchmark
    public Tensor rmsNorm() {
        backend.rmsNorm(x, weight, 1e-5f, out);
        return out;
    }
}
