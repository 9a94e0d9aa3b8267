package dev.lora4j.model;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.backend.testing.RandomTensors;
import dev.lora4j.generate.GenerationOptions;
import dev.lora4j.generate.GenerationResult;
import dev.lora4j.io.ModelFolder;
import dev.lora4j.io.SafetensorsFile;
import dev.lora4j.lora.LoraConfig;
import dev.lora4j.lora.PeftAdapter;
import dev.lora4j.lora.TargetModules;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

import static dev.lora4j.model.TrainableLlamaGradientTest.BATCH;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

class TrainableLlamaTest {
    private static final int[] TOKENS = {3, 17, 42, 0, 60, 5, 5, 23, 11, 38, 7, 59, 30};
    private static CpuBackend cpu;

    @BeforeAll
    static void open() { cpu = new CpuBackend(2); }

    @AfterAll
    static void close() { cpu.close(); }

    private static TrainableLlama lora(LlamaShape shape, DType storage, LoraConfig config, long seed) {
        ReferenceLlama.Weights host = TinyModels.randomWeights(shape, storage, 7);
        return TrainableLlama.fromWeights(cpu, TinyModels.upload(cpu, shape, host, storage), new FineTuneMethod.Lora(config), seed);
    }

    @Test
    void newAdaptersLeaveTheBaseModelsLogitsExactlyUnchanged() {
        for (LlamaShape shape : List.of(TinyModels.llama(), TinyModels.qwen2(4), TinyModels.llamaWithBiases())) {
            for (DType storage : List.of(DType.F32, DType.BF16)) {
                ReferenceLlama.Weights host = TinyModels.randomWeights(shape, storage, 7);
                LoraConfig config = LoraConfig.defaults().withTargetModules(TargetModules.allLinear()).withLoraDropout(0.1);
                try (LlamaModel base = new LlamaModel(cpu, TinyModels.upload(cpu, shape, host, storage));
                     KvCache cache = base.newCache(32);
                     TrainableLlama model = TrainableLlama.fromWeights(cpu, TinyModels.upload(cpu, shape, host, storage),
                             new FineTuneMethod.Lora(config), 1)) {
                    assertSameWhileTheBackendIsStable(shape + " " + storage, () -> {
                        cache.reset();
                        float[][] rows = base.allLogits(TOKENS, 0, cache);
                        float[] flat = new float[TOKENS.length * shape.vocabSize()];
                        for (int i = 0; i < rows.length; i++) System.arraycopy(rows[i], 0, flat, i * shape.vocabSize(), shape.vocabSize());
                        return flat;
                    }, () -> model.logits(TOKENS));
                }
            }
        }
    }

    @Test
    void frozenWeightsHaveNoGradientsAndParametersCarryPeftKeys() {
        LoraConfig config = LoraConfig.defaults().withBias("lora_only");
        try (TrainableLlama model = lora(TinyModels.qwen2(3), DType.BF16, config, 1)) {
            assertThat(model.parameters()).extracting(TrainableParameter::name).containsExactly(
                    "base_model.model.model.layers.0.self_attn.q_proj.base_layer.bias",
                    "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                    "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
                    "base_model.model.model.layers.0.self_attn.v_proj.base_layer.bias",
                    "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight",
                    "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight",
                    "base_model.model.model.layers.1.self_attn.q_proj.base_layer.bias",
                    "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight",
                    "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight",
                    "base_model.model.model.layers.1.self_attn.v_proj.base_layer.bias",
                    "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight",
                    "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight");
            assertThat(model.parameters()).allSatisfy(p -> {
                assertThat(p.value().dtype()).isEqualTo(DType.F32);
                assertThat(p.grad().shape()).isEqualTo(p.value().shape());
                assertThat(p.weightDecay()).isEqualTo(!p.name().endsWith(".bias"));
            });
            assertThat(model.weights().layer(0).kProj().dtype()).as("frozen base stays as stored").isEqualTo(DType.BF16);
            assertThat(model.weights().layer(0).kBias().dtype()).isEqualTo(DType.BF16);
            long trainable = model.parameters().stream().mapToLong(TrainableParameter::numel).sum();
            assertThat(model.trainableParameters().trainable()).isEqualTo(trainable);
            assertThat(model.trainableParameters().all())
                    .isEqualTo(TinyModels.qwen2(3).parameterCounts().total() + trainable - 2 * (32 + 8));
        }
    }

