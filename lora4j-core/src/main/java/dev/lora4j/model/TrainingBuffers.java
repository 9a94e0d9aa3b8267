package dev.lora4j.model;

import dev.lora4j.backend.Backend;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.util.ArrayList;
import java.util.List;

/**
 * The activation and gradient buffers of {@link TrainableLlama}, sized for {@code capacity} tokens and computed from
 * the shape and the adapters before anything runs. What a layer's backward pass needs is kept per layer
 * ({@link LayerActivations}); the normalised inputs of each block and the SwiGLU product are recomputed instead, as
 * they cost one cheap op each. With gradient checkpointing only each layer's input is kept
 * and one set of layer activations is recomputed per layer during the backward pass. Evaluation keeps nothing: one
 * residual stream and one set of layer buffers serve every layer, so it runs in the training buffers when they exist.
 * The adapters' hidden activations scaling·A·dropout(x) are kept per layer in training either way: they are small, and
 * they spare the recomputation its LoRA down projections (each reads the projection's whole input and draws its mask).
 * Buffers whose lifetimes do not overlap share memory (see {@link #areaWidth}). lora_dropout costs no activation
 * memory: dropout(x) is never formed, as {@link Backend#loraDown} and {@link Backend#loraDownBackward} draw the mask
 * where they use it.
 */
final class TrainingBuffers implements AutoCloseable {

    /** What the backward pass of one decoder layer reads: its projections' outputs and the adapters' A·x. */
    record LayerActivations(Tensor q, Tensor k, Tensor v, Tensor attended, Tensor lse, Tensor gate, Tensor up,
                            Tensor[] loraHidden) {
        /** The scaled adapter activation scaling·A·dropout(x) of this projection, [n, rank]. */
        Tensor lora(Projection p, int n, int rank) {
            return loraHidden[p.ordinal()].view(0, n, rank);
        }

        /** These activations with another layer's adapter hiddens (checkpointing shares the rest between layers). */
        LayerActivations withLoraHidden(Tensor[] hidden) {
            return new LayerActivations(q, k, v, attended, lse, gate, up, hidden);
        }
    }

    final int capacity;
    final int lossChunkRows;
    final boolean withGradients;
    /**
     * residual[l] is the input of layer l, residual[L] the final hidden state; one shared tensor in evaluation. In
     * training residual[L] is residual[0]: the embeddings are read by layer 0's forward pass before the final hidden
     * state exists, and the final hidden state is dead once the loss has its gradient, so layer 0's backward pass looks
     * the embeddings up again (a gather of n rows) in place of keeping them.
     */
    private final Tensor[] residual;
    /** The residual stream between a layer's attention and MLP blocks. */
    private final Tensor[] middle;
    private final LayerActivations[] layers;
    // scratch
    final Tensor normed, swiglu, logits, losses;
    // gradients that live through a whole layer's backward pass
    final Tensor dResidual;
    private final Tensor dLora;
    /**
     * The gradients that live only within one block's backward pass share one area by phase (see
     * {@link #areaWidth}); the rows of each view are a prefix of the capacity, so any token count fits.
     */
    private final Tensor areaA;
    private final int d, qd, kvd, ff;
    private final long dNormedOffset;
    private final List<Tensor> owned = new ArrayList<>();
    /** Kept, not derived from the buffers' counts: a one-layer model has one set of activations either way. */
    private final boolean checkpointing;

