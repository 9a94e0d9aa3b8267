package dev.lora4j.backend;

import dev.lora4j.quant.QuantSpec;
import dev.lora4j.quant.QuantizedTensor;
import dev.lora4j.tensor.DType;
import dev.lora4j.tensor.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;

/**
 * The tensor operations the Llama-family model is written against. {@code CpuBackend} (Vector API) and
 * {@code CudaBackend} (CUDA driver API, cuBLASLt, nvcc-built kernels) implement it; the CPU backend is the
 * reference the GPU backend is tested against, op by op.
 *
 * <p>Conventions, shared by every implementation:
 * <ul>
 *   <li>Tensors are row-major and contiguous. "Rows" means the tensor seen as {@code [rows, dim(-1)]}.</li>
 *   <li>Outputs are preallocated by the caller; ops never allocate tensors the caller sees.</li>
 *   <li>Activations are in {@link #activationType()}; weights may be F32, BF16 or F16. Arithmetic accumulates in
 *       FP32 whatever the storage type. Where BF16 activations are kept, values that need FP32 stay F32: the loss's
 *       logits (a product may write F32 from BF16 operands), lse, losses, and parameters with their gradients.</li>
 *   <li>Ops are asynchronous on devices that are; {@link #synchronize()} and the host transfers wait.</li>
 * </ul>
 */
public interface Backend extends AutoCloseable {

    /** Short name used on the command line: "cpu" or "cuda". */
    String name();

    /** One line for humans: the device, its memory, threads or compute capability. */
    String description();

    /** The dtype the model keeps activations in on this backend. */
    DType activationType();

    // ---- memory -------------------------------------------------------------------------------------------

    /** A new zero-filled tensor. */
    Tensor allocate(DType dtype, long... shape);

    /**
     * A new zero-filled tensor for state that may live outside device memory (paged optimizer states): a backend
     * with memory of its own places it where it fits, rather than failing when the device is full, and
     * {@link #placement} says where it went. Backends without device memory allocate it as {@link #allocate} does.
     */
    default Tensor allocatePaged(DType dtype, long... shape) {
        return allocate(dtype, shape);
    }

    /** Where this backend's tensor {@code t} (or the tensor it is a view of) lives. */
    default MemoryPlacement placement(Tensor t) {
        return MemoryPlacement.HOST;
    }

    /**
     * A new tensor of dtype {@code dst} holding {@code host} (little-endian elements of dtype {@code src}),
     * converted element by element. F32/F16/BF16 convert among each other (round to nearest even); other
     * dtypes must be copied as they are ({@code src == dst}).
     */
    Tensor upload(MemorySegment host, DType src, DType dst, long... shape);

    /** Copies the tensor's bytes, in its own dtype, into {@code dst} (at least {@link Tensor#byteSize()} bytes). */
    void copyToHost(Tensor t, MemorySegment dst);

    /** Copies {@code src} into {@code dst}: same element count, converting between float dtypes if they differ. */
    void copy(Tensor src, Tensor dst);

    /** Waits until every op issued so far has finished. */
    void synchronize();

    /** Bytes this backend holds for tensors now. */
    long memoryInUse();

    /** The most bytes this backend has held for tensors at once since it was opened. */
    long peakMemoryInUse();

    @Override
    void close();

    // ---- forward ops --------------------------------------------------------------------------------------

    /** {@code out[i, :] = table[ids[i], :]}; table is [vocab, d], out is [ids.length, d]. */
    void embedding(Tensor table, int[] ids, Tensor out);

    /**
     * RMSNorm as Hugging Face's LlamaRMSNorm computes it: per row, {@code x / sqrt(mean(x^2) + eps)} in FP32,
     * then multiplied by {@code weight} ([d]).
     */
    void rmsNorm(Tensor x, Tensor weight, float eps, Tensor out);

    /**
     * {@code out = x · wᵀ} (a torch Linear without bias): x is [n, k], w is [m, k], out is [n, m]. With
     * {@code accumulate} the product is added to {@code out} instead of replacing it. w may be a
     * {@link QuantizedTensor}: it is then dequantized on the fly (never kept dequantized) as bitsandbytes multiplies it:
     * to its original dtype, then cast to its compute dtype (see {@link QuantizedTensor}).
     */
    void matmul(Tensor x, Tensor w, Tensor out, boolean accumulate);

    default void matmul(Tensor x, Tensor w, Tensor out) { matmul(x, w, out, false); }

