package dev.lora4j.quant;

import dev.lora4j.backend.Backend;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Objects;

/**
 * A weight quantized to 4 bits as bitsandbytes stores it, on one backend. Its shape is the logical shape of the
 * weight ({@code [out_features, in_features]}); its storage is:
 * <ul>
 *   <li>{@code packed}: U8 [ceil(numel/2)], two codes per byte, element 2j in the high nibble;</li>
 *   <li>{@code absmax}: the scale of each block of {@link QuantSpec#blockSize()} elements: F32 [blocks], or with
 *       double quantization U8 [blocks] codes of {@code nestedCode}, each times its nested block's
 *       {@code nestedAbsmax} (F32 [nestedBlocks]) plus {@code nestedOffset};</li>
 *   <li>{@code nestedCode}: F32 [256], bitsandbytes' signed dynamic map (null without double quantization).</li>
 * </ul>
 * {@link #dtype()} is U8 (the storage) so that code expecting a dense weight fails loudly; backends recognise this
 * class in {@link Backend#matmul} and {@link Backend#matmulBackwardInput} and dequantize on the fly.
 * {@code originalType} is the dtype of the weight before quantization (bitsandbytes' {@code quant_state.dtype}).
 * The products multiply by the weight bitsandbytes' 4-bit matmul uses: dequantized to {@code originalType}, then
 * cast to the spec's compute dtype ({@link HostQuantizer#matmulValue}); for the QLoRA recipe (BF16 weights, BF16
 * compute) that is the BF16 dequantized weight.
 */
public final class QuantizedTensor extends Tensor {
    private final QuantSpec spec;
    private final DType originalType;
    private final Tensor packed;
    private final Tensor absmax;
    private final Tensor nestedAbsmax;
    private final Tensor nestedCode;
    private final float nestedOffset;
    private boolean closed;

    public QuantizedTensor(QuantSpec spec, DType originalType, long[] shape, Tensor packed, Tensor absmax,
                           Tensor nestedAbsmax, Tensor nestedCode, float nestedOffset) {
        super(DType.U8, shape);
        this.spec = Objects.requireNonNull(spec, "spec");
        this.originalType = Objects.requireNonNull(originalType, "originalType");
        this.packed = Objects.requireNonNull(packed, "packed");
        this.absmax = Objects.requireNonNull(absmax, "absmax");
        this.nestedAbsmax = nestedAbsmax;
        this.nestedCode = nestedCode;
        this.nestedOffset = nestedOffset;
        long n = numel();
        check(packed, DType.U8, (n + 1) / 2, "packed codes");
        if (spec.doubleQuant()) {
            check(absmax, DType.U8, spec.blocks(n), "8-bit absmax codes");
            check(Objects.requireNonNull(nestedAbsmax, "nestedAbsmax"), DType.F32, spec.nestedBlocks(n), "nested absmax");
            check(Objects.requireNonNull(nestedCode, "nestedCode"), DType.F32, 256, "nested code");
        } else {
            check(absmax, DType.F32, spec.blocks(n), "absmax");
            if (nestedAbsmax != null || nestedCode != null) {
                throw new IllegalArgumentException("nested absmax given without double quantization");
            }
        }
    }

    /** Puts host arrays (from {@link HostQuantizer#quantize}, or read from a checkpoint) on a backend. */
    public static QuantizedTensor upload(Backend backend, QuantizedArrays q, DType originalType, long... shape) {
        long n = 1;
        for (long d : shape) n *= d;
        if (n != q.numel()) {
            throw new IllegalArgumentException("shape " + java.util.Arrays.toString(shape) + " has " + n + " elements, the quantized arrays " + q.numel());
        }
        java.util.List<Tensor> parts = new java.util.ArrayList<>();
        try {
            Tensor packed = keep(parts, bytes(backend, q.packed()));
            if (!q.spec().doubleQuant()) {
                return new QuantizedTensor(q.spec(), originalType, shape, packed, keep(parts, floats(backend, q.absmax())), null, null, 0f);
            }
            return new QuantizedTensor(q.spec(), originalType, shape, packed, keep(parts, bytes(backend, q.absmaxCodes())),
                    keep(parts, floats(backend, q.nestedAbsmax())), keep(parts, floats(backend, q.nestedCode())), q.nestedOffset());
        } catch (RuntimeException | Error e) {
            parts.forEach(Tensor::close); // out of device memory half way: give back what was allocated
            throw e;
        }
    }

