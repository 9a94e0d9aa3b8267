package dev.lora4j.tokenizer;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** The stages of tokenizer.json, each on a small hand-written file whose right answer is plain to see. */
class TokenizerPipelineTest {

    /** A tokenizer.json with the given vocabulary (ids in order), merges, and stage objects (JSON or null). */
    static String tokenizerJson(List<String> vocab, String merges, String modelExtras, String addedTokens,
                                String normalizer, String preTokenizer, String postProcessor, String decoder) {
        StringBuilder v = new StringBuilder("{");
        for (int i = 0; i < vocab.size(); i++) v.append(i == 0 ? "" : ",").append('"').append(vocab.get(i)).append("\":").append(i);
        v.append('}');
        return "{\"version\":\"1.0\",\"added_tokens\":" + (addedTokens == null ? "[]" : addedTokens)
                + ",\"normalizer\":" + normalizer + ",\"pre_tokenizer\":" + preTokenizer
                + ",\"post_processor\":" + postProcessor + ",\"decoder\":" + decoder
                + ",\"model\":{\"type\":\"BPE\",\"vocab\":" + v + ",\"merges\":" + merges
                + (modelExtras == null ? "" : "," + modelExtras) + "}}";
    }

    static Tokenizer bpe(List<String> vocab, String merges, String modelExtras) {
        return Tokenizer.fromJson(tokenizerJson(vocab, merges, modelExtras, null, null, null, null, null), null);
    }

    static List<String> words(Tokenizer t, String text) {
        return t.words(text).stream().map(p -> p.isToken() ? "[" + p.tokenId() + "]" : p.text()).toList();
    }

    static final List<String> ABC = List.of("a", "b", "c", "ab", "bc", "abc");

    @Test
    void mergesApplyLowestRankFirst() {
        assertThat(bpe(ABC, "[\"a b\", \"b c\"]", null).encode("abc")).containsExactly(3, 2);
        assertThat(bpe(ABC, "[\"b c\", \"a b\"]", null).encode("abc")).containsExactly(0, 4);
    }

    @Test
    void mergesMayBeGivenAsPairs() {
        assertThat(bpe(ABC, "[[\"b\", \"c\"], [\"a\", \"bc\"]]", null).encode("abcab")).containsExactly(5, 0, 1);
    }

    @Test
    void ignoreMergesEmitsAWordThatIsInTheVocabularyWhole() {
        assertThat(bpe(ABC, "[\"b c\"]", null).encode("abc")).containsExactly(0, 4);
        assertThat(bpe(ABC, "[\"b c\"]", "\"ignore_merges\":true").encode("abc")).containsExactly(5);
    }

    @Test
    void unknownCharactersBecomeTheUnknownTokenFusedOrNot() {
        List<String> vocab = List.of("<unk>", "a");
        assertThat(bpe(vocab, "[]", "\"unk_token\":\"<unk>\",\"fuse_unk\":true").encode("xxa")).containsExactly(0, 1);
        assertThat(bpe(vocab, "[]", "\"unk_token\":\"<unk>\",\"fuse_unk\":false").encode("xxa")).containsExactly(0, 0, 1);
        assertThat(bpe(vocab, "[]", null).encode("xxa")).containsExactly(1);
    }

