package dev.lora4j.cuda;

import dev.lora4j.backend.BackendProvider;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.Random;

import static dev.lora4j.cuda.Bf16Values.bf;
import static dev.lora4j.cuda.Bf16Values.gaussian;
import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * {@code loraUpBackward} in one read of dY (lora_up.cu, the default; {@code -Dlora4j.cuda.fused-lora-up-backward=false}
 * turns it off) against a
 * scalar reference of its definition: gradB gains dYᵀ·hidden (FP32 sums of exact BF16 products, so within a few
 * FP32 steps of the reference's double sums) and dHidden = dY·b with b rounded to BF16 (within one BF16 step). Shapes
 * cover partial column blocks and row steps, several row splits, and ranks under 16. Skips, with the probe's reason,
 * where CUDA cannot run.
 */
class CudaLoraUpBackwardTest {
    private static CudaBackend gpu;
    private static String unavailable;

    @BeforeAll
    static void open() {
        System.clearProperty(CudaLora.UP_BACKWARD_PROPERTY);  // the default
        BackendProvider.Availability a = new CudaBackendProvider().probe();
        if (!a.available()) {
            unavailable = "CUDA backend unavailable: " + a.detail();
            return;
        }
        gpu = CudaBackend.open(CudaProbe.deviceOrdinal(), DType.BF16);
    }

    @BeforeEach
    void requireGpu() {
        assumeTrue(gpu != null, unavailable);
    }

    @AfterAll
    static void close() {
        System.clearProperty(CudaLora.UP_BACKWARD_PROPERTY);
        if (gpu != null) gpu.close();
    }

    @org.junit.jupiter.api.Test
    void servesByDefaultAndGivesWayToTheTwoProductsWhenTurnedOff() {
        try (Tensor dy = gpu.allocate(DType.BF16, 64, 512); Tensor h = gpu.allocate(DType.BF16, 64, 16);
             Tensor b = gpu.allocate(DType.F32, 512, 16)) {
            assertThat(CudaLora.servesUp(dy, h, b)).as("by default").isTrue();
            System.setProperty(CudaLora.UP_BACKWARD_PROPERTY, "false");
            try {
                assertThat(CudaLora.servesUp(dy, h, b)).as("turned off").isFalse();
            } finally {
                System.clearProperty(CudaLora.UP_BACKWARD_PROPERTY);
            }
        }
    }

    @org.junit.jupiter.api.Test
    void aDyOffASixteenByteBoundaryTakesTheTwoProducts() {
        // dY one element into its buffer: the kernel's 16-byte reads cannot take it, so the call composes the two
        // products, exactly as it does with the fused path turned off.
        int n = 64, m = 512, r = 16;
        Random rnd = new Random(3);
        float[] dy = gaussian(rnd, n * m + 1, 1f, true), h = gaussian(rnd, n * r, 1f, true);
        float[] b = gaussian(rnd, m * r, 0.3f, false);
        float[][] got = new float[2][];
        for (int run = 0; run < 2; run++) {
            if (run == 1) System.setProperty(CudaLora.UP_BACKWARD_PROPERTY, "false");
            try (Tensor whole = gpu.fromFloats(dy, DType.BF16, n * m + 1); Tensor th = gpu.fromFloats(h, DType.BF16, n, r);
                 Tensor tb = gpu.fromFloats(b, DType.F32, m, r); Tensor tg = gpu.allocate(DType.F32, m, r);
                 Tensor tdh = gpu.allocate(DType.BF16, n, r)) {
                gpu.zero(tg);
                gpu.loraUpBackward(whole.view(1, n, m), th, tb, tg, tdh);
                float[] g = gpu.toFloats(tg), d = gpu.toFloats(tdh);
                got[run] = java.util.Arrays.copyOf(g, g.length + d.length);
                System.arraycopy(d, 0, got[run], g.length, d.length);
            } finally {
                System.clearProperty(CudaLora.UP_BACKWARD_PROPERTY);
            }
        }
        assertThat(got[0]).containsExactly(got[1]);
    }

    @org.junit.jupiter.api.Test
    void splitsRowsToFillTheGpuWithoutLettingGradBsPartialsPassTheirBound() {
        // Mistral-7B's gate (m = 14336) at 4,096 tokens, 132 SMs: 28 column blocks need 16 row splits to give two
        // blocks per SM, but 16 x 14336 x 16 floats is 14.7 MB: 8 splits (7.3 MB) it is.
        assertThat(CudaLora.upBlockRows(4096, 14336, 16, 132)).isEqualTo(512);
        // q (m = 4096): 8 column blocks; 32 row splits (256 blocks, still under 264) take exactly the 8 MiB bound,
        // 64 would take twice that: 128 rows.
        assertThat(CudaLora.upBlockRows(4096, 4096, 16, 132)).isEqualTo(128);
        // A small GPU and a short batch: halved down to one step, the bound never near.
        assertThat(CudaLora.upBlockRows(256, 1024, 16, 4)).isEqualTo(64);
    }

    @ParameterizedTest(name = "n {0}, m {1}, rank {2}")
    @CsvSource({"100, 1000, 16", "64, 512, 8", "300, 136, 16", "5, 8, 1", "1500, 1024, 16"})
    void formsBothGradientsFromOneReadOfDy(int n, int m, int r) {
        Random rnd = new Random(17L * n + m + r);
        float[] dy = gaussian(rnd, n * m, 1f, true), h = gaussian(rnd, n * r, 1f, true);
        float[] b = gaussian(rnd, m * r, 0.3f, false), gradB0 = gaussian(rnd, m * r, 0.5f, false);
        double[] wantGradB = new double[m * r];
        for (int c = 0; c < m; c++) {
            for (int j = 0; j < r; j++) {
                double s = 0;
                for (int i = 0; i < n; i++) s += (double) dy[i * m + c] * h[i * r + j];
                wantGradB[c * r + j] = gradB0[c * r + j] + s;
            }
        }
        float[] wantDh = new float[n * r];
        double[] dhMagnitude = new double[n * r];  // sum of |terms|: the scale of an FP32 sum's rounding
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < r; j++) {
                double s = 0, abs = 0;
                for (int c = 0; c < m; c++) {
                    double term = (double) dy[i * m + c] * bf(b[c * r + j]);
                    s += term;
                    abs += Math.abs(term);
                }
                wantDh[i * r + j] = bf((float) s);
                dhMagnitude[i * r + j] = abs;
            }
        }
        try (Tensor tdy = gpu.fromFloats(dy, DType.BF16, n, m); Tensor th = gpu.fromFloats(h, DType.BF16, n, r);
             Tensor tb = gpu.fromFloats(b, DType.F32, m, r); Tensor tg = gpu.fromFloats(gradB0, DType.F32, m, r);
             Tensor tdh = gpu.allocate(DType.BF16, n, r)) {
            assertThat(CudaLora.servesUp(tdy, th, tb)).as("the fused kernel takes these operands").isTrue();
            gpu.loraUpBackward(tdy, th, tb, tg, tdh);
            float[] gotGradB = gpu.toFloats(tg), gotDh = gpu.toFloats(tdh);
            for (int e = 0; e < wantGradB.length; e++) {
                // FP32 sums of n exact products: each addition rounds by at most half a step of the running sum
                double bound = 1e-6 * (Math.abs(gradB0[e]) + Math.sqrt(n) * 4 + n * 1e-2);
                assertThat((double) gotGradB[e]).as("gradB element %d", e).isCloseTo(wantGradB[e],
                        org.assertj.core.data.Offset.offset(bound));
            }
            int off = 0;
            for (int e = 0; e < wantDh.length; e++) {
                if (gotDh[e] == wantDh[e]) continue;
                off++;
                // one BF16 step, or, where the terms nearly cancel, what FP32 summation of them can move
                double step = Math.ulp(bf(Math.max(Math.abs(gotDh[e]), Math.abs(wantDh[e])))) * 65536.0;
                double bound = Math.max(step, 1e-6 * dhMagnitude[e]);
                assertThat((double) Math.abs(gotDh[e] - wantDh[e])).as("dHidden element %d: %s against %s", e,
                        gotDh[e], wantDh[e]).isLessThanOrEqualTo(bound);
            }
            assertThat(off).as("dHidden elements one BF16 step away").isLessThanOrEqualTo(Math.max(2, wantDh.length / 50));
        }
    }
}
