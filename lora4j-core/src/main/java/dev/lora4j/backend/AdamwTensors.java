package dev.lora4j.backend;

import dev.lora4j.tensor.Tensor;

/**
 * One parameter's tensors for {@link Backend#adamwAll}: the parameter, its gradient, its two moments, and the weight
 * decay that applies to it (0 for norm weights and biases).
 */
public record AdamwTensors(Tensor param, Tensor grad, Tensor m, Tensor v, float weightDecay) {
}
