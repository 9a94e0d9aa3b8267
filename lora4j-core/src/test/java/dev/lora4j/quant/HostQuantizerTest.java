package dev.lora4j.quant;

import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Half;
import org.junit.jupiter.api.Test;

import java.util.SplittableRandom;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** bitsandbytes' quantize_4bit / dequantize_4bit on crafted and random weights. */
class HostQuantizerTest {
    private static final QuantSpec NF4_64 = new QuantSpec(QuantType.NF4, 64, false, DType.F32);
    private static final QuantSpec FP4_64 = new QuantSpec(QuantType.FP4, 64, false, DType.F32);

    /** A block whose values are the given codes' values times {@code absmax} (the first is ±absmax). */
    private static float[] valuesOfCodes(QuantType type, int[] codes, float absmax) {
        float[] v = new float[codes.length];
        for (int i = 0; i < codes.length; i++) v[i] = type.code(codes[i]) * absmax;
        return v;
    }

    @Test
    void elementTwoJGoesInTheHighNibbleOfByteJ() {
        int[] codes = new int[64];
        for (int i = 0; i < 64; i++) codes[i] = (i * 7 + 3) % 16;
        codes[0] = 15; // 1.0: sets the absmax
        float[] values = valuesOfCodes(QuantType.NF4, codes, 0.5f);
        QuantizedArrays q = HostQuantizer.quantize(values, NF4_64);
        assertThat(q.absmax()).containsExactly(0.5f);
        for (int j = 0; j < 32; j++) {
            assertThat(q.packed()[j] & 0xFF).as("byte %d", j).isEqualTo(codes[2 * j] << 4 | codes[2 * j + 1]);
        }
        assertThat(q.packed()[0] & 0xFF).isEqualTo(0xF0 | codes[1]);
    }

    @Test
    void eachBlockIsScaledByItsOwnAbsmaxAndTheLastBlockMayBeShorter() {
        SplittableRandom random = new SplittableRandom(1);
        float[] values = new float[64 * 3 + 10];
        for (int i = 0; i < values.length; i++) values[i] = (float) random.nextGaussian();
        values[5] = 9f;
        values[64 + 63] = -12f;
        values[128] = 0.125f;
        for (int i = 129; i < 192; i++) values[i] = 0.001f;
        values[195] = -4f; // the 10-element tail block
        for (QuantSpec spec : new QuantSpec[] {NF4_64, FP4_64}) {
            QuantizedArrays q = HostQuantizer.quantize(values, spec);
            float[] expectedAbsmax = {9f, 12f, 0.125f, 4f};
            assertThat(q.absmax()).containsExactly(expectedAbsmax);
            for (int i = 0; i < values.length; i++) {
                float scale = 1.0f / expectedAbsmax[i / 64];
                assertThat(q.code(i)).as("%s element %d", spec.type(), i).isEqualTo(FourBitCodec.quantize(spec.type(), values[i] * scale));
            }
            // ±absmax times 1/absmax is ±1 to within an ulp: the extreme codes
            assertThat(q.code(5)).isEqualTo(spec.type() == QuantType.NF4 ? 15 : 0b0011);
            assertThat(q.code(127)).isEqualTo(spec.type() == QuantType.NF4 ? 0 : 0b1011);
        }
    }

    @Test
    void anOddElementCountCodesAZeroAfterTheEndInTheLastLowNibble() {
        float[] values = {1f, -1f, 0.5f};
        QuantizedArrays nf4 = HostQuantizer.quantize(values, NF4_64);
        assertThat(nf4.packed()).hasSize(2);
        assertThat(nf4.packed()[1] & 0x0F).as("NF4 zero is code 7").isEqualTo(7);
        assertThat(nf4.packed()[1] & 0xF0).isEqualTo(FourBitCodec.quantizeNf4(0.5f) << 4);
        QuantizedArrays fp4 = HostQuantizer.quantize(values, FP4_64);
        assertThat(fp4.packed()[1] & 0x0F).as("FP4 zero is code 0").isZero();
        assertThat(HostQuantizer.dequantize(nf4, DType.F32)).hasSize(3);
    }

