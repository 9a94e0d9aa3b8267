package dev.lora4j.quant;

import dev.lora4j.backend.Backend;
import dev.lora4j.io.AtomicFiles;
import dev.lora4j.io.ModelConfig;
import dev.lora4j.io.ModelFolder;
import dev.lora4j.io.SafetensorsModel;
import dev.lora4j.io.SafetensorsStreamWriter;
import dev.lora4j.io.SafetensorsStreamWriter.Entry;
import dev.lora4j.io.TensorInfo;
import dev.lora4j.model.LlamaShape;
import dev.lora4j.model.LlamaWeightLoader;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.file.DirectoryStream;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import java.util.concurrent.ThreadLocalRandom;
import java.util.function.Consumer;
import java.util.stream.Stream;

/**
 * Writes a 4-bit copy of a dense model folder in the form transformers' {@code save_pretrained} gives a model loaded
 * with {@code BitsAndBytesConfig(load_in_4bit=True)} (docs/qlora-format.md): every layer projection as packed codes
 * plus its quant state, everything else as the source stores it, {@code config.json} with its
 * {@code quantization_config}, shards and index as transformers splits them, and the tokenizer and generation files.
 *
 * <p>It streams: one projection at a time is uploaded to the backend, quantized, its dense form closed, and its parts
 * written straight to the shard; dense tensors go from the memory-mapped source to the file. The folder appears
 * whole or not at all: it is written beside the target and moved into place at the end.
 */
public final class QuantizedCheckpointWriter {

    /** transformers 4's default {@code max_shard_size} ("5GB"). */
    public static final long DEFAULT_MAX_SHARD_BYTES = 5_000_000_000L;

    private static final ValueLayout.OfFloat F32_LE = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    /** Python's repr of a float32 widened to a double takes at most 24 characters ("-0.000" and 17 digits, ...). */
    private static final int MAX_OFFSET_CHARS = 32;
    private static final Map<String, String> METADATA = Map.of("format", "pt");

    /**
     * @param spec          how to quantize (the compute dtype goes into config.json)
     * @param maxShardBytes the largest shard, as transformers' {@code max_shard_size}
     * @param overwrite     replace a non-empty target folder
     * @param progress      receives a line per shard and per few layers; may be null
     */
    public record Options(QuantSpec spec, long maxShardBytes, boolean overwrite, Consumer<String> progress) {
        public Options {
            Objects.requireNonNull(spec, "spec");
            if (maxShardBytes <= 0) throw new IllegalArgumentException("max shard size must be positive, got " + maxShardBytes);
            if (progress == null) progress = line -> { };
        }

        public static Options of(QuantSpec spec) {
            return new Options(spec, DEFAULT_MAX_SHARD_BYTES, false, null);
        }
    }

    /** What was written: the folder, its weight files, how many weights are 4-bit, and their bytes before and after. */
    public record Result(Path folder, List<Path> weightFiles, int quantizedWeights, long sourceBytes, long bytes) {}

    /** One source tensor and what it becomes: a dense copy, or the parts of a 4-bit weight. */
    private record Group(String name, TensorInfo source, List<Entry> entries, boolean quantized) {
        long maxBytes() {
            long b = 0;
            for (Entry e : entries) b += e.maxBytes();
            return b;
        }
    }

    private final ModelFolder source;
    private final SafetensorsModel file;
    private final Backend backend;
    private final Options options;

    private QuantizedCheckpointWriter(ModelFolder source, SafetensorsModel file, Backend backend, Options options) {
        this.source = source;
        this.file = file;
        this.backend = backend;
        this.options = options;
    }

