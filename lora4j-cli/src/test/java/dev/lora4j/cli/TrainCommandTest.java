package dev.lora4j.cli;

import dev.lora4j.train.config.ConfigField;
import dev.lora4j.train.config.ConfigFields;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;
import picocli.CommandLine.Model.OptionSpec;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/** lora4j train as a user runs it, on a two-layer tiny model. */
class TrainCommandTest {

    @TempDir
    static Path dir;
    static Path model, data, config;

    @BeforeAll
    static void writeModelDataAndConfig() throws IOException {
        model = dir.resolve("tiny");
        CliRun init = CliRun.of("init-model", "--preset", "tiny", "--layers", "2", "-o", model.toString(), "--seed", "3");
        assertThat(init.exitCode()).as(init.err()).isZero();
        StringBuilder jsonl = new StringBuilder();
        String[] names = {"Ishmael", "Ahab", "Starbuck", "Queequeg"};
        for (int i = 0; i < 16; i++) {
            jsonl.append("{\"prompt\": \"Who is number ").append(i % 4).append("?\", \"completion\": \" ").append(names[i % 4]).append(".\"}\n");
        }
        data = Files.writeString(dir.resolve("train.jsonl"), jsonl);
        config = Files.writeString(dir.resolve("train.yaml"), """
                model_name_or_path: %s
                dataset: %s
                eval_file: %s
                device: cpu
                r: 4
                lora_alpha: 8
                target_modules: all-linear
                learning_rate: 5.0e-3
                per_device_train_batch_size: 4
                max_length: 32
                gradient_checkpointing: false
                logging_steps: 2
                save_steps: 2
                sample_prompts: ["Who is number 1?"]
                sample_max_new_tokens: 4
                """.formatted(model, data, data));
    }

    @Test
    void trainingFromAConfigFileWritesTheAdapterCheckpointsAndLogs() throws IOException {
        Path out = dir.resolve("out");
        CliRun run = CliRun.of("train", "--config", config.toString(), "--max-steps", "4", "--output-dir", out.toString(),
                "--report-to", "tensorboard");
        assertThat(run.exitCode()).as(run.err()).isZero();
        assertThat(run.out()).contains("trainable params: ").contains("LoRA r=4 lora_alpha=8")
                .contains("train data " + data + ": 16 records (prompt-completion), 16 samples").contains("target_modules=all-linear")
                .contains("eval_loss before training ")
                .contains("4 steps").contains("step 2/4  loss ").contains("eval_loss")
                .contains("saved " + out.resolve("checkpoint-2"))
                .contains("sample before training: Who is number 1?|").contains("sample after training: Who is number 1?|")
                .contains("trained 4 steps").contains("adapter written to " + out);
        assertThat(out.resolve("adapter_model.safetensors")).exists();
        assertThat(out.resolve("adapter_config.json")).exists();
        assertThat(out.resolve("checkpoint-4/trainer_state.json")).exists();
        assertThat(Files.readAllLines(out.resolve("metrics.jsonl"))).isNotEmpty();
        assertThat(Files.readString(out.resolve("training_config.json"))).contains("\"max_steps\" : \"4\"").contains("\"r\" : 4");
        assertThat(out.resolve("runs")).isDirectory();
    }

    @Test
    void qloraWithBitsAndBytesSettingsTrainsAndReportsWhereTheMemoryWent() throws IOException {
        Path out = dir.resolve("qlora-out");
        CliRun run = CliRun.of("train", "--config", config.toString(), "--method", "qlora", "--quant-type", "fp4",
                "--no-double-quant", "--compute-dtype", "fp32", "--gradient-checkpointing", "--max-steps", "1",
                "--eval-file", "none", "--output-dir", out.toString(), "--report-to", "none");
        assertThat(run.exitCode()).as(run.err()).isZero();
        assertThat(run.out()).contains("QLoRA over a 4-bit base (fp4 without double quantization, float32 compute), LoRA r=4")
                .contains("; gradient checkpointing").contains("sample after training: Who is number 1?|")
                .contains("adapter written to " + out).contains("memory on cpu").contains("base model memory at load")
                .contains("peak training memory").contains("optimizer state").contains("workspace")
                .contains("memory report written to " + out.resolve("memory_report.json"));
        assertThat(out.resolve("memory_report.json")).exists();
        assertThat(out.resolve("adapter_model.safetensors")).exists();
        assertThat(Files.readString(out.resolve("training_config.json"))).contains("\"bnb_4bit_quant_type\" : \"fp4\"")
                .contains("\"bnb_4bit_use_double_quant\" : \"false\"").contains("\"method\" : \"qlora\"");
    }

