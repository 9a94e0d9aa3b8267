package dev.lora4j.io;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

import static dev.lora4j.io.RawSafetensors.concat;
import static dev.lora4j.io.RawSafetensors.file;
import static dev.lora4j.io.RawSafetensors.le64;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Every way a header can be wrong is a SafetensorsFormatException that names the file and the problem. */
class SafetensorsFileValidationTest {

    private static final String I32_2X2 = "{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";

    @TempDir
    Path dir;

    private Path write(byte[] bytes) throws IOException {
        return RawSafetensors.write(dir, "t.safetensors", bytes);
    }

    private void assertRejected(byte[] bytes, String... messageParts) throws IOException {
        Path p = write(bytes);
        assertThatThrownBy(() -> SafetensorsFile.open(p))
                .isInstanceOf(SafetensorsFormatException.class)
                .hasMessageContaining(p.toString())
                .hasMessageContainingAll(messageParts);
    }

    private void assertRejected(String header, int dataBytes, String... messageParts) throws IOException {
        assertRejected(file(header, dataBytes), messageParts);
    }

    // ---- accepted --------------------------------------------------------------------------------------------

    @Test
    void readsAHeaderThatIsNotPaddedToEightBytes() throws IOException {
        try (var f = SafetensorsFile.open(write(file(I32_2X2, 16)))) {
            assertThat(f.names()).containsExactly("test");
            assertThat(f.info("test").shape()).containsExactly(2, 2);
            assertThat(f.data("test").byteSize()).isEqualTo(16);
        }
    }

    @Test
    void acceptsWhitespaceBeforeAndAfterTheJson() throws IOException {
        try (var f = SafetensorsFile.open(write(file("\t\n{}\r \t\n", 0)))) {
            assertThat(f.names()).isEmpty();
            assertThat(f.metadata()).isEmpty();
        }
    }

    @Test
    void acceptsScalarsZeroSizedTensorsAndNullMetadata() throws IOException {
        String h = "{\"__metadata__\":null,\"s\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]},"
                + "\"z\":{\"dtype\":\"F32\",\"shape\":[2,0],\"data_offsets\":[4,4]}}";
        try (var f = SafetensorsFile.open(write(file(h, 4)))) {
            assertThat(f.info("s").numel()).isEqualTo(1);
            assertThat(f.info("z").numel()).isZero();
            assertThat(f.data("z").byteSize()).isZero();
        }
    }

    @Test
    void acceptsTensorsListedInAnyOrderOfOffsets() throws IOException {
        String h = "{\"b\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[2,5]},"
                + "\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}";
        try (var f = SafetensorsFile.open(write(file(h, new byte[]{1, 2, 3, 4, 5})))) {
            assertThat(f.names()).containsExactly("b", "a");
            assertThat(f.data("b").toArray(java.lang.foreign.ValueLayout.JAVA_BYTE)).containsExactly(3, 4, 5);
        }
    }

    @Test
    void ignoresUnknownFieldsInATensorEntry() throws IOException {
        String h = "{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"note\":\"x\"}}";
        try (var f = SafetensorsFile.open(write(file(h, 1)))) {
            assertThat(f.contains("t")).isTrue();
        }
    }

    // ---- the 8-byte length and the header's extent -----------------------------------------------------------

    @Test
    void rejectsAFileShorterThanTheLengthPrefix() throws IOException {
        assertRejected(new byte[0], "0 bytes", "8-byte");
        assertRejected(new byte[7], "7 bytes");
    }

    @Test
    void rejectsAHeaderLengthBeyondTheEndOfTheFile() throws IOException {
        assertRejected(le64(60), "60", "only 0 bytes follow", "truncated");
        byte[] full = file(I32_2X2, 16);
        byte[] cut = java.util.Arrays.copyOf(full, 8 + 30);
        assertRejected(cut, "truncated");
    }

    @Test
    void rejectsAnAbsurdHeaderLength() throws IOException {
        byte[] b = file(I32_2X2, 16);
        b[5] = b[6] = b[7] = (byte) 0xff;
        assertRejected(b, "limit");
        assertRejected(concat(le64(100_000_001L), new byte[16]), "100000001", "limit");
        assertRejected(concat(le64(-1), new byte[16]), Long.toUnsignedString(-1));
    }

    @Test
    void rejectsAHeaderThatIsNotUtf8() throws IOException {
        assertRejected(concat(le64(3), new byte[]{'{', (byte) 0xff, '}'}), "not valid UTF-8", "byte 1");
    }

    @Test
    void rejectsAHeaderThatIsNotJson() throws IOException {
        assertRejected("{", 0, "not valid JSON");
        assertRejected("{} x", 0, "not valid JSON");
        assertRejected("{\"a\":1,}", 0, "not valid JSON", "line 1");
    }

    @Test
    void rejectsPathologicalJsonWithoutBlowingTheStack() throws IOException {
        assertRejected("[".repeat(200_000) + "]".repeat(200_000), 0, "not valid JSON");
        assertRejected("{\"w\":{\"dtype\":\"U8\",\"shape\":[1" + "0".repeat(5000) + "],\"data_offsets\":[0,1]}}", 1, "not valid JSON");
        assertRejected("{\"w\":{\"dtype\":\"U8\",\"shape\":[1e999999],\"data_offsets\":[0,1]}}", 1, "dimension 0");
    }

    @Test
    void rejectsAHeaderThatIsNotAnObject() throws IOException {
        assertRejected("[]", 0, "must be an object", "an array");
        assertRejected("   ", 0, "empty");
    }

