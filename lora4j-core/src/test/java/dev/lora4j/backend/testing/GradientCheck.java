package dev.lora4j.backend.testing;

import java.util.Locale;
import java.util.function.ToDoubleFunction;

import static org.assertj.core.api.Assertions.fail;

/**
 * Numerical gradients by central differences, in double precision, to check analytic gradients against. The
 * functions checked are smooth, so with a step of about 1e-5 of the input's scale the difference quotient's
 * truncation error (of order h²) and cancellation error (of order 1e-16/h) both stay near 1e-10 relative.
 */
public final class GradientCheck {
    private GradientCheck() {}

    /** d f / d x[i] for every i, by (f(x + h·e_i) - f(x - h·e_i)) / 2h with h relative to |x[i]| (at least {@code h}). */
    public static double[] numericGradient(ToDoubleFunction<double[]> f, double[] x, double h) {
        double[] grad = new double[x.length];
        double[] probe = x.clone();
        for (int i = 0; i < x.length; i++) {
            double step = h * Math.max(1, Math.abs(x[i]));
            probe[i] = x[i] + step;
            double up = f.applyAsDouble(probe);
            probe[i] = x[i] - step;
            double down = f.applyAsDouble(probe);
            probe[i] = x[i];
            grad[i] = (up - down) / (2 * step);
        }
        return grad;
    }

    /** The scalar loss Σ output·weights, whose gradient with respect to the output is {@code weights}. */
    public static double weightedSum(double[] output, double[] weights) {
        return ReferenceTrainingOps.dot(output, weights);
    }

    /**
     * |analytic[i] - numeric[i]| <= tolerance · (|numeric[i]| + max|numeric|) for every i: relative to the element,
     * with a floor relative to the whole gradient for elements that are nearly zero.
     */
    public static void assertGradientsAgree(String what, double[] analytic, double[] numeric, double tolerance) {
        if (analytic.length != numeric.length) fail(what + ": " + analytic.length + " gradient elements, expected " + numeric.length);
        double scale = 0;
        for (double g : numeric) scale = Math.max(scale, Math.abs(g));
        for (int i = 0; i < numeric.length; i++) {
            double bound = tolerance * (Math.abs(numeric[i]) + scale);
            if (!(Math.abs(analytic[i] - numeric[i]) <= bound)) {
                fail(String.format(Locale.ROOT, "%s: element %d analytic %.12g, numeric %.12g, difference %.3g > %.3g",
                        what, i, analytic[i], numeric[i], Math.abs(analytic[i] - numeric[i]), bound));
            }
        }
    }
}
