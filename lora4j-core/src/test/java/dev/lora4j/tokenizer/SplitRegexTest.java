package dev.lora4j.tokenizer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Test;

import java.io.InputStream;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * The Oniguruma split patterns of GPT-2, Llama 3, Qwen2, cl100k (possessive form) and o200k, translated to
 * java.util.regex, split text exactly as Python's independent `regex` module does
 * (tools/tokenizer_regex_cases.py wrote regex-splits.json).
 */
class SplitRegexTest {
    @Test
    void splitsEveryCaseAsTheReferenceEngine() throws Exception {
        JsonNode root;
        try (InputStream in = getClass().getResourceAsStream("regex-splits.json")) {
            root = new ObjectMapper().readTree(in);
        }
        List<String> failures = new ArrayList<>();
        int checked = 0;
        for (JsonNode c : root.get("cases")) {
            Pattern p = SplitRegex.compile(c.get("regex").asText(), "test");
            String text = c.get("text").asText();
            List<String> expected = new ArrayList<>();
            c.get("matches").forEach(m -> expected.add(m.asText()));
            List<String> actual = new ArrayList<>();
            Matcher m = p.matcher(text);
            while (m.find()) actual.add(m.group());
            if (!expected.equals(actual)) failures.add(c.get("pattern").asText() + " on " + new ObjectMapper().writeValueAsString(text) + ": expected " + expected + " got " + actual);
            checked++;
        }
        assertThat(checked).isGreaterThan(200);
        assertThat(failures).isEmpty();
    }

    @Test
    void unicodeWhitespaceCountsAsWhitespace() {
        Pattern p = SplitRegex.compile("\\s+|\\S+", "test");
        Matcher m = p.matcher("a\u00a0\u3000b");
        List<String> parts = new ArrayList<>();
        while (m.find()) parts.add(m.group());
        assertThat(parts).containsExactly("a", "\u00a0\u3000", "b");
    }

    @Test
    void unknownPropertiesAreReportedWithThePattern() {
        assertThatThrownBy(() -> SplitRegex.compile("\\p{NoSuchThing}+", "tokenizer.json: pre_tokenizer.pattern"))
                .isInstanceOf(TokenizerException.class)
                .hasMessageContaining("pre_tokenizer.pattern: unknown Unicode property \\p{NoSuchThing}");
    }
}
