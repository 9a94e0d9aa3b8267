package dev.lora4j.cuda;

import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;

/**
 * Where the time of a run goes, op by op: with {@code -Dlora4j.cuda.profile=true} the backend waits for the device
 * after every op and charges the time since the previous op ended (the op's kernels plus the host work that
 * launched it) to the op's name. Waiting serialises host and device, so totals are an upper bound on a normal run;
 * the split between ops is what this is for.
 */
final class CudaOpProfile {
    static final String PROPERTY = "lora4j.cuda.profile";

    private record Entry(long count, long nanos) {}

    private final Map<String, Entry> entries = new TreeMap<>();
    private long last = System.nanoTime();

    /** Restarts the clock: time spent outside ops (data loading, the optimizer's host side) is not charged. */
    synchronized void mark() {
        last = System.nanoTime();
    }

    synchronized void charge(String op) {
        long now = System.nanoTime();
        entries.merge(op, new Entry(1, now - last), (a, b) -> new Entry(a.count + b.count, a.nanos + b.nanos));
        last = now;
    }

    synchronized void reset() {
        entries.clear();
        last = System.nanoTime();
    }

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
