package dev.lora4j.io;

import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.util.Locale;
import java.util.Optional;

/**
 * Gives the pages of a memory-mapped file back to the operating system once their bytes have been copied out, so
 * that loading a model tensor by tensor holds about one tensor of the file in the process, not every page it ever
 * touched (touched pages of a mapping count in the process's resident memory until it is unmapped).
 *
 * <p>It uses Linux's {@code madvise(MADV_DONTNEED)} on the whole pages inside the slice: for a read-only file
 * mapping this only drops the process's page-table entries; the file's bytes stay in the page cache and a later
 * read faults them in again unchanged, so it can never lose or alter data. Pages only partly inside the slice are
 * left alone (they may hold a neighbour's bytes, and rounding outwards could reach another mapping). Elsewhere,
 * or where madvise cannot be found, it does nothing.
 */
public final class MappedPages {
    private static final int MADV_DONTNEED = 4;
    private static final long PAGE = 4096;
    private static final MethodHandle MADVISE = find();

    private MappedPages() {}

    private static MethodHandle find() {
        if (!System.getProperty("os.name", "").toLowerCase(Locale.ROOT).contains("linux")) return null;
        try {
            Linker linker = Linker.nativeLinker();
            Optional<MemorySegment> symbol = linker.defaultLookup().find("madvise");
            return symbol.map(s -> linker.downcallHandle(s, FunctionDescriptor.of(ValueLayout.JAVA_INT,
                    ValueLayout.ADDRESS, ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT))).orElse(null);
        } catch (RuntimeException | LinkageError e) {
            return null;
        }
    }

    /** Whether {@link #release} can give pages back on this system. */
    public static boolean supported() {
        return MADVISE != null;
    }

    /**
     * Drops the whole pages of {@code mapped}, a slice of a read-only file mapping whose bytes the caller has
     * copied and will not read soon; returns the bytes given back (0 where unsupported).
     */
    public static long release(MemorySegment mapped) {
        // Only ever file mappings: on anonymous memory MADV_DONTNEED would zero the pages.
        if (MADVISE == null || !mapped.isNative() || !mapped.isMapped()) return 0;
        long start = mapped.address(), end = start + mapped.byteSize();
        long first = (start + PAGE - 1) & -PAGE, last = end & -PAGE;
        if (last <= first) return 0;
        try {
            int rc = (int) MADVISE.invokeExact(MemorySegment.ofAddress(first), last - first, MADV_DONTNEED);
            return rc == 0 ? last - first : 0;
        } catch (Throwable e) {
            return 0;
        }
    }
}
