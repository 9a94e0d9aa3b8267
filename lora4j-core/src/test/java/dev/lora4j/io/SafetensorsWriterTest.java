package dev.lora4j.io;

import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;

import static dev.lora4j.io.RawSafetensors.concat;
import static dev.lora4j.io.RawSafetensors.floatsLE;
import static dev.lora4j.io.RawSafetensors.le64;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Files written by SafetensorsWriter are byte for byte what the reference implementation writes, and read back. */
class SafetensorsWriterTest {

    @TempDir
    Path dir;

    private static MemorySegment bytes(byte[] b) {
        return MemorySegment.ofArray(b);
    }

    private static byte[] randomBytes(Random r, int n) {
        byte[] b = new byte[n];
        r.nextBytes(b);
        return b;
    }

    // ---- byte-exact against the reference writer's documented outputs -----------------------------------------

    @Test
    void writesTheSameBytesAsTheReferenceImplementationForOneTensor() throws IOException {
        byte[] data = floatsLE(0, 1, 2, 3, 4, 5);
        Path p = dir.resolve("a.safetensors");
        new SafetensorsWriter().add("attn.0", DType.F32, new long[]{1, 2, 3}, bytes(data)).writeTo(p);
        String json = "{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}";
        assertThat(json.length()).isEqualTo(64); // already a multiple of 8: no padding
        assertThat(Files.readAllBytes(p)).isEqualTo(concat(le64(64), json.getBytes(StandardCharsets.US_ASCII), data));
    }

    @Test
    void padsTheHeaderWithSpacesToAMultipleOfEightBytes() throws IOException {
        byte[] data = floatsLE(0, 1, 2, 3, 4, 5);
        Path p = dir.resolve("a.safetensors");
        new SafetensorsWriter().add("attn0", DType.F32, new long[]{1, 1, 2, 3}, bytes(data)).writeTo(p);
        String json = "{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],\"data_offsets\":[0,24]}}";
        String padded = json + " ".repeat(72 - json.length());
        assertThat(Files.readAllBytes(p)).isEqualTo(concat(le64(72), padded.getBytes(StandardCharsets.US_ASCII), data));
    }

    @Test
    void writesAnEmptyFileWithAndWithoutMetadata() throws IOException {
        Path p = dir.resolve("e.safetensors");
        new SafetensorsWriter().writeTo(p);
        assertThat(Files.readAllBytes(p)).isEqualTo(concat(le64(8), "{}      ".getBytes(StandardCharsets.US_ASCII)));
        new SafetensorsWriter().metadata("framework", "pt").writeTo(p);
        String json = "{\"__metadata__\":{\"framework\":\"pt\"}}";
        String padded = json + " ".repeat(40 - json.length());
        assertThat(Files.readAllBytes(p)).isEqualTo(concat(le64(40), padded.getBytes(StandardCharsets.US_ASCII)));
    }

    // ---- round trips -----------------------------------------------------------------------------------------

