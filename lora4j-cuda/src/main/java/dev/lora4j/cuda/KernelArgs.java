package dev.lora4j.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * The {@code void** kernelParams} of cuLaunchKernel: an array whose element i points at the value of the kernel's
 * parameter i. Each value gets its own 8-byte slot (the driver reads as many bytes as the kernel's parameter has:
 * 8 for pointers and {@code long long}, 4 for {@code int} and {@code float}). The driver copies the values when the
 * kernel is launched, so one buffer per thread is reused for every launch.
 */
final class KernelArgs {
    private static final int MAX_ARGS = 16;
    private static final ThreadLocal<KernelArgs> PER_THREAD = ThreadLocal.withInitial(KernelArgs::new);

    private final MemorySegment values;
    private final MemorySegment pointers;
    private final int[] sizes = new int[MAX_ARGS];
    private int count;

    private KernelArgs() {
        Arena arena = Arena.ofAuto(); // freed with this thread's buffer
        values = arena.allocate(8L * MAX_ARGS, 8);
        pointers = arena.allocate(ADDRESS.byteSize() * MAX_ARGS, ADDRESS.byteAlignment());
        for (int i = 0; i < MAX_ARGS; i++) pointers.setAtIndex(ADDRESS, i, values.asSlice(8L * i, 8));
    }

    /** This thread's argument buffer, emptied. */
    static KernelArgs start() {
        KernelArgs a = PER_THREAD.get();
        a.count = 0;
        return a;
    }

    /** A device pointer ({@code T*}) or a {@code long long}. */
    KernelArgs i64(long v) {
        values.set(JAVA_LONG, slot(8), v);
        return this;
    }

    KernelArgs ptr(long devicePtr) { return i64(devicePtr); }

    KernelArgs i32(int v) {
        values.set(JAVA_INT, slot(4), v);
        return this;
    }

    KernelArgs f32(float v) {
        values.set(JAVA_FLOAT, slot(4), v);
        return this;
    }

    /** The {@code void**} to pass to cuLaunchKernel. */
    MemorySegment pointerArray() { return pointers; }

    int count() { return count; }

    /** The size in bytes of argument i as the kernel must declare it: 8 (pointer, long long) or 4 (int, float). */
    int size(int i) { return sizes[i]; }

    /** The arguments' sizes, for messages: "[8, 8, 4]". */
    String sizes() { return java.util.Arrays.toString(java.util.Arrays.copyOf(sizes, count)); }

    private long slot(int size) {
        if (count == MAX_ARGS) throw new IllegalStateException("more than " + MAX_ARGS + " kernel arguments");
        sizes[count] = size;
        return 8L * count++;
    }
}
