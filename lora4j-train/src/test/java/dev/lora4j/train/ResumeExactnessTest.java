package dev.lora4j.train;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.lora4j.api.Device;
import dev.lora4j.io.SafetensorsFile;
import dev.lora4j.model.FineTuneMethod;
import dev.lora4j.tensor.DType;
import dev.lora4j.train.checkpoint.CheckpointFolders;
import dev.lora4j.train.optim.OptimizerType;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * A run killed after a checkpoint and resumed from it ends with the same bytes as a run that was never interrupted.
 *
 * <p>Runs in its own surefire execution on the C1 compiler (see lora4j-train's pom): once C2 compiles the CPU
 * kernels, the Vector API's lanewise EXP runs a vector math library whose results differ from Math.exp's in the
 * last bit for about 1% of inputs, so under C2 a run's last bits depend on when its kernels got compiled, and two
 * identical uninterrupted runs in one JVM already differ.
 */
class ResumeExactnessTest {
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

    /** Stops a run as a kill would, right after a step. */
    private static final class Kill extends RuntimeException {}

    private static TrainingListener killAfter(long step) {
        return new TrainingListener() {
            @Override
            public void onStep(StepReport report) {
                if (report.step() == step) throw new Kill();
            }
        };
    }

    @Test
    void loraRunResumedAfterAKillEndsBitForBitWhereAnUninterruptedRunEnds() throws IOException {
        check(FineTuneMethod.lora(TinyModel.lora()));
    }

    @Test
    void qloraRunResumedAfterAKillEndsBitForBitWhereAnUninterruptedRunEnds() throws IOException {
        check(FineTuneMethod.qlora(TinyModel.lora()));
    }

    @Test
    void fullFineTuningResumedAfterAKillEndsBitForBitWhereAnUninterruptedRunEnds() throws IOException {
        check(FineTuneMethod.full());
    }

    @Test
    void fullFineTuningInBf16ResumedAfterAKillEndsBitForBitWhereAnUninterruptedRunEnds() throws IOException {
        check(FineTuneMethod.full(DType.BF16));
        // What it saved is BF16, as torch saves a bfloat16 model and its AdamW state: weights, moments, config.
        Path out = dir.resolve("straight");
        try (SafetensorsFile model = SafetensorsFile.open(out.resolve("model.safetensors"));
             SafetensorsFile optimizer = SafetensorsFile.open(out.resolve("checkpoint-6").resolve(SftTrainer.OPTIMIZER_FILE))) {
            assertThat(model.info("model.layers.0.self_attn.q_proj.weight").dtype()).isEqualTo(DType.BF16);
            assertThat(model.info("model.norm.weight").dtype()).isEqualTo(DType.F32);
            assertThat(optimizer.info("model.layers.0.mlp.down_proj.weight.exp_avg").dtype()).isEqualTo(DType.BF16);
        }
        assertThat(JSON.readTree(out.resolve("config.json").toFile()).get("dtype").asText()).isEqualTo("bfloat16");
    }

    @Test
    void runWithPagedEightBitAdamWResumedAfterAKillEndsBitForBitWhereAnUninterruptedRunEnds() throws IOException {
        check(FineTuneMethod.full(), OptimizerType.PAGED_ADAMW_8BIT); // full: weights large enough for 8-bit states
    }

    private SftTrainer trainer(SftConfig config, FineTuneMethod method) {
        return SftTrainer.builder().model(tiny.folder, Device.CPU).trainDataset(tiny.trainFile).evalDataset(tiny.evalFile)
                .config(config).method(method).build();
    }

    private void check(FineTuneMethod method) throws IOException {
        check(method, OptimizerType.ADAMW_TORCH);
    }

    private void check(FineTuneMethod method, OptimizerType optim) throws IOException {
        boolean full = method instanceof FineTuneMethod.Full;
        Path straight = dir.resolve("straight"), interrupted = dir.resolve("interrupted");
        // 1.5 epochs of 4 steps: 6 steps. The kill comes after step 5, one step after checkpoint-4, which ends the first
        // epoch, so the resumed run starts by turning to the next epoch's order.
        SftConfig.Builder config = TinyModel.config(straight).numTrainEpochs(1.5).evalSteps(3.0).learningRate(full ? 1e-3 : 1e-2)
                .optim(optim);
        try (SftTrainer t = trainer(config.build(), method)) {
            t.train();
        }
        try (SftTrainer t = trainer(config.outputDir(interrupted).build(), method)) {
            t.addListener(killAfter(5));
            assertThatThrownBy(t::train).isInstanceOf(Kill.class);
        }
        assertThat(CheckpointFolders.latest(interrupted)).contains(interrupted.resolve("checkpoint-4"));
        try (SftTrainer t = trainer(config.outputDir(interrupted).resumeFromCheckpoint("latest").build(), method)) {
            assertThat(t.train().globalStep()).isEqualTo(6);
        }
        String weights = full ? "model.safetensors" : "adapter_model.safetensors";
        assertThat(sha256(interrupted.resolve(weights))).isEqualTo(sha256(straight.resolve(weights)));
        assertThat(sha256(interrupted.resolve("checkpoint-6").resolve(SftTrainer.OPTIMIZER_FILE)))
                .isEqualTo(sha256(straight.resolve("checkpoint-6").resolve(SftTrainer.OPTIMIZER_FILE)));
        // The metrics log of the resumed run has each step once, with the same losses and learning rates.
        assertThat(values(interrupted, "loss")).isEqualTo(values(straight, "loss")).hasSize(6);
        assertThat(values(interrupted, "learning_rate")).isEqualTo(values(straight, "learning_rate"));
        assertThat(values(interrupted, "eval_loss")).isEqualTo(values(straight, "eval_loss")).hasSize(2);
        JsonNode state = JSON.readTree(interrupted.resolve("checkpoint-6/trainer_state.json").toFile());
        assertThat(state.get("log_history").size()).isEqualTo(JSON.readTree(straight.resolve("checkpoint-6/trainer_state.json").toFile())
                .get("log_history").size());
    }

    private static List<Double> values(Path out, String key) throws IOException {
        return Files.readAllLines(out.resolve(SftTrainer.METRICS_FILE)).stream().map(l -> {
            try {
                return JSON.readTree(l);
            } catch (IOException e) {
                throw new IllegalStateException(e);
            }
        }).filter(n -> n.has(key)).map(n -> n.get(key).asDouble()).toList();
    }

    private static String sha256(Path file) throws IOException {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(Files.readAllBytes(file)));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
