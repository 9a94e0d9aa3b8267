package dev.lora4j.train.data;

import org.junit.jupiter.api.Test;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.fail;

/**
 * Random corruptions of well-formed dataset files: each either still reads and prepares, or fails with a
 * DatasetFormatException naming the file; never another exception.
 */
class DatasetFuzzTest {
    private static final String JSONL = """
            {"prompt": "Call me", "completion": " Ishmael."}
            {"prompt": "Some years ago", "completion": " never mind how long precisely", "extra": [1, 2.5, null, true]}
            {"prompt": "\\u00e9t\\u00e9 \\"quoted\\"", "completion": "\\n\\ttabs and \\ud83d\\udc33"}
            """;
    private static final String MESSAGES = """
            [
              {"messages": [{"role": "user", "content": "Who?"}, {"role": "assistant", "content": "Ahab."}]},
              {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where?"},
                            {"role": "assistant", "content": "At sea."}]}
            ]
            """;
    private static final byte[] ALPHABET = "{}[]\":,\\ \n\r\tnulltruefalse0123456789.eE+-abc\u00e9".getBytes(StandardCharsets.UTF_8);

    @Test
    void corruptedJsonLinesFailOnlyWithDatasetErrors() {
        fuzz("fuzz.jsonl", JSONL, 1500, 11, false);
    }

    @Test
    void corruptedJsonArraysOfConversationsFailOnlyWithDatasetErrors() {
        fuzz("fuzz.json", MESSAGES, 800, 12, true);
    }

    private static void fuzz(String name, String valid, int rounds, long seed, boolean assistantOnly) {
        ExampleTokenizer tokenizer = new ExampleTokenizer(TestTokenizers.tiny(), TestTokenizers.chatTemplate(TestTokenizers.tiny()),
                null, null, assistantOnly);
        SftDataset.Options options = new SftDataset.Options("text", 64, false, PackingStrategy.BFD);
        byte[] base = valid.getBytes(StandardCharsets.UTF_8);
        // The uncorrupted file prepares: the corruptions are what fails.
        assertThat(SftDataset.prepare(name, DatasetReader.parse(name, base), tokenizer, options).size()).isPositive();
        Random random = new Random(seed);
        int failures = 0;
        for (int round = 0; round < rounds; round++) {
            byte[] bytes = corrupt(base, random);
            try {
                SftDataset.prepare(name, DatasetReader.parse(name, bytes), tokenizer, options);
            } catch (DatasetFormatException e) {
                failures++;
                assertThat(e.getMessage()).startsWith(name + ":").doesNotContain("null:");
            } catch (RuntimeException | Error e) {
                fail("round " + round + " threw " + e + " for input:\n" + new String(bytes, StandardCharsets.UTF_8), e);
            }
        }
        assertThat(failures).as("most corruptions break the file").isGreaterThan(rounds / 4);
    }

    private static byte[] corrupt(byte[] base, Random r) {
        byte[] b = base.clone();
        int edits = 1 + r.nextInt(4);
        for (int e = 0; e < edits; e++) {
            if (b.length == 0) return b;
            int at = r.nextInt(b.length);
            switch (r.nextInt(7)) {
                case 0 -> b[at] = (byte) r.nextInt(256);                               // any byte, invalid UTF-8 included
                case 1 -> b[at] = ALPHABET[r.nextInt(ALPHABET.length)];                // a plausible JSON character
                case 2 -> b = concat(Arrays.copyOf(b, at), Arrays.copyOfRange(b, at + 1, b.length)); // delete
                case 3 -> b = concat(concat(Arrays.copyOf(b, at), new byte[]{ALPHABET[r.nextInt(ALPHABET.length)]}),
                        Arrays.copyOfRange(b, at, b.length));                          // insert
                case 4 -> b = Arrays.copyOf(b, at);                                    // cut short
                case 5 -> {                                                            // repeat a chunk
                    int len = Math.min(b.length - at, 1 + r.nextInt(20));
                    b = concat(concat(Arrays.copyOf(b, at + len), Arrays.copyOfRange(b, at, at + len)), Arrays.copyOfRange(b, at + len, b.length));
                }
                default -> {                                                           // swap two bytes
                    int other = r.nextInt(b.length);
                    byte t = b[at];
                    b[at] = b[other];
                    b[other] = t;
                }
            }
        }
        return b;
    }

    private static byte[] concat(byte[] a, byte[] b) {
        byte[] out = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }
}
