package dev.lora4j.cuda;

import dev.lora4j.backend.BackendProvider;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * {@code -Dlora4j.cuda.profile}: off unless asked; "true" is the host clock that waits after every op; anything else
 * but "events" is refused with what to write instead. The host-clock profile charges each op the time since the
 * previous one and leaves out what happened before a mark. The device clock ("events") charges every op through a
 * backend on a driver that has event calls (the GPU) and is refused, naming the other mode, on one that has none (the
 * device emulator).
 */
class CudaOpProfileTest {
    @AfterEach
    void clear() {
        System.clearProperty(CudaOpProfile.PROPERTY);
    }

    @Test
    void isOffUnlessAskedForAndTheHostClockWaitsAfterEveryOp() {
        assertThat(CudaOpProfile.fromProperty(null, null)).isNull();
        System.setProperty(CudaOpProfile.PROPERTY, "false");
        assertThat(CudaOpProfile.fromProperty(null, null)).isNull();
        System.setProperty(CudaOpProfile.PROPERTY, " True ");
        CudaOpProfile host = CudaOpProfile.fromProperty(null, null);
        assertThat(host).isNotNull();
        assertThat(host.waitsEachOp()).isTrue();
    }

    @Test
    void anUnknownModeIsRefusedWithTheTwoThatExist() {
        System.setProperty(CudaOpProfile.PROPERTY, "device");
        assertThatThrownBy(() -> CudaOpProfile.fromProperty(null, null))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("-Dlora4j.cuda.profile=device").hasMessageContaining("true").hasMessageContaining("events");
    }

    @Test
    void theDeviceClockChargesEveryOpWhereTheDriverHasEventsAndIsRefusedWhereItHasNone() {
        BackendProvider.Availability a = new CudaBackendProvider().probe();
        assumeTrue(a.available(), "CUDA backend unavailable: " + a.detail());
        System.setProperty(CudaOpProfile.PROPERTY, "events");
        CudaBackend gpu;
        try {
            gpu = CudaBackend.open(CudaProbe.deviceOrdinal(), DType.F32);
        } catch (IllegalArgumentException e) {
            // the device emulator's library has no event calls
            assertThat(e).hasMessageContaining("-Dlora4j.cuda.profile=events").hasMessageContaining("-Dlora4j.cuda.profile=true");
            return;
        }
        try (gpu; Tensor x = gpu.fromFloats(new float[] {1, 2, 3, 4}, DType.F32, 4);
             Tensor y = gpu.fromFloats(new float[] {1, 1, 1, 1}, DType.F32, 4)) {
            gpu.opProfile(true);
            gpu.add(x, y);
            gpu.add(x, y);
            gpu.scale(x, 2f);
            String report = gpu.opProfile(false);
            assertThat(report).containsPattern("add\\s+2\\s").containsPattern("scale\\s+1\\s");
            assertThat(gpu.toFloats(x)).containsExactly(6, 8, 10, 12); // (x + y + y) · 2
        }
    }

    @Test
    void chargesEachOpItsCallsAndTimeAndLeavesOutWhatCameBeforeAMark() throws InterruptedException {
        CudaOpProfile p = new CudaOpProfile();
        Thread.sleep(30);
        p.mark();
        p.charge("matmul");
        p.charge("matmul");
        Thread.sleep(20);
        p.charge("rope");
        String report = p.report();
        assertThat(report).containsPattern("matmul\\s+2\\s");
        assertThat(report).containsPattern("rope\\s+1\\s");
        // rope took the 20 ms sleep; the 30 ms before the mark went to nobody, so the total stays under 30 ms + slack
        double rope = Double.parseDouble(report.lines().filter(l -> l.startsWith("rope")).findFirst().orElseThrow()
                .trim().split("\\s+")[2]);
        double total = Double.parseDouble(report.lines().filter(l -> l.startsWith("total")).findFirst().orElseThrow()
                .trim().split("\\s+")[1]);
        assertThat(rope).isGreaterThanOrEqualTo(19.0);
        assertThat(total).isLessThan(rope + 25.0);
        p.reset();
        assertThat(p.report()).doesNotContain("matmul");
    }
}
