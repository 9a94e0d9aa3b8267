package dev.lora4j.train.data;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.TreeMap;

/**
 * Packs tokenized sequences into samples of at most {@code maxLength} tokens, as TRL's {@code pack_dataset} does.
 * TRL packs within each batch of 1000 examples that {@code datasets.map} hands it, so this does too.
 *
 * <p>Best-fit decreasing: empty sequences are dropped; the rest are truncated to maxLength ("bfd") or split into
 * maxLength pieces ("bfd_split"); sorted by length, longest first (stable), each goes into the open bin with the
 * least free space that still fits it (the oldest such bin on ties), or into a new bin. Bins come out in the order
 * they were opened, their sequences in the order they were placed.
 *
 * <p>Wrapped: the tokens of the batch concatenated and cut every maxLength tokens; the last block is shorter.
 */
public final class Packer {
    /** datasets.map's default batch_size, the unit TRL packs in. */
    public static final int MAP_BATCH_SIZE = 1000;

    private Packer() {}

    public static List<TrainingSample> pack(List<TokenizedSequence> sequences, int maxLength, PackingStrategy strategy) {
        if (maxLength < 1) throw new IllegalArgumentException("packing needs max_length >= 1, got " + maxLength);
        List<TrainingSample> out = new ArrayList<>();
        for (int from = 0; from < sequences.size(); from += MAP_BATCH_SIZE) {
            List<TokenizedSequence> batch = sequences.subList(from, Math.min(sequences.size(), from + MAP_BATCH_SIZE));
            out.addAll(strategy == PackingStrategy.WRAPPED ? wrapped(batch, maxLength)
                    : bestFitDecreasing(batch, maxLength, strategy == PackingStrategy.BFD_SPLIT));
        }
        return out;
    }

    static List<TrainingSample> bestFitDecreasing(List<TokenizedSequence> batch, int maxLength, boolean split) {
        List<TokenizedSequence> pieces = new ArrayList<>();
        for (TokenizedSequence s : batch) {
            if (s.length() == 0) continue;
            if (!split) {
                pieces.add(s.truncate(maxLength));
            } else {
                for (int at = 0; at < s.length(); at += maxLength) pieces.add(s.slice(at, Math.min(s.length(), at + maxLength)));
            }
        }
        List<TokenizedSequence> sorted = new ArrayList<>(pieces);
        sorted.sort(Comparator.comparingInt(TokenizedSequence::length).reversed());

        List<List<TokenizedSequence>> bins = new ArrayList<>();
        List<Integer> used = new ArrayList<>();
        // Free space -> bins with exactly that much free space, oldest first.
        TreeMap<Integer, ArrayDeque<Integer>> bySpace = new TreeMap<>();
        for (TokenizedSequence s : sorted) {
            int length = s.length();
            Integer space = bySpace.ceilingKey(length);
            int bin;
            if (space == null) {
                bin = bins.size();
                bins.add(new ArrayList<>());
                used.add(0);
            } else {
                ArrayDeque<Integer> same = bySpace.get(space);
                bin = same.pollFirst();
                if (same.isEmpty()) bySpace.remove(space);
            }
            bins.get(bin).add(s);
            used.set(bin, used.get(bin) + length);
            int left = maxLength - used.get(bin);
            if (left > 0) bySpace.computeIfAbsent(left, k -> new ArrayDeque<>()).addLast(bin);
        }
        List<TrainingSample> out = new ArrayList<>(bins.size());
        for (List<TokenizedSequence> b : bins) out.add(new TrainingSample(b));
        return out;
    }

    static List<TrainingSample> wrapped(List<TokenizedSequence> batch, int maxLength) {
        int total = 0;
        for (TokenizedSequence s : batch) total += s.length();
        int[] ids = new int[total], labels = new int[total];
        int at = 0;
        for (TokenizedSequence s : batch) {
            System.arraycopy(s.inputIds(), 0, ids, at, s.length());
            System.arraycopy(s.labels(), 0, labels, at, s.length());
            at += s.length();
        }
        TokenizedSequence all = new TokenizedSequence(ids, labels);
        List<TrainingSample> out = new ArrayList<>();
        for (int from = 0; from < total; from += maxLength) {
            out.add(TrainingSample.of(all.slice(from, Math.min(total, from + maxLength))));
        }
        return out;
    }
}
