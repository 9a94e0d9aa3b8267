package dev.lora4j.model;

import dev.lora4j.backend.Backend;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.util.ArrayList;
import java.util.List;

/**
 * The activation and gradient buffers of {@link TrainableLlama}, sized for {@code capacity} tokens and computed from
 * the shape and the adapters before anything runs. What a layer's backward pass needs is kept per layer
 * ({@link LayerActivations}); the normalised inputs of each block, the SwiGLU product and dropped-out inputs are
 * recomputed instead, as they cost one cheap op each. With gradient checkpointing only each layer's input is kept
 * and one set of layer activations is recomputed per layer during the backward pass. Evaluation keeps nothing: one
 * residual stream and one set of layer buffers serve every layer, so it runs in the training buffers when they exist.
 */
final class TrainingBuffers implements AutoCloseable {

    /** What the backward pass of one decoder layer reads: its projections' outputs and the adapters' A·x. */
    record LayerActivations(Tensor q, Tensor k, Tensor v, Tensor attended, Tensor lse, Tensor gate, Tensor up,
                            Tensor[] loraHidden) {
        /** The scaled adapter activation scaling·A·dropout(x) of this projection, [n, rank]. */
        Tensor lora(Projection p, int n, int rank) {
            return loraHidden[p.ordinal()].view(0, n, rank);
        }
    }

    final int capacity;
    final int lossChunkRows;
    final boolean withGradients;
    /** residual[l] is the input of layer l, residual[L] the final hidden state; one shared tensor in evaluation. */
    private final Tensor[] residual;
    /** The residual stream between a layer's attention and MLP blocks. */
    private final Tensor[] middle;
    private final LayerActivations[] layers;
    // scratch
    final Tensor normed, swiglu, dropped, logits, losses;
    // gradients
    final Tensor dResidual, dNormed, dScratch, dAttended, dQuery, dKey, dValue, dGate, dUp, dSwiglu, dLora, recomputed;
    private final List<Tensor> owned = new ArrayList<>();
    /** Kept, not derived from the buffers' counts: a one-layer model has one set of activations either way. */
    private final boolean checkpointing;

    /**
     * @param perLayer     keep each layer's activations (training without checkpointing)
     * @param residuals    keep each layer's input (training)
     * @param droppedWidth widest input of an adapter with dropout (0: no dropout)
     */
    private TrainingBuffers(Backend b, LlamaShape s, List<TrainablePlan.LoraModule> adapters, int capacity,
                            boolean withGradients, boolean residuals, boolean perLayer, int droppedWidth,
                            long lossChunkBytes) {
        this.capacity = capacity;
        this.withGradients = withGradients;
        this.checkpointing = withGradients && !perLayer;
        DType act = b.activationType();
        int L = s.numLayers(), d = s.hiddenSize(), qd = s.queryDim(), kvd = s.kvDim(), ff = s.intermediateSize();
        try {
            residual = new Tensor[residuals ? L + 1 : 1];
            for (int i = 0; i < residual.length; i++) residual[i] = own(b.allocate(act, capacity, d));
            middle = new Tensor[residuals && perLayer ? L : 1];
            for (int i = 0; i < middle.length; i++) middle[i] = residuals ? own(b.allocate(act, capacity, d)) : residual[0];
            layers = new LayerActivations[perLayer ? L : 1];
            for (int i = 0; i < layers.length; i++) {
                Tensor[] lora = new Tensor[Projection.values().length];
                for (TrainablePlan.LoraModule m : adapters) {
                    if (perLayer && m.layer() != i) continue;
                    if (lora[m.projection().ordinal()] == null) {
                        lora[m.projection().ordinal()] = own(b.allocate(act, capacity, maxRank(adapters, m.projection(), perLayer ? i : -1)));
                    }
                }
                layers[i] = new LayerActivations(own(b.allocate(act, capacity, qd)), own(b.allocate(act, capacity, kvd)),
                        own(b.allocate(act, capacity, kvd)), own(b.allocate(act, capacity, qd)),
                        withGradients ? own(b.allocate(DType.F32, capacity, s.numHeads())) : null,
                        own(b.allocate(act, capacity, ff)), own(b.allocate(act, capacity, ff)), lora);
            }
            normed = own(b.allocate(act, capacity, d));
            swiglu = own(b.allocate(act, capacity, ff));
            dropped = droppedWidth > 0 ? own(b.allocate(act, (long) capacity * droppedWidth)) : null;
            long rowBytes = 4L * s.vocabSize();
            lossChunkRows = (int) Math.max(1, Math.min(capacity, lossChunkBytes / rowBytes));
            logits = own(b.allocate(DType.F32, lossChunkRows, s.vocabSize()));
            losses = own(b.allocate(DType.F32, capacity));
            if (withGradients) {
                int maxRank = 1;
                for (TrainablePlan.LoraModule m : adapters) maxRank = Math.max(maxRank, m.rank());
                dResidual = own(b.allocate(act, capacity, d));
                dNormed = own(b.allocate(act, capacity, d));
                dScratch = own(b.allocate(act, capacity, d));
                dAttended = own(b.allocate(act, capacity, qd));
                dQuery = own(b.allocate(act, capacity, qd));
                dKey = own(b.allocate(act, capacity, kvd));
                dValue = own(b.allocate(act, capacity, kvd));
                dGate = own(b.allocate(act, capacity, ff));
                dUp = own(b.allocate(act, capacity, ff));
                dSwiglu = own(b.allocate(act, capacity, ff));
                dLora = own(b.allocate(act, (long) capacity * maxRank));
                recomputed = perLayer ? null : own(b.allocate(act, capacity, d));
            } else {
                dResidual = dNormed = dScratch = dAttended = dQuery = dKey = dValue = dGate = dUp = dSwiglu = dLora = recomputed = null;
            }
        } catch (RuntimeException | OutOfMemoryError e) {
            close();
            throw e;
        }
    }

