package dev.lora4j.io;

import dev.lora4j.tensor.DType;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * Writes one safetensors file tensor by tensor, each produced just before it is written and free to be released
 * right after: for files whose tensors do not fit in memory together (a model quantized on the way to disk). The
 * tensors are declared up front; a declared tensor may leave its length open ({@link Entry#upTo}) when it is known
 * only once produced (a JSON text). The header, which must precede the data, is written last into space reserved for
 * the longest header the declarations allow, padded with spaces as the format permits. The file appears atomically.
 */
public final class SafetensorsStreamWriter {

    /**
     * A declared tensor: its name, dtype and shape, or for an open length ({@code shape} null) a 1-D tensor of at most
     * {@code maxElements} elements.
     */
    public record Entry(String name, DType dtype, long[] shape, long maxElements) {
        public Entry {
            Objects.requireNonNull(name, "name");
            Objects.requireNonNull(dtype, "dtype");
            if (shape != null) shape = shape.clone();
            else if (maxElements < 0) throw new IllegalArgumentException(name + ": negative maximum length");
        }

        public static Entry of(String name, DType dtype, long... shape) {
            return new Entry(name, dtype, shape, -1);
        }

        public static Entry upTo(String name, DType dtype, long maxElements) {
            return new Entry(name, dtype, null, maxElements);
        }

        @Override
        public long[] shape() { return shape == null ? null : shape.clone(); }

        /** The most bytes the tensor can take. */
        public long maxBytes() {
            if (shape == null) return dtype.bytesFor(maxElements);
            long n = 1;
            for (long d : shape) n = Math.multiplyExact(n, d);
            return dtype.bytesFor(n);
        }
    }

    /** Receives each declared tensor's bytes, in declaration order. */
    @FunctionalInterface
    public interface Sink {
        void put(String name, MemorySegment bytes) throws IOException;
    }

    /** Produces every declared tensor into the sink, in declaration order. */
    @FunctionalInterface
    public interface Producer {
        void produce(Sink sink) throws IOException;
    }

    private SafetensorsStreamWriter() {}

    /** Writes {@code file} (atomically) from the tensors {@code producer} puts, which must be exactly {@code entries}. */
    public static void write(Path file, List<Entry> entries, Map<String, String> metadata, Producer producer)
            throws IOException {
        List<Entry> declared = List.copyOf(entries);
        long maxData = 0;
        for (Entry e : declared) maxData = Math.addExact(maxData, e.maxBytes());
        List<TensorInfo> widest = new ArrayList<>();
        for (Entry e : declared) {
            long[] shape = e.shape() != null ? e.shape() : new long[] {e.maxElements()};
            widest.add(new TensorInfo(e.name(), e.dtype(), shape, maxData, maxData));
        }
        // Every number in the real header is at most its counterpart here, so the real header is no longer.
        int reserved = (SafetensorsHeader.serialize(SafetensorsHeader.toJson(widest, metadata)).length + 7) & ~7;
        if (reserved > SafetensorsHeader.MAX_HEADER_BYTES) {
            throw new IOException("cannot write " + file + ": its header would be " + reserved + " bytes, more than the"
                    + " safetensors limit of " + SafetensorsHeader.MAX_HEADER_BYTES + "; write fewer tensors per file");
        }
        AtomicFiles.write(file, channel -> {
            long dataStart = Long.BYTES + reserved;
            channel.position(dataStart);
            List<TensorInfo> written = new ArrayList<>();
            long[] offset = {0};
            producer.produce((name, bytes) -> {
                int i = written.size();
                if (i >= declared.size()) {
                    throw new IllegalStateException(file + ": tensor '" + name + "' was not declared (all "
                            + declared.size() + " are written)");
                }
                Entry e = declared.get(i);
                if (!e.name().equals(name)) {
                    throw new IllegalStateException(file + ": expected tensor '" + e.name() + "' next, got '" + name + "'");
                }
                long size = bytes.byteSize();
                long[] shape;
                if (e.shape() != null) {
                    if (size != e.maxBytes()) {
                        throw new IllegalArgumentException("tensor '" + name + "': " + e.dtype() + Arrays.toString(e.shape())
                                + " needs " + e.maxBytes() + " bytes but the segment has " + size);
                    }
                    shape = e.shape();
                } else {
                    if (size % e.dtype().byteSize() != 0 || size > e.maxBytes()) {
                        throw new IllegalArgumentException("tensor '" + name + "': " + size + " bytes are not at most "
                                + e.maxElements() + " whole " + e.dtype() + " elements");
                    }
                    shape = new long[] {size / e.dtype().byteSize()};
                }
                SafetensorsWriter.writeSegment(channel, bytes);
                written.add(new TensorInfo(name, e.dtype(), shape, offset[0], offset[0] + size));
                offset[0] += size;
            });
            if (written.size() != declared.size()) {
                throw new IllegalStateException(file + ": " + declared.size() + " tensors declared but "
                        + written.size() + " written; the next missing one is '" + declared.get(written.size()).name() + "'");
            }
            byte[] json = SafetensorsHeader.serialize(SafetensorsHeader.toJson(written, metadata));
            ByteBuffer head = ByteBuffer.allocate(Long.BYTES + reserved).order(ByteOrder.LITTLE_ENDIAN);
            head.putLong(reserved).put(json);
            while (head.hasRemaining()) head.put((byte) ' ');
            head.flip();
            channel.position(0);
            AtomicFiles.writeFully(channel, head);
        });
    }
}
