package dev.lora4j.lora;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.util.DefaultIndenter;
import com.fasterxml.jackson.core.util.DefaultPrettyPrinter;
import com.fasterxml.jackson.core.util.Separators;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.lora4j.io.ConfigFormatException;

import java.io.IOException;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

/**
 * A LoRA adapter's configuration with PEFT's meaning and defaults ({@code peft.LoraConfig}): the rank r, lora_alpha,
 * lora_dropout, which modules get adapters, which biases train, rank-stabilised scaling, how new adapters start,
 * extra fully trained modules (modules_to_save), per-module rank and alpha overrides, and the layers to adapt.
 *
 * @param targetModules      null means PEFT's default for Llama-family models, q_proj and v_proj
 * @param bias               "none", "all" (every bias of the model trains) or "lora_only" (the biases of adapted modules)
 * @param initLoraWeights    "true" (kaiming-uniform A, zero B: the adapter starts as a no-op), "gaussian" (A normal
 *                           with std 1/r, zero B) or "false" (A and B both random, as nn.Linear initialises: for tests)
 * @param rankPattern        regular expression (matched against the end of a module path) to rank; the first match wins
 * @param alphaPattern       the same for lora_alpha
 * @param layersToTransform  null for every layer; otherwise only these layer indexes (list targets only)
 */
