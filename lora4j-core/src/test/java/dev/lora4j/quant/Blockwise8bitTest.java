package dev.lora4j.quant;

import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** bitsandbytes' 8-bit blockwise quantization (quantize_blockwise with dQuantize) with a 256-value map. */
class Blockwise8bitTest {
    private static final float[] SIGNED = DynamicMap.signed();
    private static final float[] UNSIGNED = DynamicMap.unsigned();

    @Test
    void everyCodeValueMapsToItsOwnIndex() {
        for (float[] code : new float[][] {SIGNED, UNSIGNED}) {
            for (int i = 0; i < 256; i++) {
                if (code == UNSIGNED && i == 0) continue;
                assertThat(Blockwise8bit.nearestCode(code, code[i])).as("code[%d]", i).isEqualTo(i);
            }
        }
        assertThat(Blockwise8bit.nearestCode(UNSIGNED, 0f)).isZero();
    }

    /**
     * The search always ends on an even index, and a value on the float midpoint {@code (a + b) * 0.5f} of two
     * neighbours keeps that final candidate: exact midpoints go to the even index.
     */
    @Test
    void aValueExactlyMidwayBetweenTwoCodesTakesTheEvenIndex() {
        for (float[] code : new float[][] {SIGNED, UNSIGNED}) {
            for (int i = 0; i < 255; i++) {
                float midpoint = (code[i] + code[i + 1]) * 0.5f;
                int even = i % 2 == 0 ? i : i + 1;
                assertThat(Blockwise8bit.nearestCode(code, midpoint)).as("midway between %d and %d", i, i + 1).isEqualTo(even);
                if (Math.nextUp(midpoint) < code[i + 1]) {
                    assertThat(Blockwise8bit.nearestCode(code, Math.nextUp(midpoint))).isEqualTo(i + 1);
                }
                if (Math.nextDown(midpoint) > code[i]) {
                    assertThat(Blockwise8bit.nearestCode(code, Math.nextDown(midpoint))).isEqualTo(i);
                }
            }
        }
    }

    @Test
    void otherValuesTakeTheNearestCodeAndTheEndsClamp() {
        SplittableRandom random = new SplittableRandom(11);
        for (int n = 0; n < 100_000; n++) {
            float x = (float) (random.nextDouble() * 2 - 1);
            if (n % 3 == 0) x *= (float) Math.pow(10, -random.nextInt(7)); // the dense region near zero
            int q = Blockwise8bit.nearestCode(SIGNED, x);
            double chosen = Math.abs((double) x - SIGNED[q]);
            for (int c = 0; c < 256; c++) {
                // nearest up to the rounding of the float midpoint
                assertThat(chosen).as("%s -> %d", x, q).isLessThanOrEqualTo(Math.abs((double) x - SIGNED[c]) + Math.ulp(x));
            }
        }
        assertThat(Blockwise8bit.nearestCode(SIGNED, -5f)).isZero();
        assertThat(Blockwise8bit.nearestCode(SIGNED, 5f)).isEqualTo(255);
        assertThat(Blockwise8bit.nearestCode(SIGNED, Float.NaN)).isZero();
    }

    @Test
    void eachBlockHasItsAbsmaxAndTheShortLastBlockItsOwn() {
        float[] in = new float[300];
        SplittableRandom random = new SplittableRandom(2);
        for (int i = 0; i < in.length; i++) in[i] = (float) (random.nextDouble() - 0.5);
        in[17] = -3f;   // block 0
        in[140] = 2.5f; // block 1
        in[299] = -0.75f; // block 2: 300 - 256 = 44 values
        for (int i = 256; i < 299; i++) in[i] = 0.25f;
        byte[] q = new byte[300];
        float[] absmax = new float[3];
        Blockwise8bit.quantize(SIGNED, 128, in, 0, 300, q, 0, absmax, 0);
        assertThat(absmax).containsExactly(3f, 2.5f, 0.75f);
        assertThat(q[17] & 0xFF).as("-absmax is -1 * 1/absmax, the lowest code").isZero();
        assertThat(q[140] & 0xFF).isEqualTo(255);
        for (int i = 0; i < 300; i++) {
            float a = absmax[i / 128];
            assertThat(q[i] & 0xFF).isEqualTo(Blockwise8bit.nearestCode(SIGNED, in[i] * (1.0f / a)));
        }
    }

    @Test
    void dequantizationMultipliesTheCodeValueByItsBlocksAbsmax() {
        byte[] q = {0, (byte) 127, (byte) 255, (byte) 200, 5};
        float[] absmax = {2f, 0.5f};
        float[] out = new float[5];
        Blockwise8bit.dequantize(SIGNED, 3, q, 0, 5, absmax, 0, out, 0);
        assertThat(out).containsExactly(SIGNED[0] * 2f, 0f, 2f, SIGNED[200] * 0.5f, SIGNED[5] * 0.5f);
    }

