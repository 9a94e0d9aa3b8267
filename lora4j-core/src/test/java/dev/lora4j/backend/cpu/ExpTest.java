package dev.lora4j.backend.cpu;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;
import org.junit.jupiter.api.Test;

import java.util.SplittableRandom;

import static org.assertj.core.api.Assertions.assertThat;

class ExpTest {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;

    private static final float[] EDGES = {
            0f, -0f, Float.MIN_VALUE, -Float.MIN_VALUE, 1e-30f, -1e-30f, 1e-7f, -1e-7f, 1f, -1f,
            0.34657359f, -0.34657359f, 0.34657362f, -0.34657362f, 88f, 88.5f, 88.7f, 88.72283f, 88.72284f, 88.7229f,
            89f, 100f, 1e30f, Float.MAX_VALUE, -87f, -87.33654f, -87.33655f, -87.34f, -90f, -100f, -103f, -103.27893f,
            -103.279f, -103.9f, -103.97208f, -104f, -110f, -1e30f, -Float.MAX_VALUE,
            Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY, Float.NaN};

    /** |exp(x) − e^x| in units of the last place of the float nearest e^x. */
    private static double ulpError(float x) {
        double exact = Math.exp(x);
        float nearest = (float) exact;
        float got = Exp.exp(x);
        if (Float.isInfinite(nearest) || nearest == 0f) return got == nearest ? 0 : Double.POSITIVE_INFINITY;
        return Math.abs(got - exact) / Math.ulp(nearest);
    }

    /**
     * Math.exp rounded to float is within 0.5 ulp; the leading terms here are rounded once, the small ones add
     * about 0.2. Subnormal results are rounded a second time, to the coarser subnormal grid.
     */
    @Test
    void isWithinAnUlpOfTheExactValueOverTheWholeFloatRange() {
        SplittableRandom random = new SplittableRandom(11);
        double worstNormal = 0, worstSubnormal = 0;
        float worstNormalAt = 0, worstSubnormalAt = 0;
        for (int i = 0; i < 6_000_000 + EDGES.length; i++) {
            float x = i >= 6_000_000 ? EDGES[i - 6_000_000] : switch (i % 3) {
                case 0 -> (float) random.nextDouble(-88, 88);          // the softmax and sigmoid range
                case 1 -> (float) random.nextDouble(-104.5, 89);       // subnormal results and overflow
                default -> (float) (random.nextGaussian() * Math.pow(10, random.nextInt(-30, 2))); // near 0
            };
            if (Float.isNaN(x)) continue;
            double e = ulpError(x);
            if (Math.abs((float) Math.exp(x)) < Float.MIN_NORMAL) {
                if (e > worstSubnormal) { worstSubnormal = e; worstSubnormalAt = x; }
            } else if (e > worstNormal) { worstNormal = e; worstNormalAt = x; }
        }
        assertThat(worstNormal).as("worst error %s ulp, at x = %s", worstNormal, worstNormalAt).isLessThan(0.75);
        assertThat(worstSubnormal).as("worst subnormal error %s ulp, at x = %s", worstSubnormal, worstSubnormalAt)
                .isLessThan(1.0);
    }

    @Test
    void agreesWithMathExpAtTheEdges() {
        assertThat(Exp.exp(0f)).isEqualTo(1f);
        assertThat(Exp.exp(-0f)).isEqualTo(1f);
        assertThat(Exp.exp(Float.NEGATIVE_INFINITY)).isEqualTo(0f);
        assertThat(Exp.exp(-104f)).isEqualTo(0f);
        assertThat(Exp.exp(-Float.MAX_VALUE)).isEqualTo(0f);
        assertThat(Exp.exp(Float.POSITIVE_INFINITY)).isEqualTo(Float.POSITIVE_INFINITY);
        assertThat(Exp.exp(88.7229f)).isEqualTo(Float.POSITIVE_INFINITY);
        assertThat(Exp.exp(88.72283f)).isFinite().isGreaterThan(3.4e38f);
        assertThat(Exp.exp(Float.NaN)).isNaN();
        assertThat(Exp.exp(-103f)).isEqualTo((float) Math.exp(-103f)).isGreaterThan(0f); // subnormal, not flushed
        for (float x : EDGES) {
            float expected = (float) Math.exp(x);
            float got = Exp.exp(x);
            if (Float.isNaN(x)) continue;
            assertThat(Math.abs(Float.floatToIntBits(got) - Float.floatToIntBits(expected)))
                    .as("exp(%s) = %s, Math.exp gives %s", x, got, expected).isLessThanOrEqualTo(1);
        }
    }

    @Test
    void vectorLanesEqualTheScalarFormBitForBit() {
        SplittableRandom random = new SplittableRandom(13);
        float[] xs = new float[F.length()];
        float[] out = new float[F.length()];
        for (int trial = 0; trial < 200_000; trial++) {
            for (int i = 0; i < xs.length; i++) {
                xs[i] = switch (random.nextInt(4)) {
                    case 0 -> (float) random.nextDouble(-110, 95);
                    case 1 -> (float) (random.nextGaussian() * Math.pow(10, random.nextInt(-40, 3)));
                    case 2 -> EDGES[random.nextInt(EDGES.length)];
                    default -> Float.intBitsToFloat(random.nextInt()); // any bit pattern, NaNs included
                };
            }
            Exp.exp(FloatVector.fromArray(F, xs, 0)).intoArray(out, 0);
            for (int i = 0; i < xs.length; i++) {
                int expected = Float.floatToIntBits(Exp.exp(xs[i]));
                assertThat(Float.floatToIntBits(out[i])).as("lane %d: exp(%s)", i, xs[i]).isEqualTo(expected);
            }
        }
    }
}
