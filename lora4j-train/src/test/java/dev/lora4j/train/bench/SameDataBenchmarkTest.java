package dev.lora4j.train.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.lora4j.backend.Backend;
import dev.lora4j.backend.cpu.CpuBackend;
import dev.lora4j.lora.PeftAdapter;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.Supplier;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

/**
 * {@code lora4j bench} on given token batches from a given adapter, on the CPU: the losses it keeps for comparison with
 * another implementation on the same data, and that comparison with transformers + peft on a model small enough to
 * keep in the repository.
 *
 * <p>The fixture {@code same-data-micro} was written on the CPU by
 * {@code python3 tools/same_data_losses.py reference --shape micro --mode lora-all --device cpu --compute-dtype float32
 * --seq 32 --micro-batch 2 --accum 2 --steps 4 --rank 4 --nonzero-b --lr 1e-3 --out <fixture>} (torch 2.13,
 * transformers 5.18, peft 0.21): a random BF16 model of two layers, PEFT's initial adapter on every linear layer with B
 * drawn non-zero, two micro-batches of token ids, and the losses of four AdamW steps computed in F32.
 */
class SameDataBenchmarkTest {

    static final Supplier<Backend> CPU = () -> new CpuBackend(2);

    static Path fixture;
    static ModelSource micro;
    static BenchSettings settings;
    static BenchInputs sameData;
    static BenchResult first;

    @BeforeAll
    static void runOnTheRecordedData() throws IOException, URISyntaxException {
        fixture = Path.of(SameDataBenchmarkTest.class.getResource("same-data-micro").toURI());
        micro = ModelSource.folder(fixture.resolve("model"), false);
        settings = BenchSettings.defaults(BenchMethod.LORA).withTargetModules("all-linear").withLora(4, 8, 0)
                .withBatch(32, 2, 2).withSteps(3, 1).withOptimizer("adamw_torch", 1e-3, 0.01, 0);
        sameData = new BenchInputs(TokenBatches.read(fixture.resolve("tokens.json")),
                InitialAdapter.load(fixture.resolve("adapter")));
        assertThat(FineTuneBenchmark.check(settings, micro, sameData)).isNull();
        first = run(settings, sameData);
    }

    static BenchResult run(BenchSettings s, BenchInputs inputs) {
        BenchResult r = FineTuneBenchmark.run(s, micro, CPU, null, null, inputs);
        assertThat(r.error()).isNull();
        return r;
    }

    @Test
    void reproducesTheLossesTransformersAndPeftRecordedOnTheSameWeightsAdapterAndTokens() throws IOException {
        JsonNode reference = new ObjectMapper().readTree(fixture.resolve("reference.json").toFile());
        JsonNode steps = reference.path("step_losses");
        assertThat(first.losses()).hasSize(steps.size());
        // Both in F32 from the same BF16 weights: only the order of sums differs.
        for (int k = 0; k < steps.size(); k++) {
            double ref = steps.get(k).asDouble();
            assertThat(first.losses().get(k)).as("step %d", k + 1).isCloseTo(ref, within(1e-5 * ref));
            JsonNode micros = reference.path("micro_batch_losses").get(k);
            for (int i = 0; i < micros.size(); i++) {
                double m = micros.get(i).asDouble();
                assertThat(first.microBatchLosses().get(k).get(i)).as("step %d micro-batch %d", k + 1, i + 1)
                        .isCloseTo(m, within(1e-5 * m));
            }
        }
        // Training moved the loss by far more than the tolerance above, so the later steps check the updates too.
        assertThat(first.losses().getFirst() - first.losses().getLast()).isGreaterThan(0.04);
        assertThat(first.tokens()).endsWith("tokens.json");
        assertThat(first.initialAdapter()).endsWith("adapter");
    }

    @Test
    void theSameTokensAndAdapterGiveIdenticalLossesTwice() {
        BenchResult again = run(settings, sameData);
        assertThat(again.losses()).isEqualTo(first.losses());
        assertThat(again.microBatchLosses()).isEqualTo(first.microBatchLosses());
    }

    @Test
    void everyStepKeepsEachMicroBatchsLossAndTheStepsLossIsTheirMean() {
        assertThat(first.losses()).hasSize(4); // the warm-up step first
        assertThat(first.microBatchLosses()).hasSize(4).allSatisfy(step -> assertThat(step).hasSize(2));
        for (int k = 0; k < 4; k++) {
            List<Double> m = first.microBatchLosses().get(k);
            // Every micro-batch has the same number of targets: the mean token loss is the mean of their means.
            assertThat(first.losses().get(k)).isCloseTo((m.get(0) + m.get(1)) / 2, within(1e-12));
            assertThat(m.get(0)).isNotEqualTo(m.get(1));
        }
        assertThat(first.stepLossLine()).startsWith("step losses (1 warm-up + 3 timed): ")
                .contains(String.format(Locale.ROOT, "%.6f", first.losses().getFirst()));
    }

    @Test
    void anAdapterWhoseBIsZeroStartsAtTheBaseModelsLossWhateverItsAButTrainsFromItsOwnA() {
        PeftAdapter zeroB = withZeroB(sameData.initialAdapter().adapter());
        BenchResult fromZeroB = run(settings, new BenchInputs(sameData.tokens(), new InitialAdapter(fixture, zeroB)));
        BenchResult fromOwn = run(settings, new BenchInputs(sameData.tokens(), null));
        // B = 0 adds nothing to any projection: lora4j's own A (also with B = 0) gives the same first loss.
        assertThat(fromZeroB.losses().getFirst()).isEqualTo(fromOwn.losses().getFirst());
        // After one step B has been trained through A, so the two As part ways.
        assertThat(Math.abs(fromZeroB.losses().get(1) - fromOwn.losses().get(1))).isGreaterThan(1e-5);
        // The recorded adapter's non-zero B moves the first loss (by about 0.027 nats on this model).
        assertThat(Math.abs(first.losses().getFirst() - fromZeroB.losses().getFirst())).isGreaterThan(0.01);
    }

