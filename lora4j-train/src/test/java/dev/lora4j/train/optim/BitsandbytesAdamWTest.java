package dev.lora4j.train.optim;

import dev.lora4j.backend.MemoryPlacement;
import dev.lora4j.backend.testing.BitsandbytesAdamReference;
import dev.lora4j.backend.testing.RandomTensors;
import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.model.TrainableParameter;
import dev.lora4j.quant.DynamicMap;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * The optimizer names users know, and bitsandbytes' AdamW over a model's parameters: which parameters get 8-bit
 * states (bitsandbytes' min_8bit_size), that each is updated by bitsandbytes' algorithm, and that checkpoints resume
 * exactly.
 */
class BitsandbytesAdamWTest {
    private static final float B1 = 0.9f, B2 = 0.999f, EPS = 1e-8f;
    private final CpuBackend backend = new CpuBackend(2);
    private final RandomTensors random = new RandomTensors(21);

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
        try (Tensor t = backend.fromFloats(g, DType.F32, g.length)) {
            backend.copy(t, p.grad());
        }
    }

    private static AdamW.Hyperparameters hp(double weightDecay) {
        return new AdamW.Hyperparameters(B1, B2, EPS, weightDecay);
    }

    // ---- names ----------------------------------------------------------------------------------------------

    @Test
    void theFourNamesAndTransformersAliasesParseAndOthersAreRefusedWithTheList() {
        assertThat(OptimizerType.parse("adamw_torch")).isEqualTo(OptimizerType.ADAMW_TORCH);
        assertThat(OptimizerType.parse("adamw_torch_fused")).isEqualTo(OptimizerType.ADAMW_TORCH);
        assertThat(OptimizerType.parse(" Paged_AdamW_32bit ")).isEqualTo(OptimizerType.PAGED_ADAMW_32BIT);
        assertThat(OptimizerType.parse("adamw_8bit")).isEqualTo(OptimizerType.ADAMW_8BIT);
        assertThat(OptimizerType.parse("adamw_bnb_8bit")).isEqualTo(OptimizerType.ADAMW_8BIT);
        assertThat(OptimizerType.parse("paged_adamw_8bit")).isEqualTo(OptimizerType.PAGED_ADAMW_8BIT);
        assertThatThrownBy(() -> OptimizerType.parse("adafactor")).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("\"adafactor\"").hasMessageContaining("adamw_torch, paged_adamw_32bit, adamw_8bit or paged_adamw_8bit");
        assertThat(OptimizerType.PAGED_ADAMW_8BIT.paged()).isTrue();
        assertThat(OptimizerType.PAGED_ADAMW_8BIT.eightBit()).isTrue();
        assertThat(OptimizerType.PAGED_ADAMW_32BIT.eightBit()).isFalse();
    }

    @Test
    void stateBytesPerParameterAreTwoBytesAndTwoScalesPerBlockInEightBitsAndEightBytesOtherwise() {
        assertThat(OptimizerType.ADAMW_8BIT.stateBytes(4096)).isEqualTo(2 * 4096 + 2 * 4 * 16);
        assertThat(OptimizerType.ADAMW_8BIT.stateBytes(4097)).isEqualTo(2 * 4097 + 2 * 4 * 17);
        assertThat(OptimizerType.ADAMW_8BIT.stateBytes(4095)).as("below min_8bit_size").isEqualTo(8 * 4095);
        assertThat(OptimizerType.PAGED_ADAMW_32BIT.stateBytes(100)).isEqualTo(800);
        assertThat(OptimizerType.ADAMW_TORCH.stateBytes(100)).isEqualTo(800);
    }

    // ---- the update -----------------------------------------------------------------------------------------

    @Test
    void parametersBelowMinEightBitSizeKeepThirtyTwoBitStatesAndEachFollowsItsKernel() {
        float[] w0 = random.gaussian(5000, 1), b0 = random.gaussian(4095, 1);
        TrainableParameter w = param("w", w0, true), b = param("b", b0, false);
        float[] pw = w0.clone(), pb = b0.clone(), mb = new float[4095], vb = new float[4095];
        byte[] m8 = new byte[5000], v8 = new byte[5000];
        float[] am = new float[20], av = new float[20];
        try (BitsandbytesAdamW opt = new BitsandbytesAdamW(backend, List.of(w, b), hp(0.1), OptimizerType.ADAMW_8BIT,
                BitsandbytesAdamW.MIN_8BIT_SIZE)) {
            assertThat(opt.eightBitParameters()).isEqualTo(1);
            assertThat(opt.hostState("w")).extracting(x -> x.length).containsExactly(5000, 5000, 80, 80);
            assertThat(opt.hostState("b")).extracting(x -> x.length).as("F32 moments").containsExactly(4 * 4095, 4 * 4095);
            assertThat(opt.stateBytes()).isEqualTo(2 * 5000 + 2 * 4 * 20 + 2 * 4 * 4095 + 2 * 4 * 256);
            for (int step = 1; step <= 4; step++) {
                float[] gw = random.gaussian(5000, 0.1), gb = random.gaussian(4095, 0.1);
                setGrad(w, gw);
                setGrad(b, gb);
                double lr = 1e-2 * step;
                opt.step(lr);
                BitsandbytesAdamReference.step8bit(pw, gw, m8, v8, am, av, DynamicMap.signed(), DynamicMap.unsigned(),
                        (float) lr, B1, B2, EPS, 0.1f, step);
                BitsandbytesAdamReference.step32bit(pb, gb, mb, vb, (float) lr, B1, B2, EPS, 0f, step);
            }
            assertThat(backend.toFloats(w.value())).containsExactly(pw);
            assertThat(backend.toFloats(b.value())).as("no decay on b").containsExactly(pb);
            assertThat(opt.hostState("w").get(0)).containsExactly(m8);
            assertThat(opt.hostState("w").get(1)).containsExactly(v8);
            assertThat(floats(opt.hostState("b").get(0))).containsExactly(mb);
        }
    }

    @Test
    void pagedAdamW32BitIsBitsandbytes32BitUpdateForEveryParameter() {
        float[] w0 = random.gaussian(300, 1);
        TrainableParameter w = param("w", w0, true);
        float[] pw = w0.clone(), m = new float[300], v = new float[300];
        try (Optimizer opt = Optimizer.create(OptimizerType.PAGED_ADAMW_32BIT, backend, List.of(w), hp(0.01))) {
            for (int step = 1; step <= 3; step++) {
                float[] g = random.gaussian(300, 0.1);
                setGrad(w, g);
                opt.step(1e-3);
                BitsandbytesAdamReference.step32bit(pw, g, m, v, 1e-3f, B1, B2, EPS, 0.01f, step);
            }
            assertThat(backend.toFloats(w.value())).containsExactly(pw);
            assertThat(opt.stateMemory()).as("paged state on the CPU is host memory").containsOnlyKeys(MemoryPlacement.HOST);
        }
    }

    // ---- checkpoints -----------------------------------------------------------------------------------------

    @Test
    void aRunResumedFromSavedEightBitStatesContinuesExactly() throws IOException {
        float[] w0 = random.gaussian(70_000, 1), b0 = random.gaussian(33, 1);
        float[][] grads = new float[6][];
        for (int i = 0; i < grads.length; i++) grads[i] = random.gaussian(70_033, 0.1);
        Path file = dir.resolve("optimizer.safetensors");
        float[] straightW, straightB;
        // Uninterrupted: six steps.
        TrainableParameter w = param("w", w0, true), b = param("b", b0, false);
        try (Optimizer opt = Optimizer.create(OptimizerType.PAGED_ADAMW_8BIT, backend, List.of(w, b), hp(0.05))) {
            for (int s = 0; s < 6; s++) {
                step(opt, w, b, grads[s], 1e-3 * (s + 1));
                if (s == 2) opt.save(file);
            }
            straightW = backend.toFloats(w.value());
            straightB = backend.toFloats(b.value());
        }
        // Resumed after three: a fresh optimizer loads the checkpoint over the parameters as they were then.
        float[] w3, b3;
        TrainableParameter w2 = param("w", w0, true), b2 = param("b", b0, false);
        try (Optimizer opt = Optimizer.create(OptimizerType.PAGED_ADAMW_8BIT, backend, List.of(w2, b2), hp(0.05))) {
            for (int s = 0; s < 3; s++) step(opt, w2, b2, grads[s], 1e-3 * (s + 1));
            w3 = backend.toFloats(w2.value());
            b3 = backend.toFloats(b2.value());
        }
        TrainableParameter w4 = param("w", w3, true), b4 = param("b", b3, false);
        try (Optimizer opt = Optimizer.create(OptimizerType.PAGED_ADAMW_8BIT, backend, List.of(w4, b4), hp(0.05))) {
            opt.load(file);
            assertThat(opt.steps()).isEqualTo(3);
            for (int s = 3; s < 6; s++) step(opt, w4, b4, grads[s], 1e-3 * (s + 1));
            assertThat(backend.toFloats(w4.value())).containsExactly(straightW);
            assertThat(backend.toFloats(b4.value())).containsExactly(straightB);
        }
    }

    private void step(Optimizer opt, TrainableParameter w, TrainableParameter b, float[] g, double lr) {
        float[] gw = new float[(int) w.numel()], gb = new float[(int) b.numel()];
        System.arraycopy(g, 0, gw, 0, gw.length);
        System.arraycopy(g, gw.length, gb, 0, gb.length);
        setGrad(w, gw);
        setGrad(b, gb);
        opt.step(lr);
    }

    @Test
    void aCheckpointOfAnotherOptimizerOrConfigurationIsRefusedSayingWhat() throws IOException {
        TrainableParameter w = param("w", random.gaussian(5000, 1), true);
        Path torch = dir.resolve("torch.safetensors"), eight = dir.resolve("eight.safetensors");
        try (Optimizer opt = Optimizer.create(OptimizerType.ADAMW_TORCH, backend, List.of(w), hp(0))) {
            opt.save(torch);
        }
        try (Optimizer opt = Optimizer.create(OptimizerType.ADAMW_8BIT, backend, List.of(w), hp(0))) {
            assertThatThrownBy(() -> opt.load(torch)).isInstanceOf(IOException.class)
                    .hasMessageContaining("holds the state of optimizer adamw_torch, but this run uses adamw_8bit");
            opt.save(eight);
        }
        try (Optimizer opt = Optimizer.create(OptimizerType.ADAMW_TORCH, backend, List.of(w), hp(0))) {
            assertThatThrownBy(() -> opt.load(eight)).isInstanceOf(IOException.class)
                    .hasMessageContaining("holds the state of optimizer adamw_8bit, but this run uses adamw_torch");
        }
        try (BitsandbytesAdamW opt = new BitsandbytesAdamW(backend, List.of(w), hp(0), OptimizerType.ADAMW_8BIT, 100)) {
            assertThatThrownBy(() -> opt.load(eight)).isInstanceOf(IOException.class).hasMessageContaining("min_8bit_size 4096");
        }
        TrainableParameter other = param("other", new float[5000], true);
        try (Optimizer opt = Optimizer.create(OptimizerType.ADAMW_8BIT, backend, List.of(other), hp(0))) {
            assertThatThrownBy(() -> opt.load(eight)).isInstanceOf(IOException.class).hasMessageContaining("has no tensor other.state1");
        }
    }

    @Test
    void describeSaysWhichParametersHaveEightBitStatesAndWhereTheStateLives() {
        TrainableParameter w = param("w", new float[5000], true), b = param("b", new float[10], false);
        try (Optimizer opt = Optimizer.create(OptimizerType.PAGED_ADAMW_8BIT, backend, List.of(w, b), hp(0))) {
            assertThat(opt.describe()).startsWith("optimizer paged_adamw_8bit: ").contains("in host memory")
                    .contains("8-bit states for 1 of 2 parameters").contains("fewer than 4096 elements");
        }
    }

    private static float[] floats(byte[] bytes) {
        float[] f = new float[bytes.length / 4];
        ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(f);
        return f;
    }
}
