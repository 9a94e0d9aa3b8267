// The backward pass of causal grouped-query attention (attention.cu's lora4j_attention_lse_f32), in FP32, the
// flash-attention way: the probabilities are recomputed tile by tile from q, k and the forward pass's
// log-sum-exps, so no [n, n] matrix ever exists in global memory. With S = q k^T * scale and dO the output gradient:
//   P = exp(S - lse),  Dsum_i = sum_d dO[i, d] * O[i, d],  dP = dO v^T,  dS = P * (dP - Dsum),
//   dv = P^T dO,  dq = dS k * scale,  dk = dS^T q * scale.
//
// Two kernels, each writing its outputs exactly once (no atomics, so results repeat bit for bit):
//  - dq: one block per (tile of 32 query rows, query head), looping over the key tiles those rows attend to;
//  - dk, dv: one block per (tile of 32 key rows, KV head), looping over the query heads that share the KV head and
//    the query tiles that attend to those keys; the group's heads are summed in registers.
// Tiles of q, dO, k and v sit in shared memory (rows padded to an odd length, so that threads reading one column of
// different rows hit different banks). 256 threads; for the 32x32 scores each thread computes a 2x2 block
// (rows ty and ty+16, keys tx and tx+16); for the [32, headDim] products each thread owns one row and every eighth
// column, HD/8 accumulators in registers, HD the head-dimension class the kernel is instantiated for.
// q, k, v, O, dO and the gradients are activations, F32 or BF16 (instantiated for each): BF16 values are widened as
// they are loaded into the tiles and the gradients rounded once as they are stored; everything else is FP32.
#include "common.cuh"

#define L4J_ATTB_THREADS 256
#define L4J_ATTB_TILE 32
#define L4J_ATTB_SLD 33  // row length of the score tiles in shared memory

// D[i, h] = dot(dO[i, h, :], O[i, h, :]): one thread per (row, head), adding the products in order with fused
// multiply-adds, exactly as l4j_attb_scores forms dP = dot(dO, v). So where a query attends to one key only (a
// window of 1, or the first position), O is that key's v, dP - D is exactly 0 and so are the score gradients.
// out and d_out are [n, nHeads*headDim], so (row, head) w starts at w * headDim.
template <typename T>
__device__ __forceinline__ void l4j_attention_backward_dsum(const T* __restrict__ out, const T* __restrict__ d_out,
                                                            float* __restrict__ dsum, long long rows_heads,
                                                            int head_dim) {
    const long long w = (long long) blockIdx.x * blockDim.x + threadIdx.x;
    if (w >= rows_heads) return;
    const T* o = out + w * head_dim;
    const T* g = d_out + w * head_dim;
    float s = 0.0f;
    for (int d = 0; d < head_dim; d++) s = fmaf(l4j_load(g, d), l4j_load(o, d), s);
    dsum[w] = s;
}

extern "C" __global__ void lora4j_attention_backward_dsum_f32(const float* out, const float* d_out, float* dsum,
                                                              long long rows_heads, int head_dim) {
    l4j_attention_backward_dsum(out, d_out, dsum, rows_heads, head_dim);
}

extern "C" __global__ void lora4j_attention_backward_dsum_bf16(const l4j_bf16* out, const l4j_bf16* d_out, float* dsum,
                                                               long long rows_heads, int head_dim) {
    l4j_attention_backward_dsum(out, d_out, dsum, rows_heads, head_dim);
}

__device__ __forceinline__ int l4j_attb_ld(int head_dim) { return head_dim | 1; }

// Rows [row0, row0 + 32) of one head (columns [col, col + headDim)) of a row-major [n, width] matrix into
// tile[32][ld]; rows at or past n read as zeros.
template <typename T>
__device__ __forceinline__ void l4j_attb_load(float* __restrict__ tile, const T* __restrict__ src, int row0, int n,
                                              long long width, long long col, int head_dim, int ld) {
    for (int idx = threadIdx.x; idx < L4J_ATTB_TILE * head_dim; idx += blockDim.x) {
        int r = idx / head_dim, c = idx - r * head_dim;
        int row = row0 + r;
        tile[r * ld + c] = row < n ? l4j_load(src, (long long) row * width + col + c) : 0.0f;
    }
}

