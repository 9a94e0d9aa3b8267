package dev.lora4j.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.lora4j.lora.PeftAdapter;
import dev.lora4j.model.LlamaShape;
import dev.lora4j.model.RandomModelWriter;
import dev.lora4j.model.TrainablePlan;
import dev.lora4j.tensor.DType;
import dev.lora4j.train.bench.BenchMethod;
import dev.lora4j.train.bench.BenchSettings;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

/**
 * {@code lora4j bench --tokens FILE --init-adapter DIR} as a user runs it to compare lora4j's losses with another
 * implementation's: a tiny random model folder, an adapter saved in PEFT's format and a token file, on the CPU.
 */
class BenchSameDataCommandTest {

    @TempDir
    static Path dir;
    static Path model, adapter, tokens;

    @BeforeAll
    static void writeModelAdapterAndTokens() throws IOException {
        model = dir.resolve("model");
        RandomModelWriter.writeWeightsAndConfig(model, RandomModelWriter.preset("tiny"), RandomModelWriter.Options.of(DType.BF16, 7), null);
        // The bench's own adapter configuration (q_proj and v_proj, r=16, alpha 32), saved with dropout 0.05.
        BenchSettings s = BenchSettings.defaults(BenchMethod.LORA);
        TrainablePlan plan = TrainablePlan.of(LlamaShape.of(RandomModelWriter.preset("tiny")), s.fineTuneMethod());
        SplittableRandom random = new SplittableRandom(3);
        Map<String, PeftAdapter.Weight> tensors = new LinkedHashMap<>();
        for (TrainablePlan.LoraModule m : plan.loraModules()) {
            tensors.put(PeftAdapter.loraAKey(m.path()), random(new long[] {m.rank(), m.inFeatures()}, 0.06, random));
            tensors.put(PeftAdapter.loraBKey(m.path()), random(new long[] {m.outFeatures(), m.rank()}, 0.1, random));
        }
        adapter = dir.resolve("adapter");
        new PeftAdapter(s.loraConfig(), null, tensors).save(adapter);
        StringBuilder json = new StringBuilder("{\"made_by\": \"a test\", \"micro_batches\": [");
        for (int b = 0; b < 2; b++) {
            json.append(b == 0 ? "[[" : ", [[");
            for (int t = 0; t < 16; t++) json.append(t == 0 ? "" : ", ").append(random.nextInt(2048));
            json.append("]]");
        }
        tokens = Files.writeString(dir.resolve("tokens.json"), json.append("]}").toString());
    }

    private static PeftAdapter.Weight random(long[] shape, double std, SplittableRandom random) {
        float[] v = new float[(int) (shape[0] * shape[1])];
        for (int i = 0; i < v.length; i++) v[i] = (float) (random.nextGaussian() * std);
        return new PeftAdapter.Weight(shape, v);
    }

    private static CliRun bench(String... more) {
        String[] base = {"bench", "-m", model.toString(), "--device", "cpu", "--gemm-size", "0", "--seq", "16",
                "--micro-batch", "1", "--accum", "2", "--warmup-steps", "1", "--steps", "1", "--dropout", "0"};
        String[] args = new String[base.length + more.length];
        System.arraycopy(base, 0, args, 0, base.length);
        System.arraycopy(more, 0, args, base.length, more.length);
        return CliRun.of(args);
    }

    @Test
    void trainsOnTheGivenTokensFromTheGivenAdapterAndReportsEveryStepsAndMicroBatchsLoss() throws IOException {
        Path json = dir.resolve("same.json");
        CliRun run = bench("--tokens", tokens.toString(), "--init-adapter", adapter.toString(), "--json", json.toString());
        assertThat(run.exitCode()).as(run.err()).isZero();
        assertThat(run.out()).contains("token batches: " + tokens + " (2 micro-batches)", "initial adapter: " + adapter,
                "note: " + adapter.resolve("adapter_config.json") + " has lora_dropout 0.05; the benchmark applies --dropout 0",
                "LoRA q_proj,v_proj: step losses (1 warm-up + 1 timed): ");
        assertThat(run.err()).contains("LoRA q_proj,v_proj: initial adapter from " + adapter);

        JsonNode r = new ObjectMapper().readTree(json.toFile()).path("results").get(0);
        assertThat(r.path("tokens").asText()).isEqualTo(tokens.toString());
        assertThat(r.path("init_adapter").asText()).isEqualTo(adapter.toString());
        assertThat(r.path("step_losses")).hasSize(2);
        assertThat(r.path("micro_batch_losses")).hasSize(2).allSatisfy(step -> assertThat(step).hasSize(2));
        double first = r.path("step_losses").get(0).asDouble();
        JsonNode micro = r.path("micro_batch_losses").get(0);
        assertThat(first).isCloseTo((micro.get(0).asDouble() + micro.get(1).asDouble()) / 2, within(1e-12));
        // The printed line carries the same figures as the JSON.
        assertThat(run.out()).contains(String.format(Locale.ROOT, "step losses (1 warm-up + 1 timed): %.6f %.6f", first,
                r.path("step_losses").get(1).asDouble()));

        // lora4j's own initial adapter (B = 0) on the same tokens starts elsewhere: the given B is in the first loss.
        Path own = dir.resolve("own.json");
        CliRun drawn = bench("--tokens", tokens.toString(), "--json", own.toString());
        assertThat(drawn.exitCode()).as(drawn.err()).isZero();
        JsonNode d = new ObjectMapper().readTree(own.toFile()).path("results").get(0);
        assertThat(d.path("init_adapter").isNull()).isTrue();
        assertThat(Math.abs(d.path("step_losses").get(0).asDouble() - first)).isGreaterThan(1e-4);
    }

    @Test
    void tokensOrAnAdapterThatDoNotFitGetOneLineNamingTheFileAndWhatDiffers() throws IOException {
        assertError(bench("--tokens", tokens.toString(), "--seq", "8"),
                tokens + ": sequence [0][0] has 16 token ids but --seq is 8");
        Path bad = Files.writeString(dir.resolve("bad.json"), "[[[1, 2,\n 3.5]]]");
        assertError(bench("--tokens", bad.toString()), bad + ": [0][0][2] (line 2, column 2) is a fractional number, not a token id");
        assertError(bench("--tokens", dir.resolve("absent.json").toString()), "no such file or folder: " + dir.resolve("absent.json"));
        assertError(bench("--init-adapter", adapter.toString(), "--rank", "8"),
                "r is 16 but the benchmark trains adapters of rank 8 (--rank); give --rank 16 or an adapter of rank 8");
        assertError(bench("--init-adapter", adapter.toString(), "--target-modules", "all-linear"),
                "adapts 8 modules (target_modules [q_proj, v_proj]) but --target-modules all-linear adapts 28");
        assertError(bench("--init-adapter", adapter.toString(), "--method", "full"), "cannot start full fine-tuning (--method full)");
        assertError(bench("--init-adapter", dir.resolve("nowhere").toString()), "no such file or folder: " + dir.resolve("nowhere"));
    }

    private static void assertError(CliRun run, String message) {
        assertThat(run.exitCode()).as(run.out()).isNotZero();
        assertThat(run.err()).contains(message);
        assertThat(run.err()).doesNotContain("\tat dev.lora4j");
    }
}
