package dev.lora4j.quant;

import dev.lora4j.tensor.DType;

import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

/**
 * The {@code quantization_config} block of a 4-bit model's {@code config.json}, as transformers writes a
 * {@code BitsAndBytesConfig} with {@code load_in_4bit=True} (docs/qlora-format.md). The block size is not part of it:
 * each weight's quant state carries its own.
 *
 * @param quantType   {@code bnb_4bit_quant_type}
 * @param doubleQuant {@code bnb_4bit_use_double_quant}
 * @param computeType {@code bnb_4bit_compute_dtype}: F32, BF16 or F16
 * @param skipModules {@code llm_int8_skip_modules}: modules kept in 16 bits; null means transformers' default
 *                    (the output layer), which lora4j always keeps in 16 bits anyway
 */
public record QuantizationConfig(QuantType quantType, boolean doubleQuant, DType computeType, List<String> skipModules) {

    public static final String QUANT_METHOD = "bitsandbytes";
    /** The only 4-bit storage lora4j reads and writes: two codes per byte. */
    public static final String QUANT_STORAGE = "uint8";

    public QuantizationConfig {
        Objects.requireNonNull(quantType, "quantType");
        Objects.requireNonNull(computeType, "computeType");
        if (computeType != DType.F32 && computeType != DType.BF16 && computeType != DType.F16) {
            throw new IllegalArgumentException("bnb_4bit_compute_dtype must be float32, bfloat16 or float16, got " + computeType);
        }
        if (skipModules != null) {
            skipModules = List.copyOf(skipModules);
            for (String key : skipModules) {
                try {
                    Pattern.compile(key);
                } catch (PatternSyntaxException e) {
                    throw new IllegalArgumentException("llm_int8_skip_modules entry '" + key + "' is not a valid pattern: "
                            + e.getDescription());
                }
            }
        }
    }

    /** The config a model quantized with {@code spec} is described by. */
    public static QuantizationConfig of(QuantSpec spec) {
        return new QuantizationConfig(spec.type(), spec.doubleQuant(), spec.computeType(), null);
    }

    /** The spec of weights quantized under this config with the given block size. */
    public QuantSpec spec(int blockSize) {
        return new QuantSpec(quantType, blockSize, doubleQuant, computeType);
    }

    /**
     * Whether transformers leaves the module (e.g. {@code model.layers.0.mlp.down_proj}) unquantized under this
     * config's {@code llm_int8_skip_modules}: a key matches as {@code re.match(key + "\.")}, {@code re.match(key)} or
     * a suffix (quantizers_utils.py: should_convert_module).
     */
    public boolean skips(String moduleName) {
        if (skipModules == null) return false;
        for (String key : skipModules) {
            if (moduleName.endsWith(key)) return true;
            if (Pattern.compile(key).matcher(moduleName).lookingAt()) return true;
        }
        return false;
    }

    /**
     * The block as transformers writes it in config.json: every {@code BitsAndBytesConfig} attribute, keys sorted.
     * Values are Strings, Booleans, a Double, null or a List.
     */
    public Map<String, Object> toJsonMap() {
        Map<String, Object> m = new TreeMap<>();
        m.put("_load_in_4bit", true);
        m.put("_load_in_8bit", false);
        m.put("bnb_4bit_compute_dtype", torchName(computeType));
        m.put("bnb_4bit_quant_storage", QUANT_STORAGE);
        m.put("bnb_4bit_quant_type", quantType.bnbName());
        m.put("bnb_4bit_use_double_quant", doubleQuant);
        m.put("llm_int8_enable_fp32_cpu_offload", false);
        m.put("llm_int8_has_fp16_weight", false);
        m.put("llm_int8_skip_modules", skipModules);
        m.put("llm_int8_threshold", 6.0);
        m.put("load_in_4bit", true);
        m.put("load_in_8bit", false);
        m.put("quant_method", QUANT_METHOD);
        return m;
    }

    /** torch's name of a float dtype, as bitsandbytes and transformers write it: "bfloat16", "float16", "float32". */
    public static String torchName(DType t) {
        return switch (t) {
            case F32 -> "float32";
            case F16 -> "float16";
            case BF16 -> "bfloat16";
            default -> throw new IllegalArgumentException("no 4-bit compute or weight dtype " + t);
        };
    }

    @Override
    public String toString() {
        return quantType + (doubleQuant ? " with double quantization" : "") + ", compute " + torchName(computeType);
    }
}
