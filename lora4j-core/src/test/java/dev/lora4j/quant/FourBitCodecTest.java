package dev.lora4j.quant;

import org.junit.jupiter.api.Test;

import java.util.SplittableRandom;

import static org.assertj.core.api.Assertions.assertThat;

/** The 4-bit codes of bitsandbytes: their 16 values, and how a normalized value picks one. */
class FourBitCodecTest {

    /** nf4_dequantization_lut in bitsandbytes' csrc/kernels.cu, as written there. */
    private static final float[] BNB_NF4 = {
            -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
            -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
            0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
            0.7229568362236023f, 1.0f};

    /** fp4_dequantization_lut in csrc/kernels.cu, indexed by the 3 low bits; bit 3 is the sign. */
    private static final float[] BNB_FP4_MAGNITUDES = {
            0.0f, 0.005208333333f, 0.66666667f, 1.0f, 0.33333333f, 0.5f, 0.16666667f, 0.25f};

    @Test
    void nf4ValuesAreBitsandbytesTableBitForBit() {
        for (int i = 0; i < 16; i++) {
            assertThat(Float.floatToRawIntBits(QuantType.NF4.code(i))).as("NF4 code %d", i)
                    .isEqualTo(Float.floatToRawIntBits(BNB_NF4[i]));
        }
    }

    @Test
    void fp4ValuesAreBitsandbytesTableWithTheSignBitOfDDequantizeFP4Tree() {
        for (int i = 0; i < 16; i++) {
            float sign = 1.0f - 2 * ((i & 0b1000) >> 3); // dDequantizeFP4Tree: code 8 is -0.0
            float expected = BNB_FP4_MAGNITUDES[i & 0b111] * sign;
            assertThat(Float.floatToRawIntBits(QuantType.FP4.code(i))).as("FP4 code %d", i)
                    .isEqualTo(Float.floatToRawIntBits(expected));
        }
        // the quant_map bitsandbytes stores (get_4bit_type("fp4"): the table divided by 12 in float32) is the same
        float[] table = {0, 0.0625f, 8, 12, 4, 6, 2, 3};
        for (int i = 0; i < 8; i++) assertThat(QuantType.FP4.code(i)).isEqualTo(table[i] / 12f);
    }

    @Test
    void everyCodeValueIsCodedAsItself() {
        for (QuantType type : QuantType.values()) {
            for (int i = 0; i < 16; i++) {
                if (type == QuantType.FP4 && i == 8) continue; // -0.0 is not below 0: it codes as +0.0, code 0
                assertThat(FourBitCodec.quantize(type, type.code(i))).as("%s code %d", type, i).isEqualTo(i);
            }
        }
        assertThat(FourBitCodec.quantizeFp4(-0.0f)).isZero();
        assertThat(FourBitCodec.quantizeFp4(-1e-30f)).as("a tiny negative value keeps its sign").isEqualTo(8);
    }

    @Test
    void nf4ThresholdsAreTheMidpointsOfNeighbouringCodes() {
        float[] t = FourBitCodec.thresholds(QuantType.NF4);
        assertThat(t).hasSize(15);
        for (int i = 0; i < 15; i++) {
            double midpoint = ((double) BNB_NF4[i] + BNB_NF4[i + 1]) / 2;
            assertThat((double) t[i]).as("threshold %d", i).isCloseTo(midpoint, org.assertj.core.data.Offset.offset(1e-7));
        }
    }

    @Test
    void aValueExactlyOnAThresholdTakesTheLowerCodeAndTheNextFloatUpTheHigher() {
        float[] nf4 = FourBitCodec.thresholds(QuantType.NF4);
        for (int i = 0; i < nf4.length; i++) {
            assertThat(FourBitCodec.quantizeNf4(nf4[i])).as("on NF4 threshold %d", i).isEqualTo(i);
            assertThat(FourBitCodec.quantizeNf4(Math.nextUp(nf4[i]))).as("just above NF4 threshold %d", i).isEqualTo(i + 1);
            assertThat(FourBitCodec.quantizeNf4(Math.nextDown(nf4[i]))).as("just below NF4 threshold %d", i).isEqualTo(i);
        }
        float[] fp4 = FourBitCodec.thresholds(QuantType.FP4);
        int[] order = FourBitCodec.fp4MagnitudeOrder();
        for (int i = 0; i < fp4.length; i++) {
            assertThat(FourBitCodec.quantizeFp4(fp4[i])).as("on FP4 threshold %d", i).isEqualTo(order[i]);
            assertThat(FourBitCodec.quantizeFp4(Math.nextUp(fp4[i]))).isEqualTo(order[i + 1]);
            assertThat(FourBitCodec.quantizeFp4(-fp4[i])).as("on the negative threshold").isEqualTo(order[i] | 8);
            assertThat(FourBitCodec.quantizeFp4(-Math.nextUp(fp4[i]))).isEqualTo(order[i + 1] | 8);
        }
    }

