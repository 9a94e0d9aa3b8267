package dev.lora4j.model;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.DropoutHash;
import dev.lora4j.generate.GenerationOptions;
import dev.lora4j.generate.GenerationResult;
import dev.lora4j.generate.Generator;
import dev.lora4j.io.GenerationConfig;
import dev.lora4j.io.ModelConfig;
import dev.lora4j.io.ModelFolder;
import dev.lora4j.io.SafetensorsWriter;
import dev.lora4j.lora.LoraConfig;
import dev.lora4j.lora.LoraTargets;
import dev.lora4j.lora.PeftAdapter;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.quant.QuantizedTensor;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import dev.lora4j.tokenizer.Tokenizer;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.TreeSet;
import java.util.function.Consumer;

/**
 * A Llama-family model that trains: LoRA adapters over frozen base weights with PEFT's mathematics
 * ({@code y = base(x) + scaling · B·A·dropout(x)}), QLoRA (the same adapters over 4-bit projections), or every
 * weight in F32. The forward and backward passes are explicit, layer by layer, over a batch of rows concatenated
 * into one [tokens, hidden] activation; attention runs per row. Frozen weights get no gradient buffers: for them only
 * the input gradient is formed (through a 4-bit weight, dequantized on the fly by the backend).
 *
 * <p>QLoRA follows PEFT's {@code prepare_model_for_kbit_training}: the base is frozen, norm weights are F32 (as they
 * always are here) and gradient checkpointing is on by default. Unlike that function, embeddings, lm_head and biases
 * keep their 16-bit dtype instead of being cast to F32, as the QLoRA recipe keeps them.
 *
 * <p>The loss is the summed next-token cross-entropy of the rows' labels, computed over the vocabulary a chunk of
 * rows at a time so the full [tokens, vocab] logits never exist at once. Gradients accumulate across calls until
 * {@link #zeroGrad()} or {@link #zeroGradOnNextBackward()}. Not thread-safe.
 *
 * <p>Activations are in the backend's {@link Backend#activationType()}. With BF16 activations the products multiply
 * BF16 operands, so each trainable F32 weight that a product multiplies (full fine-tuning's projections and lm_head, a
 * modules_to_save lm_head) has a BF16 working copy beside its F32 master, as mixed-precision training keeps one: the
 * masters take the optimizer's updates and the gradients, the copies the products. Copying at every product would
 * cost a pass over the weight each time it is used (two or three per step); a copy per weight costs 2 bytes per
 * parameter and one pass per optimizer step. The copies are made again from the masters at the first
 * {@link #forwardBackward} after {@link #zeroGrad()} or {@link #zeroGradOnNextBackward()} (the start of an
 * accumulation, after the optimizer stepped), and at every {@link #evaluate}, {@link #logits} and {@link #generate}:
 * parameters must not change between {@code zeroGrad()} and the forwardBackward calls that add to its gradients, which
 * gradient accumulation needs anyway.
 * LoRA adapters need no copies: a product rounds its small F32 adapter on the fly.
 */
public final class TrainableLlama implements AutoCloseable {

    /**
     * The logits of at most this many bytes exist at once in the loss: 1,048 rows of a 32,000-token vocabulary in F32,
     * 261 of a 128,256-token one. The products stay large (a 1,048 × 4,096 × 32,000 lm_head product still fills a
     * GPU many times over, and on the CPU the time per row does not change at these sizes), and against 256 MiB it
     * takes 128 MiB off the 2 GiB of activations a checkpointed Mistral-7B step of 4,096 tokens holds.
     */
    public static final long DEFAULT_LOSS_CHUNK_BYTES = 128L << 20;

    /** One LoRA adapter on the device: A [r, in], B [out, r] and their gradients, all F32. */
    private record Adapter(TrainablePlan.LoraModule plan, Tensor a, Tensor b, Tensor gradA, Tensor gradB) {
        float scaling() { return (float) plan.scaling(); }
    }

    private final Backend backend;
    private final FineTuneMethod method;
    private final TrainablePlan plan;
    private final LlamaShape shape;
    private final ModelConfig config;             // null when built from weights
    private final Path sourceFolder;              // null when built from weights
    private final GenerationConfig generationConfig;
    private final LlamaWeights weights;
    private final Tensor invFreq;
    private final Adapter[][] adapters;           // [layer][projection], null where none
    private final List<Adapter> adapterList;
    private final Map<Tensor, Tensor> gradOf = new IdentityHashMap<>();
    /**
     * Gradients that only weight-gradient products write (the projections' and an untied lm_head's, in full
     * fine-tuning), which such a product can overwrite instead of adding to: see {@link #zeroGradOnNextBackward}.
     */
    private final Set<Tensor> overwritableGrads = Collections.newSetFromMap(new IdentityHashMap<>());
    /** Those of them that hold no gradient of this accumulation yet: the next product writing one overwrites it. */
    private final Set<Tensor> gradsToOverwrite = Collections.newSetFromMap(new IdentityHashMap<>());
    /** A trainable F32 weight's BF16 working copy, where the products multiply BF16 activations (see above). */
    private final Map<Tensor, Tensor> workingCopyOf = new IdentityHashMap<>();
    private boolean workingCopiesStale = true;
    private final List<TrainableParameter> parameters;
    private final int lowestTrainableLayer;       // numLayers when no layer trains
    private final boolean embeddingTrains;
    private final long baseMemoryAtLoad;
    private long lossChunkBytes = DEFAULT_LOSS_CHUNK_BYTES;
    private boolean gradientCheckpointing;
    private TrainingBuffers trainBuffers;
    private TrainingBuffers evalBuffers;
    private final List<Tensor> owned = new ArrayList<>();
    private boolean closed;

    private TrainableLlama(Backend backend, FineTuneMethod method, TrainablePlan plan, LlamaShape shape, ModelConfig config,
                           Path sourceFolder, GenerationConfig generationConfig, LlamaWeights weights, Adapter[][] adapters,
                           List<TrainableParameter> parameters, Map<Tensor, Tensor> grads, long baseMemoryAtLoad) {
        this.backend = backend;
        this.baseMemoryAtLoad = baseMemoryAtLoad;
        // prepare_model_for_kbit_training turns gradient checkpointing on.
        this.gradientCheckpointing = method.quantization() != null;
        this.method = method;
        this.plan = plan;
        this.shape = shape;
        this.config = config;
        this.sourceFolder = sourceFolder;
        this.generationConfig = generationConfig == null ? GenerationConfig.EMPTY : generationConfig;
        this.weights = weights;
        this.adapters = adapters;
        List<Adapter> list = new ArrayList<>();
        for (Adapter[] row : adapters) for (Adapter a : row) if (a != null) list.add(a);
        this.adapterList = List.copyOf(list);
        this.parameters = List.copyOf(parameters);
        this.gradOf.putAll(grads);
        this.invFreq = own(backend.fromFloats(shape.invFreq(), DType.F32, shape.headDim() / 2));
        int lowest = shape.numLayers();
        for (int l = shape.numLayers() - 1; l >= 0; l--) if (layerTrains(l)) lowest = l;
        this.embeddingTrains = gradOf.containsKey(weights.embedTokens());
        for (int l = 0; l < shape.numLayers(); l++) {
            for (Projection p : Projection.values()) {
                Tensor g = gradOf.get(p.weight(weights.layer(l)));
                if (g != null) overwritableGrads.add(g);
            }
        }
        // A tied lm_head's gradient is the embedding table's, which the embedding's backward pass adds to.
        Tensor headGrad = weights.lmHead() == weights.embedTokens() ? null : gradOf.get(weights.lmHead());
        if (headGrad != null) overwritableGrads.add(headGrad);
        this.lowestTrainableLayer = embeddingTrains ? 0 : lowest;
        if (backend.activationType() == DType.BF16) {
            try {
                for (Tensor w : productWeights(weights)) {
                    if (gradOf.containsKey(w) && w.dtype() == DType.F32 && !workingCopyOf.containsKey(w)) {
                        workingCopyOf.put(w, own(backend.allocate(DType.BF16, w.shape())));
                    }
                }
            } catch (RuntimeException | Error e) {
                for (Tensor t : workingCopyOf.values()) t.close();
                throw e;
            }
        }
    }

