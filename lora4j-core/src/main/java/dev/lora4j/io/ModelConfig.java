package dev.lora4j.io;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.util.DefaultIndenter;
import com.fasterxml.jackson.core.util.DefaultPrettyPrinter;
import com.fasterxml.jackson.core.util.Separators;

import java.io.IOException;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;

/**
 * A Llama-family model's {@code config.json}, read as transformers reads it: Llama, Mistral and Qwen2, RoPE in
 * either transformers 5's {@code rope_parameters} form or the older {@code rope_theta} + {@code rope_scaling}, and
 * transformers' per-architecture defaults for absent fields.
 *
 * <p>Per-architecture meaning of a few fields:
 * <ul>
 *   <li>{@code attentionBias}: q, k and v projections have biases. Llama's {@code attention_bias} also gives o a
 *       bias; Qwen2 always has q/k/v biases and never an o bias; Mistral has none. See {@link #qkvBias()} and
 *       {@link #outputProjectionBias()}.</li>
 *   <li>{@code slidingWindow}: 0 for full attention. Layers with index {@code >= maxWindowLayers} use the window
 *       (Mistral: all layers, {@code maxWindowLayers} 0; Qwen2: only with {@code use_sliding_window}). See
 *       {@link #slidingWindowFor(int)}.</li>
 *   <li>{@code eosTokenIds}: never null, possibly empty; {@code bosTokenId} and {@code padTokenId} may be null.</li>
 * </ul>
 */