    @Test
    void adaptersStartAsPeftInitialisesThem() {
        LoraConfig config = LoraConfig.defaults().withR(16).withTargetModules(TargetModules.allLinear());
        try (TrainableLlama kaiming = lora(TinyModels.llama(), DType.F32, config, 1);
             TrainableLlama gaussian = lora(TinyModels.llama(), DType.F32, config.withInitLoraWeights("gaussian"), 1);
             TrainableLlama random = lora(TinyModels.llama(), DType.F32, config.withInitLoraWeights("false"), 1)) {
            // kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(in), 1/sqrt(in)), whose variance is bound²/3; B zero
            double[] s = stats(kaiming, "lora_A", m -> Math.sqrt(m.inFeatures()));
            assertThat(s[0]).as("max |A|·sqrt(in)").isLessThanOrEqualTo(1).isGreaterThan(0.99);
            assertThat(s[1]).as("mean (A·sqrt(in))²").isCloseTo(1 / 3.0, within(0.02));
            assertThat(s[2]).as("mean, within five standard errors").isCloseTo(0, within(5 * Math.sqrt(1 / 3.0 / 7936)));
            assertThat(stats(kaiming, "lora_B", m -> 1)[0]).isZero();
            // gaussian: N(0, 1/r)
            double[] g = stats(gaussian, "lora_A", m -> m.rank());
            assertThat(g[1]).as("mean (A·r)²").isCloseTo(1, within(0.06));
            assertThat(stats(gaussian, "lora_B", m -> 1)[0]).isZero();
            // false: nn.Linear's own init for both, B in U(±1/sqrt(r))
            double[] b = stats(random, "lora_B", m -> Math.sqrt(m.rank()));
            assertThat(b[0]).isLessThanOrEqualTo(1).isGreaterThan(0.99);
            assertThat(b[1]).isCloseTo(1 / 3.0, within(0.02));
        }
        try (TrainableLlama one = lora(TinyModels.llama(), DType.F32, config, 5);
             TrainableLlama same = lora(TinyModels.llama(), DType.F32, config, 5);
             TrainableLlama other = lora(TinyModels.llama(), DType.F32, config, 6)) {
            float[] a = cpu.toFloats(one.parameters().getFirst().value());
            assertThat(cpu.toFloats(same.parameters().getFirst().value())).as("same seed").containsExactly(a);
            assertThat(cpu.toFloats(other.parameters().getFirst().value())).as("other seed").isNotEqualTo(a);
        }
    }

    /** {max |x·f|, mean (x·f)², mean x·f} over the named tensors, f per module. */
    private static double[] stats(TrainableLlama model, String kind, java.util.function.ToDoubleFunction<TrainablePlan.LoraModule> factor) {
        double max = 0, sumSq = 0, sum = 0;
        long n = 0;
        for (TrainablePlan.LoraModule m : model.plan().loraModules()) {
            String key = kind.equals("lora_A") ? PeftAdapter.loraAKey(m.path()) : PeftAdapter.loraBKey(m.path());
            Tensor t = model.parameters().stream().filter(p -> p.name().equals(key)).findFirst().orElseThrow().value();
            double f = factor.applyAsDouble(m);
            for (float v : cpu.toFloats(t)) {
                double x = v * f;
                max = Math.max(max, Math.abs(x));
                sumSq += x * x;
                sum += x;
                n++;
            }
        }
        return new double[]{max, sumSq / n, sum / n};
    }

    @Test
    void evaluationAgreesWithTheTrainingLossAndUsesNoDropout() {
        LoraConfig config = LoraConfig.defaults().withInitLoraWeights("false").withLoraDropout(0.5);
        try (TrainableLlama model = lora(TinyModels.mistral(4), DType.F32, config, 2);
             TrainableLlama noDropout = lora(TinyModels.mistral(4), DType.F32, config.withLoraDropout(0), 2)) {
            LossSum eval = model.evaluate(BATCH);
            LossSum trainNoDropout = noDropout.forwardBackward(BATCH, 1f);
            assertThat(eval.tokens()).isEqualTo(8);
            assertThat(eval.sum()).isCloseTo(trainNoDropout.sum(), within(1e-4));
            assertThat(eval.mean()).isCloseTo(eval.sum() / 8, within(1e-12));
            LossSum dropped = model.forwardBackward(BATCH, 1f);
            assertThat(dropped.sum()).as("dropout changes the training loss").isNotCloseTo(eval.sum(), within(1e-3));
        }
    }