    /** The weights products multiply: every projection's and lm_head (the embedding table when they are tied). */
    private static List<Tensor> productWeights(LlamaWeights w) {
        List<Tensor> out = new ArrayList<>();
        for (LlamaWeights.Layer layer : w.layers()) for (Projection p : Projection.values()) out.add(p.weight(layer));
        out.add(w.lmHead());
        return out;
    }

    /** The tensor a product multiplies for weight w: its BF16 working copy, or w itself. */
    private Tensor forProduct(Tensor w) {
        Tensor copy = workingCopyOf.get(w);
        return copy == null ? w : copy;
    }

    /** Makes the working copies again from their F32 masters (nearest even); a no-op without copies. */
    private void refreshWorkingCopies() {
        for (Map.Entry<Tensor, Tensor> e : workingCopyOf.entrySet()) backend.copy(e.getKey(), e.getValue());
        workingCopiesStale = false;
    }

    /** Bytes of the BF16 working copies (0 with F32 activations). */
    long workingCopyBytes() {
        long n = 0;
        for (Tensor t : workingCopyOf.values()) n += t.byteSize();
        return n;
    }

    // ---- creation ---------------------------------------------------------------------------------------------

    /**
     * Loads a model folder's weights onto the backend and prepares them for training: frozen base weights stay as
     * stored (BF16, F16 or F32), or for QLoRA their projections become 4-bit; trainable ones become F32; new LoRA
     * adapters start as PEFT initialises them, drawn from a generator seeded with {@code seed}. A folder whose
     * projections are already 4-bit trains with QLoRA over them (LoRA is taken to mean QLoRA there).
     */
    public static TrainableLlama create(Backend backend, ModelFolder folder, FineTuneMethod method, long seed) throws IOException {
        ModelConfig c = folder.config();
        LlamaShape s = LlamaShape.of(c);
        // Fail on a bad configuration before loading gigabytes.
        if (c.isQuantized()) {
            QuantSpec asked = method.quantization();
            try {
                // config.json has no block size: each weight's quant state has it, checked once loaded.
                method = QuantizedBase.reconcile(method, c.quantizationConfig().spec(
                        asked != null ? asked.blockSize() : QuantSpec.DEFAULT_BLOCK_SIZE));
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException(folder.path() + ": " + e.getMessage(), e);
            }
        }
        TrainablePlan.of(s, method);
        DType storage = method instanceof FineTuneMethod.Full f ? f.precision() : null;
        long before = backend.memoryInUse();
        // QLoRA quantizes each projection as it is read, so the dense model never exists on the device.
        LlamaWeights base = LlamaWeightLoader.load(folder, backend, storage, method.quantization());
        return build(backend, base, method, seed, c, folder.path(), folder.generationConfig(), before);
    }

    /** A model over a base model and a saved PEFT adapter, with the adapter's configuration. */
    public static TrainableLlama withAdapter(Backend backend, ModelFolder folder, Path adapterDir) throws IOException {
        return withAdapter(backend, folder, adapterDir, null);
    }

    /**
     * A model over a base model and a saved PEFT adapter, with the adapter's configuration; with {@code quantization}
     * not null the base's projections are 4-bit, as when the adapter was trained with QLoRA.
     */
    public static TrainableLlama withAdapter(Backend backend, ModelFolder folder, Path adapterDir, QuantSpec quantization)
            throws IOException {
        PeftAdapter adapter = PeftAdapter.load(adapterDir);
        LoraConfig c = adapter.config();
        // How an adapter was initialised does not matter once its weights are loaded.
        if (!LoraConfig.SUPPORTED_INITS.contains(c.initLoraWeights())) c = c.withInitLoraWeights("true");
        TrainableLlama model = create(backend, folder, new FineTuneMethod.Lora(c, quantization), 0);
        try {
            model.loadAdapter(adapter, adapterDir.toString());
            return model;
        } catch (RuntimeException | Error e) {
            model.close();
            throw e;
        }
    }

    /**
     * A model over weights already on the backend: it takes ownership of them and closes them, also when it fails.
     * Without a model
     * folder, {@link #saveModel} is not available.
     */
    public static TrainableLlama fromWeights(Backend backend, LlamaWeights base, FineTuneMethod method, long seed) {
        return build(backend, base, method, seed, null, null, null, backend.memoryInUse() - base.byteSize());
    }

    /** @param memoryBeforeLoad the backend's memory in use before the base weights were loaded */
    private static TrainableLlama build(Backend backend, LlamaWeights base, FineTuneMethod method, long seed,
                                        ModelConfig config, Path folder, GenerationConfig generation, long memoryBeforeLoad) {
        List<Tensor> created = new ArrayList<>();
        LlamaWeights weights = null;
        try {
            if (method instanceof FineTuneMethod.Lora l && !LoraConfig.SUPPORTED_INITS.contains(l.config().initLoraWeights())) {
                throw new IllegalArgumentException("init_lora_weights \"" + l.config().initLoraWeights() + "\" is not"
                        + " supported for new adapters; use true (the default), \"gaussian\" or false");
            }
            method = QuantizedBase.reconcile(method, base);
            TrainablePlan plan = TrainablePlan.of(base.shape(), method);
            if (method.quantization() != null) base = QuantizedBase.quantize(backend, base, method.quantization(), created);
            // The seed article's "base model memory at load": the base as training holds it, before adapters and buffers.
            long atLoad = backend.memoryInUse() - memoryBeforeLoad;
            WeightsBuilder wb = new WeightsBuilder(backend, plan, base, created);
            weights = wb.build();
            Adapter[][] adapters = new Adapter[plan.shape().numLayers()][Projection.values().length];
            SplittableRandom random = new SplittableRandom(seed);
            Map<String, Adapter> byPath = new LinkedHashMap<>();
            for (TrainablePlan.LoraModule m : plan.loraModules()) {
                Adapter a = newAdapter(backend, m, ((FineTuneMethod.Lora) method).config().initLoraWeights(), random, created);
                adapters[m.layer()][m.projection().ordinal()] = a;
                byPath.put(m.path(), a);
            }
            Map<Tensor, Tensor> grads = new IdentityHashMap<>();
            List<TrainableParameter> params = new ArrayList<>();
            for (Map.Entry<String, Tensor> e : wb.trainable.entrySet()) {
                Tensor value = e.getValue();
                if (grads.containsKey(value)) continue; // tied: one table, one gradient
                Tensor grad = track(created, backend.allocate(plan.gradientType(e.getKey()), value.shape()));
                grads.put(value, grad);
                params.add(new TrainableParameter(plan.fullTensors().get(e.getKey()), value, grad, decays(e.getKey())));
            }
            for (Adapter a : byPath.values()) addAdapterParameters(params, a);
            TrainableLlama model = new TrainableLlama(backend, method, plan, weights.shape(), config, folder, generation,
                    weights, adapters, inPeftOrder(plan.shape(), params), grads, atLoad);
            model.owned.addAll(notIn(weights, created));
            return model;
        } catch (RuntimeException | Error e) {
            // The base weights are ours to free: as built (originals replaced by copies already freed), or as given.
            for (Tensor t : weights == null ? created : notIn(weights, created)) t.close();
            (weights == null ? base : weights).close();
            throw e;
        }
    }

    private static List<Tensor> notIn(LlamaWeights weights, List<Tensor> tensors) {
        Set<Tensor> in = Collections.newSetFromMap(new IdentityHashMap<>());
        in.addAll(weights.tensors());
        return tensors.stream().filter(t -> !in.contains(t)).toList();
    }

    /**
     * The order of PEFT's named_parameters(): model order, and within an adapted module the base layer's weight and
     * bias before lora_A and lora_B (a stable sort keeps that order from the list given).
     */
    private static List<TrainableParameter> inPeftOrder(LlamaShape shape, List<TrainableParameter> params) {
        List<String> modules = new ArrayList<>();
        for (var m : dev.lora4j.lora.LlamaModules.of(shape)) modules.add(m.path());
        Map<String, Integer> index = new LinkedHashMap<>();
        for (TrainableParameter p : params) index.put(p.name(), moduleIndex(modules, p.name()));
        List<TrainableParameter> out = new ArrayList<>(params);
        out.sort((x, y) -> Integer.compare(index.get(x.name()), index.get(y.name())));
        return out;
    }