    @Test
    void aBlockOfZerosHasAbsmaxZeroAndCodeZeroAndDequantizesToZero() {
        float[] values = new float[129]; // two blocks of zeros and a tail of one zero
        values[64] = 0f;
        QuantizedArrays nf4 = HostQuantizer.quantize(values, NF4_64);
        assertThat(nf4.absmax()).containsExactly(0f, 0f, 0f);
        for (byte b : nf4.packed()) assertThat(b).isZero(); // 0 * (1/0) = NaN: the trees' code 0
        float[] back = HostQuantizer.dequantize(nf4, DType.BF16);
        for (float v : back) {
            assertThat(v).isZero();
            assertThat(Float.floatToRawIntBits(v)).as("NF4 code 0 is -1.0: -1 * 0 = -0.0").isEqualTo(0x80000000);
        }
        QuantizedArrays fp4 = HostQuantizer.quantize(values, FP4_64);
        for (float v : HostQuantizer.dequantize(fp4, DType.F32)) assertThat(Float.floatToRawIntBits(v)).isZero();
    }

    @Test
    void zerosInsideANonZeroBlockTakeTheZeroCode() {
        float[] values = new float[64];
        values[0] = 2f;
        QuantizedArrays q = HostQuantizer.quantize(values, NF4_64);
        for (int i = 1; i < 64; i++) assertThat(q.code(i)).isEqualTo(7);
        assertThat(HostQuantizer.dequantize(q, DType.F32)[1]).isZero();
    }

    @Test
    void doubleQuantizationStoresTheAbsmaxMinusTheirMeanAsEightBitCodesOfTheSignedDynamicMap() {
        // 600 blocks of 64: three nested blocks of 256, 256 and 88
        int blocks = 600;
        float[] values = new float[blocks * 64];
        SplittableRandom random = new SplittableRandom(8);
        float[] absmax = new float[blocks];
        for (int b = 0; b < blocks; b++) {
            absmax[b] = (float) (0.01 + random.nextDouble() * 0.1);
            for (int i = 0; i < 64; i++) values[b * 64 + i] = (float) ((random.nextDouble() * 2 - 1) * absmax[b]);
            values[b * 64 + random.nextInt(64)] = random.nextBoolean() ? absmax[b] : -absmax[b];
        }
        QuantSpec spec = new QuantSpec(QuantType.NF4, 64, true, DType.BF16);
        QuantizedArrays q = HostQuantizer.quantize(values, spec);
        assertThat(q.absmax()).isNull();

        double sum = 0;
        for (float a : absmax) sum += a;
        float offset = (float) (sum / blocks);
        assertThat(q.nestedOffset()).isEqualTo(offset).isEqualTo(HostQuantizer.nestedOffset(absmax));
        assertThat(q.nestedCode()).containsExactly(DynamicMap.signed());
        assertThat(q.nestedAbsmax()).hasSize(3);
        for (int nb = 0; nb < 3; nb++) {
            float max = 0;
            for (int b = nb * 256; b < Math.min(blocks, nb * 256 + 256); b++) max = Math.max(max, Math.abs(absmax[b] - offset));
            assertThat(q.nestedAbsmax()[nb]).as("nested block %d", nb).isEqualTo(max);
        }
        float[] map = DynamicMap.signed();
        for (int b = 0; b < blocks; b++) {
            float scale = 1.0f / q.nestedAbsmax()[b / 256];
            assertThat(q.absmaxCodes()[b] & 0xFF).as("absmax code %d", b)
                    .isEqualTo(Blockwise8bit.nearestCode(map, (absmax[b] - offset) * scale));
            float dequantized = map[q.absmaxCodes()[b] & 0xFF] * q.nestedAbsmax()[b / 256] + offset;
            assertThat(q.blockAbsmax(b)).isEqualTo(dequantized);
        }
        // the 4-bit codes are those of the exact absmax, whatever happens to the absmax afterwards
        QuantizedArrays plain = HostQuantizer.quantize(values, new QuantSpec(QuantType.NF4, 64, false, DType.BF16));
        assertThat(q.packed()).containsExactly(plain.packed());
    }

    @Test
    void theNestedOffsetIsTheDoublePrecisionMeanRoundedOnceToFloat() {
        assertThat(HostQuantizer.nestedOffset(new float[] {1f, 2f, 4f})).isEqualTo((float) (7.0 / 3));
        // a float32 running sum would lose the small terms: 1 + 2^-24 + 2^-24 = 1 in float, not in double
        float tiny = 0x1p-24f;
        assertThat(HostQuantizer.nestedOffset(new float[] {1f, tiny, tiny}))
                .isEqualTo((float) ((1.0 + 0x1p-23) / 3));
        assertThatThrownBy(() -> HostQuantizer.nestedOffset(new float[0])).isInstanceOf(IllegalArgumentException.class);
    }