    @Test
    void evaluationRunsInTheTrainingBuffersOnceTheyExist() {
        LoraConfig config = LoraConfig.defaults().withInitLoraWeights("false").withTargetModules(TargetModules.allLinear());
        for (boolean checkpointing : new boolean[]{false, true}) {
            try (TrainableLlama model = lora(TinyModels.llamaWithBiases(), DType.F32, config, 2)) {
                model.setGradientCheckpointing(checkpointing);
                LossSum before = model.evaluate(BATCH);
                long evaluationOnly = model.activationBytes();
                model.forwardBackward(BATCH, 1f);
                long training = model.activationBytes();
                long inUse = cpu.memoryInUse();
                assertThat(model.evaluate(BATCH)).as("checkpointing " + checkpointing).isEqualTo(before);
                assertThat(model.logits(TOKENS)).hasSize(TOKENS.length * model.shape().vocabSize());
                assertThat(cpu.memoryInUse()).as("evaluation after training allocates nothing").isEqualTo(inUse);
                assertThat(training).as("the evaluation buffers were given back").isEqualTo(model.activationBytes())
                        .isGreaterThan(evaluationOnly);
            }
        }
    }

    @Test
    void dropoutMasksFollowTheBatchSeed() {
        LoraConfig config = LoraConfig.defaults().withInitLoraWeights("false").withLoraDropout(0.3);
        try (TrainableLlama model = lora(TinyModels.llama(), DType.F32, config, 2)) {
            LossSum first = model.forwardBackward(BATCH, 1f);
            List<float[]> g1 = TrainableLlamaGradientTest.grads(model);
            model.zeroGrad();
            LossSum again = model.forwardBackward(BATCH, 1f);
            assertThat(again.sum()).isCloseTo(first.sum(), within(1e-5));
            TrainableLlamaGradientTest.assertSameUpToRounding(TrainableLlamaGradientTest.grads(model), g1);
            LossSum otherSeed = model.forwardBackward(new TrainingBatch(BATCH.inputIds(), BATCH.labels(), 12), 1f);
            assertThat(otherSeed.sum()).isNotCloseTo(first.sum(), within(1e-3));
        }
    }

    @Test
    void aFewStepsOfGradientDescentLowerTheLoss() {
        LoraConfig config = LoraConfig.defaults().withR(8).withLoraAlpha(16).withTargetModules(TargetModules.allLinear());
        try (TrainableLlama model = lora(TinyModels.llama(), DType.BF16, config, 3)) {
            TrainingBatch batch = TrainingBatch.languageModelling(new int[][]{TOKENS, {5, 9, 13, 17, 21, 25, 29}}, 0);
            double initial = model.evaluate(batch).mean();
            for (int step = 0; step < 30; step++) {
                model.zeroGrad();
                LossSum loss = model.forwardBackward(batch, 1f / batch.targetCount());
                assertThat(loss.mean()).isFinite();
                for (TrainableParameter p : model.parameters()) {
                    cpu.scale(p.grad(), -0.5f);
                    cpu.add(p.value(), p.grad());
                }
            }
            double after = model.evaluate(batch).mean();
            assertThat(after).isLessThan(initial * 0.8);
        }
    }

    @Test
    void aOneLayerModelTrainsTheSameWithAndWithoutGradientCheckpointing() {
        LlamaShape oneLayer = TinyModels.shape("llama", 4, 2, 8, false, false, false, false, new int[] {0});
        LoraConfig config = LoraConfig.defaults().withR(4).withLoraAlpha(8).withTargetModules(TargetModules.allLinear());
        TrainingBatch batch = TrainingBatch.languageModelling(new int[][]{TOKENS}, 0);
        float[][] grads = new float[2][];
        for (int run = 0; run < 2; run++) {
            try (TrainableLlama model = lora(oneLayer, DType.F32, config, 3)) {
                model.setGradientCheckpointing(run == 1);
                model.zeroGrad();
                assertThat(model.forwardBackward(batch, 1f / batch.targetCount()).mean()).isFinite();
                grads[run] = cpu.toFloats(model.parameters().getFirst().grad());
            }
        }
        assertThat(grads[1]).containsExactly(grads[0]);
    }

