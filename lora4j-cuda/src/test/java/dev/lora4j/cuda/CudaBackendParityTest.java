package dev.lora4j.cuda;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.HostConversions;
import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import dev.lora4j.cuda.GpuAndCpu.Pair;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.EnumSource;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Every op of the CUDA backend against the CPU backend (the reference) on the same random inputs: shapes that are
 * not multiples of the GPU's tile sizes, grouped-query heads, sliding windows, KV caches read from a later start
 * position, every weight type, accumulation. Skips, with the probe's reason, where the CUDA backend cannot run.
 */
class CudaBackendParityTest {
    private static CudaBackend gpu;
    private static CpuBackend cpu;

    @RegisterExtension
    static final GpuAndCpu backends = GpuAndCpu.assigning((g, c) -> { gpu = g; cpu = c; });

    // ---- memory and conversions ---------------------------------------------------------------------------

    @Test
    void describesTheDeviceAndKeepsActivationsInF32() {
        assertThat(gpu.name()).isEqualTo("cuda");
        assertThat(gpu.description()).matches("CUDA, .+ \\(sm_\\d+\\), \\d+\\.\\d GiB, driver \\d+\\.\\d+");
        assertThat(gpu.activationType()).isEqualTo(DType.F32);
    }

    @Test
    void matmulAddReadsTheAddendFromItsOwnBufferWithTheSameBitsAsCopyingAndAccumulating() {
        java.util.SplittableRandom r = new java.util.SplittableRandom(21);
        for (DType weightType : new DType[] {DType.F32, DType.BF16, DType.F16}) {
            int n = 37, k = 96, m = 40;
            float[] x = new float[n * k], w = new float[m * k], residual = new float[n * m];
            for (int i = 0; i < x.length; i++) x[i] = (float) r.nextDouble(-1, 1);
            for (int i = 0; i < w.length; i++) w[i] = (float) r.nextDouble(-1, 1);
            for (int i = 0; i < residual.length; i++) residual[i] = (float) r.nextDouble(-4, 4);
            try (Tensor xg = gpu.fromFloats(x, DType.F32, n, k); Tensor wg = gpu.fromFloats(w, weightType, m, k);
                 Tensor addend = gpu.fromFloats(residual, DType.F32, n, m); Tensor out = gpu.allocate(DType.F32, n, m);
                 Tensor composed = gpu.fromFloats(residual, DType.F32, n, m);
                 Tensor xc = cpu.fromFloats(x, DType.F32, n, k); Tensor wc = cpu.fromFloats(w, weightType, m, k);
                 Tensor onCpu = cpu.allocate(DType.F32, n, m); Tensor addendCpu = cpu.fromFloats(residual, DType.F32, n, m)) {
                gpu.matmulAdd(xg, wg, addend, out);
                gpu.matmul(xg, wg, composed, true);
                cpu.matmulAdd(xc, wc, addendCpu, onCpu);
                assertThat(gpu.toFloats(out)).as(weightType + ": as copy + accumulate").containsExactly(gpu.toFloats(composed));
                assertThat(gpu.toFloats(addend)).as("the addend stays").containsExactly(residual);
                float[] g = gpu.toFloats(out), c = cpu.toFloats(onCpu);
                for (int i = 0; i < g.length; i++) {
                    // x is rounded to a 16-bit weight's type for the tensor cores: k products of that rounding.
                    assertThat((double) Math.abs(g[i] - c[i])).as(weightType + " element " + i).isLessThan(weightType == DType.F32 ? 1e-4 : 0.05);
                }
            }
        }
    }

    @Test
    void allocatedTensorsAreZeroFilled() {
        for (DType t : new DType[] {DType.F32, DType.BF16, DType.U8}) {
            try (Tensor x = gpu.allocate(t, 3, 1001)) {
                byte[] bytes = bytesOf(gpu, x);
                assertThat(bytes).as(t.toString()).containsOnly(0);
            }
        }
    }

