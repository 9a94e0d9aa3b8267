package dev.lora4j.cuda;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.backend.testing.LoraDownReference;
import dev.lora4j.backend.testing.RandomTensors;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.util.Locale;

import static dev.lora4j.backend.testing.TensorAssert.assertWithin;
import static org.assertj.core.api.Assertions.assertThat;

/**
 * The CUDA backend's fused LoRA down projection and its gradients against the CPU backend's, on the same inputs, at
 * adapter shapes: the vectorised tensor-core path (BF16, rows of a multiple of 8 elements) and the CUDA-core path
 * (F32), partial tiles of rows and columns, several column splits of hidden's sums and row splits of gradA's, and
 * adapters of more ranks than one pass takes. The masks agree bit for bit; the values within the roundings of each
 * path (BF16: the adapter rounded to 8 significant bits in the products, outputs rounded once per pass). No
 * temporary as large as x is allocated. Skips, with the probe's reason, where CUDA cannot run.
 */
class CudaLoraParityTest {
    private static CudaBackend bf16, f32;
    private static CpuBackend cpu;

    @RegisterExtension
    static final GpuAndCpu bf16Backends = GpuAndCpu.assigning(DType.BF16, (g, c) -> {
        bf16 = g;
        cpu = c;
    });
    @RegisterExtension
    static final GpuAndCpu f32Backends = GpuAndCpu.assigning(DType.F32, (g, c) -> f32 = g);

    /** n, k, r, p (thousandths): whole and partial tiles, column and row splits, rank passes, no dropout. */
    private static final int[][] SHAPES = {
            {128, 256, 16, 50}, {200, 520, 8, 50}, {70, 136, 64, 100}, {65, 264, 80, 50}, {130, 1104, 16, 50},
            {600, 64, 16, 50}, {96, 128, 32, 0}, {33, 72, 24, 300}};

    @Test
    void bf16ActivationsMatchTheCpuBackendAtAdapterShapes() {
        RandomTensors random = new RandomTensors(401);
        for (int[] s : SHAPES) compare(bf16, random, s[0], s[1], s[2], s[3] / 1000f, 0x1p-8);
    }

    @Test
    void f32ActivationsMatchTheCpuBackendAtAdapterShapes() {
        RandomTensors random = new RandomTensors(402);
        for (int[] s : SHAPES) compare(f32, random, s[0], s[1], s[2], s[3] / 1000f, 0);
    }

    @Test
    void theMasksAreTheCpuBackendsBitForBit() {
        RandomTensors random = new RandomTensors(403);
        for (CudaBackend gpu : new CudaBackend[] {bf16, f32}) {
            for (int[] shape : new int[][] {{130, 64, 64}, {64, 520, 16}, {65, 264, 80}}) {
                int n = shape[0], k = shape[1], r = shape[2];
                DType act = gpu.activationType();
                // Positive operands: every sum is positive, so zeros are exactly the dropped elements.
                float[] x = random.uniform(n * k, 0.5, 1, act), a = random.uniform(r * k, 0.5, 1);
                float[] dh = random.uniform(n * r, 0.5, 1, act);
                if (r == k) { // a = identity: hidden is dropout(x) itself
                    a = new float[k * k];
                    for (int j = 0; j < k; j++) a[j * k + j] = 1f;
                }
                float[][] g = run(gpu, x, a, dh, n, k, r, 1f, 0.3f, 99, false);
                float[][] c = run(cpu, x, a, dh, n, k, r, 1f, 0.3f, 99, false);
                String what = String.format(Locale.ROOT, "%s n=%d k=%d r=%d", act, n, k, r);
                if (r == k) assertThat(zeros(g[0])).as("hidden's zeros, " + what).isEqualTo(zeros(c[0]));
                assertThat(zeros(g[2])).as("dX's zeros, " + what).isEqualTo(zeros(c[2]));
                assertThat(zeros(c[2])).as("dX's zeros on the CPU, " + what)
                        .isEqualTo(LoraDownReference.dropped(99, 0.3f, n * k));
            }
        }
    }

    @Test
    void noTemporaryAsLargeAsXIsAllocated() {
        int n = 512, k = 1024, r = 16;
        for (DType act : new DType[] {DType.BF16, DType.F32}) {
            // A backend of its own, and tensors made without staging: its peak so far is what it holds.
            try (CudaBackend gpu = CudaBackend.open(CudaProbe.deviceOrdinal(), act);
                 Tensor x = gpu.allocate(act, n, k); Tensor a = gpu.allocate(DType.F32, r, k);
                 Tensor h = gpu.allocate(act, n, r); Tensor dh = gpu.allocate(act, n, r);
                 Tensor g = gpu.allocate(DType.F32, r, k); Tensor dx = gpu.allocate(act, n, k)) {
                long before = gpu.memoryInUse();
                assertThat(gpu.peakMemoryInUse()).isEqualTo(before);
                gpu.loraDown(x, a, 2f, 0.05f, 5, h);
                gpu.loraDownBackward(x, a, 2f, 0.05f, 5, dh, g, dx, true);
                gpu.synchronize();
                long partials = 4L * r * k; // gradA's sums of one block of rows; hidden's of two column splits as large
                assertThat(gpu.peakMemoryInUse() - before).as(act + ": memory beyond the tensors")
                        .isLessThanOrEqualTo(partials).isLessThan(x.byteSize() / 4);
                assertThat(gpu.memoryInUse()).isEqualTo(before);
            }
        }
    }

