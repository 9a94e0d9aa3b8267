package dev.lora4j.model;

import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.lora.LoraConfig;
import dev.lora4j.lora.PeftAdapter;
import dev.lora4j.lora.TargetModules;
import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The backward pass of {@link TrainableLlama} against central finite differences of a double-precision reference
 * loss ({@link ReferenceLoraLlama}): the analytic gradient of every kind of trainable parameter (LoRA A and B,
 * biases, norm weights, embeddings, projections, lm_head) must equal the numerical derivative of the summed loss.
 */
class TrainableLlamaGradientTest {
    /** Two rows of different lengths; some labels ignored, as prompt masking does. */
    static final TrainingBatch BATCH = new TrainingBatch(
            new int[][]{{3, 17, 42, 0, 60, 5, 9}, {8, 1, 33, 12, 50}},
            new int[][]{{3, 17, -100, 0, 60, 5, 9}, {-100, -100, 33, 12, 50}}, 11);
    private static final double EPS = 1e-3;
    private static final Pattern LAYER_PATH = Pattern.compile("model\\.layers\\.(\\d+)\\.(.+)");
    private static CpuBackend cpu;

    @BeforeAll
    static void open() { cpu = new CpuBackend(2); }

    @AfterAll
    static void close() { cpu.close(); }