    /**
     * {@code out = addend + x · wᵀ}: a projection added to a residual stream that is kept, written into the next
     * stream (addend and out of one shape and dtype; out may be addend). The same sums as copying addend into out and
     * then {@link #matmul(Tensor, Tensor, Tensor, boolean) accumulating}, which this default does; a backend whose
     * products read their addend from another buffer saves the copy.
     */
    default void matmulAdd(Tensor x, Tensor w, Tensor addend, Tensor out) {
        if (addend != out) copy(addend, out);
        matmul(x, w, out, true);
    }

    /** {@code x[i, :] += bias[:]}. */
    void addBias(Tensor x, Tensor bias);

    /**
     * Rotary position embedding in place, in Hugging Face's "rotate_half" layout: within each head of
     * {@code headDim} values, element j pairs with element j + headDim/2. Row i of x ([n, heads*headDim]) is at
     * position {@code positions[i]}; the angle of pair j is {@code positions[i] * invFreq[j]} computed in FP32,
     * and {@code invFreq} is an F32 tensor [headDim/2] (rope scaling is already folded into it).
     */
    void rope(Tensor x, int headDim, int[] positions, Tensor invFreq);

    /**
     * Causal scaled-dot-product attention of one sequence with grouped-query heads.
     * q is [n, nHeads*headDim]; row i is the query at position {@code startPos + i}. k and v are
     * [>= startPos+n, nKvHeads*headDim]: the keys and values of positions 0, 1, ... (the KV cache).
     * Query head h uses KV head {@code h / (nHeads / nKvHeads)}. A query at position p attends to key positions
     * t with {@code t <= p}, and, when {@code slidingWindow > 0}, also {@code p - t < slidingWindow}.
     * Scores are scaled by 1/sqrt(headDim); softmax in FP32. out is [n, nHeads*headDim].
     */
    void attention(Tensor q, Tensor k, Tensor v, int startPos, int nHeads, int nKvHeads, int headDim,
                   int slidingWindow, Tensor out);

    /** {@code out = silu(gate) * up}, element-wise, silu(x) = x / (1 + exp(-x)). */
    void swiglu(Tensor gate, Tensor up, Tensor out);

    /**
     * SwiGLU of two projections that each carry a LoRA adapter: {@code gate += hiddenGate · bGateᵀ} and
     * {@code up += hiddenUp · bUpᵀ} (hidden [n, r] activations, b [ff, r]), each rounded once as
     * {@link #matmul(Tensor, Tensor, Tensor, boolean) matmul(hidden, b, gate, true)} rounds it, then
     * {@code out = silu(gate) · up} as {@link #swiglu}. gate and up keep the sums: the backward pass reads them.
     * A backend may do it in one pass over gate and up instead of three.
     */
    default void swigluWithLora(Tensor gate, Tensor hiddenGate, Tensor bGate, Tensor up, Tensor hiddenUp, Tensor bUp,
                                Tensor out) {
        matmul(hiddenGate, bGate, gate, true);
        matmul(hiddenUp, bUp, up, true);
        swiglu(gate, up, out);
    }

    /** {@code x += y}, element-wise, same shapes. */
    void add(Tensor x, Tensor y);

    // ---- training ops: the backward forms and the optimizer ------------------------------------------------
    // Gradients and optimizer states are F32, except where an op says BF16 may be given (full fine-tuning in BF16).
    // Unless a parameter says "accumulate", outputs are overwritten.

    /** The input gradient of {@link #matmul}: {@code dX[n,k] (+)= dY[n,m] · w[m,k]}; w may be a {@link QuantizedTensor}. */
    void matmulBackwardInput(Tensor dY, Tensor w, Tensor dX, boolean accumulate);

    /**
     * The weight gradient of {@link #matmul}: {@code dW[m,k] (+)= dY[n,m]ᵀ · x[n,k]}; dW is F32 or BF16. A BF16 dW
     * gets the F32 sum rounded to BF16 (nearest even); when accumulating, the old value is added in F32 and the result
     * rounded, after the sum was rounded or not (the CPU backend rounds once; cuBLASLt's BF16 outputs may round the
     * sum first, as torch's accumulation of a bfloat16 gradient does).
     */
    void matmulBackwardWeight(Tensor dY, Tensor x, Tensor dW, boolean accumulate);

    /** The bias gradient: {@code dBias[m] += Σ_rows dY[row, m]} (always accumulates). */
    void sumRows(Tensor dY, Tensor dBias);

