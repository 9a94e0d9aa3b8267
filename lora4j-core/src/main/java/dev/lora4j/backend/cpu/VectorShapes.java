package dev.lora4j.backend.cpu;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;

import static jdk.incubator.vector.VectorOperators.EQ;
import static jdk.incubator.vector.VectorOperators.LSHL;
import static jdk.incubator.vector.VectorOperators.S2I;
import static jdk.incubator.vector.VectorOperators.ZERO_EXTEND_S2I;

/**
 * The vector species the CPU kernels use (the widest this CPU runs natively) and the loads that widen 16-bit
 * floats to F32 inside vector registers.
 *
 * <p>Each kernel loop is written for one storage dtype: a loop whose vectors may come from differently typed
 * loads (a branch on the dtype inside the loop) makes the JIT box the vectors and runs an order of magnitude
 * slower, so the dtype is chosen once, outside the loop.
 */
final class VectorShapes {
    static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    /** Shorts of half F's bit size: one load of these widens to exactly one F vector. */
    static final VectorSpecies<Short> H = VectorSpecies.of(short.class, VectorShape.forBitSize(F.vectorBitSize() / 2));
    static final VectorSpecies<Integer> I = F.withLanes(int.class);
    static final int L = F.length();
    static final ByteOrder LE = ByteOrder.LITTLE_ENDIAN;

    private VectorShapes() {}

    static FloatVector f32(MemorySegment s, long byteOffset) {
        return FloatVector.fromMemorySegment(F, s, byteOffset, LE);
    }

    /** bf16 is the top half of an F32: widen, shift into place, reinterpret. Exact. */
    static FloatVector bf16(MemorySegment s, long byteOffset) {
        return ((IntVector) ShortVector.fromMemorySegment(H, s, byteOffset, LE).convertShape(S2I, I, 0))
                .lanewise(LSHL, 16).reinterpretAsFloats();
    }

    /**
     * IEEE half to F32, exact for every one of the 65536 encodings: exponent and mantissa moved into an F32's
     * places and multiplied by 2^112 (which rebiases the exponent from 15 to 127 and turns half subnormals into
     * F32 normals without rounding); infinities and NaNs get the all-ones F32 exponent; the sign is put back.
     */
    static FloatVector f16(MemorySegment s, long byteOffset) {
        IntVector h = (IntVector) ShortVector.fromMemorySegment(H, s, byteOffset, LE).convertShape(ZERO_EXTEND_S2I, I, 0);
        IntVector magnitude = h.and(0x7fff).lanewise(LSHL, 13);
        FloatVector finite = magnitude.reinterpretAsFloats().mul(0x1p112f);
        VectorMask<Integer> infOrNan = h.and(0x7c00).compare(EQ, 0x7c00);
        IntVector bits = finite.reinterpretAsInts().blend(magnitude.or(0x7f800000), infOrNan);
        return bits.or(h.and(0x8000).lanewise(LSHL, 16)).reinterpretAsFloats();
    }

    static String describe() {
        return "Vector API " + F.vectorBitSize() + "-bit (" + L + " floats per vector)";
    }
}