    /** GPU against CPU: both against the reference's magnitudes, the GPU allowed its operand rounding. */
    private static void compare(CudaBackend gpu, RandomTensors random, int n, int k, int r, float p, double operand) {
        DType act = gpu.activationType();
        float[] x = random.uniform(n * k, -1, 1, act), a = random.uniform(r * k, -1, 1);
        float[] dh = random.uniform(n * r, -1, 1, act);
        float scaling = 2f;
        String what = String.format(Locale.ROOT, "%s n=%d k=%d r=%d p=%s", act, n, k, r, p);
        float[][] g = run(gpu, x, a, dh, n, k, r, scaling, p, 7, true);
        float[][] c = run(cpu, x, a, dh, n, k, r, scaling, p, 7, true);
        double out = act == DType.BF16 ? 0x1p-8 : 0x1p-24;
        int passes = act == DType.BF16 ? Math.ceilDiv(r, CudaLora.MMA_RANKS) : Math.ceilDiv(r, CudaLora.CORE_RANKS);
        double[][] h = LoraDownReference.down(x, a, n, k, r, scaling, p, 7);
        assertWithin("hidden, " + what, g[0], toDoubles(c[0]), bound(h, c[0], k, operand, out, 1));
        double[][] ga = LoraDownReference.gradA(x, dh, new float[r * k], n, k, r, scaling, p, 7);
        assertWithin("gradA, " + what, g[1], toDoubles(c[1]), bound(ga, c[1], n, operand, 0x1p-24, 1));
        double[][] dx = LoraDownReference.dX(dh, a, initialDx(n, k, act), n, k, r, scaling, p, 7);
        assertWithin("dX, " + what, g[2], toDoubles(c[2]), bound(dx, c[2], r, operand, out, passes));
    }

    /** dX's value before an accumulating call in {@link #run}. */
    private static float[] initialDx(int n, int k, DType act) {
        float[] v = new float[n * k];
        for (int i = 0; i < v.length; i++) v[i] = (float) Math.sin(i);
        return RandomTensors.representable(v, act);
    }

    /** hidden, gradA (from zero) and dX (accumulated onto {@link #initialDx}) on one backend. */
    private static float[][] run(Backend b, float[] x, float[] a, float[] dh, int n, int k, int r, float scaling, float p,
                                 long seed, boolean accumulate) {
        DType act = b.activationType();
        try (Tensor xt = b.fromFloats(x, act, n, k); Tensor at = b.fromFloats(a, DType.F32, r, k);
             Tensor h = b.allocate(act, n, r); Tensor dht = b.fromFloats(dh, act, n, r);
             Tensor g = b.allocate(DType.F32, r, k);
             Tensor dx = accumulate ? b.fromFloats(initialDx(n, k, act), act, n, k) : b.allocate(act, n, k)) {
            b.loraDown(xt, at, scaling, p, seed, h);
            b.loraDownBackward(xt, at, scaling, p, seed, dht, g, dx, accumulate);
            return new float[][] {b.toFloats(h), b.toFloats(g), b.toFloats(dx)};
        }
    }

    /**
     * Two FP32 sums of {@code terms} products in different orders, the GPU's with the adapter rounded by {@code operand}
     * and rounded to the output {@code passes} times (dX after every pass of ranks; the intermediate values are within
     * the magnitude).
     */
    private static double[] bound(double[][] reference, float[] cpu, int terms, double operand, double out, int passes) {
        double[] m = reference[1], b = new double[m.length];
        for (int i = 0; i < b.length; i++) {
            b[i] = (2 * (terms + 4) * 0x1p-24 + 1.01 * operand) * m[i] * 1.01 + out * (Math.abs(cpu[i]) + operand * m[i]) * 1.01
                    + (passes - 1) * out * m[i] + 1e-30;
        }
        return b;
    }

    private static boolean[] zeros(float[] v) {
        boolean[] z = new boolean[v.length];
        for (int i = 0; i < v.length; i++) z[i] = v[i] == 0f;
        return z;
    }

    private static double[] toDoubles(float[] v) {
        double[] d = new double[v.length];
        for (int i = 0; i < v.length; i++) d[i] = v[i];
        return d;
    }
}
