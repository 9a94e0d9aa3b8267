package dev.lora4j.io;

import dev.lora4j.quant.QuantType;
import dev.lora4j.quant.QuantizationConfig;
import dev.lora4j.tensor.DType;

import java.util.List;

/**
 * Reads config.json's {@code quantization_config} as transformers resolves it
 * ({@code AutoQuantizationConfig.from_dict}, {@code BitsAndBytesConfig}): {@code load_in_4bit} or {@code load_in_8bit}
 * mean bitsandbytes whatever {@code quant_method} says; absent fields take {@code BitsAndBytesConfig}'s defaults.
 * Only bitsandbytes 4-bit in uint8 storage is accepted; everything else is an error saying what lora4j reads.
 */
final class QuantizationConfigReader {

    private static final String WHAT_TO_DO = "lora4j reads bitsandbytes 4-bit checkpoints (nf4/fp4) and can quantize"
            + " a 16-bit model itself: load the unquantized model with --load-in-4bit, or write a 4-bit copy with"
            + " lora4j quantize";

    private QuantizationConfigReader() {}

    /** The block of {@code root}, or null when the model is not quantized. */
    static QuantizationConfig read(JsonFields root) throws ConfigFormatException {
        JsonFields q = root.object("quantization_config");
        if (q == null) return null;
        boolean in4 = bool(q, "load_in_4bit", "_load_in_4bit");
        boolean in8 = bool(q, "load_in_8bit", "_load_in_8bit");
        String method = q.optString("quant_method");
        if (in8) {
            throw q.invalid("load_in_8bit", "is true: this is an 8-bit (LLM.int8) checkpoint. " + WHAT_TO_DO);
        }
        if (!in4) {
            if (method == null) {
                throw q.missing("quant_method", "\"bitsandbytes\" with \"load_in_4bit\": true");
            }
            if (method.equals(QuantizationConfig.QUANT_METHOD)) {
                throw q.invalid("load_in_4bit", "is not true, so this bitsandbytes checkpoint is not in 4 bits. " + WHAT_TO_DO);
            }
            throw q.invalid("quant_method", "is \"" + method + "\", a quantization lora4j does not read. " + WHAT_TO_DO);
        }
        if (method != null && !method.equals(QuantizationConfig.QUANT_METHOD)) {
            throw q.invalid("quant_method", "is \"" + method + "\" but load_in_4bit is true; a 4-bit bitsandbytes"
                    + " checkpoint says \"bitsandbytes\"");
        }
        String type = q.optString("bnb_4bit_quant_type");
        QuantType quantType;
        try {
            quantType = type == null ? QuantType.FP4 : QuantType.parse(type);
        } catch (IllegalArgumentException e) {
            throw q.invalid("bnb_4bit_quant_type", "is \"" + type + "\": bitsandbytes' 4-bit types are \"nf4\" and \"fp4\"");
        }
        boolean doubleQuant = q.optBoolean("bnb_4bit_use_double_quant", false);
        String compute = q.optString("bnb_4bit_compute_dtype");
        DType computeType = DType.F32;
        if (compute != null) {
            try {
                computeType = DType.parse(compute);
            } catch (IllegalArgumentException e) {
                computeType = null;
            }
            if (computeType != DType.F32 && computeType != DType.BF16 && computeType != DType.F16) {
                throw q.invalid("bnb_4bit_compute_dtype", "is \"" + compute + "\": use \"float32\", \"bfloat16\" or \"float16\"");
            }
        }
        String storage = q.optString("bnb_4bit_quant_storage");
        if (storage != null && !storage.equals(QuantizationConfig.QUANT_STORAGE)) {
            throw q.invalid("bnb_4bit_quant_storage", "is \"" + storage + "\": lora4j reads 4-bit weights packed two"
                    + " codes per byte (\"uint8\"); the other storages exist for FSDP. Save the model again with"
                    + " bnb_4bit_quant_storage=torch.uint8");
        }
        List<String> skip = q.optStringList("llm_int8_skip_modules");
        try {
            return new QuantizationConfig(quantType, doubleQuant, computeType, skip);
        } catch (IllegalArgumentException e) {
            throw new ConfigFormatException(root.source() + ": quantization_config: " + e.getMessage(), e);
        }
    }

    /** transformers writes both the property ({@code load_in_4bit}) and its backing field ({@code _load_in_4bit}). */
    private static boolean bool(JsonFields q, String name, String field) throws ConfigFormatException {
        Boolean v = q.optBoolean(name);
        if (v == null) v = q.optBoolean(field);
        return v != null && v;
    }
}
