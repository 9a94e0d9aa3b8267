package dev.lora4j.io;

import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** A folder's weights are found the way Hugging Face finds them, and inconsistent folders are named as such. */
class SafetensorsModelTest {

    @TempDir
    Path dir;

    private void writeFile(String fileName, String... tensorNames) throws IOException {
        var w = new SafetensorsWriter();
        for (String n : tensorNames) {
            w.add(n, DType.U8, new long[]{n.length()}, MemorySegment.ofArray(n.getBytes(java.nio.charset.StandardCharsets.UTF_8)));
        }
        w.writeTo(dir.resolve(fileName));
    }

    private void writeIndex(String weightMapJson) throws IOException {
        Files.writeString(dir.resolve("model.safetensors.index.json"),
                "{\"metadata\":{\"total_size\":0},\"weight_map\":" + weightMapJson + "}");
    }

    private static String text(SafetensorsModel m, String name) {
        return new String(m.data(name).toArray(ValueLayout.JAVA_BYTE), java.nio.charset.StandardCharsets.UTF_8);
    }

    @Test
    void readsASingleModelFile() throws IOException {
        writeFile("model.safetensors", "a.weight", "b.weight");
        try (var m = SafetensorsModel.open(dir)) {
            assertThat(m.names()).containsExactly("a.weight", "b.weight");
            assertThat(m.contains("a.weight")).isTrue();
            assertThat(m.contains("c.weight")).isFalse();
            assertThat(m.info("b.weight").dtype()).isEqualTo(DType.U8);
            assertThat(text(m, "b.weight")).isEqualTo("b.weight");
            assertThat(m.fileOf("a.weight")).isEqualTo(dir.resolve("model.safetensors"));
            assertThat(m.files()).containsExactly(dir.resolve("model.safetensors"));
        }
    }

    @Test
    void readsTheShardsAnIndexNames() throws IOException {
        writeFile("model-00001-of-00002.safetensors", "layers.0.w", "embed");
        writeFile("model-00002-of-00002.safetensors", "layers.1.w");
        writeFile("unrelated.safetensors", "other");
        writeIndex("{\"embed\":\"model-00001-of-00002.safetensors\",\"layers.0.w\":\"model-00001-of-00002.safetensors\","
                + "\"layers.1.w\":\"model-00002-of-00002.safetensors\"}");
        try (var m = SafetensorsModel.open(dir)) {
            assertThat(m.names()).containsExactly("layers.0.w", "embed", "layers.1.w");
            assertThat(m.fileOf("layers.1.w")).isEqualTo(dir.resolve("model-00002-of-00002.safetensors"));
            assertThat(text(m, "layers.1.w")).isEqualTo("layers.1.w");
            assertThat(m.contains("other")).isFalse();
        }
    }

    @Test
    void prefersModelSafetensorsOverAnIndex() throws IOException {
        writeFile("model.safetensors", "single");
        writeIndex("{\"x\":\"missing.safetensors\"}");
        try (var m = SafetensorsModel.open(dir)) {
            assertThat(m.names()).containsExactly("single");
        }
    }

    @Test
    void readsEverySafetensorsFileWhenThereIsNeitherModelFileNorIndex() throws IOException {
        writeFile("b.safetensors", "from.b");
        writeFile("a.safetensors", "from.a");
        Files.writeString(dir.resolve("notes.txt"), "not weights");
        try (var m = SafetensorsModel.open(dir)) {
            assertThat(m.names()).containsExactly("from.a", "from.b");
            assertThat(m.fileOf("from.b")).isEqualTo(dir.resolve("b.safetensors"));
        }
    }

    @Test
    void namesAShardTheIndexListsButTheFolderLacks() throws IOException {
        writeFile("model-00001-of-00002.safetensors", "a");
        writeIndex("{\"a\":\"model-00001-of-00002.safetensors\",\"b\":\"model-00002-of-00002.safetensors\"}");
        assertThatThrownBy(() -> SafetensorsModel.open(dir)).isInstanceOf(SafetensorsFormatException.class)
                .hasMessageContainingAll("model.safetensors.index.json", "model-00002-of-00002.safetensors", "does not exist",
                        "incomplete");
    }

