package dev.lora4j.quant;

import dev.lora4j.backend.Backend;
import dev.lora4j.io.SafetensorsModel;
import dev.lora4j.io.TensorInfo;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Reads 4-bit weights stored as transformers writes them for bitsandbytes ({@link BnbCheckpointFormat}). Every part
 * is checked (present, dtype, shape, quant-state JSON, code table) before any memory is spent, and every error names
 * the file and the tensor. Parts are uploaded as stored: nothing is dequantized.
 */
public final class QuantizedCheckpointReader {
    private static final ValueLayout.OfFloat F32_LE = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private QuantizedCheckpointReader() {}

    /** A checked 4-bit weight of a checkpoint: what its quant state says, and where its parts are. */
    public record StoredWeight(String name, BnbQuantState state, QuantSpec spec, SafetensorsModel file) {

        /** The weight's logical shape, {@code [out_features, in_features]}. */
        public long[] shape() { return state.shape(); }

        /** Uploads the parts as they are stored; on failure nothing stays allocated. */
        public QuantizedTensor upload(Backend backend) {
            long n = numel(state.shape());
            List<Tensor> parts = new ArrayList<>();
            try {
                Tensor packed = add(parts, backend.upload(file.data(name), DType.U8, DType.U8, (n + 1) / 2));
                String absmaxName = BnbCheckpointFormat.part(name, BnbCheckpointFormat.ABSMAX);
                DType absmaxType = spec.doubleQuant() ? DType.U8 : DType.F32;
                Tensor absmax = add(parts, backend.upload(file.data(absmaxName), absmaxType, absmaxType, spec.blocks(n)));
                Tensor nestedAbsmax = null, nestedCode = null;
                if (spec.doubleQuant()) {
                    nestedAbsmax = add(parts, backend.upload(file.data(BnbCheckpointFormat.part(name,
                            BnbCheckpointFormat.NESTED_ABSMAX)), DType.F32, DType.F32, spec.nestedBlocks(n)));
                    nestedCode = add(parts, backend.upload(file.data(BnbCheckpointFormat.part(name,
                            BnbCheckpointFormat.NESTED_QUANT_MAP)), DType.F32, DType.F32, 256));
                }
                return new QuantizedTensor(spec, state.dtype(), state.shape(), packed, absmax, nestedAbsmax, nestedCode,
                        state.nestedOffset());
            } catch (RuntimeException | OutOfMemoryError e) {
                for (Tensor t : parts) t.close();
                throw e;
            }
        }

        private static Tensor add(List<Tensor> parts, Tensor t) {
            parts.add(t);
            return t;
        }
    }

    /** Whether the checkpoint stores {@code weightName} in 4 bits (it has a quant state for it). */
    public static boolean isQuantized(SafetensorsModel file, String weightName) {
        for (QuantType t : QuantType.values()) {
            if (file.contains(BnbCheckpointFormat.quantStateName(weightName, t))) return true;
        }
        return false;
    }

    /** Whether any weight of the checkpoint is stored in 4 bits. */
    public static boolean isPreQuantized(SafetensorsModel file) {
        for (String name : file.names()) if (BnbCheckpointFormat.isQuantState(name)) return true;
        return false;
    }