    @Test
    void allAbsmaxEqualMakesANestedBlockOfZerosThatStillDequantizesToTheAbsmax() {
        float[] values = new float[64 * 10];
        for (int i = 0; i < values.length; i++) values[i] = i % 64 == 0 ? 0.5f : 0.1f;
        QuantizedArrays q = HostQuantizer.quantize(values, new QuantSpec(QuantType.NF4, 64, true, DType.BF16));
        assertThat(q.nestedOffset()).isEqualTo(0.5f);
        assertThat(q.nestedAbsmax()).containsExactly(0f);
        for (int b = 0; b < 10; b++) {
            assertThat(q.absmaxCodes()[b]).isZero();
            assertThat(q.blockAbsmax(b)).isEqualTo(0.5f);
        }
    }

    @Test
    void dequantizationIsTheCodeValueTimesTheAbsmaxRoundedToNearestEven() {
        SplittableRandom random = new SplittableRandom(5);
        float[] values = new float[1000];
        for (int i = 0; i < values.length; i++) values[i] = (float) random.nextGaussian() * 3;
        for (QuantSpec spec : new QuantSpec[] {NF4_64, FP4_64, new QuantSpec(QuantType.NF4, 128, true, DType.BF16)}) {
            QuantizedArrays q = HostQuantizer.quantize(values, spec);
            float[] f32 = HostQuantizer.dequantize(q, DType.F32);
            float[] bf16 = HostQuantizer.dequantize(q, DType.BF16);
            float[] f16 = HostQuantizer.dequantize(q, DType.F16);
            for (int i = 0; i < values.length; i++) {
                float exact = spec.type().code(q.code(i)) * q.blockAbsmax(i / spec.blockSize());
                assertThat(f32[i]).isEqualTo(exact);
                assertThat(bf16[i]).isEqualTo(nearestEvenBf16(exact));
                assertThat(f16[i]).isEqualTo(Half.f16ToFloat(Half.floatToF16(exact)));
            }
            float[] part = new float[300];
            HostQuantizer.dequantize(q, 101, 300, DType.BF16, part, 0);
            for (int i = 0; i < 300; i++) assertThat(part[i]).isEqualTo(bf16[101 + i]);
        }
    }

    /** An independent round-to-nearest-even to bfloat16: the nearer of the two neighbours, the even one on a tie. */
    private static float nearestEvenBf16(float v) {
        int bits = Float.floatToRawIntBits(v);
        float down = Float.intBitsToFloat(bits & 0xFFFF0000);
        float up = Float.intBitsToFloat((bits & 0xFFFF0000) + 0x10000);
        double dDown = Math.abs((double) v - down), dUp = Math.abs((double) up - v);
        if (dDown < dUp) return down;
        if (dUp < dDown) return up;
        return ((bits >>> 16) & 1) == 0 ? down : up;
    }

    @Test
    void theMatmulWeightRoundsToTheOriginalDtypeThenToTheComputeDtype() {
        // 1 + 2^-8 + 2^-12: above the BF16 midpoint 1 + 2^-8, but F16 (ulp 2^-10) rounds it onto that midpoint
        float v = 1f + 0x1p-8f + 0x1p-12f;
        assertThat(HostQuantizer.matmulValue(v, DType.F32, DType.BF16)).isEqualTo(1f + 0x1p-7f);
        assertThat(HostQuantizer.matmulValue(v, DType.BF16, DType.BF16)).isEqualTo(1f + 0x1p-7f);
        assertThat(HostQuantizer.matmulValue(v, DType.BF16, DType.F32)).as("bitsandbytes dequantizes to the original dtype first")
                .isEqualTo(1f + 0x1p-7f);
        assertThat(HostQuantizer.matmulValue(v, DType.F32, DType.F32)).isEqualTo(v);
        assertThat(HostQuantizer.matmulValue(v, DType.F16, DType.BF16)).as("F16 then a tie in BF16, to even").isEqualTo(1f);
    }

