package dev.lora4j.train.bench;

import dev.lora4j.lora.LlamaModules;
import dev.lora4j.lora.LoraConfig;
import dev.lora4j.lora.PeftAdapter;
import dev.lora4j.lora.TargetModules;
import dev.lora4j.model.TrainableLlama;
import dev.lora4j.model.TrainablePlan;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;

/**
 * The adapter weights a benchmark starts from ({@code lora4j bench --init-adapter DIR}) instead of those lora4j draws:
 * a PEFT adapter folder, typically the one PEFT saved right after {@code get_peft_model}, so that lora4j and PEFT take
 * their first step from the same A and B. Its configuration must describe the adapters the benchmark trains (rank,
 * alpha, adapted modules, nothing else trained); {@link #checkFits} says what differs before any weight is loaded.
 */
public record InitialAdapter(Path folder, PeftAdapter adapter) {

    /** Reads the adapter folder (adapter_config.json and adapter_model.safetensors). */
    public static InitialAdapter load(Path folder) throws IOException {
        return new InitialAdapter(folder, PeftAdapter.load(folder));
    }

    /**
     * Checks that this adapter is the benchmark's: LoRA (not full fine-tuning), the same r and lora_alpha without
     * per-module patterns or rank-stabilised scaling, only A and B (no biases, no modules_to_save), an A and a B of the
     * right shapes for exactly the modules {@code --target-modules} adapts.
     *
     * @return a note when the adapter's lora_dropout differs from the benchmark's (the benchmark's applies), else null
     */
    public String checkFits(BenchSettings s, TrainablePlan plan) {
        String where = folder.resolve(PeftAdapter.CONFIG_FILE).toString();
        if (s.method() == BenchMethod.FULL) {
            throw new IllegalArgumentException("--init-adapter " + folder + ": an adapter's weights cannot start full"
                    + " fine-tuning (--method full); use --method lora or qlora");
        }
        LoraConfig c = adapter.config();
        if (c.r() != s.rank() || !c.rankPattern().isEmpty()) {
            throw new IllegalArgumentException(where + ": r is " + c.r() + (c.rankPattern().isEmpty() ? "" : " with a rank_pattern")
                    + " but the benchmark trains adapters of rank " + s.rank() + " (--rank); give --rank " + c.r()
                    + " or an adapter of rank " + s.rank());
        }
        if (Math.abs(c.loraAlpha() - s.alpha()) > 1e-9 * Math.abs(s.alpha()) || !c.alphaPattern().isEmpty()) {
            throw new IllegalArgumentException(where + ": lora_alpha is " + number(c.loraAlpha())
                    + (c.alphaPattern().isEmpty() ? "" : " with an alpha_pattern") + " but --alpha is " + number(s.alpha())
                    + "; give --alpha " + number(c.loraAlpha()) + " or an adapter with lora_alpha " + number(s.alpha()));
        }
        if (c.useRslora()) {
            throw new IllegalArgumentException(where + ": use_rslora is true (scaling alpha/sqrt(r)) but the benchmark"
                    + " scales by alpha/r; save the adapter with use_rslora=False");
        }
        if (!c.bias().equals("none") || !c.modulesToSave().isEmpty()) {
            throw new IllegalArgumentException(where + ": the adapter also trains " + (!c.bias().equals("none")
                    ? "biases (bias \"" + c.bias() + "\")" : "modules_to_save " + c.modulesToSave())
                    + " but the benchmark trains LoRA A and B only; save it with bias=\"none\" and no modules_to_save");
        }
        Set<String> mine = new LinkedHashSet<>();
        for (TrainablePlan.LoraModule m : plan.loraModules()) mine.add(m.path());
        Set<String> theirs = new LinkedHashSet<>(adapter.adaptedModules());
        if (!mine.equals(theirs)) {
            List<String> missing = new ArrayList<>(mine);
            missing.removeAll(theirs);
            // In the model's order, so that the message names the first layer's first module, not the file's.
            List<String> extra = new ArrayList<>();
            for (LlamaModules.Module m : LlamaModules.of(plan.shape())) if (theirs.contains(m.path())) extra.add(m.path());
            for (String t : theirs) if (!extra.contains(t)) extra.add(t);
            extra.removeAll(mine);
            throw new IllegalArgumentException(folder + " adapts " + theirs.size() + " modules (target_modules "
                    + describe(c) + ") but --target-modules " + s.targetModules() + " adapts " + mine.size()
                    + (missing.isEmpty() ? "" : "; " + missing.getFirst() + " has no adapter in it")
                    + (extra.isEmpty() ? "" : "; it adapts " + extra.getFirst() + ", which the benchmark does not")
                    + "; give the --target-modules the adapter was made with");
        }
        for (TrainablePlan.LoraModule m : plan.loraModules()) {
            shape(PeftAdapter.loraAKey(m.path()), new long[] {m.rank(), m.inFeatures()});
            shape(PeftAdapter.loraBKey(m.path()), new long[] {m.outFeatures(), m.rank()});
        }
        if (adapter.tensors().size() != 2 * plan.loraModules().size()) {
            List<String> others = new ArrayList<>(adapter.tensors().keySet());
            for (TrainablePlan.LoraModule m : plan.loraModules()) {
                others.remove(PeftAdapter.loraAKey(m.path()));
                others.remove(PeftAdapter.loraBKey(m.path()));
            }
            throw new IllegalArgumentException(folder.resolve(PeftAdapter.WEIGHTS_FILE) + " holds " + others.size()
                    + " tensor(s) besides LoRA A and B, e.g. " + others.getFirst() + "; the benchmark trains A and B only");
        }
        if (Math.abs(c.loraDropout() - s.dropout()) > 1e-12) {
            return String.format(Locale.ROOT, "%s has lora_dropout %s; the benchmark applies --dropout %s", where,
                    number(c.loraDropout()), number(s.dropout()));
        }
        return null;
    }

    /** Replaces the model's initial A and B with this adapter's (after {@link #checkFits}). */
    public void applyTo(TrainableLlama model) {
        model.loadAdapter(adapter, folder.toString());
    }

    private void shape(String key, long[] expected) {
        PeftAdapter.Weight w = adapter.tensors().get(key);
        if (w == null) {
            throw new IllegalArgumentException(folder.resolve(PeftAdapter.WEIGHTS_FILE) + " has no tensor " + key);
        }
        if (!Arrays.equals(w.shape(), expected)) {
            throw new IllegalArgumentException(folder.resolve(PeftAdapter.WEIGHTS_FILE) + ": " + key + " has shape "
                    + Arrays.toString(w.shape()) + " but the benchmark's model needs " + Arrays.toString(expected)
                    + " (an adapter made for another model shape?)");
        }
    }

    /** target_modules as adapter_config.json gives it: a list of names, "all-linear" or a regular expression. */
    private static String describe(LoraConfig c) {
        return switch (c.targetModules()) {
            case TargetModules.Names n -> n.names().toString();
            case TargetModules.Regex r -> "'" + r.pattern() + "'";
            case TargetModules.AllLinear a -> TargetModules.ALL_LINEAR;
        };
    }

    private static String number(double v) {
        return v == Math.rint(v) && Math.abs(v) < 1e15 ? Long.toString((long) v) : Double.toString(v);
    }
}
