package dev.lora4j.train.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.lora4j.backend.Backend;
import dev.lora4j.backend.cpu.CpuBackend;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.function.Supplier;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

/** The benchmark end to end on the tiny preset, on the CPU. */
class FineTuneBenchmarkTest {

    static final Supplier<Backend> CPU = () -> new CpuBackend(2);
    static final ModelSource TINY = ModelSource.preset("tiny");
    static final BenchSettings SMALL = BenchSettings.defaults(BenchMethod.LORA).withBatch(32, 1, 2).withSteps(2, 1);

    static GemmPeak peak;
    static BenchResult lora, full;
    static List<String> log = new ArrayList<>();

    @BeforeAll
    static void run() {
        try (Backend b = CPU.get()) {
            peak = GemmPeak.measure(b, 128);
        }
        lora = FineTuneBenchmark.run(SMALL, TINY, CPU, peak, log::add);
        full = FineTuneBenchmark.run(SMALL.withMethod(BenchMethod.FULL).withGradientCheckpointing(true), TINY, CPU, peak, log::add);
    }

    @Test
    void measuresTheGemmPeakOfTheBackend() {
        assertThat(peak.size()).isEqualTo(128);
        assertThat(peak.flopsPerSecond()).isPositive();
        assertThat(peak.secondsPerProduct() * peak.flopsPerSecond()).isCloseTo(2.0 * 128 * 128 * 128, within(1.0));
    }

    @Test
    void loraTrainsTheTinyPresetAndReportsSaneFigures() {
        assertThat(lora.error()).isNull();
        assertThat(lora.shape()).isEqualTo("tiny");
        assertThat(lora.basePrecision()).isEqualTo("BF16");
        assertThat(lora.stepSeconds()).hasSize(2).allSatisfy(t -> assertThat(t).isPositive());
        assertThat(lora.losses()).hasSize(3);
        // Random weights of std 0.02 predict nearly uniformly: the loss starts at about ln(2048) = 7.62.
        assertThat(lora.losses().getFirst()).isCloseTo(Math.log(2048), within(0.2));
        assertThat(lora.samplesPerSecond()).isCloseTo(2 * 2 / lora.timedSeconds(), within(1e-9));
        assertThat(lora.tokensPerSecond()).isCloseTo(32 * lora.samplesPerSecond(), within(1e-6));
        assertThat(lora.trainableParameters()).isEqualTo(57_344L);
        // Memory at load is the base weights: BF16 matrices and F32 norms of the tiny shape.
        long tinyBase = 2L * (2 * 2048 * 256 + 4 * 724_992L) + 4L * (2 * 4 + 1) * 256;
        assertThat(lora.loadBytes()).isEqualTo(tinyBase);
        assertThat(lora.peakBytes()).isGreaterThan(lora.loadBytes());
        assertThat(lora.memory().peakTrainingMemory()).isEqualTo(lora.peakBytes());
        assertThat(lora.memory().optimizerState()).isEqualTo(2 * 4 * 57_344L);
        assertThat(lora.fitsOn24GbGpu()).isTrue();
        assertThat(lora.mfu()).isPositive().isCloseTo(lora.modelFlopsPerSecond() / peak.flopsPerSecond(), within(1e-12));
        assertThat(log).anyMatch(l -> l.startsWith("LoRA q_proj,v_proj: timed step 2:"));
    }

    @Test
    void fullFineTuningHoldsEveryWeightInF32AndLowersTheLoss() {
        assertThat(full.error()).isNull();
        assertThat(full.basePrecision()).isEqualTo("F32");
        assertThat(full.memory().baseWeights()).isZero();
        assertThat(full.memory().trainableWeights()).isEqualTo(4L * (2 * 2048 * 256 + 4 * 724_992L + (2 * 4 + 1) * 256));
        assertThat(full.losses().getLast()).isLessThan(full.losses().getFirst());
    }

    @Test
    void qloraHoldsTheBaseInFourBitsAndTrainsTheSameAdapters() {
        BenchResult q = FineTuneBenchmark.run(SMALL.withMethod(BenchMethod.QLORA).withSteps(1, 0), TINY, CPU, peak, null);
        assertThat(q.error()).isNull();
        assertThat(q.basePrecision()).isEqualTo("NF4 + double quant (BF16 compute)");
        assertThat(q.trainableParameters()).isEqualTo(lora.trainableParameters());
        // Projections in 4 bits; embeddings and lm_head (2 x 2048 x 256) stay BF16, norms F32.
        assertThat(q.loadBytes()).isLessThan(lora.loadBytes()).isGreaterThan(2L * 2 * 2048 * 256);
        assertThat(q.losses().getFirst()).isCloseTo(Math.log(2048), within(0.2));
    }

    @Test
    void anEightBitOptimizerByItsTransformersNameHoldsLessState() {
        BenchResult eight = FineTuneBenchmark.run(SMALL.withOptimizer("adamw_8bit", 2e-4, 0.01, 0).withSteps(1, 0), TINY, CPU,
                peak, null);
        assertThat(eight.error()).isNull();
        assertThat(eight.optimizer()).startsWith("optimizer adamw_8bit");
        assertThat(lora.optimizer()).startsWith("optimizer adamw_torch");
        // lora_A of q_proj and v_proj (16 x 256 = 4,096 elements) reach bitsandbytes' min_8bit_size: one byte per
        // moment instead of four.
        assertThat(eight.memory().optimizerState()).isLessThan(lora.memory().optimizerState());
    }

