package dev.lora4j.backend;

import dev.lora4j.tensor.DType;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Choosing a device by the name users type; the core alone has no CUDA backend on its class path. */
class BackendsTest {

    @Test
    void cpuOpensTheCpuBackendWhateverTheCase() {
        List<String> notices = new ArrayList<>();
        try (Backend b = Backends.open(" CPU ", notices::add)) {
            assertThat(b.name()).isEqualTo("cpu");
        }
        assertThat(notices).isEmpty();
    }

    @Test
    void cudaWithoutTheCudaModuleFallsBackToTheCpuWithOneNotice() {
        assumeNoCudaModule();
        List<String> notices = new ArrayList<>();
        try (Backend b = Backends.open("cuda", notices::add)) {
            assertThat(b.name()).isEqualTo("cpu");
        }
        assertThat(notices).singleElement().asString().contains("CUDA backend unavailable").contains("running on the CPU");
    }

    @Test
    void autoFallsBackSilently() {
        assumeNoCudaModule();
        List<String> notices = new ArrayList<>();
        try (Backend b = Backends.open(null, notices::add)) {
            assertThat(b.name()).isEqualTo("cpu");
        }
        assertThat(notices).isEmpty();
    }

    @Test
    void theCpuKeepsF32ActivationsAndSaysSoWhenBf16IsAsked() {
        List<String> notices = new ArrayList<>();
        try (Backend b = Backends.open("cpu", DType.BF16, notices::add)) {
            assertThat(b.activationType()).isEqualTo(DType.F32);
        }
        assertThat(notices).singleElement().asString().contains("keeps activations in F32").contains("BF16 activations apply on CUDA");
        notices.clear();
        try (Backend b = Backends.open("cpu", DType.F32, notices::add)) {
            assertThat(b.activationType()).isEqualTo(DType.F32);
        }
        assertThat(notices).isEmpty();
    }

    @Test
    void aProviderWithOneActivationTypeRefusesAnother() {
        BackendProvider cpuOnly = new BackendProvider() {
            @Override public String name() { return "test"; }
            @Override public Availability probe() { return Availability.available("always"); }
            @Override public Backend open() { return new dev.lora4j.backend.cpu.CpuBackend(); }
        };
        try (Backend b = cpuOnly.open((DType) null)) {
            assertThat(b.activationType()).isEqualTo(DType.F32);
        }
        assertThatThrownBy(() -> cpuOnly.open(DType.BF16)).isInstanceOf(IllegalArgumentException.class)
                .hasMessage("the test backend keeps activations in F32, not BF16");
    }

    @Test
    void anUnknownDeviceIsRejectedNamingTheChoices() {
        assertThatThrownBy(() -> Backends.open("tpu", s -> {})).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("'tpu'").hasMessageContaining("cpu, cuda or auto");
    }

    /** These cases are about a class path without lora4j-cuda (as in this module's own test run). */
    private static void assumeNoCudaModule() {
        org.junit.jupiter.api.Assumptions.assumeTrue(Backends.providers().isEmpty(),
                "lora4j-cuda is on the class path here: its own tests cover the fallback with the module present");
    }
}
