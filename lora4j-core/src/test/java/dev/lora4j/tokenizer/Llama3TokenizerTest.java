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

    private static String show(String s) {
        return "\"" + s.replace("\n", "\\n").replace("\t", "\\t") + "\"";
    }
}
