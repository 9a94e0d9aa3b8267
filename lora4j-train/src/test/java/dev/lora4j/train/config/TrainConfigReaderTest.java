package dev.lora4j.train.config;

import dev.lora4j.api.Device;
import dev.lora4j.lora.LoraConfig;
import dev.lora4j.lora.TargetModules;
import dev.lora4j.model.FineTuneMethod;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.quant.QuantType;
import dev.lora4j.tensor.DType;
import dev.lora4j.train.SftConfig;
import dev.lora4j.train.data.PackingStrategy;
import dev.lora4j.train.optim.OptimizerType;
import dev.lora4j.train.schedule.SchedulerType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class TrainConfigReaderTest {
    @TempDir
    Path dir;

    private Path yaml(String text) throws IOException {
        return Files.writeString(dir.resolve("train.yaml"), text);
    }

    private static final String BASE = """
            model_name_or_path: models/tiny
            dataset: data/train.jsonl
            """;

    @Test
    void aTrlStyleYamlFileSetsTheTrainingArgumentsAndTheLoraConfig() throws IOException {
        TrainConfig c = new TrainConfigReader().file(yaml(BASE + """
                eval_file: data/eval.jsonl
                output_dir: out
                device: cpu
                r: 16
                lora_alpha: 32
                lora_dropout: 0.05
                target_modules: [q_proj, k_proj, v_proj, o_proj]
                use_rslora: true
                learning_rate: 1e-4
                lr_scheduler_type: cosine
                warmup_ratio: 0.03
                num_train_epochs: 2
                per_device_train_batch_size: 4
                gradient_accumulation_steps: 4
                max_seq_length: 512
                packing: true
                packing_strategy: wrapped
                logging_steps: 5
                save_steps: 50
                save_total_limit: 2
                seed: 7
                report_to: none
                sample_prompts: ["Call me"]
                """)).build();
        assertThat(c.modelNameOrPath()).isEqualTo(Path.of("models/tiny"));
        assertThat(c.trainFile()).isEqualTo(Path.of("data/train.jsonl"));
        assertThat(c.evalFile()).isEqualTo(Path.of("data/eval.jsonl"));
        assertThat(c.device()).isEqualTo(Device.CPU);
        LoraConfig lora = ((FineTuneMethod.Lora) c.method()).config();
        assertThat(lora.r()).isEqualTo(16);
        assertThat(lora.loraAlpha()).isEqualTo(32);
        assertThat(lora.loraDropout()).isEqualTo(0.05);
        assertThat(lora.targetModules()).isEqualTo(new TargetModules.Names(List.of("q_proj", "k_proj", "v_proj", "o_proj")));
        assertThat(lora.useRslora()).isTrue();
        SftConfig s = c.sft();
        // YAML 1.1 reads 1e-4 (no dot) as a string; it is still a number here.
        assertThat(s.learningRate()).isEqualTo(1e-4);
        assertThat(s.lrSchedulerType()).isEqualTo(SchedulerType.COSINE);
        assertThat(s.warmupRatio()).isEqualTo(0.03);
        assertThat(s.numTrainEpochs()).isEqualTo(2);
        assertThat(s.perDeviceTrainBatchSize()).isEqualTo(4);
        assertThat(s.gradientAccumulationSteps()).isEqualTo(4);
        assertThat(s.maxLength()).isEqualTo(512);
        assertThat(s.packing()).isTrue();
        assertThat(s.packingStrategy()).isEqualTo(PackingStrategy.WRAPPED);
        assertThat(s.loggingSteps()).isEqualTo(5);
        assertThat(s.saveTotalLimit()).isEqualTo(2);
        assertThat(s.seed()).isEqualTo(7);
        assertThat(s.reportsToTensorBoard()).isFalse();
        assertThat(s.evalStrategy()).isEqualTo("steps");
        assertThat(s.outputDir()).isEqualTo(Path.of("out"));
        assertThat(c.samplePrompts()).containsExactly("Call me");
    }

    @Test
    void defaultsAreTrlsAndPefts() throws IOException {
        TrainConfig c = new TrainConfigReader().file(yaml(BASE)).build();
        SftConfig s = c.sft();
        assertThat(s.learningRate()).isEqualTo(2e-5);
        assertThat(s.maxLength()).isEqualTo(1024);
        assertThat(s.loggingSteps()).isEqualTo(10);
        assertThat(s.gradientCheckpointing()).isTrue();
        assertThat(s.maxGradNorm()).isEqualTo(1.0);
        assertThat(s.weightDecay()).isZero();
        assertThat(s.lrSchedulerType()).isEqualTo(SchedulerType.LINEAR);
        assertThat(s.evalStrategy()).isEqualTo("no");
        assertThat(((FineTuneMethod.Lora) c.method()).config()).isEqualTo(LoraConfig.defaults());
        assertThat(c.device()).isEqualTo(Device.AUTO);
    }

    @Test
    void bf16AsksForBf16ActivationsAsTrainingArgumentsNameIt() throws IOException {
        assertThat(new TrainConfigReader().file(yaml(BASE)).build().sft().bf16()).isFalse();
        assertThat(new TrainConfigReader().file(yaml(BASE + "bf16: true\n")).build().sft().bf16()).isTrue();
        assertThat(new TrainConfigReader().file(yaml(BASE + "bf16: true\n")).override("bf16", "false").build().sft().bf16()).isFalse();
        assertThatThrownBy(() -> new TrainConfigReader().file(yaml(BASE + "bf16: maybe\n")).build())
                .isInstanceOf(TrainConfigException.class).hasMessageContaining("bf16");
    }

    @Test
    void commandLineOverridesBeatTheFile() throws IOException {
        TrainConfig c = new TrainConfigReader().file(yaml(BASE + "learning_rate: 2.0e-4\nmax_length: 128\nr: 4\n"))
                .override("learning_rate", "5e-4")
                .override("max_length", "none")
                .override("target_modules", "q_proj,v_proj,up_proj")
                .build();
        assertThat(c.sft().learningRate()).isEqualTo(5e-4);
        assertThat(c.sft().maxLength()).isNull();
        assertThat(((FineTuneMethod.Lora) c.method()).config().targetModules())
                .isEqualTo(new TargetModules.Names(List.of("q_proj", "v_proj", "up_proj")));
        assertThat(((FineTuneMethod.Lora) c.method()).config().r()).isEqualTo(4);
        assertThat(c.effective()).containsEntry("learning_rate", "5e-4");
    }

    @Test
    void optimNamesTheOptimizerByTransformersNamesAndAnUnknownOneListsThem() throws IOException {
        assertThat(new TrainConfigReader().file(yaml(BASE)).build().sft().optim()).isEqualTo(OptimizerType.ADAMW_TORCH);
        assertThat(new TrainConfigReader().file(yaml(BASE + "optim: paged_adamw_8bit\n")).build().sft().optim())
                .isEqualTo(OptimizerType.PAGED_ADAMW_8BIT);
        assertThat(new TrainConfigReader().file(yaml(BASE + "optim: paged_adamw_32bit\n")).override("optim", "adamw_bnb_8bit")
                .build().sft().optim()).isEqualTo(OptimizerType.ADAMW_8BIT);
        Path f = yaml(BASE + "optim: adafactor\n");
        assertThatThrownBy(() -> new TrainConfigReader().file(f).build()).isInstanceOf(TrainConfigException.class)
                .hasMessageContaining("optim must be one of adamw_torch, paged_adamw_32bit, adamw_8bit or paged_adamw_8bit")
                .hasMessageContaining("got \"adafactor\"").hasMessageContaining(f.toString());
    }

    @Test
    void targetModulesMayBeAllLinearOrARegex() throws IOException {
        TrainConfig c = new TrainConfigReader().file(yaml(BASE + "target_modules: all-linear\n")).build();
        assertThat(((FineTuneMethod.Lora) c.method()).config().targetModules()).isInstanceOf(TargetModules.AllLinear.class);
    }

    @Test
    void aTypoIsAnErrorThatSuggestsTheFieldMeant() throws IOException {
        Path f = yaml(BASE + "learning_rat: 1e-4\n");
        assertThatThrownBy(() -> new TrainConfigReader().file(f).build())
                .isInstanceOf(TrainConfigException.class)
                .hasMessageContaining(f + ": unknown field \"learning_rat\"; did you mean \"learning_rate\"");
        assertThatThrownBy(() -> new TrainConfigReader().override("gradient_accumulation", "2"))
                .hasMessageContaining("--gradient-accumulation: unknown field").hasMessageContaining("gradient_accumulation_steps");
        assertThatThrownBy(() -> new TrainConfigReader().file(yaml(BASE + "lora_aplha: 16\n")).build())
                .hasMessageContaining("\"lora_alpha\"");
    }

    @Test
    void valuesOfTheWrongKindNameTheFieldAndWhatItTakes() throws IOException {
        Path f = yaml(BASE + "learning_rate: fast\n");
        assertThatThrownBy(() -> new TrainConfigReader().file(f).build())
                .hasMessage(f + ": field learning_rate must be a number, got \"fast\"");
        assertThatThrownBy(() -> new TrainConfigReader().file(yaml(BASE)).override("per_device_train_batch_size", "2.5").build())
                .hasMessage("--per-device-train-batch-size: field per_device_train_batch_size must be a whole number, got \"2.5\"");
        assertThatThrownBy(() -> new TrainConfigReader().file(yaml(BASE + "packing: maybe\n")).build())
                .hasMessageContaining("field packing must be true or false, got \"maybe\"");
        assertThatThrownBy(() -> new TrainConfigReader().file(yaml(BASE + "lr_scheduler_type: cosine_annealing\n")).build())
                .hasMessageContaining("unknown lr_scheduler_type 'cosine_annealing'");
        assertThatThrownBy(() -> new TrainConfigReader().file(yaml(BASE + "per_device_train_batch_size: 0\n")).build())
                .hasMessageContaining("per_device_train_batch_size must be >= 1, got 0");
    }

    @Test
    void loraSettingsWithFullFineTuningAreRefused() throws IOException {
        assertThatThrownBy(() -> new TrainConfigReader().file(yaml(BASE + "method: full\nr: 16\n")).build())
                .hasMessageContaining("r is a LoRA setting, but method is full");
        TrainConfig full = new TrainConfigReader().file(yaml(BASE + "method: full\n")).build();
        assertThat(full.method()).isInstanceOf(FineTuneMethod.Full.class);
    }

    @Test
    void dtypeTrainsAFullFineTuneInBf16AndAppliesToNothingElse() throws IOException {
        assertThat(new TrainConfigReader().file(yaml(BASE + "method: full\n")).build().method())
                .isEqualTo(new FineTuneMethod.Full(DType.F32));
        assertThat(new TrainConfigReader().file(yaml(BASE + "method: full\ndtype: bfloat16\n")).build().method())
                .isEqualTo(new FineTuneMethod.Full(DType.BF16));
        assertThat(new TrainConfigReader().file(yaml(BASE + "method: full\ntorch_dtype: torch.bfloat16\n")).build().method())
                .isEqualTo(new FineTuneMethod.Full(DType.BF16));
        assertThatThrownBy(() -> new TrainConfigReader().file(yaml(BASE + "method: full\ndtype: float16\n")).build())
                .hasMessageContaining("dtype").hasMessageContaining("float32 or bfloat16");
        assertThatThrownBy(() -> new TrainConfigReader().file(yaml(BASE + "dtype: bfloat16\n")).build())
                .hasMessageContaining("dtype sets the weights' dtype of full fine-tuning, but method is lora");
        assertThatThrownBy(() -> new TrainConfigReader().file(yaml(BASE + "method: full\ndtype: bf16\noptim: adamw_8bit\n")).build())
                .hasMessageContaining("optim adamw_8bit updates F32 weights").hasMessageContaining("adamw_torch");
    }

    @Test
    void qloraTakesBitsAndBytesConfigsFieldNamesAndDefaultsToTheQloraRecipe() throws IOException {
        TrainConfig recipe = new TrainConfigReader().file(yaml(BASE + "method: qlora\nr: 16\n")).build();
        assertThat(recipe.method()).isEqualTo(FineTuneMethod.qlora(LoraConfig.defaults().withR(16)));
        TrainConfig bnb = new TrainConfigReader().file(yaml(BASE + """
                load_in_4bit: true
                bnb_4bit_quant_type: fp4
                bnb_4bit_use_double_quant: false
                bnb_4bit_compute_dtype: float16
                """)).build();
        assertThat(bnb.method()).as("load_in_4bit makes LoRA QLoRA, as PEFT over a 4-bit model")
                .isEqualTo(FineTuneMethod.qlora(LoraConfig.defaults(), new QuantSpec(QuantType.FP4, 64, false, DType.F16)));
        TrainConfig trl = new TrainConfigReader().file(yaml(BASE + "method: qlora\nuse_bnb_nested_quant: false\n"))
                .override("quant_type", "nf4").override("compute_dtype", "fp32").build();
        assertThat(trl.method().quantization()).isEqualTo(new QuantSpec(QuantType.NF4, 64, false, DType.F32));
    }

    @Test
    void quantizationSettingsThatCannotApplyAreRefused() throws IOException {
        assertThatThrownBy(() -> new TrainConfigReader().file(yaml(BASE + "bnb_4bit_quant_type: nf4\n")).build())
                .hasMessageContaining("bnb_4bit_quant_type is a 4-bit (QLoRA) setting, but method is lora; remove it or set method: qlora");
        assertThatThrownBy(() -> new TrainConfigReader().file(yaml(BASE + "method: full\nload_in_4bit: true\n")).build())
                .hasMessageContaining("load_in_4bit is a 4-bit (QLoRA) setting, but method is full");
        assertThatThrownBy(() -> new TrainConfigReader().file(yaml(BASE + "method: qlora\nload_in_4bit: false\n")).build())
                .hasMessageContaining("load_in_4bit is false, but method is qlora");
        assertThatThrownBy(() -> new TrainConfigReader().file(yaml(BASE + "method: qlora\nbnb_4bit_quant_type: int4\n")).build())
                .hasMessageContaining("field bnb_4bit_quant_type must be nf4 or fp4, got \"int4\"");
        assertThatThrownBy(() -> new TrainConfigReader().file(yaml(BASE + "method: qlora\nbnb_4bit_compute_dtype: int8\n")).build())
                .hasMessageContaining("field bnb_4bit_compute_dtype must be bf16, fp16 or fp32");
        assertThat(new TrainConfigReader().file(yaml(BASE + "load_in_4bit: false\n")).build().method())
                .isEqualTo(FineTuneMethod.lora(LoraConfig.defaults()));
    }

    @Test
    void aMissingModelOrDatasetSaysHowToGiveIt() throws IOException {
        assertThatThrownBy(() -> new TrainConfigReader().file(yaml("dataset: d.jsonl\n")).build())
                .hasMessage("no model_name_or_path given: set it in the configuration file or with --model-name-or-path");
        assertThatThrownBy(() -> new TrainConfigReader().values(Map.of("model_name_or_path", "m"), "code").build())
                .hasMessage("no dataset given: set it in the configuration file or with --dataset");
    }

    @Test
    void settingAFieldTwiceInOneFileIsAnError() throws IOException {
        assertThatThrownBy(() -> new TrainConfigReader().file(yaml(BASE + "max_length: 128\nmax_seq_length: 256\n")).build())
                .hasMessageContaining("sets max_length twice");
        assertThatThrownBy(() -> new TrainConfigReader().file(yaml(BASE + "seed: 1\nseed: 2\n")).build())
                .isInstanceOf(TrainConfigException.class).hasMessageContaining("seed");
    }

    @Test
    void jsonFilesWorkToo() throws IOException {
        Path f = Files.writeString(dir.resolve("train.json"), "{\"model_name_or_path\": \"m\", \"dataset\": \"d.jsonl\", \"r\": 32}");
        assertThat(((FineTuneMethod.Lora) new TrainConfigReader().file(f).build().method()).config().r()).isEqualTo(32);
        Path bad = Files.writeString(dir.resolve("bad.json"), "{\"r\": 32,}");
        assertThatThrownBy(() -> new TrainConfigReader().file(bad)).hasMessageContaining("bad.json is not valid JSON at line 1");
    }

    @Test
    void closeMatchesComeFromEditDistance() {
        assertThat(ConfigFields.closeMatches("num_epochs")).contains("num_train_epochs");
        assertThat(ConfigFields.closeMatches("warmup_step")).first().isEqualTo("warmup_steps");
        assertThat(ConfigFields.closeMatches("zzzzzzzzzz")).isEmpty();
    }
}