    /**
     * @param perLayer     keep each layer's activations (training without checkpointing)
     * @param residuals    keep each layer's input (training)
     */
    private TrainingBuffers(Backend b, LlamaShape s, List<TrainablePlan.LoraModule> adapters, int capacity,
                            boolean withGradients, boolean residuals, boolean perLayer, long lossChunkBytes) {
        this.capacity = capacity;
        this.withGradients = withGradients;
        this.checkpointing = withGradients && !perLayer;
        DType act = b.activationType();
        int L = s.numLayers();
        d = s.hiddenSize();
        qd = s.queryDim();
        kvd = s.kvDim();
        ff = s.intermediateSize();
        try {
            residual = new Tensor[residuals ? L + 1 : 1];
            for (int i = 0; i < (residuals ? L : 1); i++) residual[i] = own(b.allocate(act, capacity, d));
            if (residuals) residual[L] = residual[0];
            middle = new Tensor[residuals && perLayer ? L : 1];
            for (int i = 0; i < middle.length; i++) middle[i] = residuals ? own(b.allocate(act, capacity, d)) : residual[0];
            // Training keeps every layer's adapter hiddens, checkpointing too: they are [n, rank] each (a few MiB for
            // a whole model), and the recomputation then reads them instead of running loraDown again.
            layers = new LayerActivations[withGradients ? L : 1];
            LayerActivations shared = null;
            for (int i = 0; i < layers.length; i++) {
                Tensor[] lora = new Tensor[Projection.values().length];
                for (TrainablePlan.LoraModule m : adapters) {
                    if (withGradients && m.layer() != i) continue;
                    if (lora[m.projection().ordinal()] == null) {
                        lora[m.projection().ordinal()] = own(b.allocate(act, capacity, maxRank(adapters, m.projection(), withGradients ? i : -1)));
                    }
                }
                if (perLayer || shared == null) {
                    shared = new LayerActivations(own(b.allocate(act, capacity, qd)), own(b.allocate(act, capacity, kvd)),
                            own(b.allocate(act, capacity, kvd)), own(b.allocate(act, capacity, qd)),
                            withGradients ? own(b.allocate(DType.F32, capacity, s.numHeads())) : null,
                            own(b.allocate(act, capacity, ff)), own(b.allocate(act, capacity, ff)), lora);
                }
                layers[i] = shared.withLoraHidden(lora);
            }
            normed = own(b.allocate(act, capacity, d));
            swiglu = own(b.allocate(act, capacity, ff));
            lossChunkRows = lossChunkRows(s, capacity, lossChunkBytes);
            logits = own(b.allocate(DType.F32, lossChunkRows, s.vocabSize()));
            losses = own(b.allocate(DType.F32, capacity));
            dNormedOffset = dNormedWidthOffset(s);
            if (withGradients) {
                dResidual = own(b.allocate(act, capacity, d));
                dLora = own(b.allocate(act, (long) capacity * maxRank(adapters)));
                areaA = own(b.allocate(act, capacity * areaWidth(s)));
            } else {
                dResidual = dLora = areaA = null;
            }
        } catch (RuntimeException | OutOfMemoryError e) {
            close();
            throw e;
        }
    }

    /**
     * The width (elements per token) of the gradient area. A layer's backward pass runs in phases, and what each needs
     * at once decides where it lives:
     * <ol>
     * <li>down_proj: its input (the SwiGLU product, in {@link #swiglu}) and gate and up are read, dSwiglu is written
     *     (area A);</li>
     * <li>SwiGLU's backward reads gate, up and dSwiglu and writes dGate into {@link #swiglu} (the product is not read
     *     again) and dUp over the up activation itself (read by nothing after);</li>
     * <li>gate_proj and up_proj read dGate and dUp and write the normed input's gradient dNormed, which lives in area A
     *     past the place of the attention gradients; the norm's backward adds the input gradient to the residual's;</li>
     * <li>the attention block: dAttended, dQuery, dKey, dValue side by side at the start of area A (every MLP gradient
     *     is dead), q_proj, k_proj and v_proj write dNormed past them, and the norm adds to the residual's gradient.</li>
     * </ol>
     * Before the layers, the loss writes dNormed, the gradient of the normed final hidden state, when nothing else
     * is in use. Against one buffer each this saves dGate, dUp and the attention gradients.
     */
    private static long areaWidth(LlamaShape s) {
        long d = s.hiddenSize(), ff = s.intermediateSize();
        return Math.max(ff, dNormedWidthOffset(s) + d);
    }

    /** Where dNormed starts in area A, per token: past the attention gradients. */
    private static long dNormedWidthOffset(LlamaShape s) {
        return 2L * s.queryDim() + 2L * s.kvDim();
    }

