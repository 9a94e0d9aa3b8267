package dev.lora4j.io;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A safetensors file, memory-mapped read-only. Only the header is read into the heap; {@link #data(String)} hands
 * out read-only slices of the mapping, valid until {@link #close()}. Files larger than 2 GiB are fine.
 *
 * <p>Tensor data is not necessarily aligned to its element size (the format only aligns the data section as a
 * whole to 8 bytes), so readers should use unaligned layouts such as {@code JAVA_FLOAT_UNALIGNED}.
 */
public final class SafetensorsFile implements AutoCloseable {

    private static final ValueLayout.OfLong U64_LE = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private final Path path;
    private final Arena arena;
    private final MemorySegment data;
    private final Map<String, TensorInfo> tensors;
    private final Map<String, String> metadata;
    private volatile boolean closed;

    private SafetensorsFile(Path path, Arena arena, MemorySegment data, SafetensorsHeader header) {
        this.path = path;
        this.arena = arena;
        this.data = data;
        this.metadata = header.metadata();
        var byName = new LinkedHashMap<String, TensorInfo>();
        for (TensorInfo t : header.tensors()) byName.put(t.name(), t);
        this.tensors = java.util.Collections.unmodifiableMap(byName);
    }

    /** Maps {@code file} and validates its header; any violation of the format is a {@link SafetensorsFormatException}. */
    public static SafetensorsFile open(Path file) throws IOException {
        if (!Files.exists(file)) throw new NoSuchFileException(file.toString(), null, "no such safetensors file");
        if (!Files.isRegularFile(file)) {
            throw new SafetensorsFormatException("Cannot open " + file + " as a safetensors file: it is not a regular file");
        }
        Arena arena = Arena.ofShared();
        try (FileChannel channel = FileChannel.open(file, StandardOpenOption.READ)) {
            long size = channel.size();
            MemorySegment mapping = size == 0 ? MemorySegment.ofArray(new byte[0])
                    : channel.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
            return read(file, mapping, arena);
        } catch (Throwable t) {
            arena.close();
            throw t;
        }
    }

    /**
     * Validates the safetensors bytes in {@code content} (named {@code file} in errors) and wraps them; closing the
     * result closes {@code arena}. {@link #open} passes a mapping; tests pass bytes held in memory.
     */
    static SafetensorsFile read(Path file, MemorySegment content, Arena arena) throws SafetensorsFormatException {
        long size = content.byteSize();
        if (size < Long.BYTES) {
            throw SafetensorsHeader.fail(file, "the file has " + size + " bytes, fewer than the 8-byte header length"
                    + " that starts every safetensors file. The file is damaged or was not written completely:"
                    + " download or export it again.");
        }
        long headerLength = content.get(U64_LE, 0);
        if (headerLength < 0 || headerLength > SafetensorsHeader.MAX_HEADER_BYTES) {
            throw SafetensorsHeader.fail(file, "the header length in the first 8 bytes is "
                    + Long.toUnsignedString(headerLength) + " bytes, more than the format's limit of "
                    + SafetensorsHeader.MAX_HEADER_BYTES + ": this is not a safetensors file, or it is damaged");
        }
        if (headerLength > size - Long.BYTES) {
            throw SafetensorsHeader.fail(file, "the header length in the first 8 bytes is " + headerLength
                    + " bytes but only " + (size - Long.BYTES) + " bytes follow: the file is truncated or is not a"
                    + " safetensors file. Download or export it again.");
        }
        byte[] headerBytes = content.asSlice(Long.BYTES, headerLength).toArray(ValueLayout.JAVA_BYTE);
        long dataStart = Long.BYTES + headerLength;
        SafetensorsHeader header = SafetensorsHeader.parse(file, headerBytes, size - dataStart);
        return new SafetensorsFile(file, arena, content.asSlice(dataStart).asReadOnly(), header);
    }

    public Path path() {
        return path;
    }

    /** The header's {@code __metadata__} (empty when absent), in header order. */
    public Map<String, String> metadata() {
        return metadata;
    }

    /** Tensor names in header order. */
    public List<String> names() {
        return List.copyOf(tensors.keySet());
    }

    public boolean contains(String name) {
        return tensors.containsKey(name);
    }

    /** All tensors' header entries, in header order. */
    public List<TensorInfo> tensors() {
        return List.copyOf(tensors.values());
    }

    /** @throws IllegalArgumentException when the file has no tensor of that name */
    public TensorInfo info(String name) {
        TensorInfo t = tensors.get(name);
        if (t == null) {
            throw new IllegalArgumentException("no tensor '" + name + "' in " + path + " (it holds " + tensors.size()
                    + " tensors" + (tensors.isEmpty() ? "" : ", e.g. '" + tensors.keySet().iterator().next() + "'") + ")");
        }
        return t;
    }

    /** A read-only slice of the mapping holding the tensor's little-endian bytes; valid until {@link #close()}. */
    public MemorySegment data(String name) {
        TensorInfo t = info(name);
        if (closed) throw new IllegalStateException(path + " is closed");
        return data.asSlice(t.dataBegin(), t.byteLength());
    }

    /** Unmaps the file: segments returned by {@link #data(String)} become inaccessible. */
    @Override
    public void close() {
        if (closed) return;
        synchronized (this) {
            if (closed) return;
            closed = true;
            arena.close();
        }
    }

    @Override
    public String toString() {
        return "SafetensorsFile[" + path + ", " + tensors.size() + " tensors]";
    }
}
