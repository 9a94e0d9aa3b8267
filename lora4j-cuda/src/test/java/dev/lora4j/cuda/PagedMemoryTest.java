package dev.lora4j.cuda;

import dev.lora4j.backend.MemoryPlacement;
import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Where paged optimizer state goes, by the device's free memory and what it supports (no GPU needed). */
class PagedMemoryTest {
    private static final long MIB = 1L << 20;

    @Test
    void managedMemoryOnlyWhileItFitsInTheFreeMemoryWithTheHeadroomToSpare() {
        long free = 10_000 * MIB;
        assertThat(PagedMemory.choose(free - PagedMemory.HEADROOM, free, true, true)).isEqualTo(MemoryPlacement.MANAGED);
        assertThat(PagedMemory.choose(free - PagedMemory.HEADROOM + 1, free, true, true)).isEqualTo(MemoryPlacement.MAPPED_HOST);
        assertThat(PagedMemory.choose(1, PagedMemory.HEADROOM / 2, true, true)).as("a nearly full device").isEqualTo(MemoryPlacement.MAPPED_HOST);
    }

    @Test
    void withoutManagedMemoryStateThatFitsIsDeviceMemoryAndTheRestMappedHostMemory() {
        long free = 10_000 * MIB;
        assertThat(PagedMemory.choose(100 * MIB, free, false, true)).isEqualTo(MemoryPlacement.DEVICE);
        assertThat(PagedMemory.choose(free, free, false, true)).isEqualTo(MemoryPlacement.MAPPED_HOST);
    }

    @Test
    void aDeviceWithNeitherKindAndNoRoomIsAnErrorThatSaysSo() {
        assertThatThrownBy(() -> PagedMemory.choose(2000 * MIB, 1000 * MIB, true, false)).isInstanceOf(CudaException.class)
                .hasMessageContaining("cannot allocate 2000.0 MiB of paged optimizer state").hasMessageContaining("1000.0 MiB free");
    }
}