    /** Normalized values are within half the largest code gap of their code, so the error is at most that times absmax. */
    @Test
    void dequantizationErrorOnNormalWeightsIsBoundedByHalfTheLargestCodeGap() {
        SplittableRandom random = new SplittableRandom(12);
        float[] values = new float[64 * 1000 + 17];
        for (int i = 0; i < values.length; i++) values[i] = (float) (random.nextGaussian() * 0.02);
        for (QuantType type : QuantType.values()) {
            float[] sorted = type.codes();
            java.util.Arrays.sort(sorted);
            double halfGap = 0;
            for (int i = 1; i < 16; i++) halfGap = Math.max(halfGap, (sorted[i] - sorted[i - 1]) / 2.0);
            for (int blockSize : new int[] {64, 256, 4096}) {
                QuantizedArrays q = HostQuantizer.quantize(values, new QuantSpec(type, blockSize, false, DType.F32));
                float[] back = HostQuantizer.dequantize(q, DType.F32);
                double worst = 0, sumSq = 0;
                for (int i = 0; i < values.length; i++) {
                    double err = Math.abs(back[i] - values[i]);
                    // the float thresholds are the midpoints to within 1e-7, the scale to within an ulp
                    double bound = q.absmax()[i / blockSize] * (halfGap + 3e-7);
                    assertThat(err).as("%s block %d element %d", type, blockSize, i).isLessThanOrEqualTo(bound);
                    worst = Math.max(worst, err / q.absmax()[i / blockSize]);
                    sumSq += err * err;
                }
                // the codes are used: typical errors are far below the bound (NF4 rms ≈ 0.1 of the weight std)
                double rms = Math.sqrt(sumSq / values.length);
                assertThat(rms).as("%s rms error", type).isLessThan(type == QuantType.NF4 ? 0.0035 : 0.0045);
                assertThat(worst).isGreaterThan(halfGap * 0.5);
            }
        }
    }

    @Test
    void doubleQuantizedErrorAddsAtMostTheAbsmaxError() {
        SplittableRandom random = new SplittableRandom(13);
        float[] values = new float[64 * 3000];
        for (int i = 0; i < values.length; i++) values[i] = (float) (random.nextGaussian() * (0.01 + (i / 64 % 7) * 0.01));
        QuantizedArrays plain = HostQuantizer.quantize(values, new QuantSpec(QuantType.NF4, 64, false, DType.F32));
        QuantizedArrays dq = HostQuantizer.quantize(values, new QuantSpec(QuantType.NF4, 64, true, DType.F32));
        float[] map = DynamicMap.signed();
        double mapHalfGap = 0;
        for (int i = 1; i < 256; i++) mapHalfGap = Math.max(mapHalfGap, (map[i] - map[i - 1]) / 2.0);
        for (int b = 0; b < plain.blocks(); b++) {
            double absmaxError = Math.abs(dq.blockAbsmax(b) - plain.absmax()[b]);
            assertThat(absmaxError).isLessThanOrEqualTo(dq.nestedAbsmax()[b / 256] * mapHalfGap * (1 + 1e-5) + 4 * Math.ulp(plain.absmax()[b]));
        }
        float[] back = HostQuantizer.dequantize(dq, DType.F32);
        for (int i = 0; i < values.length; i++) {
            int b = i / 64;
            // NF4's largest gap is between -1 and -0.6961928
            double bound = plain.absmax()[b] * (0.5 * (1 - 0.6961928009986877) + 3e-7) + Math.abs(dq.blockAbsmax(b) - plain.absmax()[b]);
            assertThat((double) Math.abs(back[i] - values[i])).isLessThanOrEqualTo(bound * (1 + 1e-6));
        }
    }

    /** FP4 code 8 is -0.0, which codes as +0.0 (x < 0 is false): the one code that does not come back. */
    private static int requantizedCode(QuantType type, int code) {
        return type == QuantType.FP4 && code == 8 ? 0 : code;
    }

