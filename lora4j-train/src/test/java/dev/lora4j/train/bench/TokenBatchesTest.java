package dev.lora4j.train.bench;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.NoSuchFileException;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** The token file of {@code lora4j bench --tokens}: its two layouts, the order steps take it in, and its errors. */
class TokenBatchesTest {

    @TempDir
    Path dir;

    private Path file(String json) throws IOException {
        return Files.writeString(dir.resolve("tokens.json"), json);
    }

    /**
     * Fuzzing: a valid file cut short, with bytes replaced, inserted or removed, is either read (and then checked
     * against its shape) or refused with a message that names the file; nothing else escapes.
     */
    @Test
    void aDamagedFileIsReadOrRefusedNamingTheFileAndNothingElseEscapes() throws IOException {
        byte[] valid = "{\"micro_batches\": [[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [10, 11, 12]]], \"seed\": 3}"
                .getBytes(java.nio.charset.StandardCharsets.UTF_8);
        byte[] alphabet = "[]{},:\"0123456789-.eE tnulfasr\\\n\u00ff".getBytes(java.nio.charset.StandardCharsets.ISO_8859_1);
        java.util.Random rnd = new java.util.Random(20261130);
        int read = 0, refused = 0;
        for (int i = 0; i < 3000; i++) {
            byte[] b = mutate(valid, rnd, alphabet);
            Path f = Files.write(dir.resolve("fuzz.json"), b);
            try {
                TokenBatches t = TokenBatches.read(f);
                read++;
                try {
                    t.checkFits(3, 2, 13);
                } catch (IllegalArgumentException e) {
                    assertThat(e.getMessage()).as("case %d", i).contains("fuzz.json");
                }
            } catch (IOException | IllegalArgumentException e) {
                refused++;
                assertThat(e.getMessage()).as("case %d: %s", i, new String(b, java.nio.charset.StandardCharsets.ISO_8859_1))
                        .contains("fuzz.json");
            }
        }
        assertThat(read).as("mutations still read").isPositive();
        assertThat(refused).as("mutations refused").isPositive();
    }

    private static byte[] mutate(byte[] valid, java.util.Random rnd, byte[] alphabet) {
        java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
        out.write(valid, 0, valid.length);
        byte[] b = out.toByteArray();
        int edits = 1 + rnd.nextInt(3);
        for (int e = 0; e < edits && b.length > 0; e++) {
            int at = rnd.nextInt(b.length);
            switch (rnd.nextInt(4)) {
                case 0 -> b = java.util.Arrays.copyOf(b, at);                                     // cut short
                case 1 -> b[at] = alphabet[rnd.nextInt(alphabet.length)];                        // replace
                case 2 -> {                                                                       // insert
                    byte[] n = new byte[b.length + 1];
                    System.arraycopy(b, 0, n, 0, at);
                    n[at] = alphabet[rnd.nextInt(alphabet.length)];
                    System.arraycopy(b, at, n, at + 1, b.length - at);
                    b = n;
                }
                default -> {                                                                      // remove
                    byte[] n = new byte[b.length - 1];
                    System.arraycopy(b, 0, n, 0, at);
                    System.arraycopy(b, at + 1, n, at, b.length - at - 1);
                    b = n;
                }
            }
        }
        return b;
    }

    @Test
    void readsAnArrayOfMicroBatchesOfSequencesOfTokenIds() throws IOException {
        TokenBatches t = TokenBatches.read(file("[[[1, 2, 3], [4, 5, 6]],\n [[7, 8, 9], [10, 11, 12]]]"));
        assertThat(t.size()).isEqualTo(2);
        assertThat(t.forStep(0, 2)).isDeepEqualTo(new int[][][] {{{1, 2, 3}, {4, 5, 6}}, {{7, 8, 9}, {10, 11, 12}}});
        t.checkFits(3, 2, 13);
    }

    @Test
    void readsTheArrayFromAnObjectsMicroBatchesFieldIgnoringTheOtherFields() throws IOException {
        TokenBatches t = TokenBatches.read(file("{\"made_by\": \"a script\", \"seed\": 1, \"extra\": {\"a\": [1, [2]]},"
                + " \"micro_batches\": [[[5, 6]]], \"vocab_size\": 32000}"));
        assertThat(t.size()).isEqualTo(1);
        assertThat(t.forStep(0, 1)).isDeepEqualTo(new int[][][] {{{5, 6}}});
    }

