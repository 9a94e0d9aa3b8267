package dev.lora4j.quant;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.json.JsonReadFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.lora4j.tensor.DType;

import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Iterator;
import java.util.List;
import java.util.Objects;

/**
 * The non-tensor part of a bitsandbytes {@code QuantState}, which transformers stores as JSON bytes in the tensor
 * {@code <weight>.quant_state.bitsandbytes__nf4} (or {@code __fp4}): bitsandbytes' {@code QuantState.as_dict(packed=True)}
 * and {@code pack_dict_to_tensor} (docs/qlora-format.md).
 *
 * @param quantType    {@code quant_type}
 * @param blockSize    {@code blocksize}: elements per absmax value
 * @param dtype        {@code dtype}: the weight's dtype before quantization (F32, F16 or BF16)
 * @param shape        {@code shape}: the weight's shape
 * @param nested       whether the absmax values are double-quantized (then the three nested fields are written)
 * @param nestedOffset {@code nested_offset}: the mean subtracted from the absmax values (0 when not nested)
 */
public record BnbQuantState(QuantType quantType, int blockSize, DType dtype, long[] shape, boolean nested,
                            float nestedOffset) {

    /** The keys {@code QuantState.from_dict} accepts (valid_qs_keys), of which the JSON may hold the non-tensor ones. */
    private static final List<String> KNOWN_KEYS = List.of("absmax", "quant_map", "nested_absmax", "nested_quant_map",
            "quant_state", "quant_type", "blocksize", "dtype", "shape", "nested_blocksize", "nested_dtype", "nested_offset");

    private static final ObjectMapper JSON = new ObjectMapper(JsonFactory.builder()
            .enable(JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS).build());

    public BnbQuantState {
        Objects.requireNonNull(quantType, "quantType");
        Objects.requireNonNull(dtype, "dtype");
        shape = shape.clone();
    }

    /** The state of a weight quantized by {@code q}. */
    public static BnbQuantState of(QuantizedTensor q) {
        return new BnbQuantState(q.spec().type(), q.spec().blockSize(), q.originalType(), q.shape(),
                q.spec().doubleQuant(), q.nestedOffset());
    }

    @Override
    public long[] shape() { return shape.clone(); }

    /**
     * The JSON exactly as Python's {@code json.dumps} writes bitsandbytes' dict: keys in {@code as_dict}'s order,
     * {@code ", "} and {@code ": "} separators, the offset (a float32 widened to a double) in Python's {@code repr}.
     */
    public String toJson() {
        StringBuilder b = new StringBuilder();
        b.append("{\"quant_type\": \"").append(quantType.bnbName()).append('"');
        b.append(", \"blocksize\": ").append(blockSize);
        b.append(", \"dtype\": \"").append(QuantizationConfig.torchName(dtype)).append('"');
        b.append(", \"shape\": [");
        for (int i = 0; i < shape.length; i++) b.append(i == 0 ? "" : ", ").append(shape[i]);
        b.append(']');
        if (nested) {
            b.append(", \"nested_blocksize\": ").append(QuantSpec.NESTED_BLOCK_SIZE);
            b.append(", \"nested_dtype\": \"float32\"");
            b.append(", \"nested_offset\": ").append(PythonFloats.repr(nestedOffset));
        }
        return b.append('}').toString();
    }

    public byte[] toJsonBytes() {
        return toJson().getBytes(StandardCharsets.UTF_8);
    }

    /**
     * Parses and checks a quant state; {@code where} ("file: tensor") prefixes every error. Checks what
     * {@code QuantState.from_dict} and {@code dequantize_4bit} check, with lora4j's block-size range (64 to 4096).
     */
    public static BnbQuantState parse(byte[] json, String where) {
        String text;
        try {
            text = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(json)).toString();
        } catch (CharacterCodingException e) {
            throw fail(where, "is not UTF-8 text, so it is not a bitsandbytes quant state (JSON bytes)");
        }
        JsonNode root;
        try {
            root = JSON.readTree(text);
        } catch (JsonProcessingException e) {
            throw fail(where, "is not valid JSON (" + e.getOriginalMessage() + "); a bitsandbytes quant state is"
                    + " JSON such as {\"quant_type\": \"nf4\", \"blocksize\": 64, ...}");
        }
        if (root == null || !root.isObject()) throw fail(where, "must hold a JSON object {...}, found " + abbreviate(text));
        for (Iterator<String> it = root.fieldNames(); it.hasNext(); ) {
            String key = it.next();
            if (!KNOWN_KEYS.contains(key)) {
                throw fail(where, "has the unknown key \"" + key + "\"; bitsandbytes' quant state has quant_type,"
                        + " blocksize, dtype, shape and, with double quantization, nested_blocksize, nested_dtype and"
                        + " nested_offset");
            }
        }
        QuantType type;
        String typeName = text(root, "quant_type", where);
        try {
            type = QuantType.parse(typeName);
        } catch (IllegalArgumentException e) {
            throw fail(where, "quant_type is \"" + typeName + "\": bitsandbytes' 4-bit types are \"nf4\" and \"fp4\"");
        }
        int blockSize = integer(root, "blocksize", where);
        if (blockSize < 64 || blockSize > 4096 || Integer.bitCount(blockSize) != 1) {
            throw fail(where, "blocksize is " + blockSize + ": lora4j reads 4-bit blocks of 64, 128, ..., 4096 elements"
                    + (blockSize == 32 ? " (bitsandbytes also has 32; quantize the 16-bit model again with a block of 64)" : ""));
        }
        DType dtype = floatType(text(root, "dtype", where), "dtype", where);
        JsonNode shapeNode = root.get("shape");
        if (shapeNode == null || !shapeNode.isArray()) throw fail(where, "shape must be a list of dimensions, found " + kind(shapeNode));
        long[] shape = new long[shapeNode.size()];
        for (int i = 0; i < shape.length; i++) {
            JsonNode d = shapeNode.get(i);
            if (!d.isIntegralNumber() || !d.canConvertToLong() || d.longValue() <= 0) {
                throw fail(where, "shape[" + i + "] must be a positive integer, found " + kind(d));
            }
            shape[i] = d.longValue();
        }
        boolean nested = root.has("nested_offset") || root.has("nested_blocksize") || root.has("nested_dtype");
        float offset = 0;
        if (nested) {
            int nestedBlock = integer(root, "nested_blocksize", where);
            if (nestedBlock != QuantSpec.NESTED_BLOCK_SIZE) {
                throw fail(where, "nested_blocksize is " + nestedBlock + " but bitsandbytes quantizes the absmax values"
                        + " in blocks of " + QuantSpec.NESTED_BLOCK_SIZE);
            }
            DType nestedType = floatType(text(root, "nested_dtype", where), "nested_dtype", where);
            if (nestedType != DType.F32) {
                throw fail(where, "nested_dtype is \"" + root.get("nested_dtype").textValue() + "\" but the absmax values"
                        + " bitsandbytes double-quantizes are \"float32\"");
            }
            JsonNode o = root.get("nested_offset");
            if (o == null || !o.isNumber()) throw fail(where, "nested_offset must be a number, found " + kind(o));
            double v = o.doubleValue();
            if (!Double.isFinite(v)) throw fail(where, "nested_offset is " + o.asText() + ": the weight's absmax values are not finite");
            offset = (float) v;
        }
        return new BnbQuantState(type, blockSize, dtype, shape, nested, offset);
    }

    private static String text(JsonNode root, String key, String where) {
        JsonNode n = root.get(key);
        if (n == null) throw fail(where, "has no \"" + key + "\"");
        if (!n.isTextual()) throw fail(where, key + " must be a string, found " + kind(n));
        return n.textValue();
    }

    private static int integer(JsonNode root, String key, String where) {
        JsonNode n = root.get(key);
        if (n == null) throw fail(where, "has no \"" + key + "\"");
        if (!n.isIntegralNumber() || !n.canConvertToInt()) throw fail(where, key + " must be an integer, found " + kind(n));
        return n.intValue();
    }

    private static DType floatType(String name, String key, String where) {
        return switch (name) {
            case "float32" -> DType.F32;
            case "float16" -> DType.F16;
            case "bfloat16" -> DType.BF16;
            default -> throw fail(where, key + " is \"" + name + "\": bitsandbytes quantizes float32, float16 and bfloat16 weights");
        };
    }

    private static String kind(JsonNode n) {
        if (n == null) return "nothing";
        if (n.isNull()) return "null";
        return n.isTextual() ? "\"" + abbreviate(n.textValue()) + "\"" : abbreviate(n.toString());
    }

    private static String abbreviate(String s) {
        return s.length() <= 80 ? s : s.substring(0, 77) + "...";
    }

    private static IllegalArgumentException fail(String where, String problem) {
        return new IllegalArgumentException(where + ": the quant state " + problem);
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof BnbQuantState s && quantType == s.quantType && blockSize == s.blockSize && dtype == s.dtype
                && Arrays.equals(shape, s.shape) && nested == s.nested
                && Float.floatToIntBits(nestedOffset) == Float.floatToIntBits(s.nestedOffset);
    }

    @Override
    public int hashCode() {
        return Objects.hash(quantType, blockSize, dtype, Arrays.hashCode(shape), nested, nestedOffset);
    }

    @Override
    public String toString() {
        return toJson();
    }
}