    @Test
    void syntheticBatchesAreUniformTokenIdsThatTheSeedDecides() {
        BenchSettings s = SMALL.withBatch(512, 2, 3);
        int[][][] a = FineTuneBenchmark.syntheticBatches(s, 2048);
        assertThat(a.length).isEqualTo(3);
        assertThat(a[0].length).isEqualTo(2);
        assertThat(a[0][0].length).isEqualTo(512);
        assertThat(FineTuneBenchmark.syntheticBatches(s, 2048)).isDeepEqualTo(a);
        assertThat(Arrays.deepEquals(FineTuneBenchmark.syntheticBatches(s.withSeed(1), 2048), a)).isFalse();
        long sum = 0;
        for (int[][] batch : a) for (int[] row : batch) for (int id : row) {
            assertThat(id).isBetween(0, 2047);
            sum += id;
        }
        assertThat(sum / (3.0 * 2 * 512)).isCloseTo(1023.5, within(40.0));
    }

    @Test
    void aFailureOnTheDeviceIsReportedInTheResultNotThrown() {
        Supplier<Backend> broken = () -> {
            throw new IllegalStateException("out of GPU memory: cannot allocate 512.0 MiB");
        };
        BenchResult r = FineTuneBenchmark.run(SMALL, TINY, broken, peak, null);
        assertThat(r.failed()).isTrue();
        assertThat(r.error()).isEqualTo("out of GPU memory: cannot allocate 512.0 MiB");
        assertThat(r.samplesPerSecond()).isNaN();
    }

    @Test
    void settingsThatCannotBuildAModelAreRefusedBeforeAnyDeviceWork() {
        assertThatThrownBy(() -> FineTuneBenchmark.check(SMALL.withTargetModules("nothing_proj"), TINY))
                .hasMessageContaining("nothing_proj");
        assertThatThrownBy(() -> FineTuneBenchmark.check(SMALL.withOptimizer("sgd", 1e-3, 0, 0), TINY))
                .hasMessageContaining("--optim 'sgd'").hasMessageContaining("adamw_torch, paged_adamw_32bit, adamw_8bit");
        assertThatThrownBy(() -> ModelSource.preset("gpt2")).hasMessageContaining("unknown --preset 'gpt2'")
                .hasMessageContaining("mistral-7b, llama2-7b, llama3-8b, tiny");
    }

    @Test
    void theReportShowsTheSeedArticlesTablesAndWritesEveryFigureAsJson(@TempDir Path dir) throws IOException {
        Path refFile = Files.writeString(dir.resolve("ref.txt"), "RESULT {\"shape\": \"tiny\", \"mode\": \"lora-qv\", \"gc\": false,"
                + " \"micro_batch\": 1, \"seq\": 32, \"accum\": 2, \"rank\": 16, \"samples_per_s\": "
                + lora.samplesPerSecond() / 2 + ", \"tokens_per_s\": 1000, \"peak_gib\": 0.05, \"load_gib\": 0.01, \"loss\": 7.6}\n");
        BenchReport report = new BenchReport("tiny (random weights)", List.of(lora, full), ReferenceResult.read(refFile), peak);
        String tables = report.tables();
        assertThat(tables).contains("| configuration", "base model precision", "memory at load", "peak training memory",
                "fits on a 24 GB GPU?", "samples/s", "tokens/s", "relative speed", "loss (last step)", "MFU",
                "1. LoRA q_proj,v_proj", "2. full + checkpointing", "reference (transformers + peft, lora-qv)",
                "2.00x reference", "Peak training memory by part");
        assertThat(report.relativeSpeed(lora)).isCloseTo(2.0, within(1e-9));
        assertThat(report.relativeTo(full)).isEqualTo("row 1");

        Path json = dir.resolve("out/bench.json");
        report.writeJson(json);
        JsonNode root = new ObjectMapper().readTree(json.toFile());
        assertThat(root.path("gemm_peak").path("size").asInt()).isEqualTo(128);
        assertThat(root.path("flops_definition").asText()).contains("2N forward");
        JsonNode first = root.path("results").get(0);
        assertThat(first.path("mode").asText()).isEqualTo("lora-qv");
        assertThat(first.path("samples_per_s").asDouble()).isCloseTo(lora.samplesPerSecond(), within(0.001));
        assertThat(first.path("peak_bytes").asLong()).isEqualTo(lora.peakBytes());
        assertThat(first.path("relative_speed").asDouble()).isCloseTo(2.0, within(0.001));
        assertThat(first.path("reference").path("samples_per_s").asDouble()).isPositive();
        assertThat(first.path("memory_bytes").path("optimizer_state").asLong()).isEqualTo(2 * 4 * 57_344L);
        assertThat(root.path("results").get(1).path("reference").isMissingNode()).isTrue();
        assertThat(root.path("results").get(1).path("losses").size()).isEqualTo(3);
    }
}