    @Test
    void roundTripsEveryDtypeInInsertionOrderWithMetadata() throws IOException {
        Random r = new Random(42);
        var w = new SafetensorsWriter().metadata("format", "pt").metadata("note", "ünïcode ✓");
        var expected = new java.util.LinkedHashMap<String, byte[]>();
        for (DType t : DType.values()) {
            String name = "z." + t.name().toLowerCase(java.util.Locale.ROOT) + ".weight";
            byte[] b = randomBytes(r, 3 * 5 * t.byteSize());
            w.add(name, t, new long[]{3, 5}, bytes(b));
            expected.put(name, b);
        }
        w.add("empty", DType.BF16, new long[]{4, 0, 2}, bytes(new byte[0]));
        w.add("scalar", DType.F64, new long[]{}, bytes(randomBytes(r, 8)));
        Path p = dir.resolve("all.safetensors");
        w.writeTo(p);

        try (var f = SafetensorsFile.open(p)) {
            assertThat(f.metadata()).containsExactly(java.util.Map.entry("format", "pt"), java.util.Map.entry("note", "ünïcode ✓"));
            List<String> names = new java.util.ArrayList<>(expected.keySet());
            names.add("empty");
            names.add("scalar");
            assertThat(f.names()).containsExactlyElementsOf(names);
            for (DType t : DType.values()) {
                String name = "z." + t.name().toLowerCase(java.util.Locale.ROOT) + ".weight";
                TensorInfo info = f.info(name);
                assertThat(info.dtype()).isEqualTo(t);
                assertThat(info.shape()).containsExactly(3, 5);
                assertThat(info.numel()).isEqualTo(15);
                assertThat(f.data(name).toArray(ValueLayout.JAVA_BYTE)).isEqualTo(expected.get(name));
            }
            assertThat(f.info("empty").numel()).isZero();
            assertThat(f.info("empty").shape()).containsExactly(4, 0, 2);
            assertThat(f.data("empty").byteSize()).isZero();
            assertThat(f.info("scalar").shape()).isEmpty();
            assertThat(f.info("scalar").numel()).isEqualTo(1);
            assertThat(f.data("scalar").byteSize()).isEqualTo(8);
            assertThat(f.data("scalar").isReadOnly()).isTrue();
        }
        // The data section starts 8-byte aligned.
        long headerLength = ByteBuffer.wrap(Files.readAllBytes(p), 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        assertThat(headerLength % 8).isZero();
    }

    @Test
    void writesSegmentsOfAnyKindIncludingNonByteArraysAndOnesLargerThanAWriteChunk() throws IOException {
        float[] floats = {1.5f, -2.25f, 3.0f};
        try (Arena arena = Arena.ofConfined()) {
            long big = (64L << 20) + 12_345; // more than one 64 MiB write
            MemorySegment large = arena.allocate(big);
            for (long i = 0; i < big; i += 4096) large.set(ValueLayout.JAVA_BYTE, i, (byte) (i / 4096));
            large.set(ValueLayout.JAVA_BYTE, big - 1, (byte) 0x5a);
            Path p = dir.resolve("mixed.safetensors");
            new SafetensorsWriter()
                    .add("heap.floats", DType.F32, new long[]{3}, MemorySegment.ofArray(floats))
                    .add("native.large", DType.U8, new long[]{big}, large)
                    .writeTo(p);
            try (var f = SafetensorsFile.open(p)) {
                assertThat(f.data("heap.floats").toArray(ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN)))
                        .containsExactly(floats);
                assertThat(f.data("native.large").mismatch(large)).isEqualTo(-1);
            }
        }
    }

    @Test
    void overwritesAtomicallyWhileTheOldFileIsStillMapped() throws IOException {
        Path p = dir.resolve("m.safetensors");
        new SafetensorsWriter().add("w", DType.U8, new long[]{2}, bytes(new byte[]{1, 2})).writeTo(p);
        try (var old = SafetensorsFile.open(p)) {
            new SafetensorsWriter().add("w", DType.U8, new long[]{3}, bytes(new byte[]{7, 8, 9})).writeTo(p);
            assertThat(old.data("w").toArray(ValueLayout.JAVA_BYTE)).containsExactly(1, 2);
            try (var fresh = SafetensorsFile.open(p)) {
                assertThat(fresh.data("w").toArray(ValueLayout.JAVA_BYTE)).containsExactly(7, 8, 9);
            }
        }
        try (Stream<Path> files = Files.list(dir)) {
            assertThat(files.map(f -> f.getFileName().toString())).containsExactly("m.safetensors");
        }
    }

