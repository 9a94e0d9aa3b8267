package dev.lora4j.model;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import dev.lora4j.io.GenerationConfig;
import dev.lora4j.io.ModelConfig;
import dev.lora4j.io.ModelFolder;
import dev.lora4j.io.RopeScaling;
import dev.lora4j.io.SafetensorsModel;
import dev.lora4j.io.SafetensorsWriter;
import dev.lora4j.tensor.DType;
import dev.lora4j.tokenizer.BpeTrainer;
import dev.lora4j.tokenizer.Tokenizer;

import java.io.IOException;
import java.io.InterruptedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.function.Consumer;

/**
 * Writes a randomly initialised model folder in Hugging Face's format, as transformers would initialise it:
 * projections and embeddings drawn from N(0, 0.02²) ({@code initializer_range}), norm weights 1, biases 0.
 * For testing and benchmarking without downloading weights: {@code config.json}, the weights as safetensors,
 * {@code generation_config.json}, and a byte-level BPE tokenizer trained by {@link BpeTrainer} on lora4j's
 * built-in corpus.
 *
 * <p>The tokenizer is trained to the configuration's vocabulary size where it can be: {@code tiny} gets exactly
 * its 2048 ids. The built-in corpus runs out of merges at about 9,600 ids, so bigger vocabularies (the
 * {@code 100m} preset and the real-model shapes, 32,000 to 151,936) keep their size in config.json, for true
 * parameter counts and memory, with a smaller tokenizer: the ids above the tokenizer's vocabulary are never
 * produced by encoding, and decode as nothing if the model emits them. BOS and EOS are then the tokenizer's ids,
 * not the real model's.
 *
 * <p>Weights are generated a shard at a time into off-heap memory and written while the next shard is generated,
 * so a 7B model never needs more than two shards' worth of memory (4 GiB with the default shard size).
 */
public final class RandomModelWriter {
    /** Shards of at most this many bytes: bounds the memory the writer holds at once. */
    public static final long DEFAULT_MAX_SHARD_BYTES = 2L << 30;
    public static final double INITIALIZER_RANGE = 0.02;

    /** The named shapes of {@code init-model --preset}. */
    public static final List<String> PRESETS = List.of("tiny", "100m", "llama2-7b", "mistral-7b", "llama3-8b",
            "llama3.1-8b", "qwen2-0.5b");

    /** How to write: the weights' dtype, the seed, and the shard size limit. */
    public record Options(DType dtype, long seed, long maxShardBytes) {
        public Options {
            if (dtype != DType.F32 && dtype != DType.BF16 && dtype != DType.F16) {
                throw new IllegalArgumentException("random weights can be written as F32, BF16 or F16, not " + dtype);
            }
            if (maxShardBytes <= 0) throw new IllegalArgumentException("shard size must be positive");
        }

        public static Options of(DType dtype, long seed) { return new Options(dtype, seed, DEFAULT_MAX_SHARD_BYTES); }
    }

    /** What was written. */
    public record Written(Path folder, List<Path> weightFiles, long parameters, long bytes) {}

    private RandomModelWriter() {}

    /**
     * The configuration of a preset. The real-model presets have those models' exact shapes (Llama 2 7B,
     * Mistral 7B v0.1, Llama 3 8B, Llama 3.1 8B, Qwen2 0.5B), so parameter counts and memory match them.
     */
    public static ModelConfig preset(String name) {
        return switch (name.toLowerCase(Locale.ROOT)) {
            case "tiny" -> config("llama", 2048, 256, 688, 4, 8, 4, 1e-5, 10000, null, 2048, 0, false, 1, 2);
            case "100m" -> config("llama", 16384, 768, 2048, 12, 12, 4, 1e-5, 10000, null, 2048, 0, false, 1, 2);
            case "llama2-7b" -> config("llama", 32000, 4096, 11008, 32, 32, 32, 1e-5, 10000, null, 4096, 0, false, 1, 2);
            case "mistral-7b" -> config("mistral", 32000, 4096, 14336, 32, 32, 8, 1e-5, 10000, null, 32768, 4096, false, 1, 2);
            case "llama3-8b" -> config("llama", 128256, 4096, 14336, 32, 32, 8, 1e-5, 500000, null, 8192, 0, false,
                    128000, 128001);
            case "llama3.1-8b" -> config("llama", 128256, 4096, 14336, 32, 32, 8, 1e-5, 500000,
                    RopeScaling.llama3(8, 1, 4, 8192), 131072, 0, false, 128000, 128001);
            case "qwen2-0.5b" -> config("qwen2", 151936, 896, 4864, 24, 14, 2, 1e-6, 1000000, null, 32768, 0, true,
                    null, 151643);
            default -> throw new IllegalArgumentException("unknown preset '" + name + "': choose one of " + String.join(", ", PRESETS));
        };
    }

