package dev.lora4j.backend.cpu;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;

import static jdk.incubator.vector.VectorOperators.LSHL;
import static jdk.incubator.vector.VectorOperators.S2I;

/**
 * The vector species the CPU kernels use (the widest this CPU runs natively) and the loads that widen BF16 to
 * F32 inside vector registers. (F16 has no such load: see {@link FloatConversions#f16ToF32}.)
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

    static String describe() {
        return "Vector API " + F.vectorBitSize() + "-bit (" + L + " floats per vector)";
    }
}