    @Test
    void savedAdaptersLoadBackToTheSameModelAndHavePeftsLayout(@TempDir Path dir) throws Exception {
        LlamaShape shape = TinyModels.qwen2(3);
        ReferenceLlama.Weights host = TinyModels.randomWeights(shape, DType.BF16, 7);
        LoraConfig config = LoraConfig.defaults().withR(4).withLoraAlpha(8).withInitLoraWeights("false")
                .withTargetModules(TargetModules.allLinear()).withBias("all").withModulesToSave(List.of("lm_head"));
        try (ModelFolder folder = TinyModelFolders.write(dir.resolve("base"), shape, host, DType.BF16);
             TrainableLlama model = TrainableLlama.create(cpu, folder, new FineTuneMethod.Lora(config), 9)) {
            Path adapterDir = dir.resolve("adapter");
            model.saveAdapter(adapterDir);
            JsonNode json = new ObjectMapper().readTree(Files.readString(adapterDir.resolve("adapter_config.json")));
            assertThat(json.get("peft_type").asText()).isEqualTo("LORA");
            assertThat(json.get("r").asInt()).isEqualTo(4);
            assertThat(json.get("bias").asText()).isEqualTo("all");
            assertThat(json.get("base_model_name_or_path").asText()).isEqualTo(dir.resolve("base").toString());
            assertThat(json.get("target_modules")).hasSize(14); // all-linear resolved on a 2-layer model
            assertThat(json.get("modules_to_save").get(0).asText()).isEqualTo("lm_head");
            try (SafetensorsFile file = SafetensorsFile.open(adapterDir.resolve("adapter_model.safetensors"))) {
                assertThat(file.metadata()).containsEntry("format", "pt");
                assertThat(file.names()).contains(
                        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                        "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight",
                        "base_model.model.model.layers.0.self_attn.k_proj.base_layer.bias",
                        "base_model.model.lm_head.weight").hasSize(2 * 14 + 2 * 3 + 1);
                assertThat(file.info("base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight").shape())
                        .containsExactly(4, shape.queryDim());
                assertThat(file.info("base_model.model.model.layers.0.self_attn.o_proj.lora_B.weight").shape())
                        .containsExactly(shape.hiddenSize(), 4);
                assertThat(file.info("base_model.model.lm_head.weight").dtype()).isEqualTo(DType.F32);
            }
            try (TrainableLlama loaded = TrainableLlama.withAdapter(cpu, folder, adapterDir)) {
                assertSameWhileTheBackendIsStable("reloaded adapter", () -> model.logits(TOKENS), () -> loaded.logits(TOKENS));
                assertThat(loaded.trainableParameters()).isEqualTo(model.trainableParameters());
            }
            PeftAdapter reread = PeftAdapter.load(adapterDir);
            assertThat(reread.tensors()).isEqualTo(model.adapter().tensors());
        }
    }

    @Test
    void loadingAnAdapterOfAnotherShapeOrScalingFailsClearly(@TempDir Path dir) throws Exception {
        try (TrainableLlama model = lora(TinyModels.llama(), DType.F32, LoraConfig.defaults().withR(4), 1);
             TrainableLlama otherRank = lora(TinyModels.llama(), DType.F32, LoraConfig.defaults().withR(4).withLoraAlpha(4)
                     .withRankPattern(Map.of("v_proj", 2)), 1);
             TrainableLlama otherTargets = lora(TinyModels.llama(), DType.F32, LoraConfig.defaults().withR(4)
                     .withTargetModules(TargetModules.names("q_proj", "k_proj")), 1)) {
            otherRank.saveAdapter(dir.resolve("rank"));
            otherTargets.saveAdapter(dir.resolve("targets"));
            assertThatThrownBy(() -> model.loadAdapter(dir.resolve("targets")))
                    .hasMessageContaining("missing").hasMessageContaining("v_proj.lora_A.weight")
                    .hasMessageContaining("k_proj");
            PeftAdapter sameScaling = PeftAdapter.load(dir.resolve("rank"));
            assertThatThrownBy(() -> model.loadAdapter(new PeftAdapter(LoraConfig.defaults().withR(4),
                    null, sameScaling.tensors()), "rank"))
                    .hasMessageContaining("shape").hasMessageContaining("v_proj");
            assertThatThrownBy(() -> model.loadAdapter(dir.resolve("rank"))).hasMessageContaining("scales");
        }
    }

