package dev.lora4j.bench;

import dev.lora4j.backend.Backend;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.util.SplittableRandom;

/** Random tensors for the benchmarks: values like trained weights and activations (roughly unit scale). */
final class BenchTensors {
    private BenchTensors() {}

    static Tensor random(Backend backend, DType dtype, long seed, float scale, long... shape) {
        long count = 1;
        for (long d : shape) count *= d;
        float[] values = new float[Math.toIntExact(count)];
        SplittableRandom random = new SplittableRandom(seed);
        for (int i = 0; i < values.length; i++) values[i] = (float) (random.nextDouble(-1, 1) * scale);
        return backend.fromFloats(values, dtype, shape);
    }
}
