package dev.lora4j.backend.cpu;

import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.ForkJoinTask;
import java.util.concurrent.RecursiveAction;

/** Runs the iterations of a loop on the backend's fork-join pool, split into ranges the workers steal. */
final class Parallel {
    /** The body of a parallel loop: handles iterations [from, to). */
    @FunctionalInterface
    interface RangeBody {
        void run(int from, int to);
    }

    private final ForkJoinPool pool;
    private final int threads;

    Parallel(ForkJoinPool pool, int threads) {
        this.pool = pool;
        this.threads = threads;
    }

    /**
     * Runs {@code body} over [0, count) in ranges of at least {@code grain} iterations, about four ranges per
     * thread so that a slow worker is made up for by the others. Runs on the calling thread when one range
     * would do.
     */
    void forRange(int count, int grain, RangeBody body) {
        if (count <= 0) return;
        int chunk = Math.max(Math.max(1, grain), ceilDiv(count, threads * 4));
        if (threads == 1 || count <= chunk) {
            body.run(0, count);
            return;
        }
        Ranges task = new Ranges(0, count, chunk, body);
        if (ForkJoinTask.getPool() == pool) task.invoke(); // nested: already on one of our workers
        else pool.invoke(task);
    }

    /** One task per iteration (each is a large piece of work). */
    void forEach(int count, java.util.function.IntConsumer body) {
        forRange(count, 1, (from, to) -> {
            for (int i = from; i < to; i++) body.accept(i);
        });
    }

    static int ceilDiv(int a, int b) {
        return (a + b - 1) / b;
    }

    private static final class Ranges extends RecursiveAction {
        private final int from, to, chunk;
        private final RangeBody body;

        Ranges(int from, int to, int chunk, RangeBody body) {
            this.from = from;
            this.to = to;
            this.chunk = chunk;
            this.body = body;
        }

        @Override
        protected void compute() {
            if (to - from <= chunk) {
                body.run(from, to);
                return;
            }
            int mid = from + (to - from) / 2;
            invokeAll(new Ranges(from, mid, chunk, body), new Ranges(mid, to, chunk, body));
        }
    }
}
