package dev.lora4j.api;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.Backends;
import dev.lora4j.io.ModelFolder;
import dev.lora4j.model.LlamaModel;
import dev.lora4j.model.LlamaWeightLoader;
import dev.lora4j.model.LlamaWeights;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.tokenizer.Tokenizer;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;

/**
 * The entry point of the Java API:
 * <pre>{@code
 * try (var model = Lora4j.load(Path.of("my-model"), Device.CPU)) {
 *     model.generate("Once upon a time", GenerationOptions.greedy(32), System.out::print);
 * }
 * }</pre>
 */
public final class Lora4j {
    private Lora4j() {}

    /** Loads a Hugging Face model folder (config.json, safetensors weights, tokenizer.json) onto a device. */
    public static LanguageModel load(Path folder, Device device) {
        return load(folder, device, LoadOptions.defaults());
    }

    /**
     * Loads a model folder with these options. Errors in the folder (a missing file, a malformed config, weights
     * that do not fit the config) are reported as exceptions whose message names the file and what to do.
     */
    public static LanguageModel load(Path folder, Device device, LoadOptions options) {
        ModelFolder mf = null;
        Backend backend = null;
        LlamaWeights weights = null;
        try {
            mf = ModelFolder.open(folder);
            Tokenizer tokenizer = mf.hasTokenizer() ? Tokenizer.load(mf.tokenizerFolder()) : null;
            backend = Backends.open(device.backendName(), options.notices());
            QuantSpec quantization = options.quantization();
            if (quantization != null && mf.config().isQuantized()) {
                options.notices().accept(folder + " is saved in 4 bits (" + mf.config().quantizationConfig()
                        + "): loading its weights as stored, computing in " + quantization.computeType());
            }
            weights = LlamaWeightLoader.load(mf, backend, options.weightType(), quantization);
            LlamaModel model = new LlamaModel(backend, weights, options.maxBatchTokens());
            // The weights are now on the backend: the mapped files are no longer needed.
            mf.close();
            return new LanguageModel(mf.path(), mf.config(), mf.generationConfig(), tokenizer, backend, model);
        } catch (IOException e) {
            closeAll(weights, backend, mf);
            throw new UncheckedIOException(e.getMessage(), e);
        } catch (RuntimeException | Error e) {
            closeAll(weights, backend, mf);
            throw e;
        }
    }

    private static void closeAll(LlamaWeights weights, Backend backend, ModelFolder folder) {
        if (weights != null) weights.close();
        if (backend != null) backend.close();
        if (folder != null) folder.close();
    }
}
