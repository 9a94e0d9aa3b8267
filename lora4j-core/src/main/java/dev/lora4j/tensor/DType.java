package dev.lora4j.tensor;

import java.util.Locale;

/**
 * Element types, named as safetensors names them. Sub-byte formats (NF4/FP4) are not dtypes: they are
 * quantized weights, stored as packed {@link #U8} bytes plus their quantization state.
 */
public enum DType {
    F64("F64", 8, true),
    F32("F32", 4, true),
    F16("F16", 2, true),
    BF16("BF16", 2, true),
    F8_E4M3("F8_E4M3", 1, true),
    F8_E5M2("F8_E5M2", 1, true),
    I64("I64", 8, false),
    I32("I32", 4, false),
    I16("I16", 2, false),
    I8("I8", 1, false),
    U64("U64", 8, false),
    U32("U32", 4, false),
    U16("U16", 2, false),
    U8("U8", 1, false),
    BOOL("BOOL", 1, false);

    private final String safetensorsName;
    private final int byteSize;
    private final boolean floatingPoint;

    DType(String safetensorsName, int byteSize, boolean floatingPoint) {
        this.safetensorsName = safetensorsName;
        this.byteSize = byteSize;
        this.floatingPoint = floatingPoint;
    }

    public String safetensorsName() { return safetensorsName; }

    public int byteSize() { return byteSize; }

    public boolean isFloatingPoint() { return floatingPoint; }

    public long bytesFor(long elements) { return Math.multiplyExact(elements, (long) byteSize); }

    /** Parses a safetensors dtype name ("BF16", "F32", ...); also accepts torch names ("bfloat16", "float32"). */
    public static DType parse(String name) {
        String n = name.trim();
        for (DType t : values()) {
            if (t.safetensorsName.equals(n)) return t;
        }
        return switch (n.toLowerCase(Locale.ROOT)) {
            case "float64", "double", "torch.float64" -> F64;
            case "float32", "float", "fp32", "torch.float32" -> F32;
            case "float16", "half", "fp16", "torch.float16" -> F16;
            case "bfloat16", "bf16", "torch.bfloat16" -> BF16;
            case "int64", "torch.int64" -> I64;
            case "int32", "torch.int32" -> I32;
            case "int16", "torch.int16" -> I16;
            case "int8", "torch.int8" -> I8;
            case "uint8", "torch.uint8" -> U8;
            case "bool", "torch.bool" -> BOOL;
            default -> throw new IllegalArgumentException("unknown dtype '" + name
                    + "': expected one of F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL (or a torch name such as bfloat16)");
        };
    }
}
