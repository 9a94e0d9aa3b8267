package dev.lora4j.model;

import dev.lora4j.tensor.Tensor;

/**
 * A tensor the optimizer updates, with its gradient (both F32, same shape).
 *
 * @param name        PEFT's key for adapter parameters ({@code base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight}),
 *                    the Hugging Face weight name in full fine-tuning ({@code model.layers.0.mlp.up_proj.weight})
 * @param weightDecay whether AdamW's weight decay applies: not to biases and norm weights, as Hugging Face's
 *                    Trainer decides
 */
public record TrainableParameter(String name, Tensor value, Tensor grad, boolean weightDecay) {

    public long numel() { return value.numel(); }
}