    @Test
    void uploadConvertsBetweenFloatTypesBitForBitAsTheCpuDoes() {
        float[] values = specialAndRandomFloats(5000, 1);
        for (DType src : new DType[] {DType.F32, DType.BF16, DType.F16, DType.F64}) {
            for (DType dst : new DType[] {DType.F32, DType.BF16, DType.F16, DType.F64}) {
                // NaN payloads through F64 depend on the hardware's conversion; every other value must match exactly.
                float[] v = src == DType.F64 || dst == DType.F64 ? withoutNaN(values) : values;
                try (Arena arena = Arena.ofConfined()) {
                    MemorySegment host = hostArray(arena, v, src);
                    try (Tensor g = gpu.upload(host, src, dst, v.length); Tensor c = cpu.upload(host, src, dst, v.length)) {
                        assertThat(bytesOf(gpu, g)).as(src + " -> " + dst).isEqualTo(bytesOf(cpu, c));
                    }
                }
            }
        }
    }

    @Test
    void uploadOfSameTypeCopiesAnyDtypeAsItIs() {
        byte[] raw = new byte[1234];
        new Random(3).nextBytes(raw);
        try (Arena arena = Arena.ofConfined(); Tensor t = gpu.upload(arena.allocateFrom(ValueLayout.JAVA_BYTE, raw), DType.U8, DType.U8, 1234)) {
            assertThat(bytesOf(gpu, t)).isEqualTo(raw);
        }
        assertThatThrownBy(() -> gpu.upload(MemorySegment.ofArray(new byte[8]), DType.U8, DType.F32, 2))
                .isInstanceOf(IllegalArgumentException.class).hasMessage("cannot convert U8 to F32");
    }

    @Test
    void uploadAcceptsHeapSegments() {
        float[] v = {1.5f, -2.25f, 3e-3f};
        try (Tensor t = gpu.upload(MemorySegment.ofArray(v), DType.F32, DType.F32, 3)) {
            assertThat(gpu.toFloats(t)).containsExactly(v);
            float[] back = new float[3];
            gpu.copyToHost(t, MemorySegment.ofArray(back));
            assertThat(back).containsExactly(v);
        }
    }

    @Test
    void copyConvertsOnTheDeviceAsTheCpuDoes() {
        float[] values = specialAndRandomFloats(3000, 2);
        for (DType a : new DType[] {DType.F32, DType.BF16, DType.F16}) {
            for (DType b : new DType[] {DType.F32, DType.BF16, DType.F16}) {
                try (Tensor ga = gpu.fromFloats(values, a, values.length); Tensor gb = gpu.allocate(b, values.length);
                     Tensor ca = cpu.fromFloats(values, a, values.length); Tensor cb = cpu.allocate(b, values.length)) {
                    gpu.copy(ga, gb);
                    cpu.copy(ca, cb);
                    assertThat(bytesOf(gpu, gb)).as(a + " -> " + b).isEqualTo(bytesOf(cpu, cb));
                }
            }
        }
    }

    @Test
    void viewsShareTheirOwnersMemory() {
        float[] v = random(6 * 5, 4, 1f);
        try (Tensor x = gpu.fromFloats(v, DType.F32, 6, 5); Tensor src = gpu.fromFloats(new float[] {9, 8, 7, 6, 5}, DType.F32, 1, 5)) {
            gpu.copy(src, x.rows(2, 1));
            float[] got = gpu.toFloats(x);
            float[] want = v.clone();
            System.arraycopy(new float[] {9, 8, 7, 6, 5}, 0, want, 10, 5);
            assertThat(got).containsExactly(want);
            assertThat(gpu.toFloats(x.rows(4, 2))).containsExactly(Arrays.copyOfRange(v, 20, 30));
        }
    }

    @Test
    void memoryInUseFollowsAllocationsAndThePeakRemainsAfterwards() {
        gpu.synchronize();
        long before = gpu.memoryInUse();
        Tensor t = gpu.allocate(DType.F32, 1 << 20);
        long during = gpu.memoryInUse();
        assertThat(during - before).isGreaterThanOrEqualTo(4L << 20);
        assertThat(gpu.peakMemoryInUse()).isGreaterThanOrEqualTo(during);
        t.close();
        assertThat(gpu.memoryInUse()).isEqualTo(before);
        assertThat(gpu.peakMemoryInUse()).isGreaterThanOrEqualTo(during);
        assertThat(gpu.memoryReserved()).isGreaterThanOrEqualTo(gpu.memoryInUse());
    }