    /** The index of the innermost module holding this parameter. */
    private static int moduleIndex(List<String> modules, String name) {
        String n = name.startsWith(PeftAdapter.KEY_PREFIX) ? name.substring(PeftAdapter.KEY_PREFIX.length()) : name;
        int best = -1, bestLength = -1;
        for (int i = 0; i < modules.size(); i++) {
            String p = modules.get(i);
            if (n.startsWith(p + ".") && p.length() > bestLength) {
                best = i;
                bestLength = p.length();
            }
        }
        return best;
    }

    private static void addAdapterParameters(List<TrainableParameter> params, Adapter a) {
        params.add(new TrainableParameter(PeftAdapter.loraAKey(a.plan().path()), a.a(), a.gradA(), true));
        params.add(new TrainableParameter(PeftAdapter.loraBKey(a.plan().path()), a.b(), a.gradB(), true));
    }

    /** Hugging Face's Trainer decays every weight but biases and norm weights. */
    private static boolean decays(String hfName) {
        return !(hfName.endsWith(".bias") || hfName.endsWith("norm.weight"));
    }

    /**
     * PEFT's initialisations: "true" draws A from kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in)), and
     * zeroes B; "gaussian" draws A from N(0, 1/r²); "false" leaves both as nn.Linear initialises them, A in
     * U(±1/sqrt(in)) and B in U(±1/sqrt(r)).
     */
    private static Adapter newAdapter(Backend backend, TrainablePlan.LoraModule m, String init, SplittableRandom random,
                                      List<Tensor> created) {
        int r = m.rank(), in = m.inFeatures(), out = m.outFeatures();
        float[] a = new float[r * in];
        float[] b = new float[out * r];
        switch (init) {
            case "true" -> uniform(a, 1 / Math.sqrt(in), random);
            case "gaussian" -> {
                double std = 1.0 / r;
                for (int i = 0; i < a.length; i++) a[i] = (float) (random.nextGaussian() * std);
            }
            case "false" -> {
                uniform(a, 1 / Math.sqrt(in), random);
                uniform(b, 1 / Math.sqrt(r), random);
            }
            default -> throw new IllegalArgumentException("init_lora_weights \"" + init + "\" is not supported");
        }
        Tensor ta = track(created, backend.fromFloats(a, DType.F32, r, in));
        Tensor tb = track(created, backend.fromFloats(b, DType.F32, out, r));
        Tensor ga = track(created, backend.allocate(DType.F32, r, in));
        Tensor gb = track(created, backend.allocate(DType.F32, out, r));
        return new Adapter(m, ta, tb, ga, gb);
    }

    private static void uniform(float[] values, double bound, SplittableRandom random) {
        for (int i = 0; i < values.length; i++) values[i] = (float) ((random.nextDouble() * 2 - 1) * bound);
    }

    private static Tensor track(List<Tensor> created, Tensor t) {
        created.add(t);
        return t;
    }

    /**
     * Turns loaded base weights into the weights a training run uses: trainable tensors as F32 (converted copies),
     * frozen ones as they are; with tied embeddings and only one side trainable (modules_to_save), the output
     * projection and the embedding table become separate tensors.
     */
    private static final class WeightsBuilder {
        private final Backend backend;
        private final TrainablePlan plan;
        private final LlamaWeights base;
        private final List<Tensor> created;
        final Map<String, Tensor> trainable = new LinkedHashMap<>();

        WeightsBuilder(Backend backend, TrainablePlan plan, LlamaWeights base, List<Tensor> created) {
            this.backend = backend;
            this.plan = plan;
            this.base = base;
            this.created = created;
        }

        LlamaWeights build() {
            LlamaShape s = plan.shape();
            LlamaShape target = plan.unties() ? untied(s) : s;
            Tensor embed = version("model.embed_tokens.weight", base.embedTokens());
            List<LlamaWeights.Layer> layers = new ArrayList<>();
            for (int i = 0; i < s.numLayers(); i++) {
                LlamaWeights.Layer L = base.layer(i);
                String p = "model.layers." + i + ".";
                layers.add(new LlamaWeights.Layer(
                        version(p + "input_layernorm.weight", L.inputNorm()),
                        version(p + "self_attn.q_proj.weight", L.qProj()), version(p + "self_attn.k_proj.weight", L.kProj()),
                        version(p + "self_attn.v_proj.weight", L.vProj()), version(p + "self_attn.o_proj.weight", L.oProj()),
                        version(p + "self_attn.q_proj.bias", L.qBias()), version(p + "self_attn.k_proj.bias", L.kBias()),
                        version(p + "self_attn.v_proj.bias", L.vBias()), version(p + "self_attn.o_proj.bias", L.oBias()),
                        version(p + "post_attention_layernorm.weight", L.postAttentionNorm()),
                        version(p + "mlp.gate_proj.weight", L.gateProj()), version(p + "mlp.up_proj.weight", L.upProj()),
                        version(p + "mlp.down_proj.weight", L.downProj()),
                        version(p + "mlp.gate_proj.bias", L.gateBias()), version(p + "mlp.up_proj.bias", L.upBias()),
                        version(p + "mlp.down_proj.bias", L.downBias())));
            }
            Tensor finalNorm = version("model.norm.weight", base.finalNorm());
            Tensor lmHead;
            if (target.tiedEmbeddings()) {
                lmHead = null;
            } else if (s.tiedEmbeddings()) {
                // Untied: each side is the original table (frozen) or its own trainable copy.
                lmHead = version("lm_head.weight", base.embedTokens());
            } else {
                lmHead = version("lm_head.weight", base.lmHead());
            }
            LlamaWeights result = new LlamaWeights(target, embed, layers, finalNorm, lmHead);
            // Originals replaced by F32 copies are no longer referenced: free them.
            Set<Tensor> kept = Collections.newSetFromMap(new IdentityHashMap<>());
            kept.addAll(result.tensors());
            for (Tensor t : base.tensors()) if (!kept.contains(t)) t.close();
            return result;
        }

        /**
         * The tensor the model uses for this name: the original when frozen; when it trains, the original or a copy
         * in the dtype it trains in (F32, or full fine-tuning's precision for all but the F32 norm weights).
         */
        private Tensor version(String hfName, Tensor original) {
            if (original == null || !plan.trains(hfName)) return original;
            Tensor t = original;
            DType trained = plan.trainedType(hfName);
            if (original.dtype() != trained || plan.copies().contains(hfName)) {
                t = backend.allocate(trained, original.shape());
                created.add(t);
                backend.copy(original, t);
            }
            trainable.put(hfName, t);
            return t;
        }

        private static LlamaShape untied(LlamaShape s) {
            return new LlamaShape(s.modelType(), s.vocabSize(), s.hiddenSize(), s.intermediateSize(), s.numLayers(),
                    s.numHeads(), s.numKvHeads(), s.headDim(), s.rmsNormEps(), s.qkvBias(), s.outputBias(), s.mlpBias(),
                    false, s.slidingWindows(), s.invFreq(), s.maxPositions(), s.positionLimit());
        }
    }

    private boolean layerTrains(int l) {
        for (Adapter a : adapters[l]) if (a != null) return true;
        LlamaWeights.Layer w = weights.layer(l);
        for (Tensor t : w.tensors()) if (gradOf.containsKey(t)) return true;
        return false;
    }

    // ---- accessors ----------------------------------------------------------------------------------------------

    public Backend backend() { return backend; }

    /** The shape the model runs with (untied when a modules_to_save copy separated tied embeddings). */
    public LlamaShape shape() { return shape; }

    public FineTuneMethod method() { return method; }

    public TrainablePlan plan() { return plan; }

    /** The weights the forward pass uses: the frozen base with trainable tensors in F32 (without the adapters). */
    public LlamaWeights weights() { return weights; }

    /** Every trainable tensor with its gradient, in the order PEFT lists them. */
    public List<TrainableParameter> parameters() { return parameters; }

    /** PEFT's print_trainable_parameters() figures. */
    public TrainableParameterReport trainableParameters() { return TrainableParameterReport.of(plan); }

    /**
     * Keep only each layer's input during the forward pass and recompute the layer's activations during the backward
     * pass: activation memory falls from about a layer's worth per layer to one layer's worth, for one more forward
     * pass of compute. The result is the same.
     */
    public void setGradientCheckpointing(boolean enabled) {
        if (enabled != gradientCheckpointing && trainBuffers != null) {
            trainBuffers.close();
            trainBuffers = null;
        }
        gradientCheckpointing = enabled;
    }

    public boolean gradientCheckpointing() { return gradientCheckpointing; }