    @Test
    void byteFallbackSpellsUnknownCharactersAsByteTokens() {
        List<String> vocab = new java.util.ArrayList<>(List.of("<unk>", "a"));
        for (int b = 0; b < 256; b++) vocab.add(String.format("<0x%02X>", b));
        Tokenizer t = Tokenizer.fromJson(tokenizerJson(vocab, "[]", "\"unk_token\":\"<unk>\",\"byte_fallback\":true", null, null, null, null,
                "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"}]}"), null);
        assertThat(t.encode("aé")).containsExactly(1, 2 + 0xC3, 2 + 0xA9);
        assertThat(t.decode(t.encode("aé€"))).isEqualTo("aé€");
    }

    @Test
    void metaspacePrependsToTheFirstRunOnlyUnderTheFirstScheme() {
        String added = "[{\"id\":0,\"content\":\"<s>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true}]";
        String first = "{\"type\":\"Metaspace\",\"replacement\":\"\u2581\",\"prepend_scheme\":\"first\",\"split\":true}";
        String always = "{\"type\":\"Metaspace\",\"replacement\":\"\u2581\",\"prepend_scheme\":\"always\",\"split\":true}";
        String never = "{\"type\":\"Metaspace\",\"replacement\":\"\u2581\",\"prepend_scheme\":\"never\",\"split\":false}";
        Tokenizer f = Tokenizer.fromJson(tokenizerJson(List.of("<s>"), "[]", null, added, null, first, null, null), null);
        Tokenizer a = Tokenizer.fromJson(tokenizerJson(List.of("<s>"), "[]", null, added, null, always, null, null), null);
        Tokenizer n = Tokenizer.fromJson(tokenizerJson(List.of("<s>"), "[]", null, added, null, never, null, null), null);
        assertThat(words(f, "hi there<s>you")).containsExactly("\u2581hi", "\u2581there", "[0]", "you");
        assertThat(words(a, "hi there<s>you")).containsExactly("\u2581hi", "\u2581there", "[0]", "\u2581you");
        assertThat(words(n, "hi there<s>you")).containsExactly("hi\u2581there", "[0]", "you");
        assertThat(words(f, " hi")).containsExactly("\u2581hi");
    }

    @Test
    void metaspaceDecoderRemovesTheSpaceItPrepended() {
        String dec = "{\"type\":\"Metaspace\",\"replacement\":\"\u2581\",\"prepend_scheme\":\"always\",\"split\":true}";
        Tokenizer t = Tokenizer.fromJson(tokenizerJson(List.of("\u2581hi", "\u2581there"), "[]", "\"ignore_merges\":true", null, null, dec, null, dec), null);
        assertThat(t.encode("hi there")).containsExactly(0, 1);
        assertThat(t.decode(new int[] {0, 1})).isEqualTo("hi there");
    }

    @Test
    void splitBehaviorsPlaceTheDelimiterAsTheReferenceDoes() {
        String[][] cases = {
                {"Isolated", "a", "-", "b", "-", "-", "c"},
                {"Removed", "a", "b", "c"},
                {"MergedWithPrevious", "a-", "b-", "-", "c"},
                {"MergedWithNext", "a", "-b", "-", "-c"},
                {"Contiguous", "a", "-", "b", "--", "c"},
        };
        for (String[] c : cases) {
            String pre = "{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"" + c[0] + "\",\"invert\":false}";
            Tokenizer t = Tokenizer.fromJson(tokenizerJson(List.of("a"), "[]", null, null, null, pre, null, null), null);
            assertThat(words(t, "a-b--c")).as(c[0]).containsExactly(java.util.Arrays.copyOfRange(c, 1, c.length));
        }
    }

    @Test
    void byteLevelPreTokenizerSplitsLikeGpt2AndRespellsBytes() {
        String pre = "{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,\"use_regex\":true}";
        Tokenizer t = Tokenizer.fromJson(tokenizerJson(List.of("a"), "[]", null, null, null, pre, null, null), null);
        assertThat(words(t, "Hello world's  é!")).containsExactly("\u0120Hello", "\u0120world", "'s", "\u0120", "\u0120\u00c3\u00a9", "!");
    }

    @Test
    void addedTokensHonourSingleWordAndStripping() {
        String added = "[{\"id\":1,\"content\":\"<m>\",\"single_word\":false,\"lstrip\":true,\"rstrip\":true,\"normalized\":false,\"special\":true},"
                + "{\"id\":2,\"content\":\"cat\",\"single_word\":true,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":false}]";
        Tokenizer t = Tokenizer.fromJson(tokenizerJson(List.of("a"), "[]", null, added, null, null, null, null), null);
        assertThat(words(t, "x  <m>  y")).containsExactly("x", "[1]", "y");
        assertThat(words(t, "a cat sat")).containsExactly("a ", "[2]", " sat");
        assertThat(words(t, "concatenate")).containsExactly("concatenate");
        assertThat(t.isSpecial(1)).isTrue();
        assertThat(t.isSpecial(2)).isFalse();
    }

    @Test
    void addedTokensMatchTheLongestAtTheLeftmostPosition() {
        String added = "[{\"id\":1,\"content\":\"<a>\",\"special\":true,\"normalized\":false},{\"id\":2,\"content\":\"<a><b>\",\"special\":true,\"normalized\":false}]";
        Tokenizer t = Tokenizer.fromJson(tokenizerJson(List.of("x"), "[]", null, added, null, null, null, null), null);
        assertThat(words(t, "x<a><b><a>x")).containsExactly("x", "[2]", "[1]", "x");
    }

    @Test
    void normalizedAddedTokensAreFoundAfterNormalization() {
        String added = "[{\"id\":1,\"content\":\"HELLO\",\"special\":false,\"normalized\":true}]";
        Tokenizer t = Tokenizer.fromJson(tokenizerJson(List.of("x"), "[]", null, added, "{\"type\":\"Lowercase\"}", null, null, null), null);
        assertThat(words(t, "say HeLLo")).containsExactly("say ", "[1]");
    }

    @Test
    void configFlagsAddBosAndEosWhenTheFileHasNoPostProcessor() {
        String json = tokenizerJson(List.of("<s>", "</s>", "a"), "[]", null, null, null, null, null, null);
        String config = "{\"bos_token\":\"<s>\",\"eos_token\":{\"content\":\"</s>\"},\"add_bos_token\":true,\"add_eos_token\":true}";
        Tokenizer t = Tokenizer.fromJson(json, config);
        assertThat(t.encode("a")).containsExactly(0, 2, 1);
        assertThat(t.encode("a", false)).containsExactly(2);
        assertThat(Tokenizer.fromJson(json, null).encode("a")).containsExactly(2);
    }

    @Test
    void templateProcessingAddsItsSpecialTokensAndNamesTheBos() {
        String post = "{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}},"
                + "{\"SpecialToken\":{\"id\":\"</s>\",\"type_id\":0}}],\"pair\":[],\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[0],\"tokens\":[\"<s>\"]},"
                + "\"</s>\":{\"id\":\"</s>\",\"ids\":[1],\"tokens\":[\"</s>\"]}}}";
        Tokenizer t = Tokenizer.fromJson(tokenizerJson(List.of("<s>", "</s>", "a"), "[]", null, null, null, null, post, null), null);
        assertThat(t.encode("aa")).containsExactly(0, 2, 2, 1);
        assertThat(t.bosToken()).isEqualTo("<s>");
        assertThat(t.bosTokenId()).hasValue(0);
    }

    @Test
    void chatTemplateListFormYieldsTheDefaultTemplate() {
        String json = tokenizerJson(List.of("a"), "[]", null, null, null, null, null, null);
        String config = "{\"chat_template\":[{\"name\":\"tool_use\",\"template\":\"T\"},{\"name\":\"default\",\"template\":\"D\"}]}";
        assertThat(Tokenizer.fromJson(json, config).chatTemplate()).hasValue("D");
        assertThat(Tokenizer.fromJson(json, null).chatTemplate()).isEmpty();
    }

    @Test
    void aFolderWithoutTokenizerJsonIsRefusedWithAnExplanation(@TempDir Path dir) {
        assertThatThrownBy(() -> Tokenizer.load(dir)).isInstanceOf(TokenizerException.class)
                .hasMessageStartingWith("no tokenizer.json in " + dir + ": ");
    }

    @Test
    void chatTemplateJinjaBesideTheFilesIsUsed(@TempDir Path dir) throws Exception {
        Files.writeString(dir.resolve("tokenizer.json"), tokenizerJson(List.of("a"), "[]", null, null, null, null, null, null));
        Files.writeString(dir.resolve("chat_template.jinja"), "{{ messages }}");
        assertThat(Tokenizer.load(dir).chatTemplate()).hasValue("{{ messages }}");
    }

    @Test
    void brokenFilesAreRefusedNamingTheField() {
        assertThatThrownBy(() -> Tokenizer.fromJson("{not json", null)).hasMessageContaining("tokenizer.json: not valid JSON");
        assertThatThrownBy(() -> bpe(List.of("a", "b"), "[\"a b\"]", null)).hasMessageContaining("model.merges[0]").hasMessageContaining("\"ab\"");
        assertThatThrownBy(() -> bpe(List.of("a"), "[\"a\"]", null)).hasMessageContaining("model.merges[0] is \"a\"");
        assertThatThrownBy(() -> Tokenizer.fromJson(tokenizerJson(List.of("a"), "[]", null, null, null,
                "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Bogus\"}]}", null, null), null))
                .hasMessageContaining("pre_tokenizer.pretokenizers[0].type \"Bogus\" is not supported");
        assertThatThrownBy(() -> Tokenizer.fromJson(tokenizerJson(List.of("a"), "[]", null, null, null,
                "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\",\"invert\":false}", null, null), null))
                .hasMessageContaining("pre_tokenizer.pattern").hasMessageContaining("cannot be used");
        assertThatThrownBy(() -> Tokenizer.fromJson("{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", null))
                .hasMessageContaining("model.type is \"Unigram\"");
    }
}
