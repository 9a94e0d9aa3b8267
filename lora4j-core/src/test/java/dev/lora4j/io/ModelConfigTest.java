package dev.lora4j.io;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.function.Consumer;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** config.json files as transformers 4 and 5 write them for Llama, Mistral and Qwen2 models. */
class ModelConfigTest {

    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    Path dir;

    static String resource(String name) throws IOException {
        try (InputStream in = ModelConfigTest.class.getResourceAsStream("configs/" + name)) {
            if (in == null) throw new IllegalStateException("missing test resource configs/" + name);
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        }
    }

    static ModelConfig config(String name) throws IOException {
        return ModelConfig.parse(resource(name), name);
    }

    /** A resource with some fields changed: edits the parsed JSON tree. */
    static String edited(String name, Consumer<ObjectNode> edit) throws IOException {
        ObjectNode root = (ObjectNode) JSON.readTree(resource(name));
        edit.accept(root);
        return JSON.writeValueAsString(root);
    }

    // ---- real configs ---------------------------------------------------------------------------------------

    @Test
    void readsLlama2() throws IOException {
        ModelConfig c = config("llama-2-7b.json");
        assertThat(c.architectures()).containsExactly("LlamaForCausalLM");
        assertThat(c.architecture()).isEqualTo("LlamaForCausalLM");
        assertThat(c.modelType()).isEqualTo("llama");
        assertThat(c.vocabSize()).isEqualTo(32000);
        assertThat(c.hiddenSize()).isEqualTo(4096);
        assertThat(c.intermediateSize()).isEqualTo(11008);
        assertThat(c.numHiddenLayers()).isEqualTo(32);
        assertThat(c.numAttentionHeads()).isEqualTo(32);
        assertThat(c.numKeyValueHeads()).isEqualTo(32);
        assertThat(c.headDim()).isEqualTo(128);
        assertThat(c.rmsNormEps()).isEqualTo(1e-5);
        assertThat(c.ropeTheta()).isEqualTo(10000.0); // absent: transformers' default
        assertThat(c.ropeScaling()).isNull();
        assertThat(c.maxPositionEmbeddings()).isEqualTo(4096);
        assertThat(c.slidingWindow()).isZero();
        assertThat(c.attentionBias()).isFalse();
        assertThat(c.mlpBias()).isFalse();
        assertThat(c.tieWordEmbeddings()).isFalse();
        assertThat(c.bosTokenId()).isEqualTo(1);
        assertThat(c.eosTokenIds()).containsExactly(2);
        assertThat(c.padTokenId()).isNull();
        assertThat(c.dtype()).isEqualTo("float16");
        assertThat(c.hiddenAct()).isEqualTo("silu");
    }

    @Test
    void readsLlama3WithGroupedQueryAttention() throws IOException {
        ModelConfig c = config("llama-3-8b.json");
        assertThat(c.numKeyValueHeads()).isEqualTo(8);
        assertThat(c.numKeyValueGroups()).isEqualTo(4);
        assertThat(c.ropeTheta()).isEqualTo(500000.0);
        assertThat(c.ropeScaling()).isNull();
        assertThat(c.bosTokenId()).isEqualTo(128000);
        assertThat(c.eosTokenIds()).containsExactly(128001);
        assertThat(c.dtype()).isEqualTo("bfloat16");
    }

    @Test
    void readsLlama31RopeScalingAndSeveralEosTokens() throws IOException {
        ModelConfig c = config("llama-3.1-8b-instruct.json");
        assertThat(c.eosTokenIds()).containsExactly(128001, 128008, 128009);
        assertThat(c.ropeTheta()).isEqualTo(500000.0);
        assertThat(c.ropeScaling()).isEqualTo(RopeScaling.llama3(8.0, 1.0, 4.0, 8192));
        assertThat(c.maxPositionEmbeddings()).isEqualTo(131072);
    }

    @Test
    void readsTransformers5RopeParametersAndDtype() throws IOException {
        ModelConfig c = config("llama-3.2-1b-transformers5.json");
        assertThat(c.ropeTheta()).isEqualTo(500000.0);
        assertThat(c.ropeScaling()).isEqualTo(RopeScaling.llama3(32.0, 1.0, 4.0, 8192));
        assertThat(c.headDim()).isEqualTo(64);
        assertThat(c.tieWordEmbeddings()).isTrue();
        assertThat(c.dtype()).isEqualTo("bfloat16");
        assertThat(c.padTokenId()).isNull();
    }

