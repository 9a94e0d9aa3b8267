package dev.lora4j.quant;

import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.nio.charset.StandardCharsets;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class BnbQuantStateTest {

    private static final String WHERE = "model.safetensors: model.layers.0.mlp.up_proj.weight.quant_state.bitsandbytes__nf4";

    @Test
    void writesTheJsonPythonsJsonDumpsWritesForBitsandbytesDict() {
        // Both strings printed by json.dumps of the dicts QuantState.as_dict(packed=True) builds.
        var nested = new BnbQuantState(QuantType.NF4, 64, DType.BF16, new long[] {4096, 4096}, true, 1.25e-05f);
        assertThat(nested.toJson()).isEqualTo("{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\","
                + " \"shape\": [4096, 4096], \"nested_blocksize\": 256, \"nested_dtype\": \"float32\","
                + " \"nested_offset\": 1.249999968422344e-05}");
        var plain = new BnbQuantState(QuantType.FP4, 128, DType.F16, new long[] {32, 48}, false, 0f);
        assertThat(plain.toJson()).isEqualTo(
                "{\"quant_type\": \"fp4\", \"blocksize\": 128, \"dtype\": \"float16\", \"shape\": [32, 48]}");
    }

    @Test
    void readsBackWhatItWritesToTheBit() {
        var nested = new BnbQuantState(QuantType.NF4, 256, DType.F32, new long[] {11008, 4096}, true, 0.03411848f);
        assertThat(BnbQuantState.parse(nested.toJsonBytes(), WHERE)).isEqualTo(nested);
        var plain = new BnbQuantState(QuantType.FP4, 4096, DType.BF16, new long[] {7, 9}, false, 0f);
        assertThat(BnbQuantState.parse(plain.toJsonBytes(), WHERE)).isEqualTo(plain);
    }

    @Test
    void acceptsKeysInAnyOrderAndAnyWhitespace() {
        String json = "{ \"shape\":[2,64],\"dtype\":\"float16\",\"quant_type\":\"nf4\",\"blocksize\":64 }";
        BnbQuantState s = BnbQuantState.parse(json.getBytes(StandardCharsets.UTF_8), WHERE);
        assertThat(s.shape()).containsExactly(2, 64);
        assertThat(s.nested()).isFalse();
    }

    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {
            "{\"quant_type\": \"int4\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": [2, 64]}| quant_type is \"int4\"",
            "{\"quant_type\": \"nf4\", \"blocksize\": 32, \"dtype\": \"float16\", \"shape\": [2, 64]}| blocksize is 32",
            "{\"quant_type\": \"nf4\", \"blocksize\": 100, \"dtype\": \"float16\", \"shape\": [2, 64]}| blocksize is 100",
            "{\"quant_type\": \"nf4\", \"blocksize\": 8192, \"dtype\": \"float16\", \"shape\": [2, 64]}| blocksize is 8192",
            "{\"quant_type\": \"nf4\", \"blocksize\": \"64\", \"dtype\": \"float16\", \"shape\": [2, 64]}| blocksize must be an integer",
            "{\"quant_type\": \"nf4\", \"dtype\": \"float16\", \"shape\": [2, 64]}| has no \"blocksize\"",
            "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"int8\", \"shape\": [2, 64]}| dtype is \"int8\"",
            "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": \"2x64\"}| shape must be a list",
            "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": [2, -64]}| shape[1] must be a positive integer",
            "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": [2, 64], \"colour\": 1}| unknown key \"colour\"",
            "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": [2, 64], \"nested_blocksize\": 128, \"nested_dtype\": \"float32\", \"nested_offset\": 0.5}| nested_blocksize is 128",
            "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": [2, 64], \"nested_blocksize\": 256, \"nested_dtype\": \"float16\", \"nested_offset\": 0.5}| nested_dtype is \"float16\"",
            "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": [2, 64], \"nested_blocksize\": 256, \"nested_dtype\": \"float32\"}| nested_offset must be a number",
            "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": [2, 64], \"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": NaN}| nested_offset is NaN",
            "[\"nf4\", 64]| must hold a JSON object",
            "{\"quant_type\": \"nf4\", \"blocksize\": 64| is not valid JSON",
    })
    void rejectsWhatIsNotABitsandbytesQuantStateNamingTheTensorAndTheField(String json, String problem) {
        assertThatThrownBy(() -> BnbQuantState.parse(json.getBytes(StandardCharsets.UTF_8), WHERE))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageStartingWith(WHERE + ": the quant state ")
                .hasMessageContaining(problem);
    }

    @Test
    void rejectsBytesThatAreNotUtf8() {
        assertThatThrownBy(() -> BnbQuantState.parse(new byte[] {'{', (byte) 0xC3, '}'}, WHERE))
                .hasMessageContaining(WHERE).hasMessageContaining("not UTF-8");
    }

    @Test
    void damagedBytesAlwaysGiveANamedErrorNeverAnotherException() {
        byte[] good = new BnbQuantState(QuantType.NF4, 64, DType.BF16, new long[] {64, 128}, true, 0.0625f).toJsonBytes();
        Random random = new Random(42);
        for (int trial = 0; trial < 2000; trial++) {
            byte[] bad = good.clone();
            int edits = 1 + random.nextInt(3);
            for (int e = 0; e < edits; e++) bad[random.nextInt(bad.length)] = (byte) random.nextInt(256);
            try {
                BnbQuantState s = BnbQuantState.parse(bad, WHERE);
                // Some edits keep it valid (a digit for a digit): then it must still be a checked state.
                assertThat(s.blockSize()).isBetween(64, 4096);
                assertThat(java.util.Arrays.stream(s.shape()).allMatch(d -> d > 0)).isTrue();
            } catch (IllegalArgumentException expected) {
                assertThat(expected.getMessage()).startsWith(WHERE + ": the quant state ");
            }
        }
    }
}
