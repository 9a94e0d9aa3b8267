package dev.lora4j.train.config;

import dev.lora4j.api.Device;
import dev.lora4j.model.FineTuneMethod;
import dev.lora4j.train.SftConfig;

import java.nio.file.Path;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A whole training run as a configuration file describes it: the model, the data, the method (LoRA with its
 * PEFT configuration, over a 16-bit or, for QLoRA, a 4-bit base; or full fine-tuning), the device, the training arguments, and prompts to sample before and
 * after training.
 *
 * @param effective every field as it was finally set (file, then command line), by canonical name, for the record
 *                  kept in the output folder
 */
public record TrainConfig(Path modelNameOrPath, Path trainFile, Path evalFile, FineTuneMethod method, Device device,
                          SftConfig sft, List<String> samplePrompts, int sampleMaxNewTokens, Map<String, Object> effective) {
    public TrainConfig {
        samplePrompts = List.copyOf(samplePrompts);
        effective = Collections.unmodifiableMap(new LinkedHashMap<>(effective));
    }
}
