package dev.lora4j.model;

import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

class RopeFrequenciesTest {

    @Test
    void defaultFrequenciesArePowersOfThetaOverTheHeadDimension() {
        // head dim 8, theta 10000: 10000^(-0/8), 10000^(-2/8), 10000^(-4/8), 10000^(-6/8)
        float[] inv = RopeFrequencies.unscaled(8, 10000);
        assertThat(inv).hasSize(4);
        assertThat(inv[0]).isEqualTo(1f);
        assertThat(inv[1]).isCloseTo(0.1f, within(1e-8f));
        assertThat(inv[2]).isCloseTo(0.01f, within(1e-9f));
        assertThat(inv[3]).isCloseTo(0.001f, within(1e-10f));
    }

    @Test
    void defaultFrequenciesOfARealHeadDimensionAreWithinOneFloatRoundingOfTheExactValue() {
        float[] inv = RopeFrequencies.unscaled(128, 500000);
        for (int i = 0; i < inv.length; i++) {
            double exact = Math.pow(500000, -(2.0 * i) / 128);
            assertThat((double) inv[i]).as("i=" + i).isCloseTo(exact, within(3.0 * Math.ulp((float) exact)));
        }
    }

    @Test
    void linearScalingDividesEveryFrequencyByTheFactor() {
        float[] plain = RopeFrequencies.unscaled(16, 10000);
        float[] scaled = RopeFrequencies.linear(16, 10000, 4);
        for (int i = 0; i < plain.length; i++) assertThat(scaled[i]).isEqualTo(plain[i] / 4f);
    }

    @Test
    void llama3ScalingKeepsShortWavelengthsSlowsLongOnesAndBlendsTheBandBetween() {
        // Llama 3.1 settings: theta 500000, head dim 128, factor 8, low 1, high 4, original context 8192.
        // Wavelengths under 8192/4 = 2048 are kept, over 8192/1 = 8192 divided by 8, between blended.
        float[] plain = RopeFrequencies.unscaled(128, 500000);
        float[] scaled = RopeFrequencies.llama3(128, 500000, 8, 1, 4, 8192);
        int kept = 0, slowed = 0, blended = 0;
        for (int i = 0; i < plain.length; i++) {
            double wavelen = 2 * Math.PI / plain[i];
            if (wavelen < 2048) {
                assertThat(scaled[i]).as("i=" + i).isEqualTo(plain[i]);
                kept++;
            } else if (wavelen > 8192) {
                assertThat((double) scaled[i]).as("i=" + i).isCloseTo(plain[i] / 8.0, within(1e-6 * plain[i]));
                slowed++;
            } else {
                double smooth = (8192 / wavelen - 1) / (4 - 1);
                double expected = (1 - smooth) * plain[i] / 8 + smooth * plain[i];
                assertThat((double) scaled[i]).as("i=" + i).isCloseTo(expected, within(1e-6 * plain[i]));
                assertThat(scaled[i]).isBetween(plain[i] / 8, plain[i]);
                blended++;
            }
        }
        assertThat(kept).isPositive();
        assertThat(slowed).isPositive();
        assertThat(blended).isPositive();
    }

    @Test
    void llama3FrequenciesOfKnownIndicesMatchHandComputedValues() {
        float[] scaled = RopeFrequencies.llama3(128, 500000, 8, 1, 4, 8192);
        // i = 0: wavelength 2π, kept: 1.0
        assertThat(scaled[0]).isEqualTo(1f);
        // i = 63: 500000^(-126/128) = 2.4551e-6, wavelength 2.559e6 > 8192: divided by 8
        assertThat((double) scaled[63]).isCloseTo(Math.pow(500000, -126.0 / 128) / 8, within(1e-12));
        // i = 20: 500000^(-40/128) = 0.016560, wavelength 379.4 < 2048: kept
        assertThat((double) scaled[20]).isCloseTo(Math.pow(500000, -40.0 / 128), within(1e-9));
        // i = 30: 500000^(-60/128) = 0.0021311, wavelength 2948.3 between: smooth = (8192/2948.3 - 1)/3 = 0.59285
        double inv30 = Math.pow(500000, -60.0 / 128);
        double smooth = (8192 / (2 * Math.PI / inv30) - 1) / 3;
        assertThat(smooth).isCloseTo(0.59285, within(1e-4));
        assertThat((double) scaled[30]).isCloseTo((1 - smooth) * inv30 / 8 + smooth * inv30, within(1e-9));
    }

    @Test
    void unsupportedRopeTypesAreRejectedNamingTheField() {
        assertThatThrownBy(() -> RopeFrequencies.inverseFrequencies(64, new RopeFrequencies.Rope("yarn", 10000, 4, 0, 0, 0)))
                .hasMessageContaining("rope_scaling.rope_type 'yarn' is not supported");
        assertThatThrownBy(() -> RopeFrequencies.unscaled(7, 10000)).hasMessageContaining("even");
    }
}
