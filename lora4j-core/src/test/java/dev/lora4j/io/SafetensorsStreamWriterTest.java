package dev.lora4j.io;

import dev.lora4j.io.SafetensorsStreamWriter.Entry;
import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class SafetensorsStreamWriterTest {
    @TempDir
    Path dir;

    private static MemorySegment bytes(int n, int seed) {
        byte[] b = new byte[n];
        for (int i = 0; i < n; i++) b[i] = (byte) (i * 31 + seed);
        return MemorySegment.ofArray(b);
    }

    @Test
    void writesTensorsProducedOneAtATimeIncludingOneWhoseLengthIsKnownOnlyWhenProduced() throws IOException {
        Path file = dir.resolve("a.safetensors");
        List<Entry> entries = List.of(Entry.of("w", DType.F32, 3, 2), Entry.upTo("json", DType.U8, 100),
                Entry.of("b", DType.BF16, 5));
        SafetensorsStreamWriter.write(file, entries, Map.of("format", "pt"), sink -> {
            sink.put("w", bytes(24, 1));
            sink.put("json", MemorySegment.ofArray("{\"a\": 1}".getBytes()));
            sink.put("b", bytes(10, 2));
        });
        try (SafetensorsFile f = SafetensorsFile.open(file)) {
            assertThat(f.names()).containsExactly("w", "json", "b");
            assertThat(f.metadata()).containsEntry("format", "pt");
            assertThat(f.info("json").shape()).containsExactly(8);
            assertThat(f.info("w").shape()).containsExactly(3, 2);
            assertThat(f.data("w").mismatch(bytes(24, 1))).isEqualTo(-1);
            assertThat(new String(f.data("json").toArray(ValueLayout.JAVA_BYTE))).isEqualTo("{\"a\": 1}");
            assertThat(f.data("b").mismatch(bytes(10, 2))).isEqualTo(-1);
        }
        // The header's reserved room is padded with spaces, which every safetensors reader accepts.
        byte[] raw = Files.readAllBytes(file);
        long headerLength = MemorySegment.ofArray(raw).get(ValueLayout.JAVA_LONG_UNALIGNED, 0);
        assertThat(headerLength % 8).isZero();
        assertThat(raw[(int) (8 + headerLength - 1)]).isEqualTo((byte) ' ');
    }

    @Test
    void tensorsOutOfOrderOfTheWrongSizeOrMissingAreErrorsAndLeaveNoFile() {
        Path file = dir.resolve("b.safetensors");
        List<Entry> entries = List.of(Entry.of("x", DType.F32, 2), Entry.upTo("s", DType.U8, 4));
        assertThatThrownBy(() -> SafetensorsStreamWriter.write(file, entries, Map.of(), sink -> sink.put("s", bytes(2, 0))))
                .hasMessageContaining("expected tensor 'x' next, got 's'");
        assertThatThrownBy(() -> SafetensorsStreamWriter.write(file, entries, Map.of(), sink -> sink.put("x", bytes(7, 0))))
                .hasMessageContaining("needs 8 bytes but the segment has 7");
        assertThatThrownBy(() -> SafetensorsStreamWriter.write(file, entries, Map.of(), sink -> {
            sink.put("x", bytes(8, 0));
            sink.put("s", bytes(5, 0));
        })).hasMessageContaining("not at most 4");
        assertThatThrownBy(() -> SafetensorsStreamWriter.write(file, entries, Map.of(), sink -> sink.put("x", bytes(8, 0))))
                .hasMessageContaining("2 tensors declared but 1 written").hasMessageContaining("'s'");
        assertThat(file).doesNotExist();
    }

    @Test
    void leavesNoTemporaryFileBehindWhenTheProducerFails() throws IOException {
        Path file = dir.resolve("c.safetensors");
        assertThatThrownBy(() -> SafetensorsStreamWriter.write(file, List.of(Entry.of("x", DType.U8, 4)), Map.of(),
                sink -> { throw new IOException("disk on fire"); })).hasMessage("disk on fire");
        try (Stream<Path> s = Files.list(dir)) {
            assertThat(s).isEmpty();
        }
    }
}
