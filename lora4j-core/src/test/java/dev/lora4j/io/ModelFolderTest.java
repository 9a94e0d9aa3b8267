package dev.lora4j.io;

import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** A model folder is config.json plus safetensors weights; anything less gets an error that says what is missing. */
class ModelFolderTest {

    @TempDir
    Path dir;

    private void writeConfig() throws IOException {
        Files.writeString(dir.resolve("config.json"), ModelConfigTest.resource("tinyllama-1.1b-chat.json"));
    }

    private void writeWeights() throws IOException {
        new SafetensorsWriter().metadata("format", "pt")
                .add("model.norm.weight", DType.F32, new long[]{2}, MemorySegment.ofArray(new float[]{1, 1}))
                .writeTo(dir.resolve("model.safetensors"));
    }

    @Test
    void opensAFolderWithConfigWeightsTokenizerAndGenerationConfig() throws IOException {
        writeConfig();
        writeWeights();
        Files.writeString(dir.resolve("generation_config.json"), "{\"eos_token_id\": 2, \"max_new_tokens\": 64}");
        Files.writeString(dir.resolve("tokenizer.json"), "{}");
        try (ModelFolder m = ModelFolder.open(dir)) {
            assertThat(m.path()).isEqualTo(dir);
            assertThat(m.config().numHiddenLayers()).isEqualTo(22);
            assertThat(m.generationConfig().maxNewTokens()).isEqualTo(64);
            assertThat(m.hasTokenizer()).isTrue();
            assertThat(m.tokenizerFolder()).isEqualTo(dir);
            SafetensorsModel w = m.weights();
            assertThat(w.names()).containsExactly("model.norm.weight");
            assertThat(m.weights()).isSameAs(w);
        }
    }

    @Test
    void worksWithoutTokenizerOrGenerationConfig() throws IOException {
        writeConfig();
        writeWeights();
        try (ModelFolder m = ModelFolder.open(dir)) {
            assertThat(m.hasTokenizer()).isFalse();
            assertThat(m.generationConfig()).isEqualTo(GenerationConfig.EMPTY);
        }
    }

    @Test
    void closingTheFolderUnmapsTheWeights() throws IOException {
        writeConfig();
        writeWeights();
        ModelFolder m = ModelFolder.open(dir);
        MemorySegment data = m.weights().data("model.norm.weight");
        m.close();
        assertThatThrownBy(() -> data.get(java.lang.foreign.ValueLayout.JAVA_BYTE, 0)).isInstanceOf(IllegalStateException.class);
        assertThatThrownBy(m::weights).isInstanceOf(IllegalStateException.class).hasMessageContaining("closed");
    }

    @Test
    void saysWhatAModelFolderHoldsWhenConfigIsMissing() throws IOException {
        writeWeights();
        assertThatThrownBy(() -> ModelFolder.open(dir)).isInstanceOf(ConfigFormatException.class)
                .hasMessageContainingAll(dir.toString(), "no config.json", "model.safetensors", "tokenizer.json");
        assertThatThrownBy(() -> ModelFolder.open(dir.resolve("absent"))).isInstanceOf(NoSuchFileException.class)
                .hasMessageContainingAll("absent", "config.json");
        Path file = Files.writeString(dir.resolve("file.txt"), "x");
        assertThatThrownBy(() -> ModelFolder.open(file)).isInstanceOf(ConfigFormatException.class)
                .hasMessageContaining("not a model folder");
    }

    @Test
    void explainsHowToConvertPyTorchCheckpoints() throws IOException {
        writeConfig();
        Files.write(dir.resolve("pytorch_model.bin"), new byte[16]);
        assertThatThrownBy(() -> ModelFolder.open(dir)).isInstanceOf(ConfigFormatException.class)
                .hasMessageContainingAll(dir.toString(), "pytorch_model.bin", "does not read",
                        "save_pretrained(out, safe_serialization=True)");
    }

    @Test
    void saysWhenThereAreNoWeightsAtAll() throws IOException {
        writeConfig();
        assertThatThrownBy(() -> ModelFolder.open(dir)).isInstanceOf(ConfigFormatException.class)
                .hasMessageContainingAll("no safetensors weights", "no weights at all");
    }

    @Test
    void reportsABadConfigWithItsPath() throws IOException {
        writeWeights();
        Files.writeString(dir.resolve("config.json"), "{\"architectures\": [\"GPT2LMHeadModel\"]}");
        assertThatThrownBy(() -> ModelFolder.open(dir)).isInstanceOf(ConfigFormatException.class)
                .hasMessageContainingAll("unsupported architecture GPT2LMHeadModel", dir.resolve("config.json").toString());
    }
}
