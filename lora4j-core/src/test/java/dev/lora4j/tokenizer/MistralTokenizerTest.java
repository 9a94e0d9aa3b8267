package dev.lora4j.tokenizer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.stream.Stream;

import static org.assertj.core.api.Assertions.assertThat;

/** Mistral-7B's SentencePiece-style tokenizer: ▁ for spaces, byte fallback, BOS from the post-processor. */
class MistralTokenizerTest {
    static Tokenizer tokenizer;

    @BeforeAll
    static void load() {
        tokenizer = Tokenizer.load(SharedAssets.require("tokenizers/mistral"));
    }

    @Test
    void matchesTheNaivePythonReferenceOnItsCases() throws Exception {
        // Expected ids come from tools/reference_tokenizer.py, an independent, deliberately naive BPE.
        List<String> failures = new ArrayList<>();
        try (BufferedReader r = new BufferedReader(new InputStreamReader(
                getClass().getResourceAsStream("mistral-reference.jsonl"), StandardCharsets.UTF_8))) {
            ObjectMapper json = new ObjectMapper();
            for (String line; (line = r.readLine()) != null; ) {
                JsonNode c = json.readTree(line);
                int[] expected = new int[c.get("ids").size()];
                for (int i = 0; i < expected.length; i++) expected[i] = c.get("ids").get(i).asInt();
                int[] actual = tokenizer.encode(c.get("text").asText(), false);
                if (!Arrays.equals(expected, actual)) failures.add(c.get("text").asText() + ": expected " + Arrays.toString(expected) + " got " + Arrays.toString(actual));
            }
        }
        assertThat(failures).isEmpty();
    }

    @Test
    void addsBosByDefaultAndOnlyWhenAsked() {
        assertThat(tokenizer.encode("Hello world")).containsExactly(1, 22557, 1526);
        assertThat(tokenizer.encode("Hello world", false)).containsExactly(22557, 1526);
        assertThat(tokenizer.bosTokenId()).hasValue(1);
        assertThat(tokenizer.eosTokenId()).hasValue(2);
        assertThat(tokenizer.bosToken()).isEqualTo("<s>");
        assertThat(tokenizer.eosToken()).isEqualTo("</s>");
    }

    @Test
    void spellsCharactersOutsideTheVocabularyAsTheirUtf8Bytes() {
        // U+1D518 is not in the vocabulary: its four UTF-8 bytes F0 9D 94 98 become <0xF0>.. tokens (id = 3 + byte).
        assertThat(tokenizer.encode("\uD835\uDD18", false)).containsExactly(28705, 3 + 0xF0, 3 + 0x9D, 3 + 0x94, 3 + 0x98);
        assertThat(tokenizer.token(3 + 0x0A)).isEqualTo("<0x0A>");
        assertThat(tokenizer.encode("\n", false)).containsExactly(28705, 3 + 0x0A);
    }

    @Test
    void recognisesSpecialTokensWrittenInTheText() {
        assertThat(tokenizer.encode("<s>Hello</s>", false)).containsExactly(1, 22557, 2);
        assertThat(tokenizer.isSpecial(1)).isTrue();
        assertThat(tokenizer.isSpecial(22557)).isFalse();
        assertThat(tokenizer.decode(new int[] {1, 22557, 1526, 2}, true)).isEqualTo("Hello world");
        assertThat(tokenizer.decode(new int[] {1, 22557, 1526, 2}, false)).isEqualTo("<s> Hello world</s>");
    }

    @Test
    void decodingStripsTheLeadingSpaceThatEncodingAdded() {
        assertThat(tokenizer.decode(tokenizer.encode("Hello", false))).isEqualTo("Hello");
        assertThat(tokenizer.decode(tokenizer.encode(" Hello", false))).isEqualTo(" Hello");
        assertThat(tokenizer.decode(tokenizer.encode("  two  spaces  ", false))).isEqualTo("  two  spaces  ");
    }

    @Test
    void invalidByteSequencesDecodeToOneReplacementCharacterPerByte() {
        // The leading-space strip sees the replacement characters first, so the space of "▁Hello" stays.
        assertThat(tokenizer.decode(new int[] {3 + 0xF0, 3 + 0x9D, 22557})).isEqualTo("\uFFFD\uFFFD Hello");
    }

    @Test
    void decodeRoundTripsEveryPublicDomainRecord() throws Exception {
        List<String> texts = TextAssets.records(120);
        for (String text : texts) {
            assertThat(tokenizer.decode(tokenizer.encode(text, false))).isEqualTo(text);
        }
    }

    @Test
    void streamingDecodeGivesTheSameTextAsDecodingAtOnce() {
        for (String text : List.of("Hello world, how are you?", "  leading spaces", "emoji 🚀 and 𝔘𝔫𝔦 bytes\nnew line", "日本語のテキスト")) {
            int[] ids = tokenizer.encode(text);
            StreamingDecoder stream = tokenizer.streamingDecoder(true);
            StringBuilder sb = new StringBuilder();
            List<String> chunks = new ArrayList<>();
            for (int id : ids) {
                String chunk = stream.push(id);
                chunks.add(chunk);
                sb.append(chunk);
            }
            sb.append(stream.flush());
            assertThat(sb.toString()).isEqualTo(tokenizer.decode(ids, true)).isEqualTo(text);
            assertThat(chunks).noneMatch(c -> c.contains("\uFFFD"));
        }
    }

    @Test
    void streamingDecodeHoldsBackIncompleteBytesUntilTheCharacterIsComplete() {
        StreamingDecoder stream = tokenizer.streamingDecoder(false);
        assertThat(stream.push(22557)).isEqualTo("Hello");
        assertThat(stream.push(28705)).isEqualTo(" ");
        assertThat(stream.push(3 + 0xF0)).isEmpty();
        assertThat(stream.push(3 + 0x9D)).isEmpty();
        assertThat(stream.push(3 + 0x94)).isEmpty();
        assertThat(stream.push(3 + 0x98)).isEqualTo("\uD835\uDD18");
        assertThat(stream.push(3 + 0xF0)).isEmpty();
        assertThat(stream.flush()).isEqualTo("\uFFFD");
    }

    @Test
    void encodesAMegabyteInAFewSeconds() throws Exception {
        String text = TextAssets.megabyte();
        tokenizer.encode(text.substring(0, 20_000), false);
        long t0 = System.nanoTime();
        int[] ids = tokenizer.encode(text, false);
        double seconds = (System.nanoTime() - t0) / 1e9;
        System.out.printf("Mistral: %d chars -> %d tokens in %.2f s%n", text.length(), ids.length, seconds);
        assertThat(seconds).isLessThan(10.0);
    }
}
