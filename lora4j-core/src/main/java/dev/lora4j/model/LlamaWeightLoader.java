package dev.lora4j.model;

import dev.lora4j.backend.Backend;
import dev.lora4j.io.ModelFolder;
import dev.lora4j.io.SafetensorsModel;
import dev.lora4j.io.TensorInfo;
import dev.lora4j.quant.BnbCheckpointFormat;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.quant.QuantizationConfig;
import dev.lora4j.quant.QuantizedCheckpointReader;
import dev.lora4j.quant.QuantizedTensor;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Reads a Llama-family checkpoint's tensors, by their Hugging Face names, onto a backend. Every tensor is checked
 * against the shape {@code config.json} implies before any memory is spent on it; tensors the model does not use
 * (a tied {@code lm_head.weight}, rotary caches) are ignored, as transformers ignores them.
 *
 * <p>Projections and embeddings are stored in the requested dtype, or as the file stores them; norm weights are
 * always F32 because the backends multiply the F32 normalised activations by them.
 *
 * <p>4-bit weights (bitsandbytes NF4/FP4, docs/qlora-format.md) arrive two ways. A checkpoint saved in 4 bits
 * (transformers' form: {@code weight} packed, {@code weight.absmax}, {@code weight.quant_state.bitsandbytes__nf4}...)
 * has its projections uploaded as stored, as {@link QuantizedTensor}s, never dequantized. A dense checkpoint is
 * quantized on load when a {@link QuantSpec} is given: each layer projection is uploaded, quantized and its dense
 * form closed before the next is read, so the backend holds at most one dense projection beside the 4-bit model,
 * and the host only the memory-mapped files. Embeddings, norms and lm_head stay 16-bit (or as stored), as in the
 * QLoRA recipe.
 */
public final class LlamaWeightLoader {
    private final SafetensorsModel file;
    private final LlamaShape shape;
    private final Backend backend;
    private final DType storage;
    private final QuantSpec quantize;
    private final boolean preQuantized;
    private final List<Tensor> loaded = new ArrayList<>();

    private LlamaWeightLoader(SafetensorsModel file, LlamaShape shape, Backend backend, DType storage, QuantSpec quantize) {
        this.file = file;
        this.shape = shape;
        this.backend = backend;
        this.storage = storage;
        this.quantize = quantize;
        this.preQuantized = QuantizedCheckpointReader.isPreQuantized(file);
    }

    /** Loads every weight, keeping the dtype each tensor has in the file (F64 becomes F32). */
    public static LlamaWeights load(SafetensorsModel file, LlamaShape shape, Backend backend) {
        return load(file, shape, backend, null);
    }

    /**
     * Loads every weight, converting matrices and biases to {@code storage} (F32, BF16 or F16; null keeps the file's
     * dtype). On any error nothing stays allocated.
     */
    public static LlamaWeights load(SafetensorsModel file, LlamaShape shape, Backend backend, DType storage) {
        return load(file, shape, backend, storage, null);
    }

    /**
     * Loads every weight as {@link #load(SafetensorsModel, LlamaShape, Backend, DType)} does, and with
     * {@code quantize} not null quantizes each layer projection (q, k, v, o, gate, up, down) to 4 bits on the way:
     * uploaded dense (in {@code storage}, or as stored), quantized by the backend, the dense tensor closed at once.
     *
     * <p>A checkpoint already saved in 4 bits keeps each projection's stored quantization (code, block size, double
     * quantization) and its dense projections (modules transformers was told to skip); {@code quantize} then only
     * chooses the compute dtype, which is F32 when it is null (bitsandbytes' default; {@link #load(ModelFolder,
     * Backend, DType, QuantSpec)} takes it from config.json instead). On any error nothing stays allocated.
     */
    public static LlamaWeights load(SafetensorsModel file, LlamaShape shape, Backend backend, DType storage,
                                    QuantSpec quantize) {
        if (storage != null && storage != DType.F32 && storage != DType.BF16 && storage != DType.F16) {
            throw new IllegalArgumentException("weights can be kept as F32, BF16 or F16, not " + storage);
        }
        LlamaWeightLoader loader = new LlamaWeightLoader(file, shape, backend, storage, quantize);
        try {
            return loader.loadAll();
        } catch (RuntimeException | OutOfMemoryError e) {
            for (Tensor t : loader.loaded) t.close();
            throw e;
        }
    }

    /**
     * Loads a model folder's weights, quantizing on load with {@code quantize} (null: dense). For a folder saved in
     * 4 bits the compute dtype is {@code quantize}'s, or else config.json's {@code bnb_4bit_compute_dtype}.
     */
    public static LlamaWeights load(ModelFolder folder, Backend backend, DType storage, QuantSpec quantize)
            throws IOException {
        QuantizationConfig stored = folder.config().quantizationConfig();
        if (quantize == null && stored != null) quantize = stored.spec(QuantSpec.DEFAULT_BLOCK_SIZE);
        return load(folder.weights(), LlamaShape.of(folder.config()), backend, storage, quantize);
    }

    private LlamaWeights loadAll() {
        checkAllPresent();
        long d = shape.hiddenSize(), q = shape.queryDim(), kv = shape.kvDim(), ff = shape.intermediateSize();
        Tensor embed = matrix("model.embed_tokens.weight", shape.vocabSize(), d);
        List<LlamaWeights.Layer> layers = new ArrayList<>();
        for (int i = 0; i < shape.numLayers(); i++) {
            String p = "model.layers." + i + ".";
            layers.add(new LlamaWeights.Layer(
                    norm(p + "input_layernorm.weight", d),
                    projection(p + "self_attn.q_proj.weight", q, d),
                    projection(p + "self_attn.k_proj.weight", kv, d),
                    projection(p + "self_attn.v_proj.weight", kv, d),
                    projection(p + "self_attn.o_proj.weight", d, q),
                    shape.qkvBias() ? matrix(p + "self_attn.q_proj.bias", q) : null,
                    shape.qkvBias() ? matrix(p + "self_attn.k_proj.bias", kv) : null,
                    shape.qkvBias() ? matrix(p + "self_attn.v_proj.bias", kv) : null,
                    shape.outputBias() ? matrix(p + "self_attn.o_proj.bias", d) : null,
                    norm(p + "post_attention_layernorm.weight", d),
                    projection(p + "mlp.gate_proj.weight", ff, d),
                    projection(p + "mlp.up_proj.weight", ff, d),
                    projection(p + "mlp.down_proj.weight", d, ff),
                    shape.mlpBias() ? matrix(p + "mlp.gate_proj.bias", ff) : null,
                    shape.mlpBias() ? matrix(p + "mlp.up_proj.bias", ff) : null,
                    shape.mlpBias() ? matrix(p + "mlp.down_proj.bias", d) : null));
        }
        Tensor finalNorm = norm("model.norm.weight", d);
        Tensor lmHead = shape.tiedEmbeddings() ? null : matrix("lm_head.weight", shape.vocabSize(), d);
        return new LlamaWeights(shape, embed, layers, finalNorm, lmHead);
    }

    /** The names this shape needs, checked up front so a missing tensor is reported before gigabytes are copied. */
    private void checkAllPresent() {
        List<String> missing = new ArrayList<>();
        for (String name : requiredNames(shape)) if (!file.contains(name)) missing.add(name);
        if (missing.isEmpty()) return;
        String hint = "";
        if (!shape.tiedEmbeddings() && missing.equals(List.of("lm_head.weight"))) {
            hint = " If the model shares its embedding table with the output layer, config.json should say"
                    + " \"tie_word_embeddings\": true.";
        } else if (file.names().stream().noneMatch(n -> n.startsWith("model.layers."))) {
            hint = " The files hold no tensor named model.layers.*: they do not look like a Hugging Face"
                    + " Llama/Mistral/Qwen2 checkpoint (first names: "
                    + String.join(", ", file.names().subList(0, Math.min(4, file.names().size()))) + ").";
        }
        throw new IllegalArgumentException(missing.size() + " tensor(s) the model needs are missing from the weights in "
                + file.folder() + ": " + String.join(", ", missing.subList(0, Math.min(6, missing.size())))
                + (missing.size() > 6 ? ", ..." : "") + "." + hint);
    }

    /** Every tensor name a checkpoint of this shape must contain. */
    public static List<String> requiredNames(LlamaShape shape) {
        List<String> names = new ArrayList<>();
        names.add("model.embed_tokens.weight");
        for (int i = 0; i < shape.numLayers(); i++) {
            String p = "model.layers." + i + ".";
            names.add(p + "input_layernorm.weight");
            for (String m : List.of("q", "k", "v", "o")) names.add(p + "self_attn." + m + "_proj.weight");
            if (shape.qkvBias()) for (String m : List.of("q", "k", "v")) names.add(p + "self_attn." + m + "_proj.bias");
            if (shape.outputBias()) names.add(p + "self_attn.o_proj.bias");
            names.add(p + "post_attention_layernorm.weight");
            for (String m : List.of("gate", "up", "down")) {
                names.add(p + "mlp." + m + "_proj.weight");
                if (shape.mlpBias()) names.add(p + "mlp." + m + "_proj.bias");
            }
        }
        names.add("model.norm.weight");
        if (!shape.tiedEmbeddings()) names.add("lm_head.weight");
        return names;
    }

    /**
     * The shape config.json implies for every tensor of the checkpoint, in the order transformers' state dict lists
     * them (embeddings; per layer attention, MLP, then the two norms; final norm; lm_head unless tied).
     */
    public static Map<String, long[]> expectedShapes(LlamaShape shape) {
        long d = shape.hiddenSize(), q = shape.queryDim(), kv = shape.kvDim(), ff = shape.intermediateSize();
        Map<String, long[]> m = new LinkedHashMap<>();
        m.put("model.embed_tokens.weight", new long[] {shape.vocabSize(), d});
        for (int i = 0; i < shape.numLayers(); i++) {
            String p = "model.layers." + i + ".";
            long[][] out = {{q, d}, {kv, d}, {kv, d}, {d, q}, {ff, d}, {ff, d}, {d, ff}};
            boolean[] bias = {shape.qkvBias(), shape.qkvBias(), shape.qkvBias(), shape.outputBias(), shape.mlpBias(),
                    shape.mlpBias(), shape.mlpBias()};
            for (int j = 0; j < BnbCheckpointFormat.LAYER_PROJECTIONS.size(); j++) {
                String module = p + BnbCheckpointFormat.LAYER_PROJECTIONS.get(j);
                m.put(module + ".weight", out[j]);
                if (bias[j]) m.put(module + ".bias", new long[] {out[j][0]});
            }
            m.put(p + "input_layernorm.weight", new long[] {d});
            m.put(p + "post_attention_layernorm.weight", new long[] {d});
        }
        m.put("model.norm.weight", new long[] {d});
        if (!shape.tiedEmbeddings()) m.put("lm_head.weight", new long[] {shape.vocabSize(), d});
        return m;
    }

    /** A layer projection: 4-bit as stored, quantized on load, or dense. */
    private Tensor projection(String name, long... expected) {
        if (QuantizedCheckpointReader.isQuantized(file, name)) {
            DType compute = quantize != null ? quantize.computeType() : DType.F32;
            QuantizedTensor q = QuantizedCheckpointReader.read(file, name, expected, compute).upload(backend);
            loaded.add(q);
            return q;
        }
        if (quantize == null || preQuantized) return matrix(name, expected);
        Tensor dense = matrix(name, expected);
        QuantizedTensor q;
        try {
            q = backend.quantize4bit(dense, quantize);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("cannot quantize " + name + " of " + file.fileOf(name) + ": "
                    + e.getMessage(), e);
        } finally {
            loaded.remove(dense);
            dense.close();
        }
        loaded.add(q);
        return q;
    }

    private Tensor matrix(String name, long... expected) {
        TensorInfo info = check(name, expected);
        DType dst = storage != null ? storage : info.dtype() == DType.F64 ? DType.F32 : info.dtype();
        return upload(name, info, dst, expected);
    }

    private Tensor norm(String name, long... expected) {
        return upload(name, check(name, expected), DType.F32, expected);
    }

    private Tensor upload(String name, TensorInfo info, DType dst, long[] shape) {
        Tensor t = backend.upload(file.data(name), info.dtype(), dst, shape);
        loaded.add(t);
        // Every backend copies what it uploads: the file's pages need not stay in the process, so loading holds
        // about one tensor of the checkpoint on the host rather than all of it.
        file.release(name);
        return t;
    }

    private TensorInfo check(String name, long[] expected) {
        TensorInfo info = file.info(name);
        if (QuantizedCheckpointReader.isQuantized(file, name)) {
            // Only layer projections reach the 4-bit reader; anything else stored in 4 bits ends here.
            throw new IllegalArgumentException("tensor " + name + " in " + file.fileOf(name) + " is stored in 4 bits;"
                    + " lora4j quantizes only the layer projections and keeps embeddings and lm_head in 16 bits,"
                    + " as the QLoRA recipe and transformers' default do. Quantize the 16-bit model with lora4j"
                    + " quantize (or load it with --load-in-4bit) instead");
        }
        if (!Arrays.equals(info.shape(), expected)) {
            throw new IllegalArgumentException("tensor " + name + " in " + file.fileOf(name) + " has shape "
                    + Arrays.toString(info.shape()) + ", but config.json (" + shape + ") needs "
                    + Arrays.toString(expected) + "; the weights and config.json belong to different models");
        }
        DType t = info.dtype();
        if (t != DType.F32 && t != DType.BF16 && t != DType.F16 && t != DType.F64) {
            throw new IllegalArgumentException("tensor " + name + " in " + file.fileOf(name) + " is stored as " + t
                    + "; lora4j loads F32, BF16, F16 and F64 weights" + (t == DType.U8 || t == DType.I8
                    ? " (of quantized checkpoints, only bitsandbytes 4-bit ones with their quant_state tensors)" : ""));
        }
        return info;
    }
}