    private static Tensor keep(java.util.List<Tensor> parts, Tensor t) {
        parts.add(t);
        return t;
    }

    /** The parts as host arrays (for writing a checkpoint or checking a backend against {@link HostQuantizer}). */
    public QuantizedArrays toArrays() {
        if (numel() > Integer.MAX_VALUE - 8) throw new IllegalArgumentException(this + " has too many elements for host arrays");
        Backend b = backend();
        byte[] p = bytesOf(b, packed);
        if (!spec.doubleQuant()) return new QuantizedArrays(spec, (int) numel(), p, b.toFloats(absmax), null, null, null, 0f);
        return new QuantizedArrays(spec, (int) numel(), p, null, bytesOf(b, absmax), b.toFloats(nestedAbsmax),
                b.toFloats(nestedCode), nestedOffset);
    }

    private static Tensor bytes(Backend backend, byte[] values) {
        try (Arena arena = Arena.ofConfined()) {
            return backend.upload(arena.allocateFrom(ValueLayout.JAVA_BYTE, values), DType.U8, DType.U8, values.length);
        }
    }

    private static Tensor floats(Backend backend, float[] values) {
        return backend.fromFloats(values, DType.F32, values.length);
    }

    private static byte[] bytesOf(Backend backend, Tensor t) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment host = arena.allocate(Math.max(1, t.byteSize()));
            backend.copyToHost(t, host);
            return host.asSlice(0, t.byteSize()).toArray(ValueLayout.JAVA_BYTE);
        }
    }

    private static void check(Tensor t, DType dtype, long numel, String what) {
        if (t.dtype() != dtype || t.numel() != numel) {
            throw new IllegalArgumentException(what + " must be " + dtype + " with " + numel + " elements, got " + t);
        }
    }

    public QuantSpec spec() { return spec; }

    public DType originalType() { return originalType; }

    public Tensor packed() { return packed; }

    public Tensor absmax() { return absmax; }

    /** F32 [nestedBlocks], or null without double quantization. */
    public Tensor nestedAbsmax() { return nestedAbsmax; }

    /** F32 [256], or null without double quantization. */
    public Tensor nestedCode() { return nestedCode; }

    /** The mean subtracted from the absmax values before their 8-bit quantization (0 without double quantization). */
    public float nestedOffset() { return nestedOffset; }

    @Override
    public Backend backend() { return packed.backend(); }

    /** The bytes of every part: packed codes and quantization state. */
    @Override
    public long byteSize() {
        long bytes = packed.byteSize() + absmax.byteSize();
        if (nestedAbsmax != null) bytes += nestedAbsmax.byteSize() + nestedCode.byteSize();
        return bytes;
    }

    @Override
    public Tensor view(long elementOffset, long... shape) {
        throw new UnsupportedOperationException("a 4-bit quantized weight has no element views; dequantize it first");
    }

    @Override
    public void close() {
        if (closed) return;
        closed = true;
        packed.close();
        absmax.close();
        if (nestedAbsmax != null) nestedAbsmax.close();
        if (nestedCode != null) nestedCode.close();
    }

    @Override
    public String toString() {
        return "QuantizedTensor(" + spec.type() + (spec.doubleQuant() ? "+dq" : "") + " block " + spec.blockSize()
                + java.util.Arrays.toString(shape()) + " from " + originalType + " on " + backend().name() + ")";
    }
}
