package dev.lora4j.train.data;

import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.stream.IntStream;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class DataOrderTest {

    @Test
    void eachEpochIsAPermutationDrawnFromTheSeedAndTheEpochAlone() {
        DataOrder a = new DataOrder(50, 4, 42, true), b = new DataOrder(50, 4, 42, true);
        int[] e0 = a.permutation(0).clone(), e1 = a.permutation(1).clone();
        assertThat(IntStream.of(e0).sorted().toArray()).isEqualTo(IntStream.range(0, 50).toArray());
        assertThat(e1).isNotEqualTo(e0);
        // Computing epoch 1 first, or on another instance, changes nothing.
        assertThat(b.permutation(1)).isEqualTo(e1);
        assertThat(b.permutation(0)).isEqualTo(e0);
        assertThat(new DataOrder(50, 4, 43, true).permutation(0)).isNotEqualTo(e0);
    }

    @Test
    void withoutShuffleTheOrderIsTheFileOrder() {
        assertThat(new DataOrder(5, 2, 1, false).permutation(3)).containsExactly(0, 1, 2, 3, 4);
    }

    @Test
    void batchesCoverTheEpochAndTheLastOneIsShorter() {
        DataOrder order = new DataOrder(10, 4, 7, true);
        assertThat(order.batchesPerEpoch()).isEqualTo(3);
        int[] all = IntStream.range(0, 3).flatMap(i -> Arrays.stream(order.batch(2, i))).toArray();
        assertThat(all).containsExactly(order.permutation(2));
        assertThat(order.batch(2, 2)).hasSize(2);
        assertThatThrownBy(() -> order.batch(0, 3)).isInstanceOf(IndexOutOfBoundsException.class);
    }

    @Test
    void theGeneratorIsSplitMix64AsPublished() {
        // Reference outputs of SplitMix64 from seed 0 (Steele, Lea and Flood; Vigna's splitmix64.c).
        SplitMix64 r = new SplitMix64(0);
        assertThat(r.nextLong()).isEqualTo(0xe220a8397b1dcdafL);
        assertThat(r.nextLong()).isEqualTo(0x6e789e6aa1b965f4L);
        assertThat(r.nextLong()).isEqualTo(0x06c45d188009454fL);
    }

    @Test
    void boundedDrawsAreUniform() {
        SplitMix64 r = new SplitMix64(9);
        int[] counts = new int[3];
        for (int i = 0; i < 30000; i++) counts[r.nextInt(3)]++;
        for (int c : counts) assertThat(c).isBetween(9500, 10500);
    }
}
