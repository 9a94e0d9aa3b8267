package dev.lora4j.io;

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * A Hugging Face model folder: {@code config.json}, weights as safetensors ({@code model.safetensors}, or shards
 * with {@code model.safetensors.index.json}), optionally {@code generation_config.json} and {@code tokenizer.json}.
 * The configs are read when the folder is opened; the weights are mapped on first use.
 */
public final class ModelFolder implements AutoCloseable {

    public static final String CONFIG_FILE = "config.json";
    public static final String TOKENIZER_FILE = "tokenizer.json";

    private static final String WHAT_A_FOLDER_HOLDS = "A model folder (as save_pretrained writes it or the Hugging Face"
            + " Hub serves it) holds config.json, the weights as model.safetensors or model-0000x-of-0000N.safetensors"
            + " shards with model.safetensors.index.json, and usually tokenizer.json.";

    private final Path path;
    private final ModelConfig config;
    private final GenerationConfig generationConfig;
    private SafetensorsModel weights;
    private boolean closed;

    private ModelFolder(Path path, ModelConfig config, GenerationConfig generationConfig) {
        this.path = path;
        this.config = config;
        this.generationConfig = generationConfig;
    }

    public static ModelFolder open(Path folder) throws IOException {
        if (!Files.exists(folder)) {
            throw new NoSuchFileException(folder.toString(), null, "no such model folder. " + WHAT_A_FOLDER_HOLDS);
        }
        if (!Files.isDirectory(folder)) {
            throw new ConfigFormatException(folder + " is a file, not a model folder. " + WHAT_A_FOLDER_HOLDS);
        }
        Path config = folder.resolve(CONFIG_FILE);
        if (!Files.isRegularFile(config)) {
            throw new ConfigFormatException(folder + " has no " + CONFIG_FILE + ", so it is not a model folder. "
                    + WHAT_A_FOLDER_HOLDS);
        }
        checkWeightsPresent(folder);
        return new ModelFolder(folder, ModelConfig.load(config), GenerationConfig.load(folder));
    }

    private static void checkWeightsPresent(Path folder) throws IOException {
        List<String> safetensors = new ArrayList<>();
        List<String> pytorch = new ArrayList<>();
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(folder)) {
            for (Path p : ds) {
                String n = p.getFileName().toString();
                if (n.endsWith(".safetensors")) safetensors.add(n);
                if (n.endsWith(".bin") || n.endsWith(".pt") || n.endsWith(".pth") || n.equals("pytorch_model.bin.index.json")) {
                    pytorch.add(n);
                }
            }
        }
        if (!safetensors.isEmpty() || Files.isRegularFile(folder.resolve(SafetensorsModel.INDEX_FILE))) return;
        String found = pytorch.isEmpty() ? "It has no weights at all." : "It has PyTorch checkpoint files ("
                + String.join(", ", pytorch.subList(0, Math.min(3, pytorch.size()))) + (pytorch.size() > 3 ? ", ..." : "")
                + "), which lora4j does not read: they are pickles, which can run code when loaded.";
        throw new ConfigFormatException(folder + " has no safetensors weights. " + found + " Convert the model once in"
                + " Python: AutoModelForCausalLM.from_pretrained(folder).save_pretrained(out, safe_serialization=True),"
                + " or download the model's safetensors files.");
    }

    public Path path() {
        return path;
    }

    public ModelConfig config() {
        return config;
    }

    /** {@link GenerationConfig#EMPTY} when the folder has no generation_config.json. */
    public GenerationConfig generationConfig() {
        return generationConfig;
    }

    /** The weights, memory-mapped on the first call; closed with this folder. */
    public synchronized SafetensorsModel weights() throws IOException {
        if (closed) throw new IllegalStateException("model folder " + path + " is closed");
        if (weights == null) weights = SafetensorsModel.open(path);
        return weights;
    }

    public boolean hasTokenizer() {
        return Files.isRegularFile(path.resolve(TOKENIZER_FILE));
    }

    /** Where tokenizer.json and tokenizer_config.json live: the model folder itself. */
    public Path tokenizerFolder() {
        return path;
    }

    @Override
    public synchronized void close() {
        closed = true;
        if (weights != null) weights.close();
        weights = null;
    }

    @Override
    public String toString() {
        return "ModelFolder[" + path + ", " + config.architecture() + "]";
    }
}