// The thread's 2x2 block of scores and of dP for query rows ty, ty+16 of (qs, dos) and key rows tx, tx+16 of
// (ks, vs): s = q . k (unscaled), dp = dO . v.
__device__ __forceinline__ void l4j_attb_scores(const float* __restrict__ qs, const float* __restrict__ dos,
                                                const float* __restrict__ ks, const float* __restrict__ vs,
                                                int head_dim, int ld, int ty, int tx, float s[2][2], float dp[2][2]) {
#pragma unroll
    for (int a = 0; a < 2; a++) {
#pragma unroll
        for (int b = 0; b < 2; b++) {
            s[a][b] = 0.0f;
            dp[a][b] = 0.0f;
        }
    }
    const float* q0 = qs + ty * ld;
    const float* q1 = qs + (ty + 16) * ld;
    const float* o0 = dos + ty * ld;
    const float* o1 = dos + (ty + 16) * ld;
    const float* k0 = ks + tx * ld;
    const float* k1 = ks + (tx + 16) * ld;
    const float* v0 = vs + tx * ld;
    const float* v1 = vs + (tx + 16) * ld;
    // Explicit fused multiply-adds: dP must round exactly as the Dsum kernel's dot product does.
    for (int d = 0; d < head_dim; d++) {
        float qa = q0[d], qb = q1[d], ka = k0[d], kb = k1[d];
        float oa = o0[d], ob = o1[d], va = v0[d], vb = v1[d];
        s[0][0] = fmaf(qa, ka, s[0][0]);
        s[0][1] = fmaf(qa, kb, s[0][1]);
        s[1][0] = fmaf(qb, ka, s[1][0]);
        s[1][1] = fmaf(qb, kb, s[1][1]);
        dp[0][0] = fmaf(oa, va, dp[0][0]);
        dp[0][1] = fmaf(oa, vb, dp[0][1]);
        dp[1][0] = fmaf(ob, va, dp[1][0]);
        dp[1][1] = fmaf(ob, vb, dp[1][1]);
    }
}

// P and dS of the thread's 2x2 block into ps/dss ([32][L4J_ATTB_SLD]; ps may be null). Query row q0 + r attends to
// key k0 + c when the key is not after it and, with a window, less than window positions before it.
__device__ __forceinline__ void l4j_attb_probabilities(const float s[2][2], const float dp[2][2],
                                                       const float* __restrict__ lse_s,
                                                       const float* __restrict__ dsum_s, float* __restrict__ ps,
                                                       float* __restrict__ dss, int q0, int k0, int n, int window,
                                                       float scale, int ty, int tx) {
#pragma unroll
    for (int a = 0; a < 2; a++) {
#pragma unroll
        for (int b = 0; b < 2; b++) {
            const int r = ty + 16 * a, c = tx + 16 * b;
            const int i = q0 + r, j = k0 + c;
            const bool attends = i < n && j <= i && (window <= 0 || i - j < window);
            const float p = attends ? expf(s[a][b] * scale - lse_s[r]) : 0.0f;
            if (ps != nullptr) ps[r * L4J_ATTB_SLD + c] = p;
            dss[r * L4J_ATTB_SLD + c] = p * (dp[a][b] - dsum_s[r]);
        }
    }
}

// Shared memory of either kernel, in floats: four [32][ld] tiles, two [32][33] score tiles, lse and Dsum rows.
__host__ __device__ __forceinline__ int l4j_attb_shared_floats(int head_dim) {
    return 4 * L4J_ATTB_TILE * (head_dim | 1) + 2 * L4J_ATTB_TILE * L4J_ATTB_SLD + 2 * L4J_ATTB_TILE;
}

