package dev.lora4j.io;

import dev.lora4j.quant.QuantizationConfig;

import java.util.List;
import java.util.Map;

/**
 * Reads a config.json object into a {@link ModelConfig} the way transformers resolves it: per-architecture
 * defaults for absent fields, both RoPE spellings, and Mistral's and Qwen2's different sliding-window rules.
 */
final class ModelConfigReader {

    private ModelConfigReader() {}

    static ModelConfig read(JsonFields f) throws ConfigFormatException {
        String sourceName = f.source();
        List<String> architectures = f.optStringList("architectures");
        String modelType = f.optString("model_type");
        if (architectures != null) {
            for (String a : architectures) {
                if (!ModelConfig.SUPPORTED_ARCHITECTURES.containsKey(a)) {
                    throw new ConfigFormatException("unsupported architecture " + a + " in " + sourceName + ": "
                            + ModelConfig.SUPPORTED_TEXT);
                }
            }
        }
        if (modelType == null) {
            if (architectures == null || architectures.isEmpty()) {
                throw new ConfigFormatException(sourceName + ": neither \"model_type\" nor \"architectures\" says which"
                        + " model this is; " + ModelConfig.SUPPORTED_TEXT + " (model_type llama, mistral or qwen2)");
            }
            modelType = ModelConfig.SUPPORTED_ARCHITECTURES.get(architectures.getFirst());
        }
        if (!ModelConfig.SUPPORTED_ARCHITECTURES.containsValue(modelType)) {
            throw new ConfigFormatException("unsupported model_type \"" + modelType + "\" in " + sourceName + ": "
                    + ModelConfig.SUPPORTED_TEXT + " (model_type llama, mistral or qwen2)");
        }
        if (architectures == null || architectures.isEmpty()) architectures = List.of(architectureOf(modelType));
        String hiddenAct = f.optString("hidden_act");
        if (hiddenAct == null) hiddenAct = "silu";
        if (!hiddenAct.equals("silu")) {
            throw f.invalid("hidden_act", "is \"" + hiddenAct + "\" but lora4j runs only \"silu\" (SwiGLU) MLPs,"
                    + " which every Llama, Mistral and Qwen2 model uses");
        }

        int vocabSize = f.requireInt("vocab_size");
        int hiddenSize = f.requireInt("hidden_size");
        int intermediateSize = f.requireInt("intermediate_size");
        int numHiddenLayers = f.requireInt("num_hidden_layers");
        int numAttentionHeads = f.requireInt("num_attention_heads");
        if (numAttentionHeads <= 0) throw f.invalid("num_attention_heads", "must be positive, got " + numAttentionHeads);
        // transformers' defaults when the field is absent: Mistral 8, Qwen2 32, Llama one per attention head.
        int numKeyValueHeads = f.optInt("num_key_value_heads", switch (modelType) {
            case "mistral" -> 8;
            case "qwen2" -> 32;
            default -> numAttentionHeads;
        });
        Integer headDimGiven = f.optInt("head_dim");
        if (headDimGiven == null && hiddenSize % numAttentionHeads != 0) {
            throw f.invalid("hidden_size", "(" + hiddenSize + ") is not a multiple of num_attention_heads ("
                    + numAttentionHeads + ") and no head_dim is given");
        }
        int headDim = headDimGiven != null ? headDimGiven : hiddenSize / numAttentionHeads;
        double rmsNormEps = f.optDouble("rms_norm_eps", 1e-6);
        int maxPositionEmbeddings = f.optInt("max_position_embeddings", switch (modelType) {
            case "mistral" -> 4096 * 32;
            case "qwen2" -> 32768;
            default -> 2048;
        });
        RopeConfig rope = RopeConfig.read(f, maxPositionEmbeddings);

        int slidingWindow = 0;
        int maxWindowLayers = 0;
        if (modelType.equals("mistral")) {
            slidingWindow = f.hasKey("sliding_window") ? f.optInt("sliding_window", 0) : 4096;
        } else if (modelType.equals("qwen2") && f.optBoolean("use_sliding_window", false)) {
            slidingWindow = f.hasKey("sliding_window") ? f.optInt("sliding_window", 0) : 4096;
            maxWindowLayers = qwen2WindowStart(f, numHiddenLayers, f.optInt("max_window_layers", 28));
        }

        boolean llama = modelType.equals("llama");
        boolean attentionBias = switch (modelType) {
            case "qwen2" -> true;
            case "llama" -> f.optBoolean("attention_bias", false);
            default -> false;
        };
        boolean mlpBias = llama && f.optBoolean("mlp_bias", false);
        boolean tieWordEmbeddings = f.optBoolean("tie_word_embeddings", false);
        boolean qwen2 = modelType.equals("qwen2");
        Integer bosTokenId = f.hasKey("bos_token_id") ? f.optInt("bos_token_id") : (qwen2 ? null : 1);
        List<Integer> eosTokenIds = f.hasKey("eos_token_id") ? f.optIntOrIntList("eos_token_id") : (qwen2 ? List.of() : List.of(2));
        Integer padTokenId = f.optInt("pad_token_id");
        String dtype = f.has("dtype") ? f.optString("dtype") : f.optString("torch_dtype");
        QuantizationConfig quantization = QuantizationConfigReader.read(f);

        try {
            return new ModelConfig(architectures, modelType, vocabSize, hiddenSize, intermediateSize, numHiddenLayers,
                    numAttentionHeads, numKeyValueHeads, headDim, rmsNormEps, rope.theta(), rope.scaling(),
                    maxPositionEmbeddings, slidingWindow, maxWindowLayers, attentionBias, mlpBias, tieWordEmbeddings,
                    bosTokenId, eosTokenIds, padTokenId, dtype, hiddenAct, quantization);
        } catch (IllegalArgumentException e) {
            throw new ConfigFormatException(sourceName + ": " + e.getMessage(), e);
        }
    }

