package dev.lora4j.model;

import dev.lora4j.lora.LlamaModules;
import dev.lora4j.lora.LoraConfig;
import dev.lora4j.lora.LoraTargets;
import dev.lora4j.lora.PeftAdapter;
import dev.lora4j.tensor.DType;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Which parts of a model train under a fine-tuning method, decided from the shape alone (no weights needed): the
 * LoRA modules with their rank and scaling, and the base tensors that train in full (every tensor in full
 * fine-tuning; modules_to_save and the biases that LoRA's bias setting frees otherwise).
 *
 * @param loraModules  in module order
 * @param fullTensors  Hugging Face tensor name to the name the parameter goes by (PEFT key for LoRA, the Hugging
 *                     Face name in full fine-tuning), in model order
 * @param copies       the Hugging Face names whose trainable tensor is a copy beside a frozen original
 *                     (modules_to_save: PEFT counts both)
 */
public record TrainablePlan(LlamaShape shape, FineTuneMethod method, List<LoraModule> loraModules,
                            Map<String, String> fullTensors, Set<String> copies) {

    /** One LoRA adapter: A is [rank, inFeatures], B is [outFeatures, rank]; output += scaling · B·A·dropout(x). */
    public record LoraModule(String path, int layer, Projection projection, int rank, double scaling, double dropout,
                             int inFeatures, int outFeatures) {
        public long parameterCount() { return (long) rank * (inFeatures + outFeatures); }
    }

    public TrainablePlan {
        loraModules = List.copyOf(loraModules);
        fullTensors = Collections.unmodifiableMap(new LinkedHashMap<>(fullTensors));
        copies = Collections.unmodifiableSet(new LinkedHashSet<>(copies));
    }

    public static TrainablePlan of(LlamaShape shape, FineTuneMethod method) {
        Map<String, String> full = new LinkedHashMap<>();
        Set<String> copies = new LinkedHashSet<>();
        List<LoraModule> lora = new ArrayList<>();
        switch (method) {
            case FineTuneMethod.Full f -> {
                for (String name : LlamaWeightLoader.requiredNames(shape)) full.put(name, name);
            }
            case FineTuneMethod.Lora l -> {
                LoraConfig c = l.config();
                List<String> targets = LoraTargets.resolve(c, shape);
                Set<String> adapted = new LinkedHashSet<>(targets);
                for (LlamaModules.Module m : LlamaModules.of(shape)) {
                    if (!adapted.contains(m.path())) continue;
                    Projection p = m.projection();
                    lora.add(new LoraModule(m.path(), m.layer(), p, c.rank(m.path()), c.scaling(m.path()), c.loraDropout(),
                            p.inFeatures(shape), p.outFeatures(shape)));
                }
                Map<String, String> saved = new LinkedHashMap<>();
                for (LlamaModules.Module m : LoraTargets.modulesToSave(c, shape)) {
                    for (String name : m.parameterNames(shape)) {
                        if (l.quantized() && isProjectionWeight(name)) {
                            throw new IllegalArgumentException("modules_to_save names " + m.path() + ", but " + name
                                    + " is a 4-bit weight under QLoRA and cannot train in full; adapt it through"
                                    + " target_modules instead, or train with method lora");
                        }
                        saved.put(name, PeftAdapter.fullParameterKey(name));
                        copies.add(name);
                    }
                }
                Map<String, String> biases = new LinkedHashMap<>();
                if (!c.bias().equals("none")) {
                    for (LlamaModules.Module m : LlamaModules.of(shape)) {
                        if (m.projection() == null || !m.projection().hasBias(shape)) continue;
                        boolean isAdapted = adapted.contains(m.path());
                        if (c.bias().equals("lora_only") && !isAdapted) continue;
                        biases.put(m.path() + ".bias", PeftAdapter.biasKey(m.path(), isAdapted));
                    }
                }
                // Model order: walk the required names and keep those that train.
                for (String name : LlamaWeightLoader.requiredNames(shape)) {
                    if (saved.containsKey(name)) full.put(name, saved.get(name));
                    else if (biases.containsKey(name)) full.put(name, biases.get(name));
                }
                if (shape.tiedEmbeddings() && saved.containsKey("lm_head.weight")) full.put("lm_head.weight", saved.get("lm_head.weight"));
            }
        }
        return new TrainablePlan(shape, method, lora, full, copies);
    }

    /** Whether the tensor with this Hugging Face name is the weight of one of a layer's seven projections. */
    public static boolean isProjectionWeight(String hfName) {
        if (!hfName.startsWith("model.layers.")) return false;
        for (Projection p : Projection.values()) if (hfName.endsWith("." + p.suffix() + ".weight")) return true;
        return false;
    }

    /** Elements of the tensor with this Hugging Face name. */
    /**
     * The dtype a tensor of {@link #fullTensors()} trains in: F32, or under full fine-tuning its precision, except the
     * norm weights, F32 in every mode (the backends multiply F32 normalised activations by them). LoRA adapters are F32.
     */
    public DType trainedType(String hfName) {
        if (hfName.endsWith("norm.weight")) return DType.F32;
        return method instanceof FineTuneMethod.Full f ? f.precision() : DType.F32;
    }

    /**
     * The dtype of a trained tensor's gradient: BF16 for a BF16 weight that only products' weight gradients write (the
     * projections, an untied lm_head), as torch keeps a bfloat16 parameter's gradient; F32 for everything else,
     * including a BF16 embedding table and BF16 biases, whose gradients sum many rows (a scatter, a column sum) and
     * would lose the small contributions in BF16 steps.
     */
    public DType gradientType(String hfName) {
        boolean productOnly = isProjectionWeight(hfName) || hfName.equals("lm_head.weight");
        return trainedType(hfName) == DType.BF16 && productOnly ? DType.BF16 : DType.F32;
    }

    public long numel(String hfName) {
        long d = shape.hiddenSize();
        if (hfName.equals("model.embed_tokens.weight") || hfName.equals("lm_head.weight")) return shape.vocabSize() * d;
        if (hfName.endsWith("layernorm.weight") || hfName.equals("model.norm.weight")) return d;
        for (Projection p : Projection.values()) {
            if (hfName.endsWith("." + p.suffix() + ".weight")) return (long) p.outFeatures(shape) * p.inFeatures(shape);
            if (hfName.endsWith("." + p.suffix() + ".bias")) return p.outFeatures(shape);
        }
        throw new IllegalArgumentException("no tensor named " + hfName + " in a Llama-family model");
    }

    /**
     * The element count of each tensor the optimizer updates (each LoRA A and B, each tensor trained in full): what
     * an optimizer with per-tensor rules (bitsandbytes' 8-bit states only from 4096 elements) needs to size its state.
     */
    public List<Long> trainableTensorSizes() {
        List<Long> sizes = new java.util.ArrayList<>();
        for (LoraModule m : loraModules) {
            sizes.add((long) m.rank() * m.inFeatures());
            sizes.add((long) m.outFeatures() * m.rank());
        }
        for (String name : fullTensors.keySet()) sizes.add(numel(name));
        return sizes;
    }

    /** Parameters the optimizer updates. */
    public long trainableCount() {
        long n = 0;
        for (LoraModule m : loraModules) n += m.parameterCount();
        for (String name : fullTensors.keySet()) n += numel(name);
        return n;
    }

    /** Every parameter of the model as PEFT counts it: the base, the adapters, and the modules_to_save copies. */
    public long allCount() {
        long n = shape.parameterCounts().total();
        for (LoraModule m : loraModules) n += m.parameterCount();
        for (String name : copies) n += numel(name);
        return n;
    }

    /** Whether the tensor with this Hugging Face name trains. */
    public boolean trains(String hfName) {
        return fullTensors.containsKey(hfName);
    }

    /**
     * With tied embeddings, a trainable copy of only one side (modules_to_save lm_head or embed_tokens under LoRA)
     * separates the output projection from the embedding table, as PEFT's copy does.
     */
    public boolean unties() {
        if (!shape.tiedEmbeddings() || method instanceof FineTuneMethod.Full) return false;
        return copies.contains("lm_head.weight") || copies.contains("model.embed_tokens.weight");
    }
}