    /** Writes the 4-bit copy of {@code source} to {@code target} (a new or empty folder, or any with overwrite). */
    public static Result write(ModelFolder source, Path target, Backend backend, Options options) throws IOException {
        ModelConfig config = source.config();
        if (config.isQuantized()) {
            throw new IllegalArgumentException(source.path() + " is already saved in 4 bits (" + config.quantizationConfig()
                    + "); quantize its 16-bit original instead");
        }
        Path out = target.toAbsolutePath().normalize();
        if (out.equals(source.path().toAbsolutePath().normalize())) {
            throw new IllegalArgumentException("the 4-bit copy cannot replace its source " + source.path()
                    + ": choose another output folder");
        }
        if (Files.exists(out) && !Files.isDirectory(out)) {
            throw new FileAlreadyExistsException(out.toString(), null, "a file is in the way of the output folder");
        }
        if (!options.overwrite() && isNonEmptyFolder(out)) {
            throw new FileAlreadyExistsException(out.toString(), null, "the output folder is not empty; choose another"
                    + " or overwrite it (--force)");
        }
        QuantizedCheckpointWriter w = new QuantizedCheckpointWriter(source, source.weights(), backend, options);
        Files.createDirectories(out.getParent());
        Path partial = out.resolveSibling("." + out.getFileName() + ".partial-" + Long.toHexString(ThreadLocalRandom.current().nextLong()));
        Files.createDirectory(partial);
        try {
            Result r = w.writeInto(partial, config);
            replace(out, partial);
            List<Path> files = r.weightFiles().stream().map(p -> out.resolve(p.getFileName())).toList();
            return new Result(out, files, r.quantizedWeights(), r.sourceBytes(), r.bytes());
        } catch (IOException | RuntimeException | Error e) {
            deleteTree(partial);
            throw e;
        }
    }

    private Result writeInto(Path folder, ModelConfig config) throws IOException {
        LlamaShape shape = LlamaShape.of(config);
        List<Group> groups = plan(shape);
        List<List<Group>> shards = split(groups, options.maxShardBytes());
        List<Path> files = new ArrayList<>();
        Map<String, String> weightMap = new TreeMap<>();
        long bytes = 0, sourceBytes = 0;
        long[] dataBytes = {0};
        int quantized = 0;
        for (int s = 0; s < shards.size(); s++) {
            String name = shards.size() == 1 ? SafetensorsModel.SINGLE_FILE
                    : String.format("model-%05d-of-%05d.safetensors", s + 1, shards.size());
            List<Group> shard = shards.get(s);
            List<Entry> entries = new ArrayList<>();
            for (Group g : shard) entries.addAll(g.entries());
            Path shardFile = folder.resolve(name);
            SafetensorsStreamWriter.write(shardFile, entries, METADATA, sink -> {
                for (Group g : shard) {
                    writeGroup(g, (tensor, data) -> {
                        dataBytes[0] += data.byteSize();
                        sink.put(tensor, data);
                    });
                }
            });
            files.add(shardFile);
            for (Group g : shard) {
                for (Entry e : g.entries()) {
                    weightMap.put(e.name(), name);
                    // The packed weight has its dense original's name; the other parts are new.
                    if (file.contains(e.name())) sourceBytes += file.info(e.name()).byteLength();
                }
                if (g.quantized()) quantized++;
            }
            bytes += Files.size(shardFile);
            options.progress().accept("wrote " + name + " (" + entries.size() + " tensors, " + Files.size(shardFile) + " bytes)");
        }
        if (shards.size() > 1) {
            Map<String, Object> index = new LinkedHashMap<>();
            index.put("metadata", Map.of("total_size", dataBytes[0]));
            index.put("weight_map", weightMap);
            ObjectMapper json = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
            AtomicFiles.writeString(folder.resolve(SafetensorsModel.INDEX_FILE), json.writeValueAsString(index) + "\n");
        }
        AtomicFiles.writeString(folder.resolve(ModelFolder.CONFIG_FILE),
                config.withQuantization(QuantizationConfig.of(options.spec())).toJson());
        copyCompanionFiles(source.path(), folder);
        return new Result(folder, files, quantized, sourceBytes, bytes);
    }

