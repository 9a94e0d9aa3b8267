package dev.lora4j.tokenizer;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

class Llama3TokenizerTest {
    static Tokenizer tokenizer;
    static Path cases;

    @BeforeAll
    static void load() {
        tokenizer = Tokenizer.load(SharedAssets.require("tokenizers/llama3"));
        cases = SharedAssets.require("tokenizers/cases");
    }

    @Test
    void encodesEveryReferenceCaseExactly() throws Exception {
        String inp = Files.readString(cases.resolve("llama3.inp"));
        List<String> inputs = new ArrayList<>(Arrays.asList(inp.split("\n__ggml_vocab_test__\n", -1)));
        if (inputs.getLast().isEmpty()) inputs.removeLast();
        List<String> outputs = Files.readAllLines(cases.resolve("llama3.out"));
        assertThat(inputs).hasSize(outputs.size());
        List<String> failures = new ArrayList<>();
        for (int i = 0; i < inputs.size(); i++) {
            int[] expected = Arrays.stream(outputs.get(i).trim().split(" ")).filter(s -> !s.isEmpty()).mapToInt(Integer::parseInt).toArray();
            int[] actual = tokenizer.encode(inputs.get(i), false);
            if (!Arrays.equals(expected, actual)) failures.add("case " + i + " " + show(inputs.get(i)) + ": expected " + Arrays.toString(expected) + " got " + Arrays.toString(actual));
        }
        assertThat(failures).isEmpty();
    }

    @Test
    void specialTokensWrittenInTheTextAreRecognised() {
        int[] ids = tokenizer.encode("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", false);
        assertThat(ids).startsWith(128000, 128006).contains(128007, 128009);
        assertThat(tokenizer.decode(ids, true)).isEqualTo("user\n\nHi");
        assertThat(tokenizer.isSpecial(128009)).isTrue();
        assertThat(tokenizer.token(128009)).isEqualTo("<|eot_id|>");
        assertThat(tokenizer.tokenId("<|eot_id|>")).hasValue(128009);
    }

    @Test
    void vocabularyCountsTheAddedTokens() {
        assertThat(tokenizer.vocabSize()).isEqualTo(128256);
        assertThat(tokenizer.bosTokenId()).hasValue(128000);
        assertThat(tokenizer.eosTokenId()).hasValue(128001);
        assertThat(tokenizer.token(9906)).isEqualTo("Hello");
        assertThat(tokenizer.token(22691)).isEqualTo("\u0120Hello");
        assertThat(tokenizer.token(-1)).isNull();
        assertThat(tokenizer.token(128256)).isNull();
    }

    @Test
    void addsNoBosBecauseThisFilesPostProcessorAddsNone() {
        // This Llama 3 tokenizer.json has a ByteLevel post-processor and its tokenizer_config.json no add_bos_token:
        // the reference adds nothing, and the chat template writes <|begin_of_text|> itself.
        assertThat(tokenizer.encode("Hello world")).containsExactly(9906, 1917);
    }

    @Test
    void exposesTheChatTemplateOfTheConfig() {
        assertThat(tokenizer.chatTemplate()).hasValueSatisfying(t -> assertThat(t).contains("<|start_header_id|>"));
    }

    @Test
    void decodeRoundTripsAnyText() throws Exception {
        List<String> texts = new ArrayList<>(TextAssets.records(60));
        texts.addAll(List.of("", " ", "\n\n\n", "\t \u00a0\u3000x", "🚀😶‍🌫️ emoji", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "日本語のテキスト", "Ｆｕｌｌ width", "a\u0000b\u007f",
                "'s 'S 'LL 'Ve don't", "12345678901234567890", "<|eot_id|> in text", "<|not_a_token|>"));
        for (String text : texts) assertThat(tokenizer.decode(tokenizer.encode(text, false))).isEqualTo(text);
    }

    @Test
    void loneSurrogatesAreEncodedAsTheReplacementCharacter() {
        assertThat(tokenizer.encode("a\uD800b", false)).isEqualTo(tokenizer.encode("a\uFFFDb", false));
    }

    @Test
    void streamingDecodeGivesTheSameTextAsDecodingAtOnce() {
        for (String text : List.of("Hello world, how are you?", "emoji 🚀 and 😶‍🌫️ and 日本語", "  x\n\ny", "<|begin_of_text|>Hi<|eot_id|>")) {
            int[] ids = tokenizer.encode(text, false);
            StreamingDecoder stream = tokenizer.streamingDecoder(false);
            StringBuilder sb = new StringBuilder();
            for (int id : ids) {
                String chunk = stream.push(id);
                assertThat(chunk).doesNotContain("\uFFFD");
                sb.append(chunk);
            }
            sb.append(stream.flush());
            assertThat(sb.toString()).isEqualTo(text);
        }
    }

    @Test
    void streamingDecodeCanSkipSpecialTokens() {
        StreamingDecoder stream = tokenizer.streamingDecoder(true);
        StringBuilder sb = new StringBuilder();
        for (int id : tokenizer.encode("<|begin_of_text|>Hi there<|eot_id|>", false)) sb.append(stream.push(id));
        assertThat(sb.append(stream.flush()).toString()).isEqualTo("Hi there");
    }

    @Test
    void encodesAMegabyteInAFewSeconds() {
        String text = TextAssets.megabyte();
        tokenizer.encode(text.substring(0, 20_000), false);
        long t0 = System.nanoTime();
        int[] ids = tokenizer.encode(text, false);
        double seconds = (System.nanoTime() - t0) / 1e9;
        System.out.printf("Llama 3: %d chars -> %d tokens in %.2f s%n", text.length(), ids.length, seconds);
        assertThat(seconds).isLessThan(10.0);
    }

    private static String show(String s) {
        return "\"" + s.replace("\n", "\\n").replace("\t", "\\t") + "\"";
    }
}