    private static ModelConfig config(String type, int vocab, int hidden, int mlp, int layers, int heads, int kvHeads,
                                      double eps, double theta, RopeScaling scaling, int maxPositions, int window,
                                      boolean tied, Integer bos, Integer eos) {
        String arch = switch (type) {
            case "llama" -> "LlamaForCausalLM";
            case "mistral" -> "MistralForCausalLM";
            case "qwen2" -> "Qwen2ForCausalLM";
            default -> throw new IllegalArgumentException(type);
        };
        return new ModelConfig(List.of(arch), type, vocab, hidden, mlp, layers, heads, kvHeads, hidden / heads, eps,
                theta, scaling, maxPositions, window, 0, type.equals("qwen2"), false, tied, bos,
                eos == null ? List.of() : List.of(eos), null, "bfloat16", "silu");
    }

    /** The same configuration with another vocabulary size and special-token ids (to agree with a tokenizer). */
    public static ModelConfig withVocabulary(ModelConfig c, int vocabSize, Integer bos, List<Integer> eos) {
        return new ModelConfig(c.architectures(), c.modelType(), vocabSize, c.hiddenSize(), c.intermediateSize(),
                c.numHiddenLayers(), c.numAttentionHeads(), c.numKeyValueHeads(), c.headDim(), c.rmsNormEps(),
                c.ropeTheta(), c.ropeScaling(), c.maxPositionEmbeddings(), c.slidingWindow(), c.maxWindowLayers(),
                c.attentionBias(), c.mlpBias(), c.tieWordEmbeddings(), bos, eos, c.padTokenId(), c.dtype(),
                c.hiddenAct());
    }

    private static ModelConfig withDtype(ModelConfig c, DType dtype) {
        String torchName = switch (dtype) {
            case F32 -> "float32";
            case BF16 -> "bfloat16";
            case F16 -> "float16";
            default -> throw new IllegalArgumentException(dtype.toString());
        };
        return new ModelConfig(c.architectures(), c.modelType(), c.vocabSize(), c.hiddenSize(), c.intermediateSize(),
                c.numHiddenLayers(), c.numAttentionHeads(), c.numKeyValueHeads(), c.headDim(), c.rmsNormEps(),
                c.ropeTheta(), c.ropeScaling(), c.maxPositionEmbeddings(), c.slidingWindow(), c.maxWindowLayers(),
                c.attentionBias(), c.mlpBias(), c.tieWordEmbeddings(), c.bosTokenId(), c.eosTokenIds(),
                c.padTokenId(), torchName, c.hiddenAct());
    }

    /** One tensor to write: its name, shape and how it starts. */
    record Spec(String name, long[] shape, Init init) {
        long numel() {
            long n = 1;
            for (long d : shape) n = Math.multiplyExact(n, d);
            return n;
        }
    }

    enum Init { NORMAL, ONES, ZEROS }

