package dev.lora4j.cuda;

import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** How the activation dtype of a CUDA backend is named: -Dlora4j.cuda.activations and CudaBackend.open's argument. */
class CudaActivationsOptionTest {

    @Test
    void bf16AndF32AreNamedAsUsersWriteThem() {
        for (String s : new String[] {"bf16", "BF16", " bfloat16 "}) assertThat(CudaBackend.parseActivations(s, "x")).isEqualTo(DType.BF16);
        for (String s : new String[] {"f32", "FP32", "float32"}) assertThat(CudaBackend.parseActivations(s, "x")).isEqualTo(DType.F32);
    }

    @Test
    void anotherValueIsRefusedNamingWhereItCameFromAndTheChoices() {
        assertThatThrownBy(() -> CudaBackend.parseActivations("fp16", "-Dlora4j.cuda.activations"))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessage("-Dlora4j.cuda.activations=fp16: activations are f32 or bf16");
    }

    @Test
    void withoutThePropertyActivationsAreF32() {
        String before = System.getProperty(CudaBackend.ACTIVATIONS_PROPERTY);
        try {
            System.clearProperty(CudaBackend.ACTIVATIONS_PROPERTY);
            assertThat(CudaBackend.activationsProperty()).isEqualTo(DType.F32);
            System.setProperty(CudaBackend.ACTIVATIONS_PROPERTY, "bf16");
            assertThat(CudaBackend.activationsProperty()).isEqualTo(DType.BF16);
        } finally {
            if (before == null) System.clearProperty(CudaBackend.ACTIVATIONS_PROPERTY);
            else System.setProperty(CudaBackend.ACTIVATIONS_PROPERTY, before);
        }
    }

    @Test
    void openRefusesActivationsOtherThanF32AndBf16BeforeTouchingTheDevice() {
        assertThatThrownBy(() -> CudaBackend.open(0, DType.F16)).isInstanceOf(IllegalArgumentException.class)
                .hasMessage("the CUDA backend keeps activations in F32 or BF16, not F16");
    }
}