    @Test
    void aBlockOfZerosHasAbsmaxZeroAndCodeZeroAsInBitsandbytes() {
        float[] in = new float[64];
        byte[] q = new byte[64];
        float[] absmax = {7f};
        Blockwise8bit.quantize(SIGNED, 64, in, 0, 64, q, 0, absmax, 0);
        assertThat(absmax[0]).isZero();
        for (byte b : q) assertThat(b).isZero(); // 0 * (1/0) is NaN, which the search sends to index 0
        float[] out = new float[64];
        Blockwise8bit.dequantize(SIGNED, 64, q, 0, 64, absmax, 0, out, 0);
        for (float v : out) assertThat(v).isZero();
    }

    @Test
    void roundTripErrorIsAtMostHalfTheLargestGapTimesTheAbsmax() {
        SplittableRandom random = new SplittableRandom(4);
        int n = 5000, block = 256;
        float[] in = new float[n];
        for (int i = 0; i < n; i++) in[i] = (float) (random.nextGaussian() * 0.02);
        byte[] q = new byte[n];
        float[] absmax = new float[Blockwise8bit.blocks(n, block)];
        Blockwise8bit.quantize(SIGNED, block, in, 0, n, q, 0, absmax, 0);
        float[] out = new float[n];
        Blockwise8bit.dequantize(SIGNED, block, q, 0, n, absmax, 0, out, 0);
        double gap = 0;
        for (int i = 1; i < 256; i++) gap = Math.max(gap, SIGNED[i] - SIGNED[i - 1]);
        for (int i = 0; i < n; i++) {
            assertThat((double) Math.abs(out[i] - in[i])).isLessThanOrEqualTo(absmax[i / block] * (gap / 2) * (1 + 1e-5));
        }
    }

    @Test
    void slicesAtOffsetsAndNativeMemoryGiveTheSameCodes() {
        SplittableRandom random = new SplittableRandom(6);
        int n = 700, block = 256;
        float[] in = new float[n + 5];
        for (int i = 0; i < in.length; i++) in[i] = (float) random.nextGaussian();
        byte[] direct = new byte[n];
        float[] directAbsmax = new float[3];
        float[] slice = new float[n];
        System.arraycopy(in, 5, slice, 0, n);
        Blockwise8bit.quantize(UNSIGNED, block, abs(slice), 0, n, direct, 0, directAbsmax, 0);

        byte[] offsetCodes = new byte[n + 9];
        float[] offsetAbsmax = new float[4];
        Blockwise8bit.quantize(UNSIGNED, block, abs(in), 5, n, offsetCodes, 9, offsetAbsmax, 1);
        for (int i = 0; i < n; i++) assertThat(offsetCodes[9 + i]).isEqualTo(direct[i]);
        assertThat(new float[] {offsetAbsmax[1], offsetAbsmax[2], offsetAbsmax[3]}).containsExactly(directAbsmax);

        try (Arena arena = Arena.ofConfined()) {
            MemorySegment values = arena.allocateFrom(ValueLayout.JAVA_FLOAT, abs(slice));
            MemorySegment codes = arena.allocate(n);
            MemorySegment absmax = arena.allocate(3 * 4L);
            Blockwise8bit.quantize(UNSIGNED, block, values, 0, n, codes, 0, absmax, 0);
            assertThat(codes.toArray(ValueLayout.JAVA_BYTE)).containsExactly(direct);
            assertThat(absmax.toArray(ValueLayout.JAVA_FLOAT)).containsExactly(directAbsmax);
            MemorySegment back = arena.allocate(n * 4L);
            Blockwise8bit.dequantize(UNSIGNED, block, codes, 0, n, absmax, 0, back, 0);
            float[] expected = new float[n];
            Blockwise8bit.dequantize(UNSIGNED, block, direct, 0, n, directAbsmax, 0, expected, 0);
            assertThat(back.toArray(ValueLayout.JAVA_FLOAT)).containsExactly(expected);
        }
    }

    @Test
    void badArgumentsAreRejected() {
        assertThatThrownBy(() -> Blockwise8bit.quantize(new float[16], 64, new float[4], 0, 4, new byte[4], 0, new float[1], 0))
                .hasMessageContaining("256 values");
        assertThatThrownBy(() -> Blockwise8bit.quantize(SIGNED, 0, new float[4], 0, 4, new byte[4], 0, new float[1], 0))
                .hasMessageContaining("block size");
        assertThatThrownBy(() -> Blockwise8bit.quantize(SIGNED, 2, new float[4], 0, 4, new byte[4], 0, new float[1], 0))
                .isInstanceOf(IndexOutOfBoundsException.class);
    }

    private static float[] abs(float[] v) {
        float[] a = new float[v.length];
        for (int i = 0; i < v.length; i++) a[i] = Math.abs(v[i]);
        return a;
    }
}
