package dev.lora4j.io;

import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Random;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.fail;

/**
 * Damaged files never get past {@link SafetensorsFile#open}: each mutation of a valid file either still describes
 * tensors that lie wholly inside the file, or is rejected with a {@link SafetensorsFormatException}. Nothing else
 * may escape (no JSON, arithmetic, index or memory-access exception). Most cases are validated from memory (the
 * same code that checks a mapped file) to keep the test fast; every tenth goes through a real file.
 */
class SafetensorsFuzzTest {

    private static final long SEED = 20240611L;
    private static final int CASES = 10_000;

    private static final String[] NUMBERS = {"0", "1", "-1", "2", "7", "8", "16", "24", "4294967296",
            "9223372036854775807", "9223372036854775808", "18446744073709551615", "1e3", "1.5", "-0", "1E400",
            "00", "null", "true", "\"16\"", "[]", "{}", "[0,0]"};
    private static final String[] STRINGS = {"\"F32\"", "\"BF16\"", "\"U8\"", "\"BOOL\"", "\"F64\"", "\"F8_E4M3\"",
            "\"C64\"", "\"\"", "\"__metadata__\"", "\"dtype\"", "\"shape\"", "\"data_offsets\"", "null", "1", "[\"a\"]",
            "\"\\u0000\"", "\"\\ud800\""};
    private static final byte[] INTERESTING = "{}[]\":,0123456789-.eE \\nul".getBytes(StandardCharsets.US_ASCII);

    @TempDir
    Path dir;

    private final List<byte[]> seeds = new ArrayList<>();

