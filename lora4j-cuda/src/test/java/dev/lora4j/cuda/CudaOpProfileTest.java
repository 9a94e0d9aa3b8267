package dev.lora4j.cuda;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * {@code -Dlora4j.cuda.profile}: off unless asked; "true" is the host clock that waits after every op; anything else
 * but "events" is refused with what to write instead. The host-clock profile charges each op the time since the
 * previous one and leaves out what happened before a mark.
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
