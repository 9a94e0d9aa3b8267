package dev.lora4j.cli;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;

/** The commands as a user runs them, on a tiny model that init-model writes. */
class CommandLineTest {

    @TempDir
    static Path dir;
    static Path model;

    @BeforeAll
    static void writeTinyModel() {
        model = dir.resolve("tiny");
        CliRun run = CliRun.of("init-model", "--preset", "tiny", "--layers", "2", "-o", model.toString(), "--seed", "3");
        assertThat(run.exitCode()).as(run.err()).isZero();
        assertThat(run.out()).contains("wrote " + model).contains("LlamaForCausalLM");
    }

    @Test
    void inspectReportsTheParameterCountsOfTheShape() {
        CliRun run = CliRun.of("inspect", "-m", model.toString());
        assertThat(run.exitCode()).as(run.err()).isZero();
        // tiny preset with 2 layers: embeddings 2048*256, per layer attention 256*(256+128+128+256), mlp 3*256*688,
        // norms 2*256 per layer + 256, lm_head 2048*256.
        long perLayer = 256L * (256 + 128 + 128 + 256) + 3L * 256 * 688 + 2 * 256;
        long total = 2 * 2048L * 256 + 2 * perLayer + 256;
        assertThat(run.out()).contains(String.format("%,d", total)).contains("LlamaForCausalLM").contains("BF16");
    }

    @Test
    void greedyGenerationIsRepeatableAndStreamsThePromptFirst() {
        String[] args = {"generate", "-m", model.toString(), "--device", "cpu", "-p", "Call me", "--greedy",
                "--max-new-tokens", "8", "--ignore-eos", "--quiet"};
        CliRun first = CliRun.of(args), second = CliRun.of(args);
        assertThat(first.exitCode()).as(first.err()).isZero();
        assertThat(first.out()).startsWith("Call me").hasSizeGreaterThan("Call me\n".length());
        assertThat(second.out()).isEqualTo(first.out());
    }

    @Test
    void sampledGenerationWithASeedIsRepeatableAndReportsSpeed() {
        String[] args = {"generate", "-m", model.toString(), "--device", "cpu", "-p", "The sea", "--temperature", "0.9",
                "--top-p", "0.9", "--seed", "11", "--max-new-tokens", "6", "--ignore-eos"};
        CliRun first = CliRun.of(args), second = CliRun.of(args);
        assertThat(first.exitCode()).as(first.err()).isZero();
        assertThat(second.out()).isEqualTo(first.out());
        assertThat(first.err()).contains("tokens/s").contains("seed 11");
    }

    @Test
    void tokenizeThenDecodeGivesTheTextBack() {
        CliRun ids = CliRun.of("tokenize", "-m", model.toString(), "--no-special", "Whale ho!");
        assertThat(ids.exitCode()).as(ids.err()).isZero();
        assertThat(ids.out().strip()).matches("\\[\\d+(,\\d+)*]");
        CliRun text = CliRun.of("tokenize", "-m", model.toString(), "--decode", ids.out().strip());
        assertThat(text.out()).isEqualTo("Whale ho!\n");
    }

    @Test
    void tokenizeJsonlPrintsOneLinePerRecordAndNamesTheBrokenLine() throws IOException {
        Path good = dir.resolve("good.jsonl");
        Files.writeString(good, "{\"text\": \"a\"}\n{\"text\": \"b c\"}\n", StandardCharsets.UTF_8);
        CliRun run = CliRun.of("tokenize", "-m", model.toString(), "--jsonl", good.toString());
        assertThat(run.out().strip().split("\n")).hasSize(2);

        Path bad = dir.resolve("bad.jsonl");
        Files.writeString(bad, "{\"text\": \"a\"}\n{\"text\": oops}\n", StandardCharsets.UTF_8);
        CliRun broken = CliRun.of("tokenize", "-m", model.toString(), "--jsonl", bad.toString());
        assertThat(broken.exitCode()).isEqualTo(1);
        assertThat(broken.err()).contains(bad + ":2").contains("not valid JSON");
    }

    @Test
    void chatTemplateRendersTheModelsTemplate() throws IOException {
        Path messages = dir.resolve("messages.json");
        Files.writeString(messages, "[{\"role\": \"user\", \"content\": \"Hi there\"}]", StandardCharsets.UTF_8);
        CliRun run = CliRun.of("chat-template", "-m", model.toString(), messages.toString(), "--add-generation-prompt");
        assertThat(run.exitCode()).as(run.err()).isZero();
        assertThat(run.out()).contains("Hi there");
    }

    @Test
    void aMissingModelFolderIsOneClearLineNamingIt() {
        Path missing = dir.resolve("no-such-model");
        CliRun run = CliRun.of("generate", "-m", missing.toString(), "-p", "x", "--device", "cpu");
        assertThat(run.exitCode()).isEqualTo(1);
        assertThat(run.err()).contains(missing.toString()).doesNotContain("\tat ");
    }

    @Test
    void anUnknownDeviceIsRejectedWithTheChoices() {
        CliRun run = CliRun.of("generate", "-m", model.toString(), "-p", "x", "--device", "tpu");
        assertThat(run.exitCode()).isEqualTo(1);
        assertThat(run.err()).contains("tpu").contains("cpu, cuda or auto");
    }

