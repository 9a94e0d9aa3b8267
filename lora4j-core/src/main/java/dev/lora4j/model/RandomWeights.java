package dev.lora4j.model;

import dev.lora4j.backend.Backend;
import dev.lora4j.io.ModelConfig;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.function.Consumer;

/**
 * Randomly initialised weights generated straight onto a backend, without a model folder: the values
 * {@link RandomModelWriter} writes for the same configuration and seed in BF16 (N(0, 0.02²) projections and
 * embeddings, norm weights 1, biases 0), so a benchmark of a 7B shape starts in seconds and the bytes are the same
 * as those of {@code init-model --dtype bf16 --seed S}.
 *
 * <p>Each tensor is generated on the host by all cores while the one before it is uploaded, so the host holds at
 * most two tensors at once. With a {@link QuantSpec}, each decoder projection is quantized on the backend right
 * after its upload and the dense copy freed, so a model whose 16-bit weights would not fit on the device can still
 * be held in 4 bits (embeddings, lm_head and biases stay in {@code storage}, as bitsandbytes' QLoRA recipe keeps them).
 */
public final class RandomWeights {

    private RandomWeights() {}

    /**
     * @param storage      the dtype projections, embeddings and biases are kept in: F32, BF16 or F16 (the values are
     *                     BF16 values, widened exactly to F32); norm weights are always F32
     * @param quantization null for dense weights; otherwise the 4-bit kind of the decoder projections
     * @param progress     may be null; gets a line per decoder layer
     */
    public static LlamaWeights generate(Backend backend, ModelConfig config, DType storage, QuantSpec quantization,
                                        long seed, Consumer<String> progress) {
        if (storage != DType.F32 && storage != DType.BF16 && storage != DType.F16) {
            throw new IllegalArgumentException("random weights can be kept as F32, BF16 or F16, not " + storage);
        }
        LlamaShape shape = LlamaShape.of(config);
        List<RandomModelWriter.Spec> specs = RandomModelWriter.specs(config);
        long largest = 0;
        for (RandomModelWriter.Spec s : specs) largest = Math.max(largest, s.numel());
        Map<String, Tensor> tensors = new HashMap<>();
        ExecutorService generator = Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, "lora4j-random-weights");
            t.setDaemon(true);
            return t;
        });
        try (Arena arena = Arena.ofShared()) {
            // Two host buffers take turns: tensor i+1 is generated into one while tensor i is uploaded from the other.
            // BF16 values, or F32 for the norm weights (hidden-size vectors, never the largest tensor).
            long bufferBytes = Math.max(DType.BF16.bytesFor(largest), DType.F32.bytesFor(shape.hiddenSize()));
            MemorySegment[] buffers = {arena.allocate(bufferBytes, 64), arena.allocate(bufferBytes, 64)};
            CompletableFuture<DType> next = fill(generator, specs.getFirst(), 0, buffers[0], seed);
            for (int i = 0; i < specs.size(); i++) {
                RandomModelWriter.Spec spec = specs.get(i);
                DType hostType = join(next);
                if (i + 1 < specs.size()) next = fill(generator, specs.get(i + 1), i + 1, buffers[(i + 1) % 2], seed);
                MemorySegment host = buffers[i % 2].asSlice(0, hostType.bytesFor(spec.numel()));
                boolean norm = spec.name().endsWith("norm.weight");
                Tensor t = backend.upload(host, hostType, norm ? DType.F32 : storage, spec.shape());
                if (quantization != null && isLayerProjection(spec.name())) {
                    try (Tensor dense = t) {
                        t = backend.quantize4bit(dense, quantization);
                    }
                }
                tensors.put(spec.name(), t);
                if (progress != null && spec.name().endsWith("post_attention_layernorm.weight")) {
                    progress.accept("layer " + spec.name().split("\\.")[2] + " of " + shape.numLayers() + " on " + backend.name());
                }
            }
            // The uploads read from host memory the arena frees next: wait until they are done.
            backend.synchronize();
            return assemble(shape, tensors);
        } catch (RuntimeException | Error e) {
            for (Tensor t : tensors.values()) t.close();
            throw e;
        } finally {
            generator.shutdownNow();
        }
    }

    /** Generates a spec's values into {@code host} on the generator thread; returns the dtype it wrote. */
    private static CompletableFuture<DType> fill(ExecutorService generator, RandomModelWriter.Spec spec, long index,
                                                 MemorySegment host, long seed) {
        return CompletableFuture.supplyAsync(() -> {
            long n = spec.numel();
            switch (spec.init()) {
                case NORMAL -> {
                    NormalFiller.fill(host, DType.BF16, n, RandomModelWriter.INITIALIZER_RANGE, seed, index);
                    return DType.BF16;
                }
                case ONES -> {
                    NormalFiller.constant(host, DType.F32, n, 1f);
                    return DType.F32;
                }
                default -> {
                    host.asSlice(0, DType.BF16.bytesFor(n)).fill((byte) 0);
                    return DType.BF16;
                }
            }
        }, generator);
    }

    private static DType join(CompletableFuture<DType> f) {
        try {
            return f.join();
        } catch (CompletionException e) {
            if (e.getCause() instanceof RuntimeException r) throw r;
            if (e.getCause() instanceof Error err) throw err;
            throw e;
        }
    }

    /** The weight of one of a decoder layer's seven projections (what bitsandbytes quantizes). */
    private static boolean isLayerProjection(String name) {
        if (!name.startsWith("model.layers.") || !name.endsWith(".weight")) return false;
        for (Projection p : Projection.values()) if (name.endsWith("." + p.suffix() + ".weight")) return true;
        return false;
    }

    private static LlamaWeights assemble(LlamaShape s, Map<String, Tensor> t) {
        List<LlamaWeights.Layer> layers = new ArrayList<>();
        for (int i = 0; i < s.numLayers(); i++) {
            String p = "model.layers." + i + ".";
            layers.add(new LlamaWeights.Layer(
                    t.get(p + "input_layernorm.weight"),
                    t.get(p + "self_attn.q_proj.weight"), t.get(p + "self_attn.k_proj.weight"),
                    t.get(p + "self_attn.v_proj.weight"), t.get(p + "self_attn.o_proj.weight"),
                    t.get(p + "self_attn.q_proj.bias"), t.get(p + "self_attn.k_proj.bias"),
                    t.get(p + "self_attn.v_proj.bias"), t.get(p + "self_attn.o_proj.bias"),
                    t.get(p + "post_attention_layernorm.weight"),
                    t.get(p + "mlp.gate_proj.weight"), t.get(p + "mlp.up_proj.weight"), t.get(p + "mlp.down_proj.weight"),
                    t.get(p + "mlp.gate_proj.bias"), t.get(p + "mlp.up_proj.bias"), t.get(p + "mlp.down_proj.bias")));
        }
        return new LlamaWeights(s, t.get("model.embed_tokens.weight"), layers, t.get("model.norm.weight"),
                s.tiedEmbeddings() ? null : t.get("lm_head.weight"));
    }
}
