package dev.lora4j.quant;

import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * bitsandbytes' dynamic 8-bit map, value by value. The signed list in the resources is the table as published from
 * a torch run (a pure-torch NF4 reimplementation prints it); the unsigned one comes from tools/bnb_dynamic_map.py's
 * float32 emulation of torch (the same script compares both with torch itself on a machine that has it).
 */
class DynamicMapTest {

    private static float[] expected(String resource) throws IOException {
        try (InputStream in = DynamicMapTest.class.getResourceAsStream(resource)) {
            List<String> lines = new String(in.readAllBytes(), StandardCharsets.US_ASCII).lines()
                    .filter(l -> !l.isBlank() && !l.startsWith("#")).toList();
            float[] values = new float[lines.size()];
            for (int i = 0; i < values.length; i++) values[i] = Float.intBitsToFloat(Integer.parseUnsignedInt(lines.get(i).trim(), 16));
            return values;
        }
    }

    private static void assertSameBits(float[] actual, float[] expected, String what) {
        assertThat(actual).hasSize(256);
        assertThat(expected).hasSize(256);
        for (int i = 0; i < 256; i++) {
            assertThat(Float.floatToRawIntBits(actual[i])).as("%s[%d] = %s, expected %s", what, i, actual[i], expected[i])
                    .isEqualTo(Float.floatToRawIntBits(expected[i]));
        }
    }

    @Test
    void signedMapIsTorchsFloat32TableBitForBit() throws IOException {
        assertSameBits(DynamicMap.signed(), expected("dynamic-map-signed.txt"), "signed");
    }

    @Test
    void unsignedMapIsTorchsFloat32TableBitForBit() throws IOException {
        assertSameBits(DynamicMap.unsigned(), expected("dynamic-map-unsigned.txt"), "unsigned");
    }

    @Test
    void signedMapRunsFromMinusToPlusOneAroundAnExactZeroAndIsSymmetricBelowOne() {
        float[] m = DynamicMap.signed();
        assertThat(m[0]).isEqualTo(-0.99296875f);
        assertThat(m[127]).isEqualTo(0f);
        assertThat(m[254]).isEqualTo(0.99296875f);
        assertThat(m[255]).isEqualTo(1.0f);
        for (int i = 0; i < 127; i++) assertThat(m[i]).as("mirror of %d", i).isEqualTo(-m[254 - i]);
        for (int i = 1; i < 256; i++) assertThat(m[i]).isGreaterThan(m[i - 1]);
        // the smallest non-zero magnitude: 1e-6 times the mean of 0.1 and 1
        assertThat(m[128]).isEqualTo(1e-6f * ((0.1f + 1f) / 2));
    }

    @Test
    void unsignedMapRunsFromZeroToOne() {
        float[] m = DynamicMap.unsigned();
        assertThat(m[0]).isEqualTo(0f);
        assertThat(m[255]).isEqualTo(1.0f);
        for (int i = 1; i < 256; i++) assertThat(m[i]).isGreaterThan(m[i - 1]);
    }

    /** torch's linspace: each point one fused multiply-add from the nearer end, so the ends are exact. */
    @Test
    void linspaceComputesEachPointWithOneRoundingFromTheNearerEnd() {
        float[] b = DynamicMap.linspace(0.1f, 1.0f, 65);
        float step = (1.0f - 0.1f) / 64f;
        assertThat(b[0]).isEqualTo(0.1f);
        assertThat(b[64]).isEqualTo(1.0f);
        for (int j = 0; j < 65; j++) {
            double exact = j < 32 ? 0.1f + (double) step * j : 1.0 - (double) step * (64 - j);
            assertThat(b[j]).as("point %d", j).isEqualTo((float) exact); // one rounding of the exact value
        }
    }

    @Test
    void callersGetCopies() {
        float[] m = DynamicMap.signed();
        m[0] = 42f;
        assertThat(DynamicMap.signed()[0]).isEqualTo(-0.99296875f);
    }
}
