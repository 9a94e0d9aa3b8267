package dev.lora4j.backend;

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
        List<String> notices = new ArrayList<>();
        try (Backend b = Backends.open("cuda", notices::add)) {
            assertThat(b.name()).isEqualTo("cpu");
        }
        assertThat(notices).singleElement().asString().contains("CUDA backend unavailable").contains("running on the CPU");
    }

    @Test
    void autoFallsBackSilently() {
        List<String> notices = new ArrayList<>();
        try (Backend b = Backends.open(null, notices::add)) {
            assertThat(b.name()).isEqualTo("cpu");
        }
        assertThat(notices).isEmpty();
    }

    @Test
    void anUnknownDeviceIsRejectedNamingTheChoices() {
        assertThatThrownBy(() -> Backends.open("tpu", s -> {})).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("'tpu'").hasMessageContaining("cpu, cuda or auto");
    }
}