    @Test
    void contradictoryQuantizationFlagsAreRefused() {
        CliRun run = CliRun.of("train", "--config", config.toString(), "--method", "qlora", "--double-quant", "--no-double-quant");
        assertThat(run.exitCode()).isEqualTo(1);
        assertThat(run.err()).contains("--double-quant and --no-double-quant contradict each other");
        CliRun lora = CliRun.of("train", "--config", config.toString(), "--quant-type", "nf4");
        assertThat(lora.exitCode()).isEqualTo(1);
        assertThat(lora.err()).contains("bnb_4bit_quant_type is a 4-bit (QLoRA) setting, but method is lora");
    }

    @Test
    void theExampleConfigurationRunsOnTheBundledData() {
        Path example = Path.of("..", "lora4j-train", "examples", "sotu-demo.yaml");
        assertThat(example).as("the example the README runs").exists();
        Path out = dir.resolve("example-out");
        CliRun run = CliRun.of("train", "--config", example.toString(), "--model-name-or-path", model.toString(),
                "--max-steps", "2", "--output-dir", out.toString(), "--sample-max-new-tokens", "2", "--report-to", "none");
        assertThat(run.exitCode()).as(run.err()).isZero();
        assertThat(run.out()).contains("train data bundled:sotu-presidents-train: 180 records (prompt-completion)")
                .contains("sample after training: Who gave the State of the Union address in 1984?|");
        assertThat(out.resolve("adapter_model.safetensors")).exists();
    }

    @Test
    void aTypoInTheConfigFileFailsWithTheClosestFieldNames() throws IOException {
        Path typo = Files.writeString(dir.resolve("typo.yaml"), Files.readString(config) + "num_train_epoch: 2\n");
        CliRun run = CliRun.of("train", "--config", typo.toString());
        assertThat(run.exitCode()).isEqualTo(1);
        assertThat(run.err()).contains("lora4j train: " + typo + ": unknown field \"num_train_epoch\"; did you mean \"num_train_epochs\"");
    }

    @Test
    void aBrokenDatasetLineIsNamed() throws IOException {
        Path bad = Files.writeString(dir.resolve("bad.jsonl"), "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\" \"completion\": 1}\n");
        CliRun run = CliRun.of("train", "--config", config.toString(), "--dataset", bad.toString(), "--eval-file", "none");
        assertThat(run.exitCode()).isEqualTo(1);
        assertThat(run.err()).contains(bad + ":2: not valid JSON");
    }

    @Test
    void optionsWithoutAConfigFileAreEnoughAndWrongValuesAreNamed() {
        CliRun run = CliRun.of("train", "-m", model.toString(), "--dataset", data.toString(), "--learning-rate", "fast");
        assertThat(run.exitCode()).isEqualTo(1);
        assertThat(run.err()).contains("--learning-rate: field learning_rate must be a number, got \"fast\"");
    }

    @Test
    void everyConfigurationFieldIsAnOptionAndEveryOptionAField() {
        CommandLine cl = Lora4jCommand.newCommandLine().getSubcommands().get("train");
        List<String> missing = new ArrayList<>();
        for (ConfigField f : ConfigFields.ALL) {
            OptionSpec o = cl.getCommandSpec().findOption(f.option());
            if (o == null) missing.add(f.option());
            for (String alias : f.aliases()) if (cl.getCommandSpec().findOption("--" + alias.replace('_', '-')) == null) missing.add(alias);
        }
        assertThat(missing).isEmpty();
        for (OptionSpec o : cl.getCommandSpec().options()) {
            String longName = o.longestName();
            if (List.of("--config", "--help", "--version", "--no-double-quant").contains(longName)) continue;
            assertThat(ConfigFields.byName(o.names()[o.names()[0].startsWith("--") ? 0 : 1].substring(2).replace('-', '_')))
                    .as(longName).isNotNull();
        }
    }

    @Test
    void helpListsTheFieldsWithTheirTrlNames() {
        CliRun run = CliRun.of("train", "--help");
        assertThat(run.out()).contains("--learning-rate").contains("--per-device-train-batch-size").contains("--lora-alpha")
                .contains("--max-length, --max-seq-length");
    }
}
