package dev.lora4j.train.bench;

import dev.lora4j.backend.Backend;
import dev.lora4j.io.ModelConfig;
import dev.lora4j.io.ModelFolder;
import dev.lora4j.model.LlamaShape;
import dev.lora4j.model.LlamaWeightLoader;
import dev.lora4j.model.LlamaWeights;
import dev.lora4j.model.RandomModelWriter;
import dev.lora4j.model.RandomWeights;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.tensor.DType;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.function.Consumer;

/**
 * Where a benchmark's weights come from: a shape preset with random weights generated on the device, a model folder's
 * config.json with random weights, or a model folder's own weights.
 */
public sealed interface ModelSource permits ModelSource.Preset, ModelSource.RandomOfFolder, ModelSource.Folder {

    /** The presets {@code lora4j bench --preset} takes: the shapes of the reference benchmark. */
    List<String> PRESETS = List.of("mistral-7b", "llama2-7b", "llama3-8b", "tiny");

    /** The model's configuration. */
    ModelConfig config();

    /** The name of the shape: the preset's (mistral-7b, ...), or the folder's name. */
    String shapeName();

    /** Whether the weights are random (a preset's or a config.json's shape): the loss then starts near ln(vocab). */
    boolean random();

    /**
     * Puts the weights on the backend: matrices in {@code storage}, norm weights in F32. With {@code quantization},
     * random weights come back with 4-bit decoder projections, quantized one by one as they are generated (so that
     * a model whose 16-bit weights would not fit can be held); a folder's weights come back dense, for the model to
     * quantize as it is built. {@code progress} may be null.
     */
    LlamaWeights load(Backend backend, DType storage, QuantSpec quantization, long seed, Consumer<String> progress);

    static ModelSource preset(String name) {
        String n = name.strip().toLowerCase(Locale.ROOT);
        if (!PRESETS.contains(n) && !RandomModelWriter.PRESETS.contains(n)) {
            throw new IllegalArgumentException("unknown --preset '" + name + "': choose one of " + String.join(", ", PRESETS));
        }
        return new Preset(n, RandomModelWriter.preset(n));
    }

    /** A model folder: its weights, or with {@code randomWeights} only its config.json's shape. */
    static ModelSource folder(Path folder, boolean randomWeights) {
        Path config = folder.resolve(ModelFolder.CONFIG_FILE);
        if (!Files.isRegularFile(config)) {
            throw new IllegalArgumentException(folder + " has no " + ModelFolder.CONFIG_FILE + ": -m takes a Hugging Face model folder");
        }
        try {
            ModelConfig c = ModelConfig.load(config);
            LlamaShape.of(c); // a shape lora4j cannot run fails here, before any device work
            String name = folder.toAbsolutePath().normalize().getFileName() == null ? folder.toString()
                    : folder.toAbsolutePath().normalize().getFileName().toString();
            return randomWeights ? new RandomOfFolder(folder, name, c) : new Folder(folder, name, c);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    record Preset(String shapeName, ModelConfig config) implements ModelSource {
        @Override public boolean random() { return true; }

        @Override
        public LlamaWeights load(Backend backend, DType storage, QuantSpec quantization, long seed, Consumer<String> progress) {
            return RandomWeights.generate(backend, config, storage, quantization, seed, progress);
        }
    }

    record RandomOfFolder(Path folder, String shapeName, ModelConfig config) implements ModelSource {
        @Override public boolean random() { return true; }

        @Override
        public LlamaWeights load(Backend backend, DType storage, QuantSpec quantization, long seed, Consumer<String> progress) {
            return RandomWeights.generate(backend, config, storage, quantization, seed, progress);
        }
    }

    record Folder(Path folder, String shapeName, ModelConfig config) implements ModelSource {
        @Override public boolean random() { return false; }

        @Override
        public LlamaWeights load(Backend backend, DType storage, QuantSpec quantization, long seed, Consumer<String> progress) {
            try (ModelFolder f = ModelFolder.open(folder)) {
                if (progress != null) progress.accept("loading the weights of " + folder);
                // Quantized on load, a projection at a time: the dense model never sits whole on the device.
                return LlamaWeightLoader.load(f.weights(), LlamaShape.of(config), backend, storage, quantization);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
    }
}