    /**
     * The tensors of this configuration, in the order transformers' state_dict lists them; a tensor's index in this
     * list seeds its values ({@link RandomWeights} generates the same ones).
     */
    static List<Spec> specs(ModelConfig c) {
        LlamaShape s = LlamaShape.of(c);
        long d = s.hiddenSize(), q = s.queryDim(), kv = s.kvDim(), ff = s.intermediateSize();
        List<Spec> specs = new ArrayList<>();
        specs.add(new Spec("model.embed_tokens.weight", new long[]{s.vocabSize(), d}, Init.NORMAL));
        for (int i = 0; i < s.numLayers(); i++) {
            String p = "model.layers." + i + ".";
            specs.add(new Spec(p + "self_attn.q_proj.weight", new long[]{q, d}, Init.NORMAL));
            if (s.qkvBias()) specs.add(new Spec(p + "self_attn.q_proj.bias", new long[]{q}, Init.ZEROS));
            specs.add(new Spec(p + "self_attn.k_proj.weight", new long[]{kv, d}, Init.NORMAL));
            if (s.qkvBias()) specs.add(new Spec(p + "self_attn.k_proj.bias", new long[]{kv}, Init.ZEROS));
            specs.add(new Spec(p + "self_attn.v_proj.weight", new long[]{kv, d}, Init.NORMAL));
            if (s.qkvBias()) specs.add(new Spec(p + "self_attn.v_proj.bias", new long[]{kv}, Init.ZEROS));
            specs.add(new Spec(p + "self_attn.o_proj.weight", new long[]{d, q}, Init.NORMAL));
            if (s.outputBias()) specs.add(new Spec(p + "self_attn.o_proj.bias", new long[]{d}, Init.ZEROS));
            specs.add(new Spec(p + "mlp.gate_proj.weight", new long[]{ff, d}, Init.NORMAL));
            if (s.mlpBias()) specs.add(new Spec(p + "mlp.gate_proj.bias", new long[]{ff}, Init.ZEROS));
            specs.add(new Spec(p + "mlp.up_proj.weight", new long[]{ff, d}, Init.NORMAL));
            if (s.mlpBias()) specs.add(new Spec(p + "mlp.up_proj.bias", new long[]{ff}, Init.ZEROS));
            specs.add(new Spec(p + "mlp.down_proj.weight", new long[]{d, ff}, Init.NORMAL));
            if (s.mlpBias()) specs.add(new Spec(p + "mlp.down_proj.bias", new long[]{d}, Init.ZEROS));
            specs.add(new Spec(p + "input_layernorm.weight", new long[]{d}, Init.ONES));
            specs.add(new Spec(p + "post_attention_layernorm.weight", new long[]{d}, Init.ONES));
        }
        specs.add(new Spec("model.norm.weight", new long[]{d}, Init.ONES));
        if (!s.tiedEmbeddings()) specs.add(new Spec("lm_head.weight", new long[]{s.vocabSize(), d}, Init.NORMAL));
        return specs;
    }

    /**
     * Writes a complete model folder: a tokenizer (trained as the class comment says), then config.json,
     * generation_config.json and the weights, with BOS, EOS and the chat template's end-of-turn token taken from the
     * tokenizer. {@code progress} (may be null) gets a line per step.
     */
    public static Written write(Path folder, ModelConfig config, Options options, Consumer<String> progress)
            throws IOException {
        if (config.vocabSize() < BpeTrainer.MIN_VOCAB) {
            throw new IllegalArgumentException("vocab_size " + config.vocabSize() + " is too small for a tokenizer: at least "
                    + BpeTrainer.MIN_VOCAB + " (256 bytes, the special tokens and a merge)");
        }
        BpeTrainer.TrainedTokenizer trained = BpeTrainer.trainDefault(Math.min(config.vocabSize(), BpeTrainer.MAX_VOCAB));
        Tokenizer tokenizer = trained.tokenizer();
        trained.writeTo(folder);
        if (progress != null) {
            progress.accept("wrote tokenizer.json (" + tokenizer.vocabSize() + " ids"
                    + (tokenizer.vocabSize() < config.vocabSize() ? ", fewer than the model's " + config.vocabSize() : "") + ")");
        }
        Integer bos = tokenizer.bosTokenId().isPresent() ? tokenizer.bosTokenId().getAsInt() : null;
        List<Integer> eos = new ArrayList<>();
        tokenizer.eosTokenId().ifPresent(eos::add);
        tokenizer.tokenId(BpeTrainer.EOT).ifPresent(id -> { if (!eos.contains(id)) eos.add(id); });
        return writeWeightsAndConfig(folder, withVocabulary(config, config.vocabSize(), bos, eos), options, progress);
    }