    @Test
    void aPickledAdapterIsRefusedWithTheConversion(@TempDir Path dir) throws Exception {
        Files.writeString(dir.resolve("adapter_config.json"), LoraConfig.defaults().toAdapterConfigJson(null));
        Files.write(dir.resolve("adapter_model.bin"), new byte[]{1, 2, 3});
        assertThatThrownBy(() -> PeftAdapter.load(dir)).hasMessageContaining("adapter_model.bin")
                .hasMessageContaining("safe_serialization=True");
    }

    @Test
    void mergedWeightsGiveTheLogitsOfTheUnmergedAdapter() {
        LoraConfig config = LoraConfig.defaults().withInitLoraWeights("false").withTargetModules(TargetModules.allLinear());
        try (TrainableLlama model = lora(TinyModels.llamaWithBiases(), DType.F32, config, 4)) {
            float[] unmerged = model.logits(TOKENS);
            List<float[]> before = model.weights().tensors().stream().map(cpu::toFloats).toList();
            try (LlamaModel merged = new LlamaModel(cpu, model.mergedWeights()); KvCache cache = merged.newCache(32)) {
                float[][] logits = merged.allLogits(TOKENS, 0, cache);
                int v = model.shape().vocabSize();
                double maxDiff = 0, spread = 0;
                for (int i = 0; i < TOKENS.length; i++) {
                    for (int j = 0; j < v; j++) {
                        maxDiff = Math.max(maxDiff, Math.abs(logits[i][j] - unmerged[i * v + j]));
                        spread = Math.max(spread, Math.abs(unmerged[i * v + j]));
                    }
                }
                assertThat(maxDiff).isLessThan(1e-4);
                assertThat(spread).isGreaterThan(0.5);
            }
            GenerationResult r = model.generate(new int[]{3, 17}, GenerationOptions.greedy(5).withStopOnEos(false), null, null);
            int[] expected = new int[5];
            int[] seq = {3, 17, 0, 0, 0, 0, 0, 0};
            for (int i = 0; i < 5; i++) {
                int v = model.shape().vocabSize();
                float[] lg = model.logits(java.util.Arrays.copyOf(seq, 2 + i));
                expected[i] = dev.lora4j.generate.Sampler.argmax(java.util.Arrays.copyOfRange(lg, (1 + i) * v, (2 + i) * v));
                seq[2 + i] = expected[i];
            }
            assertThat(r.tokens()).containsExactly(expected);
            for (int i = 0; i < before.size(); i++) {
                assertThat(cpu.toFloats(model.weights().tensors().get(i))).as("generation leaves the weights as they were")
                        .containsExactly(before.get(i));
            }
        }
    }

    @Test
    void fullFineTuningSavesAHuggingFaceFolderThatLoadsToTheSameModel(@TempDir Path dir) throws Exception {
        LlamaShape shape = TinyModels.llama();
        ReferenceLlama.Weights host = TinyModels.randomWeights(shape, DType.BF16, 7);
        try (ModelFolder folder = TinyModelFolders.write(dir.resolve("base"), shape, host, DType.BF16);
             TrainableLlama model = TrainableLlama.create(cpu, folder, new FineTuneMethod.Full(), 0)) {
            assertThat(model.trainableParameters().trainable()).isEqualTo(shape.parameterCounts().total());
            model.zeroGrad();
            model.forwardBackward(BATCH, 0.1f);
            for (TrainableParameter p : model.parameters()) {
                cpu.scale(p.grad(), -0.1f);
                cpu.add(p.value(), p.grad());
            }
            model.saveModel(dir.resolve("tuned"));
            try (ModelFolder saved = ModelFolder.open(dir.resolve("tuned"));
                 TrainableLlama reloaded = TrainableLlama.create(cpu, saved, new FineTuneMethod.Full(), 0)) {
                assertThat(saved.config().dtype()).isEqualTo("float32");
                for (int i = 0; i < model.parameters().size(); i++) {
                    assertThat(cpu.toFloats(reloaded.parameters().get(i).value())).as(model.parameters().get(i).name())
                            .containsExactly(cpu.toFloats(model.parameters().get(i).value()));
                }
                assertSameWhileTheBackendIsStable("reloaded model", () -> model.logits(TOKENS), () -> reloaded.logits(TOKENS));
            }
            assertThatThrownBy(() -> model.saveAdapter(dir.resolve("nope"))).hasMessageContaining("saveModel");
        }
    }