    @Test
    void readsTinyLlama() throws IOException {
        ModelConfig c = config("tinyllama-1.1b-chat.json");
        assertThat(c.numHiddenLayers()).isEqualTo(22);
        assertThat(c.numKeyValueHeads()).isEqualTo(4);
        assertThat(c.headDim()).isEqualTo(64);
        assertThat(c.intermediateSize()).isEqualTo(5632);
    }

    @Test
    void readsMistralsSlidingWindowOnEveryLayer() throws IOException {
        ModelConfig v01 = config("mistral-7b-v0.1.json");
        assertThat(v01.modelType()).isEqualTo("mistral");
        assertThat(v01.slidingWindow()).isEqualTo(4096);
        assertThat(v01.maxWindowLayers()).isZero();
        assertThat(v01.slidingWindowFor(0)).isEqualTo(4096);
        assertThat(v01.slidingWindowFor(31)).isEqualTo(4096);
        assertThat(v01.qkvBias()).isFalse();
        assertThat(v01.outputProjectionBias()).isFalse();

        ModelConfig v02 = config("mistral-7b-instruct-v0.2.json");
        assertThat(v02.slidingWindow()).isZero();
        assertThat(v02.slidingWindowFor(0)).isZero();
        assertThat(v02.ropeTheta()).isEqualTo(1e6);
    }

    @Test
    void mistralWithoutASlidingWindowKeyGetsTransformersDefault() throws IOException {
        ModelConfig c = ModelConfig.parse(edited("mistral-7b-instruct-v0.2.json", o -> o.remove("sliding_window")), "c");
        assertThat(c.slidingWindow()).isEqualTo(4096);
    }

    @Test
    void readsMistralNemosHeadDimThatDiffersFromHiddenOverHeads() throws IOException {
        ModelConfig c = config("mistral-nemo-instruct-2407.json");
        assertThat(c.hiddenSize()).isEqualTo(5120);
        assertThat(c.headDim()).isEqualTo(128);
        assertThat(c.headDim() * c.numAttentionHeads()).isNotEqualTo(c.hiddenSize());
        assertThat(c.vocabSize()).isEqualTo(131072);
    }

    @Test
    void readsQwen25WithBiasOnQkvOnlyAndNoSlidingWindowWhenDisabled() throws IOException {
        ModelConfig c = config("qwen2.5-7b-instruct.json");
        assertThat(c.modelType()).isEqualTo("qwen2");
        assertThat(c.attentionBias()).isTrue();
        assertThat(c.qkvBias()).isTrue();
        assertThat(c.outputProjectionBias()).isFalse();
        assertThat(c.slidingWindow()).isZero();
        assertThat(c.slidingWindowFor(27)).isZero();
        assertThat(c.rmsNormEps()).isEqualTo(1e-6);
        assertThat(c.numKeyValueGroups()).isEqualTo(7);
        assertThat(c.eosTokenIds()).containsExactly(151645);

        ModelConfig small = config("qwen2.5-0.5b-instruct.json");
        assertThat(small.headDim()).isEqualTo(64);
        assertThat(small.tieWordEmbeddings()).isTrue();
    }

    @Test
    void qwen2SlidingWindowAppliesFromMaxWindowLayersOn() throws IOException {
        ModelConfig c = ModelConfig.parse(edited("qwen2.5-0.5b-instruct.json", o -> o.put("use_sliding_window", true)), "c");
        assertThat(c.slidingWindow()).isEqualTo(32768);
        assertThat(c.maxWindowLayers()).isEqualTo(21);
        assertThat(c.slidingWindowFor(20)).isZero();
        assertThat(c.slidingWindowFor(21)).isEqualTo(32768);
        assertThat(c.slidingWindowFor(23)).isEqualTo(32768);
    }

    @Test
    void qwen2LayerTypesAsTransformers5WritesThem() throws IOException {
        String json = edited("qwen2.5-0.5b-instruct.json", o -> {
            o.put("use_sliding_window", true);
            var types = o.putArray("layer_types");
            for (int i = 0; i < 24; i++) types.add(i < 18 ? "full_attention" : "sliding_attention");
        });
        assertThat(ModelConfig.parse(json, "c").maxWindowLayers()).isEqualTo(18);

        String alternating = edited("qwen2.5-0.5b-instruct.json", o -> {
            o.put("use_sliding_window", true);
            var types = o.putArray("layer_types");
            for (int i = 0; i < 24; i++) types.add(i % 2 == 0 ? "full_attention" : "sliding_attention");
        });
        assertThatThrownBy(() -> ModelConfig.parse(alternating, "alt.json")).isInstanceOf(ConfigFormatException.class)
                .hasMessageContainingAll("alt.json", "layer_types", "[2]");
    }