template <int HD, typename T>
__device__ __forceinline__ void l4j_attention_backward_dq(const T* __restrict__ q, const T* __restrict__ k,
                                                          const T* __restrict__ v, const float* __restrict__ lse,
                                                          const float* __restrict__ dsum,
                                                          const T* __restrict__ d_out, T* __restrict__ dq,
                                                          int n, int n_heads, int n_kv_heads, int head_dim, int window,
                                                          float scale) {
    constexpr int ACC = HD / 8;
    L4J_DYNAMIC_SHARED(float, smem);
    const int ld = l4j_attb_ld(head_dim);
    float* qs = smem;
    float* dos = qs + L4J_ATTB_TILE * ld;
    float* ks = dos + L4J_ATTB_TILE * ld;
    float* vs = ks + L4J_ATTB_TILE * ld;
    float* dss = vs + L4J_ATTB_TILE * ld;
    float* lse_s = dss + 2 * L4J_ATTB_TILE * L4J_ATTB_SLD;
    float* dsum_s = lse_s + L4J_ATTB_TILE;

    const int tiles = (n + L4J_ATTB_TILE - 1) / L4J_ATTB_TILE;
    const int tile = tiles - 1 - (int) (blockIdx.x / n_heads);  // the longest rows (last tiles) start first
    const int h = (int) (blockIdx.x % n_heads);
    const int kvh = h / (n_heads / n_kv_heads);
    const int q0 = tile * L4J_ATTB_TILE;
    const long long q_width = (long long) n_heads * head_dim, kv_width = (long long) n_kv_heads * head_dim;
    const int t = threadIdx.x, ty = t / 16, tx = t % 16, row = t / 8, lane8 = t % 8;

    l4j_attb_load(qs, q, q0, n, q_width, (long long) h * head_dim, head_dim, ld);
    l4j_attb_load(dos, d_out, q0, n, q_width, (long long) h * head_dim, head_dim, ld);
    if (t < L4J_ATTB_TILE) {
        const int i = q0 + t;
        lse_s[t] = i < n ? lse[(long long) i * n_heads + h] : 0.0f;
        dsum_s[t] = i < n ? dsum[(long long) i * n_heads + h] : 0.0f;
    }

    float acc[ACC];
#pragma unroll
    for (int a = 0; a < ACC; a++) acc[a] = 0.0f;

    const int last = min(q0 + L4J_ATTB_TILE - 1, n - 1);
    const int first = window > 0 ? max(0, q0 - window + 1) : 0;
    for (int k0 = first / L4J_ATTB_TILE * L4J_ATTB_TILE; k0 <= last; k0 += L4J_ATTB_TILE) {
        __syncthreads();  // the previous key tile has been read by everyone
        l4j_attb_load(ks, k, k0, n, kv_width, (long long) kvh * head_dim, head_dim, ld);
        l4j_attb_load(vs, v, k0, n, kv_width, (long long) kvh * head_dim, head_dim, ld);
        __syncthreads();
        float s[2][2], dp[2][2];
        l4j_attb_scores(qs, dos, ks, vs, head_dim, ld, ty, tx, s, dp);
        l4j_attb_probabilities(s, dp, lse_s, dsum_s, nullptr, dss, q0, k0, n, window, scale, ty, tx);
        __syncthreads();
        // dq[row, :] += dS[row, :] k
        for (int c = 0; c < L4J_ATTB_TILE; c++) {
            const float ds = dss[row * L4J_ATTB_SLD + c];
            const float* kr = ks + c * ld;
#pragma unroll
            for (int a = 0; a < ACC; a++) {
                const int d = lane8 + 8 * a;
                if (d < head_dim) acc[a] += ds * kr[d];
            }
        }
    }

    const int i = q0 + row;
    if (i < n) {
        T* dst = dq + (long long) i * q_width + (long long) h * head_dim;
#pragma unroll
        for (int a = 0; a < ACC; a++) {
            const int d = lane8 + 8 * a;
            if (d < head_dim) l4j_store(dst, d, acc[a] * scale);
        }
    }
}

