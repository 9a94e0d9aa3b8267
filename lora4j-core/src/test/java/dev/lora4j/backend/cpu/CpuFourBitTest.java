package dev.lora4j.backend.cpu;

import dev.lora4j.backend.testing.RandomTensors;
import dev.lora4j.backend.testing.ReferenceOps;
import dev.lora4j.quant.HostQuantizer;
import dev.lora4j.quant.QuantSpec;
import dev.lora4j.quant.QuantType;
import dev.lora4j.quant.QuantizedArrays;
import dev.lora4j.quant.QuantizedTensor;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static dev.lora4j.backend.testing.TensorAssert.assertClose;
import static dev.lora4j.backend.testing.TensorAssert.assertSameFloats;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * The CPU backend's 4-bit ops: quantize4bit gives HostQuantizer's bytes, dequantize4bit its values, and the two
 * products with a quantized weight are exactly the dense products with the weight bitsandbytes' matmul would use
 * (dequantized to the original dtype, then cast to the compute dtype).
 */
class CpuFourBitTest {
    private static final CpuBackend CPU = new CpuBackend(3);
    private final RandomTensors random = new RandomTensors(21);

    @AfterAll
    static void close() {
        CPU.close();
    }

    private static byte[] bytes(Tensor t) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment host = arena.allocate(t.byteSize());
            CPU.copyToHost(t, host);
            return host.toArray(ValueLayout.JAVA_BYTE);
        }
    }

    @Test
    void quantize4bitGivesTheHostQuantizersBytesFromEveryFloatDtype() {
        float[] values = random.gaussian(37 * 53, 0.05); // odd element count: a padding nibble
        for (DType dtype : new DType[] {DType.F32, DType.BF16, DType.F16}) {
            float[] held = RandomTensors.representable(values, dtype);
            for (QuantSpec spec : new QuantSpec[] {new QuantSpec(QuantType.NF4, 64, false, DType.F32),
                    new QuantSpec(QuantType.FP4, 128, true, DType.BF16), QuantSpec.QLORA}) {
                QuantizedArrays expected = HostQuantizer.quantize(held, spec);
                try (Tensor w = CPU.fromFloats(values, dtype, 37, 53); QuantizedTensor q = CPU.quantize4bit(w, spec)) {
                    assertThat(q.shape()).containsExactly(37, 53);
                    assertThat(q.originalType()).isEqualTo(dtype);
                    assertThat(q.spec()).isEqualTo(spec);
                    assertThat(q.dtype()).isEqualTo(DType.U8);
                    assertThat(bytes(q.packed())).containsExactly(expected.packed());
                    if (spec.doubleQuant()) {
                        assertThat(bytes(q.absmax())).containsExactly(expected.absmaxCodes());
                        assertThat(CPU.toFloats(q.nestedAbsmax())).containsExactly(expected.nestedAbsmax());
                        assertThat(CPU.toFloats(q.nestedCode())).containsExactly(expected.nestedCode());
                        assertThat(q.nestedOffset()).isEqualTo(expected.nestedOffset());
                    } else {
                        assertThat(CPU.toFloats(q.absmax())).containsExactly(expected.absmax());
                        assertThat(q.nestedAbsmax()).isNull();
                    }
                    assertThat(q.byteSize()).isEqualTo(spec.bytesFor(37 * 53));
                }
            }
        }
    }

    @Test
    void quantizedArraysGoOntoABackendAndComeBackUnchanged() {
        float[] values = random.gaussian(3 * 700, 0.1);
        for (QuantSpec spec : new QuantSpec[] {QuantSpec.QLORA, new QuantSpec(QuantType.FP4, 64, false, DType.F16)}) {
            QuantizedArrays host = HostQuantizer.quantize(values, spec);
            try (QuantizedTensor q = QuantizedTensor.upload(CPU, host, DType.BF16, 3, 700)) {
                assertThat(q.shape()).containsExactly(3, 700);
                assertThat(q.originalType()).isEqualTo(DType.BF16);
                QuantizedArrays back = q.toArrays();
                assertThat(back.packed()).containsExactly(host.packed());
                assertThat(back.nestedOffset()).isEqualTo(host.nestedOffset());
                for (int b = 0; b < host.blocks(); b++) assertThat(back.blockAbsmax(b)).isEqualTo(host.blockAbsmax(b));
            }
            assertThatThrownBy(() -> QuantizedTensor.upload(CPU, host, DType.BF16, 3, 7)).hasMessageContaining("elements");
        }
    }

    @Test
    void dequantize4bitGivesTheHostQuantizersValuesInTheOutputDtype() {
        float[] values = random.gaussian(300 * 70 + 1, 1.0);
        for (QuantSpec spec : new QuantSpec[] {new QuantSpec(QuantType.NF4, 64, true, DType.BF16),
                new QuantSpec(QuantType.FP4, 4096, false, DType.F16)}) {
            QuantizedArrays host = HostQuantizer.quantize(values, spec);
            try (Tensor w = CPU.fromFloats(values, DType.F32, values.length); QuantizedTensor q = CPU.quantize4bit(w, spec)) {
                for (DType out : new DType[] {DType.F32, DType.BF16, DType.F16}) {
                    try (Tensor o = CPU.allocate(out, values.length)) {
                        CPU.dequantize4bit(q, o);
                        assertSameFloats(spec + " to " + out, CPU.toFloats(o), HostQuantizer.dequantize(host, out));
                    }
                }
                try (Tensor wrong = CPU.allocate(DType.F32, 5)) {
                    assertThatThrownBy(() -> CPU.dequantize4bit(q, wrong)).hasMessageContaining("elements");
                }
                try (Tensor wrong = CPU.allocate(DType.I32, values.length)) {
                    assertThatThrownBy(() -> CPU.dequantize4bit(q, wrong)).hasMessageContaining("F32, BF16 or F16");
                }
            }
        }
    }

    /** The dense weight bitsandbytes' 4-bit matmul multiplies by, as a tensor of the compute dtype. */
    private static Tensor denseMatmulWeight(QuantizedTensor q) {
        try (Tensor f32 = CPU.allocate(DType.F32, q.shape())) {
            CPU.dequantize4bit(q, f32);
            float[] v = CPU.toFloats(f32);
            for (int i = 0; i < v.length; i++) v[i] = HostQuantizer.matmulValue(v[i], q.originalType(), q.spec().computeType());
            return CPU.fromFloats(v, q.spec().computeType(), q.shape());
        }
    }

    @Test
    void matmulWithAQuantizedWeightIsTheDenseMatmulWithItsDequantizedWeight() {
        int[][] shapes = {{1, 64, 5}, {3, 96, 64}, {7, 201, 67}, {130, 128, 40}, {2, 1000, 33}};
        QuantSpec[] specs = {QuantSpec.QLORA, new QuantSpec(QuantType.FP4, 64, false, DType.F32),
                new QuantSpec(QuantType.NF4, 256, false, DType.F16)};
        for (int[] s : shapes) {
            int n = s[0], k = s[1], m = s[2];
            for (QuantSpec spec : specs) {
                for (DType original : new DType[] {DType.BF16, DType.F32}) {
                    float[] w = random.gaussian(m * k, 0.02), x = random.uniform(n * k, -1, 1), init = random.uniform(n * m, -1, 1);
                    try (Tensor wt = CPU.fromFloats(w, original, m, k); QuantizedTensor q = CPU.quantize4bit(wt, spec);
                         Tensor dense = denseMatmulWeight(q); Tensor xt = CPU.fromFloats(x, DType.F32, n, k)) {
                        for (boolean accumulate : new boolean[] {false, true}) {
                            try (Tensor expected = CPU.fromFloats(init, DType.F32, n, m); Tensor actual = CPU.fromFloats(init, DType.F32, n, m)) {
                                CPU.matmul(xt, dense, expected, accumulate);
                                CPU.matmul(xt, q, actual, accumulate);
                                assertSameFloats(n + "x" + k + "x" + m + " " + spec + " from " + original + (accumulate ? " accumulating" : ""),
                                        CPU.toFloats(actual), CPU.toFloats(expected));
                            }
                        }
                    }
                }
            }
        }
    }

    @Test
    void matmulBackwardInputWithAQuantizedWeightIsTheDenseOneWithItsDequantizedWeight() {
        int[][] shapes = {{1, 64, 5}, {5, 300, 70}, {37, 129, 250}, {300, 64, 17}};
        for (int[] s : shapes) {
            int n = s[0], k = s[1], m = s[2];
            for (QuantSpec spec : new QuantSpec[] {QuantSpec.QLORA, new QuantSpec(QuantType.FP4, 128, true, DType.F32)}) {
                float[] w = random.gaussian(m * k, 0.02), dy = random.uniform(n * m, -1, 1), init = random.uniform(n * k, -1, 1);
                try (Tensor wt = CPU.fromFloats(w, DType.BF16, m, k); QuantizedTensor q = CPU.quantize4bit(wt, spec);
                     Tensor dense = denseMatmulWeight(q); Tensor dyt = CPU.fromFloats(dy, DType.F32, n, m)) {
                    for (boolean accumulate : new boolean[] {false, true}) {
                        try (Tensor expected = CPU.fromFloats(init, DType.F32, n, k); Tensor actual = CPU.fromFloats(init, DType.F32, n, k)) {
                            CPU.matmulBackwardInput(dyt, dense, expected, accumulate);
                            CPU.matmulBackwardInput(dyt, q, actual, accumulate);
                            assertSameFloats("dX " + n + "x" + k + "x" + m + " " + spec + (accumulate ? " accumulating" : ""),
                                    CPU.toFloats(actual), CPU.toFloats(expected));
                        }
                    }
                }
            }
        }
    }

    @Test
    void theProductsAgreeWithADoublePrecisionReferenceOnTheDequantizedWeight() {
        int n = 9, k = 320, m = 48;
        float[] w = random.gaussian(m * k, 0.05), x = random.uniform(n * k, -1, 1);
        try (Tensor wt = CPU.fromFloats(w, DType.F32, m, k); QuantizedTensor q = CPU.quantize4bit(wt, QuantSpec.QLORA);
             Tensor xt = CPU.fromFloats(x, DType.F32, n, k); Tensor out = CPU.allocate(DType.F32, n, m)) {
            float[] dequantized = RandomTensors.representable(HostQuantizer.dequantize(HostQuantizer.quantize(w, QuantSpec.QLORA), DType.F32), DType.BF16);
            CPU.matmul(xt, q, out);
            assertClose("quantized matmul", CPU.toFloats(out), ReferenceOps.matmul(x, dequantized, n, k, m, null), 1e-5, 1e-5);
        }
    }

    @Test
    void theQuantizedProductsDoNotDependOnTheNumberOfThreads() {
        int n = 33, k = 192, m = 150;
        float[] w = random.gaussian(m * k, 0.02), x = random.uniform(n * k, -1, 1), dy = random.uniform(n * m, -1, 1);
        float[][] reference = null;
        for (int threads : new int[] {1, 4, 16}) {
            try (CpuBackend b = new CpuBackend(threads); Tensor wt = b.fromFloats(w, DType.BF16, m, k);
                 QuantizedTensor q = b.quantize4bit(wt, QuantSpec.QLORA); Tensor xt = b.fromFloats(x, DType.F32, n, k);
                 Tensor dyt = b.fromFloats(dy, DType.F32, n, m); Tensor out = b.allocate(DType.F32, n, m);
                 Tensor dx = b.allocate(DType.F32, n, k)) {
                b.matmul(xt, q, out);
                b.matmulBackwardInput(dyt, q, dx, false);
                float[][] results = {b.toFloats(out), b.toFloats(dx)};
                if (reference == null) reference = results;
                else {
                    assertSameFloats("matmul on " + threads + " threads", results[0], reference[0]);
                    assertSameFloats("matmulBackwardInput on " + threads + " threads", results[1], reference[1]);
                }
            }
        }
    }

    @Test
    void badArgumentsAreRejectedWithTheirShapes() {
        try (Tensor wt = CPU.fromFloats(random.gaussian(64 * 8, 1), DType.F32, 8, 64); QuantizedTensor q = CPU.quantize4bit(wt, QuantSpec.QLORA);
             Tensor x = CPU.allocate(DType.F32, 2, 32); Tensor out = CPU.allocate(DType.F32, 2, 8);
             Tensor x16 = CPU.allocate(DType.BF16, 2, 64); Tensor ints = CPU.allocate(DType.I32, 8, 64)) {
            assertThatThrownBy(() -> CPU.matmul(x, q, out)).hasMessageContaining("matmul shapes");
            assertThatThrownBy(() -> CPU.matmul(x16, q, out)).hasMessageContaining("must be F32");
            assertThatThrownBy(() -> CPU.matmulBackwardInput(out, q, x, false)).hasMessageContaining("matmulBackwardInput shapes");
            assertThatThrownBy(() -> CPU.quantize4bit(ints, QuantSpec.QLORA)).hasMessageContaining("F32, BF16 or F16");
            assertThatThrownBy(() -> q.view(0, 4)).isInstanceOf(UnsupportedOperationException.class);
        }
        try (Tensor nan = CPU.fromFloats(new float[] {1f, Float.NaN, 2f, 3f}, DType.F32, 2, 2)) {
            assertThatThrownBy(() -> CPU.quantize4bit(nan, QuantSpec.QLORA)).hasMessageContaining("element 1").hasMessageContaining("[2, 2]");
        }
    }
}
