package dev.lora4j.backend;

import org.junit.jupiter.api.Test;

import java.util.SplittableRandom;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

/**
 * The dropout hash pinned to values computed independently (tools/dropout_hash_values.py, Python integers): every
 * backend's kernel must draw exactly these numbers. The statistical checks use fixed seeds, so they pass or fail
 * the same way every run; their bounds are about six standard deviations.
 */
class DropoutHashTest {
    private static final int DRAWS = 1 << 20;

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
    void elementsTwoJAndTwoJPlusOneDrawTheTopAndTheNext24BitsOfOneMix() {
        assertThat(DropoutHash.bits(0, 0)).isEqualTo(14819496).isEqualTo((int) (0xe220a8397b1dcdafL >>> 40));
        assertThat(DropoutHash.bits(0, 1)).isEqualTo(3767069).isEqualTo(0x397b1d);
        assertThat(DropoutHash.bits(0, 2)).isEqualTo(7239838);
        assertThat(DropoutHash.bits(0, 3)).isEqualTo(6988217);
        assertThat(DropoutHash.bits(42, 24690)).isEqualTo(12473955);
        assertThat(DropoutHash.bits(42, 24691)).isEqualTo(11141173);
        assertThat(DropoutHash.bits(-1, 14)).isEqualTo(4218276);
        assertThat(DropoutHash.bits(-1, 15)).isEqualTo(3711902);
        assertThat(DropoutHash.bits(1234567890123L, 1L << 34)).isEqualTo(15200617);
        assertThat(DropoutHash.bits(1234567890123L, (1L << 34) + 1)).isEqualTo(14676707);
    }

    @Test
    void uniformIsTheDrawTimesTwoToTheMinus24() {
        assertThat(DropoutHash.uniform(0, 0)).isEqualTo(14819496 * 0x1p-24f).isEqualTo(0.8833107948303223f);
        assertThat(DropoutHash.uniform(0, 1)).isEqualTo(3767069 * 0x1p-24f).isEqualTo(0.224534809589386f);
        assertThat(DropoutHash.uniform(-1, 15)).isEqualTo(3711902 * 0x1p-24f);
    }

    @Test
    void uniformStaysInTheUnitIntervalAndIsEvenlySpreadForEvenAndOddElements() {
        for (int parity = 0; parity < 2; parity++) {
            int[] buckets = new int[64];
            int draws = DRAWS / 2;
            for (int i = 0; i < draws; i++) {
                float u = DropoutHash.uniform(99, 2L * i + parity);
                assertThat(u).isGreaterThanOrEqualTo(0f).isLessThan(1f);
                buckets[(int) (u * buckets.length)]++;
            }
            assertThat(chiSquare(buckets, draws)).as("parity " + parity).isLessThan(bound(buckets.length - 1));
        }
    }

    @Test
    void aFractionPIsDropped() {
        for (float p : new float[] {0.05f, 0.1f, 0.5f}) {
            int threshold = DropoutHash.dropThreshold(p);
            long dropped = 0;
            for (long i = 0; i < DRAWS; i++) if (DropoutHash.bits(7, i) < threshold) dropped++;
            double sd = Math.sqrt(DRAWS * p * (1 - p));
            assertThat((double) dropped).as("p " + p).isCloseTo(DRAWS * (double) p, within(6 * sd));
        }
    }

    @Test
    void neighbouringElementsAreIndependentWithinAndAcrossPairs() {
        // Joint 16 x 16 histograms of (u(i), u(i+1)): i even (one mix) and i odd (two mixes).
        for (int start = 0; start < 2; start++) {
            int[] cells = new int[256];
            int pairs = DRAWS / 2;
            for (int q = 0; q < pairs; q++) {
                long i = 2L * q + start;
                cells[cell(DropoutHash.uniform(5, i), DropoutHash.uniform(5, i + 1))]++;
            }
            assertThat(chiSquare(cells, pairs)).as("elements 2j+" + start + " and 2j+" + (start + 1)).isLessThan(bound(255));
            assertThat(Math.abs(correlation(5, start, 5, start + 1, pairs))).isLessThan(6 / Math.sqrt(pairs));
        }
    }

