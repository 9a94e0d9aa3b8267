package dev.lora4j.cli;

import dev.lora4j.io.ModelConfig;
import dev.lora4j.model.RandomModelWriter;
import dev.lora4j.tensor.DType;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;

@Command(name = "init-model",
        description = {"Write a randomly initialised model folder in Hugging Face format (config.json, safetensors,",
                "tokenizer.json, generation_config.json), for tests, demos and benchmarks. Presets: tiny, 100m,",
                "llama2-7b, mistral-7b, llama3-8b, llama3.1-8b, qwen2-0.5b (the real models' shapes)."})
final class InitModelCommand implements Callable<Integer> {

    @Option(names = "--preset", defaultValue = "tiny", description = "Shape preset (default: ${DEFAULT-VALUE}).")
    String preset;

    @Option(names = {"-o", "--output"}, required = true, description = "Folder to write (created; must be empty or absent).")
    Path output;

    @Option(names = "--dtype", defaultValue = "bf16", description = "Weight dtype: f32, bf16 or f16 (default: ${DEFAULT-VALUE}).")
    String dtype;

    @Option(names = "--seed", defaultValue = "0", description = "Seed of the random weights (default: ${DEFAULT-VALUE}).")
    long seed;

    @Option(names = "--layers", description = "Override the preset's number of layers (quick, smaller variants).")
    Integer layers;

    @Option(names = "--force", description = "Write into a folder that already has files.")
    boolean force;

    @Override
    public Integer call() throws IOException {
        if (Files.isDirectory(output) && !force) {
            try (var entries = Files.list(output)) {
                if (entries.findAny().isPresent()) {
                    throw new IllegalArgumentException(output + " is not empty: choose another folder or pass --force");
                }
            }
        }
        ModelConfig config = RandomModelWriter.preset(preset);
        if (layers != null) config = withLayers(config, layers);
        DType type = DType.parse(dtype.toUpperCase(Locale.ROOT).equals("BF16") ? "BF16" : dtype);
        var written = RandomModelWriter.write(output, config, RandomModelWriter.Options.of(type, seed),
                line -> System.err.println("  " + line));
        System.out.printf(Locale.ROOT, "wrote %s: %s, %,d parameters, %s of weights in %d file(s)%n",
                written.folder(), config.architecture(), written.parameters(), Sizes.bytes(written.bytes()),
                written.weightFiles().size());
        return 0;
    }

    private static ModelConfig withLayers(ModelConfig c, int layers) {
        if (layers < 1) throw new IllegalArgumentException("--layers must be at least 1, got " + layers);
        return new ModelConfig(c.architectures(), c.modelType(), c.vocabSize(), c.hiddenSize(), c.intermediateSize(),
                layers, c.numAttentionHeads(), c.numKeyValueHeads(), c.headDim(), c.rmsNormEps(),
                c.ropeTheta(), c.ropeScaling(), c.maxPositionEmbeddings(), c.slidingWindow(), c.maxWindowLayers(),
                c.attentionBias(), c.mlpBias(), c.tieWordEmbeddings(), c.bosTokenId(), c.eosTokenIds(),
                c.padTokenId(), c.dtype(), c.hiddenAct());
    }
}
