package dev.lora4j.cuda;

import dev.lora4j.quant.DynamicMap;
import dev.lora4j.quant.HostQuantizer;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.quant.QuantType;
import dev.lora4j.quant.QuantizedTensor;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;

import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;

/**
 * The CUDA backend's 4-bit weights (quant.cu): quantization to bitsandbytes' NF4/FP4 with the bytes of
 * {@link HostQuantizer}, dequantization, and the dense copy of a quantized weight that one product multiplies.
 *
 * <p>A quantized weight is never kept dequantized: each product dequantizes it into a block from the caching
 * allocator, runs the dense cuBLASLt path on it and releases the block as soon as the product is queued (the next
 * product of the same shape gets the same block back without a driver call). The dequantization reads half a byte
 * and writes two bytes per element, so it costs about {@code 2.5 * m * k / bandwidth}: 34 µs for a 14336x4096
 * projection at the H200's 4.3 TB/s, against 0.7 ms for that projection's forward GEMM over 4096 tokens (0.48
 * TFLOP at about 700 TFLOP/s). Streamed this way QLoRA costs a few percent over LoRA per product, and the only
 * memory it adds is the one dense weight being multiplied.
 */
final class CudaQuantization {
    private final CudaBackend backend;

    CudaQuantization(CudaBackend backend) {
        this.backend = backend;
    }

    /**
     * bitsandbytes' {@code quantize_4bit} of an F32/BF16/F16 weight: the codes and absmax on the device; with double
     * quantization the absmax values go to the host once, for the offset (their mean as {@link
     * HostQuantizer#nestedOffset} defines it), and are then quantized to 8 bits on the device.
     */
    QuantizedTensor quantize(Tensor weight, QuantSpec spec) {
        CudaTensor w = backend.device(weight);
        DType wt = w.dtype();
        if (wt != DType.F32 && wt != DType.BF16 && wt != DType.F16) {
            throw new IllegalArgumentException("quantize4bit: the weight must be F32, BF16 or F16, got " + weight);
        }
        long n = w.numel();
        if (n == 0) throw new IllegalArgumentException("cannot quantize " + name(w) + ": it has no elements");
        long blocks = spec.blocks(n);
        CudaTensor packed = null, absmax = null, flag = null, codes = null, nested = null;
        Tensor map = null;
        try {
            packed = backend.uninitialized(DType.U8, (n + 1) / 2);
            absmax = backend.uninitialized(DType.F32, blocks);
            flag = (CudaTensor) backend.allocate(DType.I32, 1);
            backend.kernels().launch(CudaKernels.quantize4bit(spec.type(), wt), warpGrid(blocks), CudaKernels.QUANT_THREADS,
                    0, backend.stream(), KernelArgs.start().ptr(w.address()).ptr(absmax.address()).ptr(packed.address())
                            .ptr(flag.address()).i64(n).i32(spec.blockSize()));
            if (flagSet(flag)) throw nonFinite(w);
            if (!spec.doubleQuant()) {
                return new QuantizedTensor(spec, wt, w.shape(), packed, absmax, null, null, 0f);
            }
            float offset = HostQuantizer.nestedOffset(backend.toFloats(absmax));
            map = uploadFloats(DynamicMap.signed());
            codes = backend.uninitialized(DType.U8, blocks);
            nested = backend.uninitialized(DType.F32, spec.nestedBlocks(n));
            backend.kernels().launch(CudaKernels.QUANTIZE_ABSMAX_8BIT, warpGrid(spec.nestedBlocks(n)),
                    CudaKernels.QUANT_THREADS, 0, backend.stream(),
                    KernelArgs.start().ptr(absmax.address()).f32(offset).ptr(backend.device(map).address())
                            .ptr(codes.address()).ptr(nested.address()).i64(blocks));
            absmax.close(); // the 8-bit codes replace it; later work on the stream runs after the kernel read it
            return new QuantizedTensor(spec, wt, w.shape(), packed, codes, nested, map, offset);
        } catch (RuntimeException e) {
            for (Tensor t : new Tensor[] {packed, absmax, codes, nested, map}) if (t != null) t.close();
            throw e;
        } finally {
            if (flag != null) flag.close();
        }
    }

