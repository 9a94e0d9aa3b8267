package dev.lora4j.cuda;

import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;

/**
 * Where the time of a run goes, op by op. With {@code -Dlora4j.cuda.profile=true} the backend waits for the device
 * after every op and charges the time since the previous op ended (the op's kernels plus the host work that
 * launched it) to the op's name. Waiting serialises host and device, so totals are an upper bound on a normal run;
 * the split between ops is what this is for. With {@code -Dlora4j.cuda.profile=events} nothing waits: the stream
 * records an event after every op ({@link CudaDeviceOpProfile}), and each op is charged the device time between the
 * previous event and its own, which is its kernels' time whenever the host keeps ahead of the device.
 */
class CudaOpProfile {
    static final String PROPERTY = "lora4j.cuda.profile";

    /** The profile the property asks for, or null: "true" host clock and waits, "events" device clock. */
    static CudaOpProfile fromProperty(CudaDriver cu, java.lang.foreign.MemorySegment stream) {
        String mode = System.getProperty(PROPERTY, "false");
        return switch (mode.trim().toLowerCase(java.util.Locale.ROOT)) {
            case "false", "" -> null;
            case "true" -> new CudaOpProfile();
            case "events" -> {
                if (!cu.hasEvents()) {
                    throw new IllegalArgumentException("-D" + PROPERTY + "=events: the CUDA driver library "
                            + cu.origin() + " has no event calls; use -D" + PROPERTY + "=true");
                }
                yield new CudaDeviceOpProfile(cu, stream);
            }
            default -> throw new IllegalArgumentException("-D" + PROPERTY + "=" + mode + ": use true (host clock, waits "
                    + "after every op) or events (device clock, no waiting)");
        };
    }

    private record Entry(long count, long nanos) {}

    private final Map<String, Entry> entries = new TreeMap<>();
    private long last = System.nanoTime();

    /** Whether the backend must wait for the device after every op for this profile's clock. */
    boolean waitsEachOp() { return true; }

    /** Restarts the clock: time spent outside ops (data loading, the optimizer's host side) is not charged. */
    synchronized void mark() {
        last = System.nanoTime();
    }

    synchronized void charge(String op) {
        long now = System.nanoTime();
        add(op, now - last);
        last = now;
    }

    final synchronized void add(String op, long nanos) {
        entries.merge(op, new Entry(1, nanos), (a, b) -> new Entry(a.count + b.count, a.nanos + b.nanos));
    }

    synchronized void reset() {
        entries.clear();
        last = System.nanoTime();
    }

    /** Releases what the profile holds on the device. */
    void close() {}

    /** One line per op, the most expensive first: calls, total milliseconds, share of the total. */
    synchronized String report() {
        long total = entries.values().stream().mapToLong(Entry::nanos).sum();
        StringBuilder sb = new StringBuilder(String.format(Locale.ROOT, "%-28s %8s %12s %7s%n", "op", "calls", "ms", "share"));
        entries.entrySet().stream()
                .sorted((a, b) -> Long.compare(b.getValue().nanos, a.getValue().nanos))
                .forEach(e -> sb.append(String.format(Locale.ROOT, "%-28s %8d %12.3f %6.1f%%%n", e.getKey(),
                        e.getValue().count, e.getValue().nanos / 1e6, 100.0 * e.getValue().nanos / Math.max(1, total))));
        sb.append(String.format(Locale.ROOT, "%-28s %8s %12.3f%n", "total", "", total / 1e6));
        return sb.toString();
    }
}