    @Test
    void fullFineTuningInBf16KeepsBf16WeightsWhoseGradientsAreTheF32RunsRounded(@TempDir Path dir) throws Exception {
        // The same BF16 checkpoint trained in F32 and in BF16: the forward pass multiplies the same values, so the loss
        // is the same, and each BF16 gradient is the F32 run's rounded once (the products' sums run in one order).
        LlamaShape shape = TinyModels.qwen2(2);
        ReferenceLlama.Weights host = TinyModels.randomWeights(shape, DType.BF16, 8);
        try (ModelFolder folder = TinyModelFolders.write(dir.resolve("base"), shape, host, DType.BF16);
             TrainableLlama f32 = TrainableLlama.create(cpu, folder, FineTuneMethod.full(DType.F32), 0);
             TrainableLlama bf16 = TrainableLlama.create(cpu, folder, FineTuneMethod.full(DType.BF16), 0)) {
            f32.zeroGrad();
            bf16.zeroGrad();
            LossSum a = f32.forwardBackward(BATCH, 0.1f), b = bf16.forwardBackward(BATCH, 0.1f);
            assertThat(b).isEqualTo(a);
            assertThat(bf16.parameters()).hasSameSizeAs(f32.parameters());
            for (int i = 0; i < f32.parameters().size(); i++) {
                TrainableParameter p32 = f32.parameters().get(i), p16 = bf16.parameters().get(i);
                String name = p16.name();
                boolean norm = name.endsWith("norm.weight");
                boolean product = name.endsWith("_proj.weight") || name.equals("lm_head.weight");
                assertThat(p16.value().dtype()).as(name).isEqualTo(norm ? DType.F32 : DType.BF16);
                assertThat(p16.grad().dtype()).as(name + " gradient").isEqualTo(product ? DType.BF16 : DType.F32);
                float[] expected = cpu.toFloats(p32.grad());
                if (product) expected = RandomTensors.representable(expected, DType.BF16);
                assertThat(cpu.toFloats(p16.grad())).as(name + " gradient").containsExactly(expected);
                assertThat(cpu.toFloats(p16.value())).as(name).containsExactly(cpu.toFloats(p32.value()));
            }
        }
    }

    static Stream<Arguments> lazyZeroCases() {
        return Stream.of(DType.F32, DType.BF16).flatMap(p -> Stream.of(
                Arguments.of("llama (untied lm_head)", TinyModels.llama(), p),
                Arguments.of("qwen2 (tied, biases)", TinyModels.qwen2(2), p)));
    }

    @ParameterizedTest(name = "{0}, {2}")
    @MethodSource("lazyZeroCases")
    void zeroGradOnNextBackwardEndsEachMicroBatchWithTheGradientsZeroGradGives(String name, LlamaShape shape,
                                                                              DType precision, @TempDir Path dir)
            throws Exception {
        // Full fine-tuning, whose projections' and lm_head's gradients the first micro-batch overwrites. The first
        // batch has no target, so no loss chunk reaches lm_head: its old gradient must not survive.
        int[][] ids = {{4, 8, 15, 16, 23, 42}};
        TrainingBatch noTargets = new TrainingBatch(ids, new int[][]{{-100, -100, -100, -100, -100, -100}}, 3);
        TrainingBatch other = TrainingBatch.languageModelling(new int[][]{{5, 9, 13, 17, 21, 25, 29}, TOKENS}, 4);
        ReferenceLlama.Weights host = TinyModels.randomWeights(shape, DType.BF16, 9);
        try (ModelFolder folder = TinyModelFolders.write(dir.resolve("base"), shape, host, DType.BF16);
             TrainableLlama eager = TrainableLlama.create(cpu, folder, FineTuneMethod.full(precision), 0);
             TrainableLlama lazy = TrainableLlama.create(cpu, folder, FineTuneMethod.full(precision), 0)) {
            for (TrainableLlama m : List.of(eager, lazy)) {
                m.zeroGrad();
                m.forwardBackward(BATCH, 0.3f); // an old accumulation, which the next must not see
            }
            eager.zeroGrad();
            lazy.zeroGradOnNextBackward();
            for (TrainingBatch b : List.of(noTargets, BATCH, other)) {
                eager.forwardBackward(b, 0.1f);
                lazy.forwardBackward(b, 0.1f);
                for (int i = 0; i < eager.parameters().size(); i++) {
                    TrainableParameter e = eager.parameters().get(i), l = lazy.parameters().get(i);
                    // A product that overwrites may give -0 where 0 + (-0) gave +0: the same gradient.
                    assertThat(withoutNegativeZeros(cpu.toFloats(l.grad()))).as(e.name() + " after " + b)
                            .containsExactly(withoutNegativeZeros(cpu.toFloats(e.grad())));
                }
            }
        }
    }

