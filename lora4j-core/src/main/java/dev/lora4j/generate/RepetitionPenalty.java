package dev.lora4j.generate;

import java.util.BitSet;

/**
 * Hugging Face's {@code RepetitionPenaltyLogitsProcessor}: the logit of every token already in the sequence
 * (prompt included) is divided by the penalty when positive and multiplied by it when negative, so a penalty
 * above 1 always makes a repeat less likely.
 */
public final class RepetitionPenalty {
    private RepetitionPenalty() {}

    public static void apply(float[] logits, BitSet seen, float penalty) {
        if (penalty == 1f) return;
        for (int id = seen.nextSetBit(0); id >= 0 && id < logits.length; id = seen.nextSetBit(id + 1)) {
            float s = logits[id];
            logits[id] = s < 0 ? s * penalty : s / penalty;
        }
    }
}