public record ModelConfig(
        List<String> architectures,
        String modelType,
        int vocabSize,
        int hiddenSize,
        int intermediateSize,
        int numHiddenLayers,
        int numAttentionHeads,
        int numKeyValueHeads,
        int headDim,
        double rmsNormEps,
        double ropeTheta,
        RopeScaling ropeScaling,
        int maxPositionEmbeddings,
        int slidingWindow,
        int maxWindowLayers,
        boolean attentionBias,
        boolean mlpBias,
        boolean tieWordEmbeddings,
        Integer bosTokenId,
        List<Integer> eosTokenIds,
        Integer padTokenId,
        String dtype,
        String hiddenAct) {

    /** Architecture class names lora4j runs, with their {@code model_type}. */
    public static final Map<String, String> SUPPORTED_ARCHITECTURES = supportedArchitectures();

    private static final String SUPPORTED_TEXT = "lora4j runs LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM";

    private static Map<String, String> supportedArchitectures() {
        Map<String, String> m = new LinkedHashMap<>();
        m.put("LlamaForCausalLM", "llama");
        m.put("MistralForCausalLM", "mistral");
        m.put("Qwen2ForCausalLM", "qwen2");
        return java.util.Collections.unmodifiableMap(m);
    }

    /** Validates the combination; parse errors name the file, this names the field. */
    public ModelConfig {
        architectures = List.copyOf(Objects.requireNonNull(architectures, "architectures"));
        eosTokenIds = List.copyOf(eosTokenIds == null ? List.of() : eosTokenIds);
        Objects.requireNonNull(modelType, "modelType");
        if (architectures.isEmpty()) throw new IllegalArgumentException("architectures must name the model class");
        for (String a : architectures) {
            if (!SUPPORTED_ARCHITECTURES.containsKey(a)) {
                throw new IllegalArgumentException("unsupported architecture " + a + ": " + SUPPORTED_TEXT);
            }
        }
        if (!SUPPORTED_ARCHITECTURES.containsValue(modelType)) {
            throw new IllegalArgumentException("unsupported model_type \"" + modelType + "\": lora4j runs llama, mistral"
                    + " and qwen2 models (" + SUPPORTED_TEXT.substring("lora4j runs ".length()) + ")");
        }
        if (!"silu".equals(hiddenAct)) {
            throw new IllegalArgumentException("hidden_act is \"" + hiddenAct + "\" but Llama-family MLPs use \"silu\""
                    + " (SwiGLU); lora4j runs only silu");
        }
        positive("vocab_size", vocabSize);
        positive("hidden_size", hiddenSize);
        positive("intermediate_size", intermediateSize);
        positive("num_hidden_layers", numHiddenLayers);
        positive("num_attention_heads", numAttentionHeads);
        positive("num_key_value_heads", numKeyValueHeads);
        positive("head_dim", headDim);
        positive("max_position_embeddings", maxPositionEmbeddings);
        if (numAttentionHeads % numKeyValueHeads != 0) {
            throw new IllegalArgumentException("num_attention_heads (" + numAttentionHeads + ") must be a multiple of"
                    + " num_key_value_heads (" + numKeyValueHeads + "): each key/value head serves a whole group");
        }
        if (headDim % 2 != 0) {
            throw new IllegalArgumentException("head_dim (" + headDim + ") must be even: RoPE rotates pairs of dimensions");
        }
        if (!(rmsNormEps > 0) || !Double.isFinite(rmsNormEps)) {
            throw new IllegalArgumentException("rms_norm_eps must be a positive number, got " + rmsNormEps);
        }
        if (!(ropeTheta > 0) || !Double.isFinite(ropeTheta)) {
            throw new IllegalArgumentException("rope_theta must be a positive number, got " + ropeTheta);
        }
        if (slidingWindow < 0) throw new IllegalArgumentException("sliding_window must be >= 0 (0: none), got " + slidingWindow);
        if (maxWindowLayers < 0) throw new IllegalArgumentException("max_window_layers must be >= 0, got " + maxWindowLayers);
    }

    private static void positive(String field, int value) {
        if (value <= 0) throw new IllegalArgumentException(field + " must be a positive integer, got " + value);
    }

    /** Reads {@code config.json}; errors name the file. */
    public static ModelConfig load(Path configJson) throws IOException {
        return parse(readUtf8(configJson), configJson.toString());
    }

    static String readUtf8(Path file) throws IOException {
        try {
            return Files.readString(file, StandardCharsets.UTF_8);
        } catch (CharacterCodingException e) {
            throw new ConfigFormatException(file + " is not UTF-8 text: is it really a JSON file?", e);
        }
    }

    /** Parses config.json text; {@code sourceName} (usually the file's path) names it in errors. */
    public static ModelConfig parse(String json, String sourceName) throws ConfigFormatException {
        JsonFields f = JsonFields.parse(json, sourceName);
        List<String> architectures = f.optStringList("architectures");
        String modelType = f.optString("model_type");
        if (architectures != null) {
            for (String a : architectures) {
                if (!SUPPORTED_ARCHITECTURES.containsKey(a)) {
                    throw new ConfigFormatException("unsupported architecture " + a + " in " + sourceName + ": " + SUPPORTED_TEXT);
                }
            }
        }
        if (modelType == null) {
            if (architectures == null || architectures.isEmpty()) {
                throw new ConfigFormatException(sourceName + ": neither \"model_type\" nor \"architectures\" says which"
                        + " model this is; " + SUPPORTED_TEXT + " (model_type llama, mistral or qwen2)");
            }
            modelType = SUPPORTED_ARCHITECTURES.get(architectures.getFirst());
        }
        if (!SUPPORTED_ARCHITECTURES.containsValue(modelType)) {
            throw new ConfigFormatException("unsupported model_type \"" + modelType + "\" in " + sourceName + ": "
                    + SUPPORTED_TEXT + " (model_type llama, mistral or qwen2)");
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

        try {
            return new ModelConfig(architectures, modelType, vocabSize, hiddenSize, intermediateSize, numHiddenLayers,
                    numAttentionHeads, numKeyValueHeads, headDim, rmsNormEps, rope.theta(), rope.scaling(),
                    maxPositionEmbeddings, slidingWindow, maxWindowLayers, attentionBias, mlpBias, tieWordEmbeddings,
                    bosTokenId, eosTokenIds, padTokenId, dtype, hiddenAct);
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
        for (Map.Entry<String, String> e : SUPPORTED_ARCHITECTURES.entrySet()) {
            if (e.getValue().equals(modelType)) return e.getKey();
        }
        throw new IllegalArgumentException(modelType);
    }

    /** The architecture class name, e.g. "LlamaForCausalLM". */
    public String architecture() {
        return architectures.getFirst();
    }

    /** Query heads per key/value head (grouped-query attention). */
    public int numKeyValueGroups() {
        return numAttentionHeads / numKeyValueHeads;
    }

    /** The attention window of layer {@code layer}, 0 when it attends to the whole sequence. */
    public int slidingWindowFor(int layer) {
        return slidingWindow > 0 && layer >= maxWindowLayers ? slidingWindow : 0;
    }

    /** Whether q_proj, k_proj and v_proj have biases. */
    public boolean qkvBias() {
        return attentionBias;
    }

    /** Whether o_proj has a bias: Llama with attention_bias only. */
    public boolean outputProjectionBias() {
        return attentionBias && modelType.equals("llama");
    }

    /**
     * The config.json transformers 5 writes for this model (keys sorted, 2-space indent): RoPE as
     * {@code rope_parameters}; also the top-level {@code rope_theta}, and {@code rope_scaling} when RoPE is scaled,
     * which transformers 5 folds into {@code rope_parameters} and transformers 4 needs.
     */
    public String toJson() {
        Map<String, Object> m = new TreeMap<>();
        m.put("architectures", architectures);
        m.put("model_type", modelType);
        m.put("vocab_size", vocabSize);
        m.put("hidden_size", hiddenSize);
        m.put("intermediate_size", intermediateSize);
        m.put("num_hidden_layers", numHiddenLayers);
        m.put("num_attention_heads", numAttentionHeads);
        m.put("num_key_value_heads", numKeyValueHeads);
        m.put("head_dim", headDim);
        m.put("hidden_act", hiddenAct);
        m.put("rms_norm_eps", rmsNormEps);
        m.put("max_position_embeddings", maxPositionEmbeddings);
        m.put("rope_theta", ropeTheta);
        m.put("rope_parameters", ropeParameters(true));
        if (ropeScaling != null) m.put("rope_scaling", ropeParameters(false));
        m.put("tie_word_embeddings", tieWordEmbeddings);
        m.put("bos_token_id", bosTokenId);
        m.put("eos_token_id", eosTokenIds.isEmpty() ? null : eosTokenIds.size() == 1 ? eosTokenIds.getFirst() : eosTokenIds);
        m.put("pad_token_id", padTokenId);
        m.put("dtype", dtype);
        m.put("use_cache", true);
        m.put("attention_dropout", 0.0);
        m.put("initializer_range", 0.02);
        switch (modelType) {
            case "llama" -> {
                m.put("attention_bias", attentionBias);
                m.put("mlp_bias", mlpBias);
                m.put("pretraining_tp", 1);
            }
            case "mistral" -> m.put("sliding_window", slidingWindow > 0 ? slidingWindow : null);
            case "qwen2" -> {
                m.put("use_sliding_window", slidingWindow > 0);
                m.put("sliding_window", slidingWindow > 0 ? slidingWindow : null);
                m.put("max_window_layers", slidingWindow > 0 ? maxWindowLayers : numHiddenLayers);
                List<String> layerTypes = new ArrayList<>();
                for (int i = 0; i < numHiddenLayers; i++) {
                    layerTypes.add(slidingWindowFor(i) > 0 ? "sliding_attention" : "full_attention");
                }
                m.put("layer_types", layerTypes);
            }
            default -> throw new IllegalStateException(modelType);
        }
        try {
            // Laid out as Python's json.dumps(indent=2) lays it out: "key": value, two-space indent.
            DefaultPrettyPrinter printer = new DefaultPrettyPrinter()
                    .withSeparators(Separators.createDefaultInstance().withObjectFieldValueSpacing(Separators.Spacing.AFTER))
                    .withObjectIndenter(new DefaultIndenter("  ", "\n"))
                    .withArrayIndenter(new DefaultIndenter("  ", "\n"));
            return JsonFields.JSON.writer(printer).writeValueAsString(m) + "\n";
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("cannot write config.json", e);
        }
    }

    private Map<String, Object> ropeParameters(boolean withTheta) {
        Map<String, Object> r = new TreeMap<>();
        if (withTheta) r.put("rope_theta", ropeTheta);
        if (ropeScaling == null) {
            r.put("rope_type", "default");
            return r;
        }
        r.put("rope_type", ropeScaling.ropeType());
        r.put("factor", ropeScaling.factor());
        if (ropeScaling.ropeType().equals("llama3")) {
            r.put("low_freq_factor", ropeScaling.lowFreqFactor());
            r.put("high_freq_factor", ropeScaling.highFreqFactor());
            r.put("original_max_position_embeddings", ropeScaling.originalMaxPositionEmbeddings());
        }
        return r;
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
