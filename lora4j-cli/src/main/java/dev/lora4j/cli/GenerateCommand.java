package dev.lora4j.cli;

import dev.lora4j.api.LanguageModel;
import dev.lora4j.api.LoadOptions;
import dev.lora4j.api.Lora4j;
import dev.lora4j.chat.ChatMessage;
import dev.lora4j.generate.GenerationOptions;
import dev.lora4j.generate.GenerationResult;
import dev.lora4j.tensor.DType;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
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

@Command(name = "generate", description = "Generate text from a model folder, streaming tokens to the console.")
final class GenerateCommand implements Callable<Integer> {

    @Option(names = {"-m", "--model"}, required = true, description = "Hugging Face model folder (config.json, *.safetensors, tokenizer.json).")
    Path model;

    @Option(names = {"-p", "--prompt"}, description = "The prompt (or the user message with --chat).")
    String prompt;

    @Option(names = "--prompt-file", description = "Read the prompt from this file.")
    Path promptFile;

    @Option(names = "--chat", description = "Wrap the prompt as a user message in the model's chat template.")
    boolean chat;

    @Option(names = "--system", description = "System message (with --chat).")
    String system;

    @Option(names = "--dtype", description = "Keep weights as f32, bf16 or f16 (default: as stored).")
    String dtype;

    @Option(names = "--quiet", description = "Print only the generated text, no statistics.")
    boolean quiet;

    @Option(names = "--load-in-4bit", description = "Quantize the layer projections to 4 bits while loading (QLoRA's"
            + " NF4 by default; see --quant-type, --double-quant, --compute-dtype, --block-size). A model saved in"
            + " 4 bits loads in 4 bits without it.")
    boolean loadIn4bit;

    @Mixin
    QuantOptions quant;

    @Mixin
    DeviceOption device;

    @Mixin
    SamplingOptions sampling;

    @Override
    public Integer call() throws IOException {
        String text = prompt != null ? prompt
                : promptFile != null ? Files.readString(promptFile, StandardCharsets.UTF_8)
                : null;
        if (text == null) throw new IllegalArgumentException("give a prompt with --prompt TEXT or --prompt-file FILE");
        LoadOptions load = LoadOptions.defaults();
        if (dtype != null) load = load.withWeightType(DType.parse(dtype.toUpperCase(Locale.ROOT)));
        if (loadIn4bit) load = load.withQuantization(quant.spec());
        PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        long t0 = System.nanoTime();
        try (LanguageModel lm = Lora4j.load(model, device.device(), load)) {
            long loadNanos = System.nanoTime() - t0;
            if (!quiet) {
                System.err.printf(Locale.ROOT, "loaded %s (%s) on %s in %.1f s%n", model, lm.config().architecture(),
                        lm.backend().description(), loadNanos / 1e9);
            }
            GenerationOptions options = sampling.over(lm.defaultOptions());
            GenerationResult result;
            if (chat) {
                List<ChatMessage> messages = new ArrayList<>();
                if (system != null) messages.add(new ChatMessage("system", system));
                messages.add(new ChatMessage("user", text));
                result = lm.chat(messages, options, out::print);
            } else {
                out.print(text);
                result = lm.generate(text, options, out::print);
            }
            out.println();
            if (!quiet) printStats(System.err, result, options, lm);
        }
        return 0;
    }

    static void printStats(PrintStream sink, GenerationResult r, GenerationOptions options, LanguageModel lm) {
        var t = r.timings();
        sink.printf(Locale.ROOT,
                "%d prompt tokens at %.1f tokens/s, %d generated at %.2f tokens/s (%s, stopped: %s%s); peak memory %s%n",
                t.prefillTokens(), t.prefillTokensPerSecond(), t.decodeTokens(), t.decodeTokensPerSecond(),
                lm.backend().name(), r.stopReason().toString().toLowerCase(Locale.ROOT),
                options.isGreedy() ? ", greedy" : ", seed " + r.seed(), Sizes.bytes(lm.backend().peakMemoryInUse()));
    }
}
