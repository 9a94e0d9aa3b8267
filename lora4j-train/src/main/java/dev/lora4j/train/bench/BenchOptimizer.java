package dev.lora4j.train.bench;

import dev.lora4j.backend.Backend;
import dev.lora4j.model.TrainableParameter;
import dev.lora4j.train.optim.AdamW;

import java.util.List;

/**
 * The optimizer a benchmark steps, chosen by the names of transformers' {@code TrainingArguments.optim}: the
 * reference benchmark steps torch's AdamW, which {@code adamw_torch} is.
 */
final class BenchOptimizer implements AutoCloseable {

    /** The names accepted, each the same update: torch.optim.AdamW (fused or not changes only speed in torch). */
    static final List<String> NAMES = List.of("adamw_torch", "adamw_torch_fused", "adamw");

    private final AdamW adamw;

    private BenchOptimizer(AdamW adamw) {
        this.adamw = adamw;
    }

    static BenchOptimizer open(String name, Backend backend, List<TrainableParameter> parameters, double weightDecay) {
        if (!NAMES.contains(name)) {
            throw new IllegalArgumentException("unknown --optim '" + name + "': use one of " + String.join(", ", NAMES));
        }
        AdamW.Hyperparameters d = AdamW.Hyperparameters.defaults();
        return new BenchOptimizer(new AdamW(backend, parameters,
                new AdamW.Hyperparameters(d.beta1(), d.beta2(), d.eps(), weightDecay)));
    }

    void step(double lr) {
        adamw.step(lr);
    }

    /** Bytes of optimizer state on the device. */
    long stateBytes() {
        return adamw.stateBytes();
    }

    @Override
    public void close() {
        adamw.close();
    }
}