    static Stream<Arguments> loraVariants() {
        LoraConfig base = LoraConfig.defaults().withInitLoraWeights("false");
        return Stream.of(
                Arguments.of("llama, all-linear, r=4", TinyModels.llama(), DType.F32,
                        base.withR(4).withLoraAlpha(8).withTargetModules(TargetModules.allLinear())),
                Arguments.of("llama, BF16 frozen base, q and v", TinyModels.llama(), DType.BF16, base.withR(3).withLoraAlpha(5)),
                Arguments.of("qwen2, tied, bias=all, rslora, lm_head in modules_to_save", TinyModels.qwen2(3), DType.F32,
                        base.withR(2).withLoraAlpha(4).withUseRslora(true).withBias("all")
                                .withTargetModules(TargetModules.names("q_proj", "k_proj", "o_proj", "up_proj"))
                                .withModulesToSave(List.of("lm_head"))),
                Arguments.of("llama with biases, bias=lora_only, patterns, layer 1 only", TinyModels.llamaWithBiases(), DType.F32,
                        base.withR(4).withBias("lora_only").withTargetModules(TargetModules.names("v_proj", "o_proj", "down_proj"))
                                .withRankPattern(Map.of("down_proj", 2)).withAlphaPattern(Map.of("o_proj", 3.0))
                                .withLayersToTransform(List.of(1))),
                Arguments.of("qwen2, tied, embed_tokens in modules_to_save (the output side stays frozen)",
                        TinyModels.qwen2(0), DType.BF16, base.withR(2).withModulesToSave(List.of("embed_tokens"))),
                Arguments.of("mistral window 4, dropout 0.3, norms in modules_to_save", TinyModels.mistral(4), DType.F32,
                        base.withR(4).withLoraDropout(0.3).withTargetModules(TargetModules.names("q_proj", "v_proj", "down_proj"))
                                .withModulesToSave(List.of("input_layernorm", "model.norm"))));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("loraVariants")
    void loraGradientsEqualFiniteDifferencesOfADoublePrecisionReference(String name, LlamaShape shape, DType storage,
                                                                       LoraConfig config) {
        ReferenceLlama.Weights host = TinyModels.randomWeights(shape, storage, 5);
        try (TrainableLlama model = TrainableLlama.fromWeights(cpu, TinyModels.upload(cpu, shape, host, storage),
                new FineTuneMethod.Lora(config), 42)) {
            checkGradients(name, model, host, 0.5f, 3);
        }
    }

    @Test
    void fullFineTuningGradientsEqualFiniteDifferencesForEveryKindOfWeight() {
        LlamaShape shape = TinyModels.qwen2(3); // tied embeddings: the table gets both its gradients
        ReferenceLlama.Weights host = TinyModels.randomWeights(shape, DType.BF16, 9);
        try (TrainableLlama model = TrainableLlama.fromWeights(cpu, TinyModels.upload(cpu, shape, host, DType.BF16),
                new FineTuneMethod.Full(), 1)) {
            // Uploaded as BF16 (the values are representable) and promoted to F32 because they train.
            assertThat(model.parameters()).allSatisfy(p -> assertThat(p.value().dtype()).isEqualTo(DType.F32));
            checkGradients("full fine-tuning", model, host, 1f, 2);
        }
    }

    @Test
    void gradientCheckpointingGivesTheSameLossAndGradients() {
        LlamaShape shape = TinyModels.llamaWithBiases();
        ReferenceLlama.Weights host = TinyModels.randomWeights(shape, DType.F32, 3);
        LoraConfig config = LoraConfig.defaults().withInitLoraWeights("false").withLoraDropout(0.2)
                .withTargetModules(TargetModules.allLinear()).withBias("all");
        try (TrainableLlama model = TrainableLlama.fromWeights(cpu, TinyModels.upload(cpu, shape, host, DType.F32),
                new FineTuneMethod.Lora(config), 3)) {
            LossSum plain = model.forwardBackward(BATCH, 1f);
            List<float[]> expected = grads(model);
            model.zeroGrad();
            model.setGradientCheckpointing(true);
            LossSum checkpointed = model.forwardBackward(BATCH, 1f);
            // The same ops on the same values: equal up to the CPU kernels' warm-up rounding (see TrainableLlamaTest).
            assertThat(checkpointed.sum()).isCloseTo(plain.sum(), org.assertj.core.data.Offset.offset(1e-5));
            assertSameUpToRounding(grads(model), expected);
        }
    }

    @Test
    void rowsOfABatchAreIndependentSequences() {
        LlamaShape shape = TinyModels.llama();
        ReferenceLlama.Weights host = TinyModels.randomWeights(shape, DType.F32, 4);
        LoraConfig config = LoraConfig.defaults().withInitLoraWeights("false");
        try (TrainableLlama model = TrainableLlama.fromWeights(cpu, TinyModels.upload(cpu, shape, host, DType.F32),
                new FineTuneMethod.Lora(config), 8)) {
            LossSum both = model.forwardBackward(BATCH, 1f);
            List<float[]> together = grads(model);
            model.zeroGrad();
            LossSum first = model.forwardBackward(new TrainingBatch(new int[][]{BATCH.inputIds()[0]},
                    new int[][]{BATCH.labels()[0]}, 11), 1f);
            LossSum second = model.forwardBackward(new TrainingBatch(new int[][]{BATCH.inputIds()[1]},
                    new int[][]{BATCH.labels()[1]}, 11), 1f);
            List<float[]> separately = grads(model);
            assertThat(both.tokens()).isEqualTo(first.tokens() + second.tokens()).isEqualTo(BATCH.targetCount()).isEqualTo(8);
            assertThat(both.sum()).isCloseTo(first.sum() + second.sum(), org.assertj.core.data.Offset.offset(1e-4));
            for (int i = 0; i < together.size(); i++) {
                float[] a = together.get(i), b = separately.get(i);
                for (int j = 0; j < a.length; j++) {
                    assertThat((double) a[j]).isCloseTo(b[j], org.assertj.core.data.Offset.offset(1e-5 + 1e-4 * Math.abs(b[j])));
                }
            }
        }
    }

    // ---- the check -------------------------------------------------------------------------------------------

    /**
     * Runs forward and backward with {@code gradScale}, then compares sampled elements of every parameter's gradient
     * with gradScale × the central difference of the reference's summed loss.
     */
    private static void checkGradients(String name, TrainableLlama model, ReferenceLlama.Weights host, float gradScale,
                                       int samplesPerTensor) {
        ReferenceLlama.Weights ref = untieIfNeeded(model.shape(), host);
        Map<String, ReferenceLoraLlama.Adapter> adapters = adapters(model);
        model.zeroGrad();
        LossSum loss = model.forwardBackward(BATCH, gradScale);
        double refLoss = ReferenceLoraLlama.loss(model.shape(), ref, adapters, BATCH);
        assertThat(loss.tokens()).isEqualTo(BATCH.targetCount());
        assertThat(loss.sum()).as(name + ": loss").isCloseTo(refLoss, org.assertj.core.data.Offset.offset(1e-4 * refLoss));

        Random random = new Random(17);
        int checked = 0;
        for (TrainableParameter p : model.parameters()) {
            float[] grad = cpu.toFloats(p.grad());
            Slots slots = slots(p.name(), ref, adapters, model.shape());
            for (int s = 0; s < samplesPerTensor; s++) {
                int index = random.nextInt(grad.length);
                double saved = slots.get(index);
                slots.set(index, saved + EPS);
                double plus = ReferenceLoraLlama.loss(model.shape(), ref, adapters, BATCH);
                slots.set(index, saved - EPS);
                double minus = ReferenceLoraLlama.loss(model.shape(), ref, adapters, BATCH);
                slots.set(index, saved);
                double numeric = gradScale * (plus - minus) / (2 * EPS);
                assertThat((double) grad[index]).as(name + ": d loss / d " + p.name() + "[" + index + "]")
                        .isCloseTo(numeric, org.assertj.core.data.Offset.offset(2e-4 + 2e-3 * Math.abs(numeric)));
                checked++;
            }
            assertThat(maxAbs(grad)).as(name + ": " + p.name() + " receives a gradient").isGreaterThan(1e-6);
        }
        assertThat(checked).isGreaterThan(0);
    }

    /** With tied embeddings but a separate trainable lm_head, the reference gets its own copy of the table. */
    private static ReferenceLlama.Weights untieIfNeeded(LlamaShape modelShape, ReferenceLlama.Weights host) {
        if (modelShape.tiedEmbeddings() || host.lmHead() != null) return host;
        double[][] head = new double[host.embed().length][];
        for (int i = 0; i < head.length; i++) head[i] = host.embed()[i].clone();
        return new ReferenceLlama.Weights(host.embed(), host.layers(), host.finalNorm(), head);
    }

    /** The model's adapters as double matrices, by module path. */
    static Map<String, ReferenceLoraLlama.Adapter> adapters(TrainableLlama model) {
        Map<String, ReferenceLoraLlama.Adapter> out = new HashMap<>();
        for (TrainablePlan.LoraModule m : model.plan().loraModules()) {
            double[][] a = null, b = null;
            for (TrainableParameter p : model.parameters()) {
                if (p.name().equals(PeftAdapter.loraAKey(m.path()))) a = matrix(model.backend().toFloats(p.value()), m.rank(), m.inFeatures());
                if (p.name().equals(PeftAdapter.loraBKey(m.path()))) b = matrix(model.backend().toFloats(p.value()), m.outFeatures(), m.rank());
            }
            out.put(m.path(), new ReferenceLoraLlama.Adapter(a, b, m.scaling(), m.dropout()));
        }
        return out;
    }

    /** Elements of one parameter in the reference's arrays, addressed by flat index. */
    private interface Slots {
        double get(int index);

        void set(int index, double value);
    }

    private static Slots slots(String name, ReferenceLlama.Weights w, Map<String, ReferenceLoraLlama.Adapter> adapters,
                               LlamaShape shape) {
        String n = name.startsWith(PeftAdapter.KEY_PREFIX) ? name.substring(PeftAdapter.KEY_PREFIX.length()) : name;
        if (n.endsWith(".lora_A.weight")) return matrixSlots(adapters.get(n.substring(0, n.length() - 14)).a());
        if (n.endsWith(".lora_B.weight")) return matrixSlots(adapters.get(n.substring(0, n.length() - 14)).b());
        n = n.replace(".base_layer.", ".");
        switch (n) {
            case "model.embed_tokens.weight" -> { return matrixSlots(w.embed()); }
            case "lm_head.weight" -> { return matrixSlots(shape.tiedEmbeddings() ? w.embed() : w.lmHead()); }
            case "model.norm.weight" -> { return vectorSlots(w.finalNorm()); }
            default -> { }
        }
        Matcher m = LAYER_PATH.matcher(n);
        if (!m.matches()) throw new IllegalArgumentException(name);
        ReferenceLlama.Layer L = w.layers()[Integer.parseInt(m.group(1))];
        String rest = m.group(2);
        if (rest.equals("input_layernorm.weight")) return vectorSlots(L.inputNorm());
        if (rest.equals("post_attention_layernorm.weight")) return vectorSlots(L.postNorm());
        for (Projection p : Projection.values()) {
            if (rest.equals(p.suffix() + ".weight")) return matrixSlots(weightOf(L, p));
            if (rest.equals(p.suffix() + ".bias")) return vectorSlots(biasOf(L, p));
        }
        throw new IllegalArgumentException(name);
    }

    private static double[][] weightOf(ReferenceLlama.Layer L, Projection p) {
        return switch (p) {
            case Q -> L.q();
            case K -> L.k();
            case V -> L.v();
            case O -> L.o();
            case GATE -> L.gate();
            case UP -> L.up();
            case DOWN -> L.down();
        };
    }

    private static double[] biasOf(ReferenceLlama.Layer L, Projection p) {
        return switch (p) {
            case Q -> L.qBias();
            case K -> L.kBias();
            case V -> L.vBias();
            case O -> L.oBias();
            case GATE -> L.gateBias();
            case UP -> L.upBias();
            case DOWN -> L.downBias();
        };
    }

    private static Slots matrixSlots(double[][] m) {
        int cols = m[0].length;
        return new Slots() {
            public double get(int i) { return m[i / cols][i % cols]; }

            public void set(int i, double v) { m[i / cols][i % cols] = v; }
        };
    }

    private static Slots vectorSlots(double[] v) {
        return new Slots() {
            public double get(int i) { return v[i]; }

            public void set(int i, double value) { v[i] = value; }
        };
    }

    static double[][] matrix(float[] flat, int rows, int cols) {
        double[][] m = new double[rows][cols];
        for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) m[i][j] = flat[i * cols + j];
        return m;
    }

    static List<float[]> grads(TrainableLlama model) {
        List<float[]> out = new ArrayList<>();
        for (TrainableParameter p : model.parameters()) out.add(model.backend().toFloats(p.grad()));
        return out;
    }

    static void assertSameUpToRounding(List<float[]> actual, List<float[]> expected) {
        for (int i = 0; i < expected.size(); i++) {
            float[] a = actual.get(i), e = expected.get(i);
            for (int j = 0; j < a.length; j++) {
                assertThat((double) a[j]).isCloseTo(e[j], org.assertj.core.data.Offset.offset(1e-6 + 1e-5 * Math.abs(e[j])));
            }
        }
    }

    private static double maxAbs(float[] v) {
        double m = 0;
        for (float f : v) m = Math.max(m, Math.abs(f));
        return m;
    }
}
