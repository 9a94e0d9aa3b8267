package dev.lora4j.train.bench;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class ReferenceResultTest {

    /** Lines as a device command's log holds them: the script's output among other lines. */
    static final String LOG = """
            == lora-qv
            /usr/lib/python3/dist-packages/torch/cuda/__init__.py: UserWarning: something
            RESULT {"shape": "mistral-7b", "mode": "lora-qv", "gc": false, "micro_batch": 4, "seq": 1024, "accum": 4, "rank": 16, "torch": "2.11.0", "load_gib": 13.49, "trainable_params": 6815744, "samples_per_s": 13.1, "tokens_per_s": 13414, "peak_gib": 37.7, "loss": 10.3731}
            RESULT {"shape": "mistral-7b", "mode": "qlora-all", "gc": true, "micro_batch": 4, "seq": 1024, "accum": 4, "rank": 16, "torch": "2.11.0", "error": "bitsandbytes is not installed"}
            {"shape": "mistral-7b", "mode": "full", "gc": true, "micro_batch": 4, "seq": 1024, "accum": 4, "rank": 16, "samples_per_s": 8.47, "tokens_per_s": 8673, "peak_gib": 56.9, "load_gib": 13.49, "loss": 10.37}
            """;

    @Test
    void readsTheResultLinesOfTheReferenceScriptAndSkipsTheRest(@TempDir Path dir) throws IOException {
        List<ReferenceResult> refs = ReferenceResult.read(Files.writeString(dir.resolve("ref.txt"), LOG));
        assertThat(refs).hasSize(3);
        ReferenceResult qv = refs.getFirst();
        assertThat(qv.mode()).isEqualTo("lora-qv");
        assertThat(qv.samplesPerSecond()).isEqualTo(13.1);
        assertThat(qv.peakGib()).isEqualTo(37.7);
        assertThat(qv.trainableParameters()).isEqualTo(6_815_744L);
        assertThat(qv.failed()).isFalse();
        assertThat(refs.get(1).failed()).isTrue();
        assertThat(refs.get(1).error()).isEqualTo("bitsandbytes is not installed");
        assertThat(refs.get(2).gc()).isTrue();
    }

    @Test
    void matchesOnlyTheSameWorkload(@TempDir Path dir) throws IOException {
        List<ReferenceResult> refs = ReferenceResult.read(Files.writeString(dir.resolve("ref.txt"), LOG));
        BenchSettings qv = BenchSettings.defaults(BenchMethod.LORA);
        assertThat(ReferenceResult.find(refs, result(qv, "mistral-7b"))).isSameAs(refs.getFirst());
        assertThat(ReferenceResult.find(refs, result(qv, "llama3-8b"))).isNull();
        assertThat(ReferenceResult.find(refs, result(qv.withGradientCheckpointing(true), "mistral-7b"))).isNull();
        assertThat(ReferenceResult.find(refs, result(qv.withBatch(2048, 4, 4), "mistral-7b"))).isNull();
        assertThat(ReferenceResult.find(refs, result(qv.withLora(8, 16, 0.05), "mistral-7b"))).isNull();
        assertThat(ReferenceResult.find(refs, result(qv.withTargetModules("q_proj,k_proj"), "mistral-7b"))).isNull();
        // Full fine-tuning has no rank to compare.
        BenchSettings full = qv.withMethod(BenchMethod.FULL).withGradientCheckpointing(true).withLora(64, 16, 0);
        assertThat(ReferenceResult.find(refs, result(full, "mistral-7b"))).isSameAs(refs.get(2));
    }

    @Test
    void aFileWithoutResultsOrWithABrokenResultLineIsRefusedNamingTheLine(@TempDir Path dir) throws IOException {
        Path empty = Files.writeString(dir.resolve("empty.txt"), "Traceback (most recent call last):\n");
        assertThatThrownBy(() -> ReferenceResult.read(empty)).isInstanceOf(IOException.class)
                .hasMessageContaining("holds no result of hf_peft_bench.py");
        Path broken = Files.writeString(dir.resolve("broken.txt"), "x\nRESULT {\"mode\": \"full\", \n");
        assertThatThrownBy(() -> ReferenceResult.read(broken)).isInstanceOf(IOException.class)
                .hasMessageContaining("broken.txt, line 2");
    }

    static BenchResult result(BenchSettings s, String shape) {
        return new BenchResult(s, shape, "test", "BF16", 1, 2, 3, 4, 0, List.of(10.0), List.of(List.of(10.0)), List.of(1.0),
                new TrainingFlops(1, 1, 0, s.tokensPerStep(), s.samplesPerStep()), Double.NaN, null, null, null, null, null);
    }
}
