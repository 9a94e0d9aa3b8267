package dev.lora4j.backend;

import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The dropout hash pinned to values computed independently (tools/dropout_hash_values.py, Python integers): every
 * backend's kernel must draw exactly these numbers.
 */
class DropoutHashTest {

    @Test
    void mixIsSplitMix64sFinaliserOverSeedPlusIndexTimesTheGoldenGamma() {
        assertThat(DropoutHash.mix(0, 0)).isEqualTo(0xe220a8397b1dcdafL); // SplitMix64's first output for seed 0
        assertThat(DropoutHash.mix(0, 1)).isEqualTo(0x6e789e6aa1b965f4L);
        assertThat(DropoutHash.mix(42, 0)).isEqualTo(0xbdd732262feb6e95L);
        assertThat(DropoutHash.mix(42, 12345)).isEqualTo(0xbe5663aa0035cbd7L);
        assertThat(DropoutHash.mix(-1, 7)).isEqualTo(0x405da438a39e8064L);
        assertThat(DropoutHash.mix(1234567890123L, 1L << 33)).isEqualTo(0xe7f169dff2e3015dL);
    }

    @Test
    void uniformIsTheTop24BitsOfTheMixTimesTwoToTheMinus24() {
        assertThat(DropoutHash.uniform(0, 0)).isEqualTo(14819496 * 0x1p-24f).isEqualTo(0.8833107948303223f);
        assertThat(DropoutHash.uniform(0, 1)).isEqualTo(7239838 * 0x1p-24f);
        assertThat(DropoutHash.uniform(42, 0)).isEqualTo(12441394 * 0x1p-24f);
        assertThat(DropoutHash.uniform(42, 12345)).isEqualTo(12473955 * 0x1p-24f);
        assertThat(DropoutHash.uniform(-1, 7)).isEqualTo(4218276 * 0x1p-24f);
        assertThat(DropoutHash.uniform(1234567890123L, 1L << 33)).isEqualTo(15200617 * 0x1p-24f);
    }

    @Test
    void uniformStaysInTheUnitIntervalAndIsEvenlySpread() {
        int[] buckets = new int[10];
        int draws = 100_000;
        for (int i = 0; i < draws; i++) {
            float u = DropoutHash.uniform(99, i);
            assertThat(u).isGreaterThanOrEqualTo(0f).isLessThan(1f);
            buckets[(int) (u * 10)]++;
        }
        for (int b : buckets) assertThat(b).isBetween(draws / 10 - 600, draws / 10 + 600); // about 6 standard deviations
    }
}
