package dev.lora4j.train;

import dev.lora4j.api.Device;
import dev.lora4j.backend.Backend;
import dev.lora4j.backend.Backends;
import dev.lora4j.io.ModelFolder;
import dev.lora4j.lora.LoraConfig;
import dev.lora4j.model.FineTuneMethod;
import dev.lora4j.model.TrainableLlama;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.tensor.DType;
import dev.lora4j.tokenizer.Tokenizer;
import dev.lora4j.train.data.SftDataset;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.function.Consumer;

/**
 * Builds an {@link SftTrainer} from files, as one writes it in Python: a model folder on a device, a LoRA
 * configuration (or full fine-tuning), dataset files and the training arguments. The trainer it builds owns the
 * model and the backend and closes them.
 */
public final class SftTrainerBuilder {
    private Path modelFolder;
    private Device device = Device.AUTO;
    private FineTuneMethod method = new FineTuneMethod.Lora(LoraConfig.defaults());
    private Path trainFile;
    private Path evalFile;
    private SftConfig config = SftConfig.defaults();
    private Consumer<String> notices = System.err::println;
    private final List<TrainingListener> listeners = new ArrayList<>();

    SftTrainerBuilder() {}

    /** A Hugging Face model folder (config.json, safetensors, tokenizer.json) and where to train it. */
    public SftTrainerBuilder model(Path folder, Device device) {
        this.modelFolder = Objects.requireNonNull(folder, "model folder");
        this.device = Objects.requireNonNull(device, "device");
        return this;
    }

    /** Train LoRA adapters with this configuration (the default: PEFT's LoraConfig defaults). */
    public SftTrainerBuilder lora(LoraConfig lora) {
        this.method = new FineTuneMethod.Lora(Objects.requireNonNull(lora, "lora config"));
        return this;
    }

    /** Train LoRA adapters over a 4-bit base as the QLoRA recipe does: NF4, double quantization, BF16 compute. */
    public SftTrainerBuilder qlora(LoraConfig lora) {
        return qlora(lora, QuantSpec.QLORA);
    }

    /** Train LoRA adapters over a base whose projections are quantized to 4 bits as {@code quantization} says. */
    public SftTrainerBuilder qlora(LoraConfig lora, QuantSpec quantization) {
        this.method = new FineTuneMethod.Lora(Objects.requireNonNull(lora, "lora config"),
                Objects.requireNonNull(quantization, "quantization"));
        return this;
    }

    /** Train every weight instead of adapters. */
    public SftTrainerBuilder fullFineTuning() {
        this.method = new FineTuneMethod.Full();
        return this;
    }

    public SftTrainerBuilder method(FineTuneMethod method) {
        this.method = Objects.requireNonNull(method, "method");
        return this;
    }

    public SftTrainerBuilder trainDataset(Path jsonlOrJson) {
        this.trainFile = Objects.requireNonNull(jsonlOrJson, "train dataset");
        return this;
    }

    public SftTrainerBuilder evalDataset(Path jsonlOrJson) {
        this.evalFile = jsonlOrJson;
        return this;
    }

    public SftTrainerBuilder config(SftConfig config) {
        this.config = Objects.requireNonNull(config, "config");
        return this;
    }

    /** Where one-line notices (such as a GPU fallback) go; standard error by default. */
    public SftTrainerBuilder notices(Consumer<String> sink) {
        this.notices = sink == null ? line -> { } : sink;
        return this;
    }

    public SftTrainerBuilder listener(TrainingListener listener) {
        listeners.add(Objects.requireNonNull(listener));
        return this;
    }

    /** Loads the tokenizer and the datasets first (cheap, and where most mistakes show), then the model. */
    public SftTrainer build() {
        if (modelFolder == null) throw new IllegalStateException("no model: call model(folder, device)");
        if (trainFile == null) throw new IllegalStateException("no training data: call trainDataset(file)");
        Backend backend = null;
        TrainableLlama model = null;
        try (ModelFolder folder = ModelFolder.open(modelFolder)) {
            if (!folder.hasTokenizer()) {
                throw new IllegalArgumentException(modelFolder + " has no tokenizer.json, which training needs to tokenize the dataset");
            }
            Tokenizer tokenizer = Tokenizer.load(folder.tokenizerFolder());
            SftDataset train = SftTrainer.prepareDataset(trainFile, tokenizer, config, false);
            SftDataset eval = evalFile == null ? null : SftTrainer.prepareDataset(evalFile, tokenizer, config, true);
            backend = Backends.open(device.backendName(), config.bf16() ? DType.BF16 : null, notices);
            model = TrainableLlama.create(backend, folder, method, config.seed());
            SftTrainer trainer = new SftTrainer(model, tokenizer, config, train, eval);
            trainer.own(backend);
            trainer.own(model);
            for (TrainingListener l : listeners) trainer.addListener(l);
            return trainer;
        } catch (IOException e) {
            close(model, backend);
            throw new UncheckedIOException(e.getMessage(), e);
        } catch (RuntimeException | Error e) {
            close(model, backend);
            throw e;
        }
    }

    private static void close(TrainableLlama model, Backend backend) {
        if (model != null) model.close();
        if (backend != null) backend.close();
    }
}
