package dev.lora4j.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;

/**
 * The op profile on the device's clock ({@code -Dlora4j.cuda.profile=events}): an event recorded on the stream after
 * every op, and at {@link #mark()}, and nothing waited for; {@link #report()} waits once and charges each op the
 * time between the event before it and its own. Events are reused from a pool, so a long run creates only as many
 * as one report spans.
 */
final class CudaDeviceOpProfile extends CudaOpProfile {
    /** CU_EVENT_DEFAULT: timing on (CU_EVENT_DISABLE_TIMING would make elapsed times unavailable). */
    private static final int CU_EVENT_DEFAULT = 0;

    private record Recorded(String op, MemorySegment event) {}

    private final CudaDriver cu;
    private final MemorySegment stream;
    private final ArrayDeque<MemorySegment> free = new ArrayDeque<>();
    private final List<MemorySegment> all = new ArrayList<>();
    /** Events since the last report; a null op is a mark, which starts the next op's clock without being charged. */
    private final List<Recorded> pending = new ArrayList<>();

    CudaDeviceOpProfile(CudaDriver cu, MemorySegment stream) {
        this.cu = cu;
        this.stream = stream;
        record(null);
    }

    @Override
    boolean waitsEachOp() { return false; }

    @Override
    synchronized void mark() { record(null); }

    @Override
    synchronized void charge(String op) { record(op); }

    @Override
    synchronized void reset() {
        super.reset();
        recycle();
        record(null);
    }

    @Override
    synchronized String report() {
        if (pending.size() > 1) {
            MemorySegment last = pending.getLast().event();
            cu.check(cu.eventSynchronize(last), "cuEventSynchronize (op profile)");
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment ms = arena.allocate(JAVA_FLOAT);
                for (int i = 1; i < pending.size(); i++) {
                    Recorded r = pending.get(i);
                    if (r.op() == null) continue;
                    cu.check(cu.eventElapsedTime(ms, pending.get(i - 1).event(), r.event()), "cuEventElapsedTime");
                    add(r.op(), Math.round(ms.get(JAVA_FLOAT, 0) * 1e6));
                }
            }
            MemorySegment keep = last;
            pending.removeLast();
            recycle();
            pending.add(new Recorded(null, keep));
        }
        return super.report();
    }

    @Override
    synchronized void close() {
        pending.clear();
        free.clear();
        for (MemorySegment e : all) cu.eventDestroy(e);
        all.clear();
    }

    private void record(String op) {
        MemorySegment event = free.poll();
        if (event == null) {
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment out = arena.allocate(ADDRESS);
                cu.check(cu.eventCreate(out, CU_EVENT_DEFAULT), "cuEventCreate (op profile)");
                event = out.get(ADDRESS, 0);
            }
            all.add(event);
        }
        cu.check(cu.eventRecord(event, stream), "cuEventRecord (op profile)");
        pending.add(new Recorded(op, event));
    }

    private void recycle() {
        for (Recorded r : pending) free.add(r.event());
        pending.clear();
    }
}
