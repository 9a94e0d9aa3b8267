package dev.lora4j.quant;

import dev.lora4j.tensor.DType;

import java.util.Objects;

/**
 * How a weight is quantized to 4 bits, as bitsandbytes' {@code BitsAndBytesConfig} says it: the code
 * ({@code bnb_4bit_quant_type}), the block size of the absmax values, whether the absmax values are themselves
 * quantized to 8 bits ({@code bnb_4bit_use_double_quant}, blocks of {@link #NESTED_BLOCK_SIZE}), and the dtype the
 * weight is dequantized to for the products ({@code bnb_4bit_compute_dtype}).
 */
public record QuantSpec(QuantType type, int blockSize, boolean doubleQuant, DType computeType) {

    public static final int DEFAULT_BLOCK_SIZE = 64;
    /** bitsandbytes quantizes the absmax values in blocks of 256. */
    public static final int NESTED_BLOCK_SIZE = 256;

    /** The QLoRA recipe: NF4, double quantization, BF16 compute. */
    public static final QuantSpec QLORA = new QuantSpec(QuantType.NF4, DEFAULT_BLOCK_SIZE, true, DType.BF16);

    public QuantSpec {
        Objects.requireNonNull(type, "type");
        Objects.requireNonNull(computeType, "computeType");
        if (blockSize < 64 || blockSize > 4096 || Integer.bitCount(blockSize) != 1) {
            throw new IllegalArgumentException("4-bit block size must be a power of two from 64 to 4096, got " + blockSize);
        }
        if (computeType != DType.BF16 && computeType != DType.F16 && computeType != DType.F32) {
            throw new IllegalArgumentException("4-bit compute dtype must be bfloat16, float16 or float32, got " + computeType);
        }
    }

    /** The number of absmax blocks of a tensor of {@code numel} elements. */
    public long blocks(long numel) { return (numel + blockSize - 1) / blockSize; }

    /** The number of nested (8-bit) absmax blocks, for double quantization. */
    public long nestedBlocks(long numel) { return (blocks(numel) + NESTED_BLOCK_SIZE - 1) / NESTED_BLOCK_SIZE; }

    /** Bytes of the packed codes and quantization state of a tensor of {@code numel} elements. */
    public long bytesFor(long numel) {
        long bytes = (numel + 1) / 2;
        if (doubleQuant) {
            bytes += blocks(numel) + 4L * nestedBlocks(numel) + 4L * 256;
        } else {
            bytes += 4L * blocks(numel);
        }
        return bytes;
    }
}
