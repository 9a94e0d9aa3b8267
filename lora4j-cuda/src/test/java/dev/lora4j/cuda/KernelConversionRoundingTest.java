package dev.lora4j.cuda;

import dev.lora4j.tensor.Half;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The kernels convert between float, bfloat16 and half with the functions in src/main/cuda/common.cuh. Those
 * functions also compile for the host, so this test builds them with the machine's C++ compiler and checks them,
 * without a GPU, against {@link Half} (the CPU backend's conversions): every 16-bit pattern, and millions of floats
 * chosen to sit on and beside every rounding boundary.
 */
class KernelConversionRoundingTest {
    private static Path harness;

    @BeforeAll
    static void buildHarness() throws Exception {
        Path cudaSources = Path.of("src", "main", "cuda").toAbsolutePath();
        Path source = Path.of("src", "test", "cuda", "conversion_harness.cpp").toAbsolutePath();
        assumeTrue(Files.isRegularFile(cudaSources.resolve("common.cuh")) && Files.isRegularFile(source),
                "the CUDA sources are not here (run from the lora4j-cuda module folder)");
        String compiler = findCompiler();
        assumeTrue(compiler != null, "no C++ compiler (c++, g++ or clang++) on the PATH to build the conversion harness");
        Path out = Files.createDirectories(Path.of("target", "conversion-harness")).resolve("conversion_harness");
        Process p = new ProcessBuilder(compiler, "-O2", "-std=c++17", "-I" + cudaSources, source.toString(), "-o",
                out.toString()).redirectErrorStream(true).start();
        String log = new String(p.getInputStream().readAllBytes());
        assertThat(p.waitFor()).as("compiling the conversion harness:\n" + log).isZero();
        harness = out;
    }

    @Test
    void halfAndBfloat16DecodeToTheSameFloatsAsJavaForEveryBitPattern() throws Exception {
        ByteBuffer out = run(new int[0]);
        for (int h = 0; h < 65536; h++) {
            int f16 = out.getInt(), bf16 = out.getInt();
            float wantF16 = Half.f16ToFloat((short) h);
            if (Float.isNaN(wantF16)) {
                assertThat(Float.isNaN(Float.intBitsToFloat(f16)) && (f16 >>> 31) == (h >>> 15))
                        .as("f16 0x%04x decodes to a NaN of the same sign", h).isTrue();
            } else {
                assertThat(f16).as("f16 0x%04x", h).isEqualTo(Float.floatToRawIntBits(wantF16));
            }
            assertThat(bf16).as("bf16 0x%04x", h).isEqualTo(Float.floatToRawIntBits(Half.bf16ToFloat((short) h)));
        }
    }

    @Test
    void floatsRoundToBfloat16AndHalfExactlyAsJavaDoes() throws Exception {
        int[] floats = boundaryFloats();
        ByteBuffer out = run(floats);
        out.position(65536 * 8);
        int mismatches = 0;
        List<String> examples = new ArrayList<>();
        for (int bits : floats) {
            short bf16 = out.getShort(), f16 = out.getShort();
            float f = Float.intBitsToFloat(bits);
            boolean ok = bf16 == Half.floatToBf16(f);
            short wantF16 = Half.floatToF16(f);
            if (Float.isNaN(f)) {
                // The JIT may use the CPU's conversion instruction for NaNs; require a NaN of the same sign.
                ok &= (f16 & 0x7c00) == 0x7c00 && (f16 & 0x3ff) != 0 && ((f16 >>> 15) & 1) == (bits >>> 31);
            } else {
                ok &= f16 == wantF16;
            }
            if (!ok && mismatches++ < 5) {
                examples.add(String.format("0x%08x (%s): bf16 0x%04x want 0x%04x, f16 0x%04x want 0x%04x", bits, f,
                        bf16 & 0xffff, Half.floatToBf16(f) & 0xffff, f16 & 0xffff, wantF16 & 0xffff));
            }
        }
        assertThat(examples).as(mismatches + " of " + floats.length + " floats round differently").isEmpty();
    }

    @Test
    void quietNanAndInfinitiesKeepTheirJavaEncodings() throws Exception {
        int[] floats = {0x7fc00000, 0xffc00000, 0x7f800000, 0xff800000, Float.floatToRawIntBits(65520f),
                Float.floatToRawIntBits(65519.996f), Float.floatToRawIntBits(-0f)};
        ByteBuffer out = run(floats);
        out.position(65536 * 8);
        short[] want = {0x7fc0, 0x7e00, (short) 0xffc0, (short) 0xfe00, 0x7f80, 0x7c00, (short) 0xff80, (short) 0xfc00,
                0x4780, 0x7c00, 0x4780, 0x7bff, (short) 0x8000, (short) 0x8000};
        for (int i = 0; i < want.length; i++) {
            assertThat(out.getShort()).as("output %d for 0x%08x", i, floats[i / 2]).isEqualTo(want[i]);
        }
    }

    private static int[] boundaryFloats() {
        int[] lows = {0x0000, 0x0001, 0x0fff, 0x1000, 0x1001, 0x2000, 0x3000, 0x4000, 0x6000, 0x7fff, 0x8000, 0x8001,
                0xc000, 0xffff};
        int[] out = new int[65536 * lows.length + 1_000_000];
        int n = 0;
        for (int hi = 0; hi < 65536; hi++) {
            for (int lo : lows) out[n++] = (hi << 16) | lo;
        }
        Random r = new Random(42);
        while (n < out.length) out[n++] = r.nextInt();
        return out;
    }

    private static ByteBuffer run(int[] floats) throws Exception {
        Process p = new ProcessBuilder(harness.toString()).start();
        CompletableFuture<Void> writer = CompletableFuture.runAsync(() -> {
            try (OutputStream in = p.getOutputStream()) {
                ByteBuffer b = ByteBuffer.allocate(floats.length * 4).order(ByteOrder.LITTLE_ENDIAN);
                b.asIntBuffer().put(floats);
                in.write(b.array());
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        });
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try (InputStream out = p.getInputStream()) {
            out.transferTo(bytes);
        }
        writer.get(60, TimeUnit.SECONDS);
        assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
        assertThat(p.exitValue()).isZero();
        assertThat(bytes.size()).isEqualTo(65536 * 8 + floats.length * 4);
        return ByteBuffer.wrap(bytes.toByteArray()).order(ByteOrder.LITTLE_ENDIAN);
    }

    private static String findCompiler() {
        String path = System.getenv().getOrDefault("PATH", "");
        for (String name : List.of("c++", "g++", "clang++")) {
            for (String dir : path.split(":")) {
                if (!dir.isEmpty() && Files.isExecutable(Path.of(dir, name))) return Path.of(dir, name).toString();
            }
        }
        return null;
    }
}
