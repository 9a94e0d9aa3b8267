package dev.lora4j.bench;

import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.quant.QuantType;
import dev.lora4j.quant.QuantizedTensor;
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
 * {@code CpuBackend.matmul} with a 4-bit weight beside the same product with a BF16 and an F32 weight:
 * x [n, k] · w [m, k]ᵀ, n = 1 (one generated token: every weight read once, bound by memory) and n = 64 (a
 * prompt or a training micro-batch: bound by arithmetic).
 *
 * <p>{@code weights} is {@code NF4} or {@code FP4} (the QLoRA recipe otherwise: blocks of 64, double quantization,
 * BF16 weights before quantization and BF16 compute), {@code BF16} or {@code F32}. As in {@link MatmulBenchmark},
 * each call takes the next of a ring of distinct weights of {@code ringMegabytes} in all, far more than the
 * last-level cache, so that the weights come from DRAM as a model's layers do. {@link BenchMain} reports GB/s of
 * the weight's bytes (packed codes and quantization state for 4-bit) and GFLOP/s (2·n·k·m).
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-Xmx6g"})
@State(Scope.Benchmark)
public class FourBitMatmulBenchmark {
    @Param({"NF4", "BF16", "F32"}) public String weights;
    @Param({"1", "64"}) public int n;
    @Param({"4096"}) public int k;
    @Param({"4096", "14336"}) public int m;
    @Param({"1024"}) public int ringMegabytes;

    CpuBackend backend;
    Tensor x, out;
    Tensor[] ring;
    int next;

    @Setup(Level.Trial)
    public void setUp() {
        backend = new CpuBackend();
        x = BenchTensors.random(backend, DType.F32, 1, 1f, n, k);
        out = backend.allocate(DType.F32, n, m);
        QuantType type = quantType(weights);
        Tensor dense = BenchTensors.random(backend, type == null ? DType.valueOf(weights) : DType.BF16, 2, 0.02f, m, k);
        Tensor first = dense;
        if (type != null) {
            first = backend.quantize4bit(dense, spec(type));
            dense.close();
        }
        int count = (int) Math.max(1, ((long) ringMegabytes << 20) / first.byteSize());
        ring = new Tensor[count];
        ring[0] = first;
        for (int i = 1; i < count; i++) ring[i] = copy(first);
    }

    @TearDown(Level.Trial)
    public void tearDown() { backend.close(); }

    @Benchmark
    public Tensor matmul() {
        Tensor w = ring[next];
        next = (next + 1) % ring.length;
        backend.matmul(x, w, out);
        return out;
    }

    /** The 4-bit type a {@code weights} parameter names, or null for a dense dtype. */
    static QuantType quantType(String weights) {
        return weights.equals("NF4") || weights.equals("FP4") ? QuantType.parse(weights) : null;
    }

    static QuantSpec spec(QuantType type) {
        return new QuantSpec(type, QuantSpec.DEFAULT_BLOCK_SIZE, true, DType.BF16);
    }

    /** Bytes of a weight of m × k in the given form: what one product must read. */
    static long weightBytes(String weights, long m, long k) {
        QuantType type = quantType(weights);
        if (type != null) return spec(type).bytesFor(m * k);
        return DType.valueOf(weights).bytesFor(m * k);
    }

    private Tensor copy(Tensor t) {
        if (!(t instanceof QuantizedTensor q)) {
            Tensor c = backend.allocate(t.dtype(), t.shape());
            backend.copy(t, c);
            return c;
        }
        return new QuantizedTensor(q.spec(), q.originalType(), q.shape(), copy(q.packed()), copy(q.absmax()),
                q.nestedAbsmax() == null ? null : copy(q.nestedAbsmax()), q.nestedCode() == null ? null : copy(q.nestedCode()),
                q.nestedOffset());
    }
}