    /** At most this many bytes of logits exist at once in the loss (smaller: less memory, more, smaller products). */
    public void setLossChunkBytes(long bytes) {
        if (bytes <= 0) throw new IllegalArgumentException("loss chunk bytes must be positive, got " + bytes);
        lossChunkBytes = bytes;
        if (trainBuffers != null) trainBuffers.close();
        if (evalBuffers != null) evalBuffers.close();
        trainBuffers = evalBuffers = null;
    }

    /** Bytes of activation and gradient buffers held now (grown to the largest batch seen). */
    public long activationBytes() {
        return (trainBuffers == null ? 0 : trainBuffers.byteSize()) + (evalBuffers == null ? 0 : evalBuffers.byteSize());
    }

    /**
     * The seed article's "base model memory at load": the device memory the base weights took once loaded (and,
     * for QLoRA, quantized), measured before adapters, gradients and training buffers were allocated.
     */
    public long baseMemoryAtLoad() { return baseMemoryAtLoad; }

    /**
     * The device memory of this model in training, by part, measured now: frozen base weights, trainable weights
     * (adapters, or every weight in full fine-tuning, with their BF16 working copies), gradients, the optimizer's state
     * as it reports it, the activation buffers, and as workspace the rest of the backend's peak (backend workspaces,
     * the rounding of allocations, transient tensors such as merged weights for generation). Call it when the parts are
     * all held, after training steps.
     */
    public MemoryReport memoryReport(long optimizerStateBytes) {
        checkOpen();
        Set<Tensor> trainable = Collections.newSetFromMap(new IdentityHashMap<>());
        long trainableBytes = 0, gradientBytes = 0;
        for (TrainableParameter p : parameters) {
            if (trainable.add(p.value())) trainableBytes += p.value().byteSize();
            gradientBytes += p.grad().byteSize();
        }
        trainableBytes += workingCopyBytes();
        long frozen = 0;
        for (Tensor t : weights.tensors()) if (!trainable.contains(t)) frozen += t.byteSize();
        return MemoryReport.of(backend.name(), baseMemoryAtLoad, frozen, trainableBytes, gradientBytes, optimizerStateBytes,
                activationBytes(), backend.peakMemoryInUse());
    }

    // ---- training ----------------------------------------------------------------------------------------------

    /** A batch laid out as one sequence of rows: ids, positions, next-token targets and where each row starts. */
    private record Layout(int[] ids, int[] positions, int[] targets, int[] starts, int[] lengths, long dropoutSeed) {
        int tokens() { return ids.length; }
    }

    private Layout layout(TrainingBatch batch, boolean withTargets) {
        int rows = batch.rows(), n = batch.totalTokens();
        int[] ids = new int[n], positions = new int[n], targets = new int[n], starts = new int[rows], lengths = new int[rows];
        int at = 0, vocab = shape.vocabSize();
        for (int b = 0; b < rows; b++) {
            int[] in = batch.inputIds()[b], labels = batch.labels()[b];
            if (in.length > shape.positionLimit()) {
                throw new IllegalArgumentException("row " + b + " has " + in.length + " tokens, more than the "
                        + shape.positionLimit() + " positions this model runs (max_position_embeddings)");
            }
            starts[b] = at;
            lengths[b] = in.length;
            for (int t = 0; t < in.length; t++) {
                if (in[t] < 0 || in[t] >= vocab) {
                    throw new IllegalArgumentException("row " + b + ", position " + t + ": token id " + in[t]
                            + " is outside the vocabulary [0, " + vocab + ")");
                }
                int label = labels[t];
                if (label != TrainingBatch.IGNORE && (label < 0 || label >= vocab)) {
                    throw new IllegalArgumentException("row " + b + ", position " + t + ": label " + label + " is neither"
                            + " a token id in [0, " + vocab + ") nor -100 (ignored)");
                }
                ids[at + t] = in[t];
                positions[at + t] = t;
                targets[at + t] = withTargets && t + 1 < in.length ? labels[t + 1] : TrainingBatch.IGNORE;
            }
            at += in.length;
        }
        return new Layout(ids, positions, targets, starts, lengths, batch.dropoutSeed());
    }

    /**
     * Runs the batch forward and backward: adds d(sum of token losses × gradScale)/dθ to every parameter's gradient
     * and returns the unscaled loss sum and the number of target tokens. Dropout masks come from the batch's seed.
     */
    public LossSum forwardBackward(TrainingBatch batch, float gradScale) {
        checkOpen();
        if (parameters.isEmpty()) throw new IllegalStateException("nothing trains in this model");
        // Should the pass fail, the gradients it reached hold a partial sum, as after zeroGrad; those it did not stay
        // to be overwritten, and a failure here is not masked by a second one from zeroing them.
        LossSum loss = runForwardBackward(batch, gradScale);
        if (!gradsToOverwrite.isEmpty()) {
            // Gradients this batch did not reach (lm_head where no chunk had a target) are zero, as zeroGrad leaves
            // them.
            backend.zeroAll(List.copyOf(gradsToOverwrite));
            gradsToOverwrite.clear();
        }
        return loss;
    }

    private LossSum runForwardBackward(TrainingBatch batch, float gradScale) {
        Layout in = layout(batch, true);
        int n = in.tokens();
        TrainingBuffers buf = trainBuffers(n);
        if (workingCopiesStale) refreshWorkingCopies();
        boolean ckpt = buf.checkpointing();
        int L = shape.numLayers();

        backend.embedding(weights.embedTokens(), in.ids(), buf.residual(0, n));
        for (int l = 0; l < L; l++) {
            layerForward(l, buf.residual(l, n), buf.middle(l, n), buf.residual(l + 1, n), buf.layer(l), buf, in, true);
        }
        Tensor dHidden = buf.dNormed(n);
        LossSum loss = loss(buf.residual(L, n), in, gradScale, buf, dHidden);

        if (lowestTrainableLayer == L && !gradOf.containsKey(weights.finalNorm())) return loss;
        Tensor dX = buf.dResidual.rows(0, n);
        backend.rmsNormBackward(buf.residual(L, n), weights.finalNorm(), shape.rmsNormEps(), dHidden, dX,
                gradOf.get(weights.finalNorm()));
        for (int l = L - 1; l >= lowestTrainableLayer; l--) {
            // Layer 0's input shares the final hidden state's buffer (see TrainingBuffers): look it up again.
            if (l == 0) backend.embedding(weights.embedTokens(), in.ids(), buf.residual(0, n));
            // The last layer's activations are still those of the forward pass: nothing ran over them since.
            boolean recomputed = ckpt && l < L - 1;
            if (recomputed) {
                layerForward(l, buf.residual(l, n), buf.middle(l, n), null, buf.layer(l), buf, in, true, true);
            }
            layerBackward(l, buf.residual(l, n), buf.middle(l, n), buf.layer(l), buf, in, dX, recomputed,
                    recomputed ? adapters[l][Projection.DOWN.ordinal()] != null : l == L - 1);
        }
        if (embeddingTrains) backend.embeddingBackward(in.ids(), dX, gradOf.get(weights.embedTokens()));
        return loss;
    }

    /** The loss of the batch without gradients or dropout. */
    public LossSum evaluate(TrainingBatch batch) {
        checkOpen();
        refreshWorkingCopies();
        Layout in = layout(batch, true);
        int n = in.tokens();
        TrainingBuffers buf = evalBuffers(n);
        runEvaluation(in, buf);
        return loss(buf.residual(0, n), in, 0f, buf, null);
    }

    /**
     * The logits of every position of {@code tokens} (one sequence from position 0), row-major [tokens][vocab], with
     * the adapters applied and no dropout. The same ops as {@link LlamaModel}, so with zero adapters the logits are
     * the base model's exactly (for a sequence LlamaModel runs in one pass, at most its maxBatchTokens).
     */
    public float[] logits(int[] tokens) {
        checkOpen();
        refreshWorkingCopies();
        Layout in = layout(TrainingBatch.languageModelling(new int[][]{tokens}, 0), false);
        int n = in.tokens(), vocab = shape.vocabSize();
        TrainingBuffers buf = evalBuffers(n);
        runEvaluation(in, buf);
        Tensor h = buf.normed.rows(0, n);
        backend.rmsNorm(buf.residual(0, n), weights.finalNorm(), shape.rmsNormEps(), h);
        float[] out = new float[Math.multiplyExact(n, vocab)];
        for (int c0 = 0; c0 < n; c0 += buf.lossChunkRows) {
            int count = Math.min(buf.lossChunkRows, n - c0);
            Tensor lg = buf.logits.rows(0, count);
            backend.matmul(h.rows(c0, count), forProduct(weights.lmHead()), lg);
            System.arraycopy(backend.toFloats(lg), 0, out, c0 * vocab, count * vocab);
        }
        return out;
    }