    /**
     * transformers 5 may spell Qwen2's windowed layers out as {@code layer_types}; lora4j's model takes a first
     * windowed layer, so the list must be full-attention layers followed by sliding ones.
     */
    private static int qwen2WindowStart(JsonFields f, int layers, int maxWindowLayers) throws ConfigFormatException {
        List<String> types = f.optStringList("layer_types");
        if (types == null) return maxWindowLayers;
        if (types.size() != layers) {
            throw f.invalid("layer_types", "has " + types.size() + " entries but num_hidden_layers is " + layers);
        }
        int firstSliding = types.indexOf("sliding_attention");
        if (firstSliding < 0) firstSliding = layers;
        for (int i = 0; i < layers; i++) {
            String expected = i < firstSliding ? "full_attention" : "sliding_attention";
            if (!types.get(i).equals(expected)) {
                throw f.invalid("layer_types", "[" + i + "] is \"" + types.get(i) + "\": lora4j runs Qwen2 models whose"
                        + " layers are \"full_attention\" up to max_window_layers and \"sliding_attention\" after");
            }
        }
        return firstSliding;
    }

    private static String architectureOf(String modelType) {
        for (Map.Entry<String, String> e : ModelConfig.SUPPORTED_ARCHITECTURES.entrySet()) {
            if (e.getValue().equals(modelType)) return e.getKey();
        }
        throw new IllegalArgumentException(modelType);
    }

    /** RoPE as config.json gives it, in either of transformers' two forms. */
    private record RopeConfig(double theta, RopeScaling scaling) {

        static final double DEFAULT_THETA = 10_000.0;

        static RopeConfig read(JsonFields f, int maxPositionEmbeddings) throws ConfigFormatException {
            JsonFields parameters = f.object("rope_parameters");
            JsonFields legacy = f.object("rope_scaling");
            if (parameters != null && (parameters.hasKey("full_attention") || parameters.hasKey("sliding_attention"))) {
                throw f.invalid("rope_parameters", "gives RoPE per layer type, which Llama, Mistral and Qwen2 models do not use");
            }
            // transformers 5 lets a legacy rope_scaling replace rope_parameters, and takes rope_theta from inside
            // the dict before the top-level key.
            JsonFields r = legacy != null ? legacy : parameters;
            Double theta = r == null ? null : r.optDouble("rope_theta");
            if (theta == null && parameters != null) theta = parameters.optDouble("rope_theta");
            if (theta == null) theta = f.optDouble("rope_theta");
            if (theta == null) theta = DEFAULT_THETA;
            if (r == null) return new RopeConfig(theta, null);

            String type = r.optString("rope_type");
            if (type == null) type = r.optString("type");
            if (type == null) type = "default";
            Double partial = r.optDouble("partial_rotary_factor");
            if (partial == null) partial = f.optDouble("partial_rotary_factor");
            if (partial != null && partial != 1.0) {
                throw r.invalid("partial_rotary_factor", "is " + partial + ": lora4j applies RoPE to the whole head");
            }
            RopeScaling scaling = switch (type) {
                case "default" -> null;
                case "linear" -> RopeScaling.linear(positiveFactor(r));
                case "dynamic" -> RopeScaling.dynamic(positiveFactor(r));
                case "llama3" -> {
                    double factor = positiveFactor(r);
                    Double low = r.optDouble("low_freq_factor");
                    Double high = r.optDouble("high_freq_factor");
                    if (low == null) throw r.missing("low_freq_factor", "a number, needed by llama3 RoPE");
                    if (high == null) throw r.missing("high_freq_factor", "a number, needed by llama3 RoPE");
                    int original = r.optInt("original_max_position_embeddings", maxPositionEmbeddings);
                    try {
                        yield RopeScaling.llama3(factor, low, high, original);
                    } catch (IllegalArgumentException e) {
                        throw new ConfigFormatException(f.source() + ": " + e.getMessage(), e);
                    }
                }
                default -> throw r.invalid(r.hasKey("rope_type") ? "rope_type" : "type", "is \"" + type
                        + "\": lora4j runs default, linear, dynamic and llama3 RoPE");
            };
            return new RopeConfig(theta, scaling);
        }

        private static double positiveFactor(JsonFields r) throws ConfigFormatException {
            Double factor = r.optDouble("factor");
            if (factor == null) throw r.missing("factor", "a number");
            if (!(factor > 0)) throw r.invalid("factor", "must be positive, got " + factor);
            return factor;
        }
    }
}
