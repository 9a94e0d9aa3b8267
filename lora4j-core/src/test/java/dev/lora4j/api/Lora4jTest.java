package dev.lora4j.api;

import dev.lora4j.chat.ChatMessage;
import dev.lora4j.generate.GenerationOptions;
import dev.lora4j.generate.GenerationResult;
import dev.lora4j.io.ModelConfig;
import dev.lora4j.model.RandomModelWriter;
import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class Lora4jTest {
    @TempDir
    static Path dir;
    private static Path folder;

    /** The tiny preset cut to two layers: a real tokenizer and chat template, random BF16 weights. */
    @BeforeAll
    static void writeModel() throws IOException {
        ModelConfig tiny = RandomModelWriter.preset("tiny");
        ModelConfig two = new ModelConfig(tiny.architectures(), tiny.modelType(), tiny.vocabSize(), tiny.hiddenSize(),
                tiny.intermediateSize(), 2, tiny.numAttentionHeads(), tiny.numKeyValueHeads(), tiny.headDim(),
                tiny.rmsNormEps(), tiny.ropeTheta(), tiny.ropeScaling(), tiny.maxPositionEmbeddings(), 0, 0, false,
                false, false, tiny.bosTokenId(), tiny.eosTokenIds(), null, "bfloat16", "silu");
        folder = dir.resolve("tiny");
        RandomModelWriter.write(folder, two, RandomModelWriter.Options.of(DType.BF16, 3), null);
    }

    @Test
    void generatesFromTextInAFewLinesAndStreamsWhatItReturns() {
        try (LanguageModel model = Lora4j.load(folder, Device.CPU)) {
            StringBuilder streamed = new StringBuilder();
            GenerationResult r = model.generate("Once upon a time", GenerationOptions.greedy(12).withStopOnEos(false), streamed::append);
            assertThat(r.tokens()).hasSize(12);
            assertThat(streamed.toString()).isEqualTo(r.text()).isEqualTo(model.tokenizer().decode(r.tokens(), true));
            assertThat(r.promptTokens()[0]).isEqualTo(model.config().bosTokenId());
            assertThat(model.backend().name()).isEqualTo("cpu");
            assertThat(model.model().weights().storageType()).isEqualTo(DType.BF16);
            // Greedy is deterministic: the same prompt gives the same continuation.
            assertThat(model.generate("Once upon a time", GenerationOptions.greedy(12).withStopOnEos(false), null).tokens())
                    .containsExactly(r.tokens());
        }
    }

    @Test
    void chatRendersTheTemplateWithTheGenerationPromptAndEncodesWithoutAddingSpecialTokens() {
        try (LanguageModel model = Lora4j.load(folder, Device.CPU)) {
            List<ChatMessage> messages = List.of(ChatMessage.system("Be brief."), ChatMessage.user("Hello!"));
            String rendered = model.renderChat(messages);
            assertThat(rendered).startsWith("<|begin_of_text|>").endsWith("<|start_header_id|>assistant<|end_header_id|>\n\n");
            GenerationResult r = model.chat(messages, GenerationOptions.greedy(4), null);
            assertThat(r.promptTokens()).containsExactly(model.tokenizer().encode(rendered, false));
            assertThat(model.eosTokenIds()).contains(model.tokenizer().tokenId("<|eot_id|>").getAsInt());
        }
    }

    @Test
    void weightsCanBeKeptInF32OnRequest() {
        List<String> notices = new ArrayList<>();
        try (LanguageModel model = Lora4j.load(folder, Device.CPU, LoadOptions.defaults().withWeightType(DType.F32).withNotices(notices::add))) {
            assertThat(model.model().weights().storageType()).isEqualTo(DType.F32);
        }
        assertThat(notices).isEmpty();
    }

    @Test
    void aCudaRequestWithoutAGpuFallsBackToTheCpuWithANotice() {
        List<String> notices = new ArrayList<>();
        try (LanguageModel model = Lora4j.load(folder, Device.CUDA, LoadOptions.defaults().withNotices(notices::add))) {
            if (model.backend().name().equals("cpu")) assertThat(notices).anyMatch(n -> n.contains("CUDA backend unavailable"));
            assertThat(model.generate("Hi", GenerationOptions.greedy(2), null).tokens()).isNotEmpty();
        }
    }

    @Test
    void aFolderThatIsNotAModelIsReportedByName() throws IOException {
        Path empty = Files.createDirectories(dir.resolve("empty"));
        assertThatThrownBy(() -> Lora4j.load(empty, Device.CPU))
                .isInstanceOf(UncheckedIOException.class)
                .hasMessageContaining(empty.toString()).hasMessageContaining("config.json");
    }
}
