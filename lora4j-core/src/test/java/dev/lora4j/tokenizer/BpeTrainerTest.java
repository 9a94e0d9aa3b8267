package dev.lora4j.tokenizer;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class BpeTrainerTest {

    @Test
    void trainsTheDefaultCorpusToTheRequestedVocabularyQuickly() {
        long t0 = System.nanoTime();
        BpeTrainer.TrainedTokenizer trained = BpeTrainer.trainDefault(2048);
        double seconds = (System.nanoTime() - t0) / 1e9;
        Tokenizer t = trained.tokenizer();
        assertThat(t.vocabSize()).isEqualTo(2048);
        assertThat(seconds).as("training seconds").isLessThan(5.0);
        assertThat(t.bosToken()).isEqualTo(BpeTrainer.BOS);
        assertThat(t.bosTokenId()).hasValue(2048 - BpeTrainer.SPECIAL_TOKENS.size());
        assertThat(t.eosTokenId()).hasValue(2048 - BpeTrainer.SPECIAL_TOKENS.size() + 1);
        assertThat(t.chatTemplate()).hasValue(BpeTrainer.CHAT_TEMPLATE);
    }

    @Test
    void trainingIsDeterministic() {
        assertThat(BpeTrainer.trainDefault(600)).isEqualTo(BpeTrainer.trainDefault(600));
    }

    @Test
    void learnsTheCommonWordsOfTheCorpus() {
        Tokenizer t = BpeTrainer.trainDefault(2048).tokenizer();
        assertThat(t.encode(" the whale", false)).hasSize(2);
        assertThat(t.tokenId("\u0120the")).isPresent();
        // Rare text still encodes, byte by byte at worst, and decodes back.
        String rare = "Zyzzyva 日本 🚀 \u0000";
        assertThat(t.decode(t.encode(rare, false))).isEqualTo(rare);
    }

    @Test
    void addsBosAndRecognisesItsSpecialTokens() {
        Tokenizer t = BpeTrainer.trainDefault(1024).tokenizer();
        int bos = t.bosTokenId().orElseThrow();
        int[] ids = t.encode("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
        assertThat(ids[0]).isEqualTo(bos);
        assertThat(ids[1]).isEqualTo(t.tokenId(BpeTrainer.START_HEADER).orElseThrow());
        assertThat(t.isSpecial(ids[ids.length - 1])).isTrue();
        assertThat(t.decode(ids, true)).isEqualTo("user\n\nHi");
    }

    @Test
    void smallCorporaStopWhenEveryWordIsOneToken() {
        Tokenizer t = BpeTrainer.train("abab abab", 4096).tokenizer();
        assertThat(t.encode("abab abab", false)).hasSize(2);
        assertThat(t.vocabSize()).isLessThan(300);
    }

    @Test
    void writesFilesThatLoadBack(@TempDir Path dir) throws Exception {
        BpeTrainer.TrainedTokenizer trained = BpeTrainer.trainDefault(512);
        trained.writeTo(dir);
        Tokenizer loaded = Tokenizer.load(dir);
        String text = "Call me Ishmael.";
        assertThat(loaded.encode(text)).containsExactly(trained.tokenizer().encode(text));
        assertThat(Files.readString(dir.resolve("tokenizer.json"))).contains("\"ignore_merges\" : true");
    }

    @Test
    void matchesTheCommittedFixtureThatTheReferenceLibraryChecks() throws Exception {
        // tools/compare_tokenizers.py runs Hugging Face tokenizers on this fixture; regenerate it with
        // BpeTrainer.main(folder, "1024") if training changes on purpose.
        Path fixture = Path.of(getClass().getResource("trained-bpe/tokenizer.json").toURI()).getParent();
        BpeTrainer.TrainedTokenizer trained = BpeTrainer.trainDefault(1024);
        assertThat(trained.tokenizerJson()).isEqualTo(Files.readString(fixture.resolve("tokenizer.json")));
        assertThat(trained.tokenizerConfigJson()).isEqualTo(Files.readString(fixture.resolve("tokenizer_config.json")));
    }

    @Test
    void refusesVocabularySizesOutOfRange() {
        assertThatThrownBy(() -> BpeTrainer.trainDefault(100)).hasMessageContaining("vocabulary size 100 is out of range");
    }

    @Test
    void encodesTheCorpusIntoFewerTokensAsTheVocabularyGrows() {
        String text = TextAssets.records(3).get(2);
        int small = BpeTrainer.trainDefault(512).tokenizer().encode(text, false).length;
        int large = BpeTrainer.trainDefault(4096).tokenizer().encode(text, false).length;
        assertThat(large).isLessThan(small);
        assertThat(Arrays.stream(new int[] {small, large}).min().orElseThrow()).isGreaterThan(0);
    }
}
