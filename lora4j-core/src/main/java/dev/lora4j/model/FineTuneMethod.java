package dev.lora4j.model;

import dev.lora4j.lora.LoraConfig;
import dev.lora4j.quant.QuantSpec;

import java.util.Objects;

/** What a training run updates: LoRA adapters over a frozen base model (16-bit, or 4-bit for QLoRA), or every weight. */
public sealed interface FineTuneMethod permits FineTuneMethod.Lora, FineTuneMethod.Full {

    /**
     * LoRA adapters (and the biases and modules_to_save the configuration names) train; the base stays frozen.
     *
     * @param quantization null: the base keeps its stored dtype; otherwise QLoRA: the seven projections of every
     *                     layer are kept as 4-bit {@link dev.lora4j.quant.QuantizedTensor}s of this kind (embeddings,
     *                     lm_head and biases keep their dtype, norm weights are F32)
     */
    record Lora(LoraConfig config, QuantSpec quantization) implements FineTuneMethod {
        public Lora {
            Objects.requireNonNull(config, "config");
        }

        /** LoRA over the base as stored. */
        public Lora(LoraConfig config) {
            this(config, null);
        }

        /** Whether this is QLoRA: the frozen projections are 4-bit. */
        public boolean quantized() { return quantization != null; }

        /** The short name: "qlora" or "lora". */
        public String name() { return quantized() ? "qlora" : "lora"; }
    }

    /** Every weight trains, in F32. */
    record Full() implements FineTuneMethod {}

    static FineTuneMethod lora(LoraConfig config) { return new Lora(config); }

    /** QLoRA as its paper trains it: NF4 with double quantization and BF16 compute ({@link QuantSpec#QLORA}). */
    static FineTuneMethod qlora(LoraConfig config) { return new Lora(config, QuantSpec.QLORA); }

    static FineTuneMethod qlora(LoraConfig config, QuantSpec quantization) {
        return new Lora(config, Objects.requireNonNull(quantization, "quantization"));
    }

    static FineTuneMethod full() { return new Full(); }

    /** How the frozen projections are stored: a 4-bit kind for QLoRA, null otherwise. */
    default QuantSpec quantization() {
        return this instanceof Lora l ? l.quantization() : null;
    }

    /** The short name used in logs and checkpoints: "lora", "qlora" or "full". */
    default String name() {
        return this instanceof Lora l ? l.name() : "full";
    }
}
