package dev.lora4j.api;

import dev.lora4j.chat.ChatMessage;
import dev.lora4j.generate.GenerationOptions;
import dev.lora4j.generate.GenerationResult;
import dev.lora4j.io.ModelConfig;
import dev.lora4j.model.RandomModelWriter;
import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.Assumptions;
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
    void aModelWithTheLlama3TokenizerChatsThroughItsTemplateAndStopsOnItsEndOfTurnToken() throws IOException {
        Path shared = sharedTokenizers();
        Assumptions.assumeTrue(shared != null, "../shared/assets/tokenizers is absent: skipping the Llama 3 tokenizer check");
        ModelConfig tiny = RandomModelWriter.preset("tiny");
        // Llama 3's ids: BOS 128000, EOS 128001 (base) and end of turn 128009 (instruct), as their configs say.
        ModelConfig llama3 = new ModelConfig(tiny.architectures(), "llama", 128256, 64, 128, 1, 4, 2, 16, 1e-5,
                500000, null, 8192, 0, 0, false, false, true, 128000, List.of(128001, 128009), null, "bfloat16", "silu");
        Path model = dir.resolve("llama3-shape");
        RandomModelWriter.writeWeightsAndConfig(model, llama3, RandomModelWriter.Options.of(DType.BF16, 2), null);
        Files.copy(shared.resolve("llama3/tokenizer.json"), model.resolve("tokenizer.json"));
        Files.copy(shared.resolve("llama3/tokenizer_config.json"), model.resolve("tokenizer_config.json"));
        try (LanguageModel m = Lora4j.load(model, Device.CPU)) {
            List<ChatMessage> messages = List.of(ChatMessage.user("What is the capital of France?"));
            assertThat(m.renderChat(messages)).isEqualTo("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
                    + "What is the capital of France?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
            assertThat(m.eosTokenIds()).containsExactlyInAnyOrder(128001, 128009);
            GenerationResult r = m.chat(messages, GenerationOptions.greedy(6), null);
            assertThat(r.promptTokens()[0]).isEqualTo(128000);
            assertThat(r.promptTokens()).containsOnlyOnce(128000);
            assertThat(r.promptTokens()[r.promptTokens().length - 1]).isEqualTo(271); // "\n\n" after the header
        }
    }

    /** ../shared/assets/tokenizers beside the repository, found by walking up from the working directory. */
    private static Path sharedTokenizers() {
        for (Path p = Path.of("").toAbsolutePath(); p.getParent() != null; p = p.getParent()) {
            Path candidate = p.resolveSibling("shared").resolve("assets/tokenizers");
            if (Files.isDirectory(candidate.resolve("llama3"))) return candidate;
        }
        return null;
    }

    @Test
    void aFolderThatIsNotAModelIsReportedByName() throws IOException {
        Path empty = Files.createDirectories(dir.resolve("empty"));
        assertThatThrownBy(() -> Lora4j.load(empty, Device.CPU))
                .isInstanceOf(UncheckedIOException.class)
                .hasMessageContaining(empty.toString()).hasMessageContaining("config.json");
    }
}