    private static int lossChunkRows(LlamaShape s, int capacity, long lossChunkBytes) {
        return (int) Math.max(1, Math.min(capacity, lossChunkBytes / (4L * s.vocabSize())));
    }

    private static int maxRank(List<TrainablePlan.LoraModule> adapters, Projection p, int layer) {
        int r = 1;
        for (TrainablePlan.LoraModule m : adapters) {
            if (m.projection() == p && (layer < 0 || m.layer() == layer)) r = Math.max(r, m.rank());
        }
        return r;
    }

    private static int maxRank(List<TrainablePlan.LoraModule> adapters) {
        int r = 1;
        for (TrainablePlan.LoraModule m : adapters) r = Math.max(r, m.rank());
        return r;
    }

    static TrainingBuffers forTraining(Backend b, LlamaShape s, List<TrainablePlan.LoraModule> adapters, int capacity,
                                       boolean checkpointing, long lossChunkBytes) {
        return new TrainingBuffers(b, s, adapters, capacity, true, true, !checkpointing, lossChunkBytes);
    }

    static TrainingBuffers forEvaluation(Backend b, LlamaShape s, List<TrainablePlan.LoraModule> adapters, int capacity,
                                         long lossChunkBytes) {
        return new TrainingBuffers(b, s, adapters, capacity, false, false, false, lossChunkBytes);
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
        elements += (residuals ? L : 1) * cap * d;                               // residual stream (0 and L share)
        elements += (residuals ? (perLayer ? L : 1) : 0) * cap * d;              // between the blocks
        int layerSets = perLayer ? L : 1;
        elements += layerSets * cap * (2 * qd + 2 * kvd + 2 * ff);               // q, k, v, attended, gate, up
        if (withGradients) f32 += layerSets * cap * s.numHeads();                 // lse
        for (int i = 0; i < (withGradients ? L : 1); i++) {                       // adapter hiddens, per layer in training
            for (Projection p : Projection.values()) {
                boolean any = false;
                for (TrainablePlan.LoraModule m : adapters) any |= m.projection() == p && (!withGradients || m.layer() == i);
                if (any) elements += cap * maxRank(adapters, p, withGradients ? i : -1);
            }
        }
        elements += cap * d + cap * ff;                                            // normed, swiglu
        f32 += (long) lossChunkRows(s, capacity, lossChunkBytes) * s.vocabSize() + cap; // logits chunk, losses
        if (withGradients) {
            elements += cap * (d + maxRank(adapters) + areaWidth(s));            // dResidual, dLora, area
        }
        return act.bytesFor(elements) + DType.F32.bytesFor(f32);
    }

    boolean checkpointing() { return checkpointing; }

    /** The input of layer l (l = numLayers: the final hidden state), first n rows. */
    Tensor residual(int l, int n) { return residual[Math.min(l, residual.length - 1)].rows(0, n); }

    Tensor middle(int l, int n) { return middle[Math.min(l, middle.length - 1)].rows(0, n); }

    LayerActivations layer(int l) { return layers[Math.min(l, layers.length - 1)]; }

    /** The gradient of a normed input: a block norm's in a layer, the final norm's in the loss (see {@link #areaWidth}). */
    Tensor dNormed(int n) { return areaA.view(capacity * dNormedOffset, n, d); }

    Tensor dSwiglu(int n) { return areaA.view(0, n, ff); }

    /** In the SwiGLU product's buffer: the product is dead once down_proj's backward has read it. */
    Tensor dGate(int n) { return swiglu.view(0, n, ff); }

    Tensor dUp(LayerActivations a, int n) { return a.up().rows(0, n); }

    Tensor dAttended(int n) { return areaA.view(0, n, qd); }

    Tensor dQuery(int n) { return areaA.view((long) capacity * qd, n, qd); }

    Tensor dKey(int n) { return areaA.view(2L * capacity * qd, n, kvd); }

    Tensor dValue(int n) { return areaA.view(2L * capacity * qd + (long) capacity * kvd, n, kvd); }

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
