package dev.lora4j.train.data;

import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

class PackerTest {

    private static TokenizedSequence seq(int... ids) {
        int[] labels = new int[ids.length];
        for (int i = 0; i < ids.length; i++) labels[i] = 100 + ids[i];
        return new TokenizedSequence(ids, labels);
    }

    private static List<List<List<Integer>>> ids(List<TrainingSample> samples) {
        List<List<List<Integer>>> out = new ArrayList<>();
        for (TrainingSample s : samples) {
            List<List<Integer>> bin = new ArrayList<>();
            for (TokenizedSequence q : s.sequences()) {
                List<Integer> row = new ArrayList<>();
                for (int id : q.inputIds()) row.add(id);
                bin.add(row);
                for (int i = 0; i < q.length(); i++) assertThat(q.labels()[i]).isEqualTo(100 + q.inputIds()[i]);
            }
            out.add(bin);
        }
        return out;
    }

    private static final List<TokenizedSequence> TRL_EXAMPLE = List.of(seq(1, 2, 3, 4, 5), seq(6, 7), seq(8, 9, 10), seq(11));

    @Test
    void bestFitDecreasingMatchesTrlsDocumentedExample() {
        // pack_dataset(..., seq_length=4, strategy="bfd"): [[1, 2, 3, 4], [8, 9, 10, 11], [6, 7]], seq_lengths [[4], [3, 1], [2]]
        assertThat(ids(Packer.pack(TRL_EXAMPLE, 4, PackingStrategy.BFD)))
                .isEqualTo(List.of(List.of(List.of(1, 2, 3, 4)), List.of(List.of(8, 9, 10), List.of(11)), List.of(List.of(6, 7))));
    }

    @Test
    void bestFitDecreasingWithSplitKeepsEveryTokenAsTrlDocuments() {
        // strategy="bfd_split": [[1, 2, 3, 4], [8, 9, 10, 5], [6, 7, 11]], seq_lengths [[4], [3, 1], [2, 1]]
        assertThat(ids(Packer.pack(TRL_EXAMPLE, 4, PackingStrategy.BFD_SPLIT)))
                .isEqualTo(List.of(List.of(List.of(1, 2, 3, 4)), List.of(List.of(8, 9, 10), List.of(5)), List.of(List.of(6, 7), List.of(11))));
    }

    @Test
    void wrappedPackingCutsTheConcatenationEveryMaxLengthTokens() {
        assertThat(ids(Packer.pack(TRL_EXAMPLE, 4, PackingStrategy.WRAPPED))).isEqualTo(List.of(
                List.of(List.of(1, 2, 3, 4)), List.of(List.of(5, 6, 7, 8)), List.of(List.of(9, 10, 11))));
    }

    @Test
    void binsPreferTheTightestFit() {
        // lengths 5, 4, 3, 3, 2, 1 into bins of 6: 5 -> A (1 left), 4 -> B (2 left), 3 -> C (3 left), 3 -> C (exact fit),
        // 2 -> B (tightest), 1 -> A (tightest).
        List<TokenizedSequence> in = List.of(seq(1, 1, 1), seq(2, 2), seq(3, 3, 3, 3, 3), seq(4, 4, 4, 4), seq(5), seq(6, 6, 6));
        assertThat(ids(Packer.pack(in, 6, PackingStrategy.BFD))).isEqualTo(List.of(
                List.of(List.of(3, 3, 3, 3, 3), List.of(5)),
                List.of(List.of(4, 4, 4, 4), List.of(2, 2)),
                List.of(List.of(1, 1, 1), List.of(6, 6, 6))));
    }

    @Test
    void amongBinsWithTheSameFreeSpaceTheOldestIsFilledFirst() {
        List<TokenizedSequence> in = List.of(seq(1, 1, 1, 1), seq(2, 2, 2, 2), seq(3));
        assertThat(ids(Packer.pack(in, 6, PackingStrategy.BFD))).isEqualTo(List.of(
                List.of(List.of(1, 1, 1, 1), List.of(3)), List.of(List.of(2, 2, 2, 2))));
    }

    @Test
    void emptySequencesAreDroppedAndNoBinExceedsMaxLength() {
        List<TokenizedSequence> in = new ArrayList<>();
        java.util.Random r = new java.util.Random(5);
        for (int i = 0; i < 300; i++) {
            int[] ids = new int[r.nextInt(40)];
            for (int j = 0; j < ids.length; j++) ids[j] = r.nextInt(50);
            in.add(seq(ids));
        }
        long nonEmptyTokens = in.stream().mapToLong(s -> Math.min(16, s.length())).sum();
        List<TrainingSample> packed = Packer.pack(in, 16, PackingStrategy.BFD);
        assertThat(packed).allSatisfy(s -> assertThat(s.tokens()).isBetween(1, 16));
        assertThat(packed.stream().mapToLong(TrainingSample::tokens).sum()).isEqualTo(nonEmptyTokens);
    }

    @Test
    void packingWorksInBatchesOfAThousandExamplesAsDatasetsMapHandsThem() {
        List<TokenizedSequence> in = new ArrayList<>();
        for (int i = 0; i < 1001; i++) in.add(seq(i % 7 + 1));
        List<TrainingSample> wrapped = Packer.pack(in, 3, PackingStrategy.WRAPPED);
        // 1000 tokens -> 333 full blocks and one of 1; then the 1001st example alone.
        assertThat(wrapped).hasSize(335);
        assertThat(wrapped.get(333).tokens()).isEqualTo(1);
        assertThat(wrapped.get(334).tokens()).isEqualTo(1);
    }
}
