package dev.lora4j.cuda;

import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Half;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The tensor-core operations behind the attention kernels (common.cuh: mma.sync m16n8k16 on BF16 with FP32
 * accumulation, ldmatrix plain and transposed) against a plain product, through attention_flash.cu's fragment probe:
 * one warp computes a·b + c with fragments gathered by PTX's layout tables, by ldmatrix, and by ldmatrix from b
 * transposed. On a GPU this checks the layouts the kernels assume against the hardware; on the device emulator it
 * checks that its warp-collective mma and ldmatrix put every element where the hardware does, so that the kernels
 * tested there are the kernels that run on the GPU. Skips, with the probe's reason, where CUDA cannot run.
 */
class CudaTensorCoreFragmentTest {
    private static final String[] WAYS = {"fragments by the layout tables", "fragments by ldmatrix",
            "B fragments by ldmatrix from b transposed"};

    private static CudaBackend gpu;

    @RegisterExtension
    static final GpuAndCpu backends = GpuAndCpu.assigning((g, c) -> gpu = g);

    @Test
    void smallIntegersMultiplyExactlyWithEveryElementInItsPlace() {
        // Every product and sum is an integer below 2^11: exact in BF16 operands and in FP32, so any element read
        // from the wrong lane, register or half of a register changes the result.
        Random r = new Random(1);
        float[] a = new float[256], b = new float[256], c = new float[256];
        for (int i = 0; i < 256; i++) {
            a[i] = r.nextInt(15) - 7;
            b[i] = r.nextInt(15) - 7;
            c[i] = r.nextInt(201) - 100;
        }
        float[][] d = probe(a, b, c);
        double[] want = product(a, b, c);
        for (int way = 0; way < 3; way++) {
            for (int i = 0; i < 256; i++) {
                assertThat((double) d[way][i]).as("%s: d[%d][%d]", WAYS[way], i / 16, i % 16).isEqualTo(want[i]);
            }
        }
    }

    @Test
    void eachOperandElementReachesExactlyTheOutputsItShould() {
        // a = one unit element at (row, col): d = b's row col placed in d's row row, plus c. Over all 256 positions.
        float[] b = new float[256], c = new float[256];
        for (int i = 0; i < 256; i++) b[i] = i + 1;
        for (int row = 0; row < 16; row++) {
            for (int col = 0; col < 16; col++) {
                float[] a = new float[256];
                a[row * 16 + col] = 1;
                float[][] d = probe(a, b, c);
                for (int way = 0; way < 3; way++) {
                    for (int i = 0; i < 256; i++) {
                        float want = i / 16 == row ? b[col * 16 + i % 16] : 0;
                        assertThat(d[way][i]).as("%s, a[%d][%d] = 1: d[%d][%d]", WAYS[way], row, col, i / 16, i % 16)
                                .isEqualTo(want);
                    }
                }
            }
        }
    }

    @Test
    void randomValuesAccumulateInFp32() {
        // BF16 products are exact in FP32; the sum of 16 of them and c may round at each step, within
        // 16 units of 2^-24 of the sum of magnitudes (the hardware's adder need not round as a sequence of FP32 adds).
        Random r = new Random(2);
        float[] a = new float[256], b = new float[256], c = new float[256];
        for (int i = 0; i < 256; i++) {
            a[i] = Half.bf16ToFloat(Half.floatToBf16((float) r.nextGaussian()));
            b[i] = Half.bf16ToFloat(Half.floatToBf16((float) (r.nextGaussian() * 3)));
            c[i] = (float) r.nextGaussian();
        }
        float[][] d = probe(a, b, c);
        double[] want = product(a, b, c);
        for (int i = 0; i < 256; i++) {
            double magnitude = Math.abs(c[i]);
            for (int k = 0; k < 16; k++) magnitude += Math.abs((double) a[i / 16 * 16 + k] * b[k * 16 + i % 16]);
            for (int way = 0; way < 3; way++) {
                assertThat((double) d[way][i]).as("%s: d[%d][%d]", WAYS[way], i / 16, i % 16)
                        .isCloseTo(want[i], org.assertj.core.data.Offset.offset(16 * 0x1p-24 * magnitude));
            }
        }
        assertThat(d[1]).as("the ways agree bit for bit").containsExactly(d[0]);
        assertThat(d[2]).as("the ways agree bit for bit").containsExactly(d[0]);
    }

    /** a·b + c in double, row-major 16 x 16. */
    private static double[] product(float[] a, float[] b, float[] c) {
        double[] d = new double[256];
        for (int i = 0; i < 16; i++) {
            for (int j = 0; j < 16; j++) {
                double s = c[i * 16 + j];
                for (int k = 0; k < 16; k++) s += (double) a[i * 16 + k] * b[k * 16 + j];
                d[i * 16 + j] = s;
            }
        }
        return d;
    }

    /** The probe's three results; a and b must be BF16 values. */
    private static float[][] probe(float[] a, float[] b, float[] c) {
        try (Tensor at = gpu.fromFloats(a, DType.BF16, 16, 16); Tensor bt = gpu.fromFloats(b, DType.BF16, 16, 16);
             Tensor ct = gpu.fromFloats(c, DType.F32, 16, 16); Tensor dt = gpu.allocate(DType.F32, 3, 16, 16)) {
            gpu.flashAttention().fragmentProbe(((CudaTensor) at).address(), ((CudaTensor) bt).address(),
                    ((CudaTensor) ct).address(), ((CudaTensor) dt).address());
            float[] all = gpu.toFloats(dt);
            float[][] d = new float[3][256];
            for (int way = 0; way < 3; way++) System.arraycopy(all, way * 256, d[way], 0, 256);
            return d;
        }
    }
}
