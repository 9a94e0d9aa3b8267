package dev.lora4j.cli;

import dev.lora4j.model.RandomModelWriter;
import dev.lora4j.tensor.DType;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;

@Command(name = "demo",
        description = {"The main job on an embedded default: fine-tune a small model with LoRA, no download needed.",
                "Creates a tiny Llama (random weights, byte-level BPE tokenizer) on first use, then trains a LoRA",
                "adapter on a bundled dataset (who gave each State of the Union address), showing progress, the",
                "eval loss and the model's answers before and after, and writes the adapter in PEFT's format.",
                "It is `lora4j train` with the settings of lora4j-train/examples/sotu-demo.yaml."})
final class DemoCommand implements Callable<Integer> {

    @Option(names = "--home", description = "Where the demo model and adapter go (default: $LORA4J_HOME, else ~/.cache/lora4j).")
    Path home;

    @Option(names = "--device", defaultValue = "auto", description = "cpu, cuda or auto (default: ${DEFAULT-VALUE}).")
    String device;

    @Option(names = "--epochs", defaultValue = "16", description = "Epochs over the 180 training records (default: ${DEFAULT-VALUE}).")
    int epochs;

    @Override
    public Integer call() throws IOException {
        Path root = home != null ? home : defaultHome();
        Path model = root.resolve("demo-tiny");
        Path adapter = root.resolve("demo-adapter");
        PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        if (!Files.isRegularFile(model.resolve("config.json"))) {
            out.println("Creating the demo model in " + model + " (a tiny Llama with a byte-level BPE tokenizer)...");
            var written = RandomModelWriter.write(model, RandomModelWriter.preset("tiny"),
                    RandomModelWriter.Options.of(DType.BF16, 42), line -> out.println("  " + line));
            out.printf(Locale.ROOT, "  %,d parameters, %s%n", written.parameters(), Sizes.bytes(written.bytes()));
        }
        out.println("Fine-tuning it with LoRA (r=16, alpha 32, all linear layers) to answer who gave a State of the");
        out.println("Union address; 1956 and 1984 are held out of the training data.");
        out.println();
        List<String> args = new ArrayList<>(List.of("train",
                "--model-name-or-path", model.toString(),
                "--dataset", "bundled:sotu-presidents-train",
                "--eval-file", "bundled:sotu-presidents-eval",
                "--output-dir", adapter.toString(),
                "--device", device,
                "--r", "16", "--lora-alpha", "32", "--target-modules", "all-linear",
                "--learning-rate", "3e-3", "--num-train-epochs", Integer.toString(epochs),
                "--per-device-train-batch-size", "8", "--max-length", "64",
                "--logging-steps", "23", "--eval-steps", "92", "--save-steps", "184", "--save-total-limit", "2",
                "--seed", "42", "--gradient-checkpointing", "false",
                "--sample-prompts", "Who gave the State of the Union address in 1862?,"
                        + "Who gave the State of the Union address in 1956?,"
                        + "Who gave the State of the Union address in 1984?",
                "--sample-max-new-tokens", "12"));
        int code = Lora4jCommand.newCommandLine().execute(args.toArray(String[]::new));
        if (code == 0) {
            out.println();
            out.println("Next: ./lora4j train --help, or point `train` at a Hugging Face model folder and your own JSONL data.");
        }
        return code;
    }

    static Path defaultHome() {
        String env = System.getenv("LORA4J_HOME");
        return env != null && !env.isBlank() ? Path.of(env) : Path.of(System.getProperty("user.home"), ".cache", "lora4j");
    }
}