    private void runEvaluation(Layout in, TrainingBuffers buf) {
        int n = in.tokens();
        Tensor x = buf.residual(0, n);
        backend.embedding(weights.embedTokens(), in.ids(), x);
        for (int l = 0; l < shape.numLayers(); l++) layerForward(l, x, x, x, buf.layer(l), buf, in, false);
    }

    /**
     * Sets every parameter's gradient to zero: a new accumulation starts, and the parameters may have changed since the
     * last one (the working copies are made again at the next forwardBackward).
     */
    public void zeroGrad() {
        checkOpen();
        gradsToOverwrite.clear();
        List<Tensor> all = new ArrayList<>(parameters.size());
        for (TrainableParameter p : parameters) all.add(p.grad());
        backend.zeroAll(all);
        workingCopiesStale = true;
    }

    /**
     * Starts a new accumulation as {@link #zeroGrad()} does, without a pass over the weight gradients that products
     * compute: torch's {@code zero_grad(set_to_none=True)}. The next {@link #forwardBackward} writes each of those
     * gradients with its first product instead of adding to it, and zeroes any it did not reach before it returns;
     * every other gradient (norm weights, biases, the embedding table, adapters) is zeroed now. So the gradients are
     * what zeroGrad would give once forwardBackward has run, and hold their old values until then: for a training
     * loop, which reads them only after its micro-batches. In full fine-tuning this saves writing the projections'
     * gradients (half the model's size in BF16, all of it in F32) and reading them again in the first micro-batch.
     */
    public void zeroGradOnNextBackward() {
        checkOpen();
        gradsToOverwrite.clear();
        List<Tensor> zeroNow = new ArrayList<>(parameters.size());
        for (TrainableParameter p : parameters) {
            if (overwritableGrads.contains(p.grad())) gradsToOverwrite.add(p.grad());
            else zeroNow.add(p.grad());
        }
        backend.zeroAll(zeroNow);
        workingCopiesStale = true;
    }

    /** Whether a weight-gradient product adds into {@code grad} (false: its first of this accumulation, it writes). */
    private boolean addsInto(Tensor grad) {
        return !gradsToOverwrite.remove(grad);
    }

    private TrainingBuffers trainBuffers(int n) {
        if (trainBuffers == null || trainBuffers.capacity < n) {
            if (trainBuffers != null) trainBuffers.close();
            trainBuffers = null;
            int capacity = roundUp(n);
            // From now on evaluation runs in these (see evalBuffers): its own buffers go first, so the two never
            // take memory at the same time.
            if (evalBuffers != null && evalBuffers.capacity <= capacity) {
                evalBuffers.close();
                evalBuffers = null;
            }
            trainBuffers = TrainingBuffers.forTraining(backend, shape, plan.loraModules(), capacity, gradientCheckpointing,
                    lossChunkBytes);
        }
        return trainBuffers;
    }

    /**
     * Evaluation needs a subset of what training keeps (one residual stream, one set of layer buffers, the loss
     * chunk), so it runs in the training buffers when they are large enough, and has its own only otherwise.
     */
    private TrainingBuffers evalBuffers(int n) {
        if (trainBuffers != null && trainBuffers.capacity >= n) return trainBuffers;
        if (evalBuffers == null || evalBuffers.capacity < n) {
            if (evalBuffers != null) evalBuffers.close();
            evalBuffers = null;
            evalBuffers = TrainingBuffers.forEvaluation(backend, shape, plan.loraModules(), roundUp(n), lossChunkBytes);
        }
        return evalBuffers;
    }

    private static int roundUp(int n) {
        return (int) Math.min(Integer.MAX_VALUE, (n + 63L) / 64 * 64);
    }

    // ---- forward ----------------------------------------------------------------------------------------------

    /**
     * One decoder layer: {@code mid = in + o(attention(rope(q(h)), rope(k(h)), v(h)))} with h = rmsnorm(in), then
     * {@code out = mid + down(silu(gate(h')) * up(h'))} with h' = rmsnorm(mid). In evaluation in, mid and out are
     * one tensor updated in place, in the same op order as {@link LlamaModel}.
     */
    private void layerForward(int l, Tensor in, Tensor mid, Tensor out, TrainingBuffers.LayerActivations a,
                              TrainingBuffers buf, Layout lay, boolean train) {
        layerForward(l, in, mid, out, a, buf, lay, train, false);
    }

    /**
     * {@link #layerForward(int, Tensor, Tensor, Tensor, TrainingBuffers.LayerActivations, TrainingBuffers, Layout,
     * boolean)}, or, when {@code recompute}, only what the layer's backward pass reads (gradient checkpointing): the
     * layer's output is already kept as the next layer's input, so the down projection is not run, only its adapter's
     * hidden activation, which its B gradient needs (a quarter of the layer's product FLOPs saved).
     */
    private void layerForward(int l, Tensor in, Tensor mid, Tensor out, TrainingBuffers.LayerActivations a,
                              TrainingBuffers buf, Layout lay, boolean train, boolean recompute) {
        int n = lay.tokens();
        LlamaWeights.Layer w = weights.layer(l);
        float eps = shape.rmsNormEps();
        int hd = shape.headDim();
        Tensor h = buf.normed.rows(0, n);
        Tensor q = a.q().rows(0, n), k = a.k().rows(0, n), v = a.v().rows(0, n), att = a.attended().rows(0, n);

        backend.rmsNorm(in, w.inputNorm(), eps, h);
        project(l, Projection.Q, h, q, a, lay, train, recompute);
        project(l, Projection.K, h, k, a, lay, train, recompute);
        project(l, Projection.V, h, v, a, lay, train, recompute);
        backend.rope(q, hd, lay.positions(), invFreq);
        backend.rope(k, hd, lay.positions(), invFreq);
        int window = shape.slidingWindow(l);
        for (int b = 0; b < lay.starts().length; b++) {
            int s = lay.starts()[b], len = lay.lengths()[b];
            if (train) {
                backend.attentionForward(q.rows(s, len), k.rows(s, len), v.rows(s, len), shape.numHeads(),
                        shape.numKvHeads(), hd, window, att.rows(s, len), a.lse().rows(s, len));
            } else {
                backend.attention(q.rows(s, len), k.rows(s, len), v.rows(s, len), 0, shape.numHeads(),
                        shape.numKvHeads(), hd, window, att.rows(s, len));
            }
        }
        projectAdd(l, Projection.O, att, in, mid, h, a, lay, train, recompute);

        Tensor g = a.gate().rows(0, n), u = a.up().rows(0, n), act = buf.swiglu.rows(0, n);
        backend.rmsNorm(mid, w.postAttentionNorm(), eps, h);
        // A recomputation needs the SwiGLU product only where down's adapter reads it in the backward pass (it draws
        // its dropout mask on it again); that adapter's hidden activation itself was kept by the forward pass.
        boolean product = !recompute || adapters[l][Projection.DOWN.ordinal()] != null;
        Adapter gateAdapter = adapters[l][Projection.GATE.ordinal()], upAdapter = adapters[l][Projection.UP.ordinal()];
        if (product && gateAdapter != null && upAdapter != null && w.gateBias() == null && w.upBias() == null) {
            // SwiGLU adds both adapters' B products as it goes: gate and up are read and written once, not three times.
            backend.matmul(h, forProduct(w.gateProj()), g);
            backend.matmul(h, forProduct(w.upProj()), u);
            backend.swigluWithLora(g, adapterHidden(l, Projection.GATE, h, a, lay, train, recompute), gateAdapter.b(),
                    u, adapterHidden(l, Projection.UP, h, a, lay, train, recompute), upAdapter.b(), act);
        } else {
            project(l, Projection.GATE, h, g, a, lay, train, recompute);
            project(l, Projection.UP, h, u, a, lay, train, recompute);
            if (product) backend.swiglu(g, u, act);
        }
        if (recompute) return;
        projectAdd(l, Projection.DOWN, act, mid, out, h, a, lay, train, false);
    }