    @Test
    void namesATensorTheIndexPlacesInAShardThatDoesNotHoldIt() throws IOException {
        writeFile("model-00001-of-00002.safetensors", "a");
        writeFile("model-00002-of-00002.safetensors", "b");
        writeIndex("{\"a\":\"model-00002-of-00002.safetensors\",\"b\":\"model-00002-of-00002.safetensors\"}");
        assertThatThrownBy(() -> SafetensorsModel.open(dir)).isInstanceOf(SafetensorsFormatException.class)
                .hasMessageContainingAll("tensor 'a'", "model-00002-of-00002.safetensors", "does not contain it");
        writeIndex("{\"a\":\"model-00001-of-00002.safetensors\",\"c\":\"model-00002-of-00002.safetensors\"}");
        assertThatThrownBy(() -> SafetensorsModel.open(dir)).isInstanceOf(SafetensorsFormatException.class)
                .hasMessageContainingAll("tensor 'c'", "does not contain it");
    }

    @Test
    void refusesATensorThatTwoFilesHold() throws IOException {
        writeFile("a.safetensors", "shared", "x");
        writeFile("b.safetensors", "shared");
        assertThatThrownBy(() -> SafetensorsModel.open(dir)).isInstanceOf(SafetensorsFormatException.class)
                .hasMessageContainingAll("'shared'", "a.safetensors", "b.safetensors");
    }

    @Test
    void refusesAnIndexThatIsNotJsonOrHasNoWeightMap() throws IOException {
        Files.writeString(dir.resolve("model.safetensors.index.json"), "{\"weight_map\": ");
        assertThatThrownBy(() -> SafetensorsModel.open(dir)).isInstanceOf(SafetensorsFormatException.class)
                .hasMessageContainingAll("model.safetensors.index.json", "not valid JSON");
        Files.writeString(dir.resolve("model.safetensors.index.json"), "{\"metadata\": {}}");
        assertThatThrownBy(() -> SafetensorsModel.open(dir)).isInstanceOf(SafetensorsFormatException.class)
                .hasMessageContaining("weight_map");
        Files.writeString(dir.resolve("model.safetensors.index.json"), "{\"weight_map\": {\"a\": 3}}");
        assertThatThrownBy(() -> SafetensorsModel.open(dir)).isInstanceOf(SafetensorsFormatException.class)
                .hasMessageContainingAll("'a'", "must name a shard file");
    }

    @Test
    void refusesShardNamesOutsideTheFolder() throws IOException {
        Path inner = Files.createDirectory(dir.resolve("model"));
        writeFile("outside.safetensors", "a");
        Files.writeString(inner.resolve("model.safetensors.index.json"), "{\"weight_map\":{\"a\":\"../outside.safetensors\"}}");
        assertThatThrownBy(() -> SafetensorsModel.open(inner)).isInstanceOf(SafetensorsFormatException.class)
                .hasMessageContainingAll("../outside.safetensors", "outside the model folder");
    }

    @Test
    void saysWhenAFolderHasNoWeights() throws IOException {
        assertThatThrownBy(() -> SafetensorsModel.open(dir)).isInstanceOf(NoSuchFileException.class)
                .hasMessageContainingAll(dir.toString(), "no model.safetensors");
        assertThatThrownBy(() -> SafetensorsModel.open(dir.resolve("nope"))).isInstanceOf(NoSuchFileException.class);
    }

    @Test
    void reportsABadShardWithItsOwnFileName() throws IOException {
        writeFile("model-00001-of-00002.safetensors", "a");
        Files.write(dir.resolve("model-00002-of-00002.safetensors"), new byte[5]);
        writeIndex("{\"a\":\"model-00001-of-00002.safetensors\",\"b\":\"model-00002-of-00002.safetensors\"}");
        assertThatThrownBy(() -> SafetensorsModel.open(dir)).isInstanceOf(SafetensorsFormatException.class)
                .hasMessageContaining(dir.resolve("model-00002-of-00002.safetensors").toString());
    }

    @Test
    void closingUnmapsEveryShard() throws IOException {
        writeFile("a.safetensors", "a");
        MemorySegment data;
        try (var m = SafetensorsModel.open(dir)) {
            data = m.data("a");
            assertThat(data.get(ValueLayout.JAVA_BYTE, 0)).isEqualTo((byte) 'a');
        }
        assertThatThrownBy(() -> data.get(ValueLayout.JAVA_BYTE, 0)).isInstanceOf(IllegalStateException.class);
    }
}
