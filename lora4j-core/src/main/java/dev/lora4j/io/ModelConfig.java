package dev.lora4j.io;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.util.DefaultIndenter;
import com.fasterxml.jackson.core.util.DefaultPrettyPrinter;
import com.fasterxml.jackson.core.util.Separators;
import dev.lora4j.quant.QuantizationConfig;

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
 *   <li>{@code quantizationConfig}: the {@code quantization_config} of a model saved in 4 bits
 *       (bitsandbytes NF4/FP4, docs/qlora-format.md); null for a dense model.</li>
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
        String hiddenAct,
        QuantizationConfig quantizationConfig) {

    /** Architecture class names lora4j runs, with their {@code model_type}. */
    public static final Map<String, String> SUPPORTED_ARCHITECTURES = supportedArchitectures();

    static final String SUPPORTED_TEXT = "lora4j runs LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM";

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

    /** A dense (not quantized) model's configuration. */
    public ModelConfig(List<String> architectures, String modelType, int vocabSize, int hiddenSize, int intermediateSize,
                       int numHiddenLayers, int numAttentionHeads, int numKeyValueHeads, int headDim, double rmsNormEps,
                       double ropeTheta, RopeScaling ropeScaling, int maxPositionEmbeddings, int slidingWindow,
                       int maxWindowLayers, boolean attentionBias, boolean mlpBias, boolean tieWordEmbeddings,
                       Integer bosTokenId, List<Integer> eosTokenIds, Integer padTokenId, String dtype, String hiddenAct) {
        this(architectures, modelType, vocabSize, hiddenSize, intermediateSize, numHiddenLayers, numAttentionHeads,
                numKeyValueHeads, headDim, rmsNormEps, ropeTheta, ropeScaling, maxPositionEmbeddings, slidingWindow,
                maxWindowLayers, attentionBias, mlpBias, tieWordEmbeddings, bosTokenId, eosTokenIds, padTokenId, dtype,
                hiddenAct, null);
    }

    /** The same model described as saved in 4 bits under {@code q} (null: dense). */
    public ModelConfig withQuantization(QuantizationConfig q) {
        return new ModelConfig(architectures, modelType, vocabSize, hiddenSize, intermediateSize, numHiddenLayers,
                numAttentionHeads, numKeyValueHeads, headDim, rmsNormEps, ropeTheta, ropeScaling, maxPositionEmbeddings,
                slidingWindow, maxWindowLayers, attentionBias, mlpBias, tieWordEmbeddings, bosTokenId, eosTokenIds,
                padTokenId, dtype, hiddenAct, q);
    }

    /** Whether the checkpoint is saved in 4 bits (config.json has a bitsandbytes quantization_config). */
    public boolean isQuantized() {
        return quantizationConfig != null;
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
        return ModelConfigReader.read(JsonFields.parse(json, sourceName));
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
        if (quantizationConfig != null) m.put("quantization_config", quantizationConfig.toJsonMap());
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
}