    /** {@code out = in·Wᵀ + bias + scaling·B·A·dropout(in)}. */
    private void project(int l, Projection p, Tensor in, Tensor out, TrainingBuffers.LayerActivations a, Layout lay,
                         boolean train, boolean recompute) {
        LlamaWeights.Layer w = weights.layer(l);
        backend.matmul(in, forProduct(p.weight(w)), out);
        Tensor bias = p.bias(w);
        if (bias != null) backend.addBias(out, bias);
        addLora(l, p, in, out, a, lay, train, recompute);
    }

    /**
     * {@code x = residual + in·Wᵀ + bias + lora(in)} (x may be residual): accumulated straight into the residual stream
     * without a bias, through {@code scratch} with one, as {@link LlamaModel} does.
     */
    private void projectAdd(int l, Projection p, Tensor in, Tensor residual, Tensor x, Tensor scratch,
                            TrainingBuffers.LayerActivations a, Layout lay, boolean train, boolean recompute) {
        LlamaWeights.Layer w = weights.layer(l);
        Tensor bias = p.bias(w);
        if (bias == null) {
            backend.matmulAdd(in, forProduct(p.weight(w)), residual, x);
            addLora(l, p, in, x, a, lay, train, recompute);
        } else {
            if (residual != x) backend.copy(residual, x);
            backend.matmul(in, forProduct(p.weight(w)), scratch);
            backend.addBias(scratch, bias);
            addLora(l, p, in, scratch, a, lay, train, recompute);
            backend.add(x, scratch);
        }
    }

    /**
     * {@code out += B·(scaling·A·dropout(in))}, keeping scaling·A·dropout(in) for the backward pass; a recomputation
     * (checkpointing) reads the one its forward pass kept, the same bits, as in and the mask are the same.
     */
    private void addLora(int l, Projection p, Tensor in, Tensor out, TrainingBuffers.LayerActivations a, Layout lay,
                         boolean train, boolean recompute) {
        Tensor hidden = adapterHidden(l, p, in, a, lay, train, recompute);
        if (hidden != null) backend.matmul(hidden, adapters[l][p.ordinal()].b(), out, true);
    }

    /** scaling·A·dropout(in) of the projection's adapter: computed, or in a recomputation the kept one; null without. */
    private Tensor adapterHidden(int l, Projection p, Tensor in, TrainingBuffers.LayerActivations a, Layout lay,
                                 boolean train, boolean recompute) {
        Adapter ad = adapters[l][p.ordinal()];
        if (ad == null) return null;
        return recompute ? a.lora(p, lay.tokens(), ad.plan().rank()) : loraHidden(l, p, in, a, lay, train);
    }

    /** The adapter's hidden activation {@code scaling·A·dropout(in)}, kept for the backward pass; null without one. */
    private Tensor loraHidden(int l, Projection p, Tensor in, TrainingBuffers.LayerActivations a, Layout lay,
                              boolean train) {
        Adapter ad = adapters[l][p.ordinal()];
        if (ad == null) return null;
        Tensor hidden = a.lora(p, lay.tokens(), ad.plan().rank());
        float pDrop = train ? (float) ad.plan().dropout() : 0f;
        backend.loraDown(in, ad.a(), ad.scaling(), pDrop, dropoutSeed(lay, l, p), hidden);
        return hidden;
    }

    /** Each adapter of each layer draws its own mask, as each PEFT LoRA layer has its own nn.Dropout. */
    private static long dropoutSeed(Layout lay, int layer, Projection p) {
        return DropoutHash.mix(lay.dropoutSeed(), (long) layer * Projection.values().length + p.ordinal());
    }

    // ---- loss -------------------------------------------------------------------------------------------------

    /**
     * The summed cross-entropy of the targets, a chunk of rows at a time: logits = rmsnorm(hidden)·lm_headᵀ, then the
     * fused cross-entropy turns them into their gradient in place, which flows to the normalised hidden state
     * ({@code dNormed}, when not null) and to lm_head when it trains.
     */
    private LossSum loss(Tensor hidden, Layout lay, float gradScale, TrainingBuffers buf, Tensor dNormed) {
        int n = lay.tokens();
        Tensor h = buf.normed.rows(0, n);
        backend.rmsNorm(hidden, weights.finalNorm(), shape.rmsNormEps(), h);
        Tensor gradHead = dNormed == null ? null : gradOf.get(weights.lmHead());
        int[] targets = lay.targets();
        long count = 0;
        for (int t : targets) if (t >= 0) count++;
        for (int c0 = 0; c0 < n; c0 += buf.lossChunkRows) {
            int rows = Math.min(buf.lossChunkRows, n - c0);
            int[] tg = Arrays.copyOfRange(targets, c0, c0 + rows);
            boolean any = false;
            for (int t : tg) any |= t >= 0;
            if (!any) {
                if (dNormed != null) backend.zero(dNormed.rows(c0, rows));
                continue;
            }
            Tensor lg = buf.logits.rows(0, rows);
            Tensor hc = h.rows(c0, rows);
            backend.matmul(hc, forProduct(weights.lmHead()), lg);
            backend.crossEntropy(lg, tg, gradScale, buf.losses.view(c0, rows));
            if (dNormed != null) {
                backend.matmulBackwardInput(lg, forProduct(weights.lmHead()), dNormed.rows(c0, rows), false);
                if (gradHead != null) backend.matmulBackwardWeight(lg, hc, gradHead, addsInto(gradHead));
            }
        }
        float[] losses = backend.toFloats(buf.losses.view(0, n));
        double sum = 0;
        for (int i = 0; i < n; i++) if (targets[i] >= 0) sum += losses[i];
        return new LossSum(sum, count);
    }

    // ---- backward ---------------------------------------------------------------------------------------------

    /** Turns dX from the gradient of the layer's output into the gradient of its input, adding parameter gradients. */
    /**
     * {@code normedMidReady}: the block norm of mid is still in the normed buffer (the recomputed forward pass ended
     * with it); {@code swigluReady}: the SwiGLU product is still in its buffer (computed by the recomputed pass for the
     * down adapter, or by the forward pass of the last layer, after which nothing wrote it).
     */
    private void layerBackward(int l, Tensor in, Tensor mid, TrainingBuffers.LayerActivations a, TrainingBuffers buf,
                               Layout lay, Tensor dX, boolean normedMidReady, boolean swigluReady) {
        int n = lay.tokens();
        LlamaWeights.Layer w = weights.layer(l);
        float eps = shape.rmsNormEps();
        int hd = shape.headDim();
        Tensor h = buf.normed.rows(0, n), act = buf.swiglu.rows(0, n);
        Tensor g = a.gate().rows(0, n), u = a.up().rows(0, n);
        Tensor dAct = buf.dSwiglu(n), dG = buf.dGate(n), dU = buf.dUp(a, n);
        Tensor dH = buf.dNormed(n);

        // MLP block: out = mid + down(silu(gate(h')) * up(h')), h' = rmsnorm(mid)
        if (!normedMidReady) backend.rmsNorm(mid, w.postAttentionNorm(), eps, h);
        if (!swigluReady) backend.swiglu(g, u, act);
        linearBackward(l, Projection.DOWN, act, dX, dAct, false, a, buf, lay);
        backend.swigluBackward(g, u, dAct, dG, dU);
        linearBackward(l, Projection.GATE, h, dG, dH, false, a, buf, lay);
        linearBackward(l, Projection.UP, h, dU, dH, true, a, buf, lay);
        backend.rmsNormBackward(mid, w.postAttentionNorm(), eps, dH, dX, gradOf.get(w.postAttentionNorm()), true);

        // Attention block: mid = in + o(attention(rope(q(h)), rope(k(h)), v(h))), h = rmsnorm(in)
        Tensor q = a.q().rows(0, n), k = a.k().rows(0, n), v = a.v().rows(0, n), att = a.attended().rows(0, n);
        Tensor dAtt = buf.dAttended(n), dq = buf.dQuery(n), dk = buf.dKey(n), dv = buf.dValue(n);
        backend.rmsNorm(in, w.inputNorm(), eps, h);
        linearBackward(l, Projection.O, att, dX, dAtt, false, a, buf, lay);
        int window = shape.slidingWindow(l);
        for (int b = 0; b < lay.starts().length; b++) {
            int s = lay.starts()[b], len = lay.lengths()[b];
            backend.attentionBackward(q.rows(s, len), k.rows(s, len), v.rows(s, len), att.rows(s, len),
                    a.lse().rows(s, len), dAtt.rows(s, len), shape.numHeads(), shape.numKvHeads(), hd, window,
                    dq.rows(s, len), dk.rows(s, len), dv.rows(s, len));
        }
        backend.ropeBackward(dq, hd, lay.positions(), invFreq);
        backend.ropeBackward(dk, hd, lay.positions(), invFreq);
        linearBackward(l, Projection.Q, h, dq, dH, false, a, buf, lay);
        linearBackward(l, Projection.K, h, dk, dH, true, a, buf, lay);
        linearBackward(l, Projection.V, h, dv, dH, true, a, buf, lay);
        backend.rmsNormBackward(in, w.inputNorm(), eps, dH, dX, gradOf.get(w.inputNorm()), true);
    }