    /**
     * Writes config.json, generation_config.json and the weights of {@code config} into {@code folder} (created if
     * needed; existing weight files there are replaced), without a tokenizer. {@code progress} gets a line per shard,
     * from the thread that writes the shards.
     */
    public static Written writeWeightsAndConfig(Path folder, ModelConfig config, Options options, Consumer<String> progress)
            throws IOException {
        ModelConfig c = withDtype(config, options.dtype());
        Files.createDirectories(folder);
        List<Spec> specs = specs(c);
        List<List<Spec>> shards = split(specs, options);
        removeOldWeights(folder);
        List<Path> files = new ArrayList<>();
        Map<String, String> weightMap = new LinkedHashMap<>();
        long parameters = 0, bytes = 0;
        int tensorIndex = 0;
        // Two buffers, each the size of the largest shard, take turns: one shard is generated while the one before
        // it is written, so the disk and the cores work at the same time. Pages of a buffer are touched once.
        long largest = 0;
        for (List<Spec> shard : shards) largest = Math.max(largest, shardBytes(shard, options.dtype()));
        ExecutorService diskWriter = Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, "lora4j-shard-writer");
            t.setDaemon(true);
            return t;
        });
        try (Arena arena = Arena.ofShared()) {
            MemorySegment[] buffers = {arena.allocate(Math.max(1, largest), 64),
                    shards.size() > 1 ? arena.allocate(Math.max(1, largest), 64) : null};
            Future<?> previousWrite = null;
            for (int s = 0; s < shards.size(); s++) {
                String fileName = shards.size() == 1 ? SafetensorsModel.SINGLE_FILE
                        : String.format(Locale.ROOT, "model-%05d-of-%05d.safetensors", s + 1, shards.size());
                MemorySegment buffer = buffers[s % 2];
                SafetensorsWriter writer = new SafetensorsWriter().metadata("format", "pt");
                long offset = 0;
                for (Spec spec : shards.get(s)) {
                    long n = spec.numel();
                    MemorySegment seg = buffer.asSlice(offset, options.dtype().bytesFor(n));
                    switch (spec.init()) {
                        case NORMAL -> NormalFiller.fill(seg, options.dtype(), n, INITIALIZER_RANGE, options.seed(), tensorIndex);
                        case ONES -> NormalFiller.constant(seg, options.dtype(), n, 1f);
                        case ZEROS -> seg.fill((byte) 0);
                    }
                    writer.add(spec.name(), options.dtype(), spec.shape(), seg);
                    weightMap.put(spec.name(), fileName);
                    parameters += n;
                    offset += seg.byteSize();
                    tensorIndex++;
                }
                // The other buffer is free again once the previous shard is on disk.
                await(previousWrite);
                Path file = folder.resolve(fileName);
                long shardSize = offset;
                int tensors = shards.get(s).size();
                previousWrite = diskWriter.submit(() -> {
                    writer.writeTo(file);
                    if (progress != null) {
                        progress.accept(String.format(Locale.ROOT, "wrote %s (%.1f MB, %d tensors)", fileName,
                                shardSize / 1e6, tensors));
                    }
                    return null;
                });
                files.add(file);
                bytes += offset;
            }
            await(previousWrite);
        } finally {
            diskWriter.shutdownNow();
        }
        ObjectMapper json = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
        if (shards.size() > 1) {
            Map<String, Object> index = new LinkedHashMap<>();
            index.put("metadata", Map.of("total_size", bytes));
            index.put("weight_map", new TreeMap<>(weightMap));
            Files.writeString(folder.resolve(SafetensorsModel.INDEX_FILE), json.writeValueAsString(index) + "\n");
        }
        Files.writeString(folder.resolve(ModelFolder.CONFIG_FILE), c.toJson());
        Map<String, Object> generation = new LinkedHashMap<>();
        generation.put("bos_token_id", c.bosTokenId());
        List<Integer> eos = c.eosTokenIds();
        generation.put("eos_token_id", eos.isEmpty() ? null : eos.size() == 1 ? eos.getFirst() : eos);
        if (c.padTokenId() != null) generation.put("pad_token_id", c.padTokenId());
        Files.writeString(folder.resolve(GenerationConfig.FILE_NAME), json.writeValueAsString(generation) + "\n");
        return new Written(folder, files, parameters, bytes);
    }

    private static void await(Future<?> write) throws IOException {
        if (write == null) return;
        try {
            write.get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new InterruptedIOException("interrupted while writing the weights");
        } catch (ExecutionException e) {
            if (e.getCause() instanceof IOException io) throw io;
            if (e.getCause() instanceof RuntimeException re) throw re;
            throw new IOException("writing the weights failed: " + e.getCause(), e.getCause());
        }
    }

    private static long shardBytes(List<Spec> shard, DType dtype) {
        long total = 0;
        for (Spec s : shard) total += dtype.bytesFor(s.numel());
        return total;
    }

    private static List<List<Spec>> split(List<Spec> specs, Options o) {
        List<List<Spec>> shards = new ArrayList<>();
        List<Spec> current = new ArrayList<>();
        long size = 0;
        for (Spec s : specs) {
            long b = o.dtype().bytesFor(s.numel());
            if (!current.isEmpty() && size + b > o.maxShardBytes()) {
                shards.add(current);
                current = new ArrayList<>();
                size = 0;
            }
            current.add(s);
            size += b;
        }
        if (!current.isEmpty()) shards.add(current);
        return shards;
    }

    /** Weights of an earlier write would shadow or mix with the new ones. */
    private static void removeOldWeights(Path folder) throws IOException {
        try (var files = Files.list(folder)) {
            for (Path p : files.toList()) {
                String n = p.getFileName().toString();
                if (n.endsWith(".safetensors") || n.equals(SafetensorsModel.INDEX_FILE)) Files.delete(p);
            }
        }
    }
}
