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
    void elementFourJPlusKDrawsBits16KTo16KPlus15OfTheGroupsMix() {
        assertThat(DropoutHash.bits(0, 0)).isEqualTo(52655).isEqualTo(0xcdaf); // mix(0, 0) = 0xe220a8397b1dcdaf
        assertThat(DropoutHash.bits(0, 1)).isEqualTo(31517).isEqualTo(0x7b1d);
        assertThat(DropoutHash.bits(0, 2)).isEqualTo(43065).isEqualTo(0xa839);
        assertThat(DropoutHash.bits(0, 3)).isEqualTo(57888).isEqualTo(0xe220);
        assertThat(DropoutHash.bits(0, 4)).isEqualTo(26100); // the next group: mix(0, 1)
        assertThat(DropoutHash.bits(42, 49380)).isEqualTo(52183);
        assertThat(DropoutHash.bits(42, 49381)).isEqualTo(53);
        assertThat(DropoutHash.bits(42, 49382)).isEqualTo(25514);
        assertThat(DropoutHash.bits(42, 49383)).isEqualTo(48726);
        assertThat(DropoutHash.bits(-1, 28)).isEqualTo(32868);
        assertThat(DropoutHash.bits(-1, 31)).isEqualTo(16477);
        assertThat(DropoutHash.bits(1234567890123L, 1L << 35)).isEqualTo(349);
        assertThat(DropoutHash.bits(1234567890123L, (1L << 35) + 3)).isEqualTo(59377);
        for (int k = 0; k < 4; k++) {
            assertThat(DropoutHash.draw(0xe220a8397b1dcdafL, k)).isEqualTo(DropoutHash.bits(0, k));
        }
    }

    @Test
    void uniformIsTheDrawTimesTwoToTheMinus16() {
        assertThat(DropoutHash.uniform(0, 0)).isEqualTo(52655 * 0x1p-16f).isEqualTo(0.8034515380859375f);
        assertThat(DropoutHash.uniform(42, 49381)).isEqualTo(53 * 0x1p-16f).isEqualTo(0.0008087158203125f);
        assertThat(DropoutHash.uniform(-1, 31)).isEqualTo(16477 * 0x1p-16f);
    }

    @Test
    void uniformStaysInTheUnitIntervalAndIsEvenlySpreadForEachPlaceInAGroup() {
        for (int place = 0; place < 4; place++) {
            int[] buckets = new int[64];
            int draws = DRAWS / 4;
            for (int i = 0; i < draws; i++) {
                float u = DropoutHash.uniform(99, 4L * i + place);
                assertThat(u).isGreaterThanOrEqualTo(0f).isLessThan(1f);
                buckets[(int) (u * buckets.length)]++;
            }
            assertThat(chiSquare(buckets, draws)).as("place " + place).isLessThan(bound(buckets.length - 1));
        }
    }

    @Test
    void aFractionPIsDropped() {
        for (float p : new float[] {0.05f, 0.1f, 0.5f}) {
            int threshold = DropoutHash.dropThreshold(p);
            for (int place = 0; place < 4; place++) {
                long dropped = 0;
                int draws = DRAWS / 4;
                for (long i = 0; i < draws; i++) if (DropoutHash.bits(7, 4 * i + place) < threshold) dropped++;
                double sd = Math.sqrt(draws * p * (1 - p));
                assertThat((double) dropped).as("p %s, place %d", p, place).isCloseTo(draws * (double) p, within(6 * sd));
            }
        }
    }

    @Test
    void theRealisedDropProbabilityIsPRoundedUpToAMultipleOfTwoToTheMinus16() {
        assertThat(DropoutHash.dropThreshold(0.05f)).isEqualTo(3277); // 0.05 * 65536 = 3276.8
        assertThat(DropoutHash.dropThreshold(0.1f)).isEqualTo(6554);  // 6553.6
        assertThat(DropoutHash.dropThreshold(0.5f)).isEqualTo(32768);
        assertThat(DropoutHash.dropThreshold(0x1p-30f)).isEqualTo(1); // any p > 0 drops something
        SplittableRandom random = new SplittableRandom(11);
        for (int c = 0; c < 10_000; c++) {
            float p = (float) random.nextDouble();
            double realised = DropoutHash.dropThreshold(p) * 0x1p-16;
            assertThat(realised - p).as("p " + p).isGreaterThanOrEqualTo(0).isLessThan(0x1p-16);
        }
    }

    @Test
    void neighbouringElementsAreIndependentWithinAndAcrossGroups() {
        // Joint 16 x 16 histograms of (u(i), u(i + d)) over i = 4q + start: every pair of places within one group (one
        // mix), and neighbours in two groups (start 3, d 1: the last of a group and the first of the next).
        int[][] cases = {{0, 1}, {1, 1}, {2, 1}, {0, 2}, {1, 2}, {0, 3}, {3, 1}, {2, 2}, {1, 3}, {3, 4}};
        int n = DRAWS / 4;
        for (int[] c : cases) {
            int start = c[0], d = c[1];
            int[] cells = new int[256];
            for (int q = 0; q < n; q++) {
                long i = 4L * q + start;
                cells[cell(DropoutHash.uniform(5, i), DropoutHash.uniform(5, i + d))]++;
            }
            String what = "elements 4j+" + start + " and 4j+" + (start + d);
            assertThat(chiSquare(cells, n)).as(what).isLessThan(bound(255));
            assertThat(Math.abs(correlation(5, start, 5, start + d, 4, n))).as(what).isLessThan(6 / Math.sqrt(n));
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
            assertThat(Math.abs(correlation(s[0], 0, s[1], 0, 1, n))).isLessThan(6 / Math.sqrt(n));
        }
    }

    @Test
    void theDropThresholdDropsExactlyTheDrawsWhoseUniformIsBelowP() {
        SplittableRandom random = new SplittableRandom(3);
        float[] fixed = {0f, 1f, 0x1p-16f, Math.nextUp(0x1p-16f), Math.nextDown(0x1p-16f), 0.05f, 0.1f, 0.5f,
                Math.nextDown(1f), 3 * 0x1p-16f + 0x1p-30f, 0x1p-24f};
        for (int c = 0; c < 10_000; c++) {
            float p = c < fixed.length ? fixed[c] : (float) random.nextDouble();
            int threshold = DropoutHash.dropThreshold(p);
            assertThat(threshold).isBetween(0, 1 << 16);
            for (int b : new int[] {threshold - 2, threshold - 1, threshold, threshold + 1, random.nextInt(1 << 16)}) {
                if (b < 0 || b >= 1 << 16) continue;
                assertThat(b < threshold).as("draw %d at p %s", b, p).isEqualTo(b * 0x1p-16f < p);
            }
        }
        assertThat(DropoutHash.dropThreshold(0f)).isZero();
        assertThat(DropoutHash.dropThreshold(1f)).isEqualTo(1 << 16); // every draw is below it
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

    /** The Pearson correlation of u(seedA, startA + step·q) and u(seedB, startB + step·q) over q in [0, n). */
    private static double correlation(long seedA, long startA, long seedB, long startB, int step, int n) {
        double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
        for (long q = 0; q < n; q++) {
            double a = DropoutHash.uniform(seedA, startA + step * q), b = DropoutHash.uniform(seedB, startB + step * q);
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
