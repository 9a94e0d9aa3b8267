package dev.lora4j.train;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.lora4j.lora.LoraConfig;
import dev.lora4j.lora.TargetModules;
import dev.lora4j.train.checkpoint.CheckpointFolders;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Training end to end on a tiny random model, on the CPU. */
class SftTrainerTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    static Path shared;
    static TinyModel tiny;

    @TempDir
    Path dir;

    @BeforeAll
    static void writeModelAndData() throws IOException {
        tiny = TinyModel.write(shared);
    }

    private static SftConfig.Builder config(Path out) {
        return TinyModel.config(out);
    }

    private static SftTrainer trainer(SftConfig config, boolean withEval) {
        return tiny.trainer(config, withEval);
    }

    private static List<JsonNode> metrics(Path out) throws IOException {
        List<JsonNode> lines = new ArrayList<>();
        for (String l : Files.readAllLines(out.resolve(SftTrainer.METRICS_FILE))) lines.add(JSON.readTree(l));
        return lines;
    }

    @Test
    void trainingLowersTheEvalLossAndWritesLogsCheckpointsAndTheAdapter() throws IOException {
        Path out = dir.resolve("out");
        TrainResult result;
        double before;
        LoraConfig allLinear = LoraConfig.defaults().withR(8).withLoraAlpha(16).withTargetModules(TargetModules.fromString("all-linear"));
        try (SftTrainer t = tiny.trainer(config(out).numTrainEpochs(4).build(), true, allLinear)) {
            // 22 samples in batches of 3: 8 micro-batches per epoch, 4 optimizer steps (the last takes the remaining 2).
            assertThat(t.plan().batchesPerEpoch()).isEqualTo(8);
            assertThat(t.plan().stepsPerEpoch()).isEqualTo(4);
            assertThat(t.plan().totalSteps()).isEqualTo(16);
            before = t.evaluate();
            result = t.train();
        }
        assertThat(result.globalStep()).isEqualTo(16);
        assertThat(result.evalLoss()).isLessThan(before - 0.5);
        assertThat(out.resolve("adapter_model.safetensors")).exists();
        assertThat(out.resolve("adapter_config.json")).exists();
        assertThat(CheckpointFolders.list(out)).extracting(p -> p.getFileName().toString()).hasSize(8)
                .contains("checkpoint-2", "checkpoint-16");
        Path last = out.resolve("checkpoint-16");
        assertThat(last.resolve("adapter_model.safetensors")).exists();
        assertThat(last.resolve(SftTrainer.OPTIMIZER_FILE)).exists();
        assertThat(last.resolve("trainer_state.json")).exists();

        List<JsonNode> lines = metrics(out);
        List<JsonNode> train = lines.stream().filter(n -> n.has("loss")).toList();
        assertThat(train).hasSize(16);
        assertThat(train.getFirst().get("step").asLong()).isEqualTo(1);
        assertThat(train.getFirst().get("learning_rate").asDouble()).isZero(); // warmup starts at 0, as in transformers
        assertThat(train.get(1).get("learning_rate").asDouble()).isEqualTo(1e-2);
        assertThat(train.getFirst().has("grad_norm") && train.getFirst().has("tokens_per_second") && train.getFirst().has("epoch")).isTrue();
        assertThat(train.getLast().get("epoch").asDouble()).isEqualTo(4.0);
        assertThat(lines.stream().filter(n -> n.has("eval_loss")).count()).isEqualTo(16);
        assertThat(lines.getLast().has("train_loss")).isTrue();
        try (var runs = Files.list(out.resolve("runs"))) {
            Path run = runs.findFirst().orElseThrow();
            try (var files = Files.list(run)) {
                assertThat(files.map(p -> p.getFileName().toString())).singleElement().asString().startsWith("events.out.tfevents.");
            }
        }
    }

    @Test
    void saveTotalLimitKeepsTheNewestCheckpoints() throws IOException {
        Path out = dir.resolve("limited");
        try (SftTrainer t = trainer(config(out).maxSteps(6).saveTotalLimit(2).reportTo(List.of("none")).build(), false)) {
            t.train();
        }
        assertThat(CheckpointFolders.list(out)).extracting(p -> p.getFileName().toString()).containsExactly("checkpoint-4", "checkpoint-6");
        assertThat(out.resolve("runs")).doesNotExist();
    }

    @Test
    void resumingWithOtherSettingsIsRefusedWithTheDifferences() throws IOException {
        Path out = dir.resolve("changed");
        try (SftTrainer t = trainer(config(out).maxSteps(2).reportTo(List.of("none")).build(), false)) {
            t.train();
        }
        try (SftTrainer t = trainer(config(out).maxSteps(4).perDeviceTrainBatchSize(2).seed(6).resumeFromCheckpoint("latest")
                .reportTo(List.of("none")).build(), false)) {
            assertThatThrownBy(t::train).hasMessageContaining("cannot resume from")
                    .hasMessageContaining("per_device_train_batch_size was 3, now 2").hasMessageContaining("seed was 5, now 6");
        }
        try (SftTrainer t = trainer(config(dir.resolve("empty")).resumeFromCheckpoint("latest").build(), false)) {
            assertThatThrownBy(t::train).hasMessageContaining("has no complete checkpoint-N folder");
        }
    }
}
