package dev.lora4j.train.config;

import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

import static dev.lora4j.train.config.ConfigField.Kind.*;

/** Every field a training configuration may hold, with TRL's, transformers' and PEFT's names. */
public final class ConfigFields {
    public static final List<ConfigField> ALL = List.of(
            // the run
            new ConfigField("model_name_or_path", STRING, "Model folder to fine-tune (config.json, safetensors, tokenizer.json).", "model"),
            new ConfigField("dataset", STRING, "Training data: a .jsonl or .json file of text, prompt/completion or messages records.", "train_file", "dataset_name"),
            new ConfigField("eval_file", NULLABLE_STRING, "Evaluation data, in the same format.", "eval_dataset"),
            new ConfigField("output_dir", STRING, "Where checkpoints, logs and the trained adapter go (default trainer_output)."),
            new ConfigField("method", STRING, "lora (default), qlora (LoRA over a 4-bit base) or full (every weight trains)."),
            new ConfigField("dtype", STRING, "Full fine-tuning: the weights' dtype, float32 (default: F32 weights, gradients and AdamW moments) or bfloat16 (BF16 weights, gradients and moments, as a model loaded with dtype=bfloat16 trains: half the memory).", "torch_dtype"),
            new ConfigField("device", STRING, "cpu, cuda or auto (default auto)."),
            new ConfigField("sample_prompts", STRING_LIST, "Prompts to generate from before and after training (lora4j)."),
            new ConfigField("sample_max_new_tokens", INT, "Tokens generated per sample prompt (default 32; lora4j)."),
            // LoRA (PEFT LoraConfig)
            new ConfigField("r", INT, "LoRA rank (default 8).", "lora_r"),
            new ConfigField("lora_alpha", NUMBER, "LoRA alpha; the adapter is scaled by alpha/r (default 8)."),
            new ConfigField("lora_dropout", NUMBER, "Dropout on the adapters' input (default 0)."),
            new ConfigField("target_modules", STRING_OR_LIST, "Modules that get adapters: names (q_proj,v_proj), a regex, or all-linear.", "lora_target_modules"),
            new ConfigField("bias", STRING, "none (default), all or lora_only: which biases train."),
            new ConfigField("use_rslora", BOOLEAN, "Rank-stabilised scaling alpha/sqrt(r)."),
            new ConfigField("modules_to_save", STRING_LIST, "Modules trained in full beside the adapters (e.g. lm_head)."),
            new ConfigField("init_lora_weights", STRING_OR_BOOLEAN, "true (default), gaussian or false."),
            new ConfigField("rank_pattern", RANK_MAP, "Per-module ranks: {regex: rank}."),
            new ConfigField("alpha_pattern", ALPHA_MAP, "Per-module alphas: {regex: alpha}."),
            new ConfigField("layers_to_transform", INT_LIST, "Only these layer indexes get adapters."),
            // QLoRA (BitsAndBytesConfig); unset fields follow the QLoRA recipe, not BitsAndBytesConfig's defaults
            new ConfigField("load_in_4bit", BOOLEAN, "Keep the base's projections in 4 bits: LoRA becomes QLoRA (as method qlora)."),
            new ConfigField("bnb_4bit_quant_type", STRING, "QLoRA's 4-bit code: nf4 (default) or fp4.", "quant_type"),
            new ConfigField("bnb_4bit_use_double_quant", BOOLEAN, "QLoRA: quantize the 4-bit scales again, to 8 bits (default true).", "double_quant", "use_bnb_nested_quant"),
            new ConfigField("bnb_4bit_compute_dtype", STRING, "QLoRA: dtype the 4-bit weights are dequantized to for products: bf16 (default), fp16 or fp32.", "compute_dtype"),
            // data (SFTConfig)
            new ConfigField("dataset_text_field", STRING, "The text field of language-modelling records (default text)."),
            new ConfigField("max_length", NULLABLE_INT, "Longest sequence in tokens; longer ones are truncated (default 1024; none: no limit).", "max_seq_length"),
            new ConfigField("packing", BOOLEAN, "Pack examples into sequences of max_length tokens."),
            new ConfigField("packing_strategy", STRING, "bfd (default), bfd_split or wrapped."),
            new ConfigField("eval_packing", NULLABLE_BOOLEAN, "Pack the eval dataset (default: as packing)."),
            new ConfigField("completion_only_loss", NULLABLE_BOOLEAN, "Loss on completions only (default: true for prompt/completion data)."),
            new ConfigField("assistant_only_loss", BOOLEAN, "Loss on assistant turns only (conversational data)."),
            new ConfigField("eos_token", NULLABLE_STRING, "Token appended to texts and completions (default: the tokenizer's EOS)."),
            new ConfigField("shuffle_dataset", BOOLEAN, "Shuffle the records once before packing."),
            // optimisation (TrainingArguments)
            new ConfigField("learning_rate", NUMBER, "Peak learning rate of AdamW (default 2e-5, as TRL)."),
            new ConfigField("lr_scheduler_type", STRING, "linear (default), cosine, constant or constant_with_warmup."),
            new ConfigField("warmup_steps", NUMBER, "Warmup steps (below 1: a ratio of the total steps)."),
            new ConfigField("warmup_ratio", NUMBER, "Warmup as a ratio of the total steps."),
            new ConfigField("num_train_epochs", NUMBER, "Epochs (default 3; may be fractional)."),
            new ConfigField("max_steps", LONG, "Total optimizer steps; overrides num_train_epochs (default -1)."),
            new ConfigField("per_device_train_batch_size", INT, "Samples per micro-batch (default 8).", "batch_size"),
            new ConfigField("per_device_eval_batch_size", INT, "Samples per evaluation batch (default 8)."),
            new ConfigField("gradient_accumulation_steps", INT, "Micro-batches per optimizer step (default 1)."),
            new ConfigField("max_grad_norm", NUMBER, "Gradient clipping norm (default 1.0; 0 disables)."),
            new ConfigField("weight_decay", NUMBER, "AdamW weight decay, not on biases and norms (default 0)."),
            new ConfigField("adam_beta1", NUMBER, "AdamW beta1 (default 0.9)."),
            new ConfigField("adam_beta2", NUMBER, "AdamW beta2 (default 0.999)."),
            new ConfigField("adam_epsilon", NUMBER, "AdamW epsilon (default 1e-8)."),
            new ConfigField("optim", STRING, "adamw_torch (default), paged_adamw_32bit, adamw_8bit or paged_adamw_8bit (bitsandbytes' 8-bit states)."),
            new ConfigField("seed", LONG, "Seed of adapter initialisation, shuffling and dropout (default 42)."),
            new ConfigField("gradient_checkpointing", BOOLEAN, "Recompute activations in the backward pass to save memory (default true, as TRL)."),
            new ConfigField("bf16", BOOLEAN, "Keep activations and their gradients in BF16 on CUDA: half their memory, products on the tensor cores (default false: F32; the CPU keeps F32)."),
            // logging, evaluation, checkpoints
            new ConfigField("logging_steps", NUMBER, "Log every N steps (default 10; below 1: a ratio of the total)."),
            new ConfigField("logging_first_step", BOOLEAN, "Also log the first step."),
            new ConfigField("eval_strategy", STRING, "steps or no (default: steps when an eval dataset is given).", "evaluation_strategy"),
            new ConfigField("eval_steps", NULLABLE_NUMBER, "Evaluate every N steps (default: logging_steps)."),
            new ConfigField("save_strategy", STRING, "steps (default) or no."),
            new ConfigField("save_steps", NUMBER, "Save a checkpoint every N steps (default 500)."),
            new ConfigField("save_total_limit", NULLABLE_INT, "Keep only the newest N checkpoints."),
            new ConfigField("report_to", STRING_OR_LIST, "tensorboard (default) or none."),
            new ConfigField("resume_from_checkpoint", STRING_OR_BOOLEAN, "A checkpoint folder, or latest (true) for the newest in output_dir."),
            new ConfigField("disable_tqdm", BOOLEAN, "No progress bar; one line per logging step instead."));

