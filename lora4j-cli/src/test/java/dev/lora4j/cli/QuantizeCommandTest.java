package dev.lora4j.cli;

import dev.lora4j.io.ModelFolder;
import dev.lora4j.io.SafetensorsFile;
import dev.lora4j.quant.QuantType;
import dev.lora4j.quant.QuantizationConfig;
import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;

/** lora4j quantize, and the 4-bit folder it writes under inspect and generate. */
class QuantizeCommandTest {

    @TempDir
    static Path dir;
    static Path model;
    static Path fourBit;

    @BeforeAll
    static void writeAndQuantizeATinyModel() {
        model = dir.resolve("tiny");
        CliRun init = CliRun.of("init-model", "--preset", "tiny", "--layers", "2", "-o", model.toString(), "--seed", "5");
        assertThat(init.exitCode()).as(init.err()).isZero();
        fourBit = dir.resolve("tiny-nf4");
        CliRun run = CliRun.of("quantize", "-m", model.toString(), "-o", fourBit.toString(), "--device", "cpu",
                "--dequantized-dump", dir.resolve("dump.safetensors").toString());
        assertThat(run.exitCode()).as(run.err()).isZero();
        assertThat(run.out()).contains("wrote " + fourBit).contains("14 projections as nf4 with double quantization")
                .contains("block 64").contains("14 weights as lora4j dequantizes them");
    }

    @Test
    void writesTheQloraRecipeByDefaultWithTheTokenizer() throws IOException {
        try (ModelFolder f = ModelFolder.open(fourBit)) {
            assertThat(f.config().quantizationConfig()).isEqualTo(new QuantizationConfig(QuantType.NF4, true, DType.BF16, null));
            assertThat(f.hasTokenizer()).isTrue();
            assertThat(f.weights().names()).contains("model.layers.1.mlp.up_proj.weight.quant_state.bitsandbytes__nf4");
        }
        try (SafetensorsFile dump = SafetensorsFile.open(dir.resolve("dump.safetensors"))) {
            assertThat(dump.names()).hasSize(14);
            assertThat(dump.info("model.layers.0.self_attn.q_proj.weight").dtype()).isEqualTo(DType.F32);
            assertThat(dump.info("model.layers.0.self_attn.q_proj.weight").shape()).containsExactly(256, 256);
        }
    }

    @Test
    void inspectShowsThe4BitWeights() {
        CliRun run = CliRun.of("inspect", "-m", fourBit.toString());
        assertThat(run.exitCode()).as(run.err()).isZero();
        assertThat(run.out()).contains("config.json: bitsandbytes 4-bit, NF4 with double quantization, compute bfloat16")
                .contains("14 of the 14 layer projections")
                .contains("NF4, block 64, double quantization, from BF16").contains("weights as stored");
    }

    @Test
    void generatesFromThe4BitFolderAsFromTheModelQuantizedOnLoad() {
        String[] common = {"--device", "cpu", "-p", "Call me", "--greedy", "--max-new-tokens", "8", "--ignore-eos", "--quiet"};
        CliRun stored = CliRun.of(concat(new String[] {"generate", "-m", fourBit.toString()}, common));
        CliRun onLoad = CliRun.of(concat(new String[] {"generate", "-m", model.toString(), "--load-in-4bit"}, common));
        CliRun dense = CliRun.of(concat(new String[] {"generate", "-m", model.toString()}, common));
        assertThat(stored.exitCode()).as(stored.err()).isZero();
        assertThat(onLoad.exitCode()).as(onLoad.err()).isZero();
        assertThat(stored.out()).startsWith("Call me").isEqualTo(onLoad.out());
        assertThat(dense.exitCode()).isZero();
    }

    @Test
    void takesBitsAndBytesConfigsChoices() throws IOException {
        Path out = dir.resolve("tiny-fp4");
        CliRun run = CliRun.of("quantize", "-m", model.toString(), "-o", out.toString(), "--device", "cpu",
                "--quant-type", "fp4", "--no-double-quant", "--compute-dtype", "fp16", "--block-size", "128",
                "--max-shard-size", "1MB");
        assertThat(run.exitCode()).as(run.err()).isZero();
        try (ModelFolder f = ModelFolder.open(out)) {
            assertThat(f.config().quantizationConfig()).isEqualTo(new QuantizationConfig(QuantType.FP4, false, DType.F16, null));
            assertThat(f.weights().files()).hasSizeGreaterThan(1);
            assertThat(f.weights().info("model.layers.0.mlp.down_proj.weight.absmax").dtype()).isEqualTo(DType.F32);
        }
        assertThat(out.resolve("model.safetensors.index.json")).exists();
    }

    @Test
    void badChoicesAndABusyOutputAreOneClearLine() throws IOException {
        CliRun type = CliRun.of("quantize", "-m", model.toString(), "-o", dir.resolve("x").toString(), "--quant-type", "int4");
        assertThat(type.exitCode()).isEqualTo(1);
        assertThat(type.err()).contains("--quant-type 'int4'").contains("nf4 or fp4");
        CliRun block = CliRun.of("quantize", "-m", model.toString(), "-o", dir.resolve("x").toString(), "--block-size", "100");
        assertThat(block.err()).contains("--block-size must be a power of two from 64 to 4096, got 100");
        CliRun size = CliRun.of("quantize", "-m", model.toString(), "-o", dir.resolve("x").toString(), "--max-shard-size", "big");
        assertThat(size.err()).contains("--max-shard-size 'big' is not a size");
        CliRun busy = CliRun.of("quantize", "-m", model.toString(), "-o", fourBit.toString(), "--device", "cpu");
        assertThat(busy.exitCode()).isEqualTo(1);
        assertThat(busy.err()).contains(fourBit.toString()).contains("not empty").contains("--force");
        assertThat(Files.exists(dir.resolve("x"))).isFalse();
        CliRun again = CliRun.of("quantize", "-m", fourBit.toString(), "-o", dir.resolve("y").toString(), "--device", "cpu");
        assertThat(again.err()).contains("already saved in 4 bits");
    }

    private static String[] concat(String[] a, String[] b) {
        String[] r = new String[a.length + b.length];
        System.arraycopy(a, 0, r, 0, a.length);
        System.arraycopy(b, 0, r, a.length, b.length);
        return r;
    }
}
