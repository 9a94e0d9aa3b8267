package dev.lora4j.model;

import dev.lora4j.lora.LoraConfig;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.tensor.DType;

import java.util.Locale;
import java.util.Objects;
import java.util.Optional;

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

    /**
     * Every weight trains.
     *
     * @param precision F32: F32 weights, gradients and AdamW moments (with BF16 activations the products multiply BF16
     *                  working copies of the weights, as mixed-precision training does); BF16: the weights, the
     *                  projections' gradients and the AdamW moments are BF16, as torch trains a model loaded in
     *                  bfloat16 (half the memory: about 8 bytes a parameter against 16), while the norm weights, and
     *                  the gradients that sum many rows (embedding table, biases), stay F32
     */
    record Full(DType precision) implements FineTuneMethod {
        public Full {
            Objects.requireNonNull(precision, "precision");
            if (precision != DType.F32 && precision != DType.BF16) {
                throw new IllegalArgumentException("full fine-tuning trains F32 or BF16 weights, not " + precision);
            }
        }

        /** F32 weights, gradients and moments. */
        public Full() {
            this(DType.F32);
        }

        /** The precision names {@link #precisionNamed} takes, for messages that list them. */
        public static final String PRECISION_NAMES = "float32 or bfloat16 (or fp32, bf16)";

        /**
         * The precision a name gives, as the configuration's dtype, the command line's --dtype and torch write it
         * (float32, fp32, f32, torch.float32; bfloat16, bf16, torch.bfloat16; any case); empty for another name.
         */
        public static Optional<DType> precisionNamed(String name) {
            return switch (name.strip().toLowerCase(Locale.ROOT)) {
                case "float32", "fp32", "f32", "torch.float32" -> Optional.of(DType.F32);
                case "bfloat16", "bf16", "torch.bfloat16" -> Optional.of(DType.BF16);
                default -> Optional.empty();
            };
        }
    }

    static FineTuneMethod lora(LoraConfig config) { return new Lora(config); }

    /** QLoRA as its paper trains it: NF4 with double quantization and BF16 compute ({@link QuantSpec#QLORA}). */
    static FineTuneMethod qlora(LoraConfig config) { return new Lora(config, QuantSpec.QLORA); }

    static FineTuneMethod qlora(LoraConfig config, QuantSpec quantization) {
        return new Lora(config, Objects.requireNonNull(quantization, "quantization"));
    }

    static FineTuneMethod full() { return new Full(); }

    /** Full fine-tuning of weights kept in {@code precision} (F32 or BF16). */
    static FineTuneMethod full(DType precision) { return new Full(precision); }

    /** How the frozen projections are stored: a 4-bit kind for QLoRA, null otherwise. */
    default QuantSpec quantization() {
        return this instanceof Lora l ? l.quantization() : null;
    }

    /** The short name used in logs and checkpoints: "lora", "qlora" or "full". */
    default String name() {
        return this instanceof Lora l ? l.name() : "full";
    }
}
