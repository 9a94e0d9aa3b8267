package dev.lora4j.tokenizer;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The BPE model of tokenizer.json: turns one pre-tokenized word into token ids by starting from its characters
 * (or their byte tokens, with byte_fallback) and applying the merges lowest rank first, leftmost first.
 */
final class BpeModel {
    private static final int CACHE_CAPACITY = 100_000;
    private static final int CACHE_MAX_WORD = 256;

    private final Map<String, Integer> vocab;
    private final MergeTable merges;
    private final String unkToken;
    private final boolean fuseUnk;
    private final boolean byteFallback;
    private final boolean ignoreMerges;
    private final String continuingSubwordPrefix;
    private final String endOfWordSuffix;
    private final int[] byteTokenIds = new int[256];
    private final ConcurrentHashMap<String, int[]> cache = new ConcurrentHashMap<>();

    BpeModel(Map<String, Integer> vocab, MergeTable merges, String unkToken, boolean fuseUnk, boolean byteFallback,
             boolean ignoreMerges, String continuingSubwordPrefix, String endOfWordSuffix) {
        this.vocab = vocab;
        this.merges = merges;
        this.unkToken = unkToken;
        this.fuseUnk = fuseUnk;
        this.byteFallback = byteFallback;
        this.ignoreMerges = ignoreMerges;
        this.continuingSubwordPrefix = continuingSubwordPrefix;
        this.endOfWordSuffix = endOfWordSuffix;
        for (int b = 0; b < 256; b++) {
            Integer id = vocab.get(byteToken(b));
            byteTokenIds[b] = id == null ? -1 : id;
        }
    }

    /** The spelling of a byte-fallback token: "<0x0A>". */
    static String byteToken(int b) {
        return String.format("<0x%02X>", b);
    }

    Map<String, Integer> vocab() {
        return vocab;
    }

    int[] tokenize(String word) {
        if (word.isEmpty()) return new int[0];
        if (ignoreMerges) {
            Integer whole = vocab.get(word);
            if (whole != null) return new int[] {whole};
        }
        int[] cached = cache.get(word);
        if (cached != null) return cached;
        int[] ids = mergeWord(word);
        if (word.length() <= CACHE_MAX_WORD && cache.size() < CACHE_CAPACITY) cache.put(word, ids);
        return ids;
    }

    private int[] mergeWord(String w) {
        int n = w.length();
        int[] sym = new int[n * 4 + 4];
        int count = 0;
        int pendingUnk = -1;
        for (int i = 0; i < n; ) {
            int cp = w.codePointAt(i);
            int end = i + Character.charCount(cp);
            String s = w.substring(i, end);
            if (i > 0 && continuingSubwordPrefix != null) s = continuingSubwordPrefix + s;
            if (end == n && endOfWordSuffix != null) s = s + endOfWordSuffix;
            Integer id = vocab.get(s);
            if (id != null) {
                if (pendingUnk >= 0) {
                    sym[count++] = pendingUnk;
                    pendingUnk = -1;
                }
                sym[count++] = id;
            } else if (byteFallback && allBytesKnown(s)) {
                // As in the reference, a pending unknown token is emitted after these bytes, not before.
                for (byte b : Utf8.encode(s)) {
                    if (count == sym.length) sym = java.util.Arrays.copyOf(sym, sym.length * 2);
                    sym[count++] = byteTokenIds[b & 0xFF];
                }
            } else if (unkToken != null) {
                Integer unk = vocab.get(unkToken);
                if (unk == null) {
                    throw new TokenizerException("tokenizer.json: model.unk_token \"" + unkToken + "\" is not in model.vocab; add it to the vocabulary or remove unk_token");
                }
                if (pendingUnk >= 0 && !fuseUnk) sym[count++] = pendingUnk;
                pendingUnk = unk;
            }
            // Without an unknown token the character is dropped, as the reference does.
            i = end;
            if (count + 8 >= sym.length) sym = java.util.Arrays.copyOf(sym, sym.length * 2);
        }
        if (pendingUnk >= 0) sym[count++] = pendingUnk;
        return mergeAll(sym, count);
    }

    private boolean allBytesKnown(String s) {
        for (byte b : Utf8.encode(s)) if (byteTokenIds[b & 0xFF] < 0) return false;
        return true;
    }

    /**
     * Applies merges with a priority queue keyed by (rank, position), skipping entries made stale by an earlier
     * merge. This yields exactly the reference's order: lowest rank first, then leftmost.
     */
    private int[] mergeAll(int[] ids, int count) {
        if (count < 2) return java.util.Arrays.copyOf(ids, count);
        int[] prev = new int[count];
        int[] next = new int[count];
        boolean[] removed = new boolean[count];
        for (int i = 0; i < count; i++) {
            prev[i] = i - 1;
            next[i] = i + 1 < count ? i + 1 : -1;
        }
        LongHeap queue = new LongHeap(count);
        for (int i = 0; i + 1 < count; i++) {
            long m = merges.get(ids[i], ids[i + 1]);
            if (m >= 0) queue.push(((m >>> 32) << 32) | i);
        }
        int remaining = count;
        while (!queue.isEmpty()) {
            long top = queue.pop();
            int rank = (int) (top >>> 32);
            int pos = (int) top;
            if (removed[pos] || next[pos] < 0) continue;
            int right = next[pos];
            long m = merges.get(ids[pos], ids[right]);
            if (m < 0 || (int) (m >>> 32) != rank) continue;
            ids[pos] = (int) m;
            removed[right] = true;
            remaining--;
            next[pos] = next[right];
            if (next[right] >= 0) prev[next[right]] = pos;
            if (prev[pos] >= 0) {
                long mp = merges.get(ids[prev[pos]], ids[pos]);
                if (mp >= 0) queue.push(((mp >>> 32) << 32) | prev[pos]);
            }
            if (next[pos] >= 0) {
                long mn = merges.get(ids[pos], ids[next[pos]]);
                if (mn >= 0) queue.push(((mn >>> 32) << 32) | pos);
            }
        }
        int[] out = new int[remaining];
        int k = 0;
        for (int i = 0; i >= 0; i = next[i]) out[k++] = ids[i];
        return out;
    }

    /** A binary min-heap of longs. */
    private static final class LongHeap {
        private long[] heap;
        private int size;

        LongHeap(int capacity) {
            heap = new long[Math.max(4, capacity)];
        }

        boolean isEmpty() {
            return size == 0;
        }

        void push(long v) {
            if (size == heap.length) heap = java.util.Arrays.copyOf(heap, size * 2);
            int i = size++;
            while (i > 0) {
                int parent = (i - 1) >>> 1;
                if (heap[parent] <= v) break;
                heap[i] = heap[parent];
                i = parent;
            }
            heap[i] = v;
        }

        long pop() {
            long top = heap[0];
            long last = heap[--size];
            int i = 0;
            while (true) {
                int child = 2 * i + 1;
                if (child >= size) break;
                if (child + 1 < size && heap[child + 1] < heap[child]) child++;
                if (heap[child] >= last) break;
                heap[i] = heap[child];
                i = child;
            }
            heap[i] = last;
            return top;
        }
    }
}
