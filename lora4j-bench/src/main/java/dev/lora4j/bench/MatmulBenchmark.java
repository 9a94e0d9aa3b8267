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
 * {@code CpuBackend.matmul} in its two regimes. Decode (one token) streams every weight once and is bound by
 * memory bandwidth: {@link BenchMain} reports GB/s of weight bytes. Prefill (a prompt of n tokens) reuses each
 * weight across n rows and is bound by arithmetic: reported as GFLOP/s (2·n·k·m per call).
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-Xmx6g"})
public class MatmulBenchmark {

    /**
     * One token through a ring of distinct weight matrices of {@code ringMegabytes} in all: far more than the
     * last-level cache, so that, as in a real model whose layers are read in turn, every weight comes from DRAM.
     * With {@code ringMegabytes=0} the same matrix is used every time and may be served from the cache.
     */
    @State(Scope.Benchmark)
    public static class Decode {
        @Param({"BF16", "F32", "F16"}) public String weights;
        @Param({"4096"}) public int k;
        @Param({"4096"}) public int m;
        @Param({"1024"}) public int ringMegabytes;

        CpuBackend backend;
        Tensor x, out;
        Tensor[] ring;
        int next;

        @Setup(Level.Trial)
        public void setUp() {
            backend = new CpuBackend();
            x = BenchTensors.random(backend, DType.F32, 1, 1f, 1, k);
            DType wt = DType.valueOf(weights);
            Tensor first = BenchTensors.random(backend, wt, 2, 0.02f, m, k);
            int count = (int) Math.max(1, ((long) ringMegabytes << 20) / first.byteSize());
            ring = new Tensor[count];
            ring[0] = first;
            for (int i = 1; i < count; i++) {
                ring[i] = backend.allocate(wt, m, k);
                backend.copy(first, ring[i]);
            }
            out = backend.allocate(DType.F32, 1, m);
        }

        @TearDown(Level.Trial)
        public void tearDown() { backend.close(); }
    }

    @State(Scope.Benchmark)
    public static class Prefill {
        @Param({"64", "128"}) public int n;
        @Param({"BF16", "F32"}) public String weights;
        @Param({"2048"}) public int k;
        @Param({"2048"}) public int m;

        CpuBackend backend;
        Tensor x, w, out;

        @Setup(Level.Trial)
        public void setUp() {
            backend = new CpuBackend();
            x = BenchTensors.random(backend, DType.F32, 1, 1f, n, k);
            w = BenchTensors.random(backend, DType.valueOf(weights), 2, 0.02f, m, k);
            out = backend.allocate(DType.F32, n, m);
        }

        @TearDown(Level.Trial)
        public void tearDown() { backend.close(); }
    }

    @Benchmark
    public Tensor decode(Decode s) {
        Tensor w = s.ring[s.next];
        s.next = (s.next + 1) % s.ring.length;
        s.backend.matmul(s.x, w, s.out);
        return s.out;
    }

    @Benchmark
    public Tensor prefill(Prefill s) {
        s.backend.matmul(s.x, s.w, s.out);
        return s.out;
    }
}