    @Test
    void rejectsDuplicateKeys() throws IOException {
        String h = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                + "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}";
        assertRejected(h, 2, "duplicate key", "'a'");
    }

    // ---- entries -------------------------------------------------------------------------------------------

    @Test
    void rejectsAnEntryThatIsNotAnObject() throws IOException {
        assertRejected("{\"w\":5}", 0, "tensor 'w'", "must be an object", "the number 5");
    }

    @Test
    void rejectsAMissingOrUnknownDtype() throws IOException {
        assertRejected("{\"w\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "tensor 'w'", "\"dtype\"", "missing");
        assertRejected("{\"w\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "tensor 'w'", "unknown dtype 'F128'", "BF16");
        assertRejected("{\"w\":{\"dtype\":\"float32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype 'float32'");
        assertRejected("{\"w\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "\"dtype\" must be a string");
    }

    @Test
    void rejectsShapesThatAreNotListsOfNonNegativeIntegers() throws IOException {
        assertRejected("{\"w\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1, "tensor 'w'", "\"shape\"", "missing");
        assertRejected("{\"w\":{\"dtype\":\"U8\",\"shape\":3,\"data_offsets\":[0,3]}}", 3, "\"shape\" must be an array");
        assertRejected("{\"w\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", 1, "dimension 0", "non-negative", "-1");
        assertRejected("{\"w\":{\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,1]}}", 1, "dimension 0", "1.5");
        assertRejected("{\"w\":{\"dtype\":\"U8\",\"shape\":[1,\"2\"],\"data_offsets\":[0,2]}}", 2, "dimension 1", "the string \"2\"");
        assertRejected("{\"w\":{\"dtype\":\"U8\",\"shape\":[18446744073709551614],\"data_offsets\":[0,1]}}", 1, "fits in 63 bits");
    }

    @Test
    void rejectsAnElementCountThatOverflows() throws IOException {
        assertRejected("{\"test\":{\"dtype\":\"I32\",\"shape\":[2,9223372036854775807],\"data_offsets\":[0,16]}}", 16,
                "tensor 'test'", "overflow");
        assertRejected("{\"test\":{\"dtype\":\"I32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,16]}}", 16, "overflow");
    }

    @Test
    void rejectsMalformedDataOffsets() throws IOException {
        assertRejected("{\"w\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1, "tensor 'w'", "\"data_offsets\"", "nothing");
        assertRejected("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 1, "two integers", "an array of 1");
        assertRejected("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 1, "an array of 3");
        assertRejected("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":{\"a\":0}}}", 1, "an object");
        assertRejected("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1.0]}}", 1, "end", "integer");
        assertRejected("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}", 1, "begin", "-1");
    }

    @Test
    void rejectsOffsetsThatEndBeforeTheyBegin() throws IOException {
        assertRejected("{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[1,0]}}", 1, "tensor 'w'", "[1, 0]", "ends before");
    }

    @Test
    void rejectsOffsetsOutsideTheDataSection() throws IOException {
        byte[] full = file(I32_2X2, 16);
        assertRejected(java.util.Arrays.copyOf(full, full.length - 2), "tensor 'test'", "[0, 16]", "14 bytes", "truncated");
    }

    @Test
    void rejectsAByteLengthThatDoesNotMatchTheShape() throws IOException {
        assertRejected("{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,4]}}", 4,
                "tensor 'test'", "span 4 bytes", "I32[2, 2] needs 16 bytes");
    }

    @Test
    void rejectsOverlappingTensors() throws IOException {
        StringBuilder h = new StringBuilder("{");
        for (int i = 0; i < 3; i++) {
            if (i > 0) h.append(',');
            h.append("\"weight_").append(i).append("\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}");
        }
        assertRejected(h.append('}').toString(), 16, "overlaps");
    }

    @Test
    void rejectsHolesBetweenTensors() throws IOException {
        String h = "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                + "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[3,5]}}";
        assertRejected(h, 5, "bytes [2, 3)", "belong to no tensor", "'b'");
        assertRejected("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3]}}", 3, "bytes [0, 1)");
    }

    @Test
    void rejectsBytesAfterTheLastTensor() throws IOException {
        byte[] polyglot = concat(file(I32_2X2, 16), "extra_bogus_data_for_polyglot_file".getBytes(StandardCharsets.US_ASCII));
        assertRejected(polyglot, "trailing", "34");
    }

    @Test
    void rejectsMetadataThatIsNotAMapOfStrings() throws IOException {
        assertRejected("{\"__metadata__\":[\"pt\"]}", 0, "\"__metadata__\" must be an object", "an array");
        assertRejected("{\"__metadata__\":{\"format\":\"pt\",\"step\":3}}", 0, "'step'", "must be a string", "the number 3");
    }

    @Test
    void reportsUnknownTensorNamesWithTheFile() throws IOException {
        Path p = write(file(I32_2X2, 16));
        try (var f = SafetensorsFile.open(p)) {
            assertThatThrownBy(() -> f.info("nope")).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContainingAll("'nope'", p.toString(), "'test'");
        }
    }

    @Test
    void refusesADirectoryAndAMissingFile() {
        assertThatThrownBy(() -> SafetensorsFile.open(dir)).isInstanceOf(SafetensorsFormatException.class)
                .hasMessageContaining("not a regular file");
        assertThatThrownBy(() -> SafetensorsFile.open(dir.resolve("missing.safetensors")))
                .isInstanceOf(java.nio.file.NoSuchFileException.class)
                .hasMessageContaining("missing.safetensors");
    }
}
