package dev.lora4j.io;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** Files and tensors past 2 GiB map and read like small ones (the test file is sparse: no 3 GiB written). */
class SafetensorsLargeFileTest {

    @TempDir
    Path dir;

    @Test
    void mapsATensorThatStartsAndEndsBeyondTwoGibibytes() throws IOException {
        long small = (2L << 30) + 16; // pushes the second tensor past the 2 GiB mark
        long big = (1L << 30) + 8;
        String header = "{\"pad\":{\"dtype\":\"U8\",\"shape\":[" + small + "],\"data_offsets\":[0," + small + "]},"
                + "\"big\":{\"dtype\":\"F32\",\"shape\":[" + big / 4 + "],\"data_offsets\":[" + small + "," + (small + big) + "]}}";
        byte[] h = header.getBytes(StandardCharsets.US_ASCII);
        Path p = dir.resolve("large.safetensors");
        long dataStart = 8 + h.length;
        try (RandomAccessFile f = new RandomAccessFile(p.toFile(), "rw")) {
            f.write(RawSafetensors.le64(h.length));
            f.write(h);
            f.setLength(dataStart + small + big);
            f.seek(dataStart + small);
            f.write(new byte[]{0, 0, (byte) 0x80, 0x3f}); // 1.0f, first element of "big"
            f.seek(dataStart + small + big - 4);
            f.write(new byte[]{0, 0, 0, (byte) 0xc0}); // -2.0f, last element
        } catch (IOException e) {
            assumeTrue(false, "the temporary folder cannot hold a 3 GiB sparse file: " + e.getMessage());
        }
        try (var f = SafetensorsFile.open(p)) {
            MemorySegment data = f.data("big");
            assertThat(data.byteSize()).isEqualTo(big);
            var le = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(java.nio.ByteOrder.LITTLE_ENDIAN);
            assertThat(data.get(le, 0)).isEqualTo(1.0f);
            assertThat(data.get(le, big - 4)).isEqualTo(-2.0f);
            assertThat(f.info("pad").byteLength()).isEqualTo(small);
        }
    }
}
