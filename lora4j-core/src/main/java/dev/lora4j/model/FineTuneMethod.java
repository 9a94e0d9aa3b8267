package dev.lora4j.model;

import dev.lora4j.lora.LoraConfig;

import java.util.Objects;

/** What a training run updates: LoRA adapters over a frozen base model, or every weight. */
public sealed interface FineTuneMethod permits FineTuneMethod.Lora, FineTuneMethod.Full {

    /** LoRA adapters (and the biases and modules_to_save the configuration names) train; the base stays frozen. */
    record Lora(LoraConfig config) implements FineTuneMethod {
        public Lora {
            Objects.requireNonNull(config, "config");
        }
    }

    /** Every weight trains, in F32. */
    record Full() implements FineTuneMethod {}

    static FineTuneMethod lora(LoraConfig config) { return new Lora(config); }

    static FineTuneMethod full() { return new Full(); }
}
