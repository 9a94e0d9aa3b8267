package dev.lora4j.cli;

import dev.lora4j.quant.QuantSpec;
import dev.lora4j.quant.QuantType;
import dev.lora4j.tensor.DType;
import picocli.CommandLine.Option;

/**
 * The 4-bit options of {@code quantize} and {@code generate --load-in-4bit}, named after transformers'
 * {@code BitsAndBytesConfig}; the defaults are the QLoRA recipe (NF4, double quantization, BF16 compute, block 64).
 */
final class QuantOptions {
    @Option(names = {"--quant-type", "--bnb-4bit-quant-type"}, defaultValue = "nf4", paramLabel = "TYPE",
            description = "4-bit code: nf4 or fp4 (default: ${DEFAULT-VALUE}).")
    String quantType;

    @Option(names = {"--double-quant", "--bnb-4bit-use-double-quant"}, negatable = true, defaultValue = "true",
            fallbackValue = "true", description = "Quantize the 4-bit scales again, to 8 bits (default: on;"
            + " --no-double-quant keeps them in F32).")
    boolean doubleQuant;

    @Option(names = {"--compute-dtype", "--bnb-4bit-compute-dtype"}, defaultValue = "bf16", paramLabel = "DTYPE",
            description = "Dtype the 4-bit weights are dequantized to for products: bf16, fp16 or fp32 (default: ${DEFAULT-VALUE}).")
    String computeDtype;

    @Option(names = "--block-size", defaultValue = "64", paramLabel = "N",
            description = "Elements per 4-bit scale: 64, 128, ..., 4096 (default: ${DEFAULT-VALUE}).")
    int blockSize;

    QuantSpec spec() {
        DType compute;
        try {
            compute = DType.parse(computeDtype);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("unknown --compute-dtype '" + computeDtype + "': use bf16, fp16 or fp32");
        }
        try {
            return new QuantSpec(QuantType.parse(quantType), blockSize, doubleQuant, compute);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(e.getMessage().replace("4-bit quant type", "--quant-type")
                    .replace("4-bit block size", "--block-size").replace("4-bit compute dtype", "--compute-dtype"));
        }
    }
}
