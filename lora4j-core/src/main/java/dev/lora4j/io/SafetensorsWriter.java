package dev.lora4j.io;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.lora4j.tensor.DType;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.regex.Pattern;

/**
 * Builds safetensors files from named tensors, in insertion order. Tensors are {@link MemorySegment}s (on- or
 * off-heap, or slices of a mapped file) and are streamed to disk, so a model never has to fit in the heap. The
 * writer only keeps references: segments must stay alive until {@link #writeTo} or {@link #writeSharded} returns.
 */
public final class SafetensorsWriter {

    /** Hugging Face's shard names: model-00001-of-00003.safetensors. */
    private static final Pattern SHARD_NAME = Pattern.compile("model-\\d{5}-of-\\d{5}\\.safetensors");

    /** Large segments are written in pieces: a ByteBuffer view holds at most 2 GiB. */
    private static final long WRITE_CHUNK = 64L << 20;

    private record Entry(String name, DType dtype, long[] shape, MemorySegment bytes) {
        long byteLength() {
            return bytes.byteSize();
        }
    }

    private final Map<String, Entry> entries = new LinkedHashMap<>();
    private final Map<String, String> metadata = new LinkedHashMap<>();

    public SafetensorsWriter() {}

    /** Adds a {@code __metadata__} entry (Hugging Face writes {"format": "pt"}). */
    public SafetensorsWriter metadata(String key, String value) {
        metadata.put(Objects.requireNonNull(key, "key"), Objects.requireNonNull(value, "value"));
        return this;
    }

    public SafetensorsWriter metadata(Map<String, String> values) {
        values.forEach(this::metadata);
        return this;
    }

    /**
     * Adds a tensor: {@code bytes} holds its elements in row-major order, little-endian, and must be exactly
     * {@code numel(shape) * dtype.byteSize()} bytes long.
     */
    public SafetensorsWriter add(String name, DType dtype, long[] shape, MemorySegment bytes) {
        Objects.requireNonNull(name, "name");
        Objects.requireNonNull(dtype, "dtype");
        Objects.requireNonNull(bytes, "bytes");
        if (name.equals(SafetensorsHeader.METADATA_KEY)) {
            throw new IllegalArgumentException("'" + name + "' is reserved for the header's metadata; choose another tensor name");
        }
        if (entries.containsKey(name)) {
            throw new IllegalArgumentException("tensor '" + name + "' was already added; names in a safetensors file are unique");
        }
        long numel = 1;
        for (long d : shape) {
            if (d < 0) throw new IllegalArgumentException("tensor '" + name + "': negative dimension in shape " + Arrays.toString(shape));
            numel = Math.multiplyExact(numel, d);
        }
        long expected = dtype.bytesFor(numel);
        if (bytes.byteSize() != expected) {
            throw new IllegalArgumentException("tensor '" + name + "': " + dtype.safetensorsName() + Arrays.toString(shape)
                    + " needs " + expected + " bytes but the segment has " + bytes.byteSize());
        }
        entries.put(name, new Entry(name, dtype, shape.clone(), bytes));
        return this;
    }

    public int size() {
        return entries.size();
    }

    /** Bytes of tensor data (what an index's metadata.total_size counts). */
    public long dataBytes() {
        long total = 0;
        for (Entry e : entries.values()) total += e.byteLength();
        return total;
    }

    /** Writes every tensor into one file, atomically. */
    public void writeTo(Path file) throws IOException {
        writeFile(file, List.copyOf(entries.values()), metadata);
    }

    /**
     * Writes the tensors as Hugging Face does with {@code save_pretrained(max_shard_size=...)}: in order, a new shard
     * whenever the next tensor would take the current one past {@code maxShardBytes} of data (a tensor larger than
     * that gets a shard of its own), named {@code model-00001-of-0000N.safetensors}, plus
     * {@code model.safetensors.index.json}. When everything fits in one shard it writes {@code model.safetensors}
     * and no index, as Hugging Face does. Stale weight files of an earlier save in the folder are removed.
     *
     * @return the weight files written, in order
     */
    public List<Path> writeSharded(Path folder, long maxShardBytes) throws IOException {
        if (maxShardBytes <= 0) throw new IllegalArgumentException("maxShardBytes must be positive, got " + maxShardBytes);
        Files.createDirectories(folder);
        List<List<Entry>> shards = split(maxShardBytes);
        List<Path> written = new ArrayList<>();
        if (shards.size() <= 1) {
            Path single = folder.resolve(SafetensorsModel.SINGLE_FILE);
            writeFile(single, shards.isEmpty() ? List.of() : shards.getFirst(), metadata);
            written.add(single);
            removeStaleWeights(folder, written, true);
            return written;
        }
        ObjectMapper json = new ObjectMapper();
        ObjectNode index = json.createObjectNode();
        index.putObject("metadata").put("total_size", dataBytes());
        ObjectNode weightMap = index.putObject("weight_map");
        for (int i = 0; i < shards.size(); i++) {
            String fileName = String.format("model-%05d-of-%05d.safetensors", i + 1, shards.size());
            Path shard = folder.resolve(fileName);
            writeFile(shard, shards.get(i), metadata);
            written.add(shard);
            for (Entry e : shards.get(i)) weightMap.put(e.name(), fileName);
        }
        AtomicFiles.writeString(folder.resolve(SafetensorsModel.INDEX_FILE),
                json.writerWithDefaultPrettyPrinter().writeValueAsString(index) + "\n");
        removeStaleWeights(folder, written, false);
        return written;
    }