    private static int maxRank(List<TrainablePlan.LoraModule> adapters, Projection p, int layer) {
        int r = 1;
        for (TrainablePlan.LoraModule m : adapters) {
            if (m.projection() == p && (layer < 0 || m.layer() == layer)) r = Math.max(r, m.rank());
        }
        return r;
    }

    static TrainingBuffers forTraining(Backend b, LlamaShape s, List<TrainablePlan.LoraModule> adapters, int capacity,
                                       boolean checkpointing, long lossChunkBytes) {
        return new TrainingBuffers(b, s, adapters, capacity, true, true, !checkpointing, droppedWidth(s, adapters),
                lossChunkBytes);
    }

    static TrainingBuffers forEvaluation(Backend b, LlamaShape s, List<TrainablePlan.LoraModule> adapters, int capacity,
                                         long lossChunkBytes) {
        return new TrainingBuffers(b, s, adapters, capacity, false, false, false, 0, lossChunkBytes);
    }

    /**
     * The bytes {@link #forTraining} (or, with {@code withGradients} false, {@link #forEvaluation}) allocates for
     * {@code capacity} tokens, computed without allocating: the memory plan's activation term.
     */
    static long bytesFor(LlamaShape s, List<TrainablePlan.LoraModule> adapters, int capacity, boolean withGradients,
                         boolean checkpointing, long lossChunkBytes, DType act) {
        int L = s.numLayers();
        long d = s.hiddenSize(), qd = s.queryDim(), kvd = s.kvDim(), ff = s.intermediateSize(), cap = capacity;
        boolean residuals = withGradients, perLayer = withGradients && !checkpointing;
        long elements = 0, f32 = 0;
        elements += (residuals ? L + 1 : 1) * cap * d;                           // residual stream
        elements += (residuals ? (perLayer ? L : 1) : 0) * cap * d;              // between the blocks
        int layerSets = perLayer ? L : 1;
        elements += layerSets * cap * (2 * qd + 2 * kvd + 2 * ff);               // q, k, v, attended, gate, up
        if (withGradients) f32 += layerSets * cap * s.numHeads();                 // lse
        for (int i = 0; i < layerSets; i++) {
            for (Projection p : Projection.values()) {
                boolean any = false;
                for (TrainablePlan.LoraModule m : adapters) any |= m.projection() == p && (!perLayer || m.layer() == i);
                if (any) elements += cap * maxRank(adapters, p, perLayer ? i : -1);
            }
        }
        elements += cap * d + cap * ff;                                            // normed, swiglu
        int dropped = withGradients ? droppedWidth(s, adapters) : 0;
        elements += cap * dropped;
        long chunkRows = Math.max(1, Math.min(cap, lossChunkBytes / (4L * s.vocabSize())));
        f32 += chunkRows * s.vocabSize() + cap;                                    // logits chunk, losses
        if (withGradients) {
            int maxRank = 1;
            for (TrainablePlan.LoraModule m : adapters) maxRank = Math.max(maxRank, m.rank());
            elements += cap * (3 * d + 2 * qd + 2 * kvd + 3 * ff + maxRank);     // gradients of activations
            if (!perLayer) elements += cap * d;                                   // recomputed layer output
        }
        return act.bytesFor(elements) + DType.F32.bytesFor(f32);
    }

    private static int droppedWidth(LlamaShape s, List<TrainablePlan.LoraModule> adapters) {
        int w = 0;
        for (TrainablePlan.LoraModule m : adapters) if (m.dropout() > 0) w = Math.max(w, m.inFeatures());
        return w;
    }

    boolean checkpointing() { return checkpointing; }

    /** The input of layer l (l = numLayers: the final hidden state), first n rows. */
    Tensor residual(int l, int n) { return residual[Math.min(l, residual.length - 1)].rows(0, n); }

    Tensor middle(int l, int n) { return middle[Math.min(l, middle.length - 1)].rows(0, n); }

    LayerActivations layer(int l) { return layers[Math.min(l, layers.length - 1)]; }

    /** A view [n, width] of the dropped-out input buffer. */
    Tensor dropped(int n, int width) { return dropped.view(0, n, width); }

    Tensor dLora(int n, int rank) { return dLora.view(0, n, rank); }

    private Tensor own(Tensor t) {
        owned.add(t);
        return t;
    }

    /** Bytes these buffers hold. */
    long byteSize() {
        long total = 0;
        for (Tensor t : owned) total += t.byteSize();
        return total;
    }

    @Override
    public void close() {
        for (Tensor t : owned) t.close();
        owned.clear();
    }
}