    @Test
    void planGivesPeftsTrainableParameterFiguresAndSaysWhenAFullFineTuneCannotFit() {
        CliRun lora = CliRun.of("plan", "--preset", "mistral-7b", "--target-modules", "q_proj,v_proj");
        assertThat(lora.exitCode()).as(lora.err()).isZero();
        assertThat(lora.out()).contains("trainable params: 6,815,744 || all params: 7,248,547,840 || trainable%: 0.0940")
                .contains("adamw_torch states (F32)").contains("activations");
        CliRun full = CliRun.of("plan", "--preset", "mistral-7b", "--method", "full", "--budget-gib", "24");
        assertThat(full.exitCode()).isEqualTo(3);
        assertThat(full.out()).contains("trainable params: 7,241,732,096").contains("does NOT fit in a 24 GiB budget");
    }

    @Test
    void planWithBf16CountsActivationsInBf16AndFullFineTuningsWorkingCopies() {
        CliRun f32 = CliRun.of("plan", "--preset", "mistral-7b", "--method", "full");
        CliRun bf16 = CliRun.of("plan", "--preset", "mistral-7b", "--method", "full", "--bf16");
        assertThat(bf16.exitCode()).as(bf16.err()).isZero();
        assertThat(f32.out()).contains("(F32 activations;");
        assertThat(bf16.out()).contains("(BF16 activations;").contains("trainable weights (F32, BF16 working copies)");
        // Half the bytes per activation (the F32 loss chunk and lse aside); 2 more bytes per trainable weight that
        // products multiply (all but the embedding table and the norms: 98% of Mistral's).
        double f32Activations = gib(f32.out(), "activations"), f32Trainable = gib(f32.out(), "trainable weights");
        assertThat(gib(bf16.out(), "activations")).isBetween(0.45 * f32Activations, 0.55 * f32Activations);
        assertThat(gib(bf16.out(), "trainable weights")).isBetween(1.48 * f32Trainable, 1.5 * f32Trainable);
    }

    @Test
    void planOfAFullFineTuneInBf16HalvesWeightsGradientsAndMomentsAndFitsWhereTheReferenceDoes() {
        CliRun f32 = CliRun.of("plan", "--preset", "mistral-7b", "--method", "full", "--bf16");
        CliRun bf16 = CliRun.of("plan", "--preset", "mistral-7b", "--method", "full", "--bf16", "--dtype", "bfloat16");
        assertThat(bf16.exitCode()).as(bf16.err()).isZero();
        assertThat(bf16.out()).contains("trainable weights (BF16; norms F32)").contains("adamw_torch states (BF16)")
                .contains("gradients (BF16; F32 embedding, norms, biases)");
        // F32 weights + BF16 working copies (6 bytes; the embedding table, 1.8% of Mistral's weights, 4) against BF16
        // (2); moments 8 bytes against 4; gradients 4 against 2 but for the embedding table's F32.
        assertThat(gib(bf16.out(), "trainable weights")).isBetween(gib(f32.out(), "trainable weights") / 3.0,
                gib(f32.out(), "trainable weights") / 2.95);
        assertThat(gib(bf16.out(), "adamw_torch states")).isCloseTo(gib(f32.out(), "adamw_torch states") / 2,
                org.assertj.core.api.Assertions.within(0.02));
        assertThat(gib(bf16.out(), "gradients")).isBetween(0.5 * gib(f32.out(), "gradients"), 0.51 * gib(f32.out(), "gradients"));
        // About 8 bytes a parameter: under the 56.9 GiB the reference holds at its peak with checkpointing.
        assertThat(gib(bf16.out(), "total")).isBetween(54.0, 56.9);
        CliRun wrong = CliRun.of("plan", "--preset", "mistral-7b", "--method", "full", "--dtype", "bfloat16", "--optim", "adamw_8bit");
        assertThat(wrong.exitCode()).isNotZero();
        assertThat(wrong.err()).contains("adamw_8bit updates F32 weights");
        assertThat(CliRun.of("plan", "--preset", "tiny", "--dtype", "bfloat16").err()).contains("--method full");
    }

    @Test
    void planCountsTheStateOfTheChosenOptimizer() {
        CliRun adamw = CliRun.of("plan", "--preset", "mistral-7b", "--method", "full");
        CliRun eightBit = CliRun.of("plan", "--preset", "mistral-7b", "--method", "full", "--optim", "paged_adamw_8bit");
        assertThat(eightBit.exitCode()).as(eightBit.err()).isZero();
        assertThat(eightBit.out()).contains("paged_adamw_8bit states (8-bit)");
        // Two bytes per element and two F32 absmax values per block of 256 instead of eight bytes: about a quarter.
        double f32 = gib(adamw.out(), "adamw_torch states"), q8 = gib(eightBit.out(), "paged_adamw_8bit states");
        assertThat(q8).isBetween(0.25 * f32, 0.26 * f32);
        assertThat(gib(adamw.out(), "total") - gib(eightBit.out(), "total")).isCloseTo(f32 - q8, org.assertj.core.api.Assertions.within(0.02));
        assertThat(CliRun.of("plan", "--preset", "tiny", "--optim", "sgd").exitCode()).isNotZero();
    }

    /** The GiB figure of the plan's row that starts with {@code row}. */
    private static double gib(String out, String row) {
        var m = java.util.regex.Pattern.compile("(?m)^  " + java.util.regex.Pattern.quote(row) + ".*?([0-9.]+) GiB$").matcher(out);
        assertThat(m.find()).as("row " + row + " in\n" + out).isTrue();
        return Double.parseDouble(m.group(1));
    }

    @Test
    void devicesListsTheCpuAndSaysWhyCudaCannotRunWithoutAGpu() {
        CliRun run = CliRun.of("devices");
        assertThat(run.exitCode()).isZero();
        assertThat(run.out()).contains("cpu   available").containsPattern("cuda\\s+(available|unavailable)");
    }
}