    private List<List<Entry>> split(long maxShardBytes) {
        List<List<Entry>> shards = new ArrayList<>();
        List<Entry> current = new ArrayList<>();
        long currentBytes = 0;
        for (Entry e : entries.values()) {
            if (!current.isEmpty() && currentBytes + e.byteLength() > maxShardBytes) {
                shards.add(current);
                current = new ArrayList<>();
                currentBytes = 0;
            }
            current.add(e);
            currentBytes += e.byteLength();
        }
        if (!current.isEmpty()) shards.add(current);
        return shards;
    }

    /** A stale model.safetensors would shadow new shards (readers prefer it), and stale shards would confuse people. */
    private static void removeStaleWeights(Path folder, List<Path> keep, boolean removeIndex) throws IOException {
        List<Path> stale = new ArrayList<>();
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(folder)) {
            for (Path p : ds) {
                String n = p.getFileName().toString();
                boolean weightFile = SHARD_NAME.matcher(n).matches() || n.equals(SafetensorsModel.SINGLE_FILE)
                        || (removeIndex && n.equals(SafetensorsModel.INDEX_FILE));
                if (weightFile && keep.stream().noneMatch(k -> k.getFileName().toString().equals(n))) stale.add(p);
            }
        }
        for (Path p : stale) Files.deleteIfExists(p);
    }

    private static void writeFile(Path file, List<Entry> tensors, Map<String, String> metadata) throws IOException {
        List<TensorInfo> infos = new ArrayList<>(tensors.size());
        long offset = 0;
        for (Entry e : tensors) {
            infos.add(new TensorInfo(e.name(), e.dtype(), e.shape(), offset, offset + e.byteLength()));
            offset += e.byteLength();
        }
        byte[] json = SafetensorsHeader.serialize(SafetensorsHeader.toJson(infos, metadata));
        // Like the reference writer: pad the header with spaces so the data section starts 8-byte aligned.
        int padded = (json.length + 7) & ~7;
        if (padded > SafetensorsHeader.MAX_HEADER_BYTES) {
            throw new IOException("cannot write " + file + ": its header would be " + padded + " bytes, more than the"
                    + " safetensors limit of " + SafetensorsHeader.MAX_HEADER_BYTES + "; write fewer tensors per file");
        }
        ByteBuffer head = ByteBuffer.allocate(Long.BYTES + padded).order(ByteOrder.LITTLE_ENDIAN);
        head.putLong(padded).put(json);
        while (head.hasRemaining()) head.put((byte) ' ');
        head.flip();
        AtomicFiles.write(file, channel -> {
            AtomicFiles.writeFully(channel, head);
            for (Entry e : tensors) writeSegment(channel, e.bytes());
        });
    }

    /** Writes a tensor's bytes at the channel's position in chunks (shared with {@link SafetensorsStreamWriter}). */
    static void writeSegment(FileChannel channel, MemorySegment segment) throws IOException {
        // Only native and byte[]-backed segments have ByteBuffer views; others (float[], short[]...) go through a copy.
        boolean viewable = segment.isNative() || segment.heapBase().orElse(null) instanceof byte[];
        ByteBuffer copy = viewable ? null : ByteBuffer.allocateDirect((int) Math.min(WRITE_CHUNK, Math.max(1, segment.byteSize())));
        for (long at = 0; at < segment.byteSize(); at += WRITE_CHUNK) {
            long n = Math.min(WRITE_CHUNK, segment.byteSize() - at);
            if (viewable) {
                AtomicFiles.writeFully(channel, segment.asSlice(at, n).asByteBuffer());
            } else {
                copy.clear().limit((int) n);
                MemorySegment.ofBuffer(copy).copyFrom(segment.asSlice(at, n));
                AtomicFiles.writeFully(channel, copy);
            }
        }
    }
}