    /** Whether the kernel set the I32 flag (waits for it). */
    private boolean flagSet(CudaTensor flag) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment host = arena.allocate(JAVA_INT);
            backend.copyToHost(flag, host);
            return host.get(JAVA_INT, 0) != 0;
        }
    }

    /** The error of HostQuantizer (and so of the CPU backend) for a weight with a NaN or infinite element. */
    private IllegalArgumentException nonFinite(CudaTensor w) {
        float[] values = backend.toFloats(w);
        for (int i = 0; i < values.length; i++) {
            if (!Float.isFinite(values[i])) {
                return new IllegalArgumentException("cannot quantize " + name(w) + ": element " + i + " is " + values[i]
                        + "; 4-bit quantization needs finite weights (check the checkpoint)");
            }
        }
        return new IllegalArgumentException("cannot quantize " + name(w) + ": it has a non-finite value");
    }

    /** "the BF16 weight [4096, 4096]", as the CPU backend names a weight in its errors. */
    private static String name(Tensor w) {
        return "the " + w.dtype() + " weight " + Arrays.toString(w.shape());
    }

    /** bitsandbytes' {@code dequantize_4bit} into {@code out} (F32, BF16 or F16, as many elements as q). */
    void dequantize(QuantizedTensor q, Tensor out) {
        dequantize(q, out, null);
    }

    /**
     * Dequantizes into {@code out}, each value rounded first to {@code via} (BF16 or F16; null for none) and then to
     * the output's dtype.
     */
    private void dequantize(QuantizedTensor q, Tensor out, DType via) {
        CudaTensor o = backend.device(out);
        DType ot = o.dtype();
        if (ot != DType.F32 && ot != DType.BF16 && ot != DType.F16) {
            throw new IllegalArgumentException("dequantize4bit: out must be F32, BF16 or F16, got " + out);
        }
        if (o.numel() != q.numel()) {
            throw new IllegalArgumentException("dequantize4bit: out " + out + " must have the " + q.numel() + " elements of " + q);
        }
        QuantSpec spec = q.spec();
        CudaTensor packed = backend.device(q.packed());
        boolean dq = spec.doubleQuant();
        long absmax = dq ? 0 : backend.device(q.absmax()).address();
        long absmaxCodes = dq ? backend.device(q.absmax()).address() : 0;
        long nestedCode = dq ? backend.device(q.nestedCode()).address() : 0;
        long nestedAbsmax = dq ? backend.device(q.nestedAbsmax()).address() : 0;
        long n = q.numel();
        if (n == 0) return;
        // Vector stores of 16 bytes need a 16-byte aligned output, and each thread loads the codes of its 16 bytes of
        // output as one word (4 bytes for 16-bit outputs, 2 for F32); views at other offsets take the scalar kernel.
        long wordBytes = ot == DType.F32 ? 2 : 4;
        boolean vector = o.address() % 16 == 0 && packed.address() % wordBytes == 0;
        long grid;
        if (vector) {
            long groups = n / (16 / ot.bytesFor(1));
            long tile = (long) CudaKernels.DEQUANT_THREADS * CudaKernels.DEQUANT_STEPS;
            grid = Math.max(1, Math.min(Math.ceilDiv(groups, tile), Integer.MAX_VALUE));
        } else {
            grid = CudaKernels.gridFor(n);
        }
        backend.kernels().launch(CudaKernels.dequantize4bit(ot, vector), grid,
                vector ? CudaKernels.DEQUANT_THREADS : CudaKernels.ELEMENTWISE_THREADS, 0, backend.stream(),
                KernelArgs.start().ptr(packed.address()).ptr(absmax).ptr(absmaxCodes).ptr(nestedCode).ptr(nestedAbsmax)
                        .f32(q.nestedOffset()).i32(spec.type() == QuantType.NF4 ? 0 : 1)
                        .i32(Integer.numberOfTrailingZeros(spec.blockSize())).i32(viaCode(via)).ptr(o.address()).i64(n));
    }

    /**
     * q as a product multiplies it, in a block the caller closes as soon as the product that reads it is queued:
     * dequantized to the weight's original dtype and cast to the compute dtype, as bitsandbytes' 4-bit matmul does
     * ({@link HostQuantizer#matmulValue}); one kernel does both roundings.
     */
    CudaTensor dequantizeForProduct(QuantizedTensor q) {
        DType compute = q.spec().computeType(), original = q.originalType();
        DType via = original != compute && (original == DType.BF16 || original == DType.F16) ? original : null;
        CudaTensor dense = backend.uninitialized(compute, q.shape());
        try {
            dequantize(q, dense, via);
            return dense;
        } catch (RuntimeException e) {
            dense.close();
            throw e;
        }
    }

    /** quant.cu's L4J_VIA_NONE, L4J_VIA_BF16, L4J_VIA_F16. */
    private static int viaCode(DType via) {
        if (via == null) return 0;
        return switch (via) {
            case BF16 -> 1;
            case F16 -> 2;
            default -> throw new IllegalArgumentException("no intermediate rounding to " + via);
        };
    }

    /** Enough blocks of {@link CudaKernels#QUANT_THREADS} threads for one warp per block of values, at most 2^20. */
    private static long warpGrid(long valueBlocks) {
        long warpsPerBlock = CudaKernels.QUANT_THREADS / 32;
        return Math.max(1, Math.min(Math.ceilDiv(valueBlocks, warpsPerBlock), 1L << 20));
    }

    private Tensor uploadFloats(float[] values) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment host = arena.allocateFrom(JAVA_FLOAT, values);
            return backend.upload(host, DType.F32, DType.F32, values.length);
        }
    }
}
