package dev.lora4j.train.data;

import org.junit.jupiter.api.Test;

import java.nio.charset.StandardCharsets;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class SftDatasetTest {
    private final ExampleTokenizer tokenizer = new ExampleTokenizer(TestTokenizers.tiny(),
            TestTokenizers.chatTemplate(TestTokenizers.tiny()), null, null, false);

    private static List<DatasetRecord> records(String jsonl) {
        return DatasetReader.parse("d.jsonl", jsonl.getBytes(StandardCharsets.UTF_8));
    }

    private static final String PROMPTS = """
            {"prompt": "It is a way I have of driving off the spleen and regulating the circulation, whenever", "completion": " I find myself growing grim."}
            {"prompt": "Call me", "completion": " Ishmael."}
            """;

    @Test
    void truncationKeepsTheStartAndDropsExamplesLeftWithoutLabels() {
        SftDataset d = SftDataset.prepare("d.jsonl", records(PROMPTS), tokenizer, new SftDataset.Options("text", 8, false, PackingStrategy.BFD));
        // The long prompt fills all 8 positions, so its completion is cut off and the example is dropped, as TRL does.
        assertThat(d.stats().truncated()).isEqualTo(1);
        assertThat(d.stats().dropped()).isEqualTo(1);
        assertThat(d.size()).isEqualTo(1);
        assertThat(d.samples().getFirst().sequences().getFirst().length()).isLessThanOrEqualTo(8);
        assertThat(d.stats().kind()).isEqualTo(SftRecords.Kind.PROMPT_COMPLETION);
    }

    @Test
    void withoutMaxLengthNothingIsTruncated() {
        SftDataset d = SftDataset.prepare("d.jsonl", records(PROMPTS), tokenizer, new SftDataset.Options("text", null, false, PackingStrategy.BFD));
        assertThat(d.size()).isEqualTo(2);
        assertThat(d.stats().truncated()).isZero();
        assertThat(d.stats().targetTokens()).isEqualTo(d.samples().stream().mapToLong(TrainingSample::targetCount).sum());
    }

    @Test
    void packingGroupsExamplesIntoBinsOfMaxLength() {
        StringBuilder jsonl = new StringBuilder();
        for (int i = 0; i < 40; i++) jsonl.append("{\"text\": \"Whale number ").append(i).append(" swam by.\"}\n");
        SftDataset packed = SftDataset.prepare("d.jsonl", records(jsonl.toString()), tokenizer, new SftDataset.Options("text", 64, true, PackingStrategy.BFD));
        SftDataset plain = SftDataset.prepare("d.jsonl", records(jsonl.toString()), tokenizer, new SftDataset.Options("text", 64, false, PackingStrategy.BFD));
        assertThat(packed.size()).isLessThan(plain.size());
        assertThat(packed.samples()).allSatisfy(s -> assertThat(s.tokens()).isLessThanOrEqualTo(64));
        assertThat(packed.stats().tokens()).isEqualTo(plain.stats().tokens());
        assertThat(packed.stats().targetTokens()).isEqualTo(plain.stats().targetTokens());
    }

    @Test
    void theFingerprintChangesWithTheDataAndOnlyWithIt() {
        SftDataset.Options o = new SftDataset.Options("text", 32, false, PackingStrategy.BFD);
        String a = SftDataset.prepare("d.jsonl", records(PROMPTS), tokenizer, o).fingerprint();
        assertThat(SftDataset.prepare("other.jsonl", records(PROMPTS), tokenizer, o).fingerprint()).isEqualTo(a);
        assertThat(SftDataset.prepare("d.jsonl", records(PROMPTS.replace("Ishmael", "Queequeg")), tokenizer, o).fingerprint()).isNotEqualTo(a);
    }

    @Test
    void aDatasetWhoseEveryExampleIsCutOffSaysToRaiseMaxLength() {
        assertThatThrownBy(() -> SftDataset.prepare("d.jsonl", records("{\"prompt\": \"a b c d e f g h\", \"completion\": \" i\"}\n"),
                tokenizer, new SftDataset.Options("text", 2, false, PackingStrategy.BFD)))
                .isInstanceOf(DatasetFormatException.class).hasMessageContaining("raise max_length");
    }

    @Test
    void packingWithoutMaxLengthIsRefused() {
        assertThatThrownBy(() -> new SftDataset.Options("text", null, true, PackingStrategy.BFD)).hasMessageContaining("packing needs max_length");
    }
}
