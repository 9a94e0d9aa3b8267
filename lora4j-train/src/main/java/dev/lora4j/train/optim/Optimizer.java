package dev.lora4j.train.optim;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.MemoryPlacement;
import dev.lora4j.model.TrainableParameter;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.stream.Collectors;

/**
 * An optimizer over a model's trainable parameters: AdamW as torch computes it ({@link AdamW}) or as bitsandbytes
 * does, with 32-bit or 8-bit states, paged or not ({@link BitsandbytesAdamW}). Its state lives on the parameters'
 * backend and goes into checkpoints, so that a resumed run continues exactly.
 */
public interface Optimizer extends AutoCloseable {

    /** The optimizer {@code type} names, over these parameters, with these hyperparameters. */
    static Optimizer create(OptimizerType type, Backend backend, List<TrainableParameter> parameters, AdamW.Hyperparameters hp) {
        return type == OptimizerType.ADAMW_TORCH ? new AdamW(backend, parameters, hp)
                : new BitsandbytesAdamW(backend, parameters, hp, type, BitsandbytesAdamW.MIN_8BIT_SIZE);
    }

    OptimizerType type();

    AdamW.Hyperparameters hyperparameters();

    /** One update of every parameter from its gradient, at learning rate {@code lr}. */
    void step(double lr);

    /** Optimizer steps taken so far. */
    long steps();

    /**
     * Bytes of state the backend counts as its memory ({@link Backend#memoryInUse()}): everything but paged state
     * in mapped host memory. This is the optimizer state of the memory report.
     */
    long stateBytes();

    /** Bytes of state by where they live. */
    Map<MemoryPlacement, Long> stateMemory();

    /** Writes the state and the step count (safetensors). */
    void save(Path file) throws IOException;

    /** Restores what {@link #save} wrote for the same parameters and optimizer type; anything else is an IOException saying what differs. */
    void load(Path file) throws IOException;

    /** One line for people: the optimizer and where its state lives. */
    default String describe() {
        Map<MemoryPlacement, Long> memory = stateMemory();
        long total = memory.values().stream().mapToLong(Long::longValue).sum();
        String where = memory.entrySet().stream()
                .map(e -> String.format(Locale.ROOT, "%s in %s", mib(e.getValue()), e.getKey().description()))
                .collect(Collectors.joining(", "));
        return "optimizer " + type().configName() + ": " + mib(total) + " of state" + (where.isEmpty() ? "" : " (" + where + ")");
    }

    @Override
    void close();

    private static String mib(long bytes) {
        return String.format(Locale.ROOT, "%.1f MiB", bytes / (1024.0 * 1024));
    }
}
