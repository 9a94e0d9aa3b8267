package dev.lora4j.io;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

class MappedPagesTest {
    @TempDir
    Path dir;

    private static final int SIZE = 64 * 4096 + 123;

    private Path file() throws IOException {
        byte[] bytes = new byte[SIZE];
        for (int i = 0; i < SIZE; i++) bytes[i] = (byte) (i * 31 + 7);
        return Files.write(dir.resolve("data.bin"), bytes);
    }

    @Test
    void releasedPagesOfAFileMappingStillReadTheFilesBytes() throws IOException {
        assumeTrue(MappedPages.supported(), "madvise is available on Linux only");
        try (Arena arena = Arena.ofConfined(); FileChannel ch = FileChannel.open(file(), StandardOpenOption.READ)) {
            MemorySegment map = ch.map(FileChannel.MapMode.READ_ONLY, 0, SIZE, arena).asReadOnly();
            long sum = checksum(map);
            long released = MappedPages.release(map.asSlice(100, SIZE - 200));
            // Only whole pages strictly inside the slice: the first and last partial pages stay.
            assertThat(released).isEqualTo(63L * 4096); // pages 1..63 of 65
            assertThat(checksum(map)).isEqualTo(sum);
        }
    }

    @Test
    void aSliceWithinOnePageGivesNothingBack() throws IOException {
        assumeTrue(MappedPages.supported(), "madvise is available on Linux only");
        try (Arena arena = Arena.ofConfined(); FileChannel ch = FileChannel.open(file(), StandardOpenOption.READ)) {
            MemorySegment map = ch.map(FileChannel.MapMode.READ_ONLY, 0, SIZE, arena);
            assertThat(MappedPages.release(map.asSlice(10, 4000))).isZero();
        }
    }

    @Test
    void anonymousMemoryIsNeverTouched() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment mem = arena.allocate(16 * 4096, 4096);
            mem.fill((byte) 5);
            assertThat(MappedPages.release(mem)).isZero();
            assertThat(mem.get(ValueLayout.JAVA_BYTE, 8 * 4096)).isEqualTo((byte) 5);
        }
    }

    private static long checksum(MemorySegment m) {
        long s = 0;
        for (long i = 0; i < m.byteSize(); i++) s = s * 31 + m.get(ValueLayout.JAVA_BYTE, i);
        return s;
    }
}