    @Test
    void masksOfDifferentSeedsAreIndependent() {
        // Consecutive seeds, and the seeds of two adapters of one batch as the model derives them.
        long batch = 1234;
        long[][] seedPairs = {{0, 1}, {41, 42}, {DropoutHash.mix(batch, 0), DropoutHash.mix(batch, 1)},
                {DropoutHash.mix(batch, 3), DropoutHash.mix(batch, 10)}};
        int n = DRAWS / 2;
        for (long[] s : seedPairs) {
            int[] cells = new int[256];
            for (long i = 0; i < n; i++) cells[cell(DropoutHash.uniform(s[0], i), DropoutHash.uniform(s[1], i))]++;
            assertThat(chiSquare(cells, n)).as("seeds %d and %d", s[0], s[1]).isLessThan(bound(255));
            assertThat(Math.abs(correlation(s[0], 0, s[1], 0, n))).isLessThan(6 / Math.sqrt(n));
        }
    }

    @Test
    void theDropThresholdDropsExactlyTheDrawsWhoseUniformIsBelowP() {
        SplittableRandom random = new SplittableRandom(3);
        float[] fixed = {0f, 1f, 0x1p-24f, Math.nextUp(0x1p-24f), Math.nextDown(0x1p-24f), 0.05f, 0.1f, 0.5f,
                Math.nextDown(1f), 3 * 0x1p-24f + 0x1p-30f};
        for (int c = 0; c < 10_000; c++) {
            float p = c < fixed.length ? fixed[c] : (float) random.nextDouble();
            int threshold = DropoutHash.dropThreshold(p);
            assertThat(threshold).isBetween(0, 1 << 24);
            for (int b : new int[] {threshold - 2, threshold - 1, threshold, threshold + 1, random.nextInt(1 << 24)}) {
                if (b < 0 || b >= 1 << 24) continue;
                assertThat(b < threshold).as("draw %d at p %s", b, p).isEqualTo(b * 0x1p-24f < p);
            }
        }
        assertThat(DropoutHash.dropThreshold(0f)).isZero();
        assertThat(DropoutHash.dropThreshold(1f)).isEqualTo(1 << 24); // every draw is below it
    }

    @Test
    void theDropThresholdRejectsAProbabilityOutsideTheUnitInterval() {
        for (float p : new float[] {-0.1f, 1.5f, Float.NaN}) {
            assertThatThrownBy(() -> DropoutHash.dropThreshold(p)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("dropout").hasMessageContaining(String.valueOf(p));
        }
    }

    private static int cell(float u, float v) {
        return (int) (u * 16) * 16 + (int) (v * 16);
    }

    private static double chiSquare(int[] counts, long total) {
        double expected = (double) total / counts.length, chi = 0;
        for (int c : counts) chi += (c - expected) * (c - expected) / expected;
        return chi;
    }

    /** Six standard deviations above the mean of a chi-square with this many degrees of freedom. */
    private static double bound(int degrees) {
        return degrees + 6 * Math.sqrt(2.0 * degrees);
    }

    /** The Pearson correlation of u(seedA, startA + 2q) and u(seedB, startB + 2q) over q in [0, n). */
    private static double correlation(long seedA, long startA, long seedB, long startB, int n) {
        double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
        for (long q = 0; q < n; q++) {
            double a = DropoutHash.uniform(seedA, startA + 2 * q), b = DropoutHash.uniform(seedB, startB + 2 * q);
            sa += a;
            sb += b;
            saa += a * a;
            sbb += b * b;
            sab += a * b;
        }
        double cov = sab / n - sa / n * sb / n;
        return cov / Math.sqrt((saa / n - sa * sa / n / n) * (sbb / n - sb * sb / n / n));
    }
}
