package dev.lora4j.train.data;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class DatasetReaderTest {

    @TempDir
    Path dir;

    private static List<DatasetRecord> parse(String name, String text) {
        return DatasetReader.parse(name, text.getBytes(StandardCharsets.UTF_8));
    }

    @Test
    void jsonLinesGiveOneRecordPerLineWithItsLineNumberAndSkipBlankLines() {
        List<DatasetRecord> r = parse("d.jsonl", "{\"text\": \"a\"}\n\n  \n{\"text\": \"b\"}\r\n{\"text\": \"c\"}");
        assertThat(r).extracting(DatasetRecord::line).containsExactly(1, 4, 5);
        assertThat(r).extracting(x -> x.fields().get("text").asText()).containsExactly("a", "b", "c");
        assertThat(r.get(1).where()).isEqualTo("d.jsonl:4");
    }

    @Test
    void aJsonArrayGivesOneRecordPerElementAtTheLineWhereItStarts() {
        List<DatasetRecord> r = parse("d.json", "[\n  {\"text\": \"a\"},\n\n  {\"text\":\n \"b\"}\n]\n");
        assertThat(r).extracting(DatasetRecord::line).containsExactly(2, 4);
        assertThat(r.get(1).fields().get("text").asText()).isEqualTo("b");
    }

    @Test
    void aJsonFileThatIsNotAnArrayIsReadAsJsonLines() {
        assertThat(parse("d.json", "{\"text\": \"a\"}\n{\"text\": \"b\"}\n")).hasSize(2);
    }

    @Test
    void aUtf8ByteOrderMarkIsAllowed() {
        byte[] body = "{\"text\": \"é\"}\n".getBytes(StandardCharsets.UTF_8);
        byte[] withBom = new byte[body.length + 3];
        withBom[0] = (byte) 0xEF;
        withBom[1] = (byte) 0xBB;
        withBom[2] = (byte) 0xBF;
        System.arraycopy(body, 0, withBom, 3, body.length);
        assertThat(DatasetReader.parse("d.jsonl", withBom).getFirst().fields().get("text").asText()).isEqualTo("é");
    }

    @Test
    void brokenJsonNamesTheFileTheLineAndTheColumn() {
        assertThatThrownBy(() -> parse("train.jsonl", "{\"text\": \"a\"}\n{\"text\": oops}\n"))
                .isInstanceOf(DatasetFormatException.class)
                .hasMessageStartingWith("train.jsonl:2: not valid JSON at column")
                .hasMessageContaining("oops");
    }

    @Test
    void aLineHoldingTwoObjectsOrTrailingTextIsAnError() {
        assertThatThrownBy(() -> parse("t.jsonl", "{\"text\": \"a\"} {\"text\": \"b\"}\n"))
                .isInstanceOf(DatasetFormatException.class).hasMessageStartingWith("t.jsonl:1: not valid JSON");
    }

    @Test
    void aLineThatIsNotAnObjectSaysWhatItFound() {
        assertThatThrownBy(() -> parse("t.jsonl", "{\"text\": \"a\"}\n[1, 2]\n"))
                .hasMessage("t.jsonl:2: each line must be a JSON object {...}, found an array");
        assertThatThrownBy(() -> parse("t.jsonl", "\"just text\"\n"))
                .hasMessage("t.jsonl:1: each line must be a JSON object {...}, found a string");
    }

    @Test
    void duplicateKeysAreAnErrorRatherThanSilentlyKeepingOne() {
        assertThatThrownBy(() -> parse("t.jsonl", "{\"text\": \"a\", \"text\": \"b\"}\n"))
                .isInstanceOf(DatasetFormatException.class).hasMessageContaining("t.jsonl:1").hasMessageContaining("text");
    }

    @Test
    void invalidUtf8NamesTheLineAndTheByte() {
        byte[] bytes = "{\"text\": \"a\"}\n{\"text\": \"b\u00e9\"}\n".getBytes(StandardCharsets.UTF_8);
        bytes[bytes.length - 4] = (byte) 0xFF; // the second byte of é
        assertThatThrownBy(() -> DatasetReader.parse("u.jsonl", bytes))
                .isInstanceOf(DatasetFormatException.class)
                .hasMessageStartingWith("u.jsonl:2: not valid UTF-8 text (byte 0x");
    }

    @Test
    void arrayProblemsNameTheirLine() {
        assertThatThrownBy(() -> parse("a.json", "[\n{\"text\": \"a\"},\n42\n]"))
                .hasMessage("a.json:3: each element of the JSON array must be an object {...}, found a number");
        assertThatThrownBy(() -> parse("a.json", "[\n{\"text\": \"a\"},\n{\"text\": \"b\"}\n"))
                .isInstanceOf(DatasetFormatException.class).hasMessageContaining("a.json:");
        assertThatThrownBy(() -> parse("a.json", "[{\"text\": \"a\"}]\n{}"))
                .hasMessage("a.json:2: unexpected content after the closing ']' of the JSON array");
    }

    @Test
    void emptyFilesAndOtherExtensionsAreRefusedWithWhatToDo() {
        assertThatThrownBy(() -> parse("e.jsonl", " \n\n")).hasMessage("e.jsonl: is empty; a dataset needs at least one record");
        assertThatThrownBy(() -> parse("e.json", "[]")).hasMessage("e.json: has no records; a dataset needs at least one");
        assertThatThrownBy(() -> parse("data.csv", "text\na\n")).hasMessageStartingWith("data.csv: unsupported dataset file");
    }

    @Test
    void aMissingFileIsNamed() {
        Path missing = dir.resolve("nope.jsonl");
        assertThatThrownBy(() -> DatasetReader.read(missing)).hasMessageStartingWith(missing + ": no such file; check the path of the dataset");
    }

    @Test
    void readsFromDisk() throws IOException {
        Path f = dir.resolve("d.jsonl");
        Files.writeString(f, "{\"prompt\": \"p\", \"completion\": \"c\"}\n");
        assertThat(DatasetReader.read(f).getFirst().file()).isEqualTo(f.toString());
    }
}
