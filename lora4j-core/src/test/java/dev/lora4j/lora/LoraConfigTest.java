package dev.lora4j.lora;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.lora4j.io.ConfigFormatException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

class LoraConfigTest {

    /** adapter_config.json as peft 0.21 writes it after get_peft_model(LoraConfig(r=16, lora_alpha=32, ...)). */
    static final String PEFT_WRITTEN = """
            {
              "alora_invocation_tokens": null,
              "alpha_pattern": {},
              "arrow_config": null,
              "auto_mapping": null,
              "base_model_name_or_path": "/models/tiny-llama",
              "bias": "none",
              "corda_config": null,
              "ensure_weight_tying": false,
              "eva_config": null,
              "exclude_modules": null,
              "fan_in_fan_out": false,
              "inference_mode": true,
              "init_lora_weights": true,
              "layer_replication": null,
              "layers_pattern": null,
              "layers_to_transform": null,
              "loftq_config": {},
              "lora_alpha": 32,
              "lora_bias": false,
              "lora_dropout": 0.05,
              "megatron_config": null,
              "megatron_core": "megatron.core",
              "modules_to_save": null,
              "peft_type": "LORA",
              "peft_version": "0.21.0",
              "qalora_group_size": 16,
              "r": 16,
              "rank_pattern": {},
              "revision": null,
              "target_modules": [
                "v_proj",
                "q_proj"
              ],
              "target_parameters": null,
              "task_type": "CAUSAL_LM",
              "trainable_token_indices": null,
              "use_dora": false,
              "use_qalora": false,
              "use_rslora": false,
              "some_field_from_a_future_version": {"x": 1}
            }
            """;

    @Test
    void defaultsAreThoseOfPeft() {
        LoraConfig c = LoraConfig.defaults();
        assertThat(c.r()).isEqualTo(8);
        assertThat(c.loraAlpha()).isEqualTo(8);
        assertThat(c.loraDropout()).isZero();
        assertThat(c.bias()).isEqualTo("none");
        assertThat(c.targetModules()).isEqualTo(TargetModules.names("q_proj", "v_proj"));
        assertThat(c.initLoraWeights()).isEqualTo("true");
        assertThat(c.useRslora()).isFalse();
        assertThat(c.taskType()).isEqualTo("CAUSAL_LM");
        assertThat(c.scaling("model.layers.0.self_attn.q_proj")).isEqualTo(1.0);
    }

    @Test
    void readsTheConfigurationPeftWritesAndIgnoresUnknownFields() throws Exception {
        LoraConfig c = LoraConfig.parseAdapterConfig(PEFT_WRITTEN, "adapter_config.json");
        assertThat(c.r()).isEqualTo(16);
        assertThat(c.loraAlpha()).isEqualTo(32);
        assertThat(c.loraDropout()).isEqualTo(0.05);
        assertThat(c.targetModules()).isEqualTo(TargetModules.names("v_proj", "q_proj"));
        assertThat(c.baseModelNameOrPath()).isEqualTo("/models/tiny-llama");
        assertThat(c.modulesToSave()).isEmpty();
        assertThat(c.layersToTransform()).isNull();
        assertThat(c.scaling("model.layers.3.self_attn.v_proj")).isEqualTo(2.0);
    }

    @Test
    void aStringTargetIsARegularExpressionOrAllLinear() throws Exception {
        assertThat(parse("\"target_modules\": \"all-linear\"").targetModules()).isEqualTo(TargetModules.allLinear());
        assertThat(parse("\"target_modules\": \"ALL-LINEAR\"").targetModules()).isEqualTo(TargetModules.allLinear());
        assertThat(parse("\"target_modules\": \".*\\\\.(q|v)_proj\"").targetModules())
                .isEqualTo(TargetModules.regex(".*\\.(q|v)_proj"));
    }

    @Test
    void rsloraScalesByTheSquareRootOfTheRank() {
        LoraConfig c = LoraConfig.defaults().withR(16).withLoraAlpha(32).withUseRslora(true);
        assertThat(c.scaling("model.layers.0.self_attn.q_proj")).isEqualTo(8.0);
        assertThat(c.withUseRslora(false).scaling("model.layers.0.self_attn.q_proj")).isEqualTo(2.0);
    }

    @Test
    void rankAndAlphaPatternsMatchTheEndOfTheModulePathAndTheFirstMatchingPatternWins() {
        Map<String, Integer> ranks = new LinkedHashMap<>();
        ranks.put("layers\\.1\\.self_attn\\.q_proj", 4);
        ranks.put("q_proj", 2);
        ranks.put("proj", 32); // matches only a whole component: "(.*\.)?(proj)$" needs ".proj" at the end
        LoraConfig c = LoraConfig.defaults().withR(8).withLoraAlpha(16).withRankPattern(ranks)
                .withAlphaPattern(Map.of("v_proj", 4.0));
        assertThat(c.rank("model.layers.1.self_attn.q_proj")).isEqualTo(4);
        assertThat(c.rank("model.layers.0.self_attn.q_proj")).isEqualTo(2);
        assertThat(c.rank("model.layers.0.self_attn.v_proj")).isEqualTo(8);
        assertThat(c.rank("model.layers.0.self_attn.k_proj")).isEqualTo(8);
        assertThat(c.scaling("model.layers.0.self_attn.q_proj")).isEqualTo(16.0 / 2);
        assertThat(c.scaling("model.layers.0.self_attn.v_proj")).isEqualTo(4.0 / 8);
        assertThat(c.withUseRslora(true).scaling("model.layers.1.self_attn.q_proj")).isEqualTo(16.0 / 2);
    }

