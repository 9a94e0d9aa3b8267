package dev.lora4j.train.data;

import java.util.ArrayList;
import java.util.List;

/**
 * The order in which samples are visited: a permutation per epoch, drawn from the seed and the epoch number alone,
 * cut into micro-batches of {@code batchSize} samples (the last one of an epoch may be smaller, as a DataLoader
 * with drop_last=False makes it). Any batch of any epoch can be computed without replaying earlier ones.
 */
public final class DataOrder {
    private final int size;
    private final int batchSize;
    private final long seed;
    private final boolean shuffle;
    private long cachedEpoch = -1;
    private int[] cachedPermutation;

    public DataOrder(int size, int batchSize, long seed, boolean shuffle) {
        if (size < 1) throw new IllegalArgumentException("a dataset needs at least one sample");
        if (batchSize < 1) throw new IllegalArgumentException("batch size must be >= 1, got " + batchSize);
        this.size = size;
        this.batchSize = batchSize;
        this.seed = seed;
        this.shuffle = shuffle;
    }

    public int batchesPerEpoch() {
        return (size + batchSize - 1) / batchSize;
    }

    /** The sample indexes of micro-batch {@code batch} of {@code epoch}. */
    public int[] batch(long epoch, int batch) {
        if (batch < 0 || batch >= batchesPerEpoch()) {
            throw new IndexOutOfBoundsException("batch " + batch + " of an epoch of " + batchesPerEpoch());
        }
        int[] perm = permutation(epoch);
        int from = batch * batchSize, to = Math.min(size, from + batchSize);
        int[] out = new int[to - from];
        System.arraycopy(perm, from, out, 0, out.length);
        return out;
    }

    public <T> List<T> batch(List<T> samples, long epoch, int batch) {
        int[] idx = batch(epoch, batch);
        List<T> out = new ArrayList<>(idx.length);
        for (int i : idx) out.add(samples.get(i));
        return out;
    }

    /** Fisher-Yates over SplitMix64 seeded from (seed, epoch): the same on every JVM and platform. */
    public synchronized int[] permutation(long epoch) {
        if (epoch == cachedEpoch) return cachedPermutation;
        int[] p = new int[size];
        for (int i = 0; i < size; i++) p[i] = i;
        if (shuffle) {
            SplitMix64 rng = new SplitMix64(SplitMix64.mix(seed) ^ SplitMix64.mix(epoch + 0x632BE59BD9B4E019L));
            for (int i = size - 1; i > 0; i--) {
                int j = rng.nextInt(i + 1);
                int t = p[i];
                p[i] = p[j];
                p[j] = t;
            }
        }
        cachedEpoch = epoch;
        cachedPermutation = p;
        return p;
    }
}