    @Test
    void aClosedTensorAndItsViewsCannotBeUsed() {
        Tensor t = gpu.allocate(DType.F32, 4, 4);
        Tensor view = t.rows(1, 2);
        t.close();
        assertThatThrownBy(() -> gpu.toFloats(t)).isInstanceOf(IllegalStateException.class).hasMessageContaining("after close");
        assertThatThrownBy(() -> gpu.toFloats(view)).isInstanceOf(IllegalStateException.class).hasMessageContaining("after close");
    }

    @Test
    void kernelLaunchesWithArgumentsOfTheWrongNumberOrSizeAreRefusedBeforeTheyRun() {
        assumeTrue(gpu.kernels().checksArguments(), "the driver cannot describe kernel parameters (CUDA 12.4 and newer can)");
        // lora4j_add_f32(float* x, const float* y, long long n): refused before anything reaches the device.
        assertThatThrownBy(() -> gpu.kernels().launch(CudaKernels.ADD, 1, 32, 0, gpu.stream(), KernelArgs.start().ptr(0).ptr(0)))
                .isInstanceOf(IllegalStateException.class)
                .hasMessage("kernel lora4j_add_f32 takes 3 parameters of [8, 8, 8] bytes, but the launch passed 2 of [8, 8] bytes");
        assertThatThrownBy(() -> gpu.kernels().launch(CudaKernels.ADD, 1, 32, 0, gpu.stream(), KernelArgs.start().ptr(0).ptr(0).i32(5)))
                .isInstanceOf(IllegalStateException.class).hasMessageContaining("[8, 8, 4] bytes");
    }

