package dev.lora4j.train.data;

import org.junit.jupiter.api.Test;

import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class BundledDatasetsTest {

    @Test
    void theBundledDatasetsReadAsAnyDatasetFileWould() {
        assertThat(DatasetReader.read(Path.of("bundled:sotu-presidents-train"))).hasSize(180)
                .allSatisfy(r -> assertThat(SftRecords.kindOf(r, "text")).isEqualTo(SftRecords.Kind.PROMPT_COMPLETION));
        assertThat(DatasetReader.read(Path.of("bundled:sotu-presidents-eval"))).hasSize(21);
        assertThat(DatasetReader.read(Path.of("bundled:moby-dick-passages"))).hasSize(400)
                .allSatisfy(r -> assertThat(r.fields().get("text").asText().length()).isBetween(1, 280));
        assertThat(DatasetReader.read(Path.of("bundled:sotu-presidents-eval")).getFirst().where())
                .isEqualTo("bundled:sotu-presidents-eval.jsonl:1");
    }

    @Test
    void anUnknownBundledNameListsTheKnownOnes() {
        assertThatThrownBy(() -> DatasetReader.read(Path.of("bundled:moby")))
                .isInstanceOf(DatasetFormatException.class)
                .hasMessageContaining("bundled:moby: no such bundled dataset").hasMessageContaining("bundled:moby-dick-passages");
    }
}