    @Test
    void writesTheCommonFieldsSortedAsPythonsJsonDumps(@TempDir Path dir) throws Exception {
        LoraConfig c = LoraConfig.defaults().withR(16).withLoraAlpha(32).withLoraDropout(0.05)
                .withTargetModules(TargetModules.allLinear()).withBaseModelNameOrPath("/m")
                .withRankPattern(Map.of("down_proj", 4)).withAlphaPattern(Map.of("down_proj", 2.5));
        String json = c.toAdapterConfigJson(List.of("down_proj", "q_proj"));
        JsonNode n = new ObjectMapper().readTree(json);
        List<String> keys = new java.util.ArrayList<>();
        n.fieldNames().forEachRemaining(keys::add);
        assertThat(keys).isSorted().contains("alpha_pattern", "auto_mapping", "base_model_name_or_path", "bias",
                "fan_in_fan_out", "inference_mode", "init_lora_weights", "layers_pattern", "layers_to_transform",
                "loftq_config", "lora_alpha", "lora_dropout", "megatron_config", "megatron_core", "modules_to_save",
                "peft_type", "r", "rank_pattern", "revision", "target_modules", "task_type", "use_dora", "use_rslora");
        assertThat(keys).doesNotContain("peft_version", "lora_bias", "exclude_modules"); // unknown to older PEFT
        assertThat(n.get("peft_type").asText()).isEqualTo("LORA");
        assertThat(n.get("lora_alpha").isIntegralNumber()).isTrue();
        assertThat(n.get("init_lora_weights").isBoolean()).isTrue();
        assertThat(n.get("target_modules").toString()).isEqualTo("[\"down_proj\",\"q_proj\"]");
        assertThat(json).startsWith("{\n  \"alpha_pattern\": {\n    \"down_proj\": 2.5\n  },\n");

        Path file = dir.resolve("adapter_config.json");
        Files.writeString(file, json);
        LoraConfig back = LoraConfig.readAdapterConfig(file);
        assertThat(back).isEqualTo(c.withTargetModules(TargetModules.names("down_proj", "q_proj")));
    }

    @Test
    void aRegularExpressionIsWrittenAsItIs() throws Exception {
        LoraConfig c = LoraConfig.defaults().withTargetModules(TargetModules.regex(".*(q|v)_proj"));
        JsonNode n = new ObjectMapper().readTree(c.toAdapterConfigJson(null));
        assertThat(n.get("target_modules").asText()).isEqualTo(".*(q|v)_proj");
    }

    @Test
    void errorsNameTheFileAndTheField(@TempDir Path dir) throws Exception {
        assertThatThrownBy(() -> parse("\"r\": \"sixteen\""))
                .isInstanceOf(ConfigFormatException.class).hasMessageContaining("cfg.json").hasMessageContaining("field r")
                .hasMessageContaining("an integer");
        assertThatThrownBy(() -> parse("\"r\": 0")).hasMessageContaining("r must be a positive integer");
        assertThatThrownBy(() -> parse("\"lora_dropout\": 1.5")).hasMessageContaining("lora_dropout");
        assertThatThrownBy(() -> parse("\"bias\": \"some\"")).hasMessageContaining("bias");
        assertThatThrownBy(() -> parse("\"target_modules\": [1]")).hasMessageContaining("target_modules[0]");
        assertThatThrownBy(() -> parse("\"use_dora\": true")).hasMessageContaining("use_dora").hasMessageContaining("DoRA");
        assertThatThrownBy(() -> parse("\"peft_type\": \"IA3\"")).hasMessageContaining("peft_type");
        assertThatThrownBy(() -> parse("\"layers_to_transform\": [0], \"target_modules\": \"all-linear\""))
                .hasMessageContaining("layers_to_transform");
        assertThatThrownBy(() -> LoraConfig.parseAdapterConfig("{\"r\": 8,", "cfg.json"))
                .isInstanceOf(ConfigFormatException.class).hasMessageContaining("not valid JSON");
        assertThatThrownBy(() -> LoraConfig.readAdapterConfig(dir.resolve("adapter_config.json")))
                .hasMessageContaining("adapter_config.json");
    }

    @Test
    void layersToTransformMayBeASingleIndex() throws Exception {
        assertThat(parse("\"layers_to_transform\": 3").layersToTransform()).containsExactly(3);
        assertThat(parse("\"layers_to_transform\": [1, 2]").layersToTransform()).containsExactly(1, 2);
    }

    @Test
    void aFloatAlphaAndAStringInitAreKept() throws Exception {
        LoraConfig c = parse("\"lora_alpha\": 12.5, \"init_lora_weights\": \"gaussian\"");
        assertThat(c.loraAlpha()).isCloseTo(12.5, within(0.0));
        assertThat(c.initLoraWeights()).isEqualTo("gaussian");
        JsonNode n = new ObjectMapper().readTree(c.toAdapterConfigJson(null));
        assertThat(n.get("lora_alpha").asDouble()).isEqualTo(12.5);
        assertThat(n.get("init_lora_weights").asText()).isEqualTo("gaussian");
    }

    private static LoraConfig parse(String fields) throws ConfigFormatException {
        return LoraConfig.parseAdapterConfig("{\"peft_type\": \"LORA\", " + fields + "}", "cfg.json");
    }
}