    @Test
    void tensorsOfAnotherBackendAreRejected() {
        try (Tensor c = cpu.allocate(DType.F32, 2, 2); Tensor g = gpu.allocate(DType.F32, 2, 2)) {
            assertThatThrownBy(() -> gpu.add(g, c)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("is not a tensor of this CUDA backend");
        }
    }

    // ---- forward ops --------------------------------------------------------------------------------------

    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F32", "BF16", "F16"})
    void embeddingGathersRowsExactly(DType tableType) {
        int vocab = 1000, d = 77;
        int[] ids = {0, 999, 5, 5, 123, 998, 1, 500, 77};
        float[] table = random(vocab * d, 5, 2f);
        try (Tensor gt = gpu.fromFloats(table, tableType, vocab, d); Tensor ct = cpu.fromFloats(table, tableType, vocab, d);
             Tensor go = gpu.allocate(DType.F32, ids.length, d); Tensor co = cpu.allocate(DType.F32, ids.length, d)) {
            gpu.embedding(gt, ids, go);
            cpu.embedding(ct, ids, co);
            assertThat(gpu.toFloats(go)).containsExactly(cpu.toFloats(co));
            assertThatThrownBy(() -> gpu.embedding(gt, new int[] {1, 1000}, go.rows(0, 2)))
                    .isInstanceOf(IndexOutOfBoundsException.class).hasMessageContaining("token id 1000");
        }
    }

    @ParameterizedTest
    @CsvSource({"1,1,F32", "3,7,BF16", "5,4096,F32", "2,5000,F16", "17,896,BF16", "64,1030,F32"})
    void rmsNormMatchesTheCpu(int rows, int d, DType weightType) {
        float[] x = random(rows * d, 6, 3f);
        float[] w = random(d, 7, 1f);
        try (Pair xs = backends.pair(x, DType.F32, rows, d); Pair ws = backends.pair(w, weightType, d);
             Pair out = backends.zeros(DType.F32, rows, d)) {
            gpu.rmsNorm(xs.g(), ws.g(), 1e-5f, out.g());
            cpu.rmsNorm(xs.c(), ws.c(), 1e-5f, out.c());
            assertClose(out, 1e-5, "rmsNorm");
            gpu.rmsNorm(xs.g(), ws.g(), 1e-5f, xs.g()); // in place
            assertThat(gpu.toFloats(xs.g())).containsExactly(gpu.toFloats(out.g()));
        }
    }

    @ParameterizedTest
    @CsvSource({
            "1,64,96,BF16", "5,100,37,BF16", "17,257,129,BF16", "64,1024,512,BF16", "3,4096,1000,BF16",
            "1,64,96,F16", "9,300,33,F16", "33,512,260,F16",
            "1,64,96,F32", "5,100,37,F32", "40,777,201,F32"})
    void matmulMatchesTheCpuOnInputsRoundedToTheWeightType(int n, int k, int m, DType wt) {
        float[] x = random(n * k, 8, 1f);
        float[] w = random(m * k, 9, 0.5f);
        // The GPU rounds x to the weight's type for the tensor cores; give the CPU the same rounded x.
        float[] xRounded = wt == DType.F32 ? x : roundTo(x, wt);
        try (Tensor gx = gpu.fromFloats(x, DType.F32, n, k); Pair ws = backends.pair(w, wt, m, k);
             Tensor cx = cpu.fromFloats(xRounded, DType.F32, n, k); Pair out = backends.zeros(DType.F32, n, m)) {
            gpu.matmul(gx, ws.g(), out.g());
            cpu.matmul(cx, ws.c(), out.c());
            assertCloseNorm(out, wt == DType.F32 ? 1e-5 : 1e-4, "matmul " + wt);

            float[] start = random(n * m, 10, 1f);
            try (Pair acc = backends.pair(start, DType.F32, n, m)) {
                gpu.matmul(gx, ws.g(), acc.g(), true);
                cpu.matmul(cx, ws.c(), acc.c(), true);
                assertCloseNorm(acc, wt == DType.F32 ? 1e-5 : 1e-4, "accumulating matmul " + wt);
            }
        }
    }

    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F32", "BF16"})
    void matmulWorksOnViewsThatAreNotAlignedToTiles(DType wt) {
        int n = 7, k = 33, m = 19;
        float[] x = random((n + 1) * k, 11, 1f);
        float[] w = random((m + 1) * k, 12, 1f);
        float[] xRounded = wt == DType.F32 ? x : roundTo(x, wt);
        try (Tensor gx = gpu.fromFloats(x, DType.F32, n + 1, k); Tensor cx = cpu.fromFloats(xRounded, DType.F32, n + 1, k);
             Pair ws = backends.pair(w, wt, m + 1, k); Pair out = backends.zeros(DType.F32, n + 1, m)) {
            // Offsets of one row: 33 or 19 floats, 4-byte aligned addresses only.
            gpu.matmul(gx.rows(1, n), ws.g().rows(1, m), out.g().rows(1, n));
            cpu.matmul(cx.rows(1, n), ws.c().rows(1, m), out.c().rows(1, n));
            assertCloseNorm(out, wt == DType.F32 ? 1e-5 : 1e-4, "matmul on views " + wt);
        }
    }

    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F32", "BF16", "F16"})
    void addBiasMatchesTheCpu(DType biasType) {
        int rows = 13, d = 301;
        try (Pair x = backends.pair(random(rows * d, 13, 1f), DType.F32, rows, d); Pair b = backends.pair(random(d, 14, 1f), biasType, d)) {
            gpu.addBias(x.g(), b.g());
            cpu.addBias(x.c(), b.c());
            assertThat(gpu.toFloats(x.g())).containsExactly(cpu.toFloats(x.c()));
        }
    }

    @ParameterizedTest
    @CsvSource({"1,64,1,10000", "5,128,4,10000", "9,80,3,1000000", "33,64,8,500000", "2,256,2,10000"})
    void ropeMatchesTheCpuIncludingLargePositions(int n, int headDim, int heads, double base) {
        float[] inv = new float[headDim / 2];
        for (int j = 0; j < inv.length; j++) inv[j] = (float) (1.0 / Math.pow(base, 2.0 * j / headDim));
        int[] positions = new int[n];
        Random r = new Random(15);
        for (int i = 0; i < n; i++) positions[i] = i == 0 ? 0 : r.nextInt(131072);
        try (Pair x = backends.pair(random(n * heads * headDim, 16, 2f), DType.F32, n, heads * headDim);
             Pair f = backends.pair(inv, DType.F32, headDim / 2)) {
            gpu.rope(x.g(), headDim, positions, f.g());
            cpu.rope(x.c(), headDim, positions, f.c());
            assertClose(x, 1e-5, "rope");
        }
    }

    @ParameterizedTest
    @CsvSource({
            // n, startPos, nHeads, nKvHeads, headDim, window, kv type
            "1, 0, 8, 2, 64, 0, F32",
            "7, 0, 8, 2, 64, 0, F32",
            "1, 37, 8, 2, 128, 0, BF16",
            "5, 11, 4, 4, 64, 4, F32",
            "3, 300, 8, 2, 128, 0, F32",
            "20, 100, 8, 1, 80, 16, F16",
            "65, 70, 2, 2, 96, 0, BF16",
            "4, 2000, 16, 8, 128, 1000, F32",
            "2, 5, 2, 1, 256, 0, F32"})
    void attentionMatchesTheCpu(int n, int startPos, int nHeads, int nKvHeads, int headDim, int window, DType kvType) {
        int t = startPos + n + 3; // a cache longer than needed: rows past the last position must be ignored
        try (Pair q = backends.pair(random(n * nHeads * headDim, 17, 1f), DType.F32, n, nHeads * headDim);
             Pair k = backends.pair(random(t * nKvHeads * headDim, 18, 1f), kvType, t, nKvHeads * headDim);
             Pair v = backends.pair(random(t * nKvHeads * headDim, 19, 1f), kvType, t, nKvHeads * headDim);
             Pair out = backends.zeros(DType.F32, n, nHeads * headDim)) {
            gpu.attention(q.g(), k.g(), v.g(), startPos, nHeads, nKvHeads, headDim, window, out.g());
            cpu.attention(q.c(), k.c(), v.c(), startPos, nHeads, nKvHeads, headDim, window, out.c());
            assertClose(out, 1e-5, "attention");
        }
    }

    @Test
    void attentionWithScoresFarApartStaysFinite() {
        int n = 2, headDim = 64, t = 200;
        float[] qv = random(n * headDim, 20, 6f); // scores near 100: exp overflows without the running max
        try (Pair q = backends.pair(qv, DType.F32, n, headDim); Pair k = backends.pair(random(t * headDim, 21, 6f), DType.F32, t, headDim);
             Pair v = backends.pair(random(t * headDim, 22, 1f), DType.F32, t, headDim); Pair out = backends.zeros(DType.F32, n, headDim)) {
            gpu.attention(q.g(), k.g(), v.g(), t - n, 1, 1, headDim, 0, out.g());
            cpu.attention(q.c(), k.c(), v.c(), t - n, 1, 1, headDim, 0, out.c());
            for (float f : gpu.toFloats(out.g())) assertThat(Float.isFinite(f)).as("finite output").isTrue();
            // Scores this large amplify the rounding differences of the two dot products; 1e-4 still catches any error.
            assertClose(out, 1e-4, "attention with large scores");
        }
    }

    @Test
    void swigluMatchesTheCpu() {
        int count = 100_003;
        try (Pair g = backends.pair(random(count, 23, 8f), DType.F32, count); Pair u = backends.pair(random(count, 24, 2f), DType.F32, count);
             Pair out = backends.zeros(DType.F32, count)) {
            gpu.swiglu(g.g(), u.g(), out.g());
            cpu.swiglu(g.c(), u.c(), out.c());
            assertClose(out, 1e-6, "swiglu");
        }
    }

    @Test
    void addIsTheSameFloatAdditionAsOnTheCpu() {
        int count = 70_000;
        try (Pair x = backends.pair(random(count, 25, 3f), DType.F32, 7, count / 7); Pair y = backends.pair(random(count, 26, 1f), DType.F32, count)) {
            gpu.add(x.g(), y.g());
            cpu.add(x.c(), y.c());
            assertThat(gpu.toFloats(x.g())).containsExactly(cpu.toFloats(x.c()));
        }
    }

    @Test
    void shapeMismatchesAreRejectedAsOnTheCpu() {
        try (Tensor x = gpu.allocate(DType.F32, 2, 3); Tensor w = gpu.allocate(DType.BF16, 4, 5); Tensor out = gpu.allocate(DType.F32, 2, 4)) {
            assertThatThrownBy(() -> gpu.matmul(x, w, out)).isInstanceOf(IllegalArgumentException.class).hasMessageContaining("matmul shapes");
            assertThatThrownBy(() -> gpu.rope(x, 3, new int[] {0, 1}, w)).isInstanceOf(IllegalArgumentException.class);
            assertThatThrownBy(() -> gpu.add(x, out)).isInstanceOf(IllegalArgumentException.class).hasMessageContaining("element counts differ");
        }
    }

    // ---- helpers ------------------------------------------------------------------------------------------

    /** Largest element difference, relative to the largest reference magnitude. */
    private static void assertClose(Pair p, double tolerance, String what) {
        float[] got = gpu.toFloats(p.g()), want = cpu.toFloats(p.c());
        double scale = 0;
        for (float w : want) scale = Math.max(scale, Math.abs(w));
        int worst = -1;
        double worstDiff = 0;
        for (int i = 0; i < want.length; i++) {
            double diff = Math.abs((double) got[i] - want[i]);
            if (!(diff <= worstDiff)) { // also catches NaN
                worstDiff = Double.isNaN(diff) ? Double.POSITIVE_INFINITY : diff;
                worst = i;
            }
        }
        assertThat(worstDiff).as("%s: worst element %d is %s on the GPU, %s on the CPU (scale %s)", what, worst,
                worst < 0 ? "-" : got[worst], worst < 0 ? "-" : want[worst], scale).isLessThanOrEqualTo(tolerance * Math.max(scale, 1e-30));
    }

    /** ||got - want|| / ||want|| over the whole tensor: the measure for sums whose order differs. */
    private static void assertCloseNorm(Pair p, double tolerance, String what) {
        float[] got = gpu.toFloats(p.g()), want = cpu.toFloats(p.c());
        double num = 0, den = 0;
        for (int i = 0; i < want.length; i++) {
            double d = (double) got[i] - want[i];
            num += d * d;
            den += (double) want[i] * want[i];
        }
        assertThat(Math.sqrt(num / den)).as(what + ": relative error (norm)").isLessThanOrEqualTo(tolerance);
    }

    private static float[] random(int count, long seed, float scale) {
        Random r = new Random(seed * 7919 + count);
        float[] v = new float[count];
        for (int i = 0; i < count; i++) v[i] = (float) (r.nextGaussian() * scale);
        return v;
    }

    private static float[] roundTo(float[] values, DType t) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment s = arena.allocate(t.bytesFor(values.length), 8);
            for (int i = 0; i < values.length; i++) HostConversions.setFloat(s, t, i, values[i]);
            return HostConversions.toFloats(s, t, values.length);
        }
    }

    /** Zeros, infinities, NaN, the largest and smallest halves, exact rounding ties, and random bit patterns and sizes. */
    private static float[] specialAndRandomFloats(int count, long seed) {
        float[] special = {0f, -0f, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY, Float.NaN, 65504f, 65520f, -65536f,
                6.1035156e-5f, 5.9604645e-8f, 2.9802322e-8f, 1e-10f, Float.MIN_VALUE, Float.MAX_VALUE,
                Float.intBitsToFloat(0x3f808000), Float.intBitsToFloat(0x3f818000), Float.intBitsToFloat(0x3f801000),
                Float.intBitsToFloat(0x3f803000), 1f, -1f, 3.14159f};
        float[] v = Arrays.copyOf(special, count);
        Random r = new Random(seed);
        for (int i = special.length; i < count; i++) {
            v[i] = i % 3 == 0 ? Float.intBitsToFloat(r.nextInt()) : (float) (r.nextGaussian() * Math.pow(10, r.nextInt(12) - 6));
            // Only the canonical NaN: the JIT may convert other NaN payloads with the CPU's instructions, which differ.
            if (Float.isNaN(v[i])) v[i] = Float.NaN;
        }
        return v;
    }

    private static float[] withoutNaN(float[] v) {
        float[] out = v.clone();
        for (int i = 0; i < out.length; i++) if (Float.isNaN(out[i])) out[i] = 0f;
        return out;
    }

    private static MemorySegment hostArray(Arena arena, float[] values, DType t) {
        MemorySegment s = arena.allocate(t.bytesFor(values.length), 8);
        for (int i = 0; i < values.length; i++) HostConversions.setFloat(s, t, i, values[i]);
        return s;
    }

    private static byte[] bytesOf(Backend b, Tensor t) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment host = arena.allocate(Math.max(1, t.byteSize()), 16);
            b.copyToHost(t, host);
            return host.asSlice(0, t.byteSize()).toArray(ValueLayout.JAVA_BYTE);
        }
    }
}
