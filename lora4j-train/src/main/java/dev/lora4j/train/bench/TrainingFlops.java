package dev.lora4j.train.bench;

import dev.lora4j.model.LlamaShape;
import dev.lora4j.model.Projection;
import dev.lora4j.model.TrainablePlan;

/**
 * The model FLOPs of one optimizer step: the arithmetic the training step needs by definition, whatever the
 * implementation does beyond it. Model FLOPs utilisation (MFU) is these FLOPs per second over the measured peak of
 * a BF16 GEMM.
 *
 * <p>Per token, with N the parameters of every matrix product of the forward pass (the seven projections of every
 * layer, lm_head, and the LoRA A and B matrices; not the embedding lookup, norms or biases) and N_trainable those
 * of them that train (the adapters, or in full fine-tuning every projection and lm_head):
 * <ul>
 *   <li>forward: 2·N (a multiply and an add per parameter);</li>
 *   <li>backward to the inputs: 2·N;</li>
 *   <li>backward to the weights: 2·N_trainable (frozen weights get no weight gradient);</li>
 * </ul>
 * plus attention, which has no parameters: per layer, head and sequence, 4·headDim FLOPs per causal (query, key)
 * pair in the forward pass (QKᵀ and the product with V), twice that in the backward pass, so 12·headDim per pair;
 * the pairs are those the causal mask (and a sliding window, where the layer has one) lets through,
 * Σ_{p<seq} min(p+1, window). The forward pass that gradient checkpointing recomputes is not counted: it is a
 * cost of the implementation's memory choice, not of the model.
 *
 * @param matmulParameters          N
 * @param trainableMatmulParameters N_trainable
 * @param attentionPerSequence      attention FLOPs (forward and backward) of one sequence, all layers
 * @param tokensPerStep             tokens of one optimizer step (micro-batch × sequence length × accumulation)
 * @param sequencesPerStep          sequences of one optimizer step
 */
public record TrainingFlops(long matmulParameters, long trainableMatmulParameters, double attentionPerSequence,
                            long tokensPerStep, long sequencesPerStep) {

    /** The FLOPs of one step of {@code sequences} sequences of {@code seq} tokens, training as {@code plan} says. */
    public static TrainingFlops of(TrainablePlan plan, int seq, long sequences) {
        LlamaShape s = plan.shape();
        long n = 0, trainable = 0;
        for (int l = 0; l < s.numLayers(); l++) {
            for (Projection p : Projection.values()) {
                long w = (long) p.outFeatures(s) * p.inFeatures(s);
                n += w;
                if (plan.trains(p.path(l) + ".weight")) trainable += w;
            }
        }
        long head = (long) s.vocabSize() * s.hiddenSize();
        n += head;
        boolean headTrains = plan.trains("lm_head.weight") || s.tiedEmbeddings() && plan.trains("model.embed_tokens.weight");
        if (headTrains) trainable += head;
        for (TrainablePlan.LoraModule m : plan.loraModules()) {
            n += m.parameterCount();
            trainable += m.parameterCount();
        }
        double attention = 0;
        for (int l = 0; l < s.numLayers(); l++) {
            attention += 12.0 * s.headDim() * s.numHeads() * causalPairs(seq, s.slidingWindow(l));
        }
        return new TrainingFlops(n, trainable, attention, sequences * seq, sequences);
    }

    /** The (query, key) pairs causal attention over {@code seq} positions computes; window 0 means none. */
    public static long causalPairs(int seq, int window) {
        if (window <= 0 || window >= seq) return (long) seq * (seq + 1) / 2;
        // Positions below the window see p+1 keys, the rest see exactly window keys.
        return (long) window * (window + 1) / 2 + (long) (seq - window) * window;
    }

    /** Matrix-product FLOPs per token: forward, backward to the inputs, backward to the trainable weights. */
    public double denseFlopsPerToken() {
        return 2.0 * matmulParameters + 2.0 * matmulParameters + 2.0 * trainableMatmulParameters;
    }

    /** Model FLOPs of one optimizer step. */
    public double perStep() {
        return denseFlopsPerToken() * tokensPerStep + attentionPerSequence * sequencesPerStep;
    }
}