    /**
     * The gradients of {@code y = in·Wᵀ + bias + B·(s·A·dropout(in))}: dIn (+)= dY·W + dropout'(s·dY·B·A); the
     * weight, bias and adapter gradients accumulate where they train.
     */
    private void linearBackward(int l, Projection p, Tensor in, Tensor dY, Tensor dIn, boolean accumulate,
                                TrainingBuffers.LayerActivations a, TrainingBuffers buf, Layout lay) {
        LlamaWeights.Layer w = weights.layer(l);
        Tensor weight = p.weight(w);
        backend.matmulBackwardInput(dY, forProduct(weight), dIn, accumulate);
        Tensor gw = gradOf.get(weight);
        if (gw != null) backend.matmulBackwardWeight(dY, in, gw, addsInto(gw));
        Tensor bias = p.bias(w);
        Tensor gb = bias == null ? null : gradOf.get(bias);
        if (gb != null) backend.sumRows(dY, gb);
        Adapter ad = adapters[l][p.ordinal()];
        if (ad == null) return;
        int n = lay.tokens(), r = ad.plan().rank();
        Tensor dHidden = buf.dLora(n, r); // the gradient of scaling·A·dropout(in): dY·B
        backend.loraUpBackward(dY, a.lora(p, n, r), ad.b(), ad.gradB(), dHidden);
        backend.loraDownBackward(in, ad.a(), ad.scaling(), (float) ad.plan().dropout(), dropoutSeed(lay, l, p), dHidden,
                ad.gradA(), dIn, true);
    }

    // ---- adapters ---------------------------------------------------------------------------------------------

    private LoraConfig loraConfig() {
        if (!(method instanceof FineTuneMethod.Lora l)) {
            throw new IllegalStateException("this model fine-tunes every weight: it has no adapter; use saveModel");
        }
        return l.config();
    }

    /** The adapter's weights on the host, under PEFT's keys. */
    public PeftAdapter adapter() {
        checkOpen();
        LoraConfig c = loraConfig();
        if (c.baseModelNameOrPath() == null && sourceFolder != null) c = c.withBaseModelNameOrPath(sourceFolder.toString());
        Map<String, PeftAdapter.Weight> tensors = new LinkedHashMap<>();
        for (TrainableParameter p : parameters) {
            tensors.put(p.name(), new PeftAdapter.Weight(p.value().shape(), backend.toFloats(p.value())));
        }
        return new PeftAdapter(c, LoraTargets.savedTargetModules(c, plan.shape()), tensors);
    }

    /** Writes the adapter as PEFT's save_pretrained does (adapter_config.json, adapter_model.safetensors). */
    public void saveAdapter(Path dir) throws IOException {
        adapter().save(dir);
    }

    /** Replaces the adapter's weights with those saved in {@code dir}; they must have this model's modules and ranks. */
    public void loadAdapter(Path dir) throws IOException {
        loadAdapter(PeftAdapter.load(dir), dir.toString());
    }

    /** Replaces the adapter's weights with these; they must have this model's modules, ranks and scalings. */
    public void loadAdapter(PeftAdapter adapter, String source) {
        checkOpen();
        LoraConfig mine = loraConfig();
        LoraConfig theirs = adapter.config();
        for (Adapter a : adapterList) {
            String path = a.plan().path();
            if (Math.abs(theirs.scaling(path) - a.plan().scaling()) > 1e-12 * Math.abs(a.plan().scaling())) {
                throw new IllegalArgumentException(source + ": the adapter scales " + path + " by " + theirs.scaling(path)
                        + " (lora_alpha " + theirs.alpha(path) + ", r " + theirs.rank(path) + (theirs.useRslora() ? ", rslora" : "")
                        + ") but this model by " + a.plan().scaling() + "; create the model with the adapter's configuration"
                        + " (TrainableLlama.withAdapter)");
            }
        }
        Set<String> expected = new TreeSet<>();
        for (TrainableParameter p : parameters) expected.add(p.name());
        Set<String> present = new TreeSet<>(adapter.tensors().keySet());
        List<String> missing = new ArrayList<>(expected);
        missing.removeAll(present);
        List<String> unexpected = new ArrayList<>(present);
        unexpected.removeAll(expected);
        if (!missing.isEmpty() || !unexpected.isEmpty()) {
            throw new IllegalArgumentException(source + " does not fit this model's adapter (target_modules "
                    + mine.targetModules() + "): " + (missing.isEmpty() ? "" : missing.size() + " tensor(s) missing, e.g. "
                    + missing.getFirst() + (unexpected.isEmpty() ? "" : "; ")) + (unexpected.isEmpty() ? ""
                    : unexpected.size() + " tensor(s) this model does not have, e.g. " + unexpected.getFirst()));
        }
        for (TrainableParameter p : parameters) {
            PeftAdapter.Weight w = adapter.tensor(p.name());
            if (!Arrays.equals(w.shape(), p.value().shape())) {
                throw new IllegalArgumentException(source + ": tensor " + p.name() + " has shape " + Arrays.toString(w.shape())
                        + " but this model needs " + Arrays.toString(p.value().shape()) + " (a different rank or model)");
            }
        }
        for (TrainableParameter p : parameters) {
            PeftAdapter.Weight w = adapter.tensor(p.name());
            try (Tensor t = backend.fromFloats(w.values(), DType.F32, w.shape())) {
                backend.copy(t, p.value());
            }
        }
    }

    // ---- inference --------------------------------------------------------------------------------------------

    /**
     * The weights with every adapter merged in ({@code W + scaling·B·A}, computed in F32 and stored in W's dtype, as
     * PEFT's merge does); the tensors without an adapter are shared with this model. Closing the result frees only
     * the merged tensors; it must be closed before this model.
     *
     * <p>Under QLoRA an adapted projection is dequantized, merged in F32 and kept dense in the dtype the weight had
     * before quantization (BF16 usually): its values are the 4-bit base's plus the adapter, i.e. they differ from the
     * original 16-bit weights by the quantization error. PEFT's merge into a bitsandbytes layer would quantize the sum
     * again, which rounds most of the adapter away; keeping it dense costs its 16-bit size for as long as the result
     * is open. Projections without an adapter stay 4-bit.
     */
    public LlamaWeights mergedWeights() {
        checkOpen();
        List<Tensor> merged = new ArrayList<>();
        try {
            List<LlamaWeights.Layer> layers = new ArrayList<>();
            for (int l = 0; l < shape.numLayers(); l++) {
                LlamaWeights.Layer w = weights.layer(l);
                Tensor[] m = new Tensor[Projection.values().length];
                for (Projection p : Projection.values()) {
                    Adapter ad = adapters[l][p.ordinal()];
                    m[p.ordinal()] = ad == null ? p.weight(w) : track(merged, merge(p.weight(w), ad));
                }
                layers.add(new LlamaWeights.Layer(w.inputNorm(), m[0], m[1], m[2], m[3], w.qBias(), w.kBias(), w.vBias(),
                        w.oBias(), w.postAttentionNorm(), m[4], m[5], m[6], w.gateBias(), w.upBias(), w.downBias()));
            }
            return new LlamaWeights(shape, weights.embedTokens(), layers, weights.finalNorm(),
                    shape.tiedEmbeddings() ? null : weights.lmHead(), weights.tensors());
        } catch (RuntimeException | Error e) {
            for (Tensor t : merged) t.close();
            throw e;
        }
    }

