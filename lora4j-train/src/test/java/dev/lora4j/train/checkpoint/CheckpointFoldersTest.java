package dev.lora4j.train.checkpoint;

import com.fasterxml.jackson.databind.ObjectMapper;
import dev.lora4j.train.data.DataPosition;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class CheckpointFoldersTest {

    @TempDir
    Path out;

    private static TrainerState state(long step) {
        return new TrainerState(step, 0.5, 100, 3.0, 10, 10, 20, 4, 2.5, 20L, "out/checkpoint-20",
                List.of(new ObjectMapper().createObjectNode().put("step", step).put("loss", 3.25)),
                new DataPosition(1, 7), 42, "abc123", 50, 2, "linear", 2e-4, 3, 12345, 30.5, "lora");
    }

    private Path save(long step) throws IOException {
        return CheckpointFolders.write(out, step, dir -> {
            Files.writeString(dir.resolve("adapter_model.safetensors"), "weights " + step);
            state(step).write(dir.resolve(CheckpointFolders.STATE_FILE));
        });
    }

    @Test
    void aCheckpointAppearsCompleteUnderItsStepName() throws IOException {
        Path c = save(20);
        assertThat(c).isEqualTo(out.resolve("checkpoint-20"));
        assertThat(Files.readString(c.resolve("adapter_model.safetensors"))).isEqualTo("weights 20");
        try (var files = Files.list(out)) {
            assertThat(files.map(p -> p.getFileName().toString())).containsExactly("checkpoint-20");
        }
    }

    @Test
    void aFailedWriteLeavesNoCheckpointBehind() throws IOException {
        assertThatThrownBy(() -> CheckpointFolders.write(out, 30, dir -> {
            Files.writeString(dir.resolve("adapter_model.safetensors"), "half");
            throw new IOException("disk full");
        })).hasMessage("disk full");
        assertThat(CheckpointFolders.list(out)).isEmpty();
        try (var files = Files.list(out)) {
            assertThat(files).isEmpty();
        }
    }

    @Test
    void latestIsTheHighestCompleteStepNotTheLastInNameOrder() throws IOException {
        save(9);
        save(10);
        save(100);
        Files.createDirectories(out.resolve("checkpoint-200")); // a folder without trainer_state.json is incomplete
        Files.createDirectories(out.resolve(".tmp-checkpoint-300-1f"));
        assertThat(CheckpointFolders.latest(out)).contains(out.resolve("checkpoint-100"));
        assertThat(CheckpointFolders.list(out)).extracting(p -> p.getFileName().toString())
                .containsExactly("checkpoint-9", "checkpoint-10", "checkpoint-100");
        CheckpointFolders.removeLeftovers(out);
        assertThat(out.resolve(".tmp-checkpoint-300-1f")).doesNotExist();
    }

    @Test
    void saveTotalLimitDeletesTheOldestButKeepsTheBest() throws IOException {
        for (long s : new long[]{10, 20, 30, 40}) save(s);
        List<Path> deleted = CheckpointFolders.rotate(out, 2, out.resolve("checkpoint-10"));
        assertThat(deleted).extracting(p -> p.getFileName().toString()).containsExactly("checkpoint-20", "checkpoint-30");
        assertThat(CheckpointFolders.list(out)).extracting(p -> p.getFileName().toString())
                .containsExactly("checkpoint-10", "checkpoint-40");
    }

    @Test
    void trainerStateRoundTripsAndKeepsTransformersFieldNames() throws IOException {
        Path f = out.resolve("trainer_state.json");
        state(20).write(f);
        TrainerState read = TrainerState.read(f);
        assertThat(read.toJson()).isEqualTo(state(20).toJson());
        assertThat(read.position()).isEqualTo(new DataPosition(1, 7));
        assertThat(read.bestMetric()).isEqualTo(2.5);
        var root = new ObjectMapper().readTree(f.toFile());
        assertThat(root.has("global_step") && root.has("log_history") && root.has("best_metric") && root.has("max_steps")).isTrue();
    }

    @Test
    void aStateWithoutLora4jFieldsIsRefusedWithTheReason() throws IOException {
        Path f = out.resolve("trainer_state.json");
        Files.writeString(f, "{\"global_step\": 5, \"log_history\": []}");
        assertThatThrownBy(() -> TrainerState.read(f)).isInstanceOf(IOException.class)
                .hasMessageContaining("was not written by lora4j");
        Files.writeString(f, "{\"global_step\": ");
        assertThatThrownBy(() -> TrainerState.read(f)).hasMessageContaining("is not valid JSON");
    }
}