    @Test
    void aTokenFileOfOneMicroBatchServesEveryMicroBatchOfEveryStep() {
        TokenBatches one = TokenBatches.of(Path.of("one.json"), new int[][][] {sameData.tokens().forStep(0, 1)[0]});
        BenchResult r = run(settings, new BenchInputs(one, sameData.initialAdapter()));
        // Both micro-batches of a step see the same ids and the same weights.
        for (List<Double> step : r.microBatchLosses()) assertThat(step.get(1)).isEqualTo(step.get(0));
        assertThat(r.losses().getFirst()).isEqualTo(first.microBatchLosses().getFirst().getFirst());
    }

    @Test
    void aTokenFileHoldingTheSyntheticBatchesReproducesTheSyntheticRun() {
        BenchSettings s = settings.withSteps(1, 1);
        int[][][] synthetic = FineTuneBenchmark.syntheticBatches(s, micro.config().vocabSize());
        BenchResult fromFile = run(s, new BenchInputs(TokenBatches.of(Path.of("synthetic.json"), synthetic), null));
        BenchResult drawn = run(s, BenchInputs.NONE);
        assertThat(fromFile.losses()).isEqualTo(drawn.losses());
        assertThat(fromFile.microBatchLosses()).isEqualTo(drawn.microBatchLosses());
        assertThat(drawn.tokens()).isNull();
        assertThat(drawn.initialAdapter()).isNull();
    }

    @Test
    void anAdapterThatIsNotTheBenchmarksIsRefusedBeforeAnyDeviceWork() {
        BenchInputs adapterOnly = new BenchInputs(null, sameData.initialAdapter());
        assertThatThrownBy(() -> FineTuneBenchmark.check(settings.withLora(8, 8, 0), micro, adapterOnly))
                .hasMessageContaining("adapter_config.json: r is 4 but the benchmark trains adapters of rank 8 (--rank);"
                        + " give --rank 4 or an adapter of rank 8");
        assertThatThrownBy(() -> FineTuneBenchmark.check(settings.withLora(4, 16, 0), micro, adapterOnly))
                .hasMessageContaining("lora_alpha is 8 but --alpha is 16");
        assertThatThrownBy(() -> FineTuneBenchmark.check(settings.withTargetModules("q_proj,v_proj"), micro, adapterOnly))
                .hasMessageContaining("adapts 14 modules").hasMessageContaining("--target-modules q_proj,v_proj adapts 4")
                .hasMessageContaining("it adapts model.layers.0.self_attn.k_proj, which the benchmark does not");
        assertThatThrownBy(() -> FineTuneBenchmark.check(settings.withMethod(BenchMethod.FULL), micro, adapterOnly))
                .hasMessageContaining("cannot start full fine-tuning (--method full)");
        assertThat(FineTuneBenchmark.check(settings.withLora(4, 8, 0.05), micro, adapterOnly))
                .endsWith("adapter_config.json has lora_dropout 0; the benchmark applies --dropout 0.05");
    }

    @Test
    void anAdapterForAnotherModelShapeIsRefusedByTensorShape() {
        PeftAdapter a = sameData.initialAdapter().adapter();
        Map<String, PeftAdapter.Weight> tensors = new LinkedHashMap<>(a.tensors());
        String key = PeftAdapter.loraAKey("model.layers.1.mlp.down_proj");
        tensors.put(key, new PeftAdapter.Weight(new long[] {4, 64}, new float[4 * 64]));
        InitialAdapter wrong = new InitialAdapter(fixture, new PeftAdapter(a.config(), null, tensors));
        assertThatThrownBy(() -> FineTuneBenchmark.check(settings, micro, new BenchInputs(null, wrong)))
                .hasMessageContaining(key + " has shape [4, 64] but the benchmark's model needs [4, 128]");
    }

    @Test
    void tokensThatDoNotFitTheConfigurationAreRefusedBeforeAnyDeviceWork() {
        BenchInputs tokensOnly = new BenchInputs(sameData.tokens(), null);
        assertThatThrownBy(() -> FineTuneBenchmark.check(settings.withBatch(16, 2, 2), micro, tokensOnly))
                .hasMessageContaining("tokens.json: sequence [0][0] has 32 token ids but --seq is 16");
        assertThatThrownBy(() -> FineTuneBenchmark.check(settings.withBatch(32, 4, 2), micro, tokensOnly))
                .hasMessageContaining("micro-batch [0] holds 2 sequences but --micro-batch is 4");
        int[][][] ids = {{new int[32], new int[32]}};
        ids[0][1][3] = 256;
        TokenBatches big = TokenBatches.of(Path.of("big.json"), ids);
        assertThatThrownBy(() -> FineTuneBenchmark.check(settings, micro, new BenchInputs(big, null)))
                .hasMessageContaining("big.json: [0][1][3] = 256 is not a token id of this model, whose vocabulary has 256");
    }

    /** The adapter with every B zero, A unchanged: PEFT's initialisation, with this A. */
    static PeftAdapter withZeroB(PeftAdapter a) {
        Map<String, PeftAdapter.Weight> tensors = new LinkedHashMap<>();
        for (var e : a.tensors().entrySet()) {
            PeftAdapter.Weight w = e.getValue();
            if (e.getKey().endsWith(".lora_B.weight")) w = new PeftAdapter.Weight(w.shape(), new float[w.values().length]);
            tensors.put(e.getKey(), w);
        }
        return new PeftAdapter(a.config(), null, tensors);
    }
}