    @Test
    void quantizingTheDequantizedWeightGivesTheSameCodesAndAbsmax() {
        SplittableRandom random = new SplittableRandom(14);
        float[] values = new float[64 * 50 + 33];
        for (int i = 0; i < values.length; i++) values[i] = (float) (random.nextGaussian() * 0.05);
        for (int i = 64; i < 128; i++) values[i] = 0f;
        values[300] = -1e-6f; // FP4 code 8: -0.0
        for (QuantType type : QuantType.values()) {
            for (int blockSize : new int[] {64, 1024}) {
                QuantSpec spec = new QuantSpec(type, blockSize, false, DType.F32);
                QuantizedArrays once = HostQuantizer.quantize(values, spec);
                float[] dequantized = HostQuantizer.dequantize(once, DType.F32);
                QuantizedArrays twice = HostQuantizer.quantize(dequantized, spec);
                for (int i = 0; i < values.length + 1; i++) { // + the padding nibble
                    assertThat(twice.code(i)).as("%s block %d element %d", type, blockSize, i)
                            .isEqualTo(requantizedCode(type, once.code(i)));
                }
                assertThat(twice.absmax()).containsExactly(once.absmax());
                float[] again = HostQuantizer.dequantize(twice, DType.F32);
                for (int i = 0; i < values.length; i++) assertThat(again[i] == dequantized[i]).as("element %d", i).isTrue();
            }
            // with double quantization the 4-bit codes are still a fixed point (the absmax moves by its own error)
            QuantSpec dqSpec = new QuantSpec(type, 64, true, DType.F32);
            QuantizedArrays once = HostQuantizer.quantize(values, dqSpec);
            QuantizedArrays twice = HostQuantizer.quantize(HostQuantizer.dequantize(once, DType.F32), dqSpec);
            for (int i = 0; i < values.length; i++) {
                if (i / 64 == 1) continue; // the zero block: its absmax no longer dequantizes to exactly 0
                assertThat(twice.code(i)).as("%s dq element %d", type, i).isEqualTo(requantizedCode(type, once.code(i)));
            }
        }
        assertThat(HostQuantizer.quantize(values, FP4_64).code(300)).isEqualTo(8);
    }

    @Test
    void nonFiniteValuesAreRejectedNamingTheTensorAndElement() {
        float[] values = new float[200];
        values[137] = Float.NaN;
        assertThatThrownBy(() -> HostQuantizer.quantize(values, NF4_64, "model.layers.3.mlp.up_proj.weight"))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("model.layers.3.mlp.up_proj.weight").hasMessageContaining("element 137").hasMessageContaining("NaN");
        values[137] = 0f;
        values[3] = Float.NEGATIVE_INFINITY;
        assertThatThrownBy(() -> HostQuantizer.quantize(values, FP4_64)).hasMessageContaining("element 3").hasMessageContaining("Infinity");
        assertThatThrownBy(() -> HostQuantizer.quantize(new float[0], NF4_64)).hasMessageContaining("no elements");
    }

    @Test
    void largeWeightsQuantizedInParallelMatchBlockByBlockQuantization() {
        SplittableRandom random = new SplittableRandom(15);
        float[] values = new float[64 * 5000 + 63];
        for (int i = 0; i < values.length; i++) values[i] = (float) random.nextGaussian();
        QuantizedArrays q = HostQuantizer.quantize(values, NF4_64);
        byte[] packed = new byte[(values.length + 1) / 2];
        float[] absmax = new float[q.blocks()];
        for (int b = 0; b < q.blocks(); b++) assertThat(HostQuantizer.quantizeBlocks(NF4_64, values, b, b + 1, packed, absmax)).isTrue();
        assertThat(q.packed()).containsExactly(packed);
        assertThat(q.absmax()).containsExactly(absmax);
    }

    @Test
    void specsOutsideWhatBitsandbytesAcceptsAreRejected() {
        for (int blockSize : new int[] {0, 32, 63, 100, 8192}) {
            assertThatThrownBy(() -> new QuantSpec(QuantType.NF4, blockSize, true, DType.BF16))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("block size");
        }
        assertThatThrownBy(() -> new QuantSpec(QuantType.NF4, 64, true, DType.I32)).hasMessageContaining("compute dtype");
        assertThatThrownBy(() -> new QuantSpec(null, 64, true, DType.BF16)).isInstanceOf(NullPointerException.class);
        assertThatThrownBy(() -> QuantType.parse("int4")).hasMessageContaining("nf4 or fp4");
        assertThat(QuantType.parse(" NF4 ")).isEqualTo(QuantType.NF4);
        assertThatThrownBy(() -> HostQuantizer.dequantize(HostQuantizer.quantize(new float[] {1f}, NF4_64), DType.I8))
                .hasMessageContaining("F32, BF16 or F16");
    }
}