    /**
     * Checks the 4-bit weight {@code weightName}, whose logical shape must be {@code expectedShape}; products use
     * {@code computeType}.
     */
    public static StoredWeight read(SafetensorsModel file, String weightName, long[] expectedShape, DType computeType) {
        QuantType type = null;
        for (QuantType t : QuantType.values()) {
            if (!file.contains(BnbCheckpointFormat.quantStateName(weightName, t))) continue;
            if (type != null) {
                throw new IllegalArgumentException(weightName + " in " + file.folder() + " has quant states for both nf4"
                        + " and fp4; bitsandbytes expects exactly one " + weightName + ".quant_state.bitsandbytes__*");
            }
            type = t;
        }
        if (type == null) {
            throw new IllegalArgumentException("no tensor " + weightName + ".quant_state.bitsandbytes__nf4 (or __fp4) in"
                    + " the weights of " + file.folder() + ": " + weightName + " is not stored in 4 bits");
        }
        String stateName = BnbCheckpointFormat.quantStateName(weightName, type);
        TensorInfo stateInfo = file.info(stateName);
        String where = where(file, stateName);
        if (stateInfo.dtype() != DType.U8 || stateInfo.rank() != 1) {
            throw new IllegalArgumentException(where + ": is " + describe(stateInfo) + " but a quant state is the U8 bytes"
                    + " of a JSON text, shape [length]");
        }
        BnbQuantState state = BnbQuantState.parse(file.data(stateName).toArray(ValueLayout.JAVA_BYTE), where);
        if (state.quantType() != type) {
            throw new IllegalArgumentException(where + ": the quant state says quant_type \"" + state.quantType().bnbName()
                    + "\" but its name ends in __" + type.bnbName());
        }
        if (!Arrays.equals(state.shape(), expectedShape)) {
            throw new IllegalArgumentException(where + ": the quant state gives the weight shape "
                    + Arrays.toString(state.shape()) + " but config.json needs " + Arrays.toString(expectedShape)
                    + " for " + weightName + "; the weights and config.json belong to different models");
        }
        QuantSpec spec = new QuantSpec(type, state.blockSize(), state.nested(), computeType);
        long n = numel(expectedShape);

        String packedWhy = "the packed 4-bit codes, two per byte (bnb_4bit_quant_storage uint8)";
        TensorInfo packed = require(file, weightName, weightName);
        if (packed.dtype() != DType.U8) {
            throw new IllegalArgumentException(where(file, weightName) + ": is " + describe(packed) + " but should be "
                    + "U8 " + Arrays.toString(BnbCheckpointFormat.packedShape(n)) + ", " + packedWhy
                    + (packed.dtype().isFloatingPoint() && packed.numel() * packed.dtype().byteSize() == (n + 1) / 2
                    ? "; packing in " + packed.dtype() + " (a quant_storage for FSDP) is not supported" : ""));
        }
        expectElements(file, weightName, packed, (n + 1) / 2, packedWhy);

        String absmaxName = BnbCheckpointFormat.part(weightName, BnbCheckpointFormat.ABSMAX);
        expect(file, absmaxName, spec.doubleQuant() ? DType.U8 : DType.F32, new long[] {spec.blocks(n)},
                spec.doubleQuant() ? "one 8-bit code per block of " + spec.blockSize() + " (double quantization)"
                        : "one scale per block of " + spec.blockSize());
        String mapName = BnbCheckpointFormat.part(weightName, BnbCheckpointFormat.QUANT_MAP);
        expect(file, mapName, DType.F32, new long[] {16}, "the " + type.bnbName() + " code table");
        checkCodeTable(file, mapName, type);
        String nestedAbsmax = BnbCheckpointFormat.part(weightName, BnbCheckpointFormat.NESTED_ABSMAX);
        String nestedMap = BnbCheckpointFormat.part(weightName, BnbCheckpointFormat.NESTED_QUANT_MAP);
        if (spec.doubleQuant()) {
            expect(file, nestedAbsmax, DType.F32, new long[] {spec.nestedBlocks(n)},
                    "one scale per " + QuantSpec.NESTED_BLOCK_SIZE + " absmax codes");
            expect(file, nestedMap, DType.F32, new long[] {256}, "the 8-bit dynamic map of the absmax codes");
        } else {
            for (String stray : List.of(nestedAbsmax, nestedMap)) {
                if (file.contains(stray)) {
                    throw new IllegalArgumentException(where(file, stray) + ": present, but the quant state "
                            + stateName + " has no nested_offset, so the weight is not double-quantized; the parts do"
                            + " not belong together");
                }
            }
        }
        return new StoredWeight(weightName, state, spec, file);
    }

    private static void checkCodeTable(SafetensorsModel file, String mapName, QuantType type) {
        MemorySegment data = file.data(mapName);
        float[] expected = BnbCheckpointFormat.quantMap(type);
        for (int i = 0; i < 16; i++) {
            float v = data.get(F32_LE, 4L * i);
            if (v != expected[i]) {
                throw new IllegalArgumentException(where(file, mapName) + ": entry " + i + " is " + v + " but bitsandbytes'"
                        + " " + type.bnbName() + " table has " + expected[i] + "; lora4j decodes with the standard "
                        + type.bnbName() + " table, so it cannot read this weight correctly");
            }
        }
    }

    private static TensorInfo require(SafetensorsModel file, String weightName, String name) {
        if (!file.contains(name)) {
            throw new IllegalArgumentException("tensor " + name + " is missing from the weights of " + file.folder()
                    + ": the 4-bit weight " + weightName + " needs it (its quant state is there). The checkpoint is"
                    + " incomplete: save or download it again");
        }
        return file.info(name);
    }

    private static void expect(SafetensorsModel file, String name, DType dtype, long[] shape, String why) {
        String weightName = name.substring(0, name.lastIndexOf('.'));
        TensorInfo info = require(file, weightName, name);
        if (info.dtype() != dtype || !Arrays.equals(info.shape(), shape)) {
            throw new IllegalArgumentException(where(file, name) + ": is " + describe(info) + " but should be " + dtype
                    + " " + Arrays.toString(shape) + ", " + why);
        }
    }

    /** transformers writes the codes as [n, 1]; older tools wrote [1, n] or [n]: the bytes are the same. */
    private static void expectElements(SafetensorsModel file, String name, TensorInfo info, long elements, String why) {
        long[] s = info.shape();
        boolean vector = s.length == 1 || (s.length == 2 && (s[0] == 1 || s[1] == 1));
        if (!vector || info.numel() != elements) {
            throw new IllegalArgumentException(where(file, name) + ": is " + describe(info) + " but should be U8 "
                    + Arrays.toString(new long[] {elements, 1}) + ", " + why);
        }
    }

    private static String describe(TensorInfo info) {
        return info.dtype() + " " + Arrays.toString(info.shape());
    }

    private static String where(SafetensorsModel file, String name) {
        return "tensor " + name + " in " + file.fileOf(name);
    }

    static long numel(long[] shape) {
        long n = 1;
        for (long d : shape) n = Math.multiplyExact(n, d);
        return n;
    }
}
