package dev.lora4j.tokenizer;

import java.util.Arrays;

/**
 * The BPE merges as an open-addressing hash table from a pair of token ids to (rank, merged id): the inner loop
 * of encoding looks a pair up for every position, so this avoids boxing and pointer chasing.
 */
final class MergeTable {
    private static final long EMPTY = -1L;
    private final long[] keys;
    private final long[] values;
    private final int mask;
    private int size;

    MergeTable(int expected) {
        int capacity = Integer.highestOneBit(Math.max(4, expected * 2 - 1)) << 1;
        keys = new long[capacity];
        values = new long[capacity];
        Arrays.fill(keys, EMPTY);
        mask = capacity - 1;
    }

    private static long key(int left, int right) {
        return ((long) left << 32) | (right & 0xFFFFFFFFL);
    }

    private int slot(long key) {
        long h = key * 0x9E3779B97F4A7C15L;
        return (int) (h >>> 40) & mask;
    }

    /** Records a merge; a later merge of the same pair replaces an earlier one, as in the reference. */
    void put(int left, int right, int rank, int mergedId) {
        long k = key(left, right);
        int i = slot(k);
        while (keys[i] != EMPTY && keys[i] != k) i = (i + 1) & mask;
        if (keys[i] == EMPTY) size++;
        keys[i] = k;
        values[i] = ((long) rank << 32) | (mergedId & 0xFFFFFFFFL);
        if (size * 2 > keys.length) throw new IllegalStateException("merge table sized for fewer merges");
    }

    /** (rank << 32 | mergedId) for the pair, or -1 when the pair does not merge. */
    long get(int left, int right) {
        long k = key(left, right);
        int i = slot(k);
        while (true) {
            long stored = keys[i];
            if (stored == k) return values[i];
            if (stored == EMPTY) return -1L;
            i = (i + 1) & mask;
        }
    }

    int size() {
        return size;
    }
}