    @Test
    void qwen2HasQkvBiasEvenWhenAttentionBiasSaysOtherwise() throws IOException {
        ModelConfig c = ModelConfig.parse(edited("qwen2.5-7b-instruct.json", o -> o.put("attention_bias", false)), "c");
        assertThat(c.qkvBias()).isTrue();
        assertThat(c.outputProjectionBias()).isFalse();
    }

    @Test
    void llamaAttentionBiasCoversTheOutputProjectionToo() throws IOException {
        ModelConfig c = ModelConfig.parse(edited("llama-3-8b.json", o -> {
            o.put("attention_bias", true);
            o.put("mlp_bias", true);
        }), "c");
        assertThat(c.qkvBias()).isTrue();
        assertThat(c.outputProjectionBias()).isTrue();
        assertThat(c.mlpBias()).isTrue();
    }

    // ---- the two RoPE spellings -----------------------------------------------------------------------------

    @Test
    void bothRopeFormsOfTheSameModelReadTheSame() throws IOException {
        String v4 = resource("llama-3.1-8b-instruct.json");
        String v5 = edited("llama-3.1-8b-instruct.json", o -> {
            JsonNode scaling = o.remove("rope_scaling");
            o.remove("rope_theta");
            ObjectNode p = o.putObject("rope_parameters");
            p.setAll((ObjectNode) scaling);
            p.put("rope_theta", 500000.0);
        });
        assertThat(ModelConfig.parse(v5, "v5")).isEqualTo(ModelConfig.parse(v4, "v4"));
    }

    @Test
    void acceptsTheOlderTypeKeyAndLinearAndDynamicScaling() throws IOException {
        String linear = edited("llama-2-7b.json", o -> o.putObject("rope_scaling").put("type", "linear").put("factor", 2.0));
        assertThat(ModelConfig.parse(linear, "c").ropeScaling()).isEqualTo(RopeScaling.linear(2.0));
        String dynamic = edited("llama-2-7b.json", o -> o.putObject("rope_scaling").put("rope_type", "dynamic").put("factor", 4));
        assertThat(ModelConfig.parse(dynamic, "c").ropeScaling()).isEqualTo(RopeScaling.dynamic(4.0));
    }

    @Test
    void defaultRopeParametersMeanNoScalingAndTheirThetaWins() throws IOException {
        String json = edited("llama-2-7b.json", o -> {
            o.put("rope_theta", 1234.0);
            o.putObject("rope_parameters").put("rope_type", "default").put("rope_theta", 250000);
        });
        ModelConfig c = ModelConfig.parse(json, "c");
        assertThat(c.ropeScaling()).isNull();
        assertThat(c.ropeTheta()).isEqualTo(250000.0);
    }

    @Test
    void llama3ScalingWithoutOriginalMaxPositionsUsesMaxPositionEmbeddings() throws IOException {
        String json = edited("llama-3.1-8b-instruct.json", o -> ((ObjectNode) o.get("rope_scaling")).remove("original_max_position_embeddings"));
        assertThat(ModelConfig.parse(json, "c").ropeScaling().originalMaxPositionEmbeddings()).isEqualTo(131072);
    }

    // ---- writing --------------------------------------------------------------------------------------------

    @ParameterizedTest
    @ValueSource(strings = {"llama-2-7b.json", "llama-3-8b.json", "llama-3.1-8b-instruct.json",
            "llama-3.2-1b-transformers5.json", "tinyllama-1.1b-chat.json", "mistral-7b-v0.1.json",
            "mistral-7b-instruct-v0.2.json", "mistral-nemo-instruct-2407.json", "qwen2.5-7b-instruct.json",
            "qwen2.5-0.5b-instruct.json"})
    void writesAConfigThatReadsBackEqual(String name) throws IOException {
        ModelConfig c = config(name);
        assertThat(ModelConfig.parse(c.toJson(), "written")).isEqualTo(c);
    }

