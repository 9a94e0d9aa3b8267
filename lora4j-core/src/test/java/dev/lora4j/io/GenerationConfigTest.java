package dev.lora4j.io;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** generation_config.json as model authors publish it; absent means no defaults. */
class GenerationConfigTest {

    @TempDir
    Path dir;

    @Test
    void readsLlama31sGenerationDefaults() throws IOException {
        Files.writeString(dir.resolve("generation_config.json"), """
                {
                  "bos_token_id": 128000,
                  "do_sample": true,
                  "eos_token_id": [128001, 128008, 128009],
                  "temperature": 0.6,
                  "top_p": 0.9,
                  "transformers_version": "4.42.3"
                }
                """);
        GenerationConfig g = GenerationConfig.load(dir);
        assertThat(g.bosTokenId()).isEqualTo(128000);
        assertThat(g.eosTokenIds()).containsExactly(128001, 128008, 128009);
        assertThat(g.doSample()).isTrue();
        assertThat(g.temperature()).isEqualTo(0.6);
        assertThat(g.topP()).isEqualTo(0.9);
        assertThat(g.topK()).isNull();
        assertThat(g.padTokenId()).isNull();
        assertThat(g.maxNewTokens()).isNull();
        assertThat(g.repetitionPenalty()).isNull();
    }

    @Test
    void readsQwen25sGenerationDefaults() throws IOException {
        GenerationConfig g = GenerationConfig.parse("""
                {"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": true, "eos_token_id": [151645, 151643],
                 "repetition_penalty": 1.05, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "max_new_tokens": 2048}
                """, "g.json");
        assertThat(g.padTokenId()).isEqualTo(151643);
        assertThat(g.eosTokenIds()).containsExactly(151645, 151643);
        assertThat(g.repetitionPenalty()).isEqualTo(1.05);
        assertThat(g.topK()).isEqualTo(20);
        assertThat(g.maxNewTokens()).isEqualTo(2048);
    }

    @Test
    void readsASingleEosTokenAndNulls() throws IOException {
        GenerationConfig g = GenerationConfig.parse("{\"eos_token_id\": 2, \"temperature\": null}", "g.json");
        assertThat(g.eosTokenIds()).containsExactly(2);
        assertThat(g.temperature()).isNull();
    }

    @Test
    void isEmptyWhenTheFolderHasNone() throws IOException {
        assertThat(GenerationConfig.load(dir)).isEqualTo(GenerationConfig.EMPTY);
        assertThat(GenerationConfig.EMPTY.eosTokenIds()).isEmpty();
    }

    @Test
    void namesTheFileAndFieldWhenMalformed() throws IOException {
        Path p = dir.resolve("generation_config.json");
        Files.writeString(p, "{\"temperature\": \"hot\"}");
        assertThatThrownBy(() -> GenerationConfig.load(dir)).isInstanceOf(ConfigFormatException.class)
                .hasMessageContainingAll(p.toString(), "\"temperature\"", "must be a number");
        Files.writeString(p, "{\"top_k\": 5,");
        assertThatThrownBy(() -> GenerationConfig.load(dir)).isInstanceOf(ConfigFormatException.class)
                .hasMessageContainingAll(p.toString(), "not valid JSON");
        Files.writeString(p, "{\"top_p\": 1.5}");
        assertThatThrownBy(() -> GenerationConfig.load(dir)).isInstanceOf(ConfigFormatException.class)
                .hasMessageContainingAll("\"top_p\"", "between 0 and 1");
        Files.writeString(p, "{\"eos_token_id\": \"</s>\"}");
        assertThatThrownBy(() -> GenerationConfig.load(dir)).isInstanceOf(ConfigFormatException.class)
                .hasMessageContainingAll("\"eos_token_id\"", "an integer or a list of integers");
    }
}
