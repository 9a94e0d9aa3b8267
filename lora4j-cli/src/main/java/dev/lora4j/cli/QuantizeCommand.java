package dev.lora4j.cli;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.Backends;
import dev.lora4j.io.ModelFolder;
import dev.lora4j.quant.DequantizedDump;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.quant.QuantizedCheckpointWriter;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

@Command(name = "quantize",
        description = {"Write a 4-bit copy of a model folder in the form transformers saves bitsandbytes models in",
                "(NF4/FP4 projections with their quant state, config.json's quantization_config), loadable by",
                "lora4j and by transformers with bitsandbytes. Embeddings, norms and lm_head stay as stored."})
final class QuantizeCommand implements Callable<Integer> {

    @Option(names = {"-m", "--model"}, required = true, description = "Hugging Face model folder to quantize (16- or 32-bit).")
    Path model;

    @Option(names = {"-o", "--output"}, required = true, description = "Folder to write (created; must be empty or absent).")
    Path output;

    @Mixin
    QuantOptions quant;

    @Option(names = "--max-shard-size", defaultValue = "5GB", paramLabel = "SIZE",
            description = "Largest weight file, as transformers' max_shard_size: 5GB, 500MB, 2GiB... (default: ${DEFAULT-VALUE}).")
    String maxShardSize;

    @Option(names = "--force", description = "Replace an output folder that already has files.")
    boolean force;

    @Option(names = "--dequantized-dump", paramLabel = "FILE",
            description = "Also write every 4-bit weight as lora4j dequantizes it (F32 safetensors), for tools/bnb_checkpoint.py.")
    Path dequantizedDump;

    @Mixin
    DeviceOption device;

    @Override
    public Integer call() throws IOException {
        QuantSpec spec = quant.spec();
        long shardBytes = parseSize(maxShardSize);
        long t0 = System.nanoTime();
        try (ModelFolder source = ModelFolder.open(model);
             Backend backend = Backends.open(device.device().backendName(), System.err::println)) {
            var options = new QuantizedCheckpointWriter.Options(spec, shardBytes, force, line -> System.err.println("  " + line));
            var r = QuantizedCheckpointWriter.write(source, output, backend, options);
            System.out.printf(Locale.ROOT, "wrote %s: %d projections as %s, block %d; %s of weights (from %s) in %d file(s),"
                            + " %.1f s on %s%n", r.folder(), r.quantizedWeights(), TrainCommand.describe(spec), spec.blockSize(),
                    Sizes.bytes(r.bytes()), Sizes.bytes(r.sourceBytes()), r.weightFiles().size(),
                    (System.nanoTime() - t0) / 1e9, backend.name());
            if (dequantizedDump != null) {
                try (ModelFolder written = ModelFolder.open(r.folder())) {
                    int n = DequantizedDump.write(written, backend, dequantizedDump);
                    System.out.printf(Locale.ROOT, "wrote %s: %d weights as lora4j dequantizes them (F32)%n", dequantizedDump, n);
                }
            }
        }
        return 0;
    }

    private static final Pattern SIZE = Pattern.compile("(?i)\\s*(\\d+(?:\\.\\d+)?)\\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)?\\s*");

    /** transformers' convert_file_size_to_int: KB/MB/GB are powers of 10, KiB/MiB/GiB powers of 2. */
    static long parseSize(String text) {
        Matcher m = SIZE.matcher(text);
        if (!m.matches()) {
            throw new IllegalArgumentException("--max-shard-size '" + text + "' is not a size: write e.g. 5GB, 500MB or 2GiB");
        }
        double n = Double.parseDouble(m.group(1));
        String unit = m.group(2) == null ? "b" : m.group(2).toLowerCase(Locale.ROOT);
        double factor = switch (unit) {
            case "kb" -> 1e3;
            case "mb" -> 1e6;
            case "gb" -> 1e9;
            case "tb" -> 1e12;
            case "kib" -> 1024.0;
            case "mib" -> 1024.0 * 1024;
            case "gib" -> 1024.0 * 1024 * 1024;
            case "tib" -> 1024.0 * 1024 * 1024 * 1024;
            default -> 1;
        };
        long bytes = (long) (n * factor);
        if (bytes <= 0) throw new IllegalArgumentException("--max-shard-size must be positive, got " + text);
        return bytes;
    }
}