template <int HD, typename T>
__device__ __forceinline__ void l4j_attention_backward_dkv(const T* __restrict__ q, const T* __restrict__ k,
                                                           const T* __restrict__ v, const float* __restrict__ lse,
                                                           const float* __restrict__ dsum,
                                                           const T* __restrict__ d_out, T* __restrict__ dk,
                                                           T* __restrict__ dv, int n, int n_heads, int n_kv_heads,
                                                           int head_dim, int window, float scale) {
    constexpr int ACC = HD / 8;
    L4J_DYNAMIC_SHARED(float, smem);
    const int ld = l4j_attb_ld(head_dim);
    float* ks = smem;
    float* vs = ks + L4J_ATTB_TILE * ld;
    float* qs = vs + L4J_ATTB_TILE * ld;
    float* dos = qs + L4J_ATTB_TILE * ld;
    float* ps = dos + L4J_ATTB_TILE * ld;
    float* dss = ps + L4J_ATTB_TILE * L4J_ATTB_SLD;
    float* lse_s = dss + L4J_ATTB_TILE * L4J_ATTB_SLD;
    float* dsum_s = lse_s + L4J_ATTB_TILE;

    const int tile = (int) (blockIdx.x / n_kv_heads);  // the first key tiles, which most queries see, start first
    const int kvh = (int) (blockIdx.x % n_kv_heads);
    const int group = n_heads / n_kv_heads;
    const int k0 = tile * L4J_ATTB_TILE;
    const long long q_width = (long long) n_heads * head_dim, kv_width = (long long) n_kv_heads * head_dim;
    const int t = threadIdx.x, ty = t / 16, tx = t % 16, col = t / 8, lane8 = t % 8;

    l4j_attb_load(ks, k, k0, n, kv_width, (long long) kvh * head_dim, head_dim, ld);
    l4j_attb_load(vs, v, k0, n, kv_width, (long long) kvh * head_dim, head_dim, ld);

    float acc_k[ACC], acc_v[ACC];
#pragma unroll
    for (int a = 0; a < ACC; a++) {
        acc_k[a] = 0.0f;
        acc_v[a] = 0.0f;
    }

    // Queries at or after the first key, and with a window, no later than window - 1 after the last key.
    const int last = window > 0 ? min(n - 1, k0 + L4J_ATTB_TILE - 1 + window - 1) : n - 1;
    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        for (int q0 = k0; q0 <= last; q0 += L4J_ATTB_TILE) {
            __syncthreads();  // the previous query tile has been read by everyone
            l4j_attb_load(qs, q, q0, n, q_width, (long long) h * head_dim, head_dim, ld);
            l4j_attb_load(dos, d_out, q0, n, q_width, (long long) h * head_dim, head_dim, ld);
            if (t < L4J_ATTB_TILE) {
                const int i = q0 + t;
                lse_s[t] = i < n ? lse[(long long) i * n_heads + h] : 0.0f;
                dsum_s[t] = i < n ? dsum[(long long) i * n_heads + h] : 0.0f;
            }
            __syncthreads();
            float s[2][2], dp[2][2];
            l4j_attb_scores(qs, dos, ks, vs, head_dim, ld, ty, tx, s, dp);
            l4j_attb_probabilities(s, dp, lse_s, dsum_s, ps, dss, q0, k0, n, window, scale, ty, tx);
            __syncthreads();
            // dv[col, :] += P[:, col]^T dO;  dk[col, :] += dS[:, col]^T q
            for (int r = 0; r < L4J_ATTB_TILE; r++) {
                const float p = ps[r * L4J_ATTB_SLD + col];
                const float ds = dss[r * L4J_ATTB_SLD + col];
                const float* orow = dos + r * ld;
                const float* qrow = qs + r * ld;
#pragma unroll
                for (int a = 0; a < ACC; a++) {
                    const int d = lane8 + 8 * a;
                    if (d < head_dim) {
                        acc_v[a] += p * orow[d];
                        acc_k[a] += ds * qrow[d];
                    }
                }
            }
        }
    }

    const int j = k0 + col;
    if (j < n) {
        T* dkr = dk + (long long) j * kv_width + (long long) kvh * head_dim;
        T* dvr = dv + (long long) j * kv_width + (long long) kvh * head_dim;
#pragma unroll
        for (int a = 0; a < ACC; a++) {
            const int d = lane8 + 8 * a;
            if (d < head_dim) {
                l4j_store(dkr, d, acc_k[a] * scale);
                l4j_store(dvr, d, acc_v[a]);
            }
        }
    }
}

// Kernels lora4j_attention_backward_dq_<HD> and _dkv_<HD> for F32 activations, and _bf16_<HD> for BF16.
#define L4J_ATTENTION_BACKWARD(name, T, HD) \
    extern "C" __global__ void __launch_bounds__(L4J_ATTB_THREADS) lora4j_attention_backward_dq_##name( \
            const T* q, const T* k, const T* v, const float* lse, const float* dsum, const T* d_out, T* dq, int n, \
            int n_heads, int n_kv_heads, int head_dim, int window, float scale) { \
        l4j_attention_backward_dq<HD, T>(q, k, v, lse, dsum, d_out, dq, n, n_heads, n_kv_heads, head_dim, window, \
                                         scale); \
    } \
    extern "C" __global__ void __launch_bounds__(L4J_ATTB_THREADS) lora4j_attention_backward_dkv_##name( \
            const T* q, const T* k, const T* v, const float* lse, const float* dsum, const T* d_out, T* dk, T* dv, \
            int n, int n_heads, int n_kv_heads, int head_dim, int window, float scale) { \
        l4j_attention_backward_dkv<HD, T>(q, k, v, lse, dsum, d_out, dk, dv, n, n_heads, n_kv_heads, head_dim, \
                                          window, scale); \
    }

L4J_ATTENTION_BACKWARD(64, float, 64)
L4J_ATTENTION_BACKWARD(128, float, 128)
L4J_ATTENTION_BACKWARD(256, float, 256)
L4J_ATTENTION_BACKWARD(bf16_64, l4j_bf16, 64)
L4J_ATTENTION_BACKWARD(bf16_128, l4j_bf16, 128)
L4J_ATTENTION_BACKWARD(bf16_256, l4j_bf16, 256)
