package dev.lora4j.train.optim;

import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.model.TrainableParameter;
import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

class AdamWTest {
    private final CpuBackend backend = new CpuBackend(2);

    @TempDir
    Path dir;

    @AfterEach
    void close() {
        backend.close();
    }

    private TrainableParameter param(String name, float[] values, boolean decay) {
        return new TrainableParameter(name, backend.fromFloats(values, DType.F32, values.length),
                backend.allocate(DType.F32, values.length), decay);
    }

    private void setGrad(TrainableParameter p, float[] g) {
        try (var t = backend.fromFloats(g, DType.F32, g.length)) {
            backend.copy(t, p.grad());
        }
    }

    /** torch.optim.AdamW's update in double precision. */
    private static void reference(double[] p, double[] g, double[] m, double[] v, double lr, double wd, int step) {
        double b1 = 0.9, b2 = 0.999, eps = 1e-8;
        for (int i = 0; i < p.length; i++) {
            p[i] *= 1 - lr * wd;
            m[i] = b1 * m[i] + (1 - b1) * g[i];
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
            double mHat = m[i] / (1 - Math.pow(b1, step)), vHat = v[i] / (1 - Math.pow(b2, step));
            p[i] -= lr * mHat / (Math.sqrt(vHat) + eps);
        }
    }

    @Test
    void stepsFollowTorchAdamWAndDecayOnlyTheParametersThatDecay() {
        Random r = new Random(3);
        float[] w0 = new float[37], b0 = new float[5];
        for (int i = 0; i < w0.length; i++) w0[i] = (float) r.nextGaussian();
        for (int i = 0; i < b0.length; i++) b0[i] = (float) r.nextGaussian();
        TrainableParameter w = param("w", w0, true), b = param("b", b0, false);
        double[] pw = toDouble(w0), pb = toDouble(b0), mw = new double[37], vw = new double[37], mb = new double[5], vb = new double[5];
        try (AdamW opt = new AdamW(backend, List.of(w, b), new AdamW.Hyperparameters(0.9, 0.999, 1e-8, 0.1))) {
            for (int step = 1; step <= 5; step++) {
                float[] gw = new float[37], gb = new float[5];
                for (int i = 0; i < gw.length; i++) gw[i] = (float) r.nextGaussian();
                for (int i = 0; i < gb.length; i++) gb[i] = (float) r.nextGaussian();
                setGrad(w, gw);
                setGrad(b, gb);
                double lr = 1e-2 * step;
                opt.step(lr);
                reference(pw, toDouble(gw), mw, vw, (float) lr, 0.1, step);
                reference(pb, toDouble(gb), mb, vb, (float) lr, 0.0, step);
            }
            assertThat(opt.steps()).isEqualTo(5);
            assertClose(backend.toFloats(w.value()), pw);
            assertClose(backend.toFloats(b.value()), pb);
        }
    }

    @Test
    void momentsSurviveASaveAndLoadExactly() throws IOException {
        TrainableParameter w = param("base_model.model.x.lora_A.weight", new float[]{1, 2, 3}, true);
        Path file = dir.resolve("optimizer.safetensors");
        try (AdamW opt = new AdamW(backend, List.of(w), AdamW.Hyperparameters.defaults())) {
            setGrad(w, new float[]{0.5f, -1f, 2f});
            opt.step(1e-3);
            opt.step(1e-3);
            opt.save(file);
            try (AdamW fresh = new AdamW(backend, List.of(w), AdamW.Hyperparameters.defaults())) {
                fresh.load(file);
                assertThat(fresh.steps()).isEqualTo(2);
                assertThat(fresh.moments(w.name()).get("exp_avg")).containsExactly(opt.moments(w.name()).get("exp_avg"));
                assertThat(fresh.moments(w.name()).get("exp_avg_sq")).containsExactly(opt.moments(w.name()).get("exp_avg_sq"));
            }
        }
        TrainableParameter other = param("another", new float[]{1, 2, 3}, true);
        try (AdamW mismatched = new AdamW(backend, List.of(other), AdamW.Hyperparameters.defaults())) {
            assertThatThrownBy(() -> mismatched.load(file)).isInstanceOf(IOException.class)
                    .hasMessageContaining("has no tensor another.exp_avg");
        }
    }

    @Test
    void clippingScalesToTheMaximumNormAsClipGradNormDoes() {
        TrainableParameter a = param("a", new float[2], true), b = param("b", new float[1], true);
        setGrad(a, new float[]{3, 0});
        setGrad(b, new float[]{4});
        double norm = GradientClipping.clip(backend, List.of(a, b), 1.0);
        assertThat(norm).isEqualTo(5.0);
        float coef = 1f / (5f + 1e-6f);
        assertThat(backend.toFloats(a.grad())).containsExactly(3 * coef, 0);
        assertThat(backend.toFloats(b.grad())).containsExactly(4 * coef);
    }

    @Test
    void gradientsWithinTheMaximumAreLeftAlone() {
        TrainableParameter a = param("a", new float[2], true);
        setGrad(a, new float[]{0.3f, 0.4f});
        assertThat(GradientClipping.clip(backend, List.of(a), 1.0)).isCloseTo(0.5, within(1e-7));
        assertThat(backend.toFloats(a.grad())).containsExactly(0.3f, 0.4f);
        setGrad(a, new float[]{30f, 40f});
        assertThat(GradientClipping.clip(backend, List.of(a), 0)).isCloseTo(50, within(1e-5));
        assertThat(backend.toFloats(a.grad())).containsExactly(30f, 40f);
    }

    private static double[] toDouble(float[] f) {
        double[] d = new double[f.length];
        for (int i = 0; i < f.length; i++) d[i] = f[i];
        return d;
    }

    private static void assertClose(float[] actual, double[] expected) {
        for (int i = 0; i < actual.length; i++) assertThat((double) actual[i]).isCloseTo(expected[i], within(1e-5 + 1e-5 * Math.abs(expected[i])));
    }
}
