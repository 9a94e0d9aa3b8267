package dev.lora4j.backend.testing;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;

import static org.assertj.core.api.Assertions.fail;

/**
 * Element-wise comparison of a backend's results with a reference, with an error bound per element. A failure
 * names how many elements are out of bounds and shows the worst few with their index, value, expected value,
 * error and allowed error.
 */
public final class TensorAssert {
    /** Unit roundoff of FP32 arithmetic: the largest relative error of one correctly rounded operation. */
    public static final double F32_ROUNDOFF = 0x1p-24;

    private TensorAssert() {}

    /** |actual[i] - expected[i]| <= absolute + relative * |expected[i]| for every i. */
    public static void assertClose(String what, float[] actual, double[] expected, double absolute, double relative) {
        double[] bound = new double[expected.length];
        for (int i = 0; i < bound.length; i++) bound[i] = absolute + relative * Math.abs(expected[i]);
        assertWithin(what, actual, expected, bound);
    }

    /**
     * |actual[i] - expected[i]| <= bound[i] for every i. A NaN expected value needs a NaN; an infinite one the same
     * infinity.
     */
    public static void assertWithin(String what, float[] actual, double[] expected, double[] bound) {
        if (actual.length != expected.length) {
            fail(what + ": " + actual.length + " elements, expected " + expected.length);
        }
        List<int[]> bad = new ArrayList<>();
        for (int i = 0; i < actual.length; i++) {
            if (!within(actual[i], expected[i], bound[i])) bad.add(new int[] {i});
        }
        if (bad.isEmpty()) return;
        bad.sort(Comparator.comparingDouble((int[] b) -> -excess(actual[b[0]], expected[b[0]], bound[b[0]])));
        StringBuilder sb = new StringBuilder(String.format(Locale.ROOT, "%s: %d of %d elements outside their error bound; worst:",
                what, bad.size(), actual.length));
        for (int[] b : bad.subList(0, Math.min(5, bad.size()))) {
            int i = b[0];
            sb.append(String.format(Locale.ROOT, "%n  [%d] actual %.9g, expected %.9g, error %.3g, allowed %.3g",
                    i, actual[i], expected[i], Math.abs(actual[i] - expected[i]), bound[i]));
        }
        fail(sb.toString());
    }

    /** Bit-for-bit equality (NaNs of any payload count as equal to each other). */
    public static void assertSameFloats(String what, float[] actual, float[] expected) {
        if (actual.length != expected.length) fail(what + ": " + actual.length + " elements, expected " + expected.length);
        for (int i = 0; i < actual.length; i++) {
            boolean same = Float.floatToRawIntBits(actual[i]) == Float.floatToRawIntBits(expected[i])
                    || (Float.isNaN(actual[i]) && Float.isNaN(expected[i]));
            if (!same) {
                fail(String.format(Locale.ROOT, "%s: element %d is %s (bits %08x), expected %s (bits %08x)", what, i,
                        actual[i], Float.floatToRawIntBits(actual[i]), expected[i], Float.floatToRawIntBits(expected[i])));
            }
        }
    }

    /** The reference rounded once to float: what an op with a single rounding must return exactly. */
    public static float[] rounded(double[] values) {
        float[] out = new float[values.length];
        for (int i = 0; i < out.length; i++) out[i] = (float) values[i];
        return out;
    }

    public static double maxAbs(float[] values) {
        double m = 0;
        for (float v : values) m = Math.max(m, Math.abs(v));
        return m;
    }

    private static boolean within(float actual, double expected, double bound) {
        if (Double.isNaN(expected)) return Float.isNaN(actual);
        if (Double.isInfinite(expected)) return actual == expected;
        return Math.abs(actual - expected) <= bound; // false for a NaN or infinite actual
    }

    private static double excess(float actual, double expected, double bound) {
        double e = Math.abs(actual - expected);
        return Double.isNaN(e) ? Double.POSITIVE_INFINITY : e - bound;
    }
}