    @Test
    void rejectsTensorsThatDoNotDescribeTheirBytes() {
        var w = new SafetensorsWriter().add("a", DType.U8, new long[]{1}, bytes(new byte[1]));
        assertThatThrownBy(() -> w.add("b", DType.F32, new long[]{2, 2}, bytes(new byte[15])))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContainingAll("'b'", "16 bytes", "15");
        assertThatThrownBy(() -> w.add("a", DType.U8, new long[]{1}, bytes(new byte[1])))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("already added");
        assertThatThrownBy(() -> w.add("__metadata__", DType.U8, new long[]{1}, bytes(new byte[1])))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("reserved");
        assertThatThrownBy(() -> w.add("c", DType.U8, new long[]{-1}, bytes(new byte[0])))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("negative");
    }

    // ---- sharded folders -------------------------------------------------------------------------------------

    @Test
    void writesHuggingFaceShardsWithAnIndexAndReadsThemBack() throws IOException {
        Random r = new Random(7);
        var w = new SafetensorsWriter().metadata("format", "pt");
        var data = new java.util.LinkedHashMap<String, byte[]>();
        int[] sizes = {40, 40, 30, 120, 10, 10}; // 120 exceeds the limit: a shard of its own
        for (int i = 0; i < sizes.length; i++) {
            byte[] b = randomBytes(r, sizes[i]);
            data.put("layer." + i, b);
            w.add("layer." + i, DType.U8, new long[]{sizes[i]}, bytes(b));
        }
        Files.writeString(dir.resolve("model.safetensors"), "stale");
        Files.writeString(dir.resolve("model-00001-of-00009.safetensors"), "stale");

        List<Path> written = w.writeSharded(dir, 100);

        // [40, 40] | [30] (30 more would pass 100) | [120] (alone: larger than the limit) | [10, 10]
        assertThat(written).extracting(p -> p.getFileName().toString()).containsExactly(
                "model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors",
                "model-00003-of-00004.safetensors", "model-00004-of-00004.safetensors");
        var index = new com.fasterxml.jackson.databind.ObjectMapper().readTree(dir.resolve("model.safetensors.index.json").toFile());
        assertThat(index.get("metadata").get("total_size").asLong()).isEqualTo(250);
        assertThat(index.get("weight_map").get("layer.1").asText()).isEqualTo("model-00001-of-00004.safetensors");
        assertThat(index.get("weight_map").get("layer.2").asText()).isEqualTo("model-00002-of-00004.safetensors");
        assertThat(index.get("weight_map").get("layer.3").asText()).isEqualTo("model-00003-of-00004.safetensors");
        assertThat(index.get("weight_map").get("layer.5").asText()).isEqualTo("model-00004-of-00004.safetensors");
        assertThat(dir.resolve("model.safetensors")).doesNotExist();
        assertThat(dir.resolve("model-00001-of-00009.safetensors")).doesNotExist();

        try (var m = SafetensorsModel.open(dir)) {
            assertThat(m.names()).containsExactlyElementsOf(data.keySet());
            assertThat(m.metadata()).containsEntry("format", "pt");
            for (var e : data.entrySet()) {
                assertThat(m.data(e.getKey()).toArray(ValueLayout.JAVA_BYTE)).isEqualTo(e.getValue());
            }
            assertThat(m.fileOf("layer.4").getFileName().toString()).isEqualTo("model-00004-of-00004.safetensors");
        }
    }

    @Test
    void writesASingleModelFileWithoutIndexWhenEverythingFitsOneShard() throws IOException {
        Files.writeString(dir.resolve("model.safetensors.index.json"), "{\"weight_map\":{}}");
        Files.writeString(dir.resolve("model-00001-of-00002.safetensors"), "stale");
        List<Path> written = new SafetensorsWriter()
                .add("a", DType.F32, new long[]{2}, bytes(floatsLE(1, 2)))
                .writeSharded(dir, 1L << 30);
        assertThat(written).containsExactly(dir.resolve("model.safetensors"));
        try (Stream<Path> files = Files.list(dir)) {
            assertThat(files.map(f -> f.getFileName().toString())).containsExactly("model.safetensors");
        }
        try (var m = SafetensorsModel.open(dir)) {
            assertThat(m.names()).containsExactly("a");
        }
    }
}