    @Test
    void eachStepTakesTheNextAccumMicroBatchesAndTheFileIsUsedAgainFromItsStart() throws IOException {
        TokenBatches t = TokenBatches.read(file("[[[0]], [[1]], [[2]]]"));
        assertThat(t.forStep(0, 2)).isDeepEqualTo(new int[][][] {{{0}}, {{1}}});
        assertThat(t.forStep(1, 2)).isDeepEqualTo(new int[][][] {{{2}}, {{0}}});
        assertThat(t.forStep(2, 2)).isDeepEqualTo(new int[][][] {{{1}}, {{2}}});
        TokenBatches one = TokenBatches.read(file("[[[7, 8]]]"));
        assertThat(one.forStep(5, 3)).isDeepEqualTo(new int[][][] {{{7, 8}}, {{7, 8}}, {{7, 8}}});
    }

    @Test
    void aSequenceOfAnotherLengthThanSeqIsNamedByItsPosition() throws IOException {
        TokenBatches t = TokenBatches.read(file("[[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [1, 2]]]"));
        assertThatThrownBy(() -> t.checkFits(3, 2, 100))
                .hasMessageContaining("tokens.json: sequence [1][1] has 2 token ids but --seq is 3");
        assertThatThrownBy(() -> t.checkFits(4, 2, 100)).hasMessageContaining("sequence [0][0] has 3 token ids but --seq is 4");
    }

    @Test
    void aMicroBatchOfAnotherSizeThanMicroBatchIsNamed() throws IOException {
        TokenBatches t = TokenBatches.read(file("[[[1, 2], [3, 4]], [[5, 6]]]"));
        assertThatThrownBy(() -> t.checkFits(2, 2, 100))
                .hasMessageContaining("tokens.json: micro-batch [1] holds 1 sequence but --micro-batch is 2");
    }

    @Test
    void anIdOutsideTheModelsVocabularyIsNamedWithTheVocabularySize() throws IOException {
        TokenBatches t = TokenBatches.read(file("[[[1, 2, 255], [3, 256, 4]]]"));
        t.checkFits(3, 2, 257);
        assertThatThrownBy(() -> t.checkFits(3, 2, 256))
                .hasMessageContaining("tokens.json: [0][1][1] = 256 is not a token id of this model, whose vocabulary has 256 (ids 0 to 255)");
    }

    @Test
    void whatIsNotATokenIdIsNamedByItsPositionAndLine() throws IOException {
        assertThatThrownBy(() -> TokenBatches.read(file("[[[1, 2],\n  [3, \"x\"]]]")))
                .isInstanceOf(IOException.class)
                .hasMessageContaining("tokens.json: [0][1][1] (line 2, column 7) is a string, not a token id");
        assertThatThrownBy(() -> TokenBatches.read(file("[[[1, 2.5]]]")))
                .hasMessageContaining("[0][0][1]").hasMessageContaining("is a fractional number, not a token id");
        assertThatThrownBy(() -> TokenBatches.read(file("[[[1, -3]]]")))
                .hasMessageContaining("[0][0][1] (line 1, column 7) = -3 is not a token id");
        assertThatThrownBy(() -> TokenBatches.read(file("[[[1, 4294967296]]]")))
                .hasMessageContaining("= 4294967296 is not a token id");
        assertThatThrownBy(() -> TokenBatches.read(file("[[1, 2]]")))
                .hasMessageContaining("tokens.json: [0][0] should be a sequence (an array of token ids)")
                .hasMessageContaining("found a whole number");
        assertThatThrownBy(() -> TokenBatches.read(file("[[[1, 2]], 3]")))
                .hasMessageContaining("[1] should be a micro-batch (an array of sequences)");
    }

    @Test
    void aFileWithoutMicroBatchesOrNotJsonSaysWhatItShouldHold() throws IOException {
        assertThatThrownBy(() -> TokenBatches.read(file("[]"))).hasMessageContaining("tokens.json holds no micro-batch");
        assertThatThrownBy(() -> TokenBatches.read(file("[[]]"))).hasMessageContaining("micro-batch [0] holds no sequence");
        assertThatThrownBy(() -> TokenBatches.read(file("{\"batches\": []}")))
                .hasMessageContaining("an object of token batches needs a \"micro_batches\" field");
        assertThatThrownBy(() -> TokenBatches.read(file("\"ids\"")))
                .hasMessageContaining("expected a JSON array of micro-batches (or an object with \"micro_batches\") (line 1, column 1), found a string");
        assertThatThrownBy(() -> TokenBatches.read(file("[[[1, 2]]")))
                .isInstanceOf(IOException.class).hasMessageContaining("tokens.json: not valid JSON (line 1");
        assertThatThrownBy(() -> TokenBatches.read(dir.resolve("absent.json")))
                .isInstanceOf(NoSuchFileException.class).hasMessageContaining("absent.json");
    }
}