    private Tensor merge(Tensor weight, Adapter ad) {
        int r = ad.plan().rank(), in = ad.plan().inFeatures(), out = ad.plan().outFeatures();
        DType dtype = weight instanceof QuantizedTensor q ? q.originalType() : weight.dtype();
        float[] a = backend.toFloats(ad.a());
        float[] at = new float[a.length];
        for (int i = 0; i < r; i++) for (int j = 0; j < in; j++) at[j * r + i] = a[i * in + j];
        try (Tensor aT = backend.fromFloats(at, DType.F32, in, r);
             Tensor delta = backend.allocate(DType.F32, out, in);
             Tensor sum = backend.allocate(DType.F32, out, in)) {
            backend.matmul(ad.b(), aT, delta);
            backend.scale(delta, ad.scaling());
            if (weight instanceof QuantizedTensor q) backend.dequantize4bit(q, sum);
            else backend.copy(weight, sum);
            backend.add(sum, delta);
            Tensor result = backend.allocate(dtype, out, in);
            backend.copy(sum, result);
            return result;
        }
    }

    /**
     * This model's weights for inference, the products' weights replaced by their working copies (made again now);
     * closing the result frees nothing.
     */
    private LlamaWeights withWorkingCopies() {
        refreshWorkingCopies();
        List<LlamaWeights.Layer> layers = new ArrayList<>();
        for (LlamaWeights.Layer L : weights.layers()) {
            layers.add(new LlamaWeights.Layer(L.inputNorm(), forProduct(L.qProj()), forProduct(L.kProj()),
                    forProduct(L.vProj()), forProduct(L.oProj()), L.qBias(), L.kBias(), L.vBias(), L.oBias(),
                    L.postAttentionNorm(), forProduct(L.gateProj()), forProduct(L.upProj()), forProduct(L.downProj()),
                    L.gateBias(), L.upBias(), L.downBias()));
        }
        List<Tensor> borrowed = new ArrayList<>(weights.tensors());
        borrowed.addAll(workingCopyOf.values());
        // A tied table is the embedding lookup's too: it stays the F32 master, and the products round it.
        return new LlamaWeights(shape, weights.embedTokens(), layers, weights.finalNorm(),
                shape.tiedEmbeddings() ? null : forProduct(weights.lmHead()), borrowed);
    }

    /** Generates after {@code prompt} with the adapters applied; see {@link #generate(int[], GenerationOptions, Tokenizer, Consumer)}. */
    public GenerationResult generate(int[] prompt, GenerationOptions options, Tokenizer tokenizer) {
        return generate(prompt, options, tokenizer, null);
    }

    /**
     * Generates after {@code prompt} with the adapters merged into a copy of the adapted weights (the model's own
     * weights are not changed; under QLoRA the adapted projections are dense for the generation, see
     * {@link #mergedWeights()}); {@code streamer} may be null.
     */
    public GenerationResult generate(int[] prompt, GenerationOptions options, Tokenizer tokenizer, Consumer<String> streamer) {
        checkOpen();
        Set<Integer> eos = Generator.eosIds(generationConfig.eosTokenIds(),
                config == null ? List.of() : config.eosTokenIds(), tokenizer);
        LlamaWeights w = method instanceof FineTuneMethod.Lora ? mergedWeights() : withWorkingCopies();
        try (LlamaModel model = new LlamaModel(backend, w); Generator generator = new Generator(model, tokenizer, eos)) {
            return generator.generate(prompt, options, streamer);
        }
    }

    /**
     * Writes a Hugging Face model folder: config.json, the weights as safetensors (full fine-tuning: F32; LoRA: the
     * adapters merged into the base weights, in their stored dtype, as merge_and_unload then save_pretrained), and
     * the tokenizer and generation files of the source folder. Under QLoRA every projection is written dequantized,
     * in the dtype it had before quantization, with the adapters merged as {@link #mergedWeights()} says: a 16-bit
     * model whose base carries the 4-bit quantization error.
     */
    public void saveModel(Path dir) throws IOException {
        checkOpen();
        if (config == null) throw new IllegalStateException("this model was not loaded from a model folder: it has no config.json to save");
        LlamaWeights w = method instanceof FineTuneMethod.Lora ? mergedWeights() : null;
        try (Arena arena = Arena.ofConfined()) {
            LlamaWeights source = w != null ? w : weights;
            SafetensorsWriter writer = new SafetensorsWriter().metadata("format", "pt");
            Map<String, Tensor> named = named(source);
            Map<DType, Long> bytesByDType = new java.util.EnumMap<>(DType.class);
            for (Map.Entry<String, Tensor> e : named.entrySet()) {
                Tensor t = e.getValue();
                MemorySegment host;
                DType dtype;
                if (t instanceof QuantizedTensor q) {
                    dtype = q.originalType();
                    try (Tensor dense = backend.allocate(dtype, q.shape())) {
                        backend.dequantize4bit(q, dense);
                        host = arena.allocate(Math.max(1, dense.byteSize()), 64).asSlice(0, dense.byteSize());
                        backend.copyToHost(dense, host);
                    }
                } else {
                    dtype = t.dtype();
                    host = arena.allocate(Math.max(1, t.byteSize()), 64).asSlice(0, t.byteSize());
                    backend.copyToHost(t, host);
                }
                writer.add(e.getKey(), dtype, t.shape(), host);
                bytesByDType.merge(dtype, host.byteSize(), Long::sum);
            }
            Files.createDirectories(dir);
            writer.writeSharded(dir, 5_000_000_000L);
            DType stored = bytesByDType.entrySet().stream().max(Map.Entry.comparingByValue()).map(Map.Entry::getKey).orElse(DType.F32);
            String dtype = switch (stored) {
                case F32 -> "float32";
                case F16 -> "float16";
                default -> "bfloat16";
            };
            Files.writeString(dir.resolve(ModelFolder.CONFIG_FILE), savedConfig(dtype).toJson());
            if (sourceFolder != null && !sourceFolder.toAbsolutePath().normalize().equals(dir.toAbsolutePath().normalize())) {
                for (String f : List.of("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                        "tokenizer.model", "chat_template.jinja", GenerationConfig.FILE_NAME)) {
                    Path src = sourceFolder.resolve(f);
                    if (Files.isRegularFile(src)) Files.copy(src, dir.resolve(f), StandardCopyOption.REPLACE_EXISTING);
                }
            }
        } finally {
            if (w != null) w.close();
        }
    }

    private Map<String, Tensor> named(LlamaWeights w) {
        Map<String, Tensor> m = new LinkedHashMap<>();
        m.put("model.embed_tokens.weight", w.embedTokens());
        for (int i = 0; i < shape.numLayers(); i++) {
            LlamaWeights.Layer L = w.layer(i);
            String p = "model.layers." + i + ".";
            m.put(p + "input_layernorm.weight", L.inputNorm());
            m.put(p + "post_attention_layernorm.weight", L.postAttentionNorm());
            for (Projection proj : Projection.values()) {
                m.put(p + proj.suffix() + ".weight", proj.weight(L));
                if (proj.bias(L) != null) m.put(p + proj.suffix() + ".bias", proj.bias(L));
            }
        }
        m.put("model.norm.weight", w.finalNorm());
        if (!shape.tiedEmbeddings()) m.put("lm_head.weight", w.lmHead());
        return m;
    }

    private ModelConfig savedConfig(String dtype) {
        ModelConfig c = config;
        return new ModelConfig(c.architectures(), c.modelType(), c.vocabSize(), c.hiddenSize(), c.intermediateSize(),
                c.numHiddenLayers(), c.numAttentionHeads(), c.numKeyValueHeads(), c.headDim(), c.rmsNormEps(),
                c.ropeTheta(), c.ropeScaling(), c.maxPositionEmbeddings(), c.slidingWindow(), c.maxWindowLayers(),
                c.attentionBias(), c.mlpBias(), shape.tiedEmbeddings(), c.bosTokenId(), c.eosTokenIds(), c.padTokenId(),
                dtype, c.hiddenAct());
    }

    // ---- lifecycle --------------------------------------------------------------------------------------------

    private Tensor own(Tensor t) {
        owned.add(t);
        return t;
    }

    private void checkOpen() {
        if (closed) throw new IllegalStateException("model used after close");
    }

    @Override
    public void close() {
        if (closed) return;
        closed = true;
        if (trainBuffers != null) trainBuffers.close();
        if (evalBuffers != null) evalBuffers.close();
        for (Tensor t : owned) t.close();
        weights.close();
    }
}
