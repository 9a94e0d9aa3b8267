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
    void accumulatingMicroBatchesGivesTheUpdateOfOneBatchOfAllTheirTokens() throws IOException {
        // Micro-batches of 2 accumulated twice against one batch of 4: the same 4 samples (the order depends on the
        // seed only), and the loss normalised by the step's target tokens either way, so the same update.
        float[][] updates = new float[2][];
        for (int variant = 0; variant < 2; variant++) {
            Path out = dir.resolve("accumulation" + variant);
            SftConfig c = config(out).maxSteps(1).warmupSteps(0).perDeviceTrainBatchSize(variant == 0 ? 4 : 2)
                    .gradientAccumulationSteps(variant == 0 ? 1 : 2).reportTo(List.of("none")).saveStrategy("no").build();
            try (SftTrainer t = tiny.trainer(c, false, TinyModel.lora().withLoraDropout(0))) {
                t.train();
                var b = t.model().parameters().stream().filter(p -> p.name().endsWith("lora_B.weight")).findFirst().orElseThrow();
                updates[variant] = t.model().backend().toFloats(b.value());
            }
        }
        double norm = 0, maxDifference = 0;
        for (int i = 0; i < updates[0].length; i++) {
            norm = Math.max(norm, Math.abs(updates[0][i]));
            maxDifference = Math.max(maxDifference, Math.abs(updates[1][i] - updates[0][i]));
        }
        assertThat(norm).as("the step changed lora_B").isGreaterThan(1e-3);
        assertThat(maxDifference).isLessThan(1e-6 + 1e-4 * norm);
    }

    @Test
    void aNonFiniteLossOrGradientEndsTheRunWithTheStepAndWhatToChange() throws IOException {
        Path out = dir.resolve("diverged");
        SftTrainer.requireFinite(3, 2.5, 1.0, 1e-3, out);
        assertThatThrownBy(() -> SftTrainer.requireFinite(3, Double.NaN, 1.0, 1e-3, out)).isInstanceOf(TrainingDivergedException.class)
                .hasMessage("step 3: the loss is NaN; training has diverged. Lower learning_rate (now 0.001) or max_grad_norm,"
                        + " and resume from the last checkpoint (none was saved yet)");
        try (SftTrainer t = trainer(config(out).maxSteps(2).reportTo(List.of("none")).build(), false)) {
            t.train();
        }
        assertThatThrownBy(() -> SftTrainer.requireFinite(7, 2.5, Double.POSITIVE_INFINITY, 1e-3, out))
                .hasMessageContaining("step 7: the gradient norm is Infinity").hasMessageContaining("(" + out.resolve("checkpoint-2") + ")");
    }

    @Test
    void aTrainerTrainsOnce() throws IOException {
        try (SftTrainer t = trainer(config(dir.resolve("once")).maxSteps(1).reportTo(List.of("none")).build(), false)) {
            t.train();
            assertThatThrownBy(t::train).isInstanceOf(IllegalStateException.class).hasMessageContaining("once");
        }
    }

    @Test
    void gradientCheckpointingChangesMemoryNotResults() throws IOException {
        List<List<Double>> losses = new java.util.ArrayList<>();
        for (boolean checkpointing : new boolean[]{false, true}) {
            Path out = dir.resolve("ckpt" + checkpointing);
            try (SftTrainer t = trainer(config(out).maxSteps(3).gradientCheckpointing(checkpointing).reportTo(List.of("none")).build(), false)) {
                t.train();
            }
            losses.add(metrics(out).stream().filter(n -> n.has("loss")).map(n -> n.get("loss").asDouble()).toList());
        }
        assertThat(losses.get(1)).hasSize(3);
        for (int i = 0; i < 3; i++) assertThat(losses.get(1).get(i)).isCloseTo(losses.get(0).get(i), org.assertj.core.api.Assertions.within(1e-5));
    }

    @Test
    void packedConversationsWithAssistantOnlyLossTrain() throws IOException {
        StringBuilder chats = new StringBuilder();
        for (int i = 0; i < 12; i++) {
            chats.append("{\"messages\": [{\"role\": \"user\", \"content\": \"Who is number ").append(i % 5)
                    .append("?\"}, {\"role\": \"assistant\", \"content\": \"").append(TinyModel.NAMES[i % 5]).append(".\"}]}\n");
        }
        Path data = Files.writeString(dir.resolve("chats.jsonl"), chats);
        Path out = dir.resolve("chats");
        SftConfig c = config(out).maxSteps(3).packing(true).maxLength(128).assistantOnlyLoss(true).reportTo(List.of("none")).build();
        try (SftTrainer t = SftTrainer.builder().model(tiny.folder, dev.lora4j.api.Device.CPU).lora(TinyModel.lora())
                .trainDataset(data).config(c).build()) {
            // 12 conversations of 30 to 35 tokens packed into bins of 128 tokens: 4 bins (3, 3, 4 and the 2 left).
            List<Integer> perBin = t.trainDataset().samples().stream().map(s -> s.sequences().size()).toList();
            assertThat(perBin.stream().mapToInt(Integer::intValue).sum()).isEqualTo(12);
            assertThat(perBin).containsExactly(3, 3, 4, 2);
            assertThat(t.trainDataset().samples().stream().mapToInt(s -> s.tokens()).max().orElseThrow()).isLessThanOrEqualTo(128);
            TrainResult r = t.train();
            assertThat(r.trainLoss()).isFinite().isPositive();
            assertThat(t.samples(List.of("Who is number 2?"), 3)).hasSize(1);
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
