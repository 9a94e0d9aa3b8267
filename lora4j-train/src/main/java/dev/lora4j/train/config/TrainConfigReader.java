package dev.lora4j.train.config;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import dev.lora4j.api.Device;
import dev.lora4j.lora.LoraConfig;
import dev.lora4j.lora.TargetModules;
import dev.lora4j.model.FineTuneMethod;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.quant.QuantType;
import dev.lora4j.tensor.DType;
import dev.lora4j.train.SftConfig;
import dev.lora4j.train.data.PackingStrategy;
import dev.lora4j.train.optim.OptimizerType;
import dev.lora4j.train.schedule.SchedulerType;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Reads a training configuration: a YAML or JSON file with TRL's and PEFT's field names (flat, as TRL's YAML
 * configs are), then command-line overrides of the same fields. Unknown fields are errors that name the field and
 * the closest known names, so that a typo is never silently ignored; a value of the wrong kind names the field,
 * what it takes and what it got.
 */
public final class TrainConfigReader {
    private static final ObjectMapper YAML = new ObjectMapper(YAMLFactory.builder().enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION).build());
    private static final ObjectMapper JSON = new ObjectMapper(JsonFactory.builder().enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION).build());

    /** The merged fields, each with where it came from (the file, or the command-line option). */
    private final Map<String, JsonNode> values = new LinkedHashMap<>();
    private final Map<String, String> sources = new LinkedHashMap<>();

    public TrainConfigReader() {}

    /** Adds the fields of a .yaml/.yml/.json file. */
    public TrainConfigReader file(Path file) {
        String text;
        try {
            text = Files.readString(file, StandardCharsets.UTF_8);
        } catch (NoSuchFileException e) {
            throw new TrainConfigException("no such configuration file: " + file);
        } catch (IOException e) {
            throw new TrainConfigException("cannot read " + file + ": " + e.getMessage(), e);
        }
        String name = file.getFileName() == null ? file.toString() : file.getFileName().toString().toLowerCase(Locale.ROOT);
        JsonNode root;
        try {
            root = (name.endsWith(".json") ? JSON : YAML).readTree(text);
        } catch (JsonProcessingException e) {
            String where = e.getLocation() == null ? "" : " at line " + e.getLocation().getLineNr() + ", column " + e.getLocation().getColumnNr();
            throw new TrainConfigException(file + " is not valid " + (name.endsWith(".json") ? "JSON" : "YAML") + where + ": " + e.getOriginalMessage(), e);
        }
        if (root == null || root.isNull() || root.isMissingNode()) return this; // an empty file sets nothing
        if (!root.isObject()) throw new TrainConfigException(file + " must hold a mapping of field names to values, like \"learning_rate: 2.0e-4\"");
        for (Map.Entry<String, JsonNode> e : root.properties()) put(e.getKey(), e.getValue(), file.toString());
        return this;
    }

    /** Adds fields given as a map of values (strings, numbers, booleans, lists, maps, null), e.g. from code. */
    public TrainConfigReader values(Map<String, ?> fields, String source) {
        for (Map.Entry<String, ?> e : fields.entrySet()) put(e.getKey(), JSON.valueToTree(e.getValue()), source);
        return this;
    }

    /**
     * Adds a command-line override: the field's text as typed. Lists may be comma-separated; "none" or "null"
     * clears a field that may be unset.
     */
    public TrainConfigReader override(String name, String text) {
        ConfigField f = field(name, "--" + name.replace('_', '-'));
        JsonNode node;
        if (text == null) {
            node = JsonNodeFactory.instance.nullNode();
        } else if ((text.equalsIgnoreCase("none") || text.equalsIgnoreCase("null")) && nullable(f.kind())) {
            node = JsonNodeFactory.instance.nullNode();
        } else if (f.kind() == ConfigField.Kind.STRING_LIST || f.kind() == ConfigField.Kind.INT_LIST
                || (f.kind() == ConfigField.Kind.STRING_OR_LIST && text.contains(","))) {
            var array = JsonNodeFactory.instance.arrayNode();
            for (String part : text.split(",")) if (!part.isBlank()) array.add(part.strip());
            node = array;
        } else if (f.kind() == ConfigField.Kind.RANK_MAP || f.kind() == ConfigField.Kind.ALPHA_MAP) {
            try {
                node = JSON.readTree(text);
            } catch (JsonProcessingException e) {
                throw new TrainConfigException(f.option() + " takes a JSON object such as '{\"q_proj\": 16}', got " + text);
            }
        } else {
            node = JsonNodeFactory.instance.textNode(text);
        }
        put(f.name(), node, f.option());
        return this;
    }

    private static boolean nullable(ConfigField.Kind k) {
        return k.name().startsWith("NULLABLE") || k == ConfigField.Kind.STRING_OR_BOOLEAN;
    }

    private void put(String name, JsonNode value, String source) {
        ConfigField f = field(name, source);
        // An alias and its field are one setting: the later source wins, but one file may not set both.
        String previous = sources.get(f.name());
        if (previous != null && previous.equals(source) && !source.startsWith("--") && values.containsKey(f.name())) {
            throw new TrainConfigException(source + " sets " + f.name() + " twice (as " + f.name() + " and "
                    + String.join(" or ", f.aliases()) + "); keep one");
        }
        values.put(f.name(), value);
        sources.put(f.name(), source);
    }

    private static ConfigField field(String name, String source) {
        ConfigField f = ConfigFields.byName(name);
        if (f != null) return f;
        List<String> close = ConfigFields.closeMatches(name);
        throw new TrainConfigException(source + ": unknown field \"" + name + "\"" + (close.isEmpty() ? ""
                : "; did you mean " + String.join(", ", close.stream().map(c -> "\"" + c + "\"").toList()) + "?")
                + " (lora4j train --help lists every field)");
    }

    // ---- building ------------------------------------------------------------------------------------------------

    public TrainConfig build() {
        Path model = path("model_name_or_path", true);
        Path train = path("dataset", true);
        Path eval = path("eval_file", false);
        String method = string("method", "lora").toLowerCase(Locale.ROOT);
        if (has("load_in_4bit") && bool("load_in_4bit", false) && method.equals("lora")) method = "qlora"; // as PEFT over a 4-bit model
        Device device = switch (string("device", "auto").toLowerCase(Locale.ROOT)) {
            case "cpu" -> Device.CPU;
            case "cuda", "gpu" -> Device.CUDA;
            case "auto" -> Device.AUTO;
            default -> throw invalid("device", "cpu, cuda or auto");
        };
        if (!method.equals("full") && has("dtype")) {
            throw new TrainConfigException(sources.get("dtype") + ": dtype sets the weights' dtype of full fine-tuning, but"
                    + " method is " + method + ", whose frozen base keeps its stored dtype; remove it or set method: full");
        }
        if (!method.equals("qlora")) {
            for (String quantField : QUANT_FIELDS) {
                if (has(quantField) && !(quantField.equals("load_in_4bit") && !bool(quantField, false))) {
                    throw new TrainConfigException(sources.get(quantField) + ": " + quantField + " is a 4-bit (QLoRA) setting,"
                            + " but method is " + method + "; remove it or set method: qlora");
                }
            }
        }
        FineTuneMethod fineTune = switch (method) {
            case "lora" -> new FineTuneMethod.Lora(lora());
            case "qlora" -> {
                if (has("load_in_4bit") && !bool("load_in_4bit", true)) {
                    throw new TrainConfigException(sources.get("load_in_4bit") + ": load_in_4bit is false, but method is qlora,"
                            + " which trains over a 4-bit base; remove load_in_4bit or set method: lora");
                }
                yield new FineTuneMethod.Lora(lora(), quantization());
            }
            case "full" -> {
                for (String loraField : List.of("r", "lora_alpha", "lora_dropout", "target_modules", "bias", "use_rslora",
                        "modules_to_save", "init_lora_weights", "rank_pattern", "alpha_pattern", "layers_to_transform")) {
                    if (values.containsKey(loraField)) {
                        throw new TrainConfigException(sources.get(loraField) + ": " + loraField + " is a LoRA setting, but method is full;"
                                + " remove it or set method: lora");
                    }
                }
                yield new FineTuneMethod.Full(fullPrecision());
            }
            default -> throw invalid("method", "lora, qlora or full");
        };
        SftConfig sft;
        try {
            sft = sft(eval != null);
        } catch (TrainConfigException e) {
            throw e;
        } catch (IllegalArgumentException e) {
            throw new TrainConfigException(e.getMessage() + " (" + describeSources() + ")", e);
        }
        if (fineTune instanceof FineTuneMethod.Full f && f.precision() == DType.BF16
                && sft.optim() != OptimizerType.ADAMW_TORCH) {
            throw new TrainConfigException(sources.get("optim") + ": optim " + sft.optim() + " updates F32 weights, but"
                    + " dtype is bfloat16; use optim adamw_torch (BF16 moments, as torch keeps them) or dtype float32");
        }
        List<String> prompts = stringList("sample_prompts");
        int sampleTokens = integer("sample_max_new_tokens", 32);
        if (sampleTokens < 1) throw invalid("sample_max_new_tokens", "a positive number of tokens");
        Map<String, Object> effective = new LinkedHashMap<>();
        values.forEach((k, v) -> effective.put(k, JSON.convertValue(v, Object.class)));
        return new TrainConfig(model, train, eval, fineTune, device, sft, prompts, sampleTokens, effective);
    }

    private String describeSources() {
        List<String> distinct = new ArrayList<>();
        for (String s : sources.values()) if (!distinct.contains(s)) distinct.add(s);
        return "from " + (distinct.isEmpty() ? "the defaults" : String.join(" and ", distinct.stream().filter(s -> !s.startsWith("--")).toList())
                + (distinct.stream().anyMatch(s -> s.startsWith("--")) ? " and the command line" : ""));
    }

    private LoraConfig lora() {
        LoraConfig c = LoraConfig.defaults();
        try {
            if (has("r")) c = c.withR(integer("r", 8));
            if (has("lora_alpha")) c = c.withLoraAlpha(number("lora_alpha", 8));
            if (has("lora_dropout")) c = c.withLoraDropout(number("lora_dropout", 0));
            if (has("target_modules")) {
                JsonNode t = values.get("target_modules");
                c = c.withTargetModules(t.isArray() ? new TargetModules.Names(stringList("target_modules"))
                        : TargetModules.fromString(string("target_modules", null)));
            }
            if (has("bias")) c = c.withBias(string("bias", "none"));
            if (has("use_rslora")) c = c.withUseRslora(bool("use_rslora", false));
            if (has("modules_to_save")) c = c.withModulesToSave(stringList("modules_to_save"));
            if (has("init_lora_weights")) c = c.withInitLoraWeights(stringOrBoolean("init_lora_weights"));
            if (has("rank_pattern")) c = c.withRankPattern(rankMap("rank_pattern"));
            if (has("alpha_pattern")) c = c.withAlphaPattern(alphaMap("alpha_pattern"));
            if (has("layers_to_transform")) c = c.withLayersToTransform(intList("layers_to_transform"));
        } catch (TrainConfigException e) {
            throw e;
        } catch (IllegalArgumentException e) {
            throw new TrainConfigException("LoRA configuration: " + e.getMessage() + " (" + describeSources() + ")", e);
        }
        return c;
    }

    private static final List<String> QUANT_FIELDS = List.of("load_in_4bit", "bnb_4bit_quant_type",
            "bnb_4bit_use_double_quant", "bnb_4bit_compute_dtype");

    /** Full fine-tuning's weight dtype: float32 unless dtype (torch_dtype) says bfloat16. */
    private DType fullPrecision() {
        return FineTuneMethod.Full.precisionNamed(string("dtype", "float32"))
                .orElseThrow(() -> invalid("dtype", FineTuneMethod.Full.PRECISION_NAMES));
    }

    /** The QLoRA recipe (nf4, double quantization, bf16 compute) where a BitsAndBytesConfig field is not set. */
    private QuantSpec quantization() {
        QuantType type = QuantSpec.QLORA.type();
        if (has("bnb_4bit_quant_type")) {
            try {
                type = QuantType.parse(string("bnb_4bit_quant_type", "nf4"));
            } catch (IllegalArgumentException e) {
                throw invalid("bnb_4bit_quant_type", "nf4 or fp4");
            }
        }
        boolean doubleQuant = bool("bnb_4bit_use_double_quant", QuantSpec.QLORA.doubleQuant());
        DType compute = QuantSpec.QLORA.computeType();
        if (has("bnb_4bit_compute_dtype")) {
            compute = switch (string("bnb_4bit_compute_dtype", "bf16").strip().toLowerCase(Locale.ROOT)) {
                case "bf16", "bfloat16", "torch.bfloat16" -> DType.BF16;
                case "fp16", "float16", "half", "torch.float16" -> DType.F16;
                case "fp32", "float32", "float", "torch.float32" -> DType.F32;
                default -> throw invalid("bnb_4bit_compute_dtype", "bf16, fp16 or fp32 (or bfloat16, float16, float32)");
            };
        }
        return new QuantSpec(type, QuantSpec.DEFAULT_BLOCK_SIZE, doubleQuant, compute);
    }

    private SftConfig sft(boolean hasEval) {
        SftConfig.Builder b = SftConfig.builder();
        if (has("output_dir")) b.outputDir(Path.of(string("output_dir", null)));
        if (has("dataset_text_field")) b.datasetTextField(string("dataset_text_field", "text"));
        if (values.containsKey("max_length")) b.maxLength(nullableInt("max_length"));
        if (has("packing")) b.packing(bool("packing", false));
        if (has("packing_strategy")) b.packingStrategy(PackingStrategy.parse(string("packing_strategy", "bfd")));
        if (has("eval_packing")) b.evalPacking(bool("eval_packing", false));
        if (has("completion_only_loss")) b.completionOnlyLoss(bool("completion_only_loss", false));
        if (has("assistant_only_loss")) b.assistantOnlyLoss(bool("assistant_only_loss", false));
        if (has("eos_token")) b.eosToken(string("eos_token", null));
        if (has("shuffle_dataset")) b.shuffleDataset(bool("shuffle_dataset", false));
        if (has("learning_rate")) b.learningRate(number("learning_rate", 2e-5));
        if (has("lr_scheduler_type")) b.lrSchedulerType(SchedulerType.parse(string("lr_scheduler_type", "linear")));
        if (has("warmup_steps")) b.warmupSteps(number("warmup_steps", 0));
        if (has("warmup_ratio")) b.warmupRatio(number("warmup_ratio", 0));
        if (has("num_train_epochs")) b.numTrainEpochs(number("num_train_epochs", 3));
        if (has("max_steps")) b.maxSteps(longValue("max_steps", -1));
        if (has("per_device_train_batch_size")) b.perDeviceTrainBatchSize(integer("per_device_train_batch_size", 8));
        if (has("per_device_eval_batch_size")) b.perDeviceEvalBatchSize(integer("per_device_eval_batch_size", 8));
        if (has("gradient_accumulation_steps")) b.gradientAccumulationSteps(integer("gradient_accumulation_steps", 1));
        if (has("max_grad_norm")) b.maxGradNorm(number("max_grad_norm", 1));
        if (has("weight_decay")) b.weightDecay(number("weight_decay", 0));
        if (has("adam_beta1")) b.adamBeta1(number("adam_beta1", 0.9));
        if (has("adam_beta2")) b.adamBeta2(number("adam_beta2", 0.999));
        if (has("adam_epsilon")) b.adamEpsilon(number("adam_epsilon", 1e-8));
        if (has("optim")) b.optim(OptimizerType.parse(string("optim", "adamw_torch")));
        if (has("seed")) b.seed(longValue("seed", 42));
        if (has("gradient_checkpointing")) b.gradientCheckpointing(bool("gradient_checkpointing", true));
        if (has("bf16")) b.bf16(bool("bf16", false));
        if (has("logging_steps")) b.loggingSteps(number("logging_steps", 10));
        if (has("logging_first_step")) b.loggingFirstStep(bool("logging_first_step", false));
        b.evalStrategy(has("eval_strategy") ? string("eval_strategy", null) : hasEval ? "steps" : "no");
        if (has("eval_steps")) b.evalSteps(number("eval_steps", 0));
        if (has("save_strategy")) b.saveStrategy(string("save_strategy", "steps"));
        if (has("save_steps")) b.saveSteps(number("save_steps", 500));
        if (values.containsKey("save_total_limit")) b.saveTotalLimit(nullableInt("save_total_limit"));
        if (has("report_to")) b.reportTo(stringList("report_to"));
        if (has("resume_from_checkpoint")) b.resumeFromCheckpoint(stringOrBoolean("resume_from_checkpoint"));
        if (has("disable_tqdm")) b.disableTqdm(bool("disable_tqdm", false));
        return b.build();
    }

    // ---- typed values --------------------------------------------------------------------------------------------

    private boolean has(String name) {
        JsonNode n = values.get(name);
        return n != null && !n.isNull();
    }

    private TrainConfigException wrong(String name, String expected) {
        JsonNode n = values.get(name);
        String found = n == null ? "nothing" : n.isTextual() ? "\"" + n.textValue() + "\"" : n.toString();
        return new TrainConfigException(sources.get(name) + ": field " + name + " must be " + expected + ", got " + found);
    }

    private TrainConfigException invalid(String name, String expected) {
        return wrong(name, expected);
    }

    private Path path(String name, boolean required) {
        if (!has(name)) {
            if (!required) return null;
            ConfigField f = ConfigFields.byName(name);
            throw new TrainConfigException("no " + name + " given: set it in the configuration file or with " + f.option());
        }
        return Path.of(string(name, null));
    }

    private String string(String name, String fallback) {
        if (!has(name)) return fallback;
        JsonNode n = values.get(name);
        if (n.isTextual() || n.isNumber() || n.isBoolean()) return n.asText();
        throw wrong(name, "a string");
    }

    private double number(String name, double fallback) {
        if (!has(name)) return fallback;
        JsonNode n = values.get(name);
        if (n.isNumber()) return n.doubleValue();
        if (n.isTextual()) {
            try {
                double d = Double.parseDouble(n.textValue().strip());
                if (Double.isFinite(d)) return d;
            } catch (NumberFormatException ignored) {
                // reported below
            }
        }
        throw wrong(name, "a number");
    }

    private long longValue(String name, long fallback) {
        if (!has(name)) return fallback;
        JsonNode n = values.get(name);
        if (n.isIntegralNumber() && n.canConvertToLong()) return n.longValue();
        if (n.isNumber() && n.doubleValue() == Math.rint(n.doubleValue()) && Math.abs(n.doubleValue()) < 1e15) return (long) n.doubleValue();
        if (n.isTextual()) {
            try {
                return Long.parseLong(n.textValue().strip());
            } catch (NumberFormatException ignored) {
                // reported below
            }
        }
        throw wrong(name, "a whole number");
    }

    private int integer(String name, int fallback) {
        if (!has(name)) return fallback;
        long v = longValue(name, fallback);
        if (v < Integer.MIN_VALUE || v > Integer.MAX_VALUE) throw wrong(name, "a whole number of reasonable size");
        return (int) v;
    }

    private Integer nullableInt(String name) {
        return has(name) ? integer(name, 0) : null;
    }

    private boolean bool(String name, boolean fallback) {
        if (!has(name)) return fallback;
        JsonNode n = values.get(name);
        if (n.isBoolean()) return n.booleanValue();
        if (n.isTextual()) {
            String t = n.textValue().strip().toLowerCase(Locale.ROOT);
            if (t.equals("true") || t.equals("yes") || t.equals("1")) return true;
            if (t.equals("false") || t.equals("no") || t.equals("0")) return false;
        }
        throw wrong(name, "true or false");
    }

    private String stringOrBoolean(String name) {
        JsonNode n = values.get(name);
        if (n.isBoolean()) return Boolean.toString(n.booleanValue());
        return string(name, null);
    }

    private List<String> stringList(String name) {
        if (!has(name)) return List.of();
        JsonNode n = values.get(name);
        List<String> out = new ArrayList<>();
        if (n.isTextual()) {
            out.add(n.textValue());
            return out;
        }
        if (!n.isArray()) throw wrong(name, "a list of strings");
        for (JsonNode e : n) {
            if (!(e.isTextual() || e.isNumber())) throw wrong(name, "a list of strings");
            out.add(e.asText());
        }
        return out;
    }

    private List<Integer> intList(String name) {
        JsonNode n = values.get(name);
        List<Integer> out = new ArrayList<>();
        List<JsonNode> items = new ArrayList<>();
        if (n.isArray()) n.forEach(items::add); else items.add(n);
        for (JsonNode e : items) {
            try {
                out.add(e.isIntegralNumber() && e.canConvertToInt() ? e.intValue() : Integer.parseInt(e.asText().strip()));
            } catch (NumberFormatException ex) {
                throw wrong(name, "a layer index or a list of them");
            }
        }
        return out;
    }

    private Map<String, Integer> rankMap(String name) {
        JsonNode n = values.get(name);
        if (!n.isObject()) throw wrong(name, "a mapping of module patterns to ranks, like {q_proj: 16}");
        Map<String, Integer> out = new LinkedHashMap<>();
        for (Map.Entry<String, JsonNode> e : n.properties()) {
            if (!e.getValue().canConvertToInt() || !e.getValue().isIntegralNumber()) throw wrong(name, "a mapping of module patterns to whole-number ranks");
            out.put(e.getKey(), e.getValue().intValue());
        }
        return out;
    }

    private Map<String, Double> alphaMap(String name) {
        JsonNode n = values.get(name);
        if (!n.isObject()) throw wrong(name, "a mapping of module patterns to alphas, like {q_proj: 32}");
        Map<String, Double> out = new LinkedHashMap<>();
        for (Map.Entry<String, JsonNode> e : n.properties()) {
            if (!e.getValue().isNumber()) throw wrong(name, "a mapping of module patterns to numbers");
            out.put(e.getKey(), e.getValue().doubleValue());
        }
        return out;
    }

    /** The effective configuration as JSON, for training_config.json in the output folder. */
    public static String toJson(TrainConfig config) {
        ObjectNode node = JSON.createObjectNode();
        config.effective().entrySet().stream().sorted(Map.Entry.comparingByKey())
                .forEach(e -> node.set(e.getKey(), JSON.valueToTree(e.getValue())));
        try {
            return JSON.writerWithDefaultPrettyPrinter().writeValueAsString(node) + "\n";
        } catch (JsonProcessingException e) {
            throw new IllegalStateException(e);
        }
    }
}
