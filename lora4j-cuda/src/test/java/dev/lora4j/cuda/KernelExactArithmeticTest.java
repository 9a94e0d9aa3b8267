package dev.lora4j.cuda;

import dev.lora4j.backend.DropoutHash;
import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.nio.ByteBuffer;
import java.util.SplittableRandom;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The dropout and AdamW kernels compute with the functions of src/main/cuda/exact.cuh, which must give the CPU
 * backend's bits. Those functions also compile for the host, so this test builds them with the machine's C++
 * compiler and checks them, without a GPU: the dropout hash (one element's draw, and the two-element masks of the
 * LoRA kernels, from any index or from a half of a group's hash) against {@link DropoutHash} over seeds and indices of the whole 64-bit range, and the AdamW step
 * against {@link CpuBackend#adamw} over values of every magnitude.
 */
class KernelExactArithmeticTest {
    private static HostHarness harness;

    @BeforeAll
    static void buildHarness() throws Exception {
        harness = HostHarness.build("exact_harness", "-ffp-contract=off");
    }

    @Test
    void theDropoutMaskIsDropoutHashBitForBitForAnySeedAndIndex() throws Exception {
        SplittableRandom random = new SplittableRandom(5);
        long[] seeds = {0, 1, -1, 42, Long.MIN_VALUE, Long.MAX_VALUE, 0x9E3779B97F4A7C15L};
        long[] indices = {0, 1, 2, (1L << 31) - 1, 1L << 31, (1L << 32) - 1, 1L << 32, 1L << 40, Long.MAX_VALUE - 1,
                Long.MAX_VALUE, -1};
        float[] ps = {0f, 0.05f, 0.1f, 0.5f, 0.9f, 1f, 0x1p-20f};
        int count = 200_000;
        long[] seed = new long[count], index = new long[count];
        float[] x = new float[count], p = new float[count];
        for (int i = 0; i < count; i++) {
            seed[i] = i < seeds.length * indices.length ? seeds[i / indices.length] : random.nextLong();
            index[i] = i < seeds.length * indices.length ? indices[i % indices.length]
                    : i % 2 == 0 ? random.nextLong(1L << 32) : random.nextLong() >>> 1;
            x[i] = (float) random.nextGaussian();
            p[i] = ps[i % ps.length];
        }
        ByteBuffer in = HostHarness.littleEndian(28 * count);
        for (int i = 0; i < count; i++) in.putLong(seed[i]).putLong(index[i]).putFloat(x[i]).putFloat(p[i]).putFloat(CudaBackend.dropoutScale(p[i]));
        ByteBuffer out = harness.run(in.array(), "dropout");
        assertThat(out.remaining()).isEqualTo(32 * count);
        for (int i = 0; i < count; i++) {
            long mix = out.getLong();
            float u = out.getFloat(), dropped = out.getFloat();
            int threshold = out.getInt(), keep = out.getInt(), keepLow = out.getInt(), keepHigh = out.getInt();
            String what = String.format("seed %d, index %d", seed[i], index[i]);
            assertThat(mix).as("mix, " + what).isEqualTo(DropoutHash.mix(seed[i], index[i]));
            assertThat(Float.floatToRawIntBits(u)).as("uniform, " + what)
                    .isEqualTo(Float.floatToRawIntBits(DropoutHash.uniform(seed[i], index[i])));
            float want = DropoutHash.uniform(seed[i], index[i]) < p[i] ? 0f : x[i] * CudaBackend.dropoutScale(p[i]);
            assertThat(Float.floatToRawIntBits(dropped)).as("dropout of %s at p=%s, %s", x[i], p[i], what)
                    .isEqualTo(Float.floatToRawIntBits(want));
            assertThat(threshold).as("threshold of p=%s", p[i]).isEqualTo(DropoutHash.dropThreshold(p[i]));
            // The two-element mask of the LoRA kernels: one mix unless index % 4 == 3, two then.
            assertThat(keep).as("keep flags of the pair at p=%s, %s", p[i], what).isEqualTo(keepFlags(seed[i], index[i], threshold));
            // The halves of a group's hash that lanes of the LoRA kernels share: elements 4j, 4j+1 and 4j+2, 4j+3.
            long first = index[i] & ~3L;
            assertThat(keepLow).as("keep flags of the low half at p=%s, %s", p[i], what).isEqualTo(keepFlags(seed[i], first, threshold));
            assertThat(keepHigh).as("keep flags of the high half at p=%s, %s", p[i], what)
                    .isEqualTo(keepFlags(seed[i], first + 2, threshold));
        }
    }

    /** Bit 0: element i is kept, bit 1: element i + 1 is, by {@link DropoutHash}'s draws. */
    private static int keepFlags(long seed, long i, int threshold) {
        return (DropoutHash.bits(seed, i) >= threshold ? 1 : 0) | (DropoutHash.bits(seed, i + 1) >= threshold ? 2 : 0);
    }

    @Test
    void theAdamwStepIsTheCpuBackendsStepBitForBit() throws Exception {
        SplittableRandom random = new SplittableRandom(6);
        // lr, beta1, beta2, eps, weight decay, step: torch's defaults, LoRA's usual values, a beta1 under 0.5 (lerp
        // weight over 0.5), no decay, eps 0, and a step late enough that the bias corrections are 1.
        float[][] settings = {
                {1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 1}, {2e-4f, 0.9f, 0.999f, 1e-8f, 0f, 7}, {5e-2f, 0.3f, 0.95f, 1e-6f, 0.1f, 3},
                {1e-4f, 0.8f, 0.99f, 0f, 0.5f, 2}, {3e-4f, 0.95f, 0.9999f, 1e-8f, 0.05f, 100_000}};
        int count = 4099; // not a multiple of any vector length: the CPU's vector loop and its tail are both compared
        try (CpuBackend cpu = new CpuBackend()) {
            for (float[] s : settings) {
                float lr = s[0], beta1 = s[1], beta2 = s[2], eps = s[3], wd = s[4];
                long step = (long) s[5];
                float[] param = values(random, count, false), grad = values(random, count, false);
                float[] m = values(random, count, false), v = values(random, count, true);
                AdamwScalars scalars = AdamwScalars.of(lr, beta1, beta2, eps, wd, step);
                ByteBuffer in = HostHarness.littleEndian(4 * 7 + 16 * count);
                in.putFloat(scalars.decay()).putFloat(scalars.oneMinusBeta1()).putFloat(scalars.beta2())
                        .putFloat(scalars.oneMinusBeta2()).putFloat(scalars.negStepSize()).putFloat(scalars.bias2Sqrt())
                        .putFloat(scalars.eps());
                for (int i = 0; i < count; i++) in.putFloat(param[i]).putFloat(grad[i]).putFloat(m[i]).putFloat(v[i]);
                ByteBuffer out = harness.run(in.array(), "adamw");

                float[] wantP, wantM, wantV;
                try (Tensor pt = cpu.fromFloats(param, DType.F32, count); Tensor gt = cpu.fromFloats(grad, DType.F32, count);
                     Tensor mt = cpu.fromFloats(m, DType.F32, count); Tensor vt = cpu.fromFloats(v, DType.F32, count)) {
                    cpu.adamw(pt, gt, mt, vt, lr, beta1, beta2, eps, wd, step);
                    wantP = cpu.toFloats(pt);
                    wantM = cpu.toFloats(mt);
                    wantV = cpu.toFloats(vt);
                }
                for (int i = 0; i < count; i++) {
                    String what = String.format("adamw lr=%s beta1=%s beta2=%s eps=%s wd=%s step=%d, element %d (p %s, g %s, m %s, v %s)",
                            lr, beta1, beta2, eps, wd, step, i, param[i], grad[i], m[i], v[i]);
                    assertThat(Float.floatToRawIntBits(out.getFloat())).as("param, " + what).isEqualTo(Float.floatToRawIntBits(wantP[i]));
                    assertThat(Float.floatToRawIntBits(out.getFloat())).as("m, " + what).isEqualTo(Float.floatToRawIntBits(wantM[i]));
                    assertThat(Float.floatToRawIntBits(out.getFloat())).as("v, " + what).isEqualTo(Float.floatToRawIntBits(wantV[i]));
                }
            }
        }
    }

    /** Values over many magnitudes, with zeros; non-negative ones for second moments. */
    private static float[] values(SplittableRandom random, int count, boolean nonNegative) {
        float[] v = new float[count];
        for (int i = 0; i < count; i++) {
            double magnitude = Math.pow(10, random.nextInt(-12, 4));
            double x = random.nextDouble(-1, 1) * magnitude;
            if (i % 97 == 0) x = 0;
            v[i] = (float) (nonNegative ? Math.abs(x) : x);
        }
        return v;
    }
}