    /**
     * The tensors in transformers' state-dict order, each layer projection as its 4-bit parts
     * ({@code Linear4bit._save_to_state_dict}: weight, bias, then the quant state's tensors and JSON).
     */
    private List<Group> plan(LlamaShape shape) {
        List<String> missing = new ArrayList<>();
        for (String name : LlamaWeightLoader.requiredNames(shape)) if (!file.contains(name)) missing.add(name);
        if (!missing.isEmpty()) {
            throw new IllegalArgumentException(missing.size() + " tensor(s) the model needs are missing from the weights in "
                    + file.folder() + ": " + String.join(", ", missing.subList(0, Math.min(6, missing.size()))));
        }
        List<String> projections = new ArrayList<>();
        for (int i = 0; i < shape.numLayers(); i++) {
            for (String p : BnbCheckpointFormat.LAYER_PROJECTIONS) projections.add("model.layers." + i + "." + p + ".weight");
        }
        QuantSpec spec = options.spec();
        Map<String, long[]> expected = LlamaWeightLoader.expectedShapes(shape);
        List<Group> groups = new ArrayList<>();
        List<String> inGroups = new ArrayList<>();
        for (Map.Entry<String, long[]> e : expected.entrySet()) {
            String name = e.getKey();
            TensorInfo info = checked(name, e.getValue());
            if (inGroups.contains(name)) continue;
            if (!projections.contains(name)) {
                groups.add(new Group(name, info, List.of(Entry.of(name, info.dtype(), info.shape())), false));
                continue;
            }
            long n = info.numel();
            // The state's offset is known only after quantizing: its JSON is declared with room for the longest.
            BnbQuantState widest = new BnbQuantState(spec.type(), spec.blockSize(), info.dtype(), info.shape(),
                    spec.doubleQuant(), 0f);
            List<Entry> parts = new ArrayList<>();
            parts.add(Entry.of(name, DType.U8, BnbCheckpointFormat.packedShape(n)));
            // Linear4bit._save_to_state_dict: nn.Linear's weight and bias first, then the quant state's items.
            String bias = name.substring(0, name.length() - "weight".length()) + "bias";
            if (expected.containsKey(bias)) {
                TensorInfo b = checked(bias, expected.get(bias));
                parts.add(Entry.of(bias, b.dtype(), b.shape()));
                inGroups.add(bias);
            }
            parts.add(Entry.of(BnbCheckpointFormat.part(name, BnbCheckpointFormat.ABSMAX),
                    spec.doubleQuant() ? DType.U8 : DType.F32, spec.blocks(n)));
            parts.add(Entry.of(BnbCheckpointFormat.part(name, BnbCheckpointFormat.QUANT_MAP), DType.F32, 16));
            if (spec.doubleQuant()) {
                parts.add(Entry.of(BnbCheckpointFormat.part(name, BnbCheckpointFormat.NESTED_ABSMAX), DType.F32,
                        spec.nestedBlocks(n)));
                parts.add(Entry.of(BnbCheckpointFormat.part(name, BnbCheckpointFormat.NESTED_QUANT_MAP), DType.F32, 256));
            }
            parts.add(Entry.upTo(BnbCheckpointFormat.quantStateName(name, spec.type()), DType.U8,
                    widest.toJsonBytes().length + MAX_OFFSET_CHARS));
            groups.add(new Group(name, info, parts, true));
        }
        return groups;
    }

    private TensorInfo checked(String name, long[] shape) {
        TensorInfo info = file.info(name);
        if (!Arrays.equals(info.shape(), shape)) {
            throw new IllegalArgumentException("tensor " + name + " in " + file.fileOf(name) + " has shape "
                    + Arrays.toString(info.shape()) + ", but config.json needs " + Arrays.toString(shape)
                    + "; the weights and config.json belong to different models");
        }
        if (info.dtype() != DType.F32 && info.dtype() != DType.BF16 && info.dtype() != DType.F16) {
            throw new IllegalArgumentException("tensor " + name + " in " + file.fileOf(name) + " is stored as "
                    + info.dtype() + "; lora4j quantizes models stored in F32, BF16 or F16");
        }
        return info;
    }

    /** huggingface_hub's split: in order, a new shard when the next tensor would overflow; an oversize one alone. */
    private static List<List<Group>> split(List<Group> groups, long maxShardBytes) {
        List<List<Group>> shards = new ArrayList<>();
        List<Group> current = new ArrayList<>();
        long size = 0;
        for (Group g : groups) {
            long b = g.maxBytes();
            if (b > maxShardBytes) {
                shards.add(List.of(g));
                continue;
            }
            if (!current.isEmpty() && size + b > maxShardBytes) {
                shards.add(current);
                current = new ArrayList<>();
                size = 0;
            }
            current.add(g);
            size += b;
        }
        if (!current.isEmpty()) shards.add(current);
        return shards;
    }

