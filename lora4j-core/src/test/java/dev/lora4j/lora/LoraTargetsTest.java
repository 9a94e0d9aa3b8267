package dev.lora4j.lora;

import dev.lora4j.model.LlamaShape;
import dev.lora4j.model.RandomModelWriter;
import dev.lora4j.model.RopeFrequencies;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Target resolution as PEFT's check_target_module_exists and _maybe_include_all_linear_layers decide it. */
class LoraTargetsTest {
    private static final LlamaShape THREE_LAYERS = new LlamaShape("llama", 100, 32, 48, 3, 4, 2, 8, 1e-5f, false, false,
            false, false, new int[3], RopeFrequencies.unscaled(8, 10000), 128, Integer.MAX_VALUE);

    @Test
    void namesMatchTheWholeLastComponentsOfAPath() {
        List<String> t = LoraTargets.resolve(LoraConfig.defaults(), THREE_LAYERS);
        assertThat(t).containsExactly(
                "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj",
                "model.layers.2.self_attn.q_proj", "model.layers.2.self_attn.v_proj");
        // "proj" is not a suffix component of any module; "self_attn.o_proj" is.
        assertThat(LoraTargets.resolve(LoraConfig.defaults().withTargetModules(TargetModules.names("self_attn.o_proj")),
                THREE_LAYERS)).hasSize(3).allMatch(p -> p.endsWith(".o_proj"));
        assertThatThrownBy(() -> LoraTargets.resolve(LoraConfig.defaults().withTargetModules(TargetModules.names("proj")),
                THREE_LAYERS)).hasMessageContaining("matches no module");
    }

    @Test
    void aRegularExpressionMustMatchTheWholePath() {
        LoraConfig c = LoraConfig.defaults().withTargetModules(TargetModules.regex(".*layers\\.[02]\\.mlp\\.(up|down)_proj"));
        assertThat(LoraTargets.resolve(c, THREE_LAYERS)).containsExactly(
                "model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj",
                "model.layers.2.mlp.up_proj", "model.layers.2.mlp.down_proj");
        LoraConfig partial = LoraConfig.defaults().withTargetModules(TargetModules.regex("q_proj"));
        assertThatThrownBy(() -> LoraTargets.resolve(partial, THREE_LAYERS)).hasMessageContaining("matches no module");
    }

    @Test
    void allLinearIsEveryProjectionButNotTheOutputLayer() {
        List<String> t = LoraTargets.resolve(LoraConfig.defaults().withTargetModules(TargetModules.allLinear()), THREE_LAYERS);
        assertThat(t).hasSize(21).noneMatch(p -> p.contains("lm_head"));
        assertThat(t.subList(0, 7)).containsExactly("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
                "model.layers.0.self_attn.v_proj", "model.layers.0.self_attn.o_proj", "model.layers.0.mlp.gate_proj",
                "model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj");
    }

    @Test
    void layersToTransformKeepsTheListedLayersButNotForAFullPath() {
        LoraConfig c = LoraConfig.defaults().withLayersToTransform(List.of(0, 2));
        assertThat(LoraTargets.resolve(c, THREE_LAYERS)).containsExactly(
                "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                "model.layers.2.self_attn.q_proj", "model.layers.2.self_attn.v_proj");
        // PEFT takes a module named by its full path as it is, whatever layers_to_transform says.
        LoraConfig full = c.withTargetModules(TargetModules.names("model.layers.1.mlp.up_proj", "k_proj"));
        assertThat(LoraTargets.resolve(full, THREE_LAYERS)).containsExactly(
                "model.layers.0.self_attn.k_proj", "model.layers.1.mlp.up_proj", "model.layers.2.self_attn.k_proj");
    }

    @Test
    void modulesToSaveAreNeverAdaptedAndMatchAsPlainSuffixes() {
        LoraConfig c = LoraConfig.defaults().withTargetModules(TargetModules.names("q_proj", "down_proj"))
                .withModulesToSave(List.of("layers.1.mlp", "norm"));
        assertThat(LoraTargets.resolve(c, THREE_LAYERS)).doesNotContain("model.layers.1.mlp.down_proj").hasSize(5);
        List<String> saved = new ArrayList<>();
        for (LlamaModules.Module m : LoraTargets.modulesToSave(c, THREE_LAYERS)) saved.add(m.path());
        // "norm" ends input_layernorm and post_attention_layernorm too, as PEFT's str.endswith matches.
        assertThat(saved).containsExactly("model.layers.0.input_layernorm", "model.layers.0.post_attention_layernorm",
                "model.layers.1.mlp", "model.layers.1.input_layernorm", "model.layers.1.post_attention_layernorm",
                "model.layers.2.input_layernorm", "model.layers.2.post_attention_layernorm", "model.norm");
        assertThat(LlamaModules.find(THREE_LAYERS, "model.layers.1.mlp").parameterNames(THREE_LAYERS)).containsExactly(
                "model.layers.1.mlp.gate_proj.weight", "model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.down_proj.weight");
        assertThatThrownBy(() -> LoraTargets.modulesToSave(LoraConfig.defaults().withModulesToSave(List.of("score")), THREE_LAYERS))
                .hasMessageContaining("score");
    }

    @Test
    void targetsOtherThanProjectionsAreRefusedWithTheAlternative() {
        assertThatThrownBy(() -> LoraTargets.resolve(LoraConfig.defaults().withTargetModules(TargetModules.names("q_proj",
                "embed_tokens")), THREE_LAYERS)).hasMessageContaining("model.embed_tokens").hasMessageContaining("modules_to_save");
        assertThatThrownBy(() -> LoraTargets.resolve(LoraConfig.defaults().withTargetModules(TargetModules.names("lm_head")),
                THREE_LAYERS)).hasMessageContaining("lm_head");
    }

    @Test
    void savedTargetModulesAreAllLinearsPathsOnSmallModelsAndSuffixesOnLargeOnes() {
        LoraConfig allLinear = LoraConfig.defaults().withTargetModules(TargetModules.allLinear());
        List<String> small = LoraTargets.savedTargetModules(allLinear, new LlamaShape("llama", 100, 32, 48, 2, 4, 2, 8,
                1e-5f, false, false, false, false, new int[2], RopeFrequencies.unscaled(8, 10000), 128, Integer.MAX_VALUE));
        assertThat(small).hasSize(14).contains("model.layers.1.self_attn.v_proj");
        assertThat(LoraTargets.savedTargetModules(allLinear, THREE_LAYERS)).containsExactly(
                "down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj");
        assertThat(LoraTargets.savedTargetModules(allLinear, LlamaShape.of(RandomModelWriter.preset("mistral-7b"))))
                .containsExactly("down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj");
        assertThat(LoraTargets.savedTargetModules(LoraConfig.defaults(), THREE_LAYERS)).containsExactly("q_proj", "v_proj");
        assertThat(LoraTargets.savedTargetModules(LoraConfig.defaults().withTargetModules(TargetModules.regex(".*q_proj")),
                THREE_LAYERS)).isNull();
    }

    @Test
    void minimalSuffixesAreThoseOfPeftsExample() {
        List<String> targets = new ArrayList<>(), others = new ArrayList<>();
        for (int i = 0; i < 100; i++) {
            targets.add("model.decoder.layers." + i + ".self_attn.q_proj");
            targets.add("model.decoder.layers." + i + ".self_attn.v_proj");
            others.add("model.encoder.layers." + i + ".self_attn.k_proj");
        }
        assertThat(LoraTargets.minimalTargetModules(targets, others)).containsExactlyInAnyOrder("q_proj", "v_proj");
    }
}
