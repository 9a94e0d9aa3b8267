package dev.lora4j.cli;

import dev.lora4j.api.LanguageModel;
import dev.lora4j.api.LoadOptions;
import dev.lora4j.api.Lora4j;
import dev.lora4j.generate.GenerationOptions;
import dev.lora4j.generate.GenerationResult;
import dev.lora4j.model.RandomModelWriter;
import dev.lora4j.tensor.DType;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Locale;
import java.util.concurrent.Callable;

@Command(name = "demo",
        description = {"The main job on an embedded default: create a small model folder with a tokenizer (no download),",
                "load it, tokenize a prompt and generate text, streaming. The weights are random, so the text is noise;",
                "the run shows the whole pipeline. Use generate with a real model folder for real text."})
final class DemoCommand implements Callable<Integer> {

    @Option(names = "--model-dir", description = "Where the demo model lives (default: $LORA4J_HOME/demo-tiny, LORA4J_HOME defaulting to ~/.cache/lora4j).")
    Path modelDir;

    @Option(names = {"-p", "--prompt"}, defaultValue = "Call me Ishmael. Some years ago,", description = "The prompt (default: ${DEFAULT-VALUE}).")
    String prompt;

    @Mixin
    DeviceOption device;

    @Mixin
    SamplingOptions sampling;

    @Override
    public Integer call() throws IOException {
        Path dir = modelDir != null ? modelDir : home().resolve("demo-tiny");
        PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        if (!Files.isRegularFile(dir.resolve("config.json"))) {
            out.println("Creating the demo model in " + dir + " (a tiny Llama with a byte-level BPE tokenizer)...");
            var written = RandomModelWriter.write(dir, RandomModelWriter.preset("tiny"),
                    RandomModelWriter.Options.of(DType.BF16, 42), line -> out.println("  " + line));
            out.printf(Locale.ROOT, "  %,d parameters, %s%n", written.parameters(), Sizes.bytes(written.bytes()));
        }
        try (LanguageModel lm = Lora4j.load(dir, device.device(), LoadOptions.defaults())) {
            var c = lm.config();
            out.printf(Locale.ROOT, "%nModel: %s, %d layers, hidden %d, %d/%d heads, vocab %d, on %s%n", c.architecture(),
                    c.numHiddenLayers(), c.hiddenSize(), c.numAttentionHeads(), c.numKeyValueHeads(), c.vocabSize(),
                    lm.backend().description());
            int[] ids = lm.tokenizer().encode(prompt, true);
            out.println("Prompt: " + prompt);
            out.println("Tokens: " + Arrays.toString(ids));
            GenerationOptions options = sampling.over(GenerationOptions.sampling(48, 0.8, 50, 0.95, 7));
            out.println(options.isGreedy() ? "Greedy decoding:" : String.format(Locale.ROOT,
                    "Sampling (temperature %s, top-k %d, top-p %s, seed %d):", options.temperature(), options.topK(),
                    options.topP(), options.seed()));
            out.print(prompt);
            GenerationResult result = lm.generate(ids, options, out::print);
            out.println();
            GenerateCommand.printStats(out, result, options, lm);
        }
        return 0;
    }

    static Path home() {
        String env = System.getenv("LORA4J_HOME");
        return env != null && !env.isBlank() ? Path.of(env) : Path.of(System.getProperty("user.home"), ".cache", "lora4j");
    }
}
