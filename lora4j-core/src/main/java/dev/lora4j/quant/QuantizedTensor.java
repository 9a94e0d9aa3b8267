package dev.lora4j.quant;

import dev.lora4j.backend.Backend;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

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
