package dev.lora4j.cuda;

import dev.lora4j.backend.Backend;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.Random;

import static dev.lora4j.cuda.Bf16Values.bf;
import static dev.lora4j.cuda.Bf16Values.gaussian;
import static org.assertj.core.api.Assertions.assertThat;

/**
 * {@code swigluWithLora} in one pass (swiglu_lora.cu) against a scalar reference of its definition: gate and up each
 * gain their adapter's B product (BF16 operands, FP32 sum, rounded once to BF16) and out = silu(gate)·up from the
 * rounded values. The products sum 16 exact BF16 x BF16 terms per k-step in an order the tensor cores choose, so an
 * element may land one BF16 step from the reference where the sum falls near a rounding boundary; everything else is
 * exact. Shapes cover partial row and column tiles, ranks below, at and over one k-step, and the composition's path
 * (F32 activations) for the same call. Skips, with the probe's reason, where CUDA cannot run.
 */
class CudaSwigluWithLoraTest {
    private static CudaBackend f32;
    private static CudaBackend bf16;
    @RegisterExtension
    static final GpuBackends backends = GpuBackends.assigning((a, b) -> { f32 = a; bf16 = b; });

    /** gate (or up) after its adapter: round(base + sum_k bf16(h[i][k]) bf16(b[j][k])), the sum in double. */
    private static float[] withAdapter(float[] base, float[] h, float[] b, int n, int ff, int r) {
        float[] out = new float[n * ff];
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < ff; j++) {
                double s = 0;
                for (int k = 0; k < r; k++) s += (double) h[i * r + k] * bf(b[j * r + k]);
                out[i * ff + j] = bf((float) (base[i * ff + j] + s));
            }
        }
        return out;
    }

    /** Within one BF16 step of the reference (the steps of the larger magnitude). */
    private static void assertNear(float[] got, float[] want, String what) {
        assertThat(got).hasSameSizeAs(want);
        int off = 0;
        for (int i = 0; i < want.length; i++) {
            float step = Math.ulp(bf(Math.max(Math.abs(got[i]), Math.abs(want[i])))) * 65536f;
            if (got[i] != want[i]) {
                off++;
                assertThat(Math.abs(got[i] - want[i])).as("%s element %d: %s against %s", what, i, got[i], want[i])
                        .isLessThanOrEqualTo(step);
            }
        }
        assertThat(off).as(what + ": elements one step away").isLessThanOrEqualTo(Math.max(2, want.length / 100));
    }

    @ParameterizedTest(name = "n {0}, ff {1}, rank {2}")
    @CsvSource({"64, 256, 16", "37, 136, 8", "100, 1000, 24", "33, 128, 64", "5, 8, 1"})
    void addsBothAdaptersThenTakesTheProductOfTheRoundedSums(int n, int ff, int r) {
        Random rnd = new Random(31L * n + ff + r);
        float[] gate = gaussian(rnd, n * ff, 2f, true), up = gaussian(rnd, n * ff, 2f, true);
        float[] hg = gaussian(rnd, n * r, 0.5f, true), hu = gaussian(rnd, n * r, 0.5f, true);
        float[] bg = gaussian(rnd, ff * r, 0.5f, false), bu = gaussian(rnd, ff * r, 0.5f, false);
        float[] wantGate = withAdapter(gate, hg, bg, n, ff, r), wantUp = withAdapter(up, hu, bu, n, ff, r);
        float[] wantOut = new float[n * ff];
        for (int i = 0; i < wantOut.length; i++) {
            float g = wantGate[i];
            wantOut[i] = bf(g / (1.0f + (float) Math.exp(-g)) * wantUp[i]);
        }
        for (Backend b : new Backend[]{bf16, f32}) {
            DType act = b.activationType();
            try (Tensor tg = b.fromFloats(gate, act, n, ff); Tensor tu = b.fromFloats(up, act, n, ff);
                 Tensor out = b.allocate(act, n, ff);
                 Tensor thg = b.fromFloats(hg, act, n, r); Tensor thu = b.fromFloats(hu, act, n, r);
                 Tensor tbg = b.fromFloats(bg, DType.F32, ff, r); Tensor tbu = b.fromFloats(bu, DType.F32, ff, r)) {
                b.swigluWithLora(tg, thg, tbg, tu, thu, tbu, out);
                if (act == DType.BF16) {
                    assertNear(b.toFloats(tg), wantGate, "gate");
                    assertNear(b.toFloats(tu), wantUp, "up");
                    // out from the kernel's own rounded gate and up: silu computed as the reference computes it
                    float[] g = b.toFloats(tg), u = b.toFloats(tu), o = b.toFloats(out);
                    for (int i = 0; i < o.length; i++) {
                        float want = bf(g[i] / (1.0f + (float) Math.exp(-g[i])) * u[i]);
                        assertThat(Math.abs(o[i] - want)).as("out element %d", i)
                                .isLessThanOrEqualTo(Math.ulp(bf(Math.abs(want))) * 65536f);
                    }
                    assertNear(o, wantOut, "out");
                } else {
                    // F32 activations take the composition, in FP32 throughout: gate + h b^T with nothing rounded
                    float[] g = b.toFloats(tg);
                    for (int i = 0; i < n; i++) {
                        for (int j = 0; j < ff; j++) {
                            double want = gate[i * ff + j];
                            for (int k = 0; k < r; k++) want += (double) hg[i * r + k] * bg[j * r + k];
                            assertThat((double) g[i * ff + j]).as("F32 gate [%d, %d]", i, j)
                                    .isCloseTo(want, org.assertj.core.data.Offset.offset(1e-5 * (1 + Math.abs(want))));
                        }
                    }
                }
            }
        }
    }
}