    @Test
    void writesRopeAsTransformers5DoesAndKeepsTheTopLevelTheta() throws IOException {
        JsonNode out = JSON.readTree(config("llama-3.1-8b-instruct.json").toJson());
        assertThat(out.get("architectures").get(0).asText()).isEqualTo("LlamaForCausalLM");
        assertThat(out.get("model_type").asText()).isEqualTo("llama");
        assertThat(out.get("dtype").asText()).isEqualTo("bfloat16");
        assertThat(out.get("head_dim").asInt()).isEqualTo(128);
        JsonNode rope = out.get("rope_parameters");
        assertThat(rope.get("rope_type").asText()).isEqualTo("llama3");
        assertThat(rope.get("rope_theta").asDouble()).isEqualTo(500000.0);
        assertThat(rope.get("factor").asDouble()).isEqualTo(8.0);
        assertThat(rope.get("low_freq_factor").asDouble()).isEqualTo(1.0);
        assertThat(rope.get("high_freq_factor").asDouble()).isEqualTo(4.0);
        assertThat(rope.get("original_max_position_embeddings").asInt()).isEqualTo(8192);
        assertThat(out.get("rope_theta").asDouble()).isEqualTo(500000.0);
        assertThat(out.get("rope_scaling").get("rope_type").asText()).isEqualTo("llama3");
        assertThat(out.get("rope_scaling").has("rope_theta")).isFalse();
        assertThat(out.get("eos_token_id").isArray()).isTrue();
        List<String> keys = new java.util.ArrayList<>();
        out.fieldNames().forEachRemaining(keys::add);
        assertThat(keys).isSorted();
    }

    @Test
    void writesQwen2AndMistralSpecificFields() throws IOException {
        JsonNode qwen = JSON.readTree(config("qwen2.5-7b-instruct.json").toJson());
        assertThat(qwen.get("use_sliding_window").asBoolean()).isFalse();
        assertThat(qwen.get("sliding_window").isNull()).isTrue();
        assertThat(qwen.get("layer_types")).hasSize(28);
        assertThat(qwen.has("attention_bias")).isFalse();
        assertThat(qwen.get("eos_token_id").asInt()).isEqualTo(151645);
        JsonNode mistral = JSON.readTree(config("mistral-7b-v0.1.json").toJson());
        assertThat(mistral.get("sliding_window").asInt()).isEqualTo(4096);
        assertThat(mistral.get("rope_parameters").get("rope_type").asText()).isEqualTo("default");
        assertThat(mistral.has("rope_scaling")).isFalse();
    }

    // ---- errors ---------------------------------------------------------------------------------------------

    private void assertRejected(String json, String... messageParts) {
        assertThatThrownBy(() -> ModelConfig.parse(json, "/models/x/config.json"))
                .isInstanceOf(ConfigFormatException.class)
                .hasMessageContaining("/models/x/config.json")
                .hasMessageContainingAll(messageParts);
    }

    @Test
    void namesAnUnsupportedArchitectureAndWhatIsSupported() throws IOException {
        assertRejected(edited("llama-2-7b.json", o -> {
                    o.putArray("architectures").add("Qwen3ForCausalLM");
                    o.put("model_type", "qwen3");
                }),
                "unsupported architecture Qwen3ForCausalLM in /models/x/config.json: lora4j runs LlamaForCausalLM,"
                        + " MistralForCausalLM and Qwen2ForCausalLM");
        assertRejected(edited("llama-2-7b.json", o -> {
            o.remove("architectures");
            o.put("model_type", "gemma2");
        }), "unsupported model_type \"gemma2\"");
        assertRejected(edited("llama-2-7b.json", o -> {
            o.remove("architectures");
            o.remove("model_type");
        }), "neither \"model_type\" nor \"architectures\"");
    }

    @Test
    void infersTheModelTypeFromTheArchitectureAndTheOtherWayRound() throws IOException {
        assertThat(ModelConfig.parse(edited("mistral-7b-v0.1.json", o -> o.remove("model_type")), "c").modelType())
                .isEqualTo("mistral");
        assertThat(ModelConfig.parse(edited("qwen2.5-7b-instruct.json", o -> o.remove("architectures")), "c").architectures())
                .containsExactly("Qwen2ForCausalLM");
    }