    private static float[] withoutNegativeZeros(float[] v) {
        float[] out = v.clone();
        for (int i = 0; i < out.length; i++) if (out[i] == 0f) out[i] = 0f;
        return out;
    }

    @Test
    void badBatchesAreRefusedWithTheRowAndPosition() {
        try (TrainableLlama model = lora(TinyModels.llama(), DType.F32, LoraConfig.defaults(), 1)) {
            assertThatThrownBy(() -> model.forwardBackward(new TrainingBatch(new int[][]{{1, 2, 99}}, new int[][]{{1, 2, 3}}, 0), 1f))
                    .hasMessageContaining("row 0, position 2").hasMessageContaining("token id 99");
            assertThatThrownBy(() -> model.forwardBackward(new TrainingBatch(new int[][]{{1, 2}}, new int[][]{{1, -5}}, 0), 1f))
                    .hasMessageContaining("label -5");
            assertThatThrownBy(() -> new TrainingBatch(new int[][]{{1, 2}}, new int[][]{{1}}, 0))
                    .hasMessageContaining("equally long");
            assertThatThrownBy(() -> lora(TinyModels.llama(), DType.F32, LoraConfig.defaults().withInitLoraWeights("pissa"), 1))
                    .hasMessageContaining("pissa");
        }
    }

    @Test
    void fullyMaskedBatchesHaveNoLossAndNoGradient() {
        try (TrainableLlama model = lora(TinyModels.llama(), DType.F32, LoraConfig.defaults().withInitLoraWeights("false"), 1)) {
            TrainingBatch masked = new TrainingBatch(new int[][]{{1, 2, 3}}, new int[][]{{1, -100, -100}}, 0);
            LossSum loss = model.forwardBackward(masked, 1f);
            assertThat(loss.tokens()).isZero();
            assertThat(loss.sum()).isZero();
            assertThat(loss.mean()).isNaN();
            for (float[] g : TrainableLlamaGradientTest.grads(model)) for (float f : g) assertThat(f).isZero();
        }
    }

    @Test
    void theLossIsComputedInChunksOfRowsWithTheSameResult() {
        LoraConfig config = LoraConfig.defaults().withInitLoraWeights("false");
        try (TrainableLlama model = lora(TinyModels.llama(), DType.F32, config, 1)) {
            LossSum whole = model.forwardBackward(BATCH, 1f);
            List<float[]> expected = TrainableLlamaGradientTest.grads(model);
            model.zeroGrad();
            model.setLossChunkBytes(3L * 4 * TinyModels.llama().vocabSize()); // three rows of logits at a time
            LossSum chunked = model.forwardBackward(BATCH, 1f);
            assertThat(chunked.sum()).isCloseTo(whole.sum(), within(1e-5));
            List<float[]> actual = TrainableLlamaGradientTest.grads(model);
            for (int i = 0; i < expected.size(); i++) {
                float[] a = actual.get(i), e = expected.get(i);
                for (int j = 0; j < a.length; j++) assertThat(a[j]).isCloseTo(e[j], within(1e-5f + 1e-5f * Math.abs(e[j])));
            }
        }
    }

    /**
     * Exact equality of two computations made of the same ops. The CPU kernels' last-bit rounding may change once
     * while the JIT compiles them (the Vector API leaves the order of a lane reduction open), so the comparison is
     * made over an interval in which {@code expected} itself repeats exactly.
     */
    static void assertSameWhileTheBackendIsStable(String what, java.util.function.Supplier<float[]> expected,
                                                  java.util.function.Supplier<float[]> actual) {
        for (int attempt = 0; attempt < 20; attempt++) {
            float[] before = expected.get();
            float[] result = actual.get();
            float[] after = expected.get();
            if (java.util.Arrays.equals(before, after)) {
                assertThat(result).as(what).containsExactly(before);
                return;
            }
        }
        throw new AssertionError(what + ": the backend never gave the same result twice in a row");
    }
}