    private static final Map<String, ConfigField> BY_NAME;

    static {
        Map<String, ConfigField> m = new LinkedHashMap<>();
        for (ConfigField f : ALL) {
            m.put(f.name(), f);
            for (String a : f.aliases()) m.put(a, f);
        }
        BY_NAME = Collections.unmodifiableMap(m);
    }

    private ConfigFields() {}

    /** The field with this name or alias, or null. */
    public static ConfigField byName(String name) {
        return BY_NAME.get(name);
    }

    /** Up to three known names closest to an unknown one (edit distance, containment, or the same words). */
    public static List<String> closeMatches(String unknown) {
        String u = unknown.toLowerCase(Locale.ROOT).replace('-', '_');
        record Scored(String name, int score) {}
        List<Scored> scored = new ArrayList<>();
        for (String name : BY_NAME.keySet()) {
            int d = distance(u, name);
            boolean close = d <= Math.max(2, Math.min(u.length(), name.length()) / 3)
                    || (u.length() >= 4 && (name.contains(u) || u.contains(name)))
                    || sameWords(u, name);
            if (close) scored.add(new Scored(name, d));
        }
        scored.sort(Comparator.comparingInt(Scored::score).thenComparing(Scored::name));
        List<String> out = new ArrayList<>();
        for (Scored s : scored) {
            String canonical = BY_NAME.get(s.name()).name();
            if (!out.contains(canonical)) out.add(canonical);
            if (out.size() == 3) break;
        }
        return out;
    }

    /** Every word of the shorter name is a word of the longer one: num_epochs and num_train_epochs. */
    private static boolean sameWords(String a, String b) {
        List<String> wa = List.of(a.split("_")), wb = List.of(b.split("_"));
        if (wa.size() < 2 && wb.size() < 2) return false;
        return wa.size() <= wb.size() ? wb.containsAll(wa) : wa.containsAll(wb);
    }

    /** Levenshtein distance. */
    static int distance(String a, String b) {
        int[] prev = new int[b.length() + 1], cur = new int[b.length() + 1];
        for (int j = 0; j <= b.length(); j++) prev[j] = j;
        for (int i = 1; i <= a.length(); i++) {
            cur[0] = i;
            for (int j = 1; j <= b.length(); j++) {
                int sub = prev[j - 1] + (a.charAt(i - 1) == b.charAt(j - 1) ? 0 : 1);
                cur[j] = Math.min(sub, Math.min(prev[j] + 1, cur[j - 1] + 1));
            }
            int[] t = prev;
            prev = cur;
            cur = t;
        }
        return prev[b.length()];
    }
}