    @Test
    void namesAFieldOfTheWrongType() throws IOException {
        assertRejected(edited("llama-2-7b.json", o -> o.put("hidden_size", "4096")),
                "\"hidden_size\"", "must be an integer", "the string \"4096\"");
        assertRejected(edited("llama-2-7b.json", o -> o.put("hidden_size", 4096.5)), "\"hidden_size\"", "4096.5");
        assertRejected(edited("llama-2-7b.json", o -> o.put("rms_norm_eps", "1e-5")), "\"rms_norm_eps\"", "must be a number");
        assertRejected(edited("llama-2-7b.json", o -> o.put("tie_word_embeddings", 0)), "\"tie_word_embeddings\"", "true or false");
        assertRejected(edited("llama-2-7b.json", o -> o.putArray("eos_token_id").add(2).add("x")), "\"eos_token_id[1]\"");
        assertRejected(edited("llama-2-7b.json", o -> o.put("architectures", "LlamaForCausalLM")), "\"architectures\"", "a list of strings");
        assertRejected(edited("llama-2-7b.json", o -> o.put("vocab_size", 1L << 40)), "\"vocab_size\"", "32 bits");
        assertRejected(edited("llama-3.1-8b-instruct.json", o -> ((ObjectNode) o.get("rope_scaling")).put("factor", "8")),
                "\"rope_scaling.factor\"", "must be a number");
    }

    @Test
    void namesAMissingRequiredField() throws IOException {
        assertRejected(edited("llama-2-7b.json", o -> o.remove("vocab_size")), "\"vocab_size\"", "missing");
        assertRejected(edited("llama-2-7b.json", o -> o.remove("num_attention_heads")), "\"num_attention_heads\"", "missing");
        assertRejected(edited("llama-3.1-8b-instruct.json", o -> ((ObjectNode) o.get("rope_scaling")).remove("low_freq_factor")),
                "\"rope_scaling.low_freq_factor\"", "missing");
    }

    @Test
    void rejectsInconsistentShapes() throws IOException {
        assertRejected(edited("llama-2-7b.json", o -> o.put("hidden_size", 4000).put("num_attention_heads", 48)),
                "not a multiple of num_attention_heads");
        assertRejected(edited("llama-3-8b.json", o -> o.put("num_key_value_heads", 5)),
                "num_attention_heads (32) must be a multiple of num_key_value_heads (5)");
        assertRejected(edited("llama-2-7b.json", o -> o.put("num_hidden_layers", 0)), "num_hidden_layers", "positive");
        // hidden_size need not divide by the heads when head_dim says what a head is.
        ModelConfig c = ModelConfig.parse(edited("llama-2-7b.json", o -> o.put("hidden_size", 4000).put("head_dim", 128)), "c");
        assertThat(c.headDim()).isEqualTo(128);
    }

    @Test
    void rejectsActivationsAndRopeTypesItDoesNotRun() throws IOException {
        assertRejected(edited("llama-2-7b.json", o -> o.put("hidden_act", "gelu")), "\"hidden_act\"", "gelu", "silu");
        assertRejected(edited("llama-2-7b.json", o -> o.putObject("rope_scaling").put("rope_type", "yarn").put("factor", 4.0)),
                "\"rope_scaling.rope_type\"", "yarn", "llama3");
        assertRejected(edited("llama-2-7b.json", o -> o.putObject("rope_parameters").put("rope_type", "default")
                .put("partial_rotary_factor", 0.5)), "partial_rotary_factor");
        assertRejected(edited("llama-3.1-8b-instruct.json", o -> ((ObjectNode) o.get("rope_scaling")).put("high_freq_factor", 0.5)),
                "low_freq_factor < high_freq_factor");
    }

    @Test
    void rejectsTextThatIsNotAJsonObject() {
        assertRejected("{\"vocab_size\": 3", "not valid JSON", "line 1");
        assertRejected("[1, 2]", "must hold a JSON object", "a list");
        assertRejected("", "must hold a JSON object");
    }

    @Test
    void loadNamesTheFile() throws IOException {
        Path p = dir.resolve("config.json");
        Files.writeString(p, "{\"model_type\": \"llama\"}");
        assertThatThrownBy(() -> ModelConfig.load(p)).isInstanceOf(ConfigFormatException.class)
                .hasMessageContainingAll(p.toString(), "\"vocab_size\"");
        Files.write(p, new byte[]{'{', (byte) 0xff, '}'});
        assertThatThrownBy(() -> ModelConfig.load(p)).isInstanceOf(ConfigFormatException.class)
                .hasMessageContainingAll(p.toString(), "UTF-8");
        Files.writeString(p, resource("tinyllama-1.1b-chat.json"));
        assertThat(ModelConfig.load(p).numHiddenLayers()).isEqualTo(22);
    }
}
