package dev.lora4j.bench;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;
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

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

/**
 * What this machine can do at best from Java, on all its cores, so the kernel figures have a ceiling to be read
 * against: {@code readBandwidth} sums a segment far larger than the caches, 1 GiB (GB/s read from DRAM), {@code fmaThroughput}
 * keeps independent vector FMA chains busy in registers (GFLOP/s).
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-Xmx1g"})
public class MachineCeilingBenchmark {
    private static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    /** FMA iterations per thread of {@code fmaThroughput}; each does 12 vector FMAs. */
    static final int FMA_ITERATIONS = 2_000_000;
    static final int FMA_CHAINS = 12;

    /** One worker per processor, as the CPU backend has. */
    @State(Scope.Benchmark)
    public static class Cores {
        int threads;
        ForkJoinPool pool;

        @Setup(Level.Trial)
        public void setUp() {
            threads = Runtime.getRuntime().availableProcessors();
            pool = new ForkJoinPool(threads);
        }

        @TearDown(Level.Trial)
        public void tearDown() { pool.shutdown(); }
    }

    @State(Scope.Benchmark)
    public static class Memory {
        @Param({"1024"}) public int megabytes;

        Arena arena;
        MemorySegment segment;

        @Setup(Level.Trial)
        public void setUp() {
            arena = Arena.ofShared();
            segment = arena.allocate((long) megabytes << 20, 64);
            segment.fill((byte) 0x3c); // touches every page; the floats are small and finite
        }

        @TearDown(Level.Trial)
        public void tearDown() { arena.close(); }
    }

    @Benchmark
    public float readBandwidth(Cores cores, Memory memory) throws Exception {
        long slice = memory.segment.byteSize() / cores.threads;
        List<Callable<Float>> parts = new ArrayList<>();
        for (int t = 0; t < cores.threads; t++) {
            MemorySegment part = memory.segment.asSlice(t * slice, slice);
            parts.add(() -> sum(part));
        }
        return joinSum(cores.pool, parts);
    }

    @Benchmark
    public float fmaThroughput(Cores cores) throws Exception {
        List<Callable<Float>> parts = new ArrayList<>();
        for (int t = 0; t < cores.threads; t++) {
            float seed = 1e-3f * (t + 1);
            parts.add(() -> fmaChains(seed));
        }
        return joinSum(cores.pool, parts);
    }

    /** Floating-point operations of one {@code fmaThroughput} call on this many threads. */
    static double fmaFlops(int threads) {
        return 2.0 * S.length() * FMA_CHAINS * (double) FMA_ITERATIONS * threads;
    }

    private static float joinSum(ForkJoinPool pool, List<Callable<Float>> parts) throws InterruptedException, ExecutionException {
        float total = 0;
        for (Future<Float> f : pool.invokeAll(parts)) total += f.get();
        return total;
    }

    private static float sum(MemorySegment part) {
        FloatVector a0 = FloatVector.zero(S), a1 = a0, a2 = a0, a3 = a0;
        long step = S.vectorByteSize();
        long end = part.byteSize() - 4 * step;
        for (long off = 0; off <= end; off += 4 * step) {
            a0 = a0.add(FloatVector.fromMemorySegment(S, part, off, ByteOrder.LITTLE_ENDIAN));
            a1 = a1.add(FloatVector.fromMemorySegment(S, part, off + step, ByteOrder.LITTLE_ENDIAN));
            a2 = a2.add(FloatVector.fromMemorySegment(S, part, off + 2 * step, ByteOrder.LITTLE_ENDIAN));
            a3 = a3.add(FloatVector.fromMemorySegment(S, part, off + 3 * step, ByteOrder.LITTLE_ENDIAN));
        }
        return a0.add(a1).add(a2.add(a3)).reduceLanes(VectorOperators.ADD);
    }

    private static float fmaChains(float seed) {
        FloatVector m = FloatVector.broadcast(S, 0.999f), c = FloatVector.broadcast(S, seed);
        FloatVector a0 = c, a1 = c.add(1), a2 = c.add(2), a3 = c.add(3), a4 = c.add(4), a5 = c.add(5);
        FloatVector a6 = c.add(6), a7 = c.add(7), a8 = c.add(8), a9 = c.add(9), a10 = c.add(10), a11 = c.add(11);
        for (int i = 0; i < FMA_ITERATIONS; i++) {
            a0 = a0.fma(m, c); a1 = a1.fma(m, c); a2 = a2.fma(m, c); a3 = a3.fma(m, c);
            a4 = a4.fma(m, c); a5 = a5.fma(m, c); a6 = a6.fma(m, c); a7 = a7.fma(m, c);
            a8 = a8.fma(m, c); a9 = a9.fma(m, c); a10 = a10.fma(m, c); a11 = a11.fma(m, c);
        }
        return a0.add(a1).add(a2).add(a3).add(a4).add(a5).add(a6).add(a7).add(a8).add(a9).add(a10).add(a11)
                .reduceLanes(VectorOperators.ADD);
    }
}
