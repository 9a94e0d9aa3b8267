// One AdamW step over parameters, gradients and moments of equal length, element by element, with the same float
// operations in the same order as the CPU backend (exact.cuh): the two backends keep identical weights.
//
// The parameter is F32 or BF16 (full fine-tuning in pure BF16, as torch trains a bfloat16 model), its moments of the
// same type (torch's zeros_like(param)), the gradient F32 or BF16. Every value is widened to float (exactly), the
// step computed in float, and param, m and v each rounded once to their type (nearest even), as torch's fused AdamW
// computes a bfloat16 parameter's step.
#include "exact.cuh"

// The optimizer runs over every parameter of the model once a step, reading four values and writing three per element:
// it is bound by memory bandwidth, so elements travel in 16-byte groups when all four tensors allow (a BF16 group
// reads 8 parameters with one access); views at other offsets and the last n % 8 elements go one at a time. The
// arithmetic of an element is the same on both paths.
// IN_BLOCK: the threads of this block alone take [0, n) (the multi-tensor kernel's blocks each take a chunk of one
// tensor); otherwise the whole grid does.
template <bool IN_BLOCK, typename P, typename G>
__device__ __forceinline__ void l4j_adamw(P* __restrict__ param, const G* __restrict__ grad, P* __restrict__ m,
                                          P* __restrict__ v, const l4j_adamw_scalars& s, long long n) {
    const bool aligned = l4j_aligned16(param) && l4j_aligned16(grad) && l4j_aligned16(m) && l4j_aligned16(v);
    auto walk = [&](auto group, auto one) {
        if (IN_BLOCK) l4j_block_groups_then_rest(n, aligned, group, one);
        else l4j_groups_then_rest(n, aligned, group, one);
    };
    walk(
            [&](long long j) {
                float p[L4J_GROUP], g[L4J_GROUP], mm[L4J_GROUP], vv[L4J_GROUP];
                l4j_load8(param, j, p);
                l4j_load8(grad, j, g);
                l4j_load8(m, j, mm);
                l4j_load8(v, j, vv);
#pragma unroll
                for (int k = 0; k < L4J_GROUP; k++) l4j_adamw_step(&p[k], g[k], &mm[k], &vv[k], s);
                l4j_store8(param, j, p);
                l4j_store8(m, j, mm);
                l4j_store8(v, j, vv);
            },
            [&](long long i) {
                float p = l4j_load(param, i), mm = l4j_load(m, i), vv = l4j_load(v, i);
                l4j_adamw_step(&p, l4j_load(grad, i), &mm, &vv, s);
                l4j_store(param, i, p);
                l4j_store(m, i, mm);
                l4j_store(v, i, vv);
            });
}

// The kernels' parameters: the four tensors, then l4j_adamw_scalars' fields in order, then the element count.
#define L4J_ADAMW(name, P, G) \
    extern "C" __global__ void name(P* param, const G* grad, P* m, P* v, float decay, float one_minus_beta1, \
                                    float beta2, float one_minus_beta2, float neg_step_size, float bias2_sqrt, \
                                    float eps, long long n) { \
        const l4j_adamw_scalars s = {decay, one_minus_beta1, beta2, one_minus_beta2, neg_step_size, bias2_sqrt, eps}; \
        l4j_adamw<false>(param, grad, m, v, s, n); \
    }

// Named lora4j_adamw_<param>_<grad>; the all-F32 kernel keeps its name from before parameters could be BF16.
L4J_ADAMW(lora4j_adamw_f32, float, float)
L4J_ADAMW(lora4j_adamw_f32_bf16, float, l4j_bf16)
L4J_ADAMW(lora4j_adamw_bf16_bf16, l4j_bf16, l4j_bf16)
L4J_ADAMW(lora4j_adamw_bf16_f32, l4j_bf16, float)

// ---- many tensors in one launch -------------------------------------------------------------------------------
// An optimizer step visits every parameter tensor: hundreds of small adapters in a LoRA model, each a launch of a few
// microseconds, and in full fine-tuning tensors whose launches each pay a ramp up and down. One launch per pair of
// dtypes takes them all: CudaBackend.adamwAll writes a table of the tensors, and each block of `chunk` elements
// (CudaKernels.ADAMW_CHUNK, a multiple of 8 so that chunks stay 16-byte aligned) finds its tensor in it. The
// arithmetic of every element is that of the one-tensor kernel: the same bits.

// One tensor of the table (64 bytes, CudaBackend.adamwAll's layout).
struct l4j_adamw_entry {
    void* param;
    const void* grad;
    void* m;
    void* v;
    long long n;
    long long first_block;  // the launch's first block on this tensor; blocks first_block.. take chunks in order
    float decay;            // 1 - lr * this tensor's weight decay
    float unused[3];
};

template <typename P, typename G>
__device__ __forceinline__ void l4j_adamw_all(const l4j_adamw_entry* __restrict__ table, int count, int chunk,
                                              l4j_adamw_scalars s) {
    // This block's tensor: the last entry whose first block is at or before it (binary search; first_block grows).
    const long long b = blockIdx.x;
    int lo = 0, hi = count - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (table[mid].first_block <= b) lo = mid;
        else hi = mid - 1;
    }
    const l4j_adamw_entry& e = table[lo];
    const long long start = (b - e.first_block) * chunk;
    const long long n = e.n - start < chunk ? e.n - start : chunk;
    s.decay = e.decay;
    l4j_adamw<true>(static_cast<P*>(e.param) + start, static_cast<const G*>(e.grad) + start,
                    static_cast<P*>(e.m) + start, static_cast<P*>(e.v) + start, s, n);
}

// The parameters: the table, its length and the chunk, then l4j_adamw_scalars' fields but decay (each entry has its
// own).
#define L4J_ADAMW_ALL(name, P, G) \
    extern "C" __global__ void name(const l4j_adamw_entry* table, int count, int chunk, float one_minus_beta1, \
                                    float beta2, float one_minus_beta2, float neg_step_size, float bias2_sqrt, \
                                    float eps) { \
        const l4j_adamw_scalars s = {0.0f, one_minus_beta1, beta2, one_minus_beta2, neg_step_size, bias2_sqrt, eps}; \
        l4j_adamw_all<P, G>(table, count, chunk, s); \
    }

L4J_ADAMW_ALL(lora4j_adamw_all_f32_f32, float, float)
L4J_ADAMW_ALL(lora4j_adamw_all_f32_bf16, float, l4j_bf16)
L4J_ADAMW_ALL(lora4j_adamw_all_bf16_bf16, l4j_bf16, l4j_bf16)
L4J_ADAMW_ALL(lora4j_adamw_all_bf16_f32, l4j_bf16, float)
