package dev.lora4j.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.lora4j.backend.Backend;
import dev.lora4j.backend.Backends;
import dev.lora4j.model.FineTuneMethod;
import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** lora4j bench as a user runs it: the tiny preset on the CPU, and the mistakes a user can make. */
class BenchCommandTest {

    @Test
    void benchmarksTheTinyPresetOnTheCpuPrintingTheTablesAndWritingJson(@TempDir Path dir) throws IOException {
        Path json = dir.resolve("bench.json");
        CliRun run = CliRun.of("bench", "--preset", "tiny", "--device", "cpu", "--method", "lora", "--seq", "16",
                "--micro-batch", "1", "--accum", "2", "--warmup-steps", "0", "--steps", "2", "--gemm-size", "64",
                "--json", json.toString());
        assertThat(run.exitCode()).as(run.err()).isZero();
        assertThat(run.out()).contains("bf16 GEMM peak:", "model: tiny (random weights), 1 configuration",
                "workload: sequences of 16 tokens, micro-batches of 1, 2 accumulation steps (2 samples per optimizer step)",
                "Memory (device memory held by tensors)", "Throughput", "| 1. LoRA q_proj,v_proj", "fits on a 24 GB GPU?",
                "1.00x row 1", "wrote " + json);
        assertThat(run.err()).contains("LoRA q_proj,v_proj: timed step 2:");
        JsonNode root = new ObjectMapper().readTree(json.toFile());
        assertThat(root.path("results")).hasSize(1);
        JsonNode lora = root.path("results").get(0);
        assertThat(lora.path("method").asText()).isEqualTo("lora");
        assertThat(lora.path("alpha").asDouble()).isEqualTo(32.0); // twice the rank, as the reference sets it
        assertThat(lora.path("samples_per_s").asDouble()).isPositive();
        assertThat(lora.path("loss").asDouble()).isBetween(7.0, 8.3); // about ln(2048)
        assertThat(lora.path("peak_bytes").asLong()).isGreaterThan(lora.path("load_bytes").asLong());
        assertThat(lora.path("mfu").asDouble()).isPositive();
        assertThat(lora.path("step_seconds")).hasSize(2);
    }

    @Test
    void listsRunEveryCombinationAndFullFineTuningOnlyOncePerBatchShape() {
        BenchCommand c = new BenchCommand();
        picocli.CommandLine cl = new picocli.CommandLine(c);
        cl.parseArgs("--preset", "tiny", "--method", "lora,full", "--target-modules", "q_proj,v_proj", "--target-modules",
                "all-linear", "--gradient-checkpointing", "true,false");
        assertThat(c.configurations()).extracting(s -> s.label()).containsExactly(
                "LoRA q_proj,v_proj + checkpointing", "LoRA q_proj,v_proj", "LoRA all-linear + checkpointing",
                "LoRA all-linear", "full + checkpointing", "full");
        cl.parseArgs("--preset", "tiny", "--gradient-checkpointing");
        assertThat(c.configurations()).extracting(s -> s.gradientCheckpointing()).containsExactly(true);
    }

    @Test
    void dtypeListsFullFineTuningsWeightPrecisionsAndAppliesToNothingElse() {
        BenchCommand c = new BenchCommand();
        picocli.CommandLine cl = new picocli.CommandLine(c);
        cl.parseArgs("--preset", "tiny", "--method", "lora,full", "--dtype", "float32,bfloat16");
        assertThat(c.configurations()).extracting(s -> s.label()).containsExactly("LoRA q_proj,v_proj", "full", "full BF16");
        assertThat(c.configurations().subList(1, 3)).extracting(s -> s.fineTuneMethod())
                .containsExactly(FineTuneMethod.full(DType.F32), FineTuneMethod.full(DType.BF16));
        assertError(CliRun.of("bench", "--preset", "tiny", "--method", "lora", "--dtype", "bfloat16"),
                "--dtype sets the weights of full fine-tuning; add --method full");
        assertError(CliRun.of("bench", "--preset", "tiny", "--method", "full", "--dtype", "float16"),
                "unknown --dtype 'float16': use float32 or bfloat16");
        assertError(CliRun.of("bench", "--preset", "tiny", "--method", "full", "--dtype", "bfloat16", "--optim", "adamw_8bit"),
                "full fine-tuning in bfloat16 takes adamw_torch");
    }

    @Test
    void mistakesInTheArgumentsGetOneClearLine(@TempDir Path dir) throws IOException {
        assertError(CliRun.of("bench", "--preset", "gpt2"), "unknown --preset 'gpt2': choose one of mistral-7b, llama2-7b, llama3-8b, tiny");
        assertError(CliRun.of("bench", "--preset", "tiny", "--seq", "1"), "--seq must be at least 2 tokens");
        assertError(CliRun.of("bench", "--preset", "tiny", "--method", "dora"), "unknown method 'dora': use full, lora or qlora");
        assertError(CliRun.of("bench", "--preset", "tiny", "--optim", "sgd"), "--optim 'sgd': optim must be one of");
        assertError(CliRun.of("bench", "--preset", "tiny", "--target-modules", "attn_proj"), "attn_proj");
        assertError(CliRun.of("bench", "--preset", "tiny", "--gradient-checkpointing", "maybe"),
                "--gradient-checkpointing takes true or false");
        assertError(CliRun.of("bench", "--preset", "tiny", "--device", "tpu"), "unknown --device 'tpu'");
        assertError(CliRun.of("bench", "--preset", "tiny", "--random-weights"), "--random-weights goes with -m");
        assertError(CliRun.of("bench", "-m", dir.toString()), "has no config.json");
        Path notResults = Files.writeString(dir.resolve("ref.txt"), "nothing here\n");
        assertError(CliRun.of("bench", "--preset", "tiny", "--device", "cpu", "--compare", notResults.toString()),
                "holds no result of hf_peft_bench.py");
        CliRun neither = CliRun.of("bench", "--device", "cpu");
        assertThat(neither.exitCode()).isNotZero();
        assertThat(neither.err()).contains("--preset").contains("--model");
    }

    @Test
    void askingForTheGpuWhereThereIsNoneIsAnErrorNotASilentCpuRun() {
        try (Backend b = Backends.open("auto", n -> {})) {
            assumeTrue(!b.name().equals("cuda"), "this machine has a usable GPU");
        }
        assertError(CliRun.of("bench", "--preset", "tiny", "--device", "cuda"), "--device cuda:");
    }

    private static void assertError(CliRun run, String message) {
        assertThat(run.exitCode()).as(run.out()).isNotZero();
        assertThat(run.err()).contains(message);
        assertThat(run.err()).doesNotContain("\tat dev.lora4j"); // one line, not a stack trace
    }
}