    /** quantize() counts thresholds without branching; it must give the trees' code for every float. */
    @Test
    void theBranchFreeCoderGivesTheTreesCodeEverywhere() {
        java.util.List<Float> probes = new java.util.ArrayList<>(java.util.List.of(0f, -0f, Float.NaN, Float.POSITIVE_INFINITY,
                Float.NEGATIVE_INFINITY, Float.MIN_VALUE, -Float.MIN_VALUE, 1f, -1f, Float.MAX_VALUE));
        for (QuantType type : QuantType.values()) {
            for (float t : FourBitCodec.thresholds(type)) {
                for (float v : new float[] {t, Math.nextUp(t), Math.nextDown(t)}) {
                    probes.add(v);
                    probes.add(-v);
                }
            }
        }
        SplittableRandom random = new SplittableRandom(9);
        for (int i = 0; i < 100_000; i++) probes.add(Float.intBitsToFloat(random.nextInt()));
        for (float x : probes) {
            assertThat(FourBitCodec.quantize(QuantType.NF4, x)).as("NF4 %s", x).isEqualTo(FourBitCodec.quantizeNf4(x));
            assertThat(FourBitCodec.quantize(QuantType.FP4, x)).as("FP4 %s", x).isEqualTo(FourBitCodec.quantizeFp4(x));
        }
    }

    @Test
    void nanTakesCodeZeroAsInBitsandbytes() {
        assertThat(FourBitCodec.quantizeNf4(Float.NaN)).isZero();
        assertThat(FourBitCodec.quantizeFp4(Float.NaN)).isZero();
        assertThat(FourBitCodec.quantize(QuantType.NF4, Float.NaN)).isZero();
        assertThat(FourBitCodec.quantize(QuantType.FP4, Float.NaN)).isZero();
    }

    @Test
    void valuesOutsideMinusOneToOneTakeTheEndCodes() {
        assertThat(FourBitCodec.quantizeNf4(1.5f)).isEqualTo(15);
        assertThat(FourBitCodec.quantizeNf4(-7f)).isZero();
        assertThat(FourBitCodec.quantizeFp4(3f)).isEqualTo(0b0011);
        assertThat(FourBitCodec.quantizeFp4(-3f)).isEqualTo(0b1011);
    }

    /** The decision trees are binary searches: the code is the count of thresholds strictly below the value. */
    @Test
    void theTreesCountTheThresholdsBelowTheValueAndPickTheNearestCode() {
        float[] nf4 = FourBitCodec.thresholds(QuantType.NF4), fp4 = FourBitCodec.thresholds(QuantType.FP4);
        int[] order = FourBitCodec.fp4MagnitudeOrder();
        SplittableRandom random = new SplittableRandom(3);
        for (int n = 0; n < 200_000; n++) {
            float x = (float) (random.nextDouble() * 2.2 - 1.1);
            int below = 0;
            while (below < nf4.length && nf4[below] < x) below++;
            assertThat(FourBitCodec.quantizeNf4(x)).isEqualTo(below);
            int mag = 0;
            while (mag < fp4.length && fp4[mag] < Math.abs(x)) mag++;
            assertThat(FourBitCodec.quantizeFp4(x)).isEqualTo(order[mag] | (x < 0 ? 8 : 0));
            for (QuantType type : QuantType.values()) {
                float chosen = Math.abs(x - type.code(FourBitCodec.quantize(type, x)));
                for (int c = 0; c < 16; c++) {
                    // the float thresholds are midpoints to within 1e-7
                    assertThat(chosen).as("%s: %s is nearest", type, x).isLessThanOrEqualTo(Math.abs(x - type.code(c)) + 2e-7f);
                }
            }
        }
    }
}
