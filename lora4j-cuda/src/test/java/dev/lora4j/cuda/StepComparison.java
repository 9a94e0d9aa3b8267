package dev.lora4j.cuda;

import dev.lora4j.backend.Backend;
import dev.lora4j.model.TrainableLlama;
import dev.lora4j.model.TrainableParameter;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.util.List;

/** What the GPU-against-CPU training-step tests share: AdamW moments per parameter, and the relative error they judge by. */
final class StepComparison {
    private StepComparison() {}

    /**
     * AdamW's moments of one parameter. eps is large (1e-3) so that the update, lr·m/(sqrt(v) + eps), is continuous in
     * the gradient: with a tiny eps, a gradient that is 0 up to rounding moves its parameter by ±lr, whichever sign
     * the rounding gave it, and the two backends' parameters would differ by that much.
     */
    record Moments(Tensor m, Tensor v, float lr) implements AutoCloseable {
        void step(Backend b, TrainableParameter p, int step) {
            b.adamw(p.value(), p.grad(), m, v, lr, 0.9f, 0.999f, 1e-3f, p.weightDecay() ? 0.01f : 0f, step);
        }

        @Override public void close() {
            m.close();
            v.close();
        }
    }

    /** Zeroed moments for every parameter of the model, in its parameter order. */
    static List<Moments> moments(Backend b, TrainableLlama model, float lr) {
        return model.parameters().stream()
                .map(p -> new Moments(b.allocate(p.value().dtype(), p.value().shape()), b.allocate(p.value().dtype(), p.value().shape()), lr))
                .toList();
    }

    /** ||got - want|| / ||want||, with a floor on the denominator for gradients that are zero up to rounding. */
    static double relativeError(float[] got, float[] want) {
        if (got.length != want.length) {
            throw new AssertionError("element count: " + got.length + " against " + want.length);
        }
        double num = 0, den = 0;
        for (int i = 0; i < want.length; i++) {
            double d = (double) got[i] - want[i];
            num += d * d;
            den += (double) want[i] * want[i];
        }
        return Math.sqrt(num / Math.max(den, 1e-20 * want.length));
    }
}