    @BeforeEach
    void buildValidFiles() throws IOException {
        Random r = new Random(1);
        byte[] a = new byte[6 * 4];
        r.nextBytes(a);
        byte[] b = new byte[3 * 2];
        r.nextBytes(b);
        seeds.add(written(new SafetensorsWriter().metadata("format", "pt")
                .add("model.embed_tokens.weight", DType.F32, new long[]{2, 3}, MemorySegment.ofArray(a))
                .add("model.norm.weight", DType.BF16, new long[]{3}, MemorySegment.ofArray(b))
                .add("lm_head.bias", DType.U8, new long[]{5}, MemorySegment.ofArray(new byte[]{1, 2, 3, 4, 5}))));
        seeds.add(written(new SafetensorsWriter()
                .add("empty", DType.I64, new long[]{0, 3}, MemorySegment.ofArray(new byte[0]))
                .add("scalar", DType.I32, new long[]{}, MemorySegment.ofArray(new byte[4]))
                .add("flag", DType.BOOL, new long[]{1, 1}, MemorySegment.ofArray(new byte[]{1}))));
        seeds.add(RawSafetensors.file("{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16));
        seeds.add(written(new SafetensorsWriter()));
    }

    private byte[] written(SafetensorsWriter w) throws IOException {
        Path p = dir.resolve("seed.safetensors");
        w.writeTo(p);
        return Files.readAllBytes(p);
    }

    @Test
    void theUnmutatedFilesAreValid() throws IOException {
        for (byte[] s : seeds) assertThat(check(s, "seed", true)).isTrue();
    }

    @Test
    void mutatedFilesAreEitherSoundOrRejectedWithAFormatError() throws IOException {
        Random r = new Random(SEED);
        int accepted = 0;
        for (int c = 0; c < CASES; c++) {
            byte[] bytes = seeds.get(r.nextInt(seeds.size())).clone();
            StringBuilder what = new StringBuilder();
            int mutations = 1 + r.nextInt(3);
            for (int m = 0; m < mutations; m++) bytes = mutate(bytes, r, what);
            if (check(bytes, "case " + c + " (seed " + SEED + "):" + what, c % 10 == 0)) accepted++;
        }
        // Some mutations (a metadata value, a tensor name, a swapped pair of shape digits) keep a file valid.
        assertThat(accepted).isBetween(1, CASES - 1);
    }

    @Test
    void everyTruncationOfAValidFileIsRejected() throws IOException {
        for (byte[] seed : seeds) {
            for (int length = 0; length < seed.length; length++) {
                Path p = RawSafetensors.write(dir, "cut.safetensors", Arrays.copyOf(seed, length));
                assertThatThrownBy(() -> SafetensorsFile.open(p).close())
                        .as("truncated to %d of %d bytes", length, seed.length)
                        .isInstanceOf(SafetensorsFormatException.class)
                        .hasMessageContaining(p.toString());
            }
        }
    }

    /** @return whether the file was accepted (and then proven sound) */
    private boolean check(byte[] bytes, String description, boolean throughAFile) throws IOException {
        Path p = throughAFile ? RawSafetensors.write(dir, "fuzz.safetensors", bytes) : dir.resolve("in-memory.safetensors");
        SafetensorsFile f;
        try {
            f = throughAFile ? SafetensorsFile.open(p)
                    : SafetensorsFile.read(p, MemorySegment.ofArray(bytes), java.lang.foreign.Arena.ofConfined());
        } catch (SafetensorsFormatException e) {
            if (!e.getMessage().contains(p.toString())) fail("error does not name the file, " + description + ": " + e.getMessage());
            return false;
        } catch (Throwable t) {
            throw new AssertionError("unexpected " + t + " for " + description + "\n" + HexFormat.ofDelimiter(" ").formatHex(bytes), t);
        }
        try (f) {
            long headerLength = ByteBuffer.wrap(bytes, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
            long dataLength = bytes.length - 8 - headerLength;
            long covered = 0;
            for (String name : f.names()) {
                TensorInfo t = f.info(name);
                assertThat(t.dataBegin()).as(description).isBetween(0L, t.dataEnd());
                assertThat(t.dataEnd()).as(description).isLessThanOrEqualTo(dataLength);
                assertThat(t.byteLength()).as(description).isEqualTo(t.numel() * t.dtype().byteSize());
                MemorySegment data = f.data(name);
                assertThat(data.byteSize()).isEqualTo(t.byteLength());
                byte[] read = data.toArray(ValueLayout.JAVA_BYTE);
                assertThat(read).isEqualTo(Arrays.copyOfRange(bytes, (int) (8 + headerLength + t.dataBegin()),
                        (int) (8 + headerLength + t.dataEnd())));
                covered += t.byteLength();
            }
            assertThat(covered).as("tensors tile the data section: " + description).isEqualTo(dataLength);
        }
        return true;
    }

    private static byte[] mutate(byte[] b, Random r, StringBuilder what) {
        int headerEnd = (int) Math.min(b.length, 8 + Math.max(0, Math.min(Integer.MAX_VALUE, headerLength(b))));
        int strategy = r.nextInt(8);
        what.append(' ').append(strategy);
        switch (strategy) {
            case 0 -> { // flip one bit anywhere in the prefix or header
                if (headerEnd == 0) return b;
                int i = r.nextInt(headerEnd);
                b[i] ^= (byte) (1 << r.nextInt(8));
                return b;
            }
            case 1 -> { // an interesting character somewhere in the header
                if (headerEnd <= 8) return b;
                b[8 + r.nextInt(headerEnd - 8)] = r.nextInt(10) == 0 ? (byte) 0xff : INTERESTING[r.nextInt(INTERESTING.length)];
                return b;
            }
            case 2 -> { // a number (shape or offset) replaced
                return replaceToken(b, headerEnd, Pattern.compile("-?\\d+"), r, () -> r.nextBoolean()
                        ? NUMBERS[r.nextInt(NUMBERS.length)] : Integer.toString(r.nextInt(40) - 4));
            }
            case 3 -> { // a string (dtype, key) replaced
                return replaceToken(b, headerEnd, Pattern.compile("\"[^\"]*\""), r, () -> STRINGS[r.nextInt(STRINGS.length)]);
            }
            case 4 -> { // the length prefix replaced
                long n = headerLength(b);
                long v = switch (r.nextInt(5)) {
                    case 0 -> n + r.nextInt(17) - 8;
                    case 1 -> r.nextLong();
                    case 2 -> 0;
                    case 3 -> 100_000_000L + r.nextInt(3) - 1;
                    default -> b.length - 8 + r.nextInt(5) - 2;
                };
                if (b.length < 8) return b;
                ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).putLong(0, v);
                return b;
            }
            case 5 -> { // truncated or extended
                return r.nextBoolean() ? Arrays.copyOf(b, r.nextInt(b.length + 1)) : Arrays.copyOf(b, b.length + 1 + r.nextInt(16));
            }
            case 6 -> { // a byte inserted into or deleted from the header, prefix kept or fixed
                if (headerEnd <= 8) return b;
                int at = 8 + r.nextInt(headerEnd - 8);
                byte[] out;
                if (r.nextBoolean()) {
                    out = new byte[b.length + 1];
                    System.arraycopy(b, 0, out, 0, at);
                    out[at] = INTERESTING[r.nextInt(INTERESTING.length)];
                    System.arraycopy(b, at, out, at + 1, b.length - at);
                } else {
                    out = new byte[b.length - 1];
                    System.arraycopy(b, 0, out, 0, at);
                    System.arraycopy(b, at + 1, out, at, b.length - at - 1);
                }
                if (r.nextBoolean()) setHeaderLength(out, headerLength(b) + (out.length - b.length));
                return out;
            }
            default -> { // two numbers swapped (offsets reordered, shapes transposed)
                String h = header(b, headerEnd);
                List<int[]> spans = spans(h, Pattern.compile("\\d+"));
                if (spans.size() < 2) return b;
                int[] x = spans.get(r.nextInt(spans.size()));
                int[] y = spans.get(r.nextInt(spans.size()));
                if (x[0] == y[0]) return b;
                int[] first = x[0] < y[0] ? x : y;
                int[] second = x[0] < y[0] ? y : x;
                String swapped = h.substring(0, first[0]) + h.substring(second[0], second[1]) + h.substring(first[1], second[0])
                        + h.substring(first[0], first[1]) + h.substring(second[1]);
                return withHeader(b, headerEnd, swapped, true);
            }
        }
    }

    private static byte[] replaceToken(byte[] b, int headerEnd, Pattern token, Random r, java.util.function.Supplier<String> replacement) {
        String h = header(b, headerEnd);
        List<int[]> spans = spans(h, token);
        if (spans.isEmpty()) return b;
        int[] s = spans.get(r.nextInt(spans.size()));
        String replaced = h.substring(0, s[0]) + replacement.get() + h.substring(s[1]);
        return withHeader(b, headerEnd, replaced, r.nextInt(10) < 8);
    }

    private static List<int[]> spans(String h, Pattern p) {
        List<int[]> out = new ArrayList<>();
        Matcher m = p.matcher(h);
        while (m.find()) out.add(new int[]{m.start(), m.end()});
        return out;
    }

    /** The header as ISO-8859-1, so that every byte maps to one char and back. */
    private static String header(byte[] b, int headerEnd) {
        return headerEnd <= 8 ? "" : new String(b, 8, headerEnd - 8, StandardCharsets.ISO_8859_1);
    }

    private static byte[] withHeader(byte[] b, int headerEnd, String header, boolean fixLength) {
        if (headerEnd < 8) return b;
        byte[] h = header.getBytes(StandardCharsets.ISO_8859_1);
        byte[] out = new byte[8 + h.length + (b.length - headerEnd)];
        System.arraycopy(b, 0, out, 0, 8);
        System.arraycopy(h, 0, out, 8, h.length);
        System.arraycopy(b, headerEnd, out, 8 + h.length, b.length - headerEnd);
        if (fixLength) setHeaderLength(out, h.length);
        return out;
    }

    private static long headerLength(byte[] b) {
        return b.length < 8 ? 0 : ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).getLong(0);
    }

    private static void setHeaderLength(byte[] b, long n) {
        if (b.length >= 8) ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN).putLong(0, n);
    }
}
