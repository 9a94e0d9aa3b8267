package dev.lora4j.backend;

import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Half;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Element conversions of host buffers: what uploads and downloads of every backend rely on. */
class HostConversionsTest {

    @Test
    void bf16RoundsTiesToEvenAndKeepsNanANan() {
        // 1 + 2^-8 lies halfway between the bf16 neighbours 1 and 1 + 2^-7: even is 1.
        assertThat(Half.bf16ToFloat(Half.floatToBf16(1f + 0x1p-8f))).isEqualTo(1f);
        // 1 + 3·2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6.
        assertThat(Half.bf16ToFloat(Half.floatToBf16(1f + 3 * 0x1p-8f))).isEqualTo(1f + 0x1p-6f);
        assertThat(Half.bf16ToFloat(Half.floatToBf16(1f + 0x1p-8f + 0x1p-20f))).isEqualTo(1f + 0x1p-7f);
        assertThat(Half.bf16ToFloat(Half.floatToBf16(Float.NaN))).isNaN();
        assertThat(Half.bf16ToFloat(Half.floatToBf16(Float.MAX_VALUE))).isEqualTo(Float.POSITIVE_INFINITY);
    }

    @Test
    void convertWidensAndNarrowsEveryFloatPairAndCopiesSameTypes() {
        float[] values = {0f, -0f, 1.5f, -2.25f, 65504f, 1e-8f, Float.POSITIVE_INFINITY};
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment f32 = arena.allocateFrom(ValueLayout.JAVA_FLOAT, values);
            for (DType d : new DType[] {DType.F64, DType.F32, DType.F16, DType.BF16}) {
                MemorySegment narrow = arena.allocate(d.bytesFor(values.length));
                HostConversions.convert(f32, DType.F32, narrow, d, values.length);
                MemorySegment back = arena.allocate(4L * values.length);
                HostConversions.convert(narrow, d, back, DType.F32, values.length);
                for (int i = 0; i < values.length; i++) {
                    float expected = switch (d) {
                        case F16 -> Half.f16ToFloat(Half.floatToF16(values[i]));
                        case BF16 -> Half.bf16ToFloat(Half.floatToBf16(values[i]));
                        default -> values[i];
                    };
                    assertThat(back.getAtIndex(ValueLayout.JAVA_FLOAT, i)).as("%s element %d", d, i).isEqualTo(expected);
                }
            }
            MemorySegment ints = arena.allocateFrom(ValueLayout.JAVA_INT, 7, -1, 1 << 30);
            MemorySegment copy = arena.allocate(12);
            HostConversions.convert(ints, DType.I32, copy, DType.I32, 3);
            assertThat(copy.toArray(ValueLayout.JAVA_INT)).containsExactly(7, -1, 1 << 30);
        }
    }

    @Test
    void convertRefusesIntegerAndEightBitFloatConversionsNamingBothTypes() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment a = arena.allocate(16), b = arena.allocate(16);
            assertThatThrownBy(() -> HostConversions.convert(a, DType.I32, b, DType.F32, 4)).hasMessageContaining("I32 to F32");
            assertThatThrownBy(() -> HostConversions.convert(a, DType.F8_E4M3, b, DType.F32, 4)).hasMessageContaining("F8_E4M3");
            assertThatThrownBy(() -> HostConversions.getFloat(a, DType.U8, 0)).hasMessageContaining("not a float dtype");
        }
    }

    @Test
    void toFloatsRefusesMoreElementsThanAnArrayHolds() {
        assertThatThrownBy(() -> HostConversions.toFloats(MemorySegment.NULL, DType.F32, 1L << 31))
                .hasMessageContaining("too many elements");
    }
}