public record LoraConfig(int r, double loraAlpha, double loraDropout, TargetModules targetModules, String bias,
                         boolean useRslora, String initLoraWeights, List<String> modulesToSave,
                         Map<String, Integer> rankPattern, Map<String, Double> alphaPattern,
                         List<Integer> layersToTransform, String baseModelNameOrPath, String taskType) {

    public static final String CONFIG_FILE = "adapter_config.json";
    /** PEFT's default target modules for llama, mistral and qwen2 models. */
    public static final List<String> DEFAULT_TARGETS = List.of("q_proj", "v_proj");
    private static final Set<String> BIAS_VALUES = Set.of("none", "all", "lora_only");
    /** The init_lora_weights values lora4j can create adapters with; others (pissa, olora, ...) only load. */
    public static final Set<String> SUPPORTED_INITS = Set.of("true", "false", "gaussian");

    public LoraConfig {
        if (r <= 0) throw new IllegalArgumentException("r must be a positive integer, got " + r);
        if (!Double.isFinite(loraAlpha)) throw new IllegalArgumentException("lora_alpha must be a finite number, got " + loraAlpha);
        if (!(loraDropout >= 0 && loraDropout < 1)) {
            throw new IllegalArgumentException("lora_dropout must be in [0, 1), got " + loraDropout);
        }
        if (targetModules == null) targetModules = new TargetModules.Names(DEFAULT_TARGETS);
        bias = bias == null ? "none" : bias;
        if (!BIAS_VALUES.contains(bias)) {
            throw new IllegalArgumentException("bias must be \"none\", \"all\" or \"lora_only\", got \"" + bias + "\"");
        }
        initLoraWeights = initLoraWeights == null ? "true" : initLoraWeights;
        modulesToSave = List.copyOf(modulesToSave == null ? List.of() : modulesToSave);
        rankPattern = Collections.unmodifiableMap(new LinkedHashMap<>(rankPattern == null ? Map.of() : rankPattern));
        alphaPattern = Collections.unmodifiableMap(new LinkedHashMap<>(alphaPattern == null ? Map.of() : alphaPattern));
        for (var e : rankPattern.entrySet()) {
            checkPattern("rank_pattern", e.getKey());
            if (e.getValue() == null || e.getValue() <= 0) {
                throw new IllegalArgumentException("rank_pattern['" + e.getKey() + "'] must be a positive integer, got " + e.getValue());
            }
        }
        for (var e : alphaPattern.entrySet()) {
            checkPattern("alpha_pattern", e.getKey());
            if (e.getValue() == null || !Double.isFinite(e.getValue())) {
                throw new IllegalArgumentException("alpha_pattern['" + e.getKey() + "'] must be a finite number, got " + e.getValue());
            }
        }
        if (layersToTransform != null) {
            layersToTransform = List.copyOf(layersToTransform);
            if (!(targetModules instanceof TargetModules.Names)) {
                throw new IllegalArgumentException("layers_to_transform cannot be used when target_modules is a string"
                        + " (a regular expression or \"all-linear\"), as in PEFT: list the module names instead");
            }
        }
        taskType = taskType == null ? "CAUSAL_LM" : taskType;
    }

    private static void checkPattern(String field, String key) {
        try {
            Pattern.compile(key);
        } catch (PatternSyntaxException e) {
            throw new IllegalArgumentException(field + ": key '" + key + "' is not a valid regular expression: " + e.getDescription());
        }
    }

    /** PEFT's defaults: r=8, lora_alpha=8, no dropout, no bias, q_proj and v_proj, default init. */
    public static LoraConfig defaults() {
        return new LoraConfig(8, 8, 0.0, new TargetModules.Names(DEFAULT_TARGETS), "none", false, "true", List.of(),
                Map.of(), Map.of(), null, null, "CAUSAL_LM");
    }

    public LoraConfig withR(int newR) {
        return new LoraConfig(newR, loraAlpha, loraDropout, targetModules, bias, useRslora, initLoraWeights, modulesToSave,
                rankPattern, alphaPattern, layersToTransform, baseModelNameOrPath, taskType);
    }

    public LoraConfig withLoraAlpha(double alpha) {
        return new LoraConfig(r, alpha, loraDropout, targetModules, bias, useRslora, initLoraWeights, modulesToSave,
                rankPattern, alphaPattern, layersToTransform, baseModelNameOrPath, taskType);
    }

    public LoraConfig withLoraDropout(double dropout) {
        return new LoraConfig(r, loraAlpha, dropout, targetModules, bias, useRslora, initLoraWeights, modulesToSave,
                rankPattern, alphaPattern, layersToTransform, baseModelNameOrPath, taskType);
    }

    public LoraConfig withTargetModules(TargetModules targets) {
        return new LoraConfig(r, loraAlpha, loraDropout, targets, bias, useRslora, initLoraWeights, modulesToSave,
                rankPattern, alphaPattern, layersToTransform, baseModelNameOrPath, taskType);
    }

    public LoraConfig withBias(String newBias) {
        return new LoraConfig(r, loraAlpha, loraDropout, targetModules, newBias, useRslora, initLoraWeights, modulesToSave,
                rankPattern, alphaPattern, layersToTransform, baseModelNameOrPath, taskType);
    }

    public LoraConfig withUseRslora(boolean rslora) {
        return new LoraConfig(r, loraAlpha, loraDropout, targetModules, bias, rslora, initLoraWeights, modulesToSave,
                rankPattern, alphaPattern, layersToTransform, baseModelNameOrPath, taskType);
    }

    public LoraConfig withInitLoraWeights(String init) {
        return new LoraConfig(r, loraAlpha, loraDropout, targetModules, bias, useRslora, init, modulesToSave,
                rankPattern, alphaPattern, layersToTransform, baseModelNameOrPath, taskType);
    }

    public LoraConfig withModulesToSave(List<String> modules) {
        return new LoraConfig(r, loraAlpha, loraDropout, targetModules, bias, useRslora, initLoraWeights, modules,
                rankPattern, alphaPattern, layersToTransform, baseModelNameOrPath, taskType);
    }

    public LoraConfig withRankPattern(Map<String, Integer> pattern) {
        return new LoraConfig(r, loraAlpha, loraDropout, targetModules, bias, useRslora, initLoraWeights, modulesToSave,
                pattern, alphaPattern, layersToTransform, baseModelNameOrPath, taskType);
    }

    public LoraConfig withAlphaPattern(Map<String, Double> pattern) {
        return new LoraConfig(r, loraAlpha, loraDropout, targetModules, bias, useRslora, initLoraWeights, modulesToSave,
                rankPattern, pattern, layersToTransform, baseModelNameOrPath, taskType);
    }

    public LoraConfig withLayersToTransform(List<Integer> layers) {
        return new LoraConfig(r, loraAlpha, loraDropout, targetModules, bias, useRslora, initLoraWeights, modulesToSave,
                rankPattern, alphaPattern, layers, baseModelNameOrPath, taskType);
    }

    public LoraConfig withBaseModelNameOrPath(String base) {
        return new LoraConfig(r, loraAlpha, loraDropout, targetModules, bias, useRslora, initLoraWeights, modulesToSave,
                rankPattern, alphaPattern, layersToTransform, base, taskType);
    }

    // ---- per-module rank and scaling ------------------------------------------------------------------------

    /** The rank of the adapter on this module (e.g. "model.layers.0.self_attn.q_proj"): rank_pattern, else r. */
    public int rank(String modulePath) {
        String key = patternKey(rankPattern.keySet(), modulePath);
        return key == null ? r : rankPattern.get(key);
    }

    /** lora_alpha of this module: alpha_pattern, else lora_alpha. */
    public double alpha(String modulePath) {
        String key = patternKey(alphaPattern.keySet(), modulePath);
        return key == null ? loraAlpha : alphaPattern.get(key);
    }

    /** The factor on the adapter's output: alpha / r, or alpha / sqrt(r) with rank-stabilised LoRA. */
    public double scaling(String modulePath) {
        int rank = rank(modulePath);
        double a = alpha(modulePath);
        return useRslora ? a / Math.sqrt(rank) : a / rank;
    }

    /** PEFT's get_pattern_key: the first key for which {@code (.*\.)?(key)$} matches the path from its start. */
    private static String patternKey(Set<String> keys, String modulePath) {
        for (String key : keys) {
            if (Pattern.compile("(.*\\.)?(" + key + ")$").matcher(modulePath).lookingAt()) return key;
        }
        return null;
    }

    // ---- adapter_config.json ---------------------------------------------------------------------------------

    /** Reads {@code adapter_config.json}. Unknown fields are ignored; errors name the file and the field. */
    public static LoraConfig readAdapterConfig(Path adapterConfigJson) throws IOException {
        if (!Files.isRegularFile(adapterConfigJson)) {
            throw new NoSuchFileException(adapterConfigJson.toString(), null, "no adapter configuration: a PEFT adapter"
                    + " folder holds adapter_config.json and adapter_model.safetensors");
        }
        String text;
        try {
            text = Files.readString(adapterConfigJson, StandardCharsets.UTF_8);
        } catch (CharacterCodingException e) {
            throw new ConfigFormatException(adapterConfigJson + " is not UTF-8 text: is it really a JSON file?", e);
        }
        return parseAdapterConfig(text, adapterConfigJson.toString());
    }

    /** Parses adapter_config.json text; {@code source} names it in errors. */
    public static LoraConfig parseAdapterConfig(String json, String source) throws ConfigFormatException {
        return new AdapterConfigReader(json, source).read();
    }

    /**
     * The adapter_config.json text: the fields PEFT 0.21 writes that PEFT versions from 0.9 on all know (older versions
     * refuse unknown fields), keys sorted and laid out as Python's json.dumps(indent=2, sort_keys=True).
     *
     * @param savedTargetModules for list and "all-linear" targets, the module names to record (PEFT records the
     *                           resolved modules of "all-linear", see {@link LoraTargets#savedTargetModules}); ignored
     *                           for a regular expression, which is written as it is. Null writes the list as given.
     */
    public String toAdapterConfigJson(List<String> savedTargetModules) {
        Map<String, Object> m = new TreeMap<>();
        m.put("alpha_pattern", alphaPattern.isEmpty() ? Map.of() : numberMap(alphaPattern));
        m.put("auto_mapping", null);
        m.put("base_model_name_or_path", baseModelNameOrPath);
        m.put("bias", bias);
        m.put("fan_in_fan_out", false);
        m.put("inference_mode", true);
        m.put("init_lora_weights", switch (initLoraWeights) {
            case "true" -> (Object) Boolean.TRUE;
            case "false" -> Boolean.FALSE;
            default -> initLoraWeights;
        });
        m.put("layers_pattern", null);
        m.put("layers_to_transform", layersToTransform);
        m.put("loftq_config", Map.of());
        m.put("lora_alpha", number(loraAlpha));
        m.put("lora_dropout", loraDropout);
        m.put("megatron_config", null);
        m.put("megatron_core", "megatron.core");
        m.put("modules_to_save", modulesToSave.isEmpty() ? null : modulesToSave);
        m.put("peft_type", "LORA");
        m.put("r", r);
        m.put("rank_pattern", rankPattern);
        m.put("revision", null);
        m.put("target_modules", switch (targetModules) {
            case TargetModules.Regex re -> re.pattern();
            case TargetModules.Names names -> savedTargetModules != null ? savedTargetModules : names.names();
            case TargetModules.AllLinear a -> {
                if (savedTargetModules == null) {
                    throw new IllegalArgumentException("\"all-linear\" is saved as the list of modules it resolved to:"
                            + " pass them (LoraTargets.savedTargetModules)");
                }
                yield savedTargetModules;
            }
        });
        m.put("task_type", taskType);
        m.put("use_dora", false);
        m.put("use_rslora", useRslora);
        try {
            DefaultPrettyPrinter printer = new DefaultPrettyPrinter()
                    .withSeparators(Separators.createDefaultInstance().withObjectFieldValueSpacing(Separators.Spacing.AFTER))
                    .withObjectIndenter(new DefaultIndenter("  ", "\n"))
                    .withArrayIndenter(new DefaultIndenter("  ", "\n"));
            return new ObjectMapper().writer(printer).writeValueAsString(m);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("cannot write adapter_config.json", e);
        }
    }

    /** Integral values as integers (PEFT's lora_alpha is an int), others as they are. */
    private static Object number(double v) {
        return v == Math.rint(v) && Math.abs(v) < 1e15 ? (Object) (long) v : (Object) v;
    }

    private static Map<String, Object> numberMap(Map<String, Double> values) {
        Map<String, Object> m = new LinkedHashMap<>();
        values.forEach((k, v) -> m.put(k, number(v)));
        return m;
    }

    /** Reads the fields of adapter_config.json, one clear message per problem. */
    private static final class AdapterConfigReader {
        private final String source;
        private final String json;
        private JsonNode root;

        AdapterConfigReader(String json, String source) {
            this.json = json;
            this.source = source;
        }

        LoraConfig read() throws ConfigFormatException {
            try {
                root = new ObjectMapper().readTree(json);
            } catch (JsonProcessingException e) {
                String where = e.getLocation() == null ? ""
                        : " at line " + e.getLocation().getLineNr() + ", column " + e.getLocation().getColumnNr();
                throw new ConfigFormatException(source + " is not valid JSON" + where + ": " + e.getOriginalMessage(), e);
            }
            if (root == null || !root.isObject()) throw new ConfigFormatException(source + " must hold a JSON object {...}");
            String peftType = optString("peft_type");
            if (peftType != null && !peftType.equals("LORA")) {
                throw new ConfigFormatException(source + ": peft_type is \"" + peftType + "\"; lora4j reads LoRA adapters"
                        + " (peft_type \"LORA\") only");
            }
            refuseTrue("use_dora", "DoRA adapters (use_dora) are not supported");
            refuseTrue("fan_in_fan_out", "fan_in_fan_out is for GPT-2-style Conv1D layers, which Llama-family models do not have");
            refuseTrue("lora_bias", "LoRA biases on lora_B (lora_bias) are not supported");
            refuseTrue("use_qalora", "QA-LoRA (use_qalora) is not supported");
            refuseTrue("ensure_weight_tying", "ensure_weight_tying is not supported");
            refuseNonEmpty("exclude_modules", "exclude_modules is not supported: list the target modules instead");
            refuseNonEmpty("trainable_token_indices", "trainable tokens (trainable_token_indices) are not supported");
            refuseNonEmpty("target_parameters", "target_parameters is not supported");
            refuseNonEmpty("layer_replication", "layer_replication is not supported");
            refuseNonEmpty("alora_invocation_tokens", "activated LoRA (alora_invocation_tokens) is not supported");
            refuseNonEmpty("use_bdlora", "block-diagonal LoRA (use_bdlora) is not supported");
            refuseNonEmpty("arrow_config", "Arrow routing (arrow_config) is not supported");

            int r = has("r") ? intField("r") : 8;
            double alpha = has("lora_alpha") ? numberField("lora_alpha") : 8;
            double dropout = has("lora_dropout") ? numberField("lora_dropout") : 0.0;
            TargetModules targets = targetModules();
            String bias = has("bias") ? stringField("bias") : "none";
            boolean rslora = has("use_rslora") && boolField("use_rslora");
            String init = initLoraWeights();
            List<String> modulesToSave = has("modules_to_save") ? stringList("modules_to_save") : List.of();
            Map<String, Integer> rankPattern = new LinkedHashMap<>();
            if (has("rank_pattern")) {
                for (var e : objectField("rank_pattern").properties()) {
                    rankPattern.put(e.getKey(), intValue("rank_pattern['" + e.getKey() + "']", e.getValue()));
                }
            }
            Map<String, Double> alphaPattern = new LinkedHashMap<>();
            if (has("alpha_pattern")) {
                for (var e : objectField("alpha_pattern").properties()) {
                    alphaPattern.put(e.getKey(), numberValue("alpha_pattern['" + e.getKey() + "']", e.getValue()));
                }
            }
            List<Integer> layers = layersToTransform();
            if (has("layers_pattern")) {
                JsonNode p = root.get("layers_pattern");
                boolean plain = (p.isTextual() && p.textValue().equals("layers"))
                        || (p.isArray() && p.size() == 1 && p.get(0).isTextual() && p.get(0).textValue().equals("layers"));
                boolean empty = (p.isTextual() && p.textValue().isEmpty()) || (p.isArray() && p.isEmpty());
                if (!plain && !empty) {
                    throw new ConfigFormatException(source + ": layers_pattern " + p + " does not name the decoder layers"
                            + " of a Llama-family model; use \"layers\" or leave it null");
                }
            }
            String base = has("base_model_name_or_path") ? stringField("base_model_name_or_path") : null;
            String task = has("task_type") ? stringField("task_type") : null;
            try {
                return new LoraConfig(r, alpha, dropout, targets, bias, rslora, init, modulesToSave, rankPattern,
                        alphaPattern, layers, base, task);
            } catch (IllegalArgumentException e) {
                throw new ConfigFormatException(source + ": " + e.getMessage(), e);
            }
        }

        private TargetModules targetModules() throws ConfigFormatException {
            if (!has("target_modules")) return null;
            JsonNode n = root.get("target_modules");
            try {
                if (n.isTextual()) return TargetModules.fromString(n.textValue());
                return new TargetModules.Names(stringList("target_modules"));
            } catch (IllegalArgumentException e) {
                throw new ConfigFormatException(source + ": " + e.getMessage(), e);
            }
        }

        private String initLoraWeights() throws ConfigFormatException {
            if (!has("init_lora_weights")) return "true";
            JsonNode n = root.get("init_lora_weights");
            if (n.isBoolean()) return n.booleanValue() ? "true" : "false";
            if (n.isTextual()) return n.textValue();
            throw wrongType("init_lora_weights", "true, false or a method name such as \"gaussian\"", n);
        }

        private List<Integer> layersToTransform() throws ConfigFormatException {
            if (!has("layers_to_transform")) return null;
            JsonNode n = root.get("layers_to_transform");
            if (n.isIntegralNumber()) return List.of(intValue("layers_to_transform", n));
            if (!n.isArray()) throw wrongType("layers_to_transform", "a layer index or a list of them", n);
            if (n.isEmpty()) return null; // PEFT treats an empty list as "every layer"
            List<Integer> out = new ArrayList<>();
            for (int i = 0; i < n.size(); i++) out.add(intValue("layers_to_transform[" + i + "]", n.get(i)));
            return out;
        }

        private boolean has(String field) {
            JsonNode n = root.get(field);
            return n != null && !n.isNull();
        }

        private void refuseTrue(String field, String why) throws ConfigFormatException {
            JsonNode n = root.get(field);
            if (n != null && n.isBoolean() && n.booleanValue()) {
                throw new ConfigFormatException(source + ": " + field + " is true, but " + why + " by lora4j");
            }
        }

        private void refuseNonEmpty(String field, String why) throws ConfigFormatException {
            JsonNode n = root.get(field);
            if (n == null || n.isNull() || (n.isContainerNode() && n.isEmpty()) || (n.isBoolean() && !n.booleanValue())) return;
            throw new ConfigFormatException(source + ": field " + field + " is set (" + n + "), but " + why);
        }

        private String optString(String field) throws ConfigFormatException {
            return has(field) ? stringField(field) : null;
        }

        private String stringField(String field) throws ConfigFormatException {
            JsonNode n = root.get(field);
            if (!n.isTextual()) throw wrongType(field, "a string", n);
            return n.textValue();
        }

        private boolean boolField(String field) throws ConfigFormatException {
            JsonNode n = root.get(field);
            if (!n.isBoolean()) throw wrongType(field, "true or false", n);
            return n.booleanValue();
        }

        private int intField(String field) throws ConfigFormatException {
            return intValue(field, root.get(field));
        }

        private double numberField(String field) throws ConfigFormatException {
            return numberValue(field, root.get(field));
        }

        private JsonNode objectField(String field) throws ConfigFormatException {
            JsonNode n = root.get(field);
            if (!n.isObject()) throw wrongType(field, "an object {\"pattern\": value}", n);
            return n;
        }

        private List<String> stringList(String field) throws ConfigFormatException {
            JsonNode n = root.get(field);
            if (!n.isArray()) throw wrongType(field, "a list of strings", n);
            List<String> out = new ArrayList<>();
            for (int i = 0; i < n.size(); i++) {
                if (!n.get(i).isTextual()) throw wrongType(field + "[" + i + "]", "a string", n.get(i));
                out.add(n.get(i).textValue());
            }
            return out;
        }

        private int intValue(String field, JsonNode n) throws ConfigFormatException {
            if (n == null || !n.isNumber() || (!n.isIntegralNumber() && n.doubleValue() != Math.rint(n.doubleValue()))
                    || !n.canConvertToInt() && n.isIntegralNumber()) {
                throw wrongType(field, "an integer", n);
            }
            return n.isIntegralNumber() ? n.intValue() : (int) n.doubleValue();
        }

        private double numberValue(String field, JsonNode n) throws ConfigFormatException {
            if (n == null || !n.isNumber()) throw wrongType(field, "a number", n);
            return n.doubleValue();
        }

        private ConfigFormatException wrongType(String field, String expected, JsonNode found) {
            return new ConfigFormatException(source + ": field " + field + " must be " + expected + ", found "
                    + (found == null ? "nothing" : found.toString()));
        }
    }
}