    private void writeGroup(Group g, SafetensorsStreamWriter.Sink sink) throws IOException {
        if (!g.quantized()) {
            for (Entry e : g.entries()) sink.put(e.name(), file.data(e.name()));
            return;
        }
        QuantizedTensor q;
        Tensor dense = backend.upload(file.data(g.name()), g.source().dtype(), g.source().dtype(), g.source().shape());
        try {
            q = backend.quantize4bit(dense, options.spec());
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("cannot quantize " + g.name() + " of " + file.fileOf(g.name()) + ": "
                    + e.getMessage(), e);
        } finally {
            dense.close();
        }
        try (q; Arena arena = Arena.ofConfined()) {
            for (Entry e : g.entries()) {
                String n = e.name();
                MemorySegment bytes;
                if (n.equals(g.name())) bytes = host(arena, q.packed());
                else if (!n.startsWith(g.name() + ".")) bytes = file.data(n);  // the module's bias
                else if (BnbCheckpointFormat.isQuantState(n)) bytes = MemorySegment.ofArray(BnbQuantState.of(q).toJsonBytes());
                else bytes = switch (n.substring(g.name().length() + 1)) {
                    case BnbCheckpointFormat.ABSMAX -> host(arena, q.absmax());
                    case BnbCheckpointFormat.QUANT_MAP -> floats(arena, BnbCheckpointFormat.quantMap(q.spec().type()));
                    case BnbCheckpointFormat.NESTED_ABSMAX -> host(arena, q.nestedAbsmax());
                    case BnbCheckpointFormat.NESTED_QUANT_MAP -> host(arena, q.nestedCode());
                    default -> throw new IllegalStateException("no part " + n);
                };
                sink.put(n, bytes);
            }
        }
    }

    private MemorySegment host(Arena arena, Tensor t) {
        MemorySegment seg = arena.allocate(t.byteSize(), 16);
        backend.copyToHost(t, seg);
        return seg;
    }

    private static MemorySegment floats(Arena arena, float[] values) {
        MemorySegment seg = arena.allocate(4L * values.length, 4);
        for (int i = 0; i < values.length; i++) seg.set(F32_LE, 4L * i, values[i]);
        return seg;
    }

    /** Everything but the weights and config.json that a model folder carries: tokenizer, templates, generation config. */
    private static void copyCompanionFiles(Path from, Path to) throws IOException {
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(from)) {
            for (Path p : ds) {
                String n = p.getFileName().toString();
                boolean companion = n.startsWith("tokenizer") || n.equals("generation_config.json")
                        || n.equals("special_tokens_map.json") || n.equals("added_tokens.json") || n.equals("vocab.json")
                        || n.equals("merges.txt") || n.startsWith("chat_template");
                if (companion && Files.isRegularFile(p)) AtomicFiles.copy(p, to.resolve(n));
            }
        }
    }

    private static boolean isNonEmptyFolder(Path p) throws IOException {
        if (!Files.isDirectory(p)) return false;
        try (Stream<Path> s = Files.list(p)) {
            return s.findAny().isPresent();
        }
    }

    /** Moves the finished folder into place; an existing target is moved aside first and deleted after. */
    private static void replace(Path target, Path finished) throws IOException {
        Path old = null;
        if (Files.exists(target)) {
            old = target.resolveSibling("." + target.getFileName() + ".old-" + Long.toHexString(ThreadLocalRandom.current().nextLong()));
            Files.move(target, old, StandardCopyOption.ATOMIC_MOVE);
        }
        try {
            Files.move(finished, target, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            if (old != null) Files.move(old, target, StandardCopyOption.ATOMIC_MOVE);
            throw e;
        }
        AtomicFiles.forceFolder(target.getParent());
        if (old != null) deleteTree(old);
    }

    private static void deleteTree(Path root) throws IOException {
        if (!Files.exists(root)) return;
        try (Stream<Path> s = Files.walk(root)) {
            for (Path p : s.sorted(Comparator.reverseOrder()).toList()) Files.deleteIfExists(p);
        }
    }
}
