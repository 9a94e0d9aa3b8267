package dev.lora4j.io;

import dev.lora4j.quant.QuantSpec;
import dev.lora4j.quant.QuantType;
import dev.lora4j.quant.QuantizationConfig;
import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class QuantizationConfigReaderTest {

    private static final String MODEL = "\"model_type\": \"llama\", \"vocab_size\": 32, \"hidden_size\": 16,"
            + " \"intermediate_size\": 32, \"num_hidden_layers\": 1, \"num_attention_heads\": 2";

    private static ModelConfig parse(String quantizationConfig) throws ConfigFormatException {
        return ModelConfig.parse("{" + MODEL + ", \"quantization_config\": " + quantizationConfig + "}", "m/config.json");
    }

    @Test
    void readsTheBlockTransformersWritesForA4BitModel() throws ConfigFormatException {
        // As transformers 4.4x / 5 save it (BitsAndBytesConfig.to_dict, keys sorted).
        ModelConfig c = parse("""
                {"_load_in_4bit": true, "_load_in_8bit": false, "bnb_4bit_compute_dtype": "bfloat16",
                 "bnb_4bit_quant_storage": "uint8", "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": true,
                 "llm_int8_enable_fp32_cpu_offload": false, "llm_int8_has_fp16_weight": false,
                 "llm_int8_skip_modules": null, "llm_int8_threshold": 6.0, "load_in_4bit": true,
                 "load_in_8bit": false, "quant_method": "bitsandbytes"}""");
        assertThat(c.quantizationConfig()).isEqualTo(new QuantizationConfig(QuantType.NF4, true, DType.BF16, null));
        assertThat(c.quantizationConfig().spec(64)).isEqualTo(QuantSpec.QLORA);
    }

    @Test
    void absentFieldsTakeBitsAndBytesConfigsDefaultsNotTheQloraRecipe() throws ConfigFormatException {
        ModelConfig c = parse("{\"load_in_4bit\": true}");
        assertThat(c.quantizationConfig()).isEqualTo(new QuantizationConfig(QuantType.FP4, false, DType.F32, null));
    }

    @Test
    void aDenseModelHasNoQuantizationAndWritesNone() throws ConfigFormatException {
        ModelConfig c = ModelConfig.parse("{" + MODEL + "}", "m/config.json");
        assertThat(c.quantizationConfig()).isNull();
        assertThat(c.isQuantized()).isFalse();
        assertThat(c.toJson()).doesNotContain("quantization_config");
    }

    @Test
    void writesTheBlockAndReadsItBack() throws ConfigFormatException {
        var q = new QuantizationConfig(QuantType.FP4, false, DType.F16, List.of("mlp.down_proj"));
        ModelConfig c = ModelConfig.parse("{" + MODEL + "}", "m/config.json").withQuantization(q);
        String json = c.toJson();
        assertThat(json).contains("\"quantization_config\": {\n    \"_load_in_4bit\": true,")
                .contains("\"bnb_4bit_compute_dtype\": \"float16\"").contains("\"quant_method\": \"bitsandbytes\"");
        assertThat(ModelConfig.parse(json, "again").quantizationConfig()).isEqualTo(q);
    }

    @Test
    void skipModulesMatchAsTransformersMatchesThem() {
        var q = new QuantizationConfig(QuantType.NF4, true, DType.BF16, List.of("down_proj", "model.layers.1."));
        assertThat(q.skips("model.layers.0.mlp.down_proj")).isTrue();
        assertThat(q.skips("model.layers.1.self_attn.q_proj")).isTrue();
        assertThat(q.skips("model.layers.0.self_attn.q_proj")).isFalse();
        assertThat(QuantizationConfig.of(QuantSpec.QLORA).skips("lm_head")).isFalse();
    }

    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {
            "{\"load_in_8bit\": true, \"quant_method\": \"bitsandbytes\"}| \"quantization_config.load_in_8bit\" is true: this is an 8-bit",
            "{\"quant_method\": \"gptq\", \"bits\": 4}| \"quantization_config.quant_method\" is \"gptq\"",
            "{\"quant_method\": \"bitsandbytes\", \"load_in_4bit\": false}| not in 4 bits",
            "{\"load_in_4bit\": true, \"bnb_4bit_quant_type\": \"int4\"}| \"quantization_config.bnb_4bit_quant_type\" is \"int4\"",
            "{\"load_in_4bit\": true, \"bnb_4bit_compute_dtype\": \"int8\"}| bnb_4bit_compute_dtype\" is \"int8\"",
            "{\"load_in_4bit\": true, \"bnb_4bit_quant_storage\": \"bfloat16\"}| \"uint8\"",
            "{\"load_in_4bit\": true, \"bnb_4bit_use_double_quant\": \"yes\"}| must be true or false",
            "{\"load_in_4bit\": true, \"llm_int8_skip_modules\": [\"(\"]}| not a valid pattern",
            "[1, 2]| must be an object",
    })
    void refusesWhatIsNotABitsandbytes4BitConfigNamingTheField(String block, String problem) {
        assertThatThrownBy(() -> parse(block))
                .isInstanceOf(ConfigFormatException.class)
                .hasMessageContaining("m/config.json")
                .hasMessageContaining(problem);
    }
}
