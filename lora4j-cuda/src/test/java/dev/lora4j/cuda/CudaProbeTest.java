package dev.lora4j.cuda;

import dev.lora4j.backend.Backend;
import dev.lora4j.backend.BackendProvider;
import dev.lora4j.backend.Backends;
import dev.lora4j.backend.cpu.CpuBackend;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

/** How the CUDA backend reports itself where it cannot run. These run on any machine, with or without a GPU. */
class CudaProbeTest {

    @Test
    void withoutTheDriverLibraryTheProbeSaysSoInOneLine(@TempDir Path empty) {
        LibrarySearch noDriver = new LibrarySearch(List.of("libcuda.so.1"), List.of(empty), false, null);
        LibrarySearch noCublas = new LibrarySearch(List.of("libcublasLt.so.13"), List.of(empty), false, null);

        CudaPlatform.Status status = CudaPlatform.load(noDriver, noCublas);
        BackendProvider.Availability a = CudaProbe.probe(status, 0);

        assertThat(status.usable()).isFalse();
        assertThat(a.available()).isFalse();
        assertThat(a.detail()).isEqualTo("libcuda.so.1 not found (searched " + empty + ")");
    }

    @Test
    void theProviderIsFoundByTheCoreUnderTheNameCuda() {
        assertThat(Backends.providers())
                .filteredOn(p -> p instanceof CudaBackendProvider)
                .singleElement()
                .satisfies(p -> assertThat(p.name()).isEqualTo("cuda"));
    }

    @Test
    void theProbeNeverThrowsAndAnswersInOneLine() {
        BackendProvider.Availability a = new CudaBackendProvider().probe();

        assertThat(a.detail()).isNotBlank().doesNotContain("\n");
    }

    @Test
    void askingForCudaWhereItCannotRunFallsBackToTheCpuWithOneNotice() {
        BackendProvider.Availability a = new CudaBackendProvider().probe();
        assumeFalse(a.available(), "this machine can run the CUDA backend");
        List<String> notices = new ArrayList<>();

        try (Backend b = Backends.open("cuda", notices::add)) {
            assertThat(b).isInstanceOf(CpuBackend.class);
        }
        assertThat(notices).containsExactly("CUDA backend unavailable: " + a.detail() + "; running on the CPU.");
    }

    @Test
    void openingWhereCudaCannotRunFailsWithTheProbesReason() {
        BackendProvider.Availability a = new CudaBackendProvider().probe();
        assumeFalse(a.available(), "this machine can run the CUDA backend");

        assertThatThrownBy(CudaBackend::open)
                .isInstanceOf(CudaException.class)
                .hasMessage("CUDA backend unavailable: " + a.detail());
    }

    @Test
    void aDeviceNumberThatIsNotANumberIsRejectedClearly() {
        String old = System.getProperty(CudaProbe.DEVICE_PROPERTY);
        System.setProperty(CudaProbe.DEVICE_PROPERTY, "first");
        try {
            BackendProvider.Availability a = new CudaBackendProvider().probe();
            assertThat(a.available()).isFalse();
            assertThat(a.detail()).contains("-Dlora4j.cuda.device=first is not a device number");
        } finally {
            if (old == null) System.clearProperty(CudaProbe.DEVICE_PROPERTY);
            else System.setProperty(CudaProbe.DEVICE_PROPERTY, old);
        }
    }
}