    /**
     * Attention of one whole sequence for training: as {@link #attention} with startPos 0 and k, v holding
     * exactly the n positions of q, and also writes {@code lse[i, h]} ([n, nHeads] F32), the natural log of the
     * sum of exp(scaled scores) of row i, head h: what the backward pass needs instead of the probabilities.
     */
    void attentionForward(Tensor q, Tensor k, Tensor v, int nHeads, int nKvHeads, int headDim, int slidingWindow,
                                  Tensor out, Tensor lse);

    /**
     * Gradients of {@link #attentionForward} with respect to q, k and v (overwritten), given its inputs, its
     * output, its lse and the output gradient dOut. dk and dv sum over the query heads that share a KV head.
     */
    void attentionBackward(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dOut, int nHeads,
                                   int nKvHeads, int headDim, int slidingWindow, Tensor dq, Tensor dk, Tensor dv);

    /**
     * The gradients of {@link #rmsNorm}: dX (overwritten) from x, weight and dOut; when dWeight is not null,
     * {@code dWeight += } the weight gradient summed over rows.
     */
    void rmsNormBackward(Tensor x, Tensor weight, float eps, Tensor dOut, Tensor dX, Tensor dWeight);

    /**
     * {@link #rmsNormBackward(Tensor, Tensor, float, Tensor, Tensor, Tensor)}, adding the input gradient to dX when
     * {@code accumulate} (the residual stream's gradient, which a block's norm adds to) instead of overwriting it; dX
     * must then be neither x nor dOut. This default forms the gradient in a scratch tensor and adds it; backends fuse
     * the addition into the kernel's store.
     */
    default void rmsNormBackward(Tensor x, Tensor weight, float eps, Tensor dOut, Tensor dX, Tensor dWeight,
                                 boolean accumulate) {
        if (!accumulate) {
            rmsNormBackward(x, weight, eps, dOut, dX, dWeight);
            return;
        }
        try (Tensor t = allocate(dX.dtype(), dX.shape())) {
            rmsNormBackward(x, weight, eps, dOut, t, dWeight);
            add(dX, t);
        }
    }

    /** The gradient of {@link #rope}: the inverse rotation of dx, in place (same positions and frequencies). */
    void ropeBackward(Tensor dx, int headDim, int[] positions, Tensor invFreq);

    /**
     * The gradients of {@link #swiglu}: dGate and dUp (overwritten) from gate, up and dOut. dGate may be gate and dUp
     * may be up (each element is read before it is written), so a backward pass whose gate and up activations are
     * dead after this op can write their gradients over them.
     */
    void swigluBackward(Tensor gate, Tensor up, Tensor dOut, Tensor dGate, Tensor dUp);

    /** The gradient of {@link #embedding}: {@code dTable[ids[i], :] += dOut[i, :]}; dTable is F32 [vocab, d]. */
    void embeddingBackward(int[] ids, Tensor dOut, Tensor dTable);

    /**
     * Fused cross-entropy over rows of F32 logits [n, V], in place. For row i with {@code targets[i] >= 0}:
     * {@code losses[i] = logsumexp(logits[i]) - logits[i, targets[i]]} and the row becomes
     * {@code (softmax(logits[i]) - onehot(targets[i])) * gradScale}; rows whose target is negative (-100, as
     * Hugging Face's ignore_index) get loss 0 and a zero gradient. losses is F32 [n].
     */
    void crossEntropy(Tensor logits, int[] targets, float gradScale, Tensor losses);

