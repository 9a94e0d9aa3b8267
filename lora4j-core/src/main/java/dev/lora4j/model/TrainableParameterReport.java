package dev.lora4j.model;

import dev.lora4j.io.ModelConfig;

import java.util.Locale;

/**
 * How many parameters train and how many the model has, counted as PEFT's {@code print_trainable_parameters()}
 * counts them: "all" includes the LoRA parameters and both the frozen original and the trainable copy of each
 * modules_to_save module; a tied embedding table counts once.
 */
public record TrainableParameterReport(long trainable, long all) {

    /** The figures for a model of this configuration, without loading any weights. */
    public static TrainableParameterReport estimate(ModelConfig config, FineTuneMethod method) {
        return of(TrainablePlan.of(LlamaShape.of(config), method));
    }

    public static TrainableParameterReport of(TrainablePlan plan) {
        return new TrainableParameterReport(plan.trainableCount(), plan.allCount());
    }

    public double percent() { return all == 0 ? 0 : 100.0 * trainable / all; }

    /** PEFT's wording: "trainable params: 6,815,744 || all params: 7,248,547,840 || trainable%: 0.0940". */
    @Override
    public String toString() {
        return String.format(Locale.ROOT, "trainable params: %,d || all params: %,d || trainable%%: %.4f", trainable, all, percent());
    }
}
