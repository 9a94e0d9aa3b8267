package dev.lora4j.train.data;

import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Objects;

/**
 * A tokenized SFT dataset, prepared as TRL's SFTTrainer prepares one: records tokenized (see
 * {@link ExampleTokenizer}), then either truncated to max_length (keep_start) with the examples that truncation left
 * without labels dropped, or packed into samples of max_length tokens (see {@link Packer}).
 */
public final class SftDataset {

    /** How to prepare records. {@code maxLength} null means no truncation (not allowed with packing). */
    public record Options(String textField, Integer maxLength, boolean packing, PackingStrategy packingStrategy) {
        public Options {
            Objects.requireNonNull(textField, "textField");
            Objects.requireNonNull(packingStrategy, "packingStrategy");
            if (maxLength != null && maxLength < 1) throw new IllegalArgumentException("max_length must be >= 1, got " + maxLength);
            if (packing && maxLength == null) throw new IllegalArgumentException("packing needs max_length: set max_length (or max_seq_length)");
        }
    }

    /** What preparation did, for the run's report. */
    public record Stats(String name, SftRecords.Kind kind, int records, int samples, long tokens, long targetTokens,
                        int truncated, int dropped, int longest, int promptBoundaryMismatches) {}

    private final List<TrainingSample> samples;
    private final Stats stats;
    private final String fingerprint;

    private SftDataset(List<TrainingSample> samples, Stats stats) {
        this.samples = List.copyOf(samples);
        this.stats = stats;
        this.fingerprint = fingerprintOf(this.samples);
    }

    public static SftDataset load(Path file, ExampleTokenizer tokenizer, Options options) {
        return prepare(file.toString(), DatasetReader.read(file), tokenizer, options);
    }

    public static SftDataset prepare(String name, List<DatasetRecord> records, ExampleTokenizer tokenizer, Options options) {
        if (records.isEmpty()) throw new DatasetFormatException(name, 0, "has no records");
        SftRecords.Kind kind = SftRecords.kindOf(records.getFirst(), options.textField());
        tokenizer.checkSuits(kind, name);
        int mismatchesBefore = tokenizer.promptBoundaryMismatches();
        List<TokenizedSequence> sequences = new ArrayList<>(records.size());
        for (DatasetRecord r : records) sequences.add(tokenizer.tokenize(SftRecords.parse(r, kind, options.textField())));

        int truncated = 0, dropped = 0;
        Integer max = options.maxLength();
        for (TokenizedSequence s : sequences) if (max != null && s.length() > max) truncated++;
        List<TrainingSample> samples;
        if (options.packing()) {
            samples = Packer.pack(sequences, max, options.packingStrategy());
        } else {
            samples = new ArrayList<>(sequences.size());
            for (TokenizedSequence s : sequences) {
                TokenizedSequence t = max == null ? s : s.truncate(max);
                if (!t.hasAnyLabel()) {
                    dropped++;
                    continue;
                }
                samples.add(TrainingSample.of(t));
            }
        }
        if (samples.isEmpty()) {
            throw new DatasetFormatException(name, 0, "no example is left to train on: every example had its labels cut"
                    + " off by max_length " + max + "; raise max_length");
        }
        long tokens = 0, targets = 0;
        int longest = 0;
        for (TrainingSample s : samples) {
            tokens += s.tokens();
            targets += s.targetCount();
            for (TokenizedSequence q : s.sequences()) longest = Math.max(longest, q.length());
        }
        Stats stats = new Stats(name, kind, records.size(), samples.size(), tokens, targets, truncated, dropped, longest,
                tokenizer.promptBoundaryMismatches() - mismatchesBefore);
        return new SftDataset(samples, stats);
    }

    /** A dataset of samples prepared elsewhere. */
    public static SftDataset of(String name, List<TrainingSample> samples) {
        long tokens = 0, targets = 0;
        int longest = 0;
        for (TrainingSample s : samples) {
            tokens += s.tokens();
            targets += s.targetCount();
            for (TokenizedSequence q : s.sequences()) longest = Math.max(longest, q.length());
        }
        return new SftDataset(samples, new Stats(name, null, samples.size(), samples.size(), tokens, targets, 0, 0, longest, 0));
    }

    public List<TrainingSample> samples() {
        return samples;
    }

    public int size() {
        return samples.size();
    }

    public Stats stats() {
        return stats;
    }

    /** A digest of every token and label, in order: a resumed run checks that it trains on the same data. */
    public String fingerprint() {
        return fingerprint;
    }

    private static String fingerprintOf(List<TrainingSample> samples) {
        try {
            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            for (TrainingSample s : samples) {
                sha.update(ByteBuffer.allocate(4).putInt(s.sequences().size()).array());
                for (TokenizedSequence q : s.sequences()) {
                    ByteBuffer buf = ByteBuffer.allocate(4 + 8 * q.length()).putInt(q.length());
                    for (int i = 0; i < q.length(); i++) buf.putInt(q.inputIds()[i]).putInt(q.labels()[i]);
                    sha.update(buf.array());
                }
            }
            return HexFormat.of().formatHex(sha.digest(), 0, 16);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is missing from this JVM", e);
        }
    }
}