    /**
     * One AdamW step as torch.optim.AdamW computes it, on tensors of equal length: {@code param *= 1 - lr*wd};
     * {@code m = b1*m + (1-b1)*g}; {@code v = b2*v + (1-b2)*g²}; {@code param -= lr * (m/(1-b1^step)) /
     * (sqrt(v/(1-b2^step)) + eps)}. step counts from 1. param and grad are F32 or BF16; m and v have param's dtype,
     * as torch keeps them. The arithmetic is in float whatever the dtypes (as torch's fused kernel computes a
     * bfloat16 parameter's step): each value is widened, and param, m and v are each rounded to their dtype once.
     */
    void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2, float eps,
                       float weightDecay, long step);

    /**
     * {@link #adamw} on every entry of {@code tensors}, with these hyperparameters and each entry's own weight decay:
     * the same values as calling it on each in turn. A backend may update them together (the CUDA backend launches
     * one kernel per pair of dtypes, where a LoRA model's hundreds of small adapters would each take a launch).
     */
    default void adamwAll(List<AdamwTensors> tensors, float lr, float beta1, float beta2, float eps,
                          long step) {
        for (AdamwTensors t : tensors) {
            adamw(t.param(), t.grad(), t.m(), t.v(), lr, beta1, beta2, eps, t.weightDecay(), step);
        }
    }

    /** The sum of the squares of the elements of an F32 or BF16 tensor (waits for the result): for gradient-norm clipping. */
    double sumOfSquares(Tensor t);

    /** {@code t *= s}, in place. */
    void scale(Tensor t, float s);

    /** Sets every element to zero. */
    void zero(Tensor t);

    /**
     * {@link #zero} on each tensor of the list. A backend may fill them together (the CUDA backend in one launch,
     * where a LoRA model's hundreds of adapter gradients would each take a fill of their own).
     */
    default void zeroAll(List<Tensor> tensors) {
        for (Tensor t : tensors) zero(t);
    }

    /**
     * Inverted dropout, the same on every backend for the same seed: element i of x is dropped when
     * {@code u(seed, i) < p} and otherwise scaled by 1/(1-p), where u is {@link DropoutHash#uniform(long, long)}.
     * u is a multiple of 2^-16, so an element is dropped with probability p rounded up to a multiple of 2^-16: at
     * least p and less than p + 2^-16 ({@link DropoutHash#dropThreshold}); the scale stays 1/(1-p). out may be x.
     */
    void dropout(Tensor x, float p, long seed, Tensor out);

    // ---- LoRA's down projection ----------------------------------------------------------------------------
    // y = x·Wᵀ + B·(scaling·A·dropout(x)): the frozen product and B's are ordinary products; A's side, with the
    // dropout and the scaling, is one op each way, so that a backend can draw the mask on the fly instead of storing
    // dropout(x), and read x once.

    /**
     * The down half of a LoRA adapter with its dropout and scaling: {@code hidden = scaling · dropout(x) · aᵀ}, with
     * x [n, k] an activation, a [r, k] the adapter's A (F32), hidden [n, r] an activation of x's dtype (overwritten),
     * and dropout exactly {@link #dropout}'s for (p, seed) over x's elements (element i·k + c; p = 0: none).
     *
     * <p>Rounding. The default composes {@link #dropout} into a temporary tensor, {@link #matmul} and {@link #scale}:
     * dropout(x), the product and hidden are each rounded to x's dtype. A backend that implements the op itself never
     * forms dropout(x): it sums the kept products x·a in FP32 (a dropped element adds nothing, a kept one adds x·a
     * unscaled), multiplies the sum by {@code scaling · keep} (keep = 1/(1-p) computed in double and rounded to float,
     * as dropout's; their product rounded to float) and rounds hidden once. Products of BF16 activations may round a to
     * BF16 first, as {@link #matmul} does.
     */
    default void loraDown(Tensor x, Tensor a, float scaling, float p, long seed, Tensor hidden) {
        LoraComposition.down(this, x, a, scaling, p, seed, hidden);
    }

    /**
     * The backward pass of an adapter's up projection {@code out += hidden · bᵀ} (hidden [n, r] an activation, b
     * [m, r] F32): {@code gradB += dYᵀ · hidden} (F32 [m, r], accumulated) and {@code dHidden = dY · b} ([n, r],
     * overwritten), as {@link #matmulBackwardWeight matmulBackwardWeight(dY, hidden, gradB, true)} and
     * {@link #matmulBackwardInput matmulBackwardInput(dY, b, dHidden, false)} compute them. A backend may read dY
     * once for both; its sums may then run in another order.
     */
    default void loraUpBackward(Tensor dY, Tensor hidden, Tensor b, Tensor gradB, Tensor dHidden) {
        matmulBackwardWeight(dY, hidden, gradB, true);
        matmulBackwardInput(dY, b, dHidden, false);
    }

    /**
     * The gradients of {@link #loraDown} (same x, a, scaling, p, seed) given dHidden [n, r], the gradient of hidden,
     * an activation of x's dtype: {@code gradA += scaling · dHiddenᵀ · dropout(x)} (gradA F32 [r, k], always
     * accumulated) and {@code dX (+)= dropout'(scaling · dHidden · a)}, where dropout' applies the forward pass's mask
     * and 1/(1-p) to the incoming gradient; dX [n, k] is an activation of x's dtype, overwritten unless accumulate.
     *
     * <p>Rounding. The default composes {@link #copy}, {@link #scale}, {@link #dropout} into a temporary tensor and
     * the two backward products: scaling·dHidden, dropout(x), dHidden·a and its dropout are each rounded to x's dtype,
     * and dX once more when accumulated. A backend that implements the op itself, per element of x: draws the mask
     * once, sums dHidden·a over the r ranks in FP32, multiplies a kept element's sum by {@code scaling · keep} (as in
     * {@link #loraDown}), adds dX's old value and rounds once; for gradA it sums dHidden·x over the kept elements in
     * FP32 and adds the sum times {@code scaling · keep} to gradA. Products of BF16 activations may round a to BF16
     * first; with more ranks than a backend takes at once (the CUDA backend: 64 with BF16 activations, 16 with F32),
     * dX is rounded after each group of ranks.
     */
    default void loraDownBackward(Tensor x, Tensor a, float scaling, float p, long seed, Tensor dHidden, Tensor gradA,
                                  Tensor dX, boolean accumulate) {
        LoraComposition.downBackward(this, x, a, scaling, p, seed, dHidden, gradA, dX, accumulate);
    }

    /**
     * One step of bitsandbytes' 8-bit blockwise AdamW (its CUDA kernel kOptimizerStatic8bit2StateBlockwise for
     * "adam", with decoupled weight decay after the step), as docs/optimizers.md states it. param and grad are F32
     * of n elements; m8 and v8 are the U8 codes of the two moments (n elements each); absmaxM and absmaxV are F32 of
     * {@link BitsandbytesAdam#blocks}(n) elements, the per-block scales, replaced by the new ones; codeSigned and
     * codeUnsigned are the sorted F32 dynamic maps of 256 values (bitsandbytes' create_dynamic_map, signed for m,
     * unsigned for v). Elements with a NaN or infinite gradient get zero moments and keep their value. Every
     * backend gives the same bytes. step counts from 1.
     */
    void adamw8bit(Tensor param, Tensor grad, Tensor m8, Tensor v8, Tensor absmaxM, Tensor absmaxV, Tensor codeSigned,
                   Tensor codeUnsigned, float lr, float beta1, float beta2, float eps, float weightDecay, long step);

    /**
     * One step of bitsandbytes' 32-bit AdamW (kOptimizer32bit2State for "adam"), on F32 tensors of equal length:
     * {@code m = m*b1 + (1-b1)*g}; {@code v = v*b2 + (1-b2)*(g*g)}; {@code param += stepSize * (m / (sqrt(v) +
     * eps*c2))} with {@code c2 = sqrt(1-b2^step)} and {@code stepSize = -lr*c2/(1-b1^step)}; then, if weightDecay
     * > 0, {@code param *= 1 - lr*weightDecay}. Unlike {@link #adamw} (torch), the decay follows the step. Every
     * backend gives the same bytes. step counts from 1.
     */
    void adamw32bit(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2, float eps,
                    float weightDecay, long step);


    // ---- 4-bit quantization (bitsandbytes' NF4/FP4, dev.lora4j.quant) -----------------------------------------

    /**
     * Quantizes a dense F32/BF16/F16 weight to 4 bits on this backend, exactly as bitsandbytes'
     * {@code quantize_4bit} does (same codes, absmax and, with double quantization, 8-bit absmax codes and offset),
     * so that every backend produces the same bytes. The input stays open.
     */
    QuantizedTensor quantize4bit(Tensor weight, QuantSpec spec);

    /** Writes the dequantized weight into {@code out} (F32, BF16 or F16, the same shape), as bitsandbytes' {@code dequantize_4bit}. */
    void dequantize4bit(QuantizedTensor q, Tensor out);

    // ---- host conveniences (not for hot paths) ------------------------------------------------------------

    /** The tensor's elements as floats (float dtypes only). */
    default float[] toFloats(Tensor t) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment host = arena.allocate(t.byteSize(), 16);
            copyToHost(t, host);
            return HostConversions.toFloats(host, t.dtype(), t.numel());
        }
    }

    /** A new tensor of dtype {@code dst} holding these floats. */
    default Tensor fromFloats(float[] values, DType dst, long... shape) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment host = arena.allocateFrom(ValueLayout.JAVA_FLOAT, values);
            return upload(host, DType.F32, dst, shape);
        }
    }
}
