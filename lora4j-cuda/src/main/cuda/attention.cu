// Causal scaled-dot-product attention of one sequence over its KV cache, with grouped-query heads and an optional
// sliding window. One block per (query row, head); keys are visited in tiles with an online softmax (running max
// and running sum, FP32), so no [n, T] score matrix is ever materialised.
//
// q: [n, nHeads*headDim] F32 or BF16 (the activation type); k, v: [>= startPos+n, nKvHeads*headDim] (F32, BF16 or
// F16); out like q. BF16 queries are widened as they are read; BF16 outputs are rounded once as they are stored.
// Dynamic shared memory: headDim + L4J_ATTN_TILE floats. out may be q itself: a block reads its query row into
// shared memory before anything is written.
// For training, lse (not null) receives [n, nHeads] log-sum-exps of the scaled scores: max + log(sum), the only
// statistic the backward pass (attention_backward.cu) needs to recompute the probabilities.
#include "common.cuh"

#define L4J_ATTN_THREADS 128
#define L4J_ATTN_TILE 64
#define L4J_ATTN_MAX_ACC 4  // accumulators per thread: headDim <= L4J_ATTN_THREADS * L4J_ATTN_MAX_ACC = 512

template <typename Q, typename KV>
__device__ __forceinline__ void l4j_attention(const Q* q, const KV* __restrict__ k,
                                              const KV* __restrict__ v, Q* out, float* __restrict__ lse,
                                              int n_heads, int n_kv_heads, int head_dim, int start_pos,
                                              int window, float scale) {
    L4J_DYNAMIC_SHARED(float, smem);
    float* q_s = smem;                 // [head_dim]
    float* tile = smem + head_dim;     // [L4J_ATTN_TILE]: scores, then their exponentials

    const int i = blockIdx.x / n_heads;
    const int h = blockIdx.x - i * n_heads;
    const int kvh = h / (n_heads / n_kv_heads);
    const int pos = start_pos + i;
    const int first = window > 0 ? max(0, pos - window + 1) : 0;
    const long long q_width = (long long) n_heads * head_dim;
    const long long kv_width = (long long) n_kv_heads * head_dim;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;

    const Q* q_row = q + i * q_width + (long long) h * head_dim;
    for (int j = threadIdx.x; j < head_dim; j += blockDim.x) q_s[j] = l4j_load(q_row, j);
    __syncthreads();

    float m = -INFINITY;  // running max of the scores seen so far
    float l = 0.0f;       // running sum of exp(score - m)
    float acc[L4J_ATTN_MAX_ACC];
#pragma unroll
    for (int r = 0; r < L4J_ATTN_MAX_ACC; r++) acc[r] = 0.0f;

    for (int t0 = first; t0 <= pos; t0 += L4J_ATTN_TILE) {
        const int len = min(L4J_ATTN_TILE, pos + 1 - t0);
        // Scores: one warp per key, its lanes stride over head_dim (coalesced reads of the key row).
        for (int t = warp; t < len; t += warps) {
            const KV* k_row = k + (long long) (t0 + t) * kv_width + (long long) kvh * head_dim;
            float dot = 0.0f;
            for (int j = lane; j < head_dim; j += 32) dot += q_s[j] * l4j_load(k_row, j);
            dot = l4j_warp_sum(dot);
            if (lane == 0) tile[t] = dot * scale;
        }
        __syncthreads();
        float tile_max = -INFINITY;
        for (int t = 0; t < len; t++) tile_max = fmaxf(tile_max, tile[t]);
        const float m_new = fmaxf(m, tile_max);
        const float correction = expf(m - m_new);  // 0 on the first tile, where m is -inf
        __syncthreads();                            // everyone has read the scores before they are overwritten
        for (int t = threadIdx.x; t < len; t += blockDim.x) tile[t] = expf(tile[t] - m_new);
        __syncthreads();
        float tile_sum = 0.0f;
        for (int t = 0; t < len; t++) tile_sum += tile[t];
        l = l * correction + tile_sum;
        // Weighted values: each thread owns dimensions j = threadIdx.x + r * blockDim.x (coalesced value reads).
#pragma unroll
        for (int r = 0; r < L4J_ATTN_MAX_ACC; r++) {
            const int j = threadIdx.x + r * blockDim.x;
            if (j < head_dim) {
                float a = acc[r] * correction;
                const KV* v_col = v + (long long) t0 * kv_width + (long long) kvh * head_dim + j;
                for (int t = 0; t < len; t++) a += tile[t] * l4j_load(v_col, (long long) t * kv_width);
                acc[r] = a;
            }
        }
        m = m_new;
        __syncthreads();  // the next tile overwrites the exponentials
    }

    Q* out_row = out + i * q_width + (long long) h * head_dim;
    const float inv_l = 1.0f / l;
#pragma unroll
    for (int r = 0; r < L4J_ATTN_MAX_ACC; r++) {
        const int j = threadIdx.x + r * blockDim.x;
        if (j < head_dim) l4j_store(out_row, j, acc[r] * inv_l);
    }
    if (lse != nullptr && threadIdx.x == 0) lse[(long long) i * n_heads + h] = m + logf(l);
}

#define L4J_ATTENTION(name, Q, KV) \
    extern "C" __global__ void __launch_bounds__(L4J_ATTN_THREADS) lora4j_attention_##name( \
            const Q* q, const KV* k, const KV* v, Q* out, int n_heads, int n_kv_heads, int head_dim, \
            int start_pos, int window, float scale) { \
        l4j_attention<Q, KV>(q, k, v, out, nullptr, n_heads, n_kv_heads, head_dim, start_pos, window, scale); \
    }

L4J_ATTENTION(f32, float, float)
L4J_ATTENTION(bf16, float, l4j_bf16)
L4J_ATTENTION(f16, float, l4j_f16)
L4J_ATTENTION(bf16act_f32, l4j_bf16, float)
L4J_ATTENTION(bf16act_bf16, l4j_bf16, l4j_bf16)
L4J_ATTENTION(bf16act_f16, l4j_bf16, l4j_f16)

// Training: the whole sequence (start position 0, k and v of exactly the n positions, all of the activation type),
// with the lse output.
#define L4J_ATTENTION_LSE(name, T) \
    extern "C" __global__ void __launch_bounds__(L4J_ATTN_THREADS) lora4j_attention_lse_##name( \
            const T* q, const T* k, const T* v, T* out, float* lse, int n_heads, int n_kv_heads, int head_dim, \
            int window, float scale) { \
        l4j_attention<T, T>(q, k, v, out, lse, n_heads, n_kv_heads, head_dim, 0, window, scale); \
    }

L4J_ATTENTION_LSE(f32, float)
L4J_ATTENTION_LSE(bf16, l4j_bf16)
