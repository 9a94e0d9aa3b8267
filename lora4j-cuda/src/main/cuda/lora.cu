// LoRA's down projection fused with its dropout and scaling (Backend.loraDown and loraDownBackward):
//   forward:  hidden = scaling * dropout(x) a^T                         x [n, k], a [r, k] (F32), hidden [n, r]
//   backward: gradA += scaling * dHidden^T dropout(x);  dX (+)= dropout'(scaling * dHidden a)
// The dropout mask is drawn from (seed, element index) where it is used (exact.cuh: one hash per group of four
// elements) and never stored, so each call reads x once; the backward pass draws it once for dX and gradA together. A kept
// element enters the sums unscaled, and the sums are multiplied once by factor = scaling * 1/(1-p) (rounded to float
// by the caller) in FP32.
//
// BF16 activations run on the tensor cores (mma.sync m16n8k16, FP32 accumulation), a rounded to BF16 as the products
// of CudaProducts round an F32 adapter; x, dHidden and the masked x are BF16 already. F32 activations run on the
// CUDA cores in FP32. Ranks are handled in groups (16, 32 or 64 on the tensor cores, 16 on the CUDA cores); the
// caller launches one pass per group for larger ranks.
//
// The sums over k (hidden) and over the n tokens (gradA) are split over blocks by a partition fixed by the shapes
// alone: each block writes its FP32 partial sums to a scratch buffer, and lora4j_lora_hidden / lora4j_lora_grad_a add
// the partials in split order. No atomics: results repeat bit for bit.
#include "exact.cuh"

#define L4J_LORA_THREADS 256  // 8 warps, every kernel of this file
// Tensor-core forward: a block owns 128 rows (16 per warp) and one split of the columns, 64 columns per step.
#define L4J_LORA_FWD_ROWS 128
#define L4J_LORA_FWD_COLS 64
#define L4J_LORA_FWD_LD 72    // shared row length in bf16: 64 + 8, so the 8 rows an ldmatrix reads fall in different banks
// Tensor-core backward: a block owns 128 columns and one split of the rows, 64 rows per step.
#define L4J_LORA_BWD_ROWS 64
#define L4J_LORA_BWD_COLS 128
#define L4J_LORA_BWD_LD 136   // 128 + 8
// CUDA-core kernels (F32): 16 ranks per pass; each lane owns two adjacent columns (half a mask hash) of a 64-column step.
#define L4J_LORA_CORE_RANKS 16
#define L4J_LORA_CORE_ROWS 4  // rows of x per warp in the forward pass: 32 per block

// Shared memory of the tensor-core kernels, in bytes (CudaLora mirrors these).
__host__ __device__ __forceinline__ int l4j_lora_forward_shared(int rg) {
    return 2 * (L4J_LORA_FWD_ROWS + 16 * rg) * L4J_LORA_FWD_LD * 2;
}
// The backward kernel's; with `old` also two tiles of dX's old values (the vector path when it accumulates).
__host__ __device__ __forceinline__ int l4j_lora_backward_shared(int rg, bool old) {
    return (16 * rg * L4J_LORA_BWD_LD + (old ? 4 : 2) * L4J_LORA_BWD_ROWS * L4J_LORA_BWD_LD
            + 2 * L4J_LORA_BWD_ROWS * (16 * rg + 8)) * 2;
}

#ifdef L4J_DEVICE_CODE

// The bf16x2 word that keeps the elements whose bits are set in keep2 (bit 0: the low half, the lower column).
__device__ __forceinline__ uint32_t l4j_lora_keep_word(uint32_t keep2) {
    return ((keep2 & 1u) ? 0x0000ffffu : 0u) | ((keep2 & 2u) ? 0xffff0000u : 0u);
}

// The bf16x2 word that keeps each half of a pair whose 16-bit draw (draws: the low element's in bits 0-15, the high
// one's in 16-31) reaches the threshold: l4j_lora_keep_word(l4j_dropout_keep_half(draws, threshold)) without the
// flags in between. The high draw reaches it exactly when the whole word reaches threshold * 2^16; a threshold of
// 2^16 (p within 2^-16 of 1) keeps nothing.
__device__ __forceinline__ uint32_t l4j_lora_keep_mask(uint32_t draws, uint32_t threshold) {
    const uint32_t low = (draws & 0xffffu) >= threshold ? 0x0000ffffu : 0u;
    const uint32_t high = threshold <= 0xffffu && draws >= (threshold << 16) ? 0xffff0000u : 0u;
    return low | high;
}

// The draws (two 16-bit draws in one word, as l4j_lora_keep_mask takes them) of the two pairs of elements this lane
// holds at flat indices e0 and e1, where lane l ^ 1 holds the other halves of the same two groups of four: this
// lane's pairs begin their groups (e % 4 == 0) when `upper` is false and end them (e % 4 == 2) when it is true, the
// partner's the other way. Each lane hashes one of the groups (the lower lane e0's, the upper lane e1's) and hands
// its partner the half of the hash the partner's pair draws from: one hash per lane for two pairs. Every lane of the
// warp calls it together.
__device__ __forceinline__ void l4j_lora_pair_draws_shared(unsigned long long seed, unsigned long long e0,
                                                           unsigned long long e1, bool upper, uint32_t& draws0,
                                                           uint32_t& draws1) {
    const uint64_t z = l4j_dropout_mix(seed, (upper ? e1 : e0) >> 2);
    const uint32_t low = (uint32_t) z, high = (uint32_t) (z >> 32);
    const uint32_t own = upper ? high : low;
    const uint32_t got = __shfl_xor_sync(0xffffffffu, upper ? low : high, 1);
    draws0 = upper ? got : own;
    draws1 = upper ? own : got;
}

// Those pairs' keep words (WORDS: l4j_lora_keep_word of l4j_dropout_keep2's flags) or keep flags (l4j_dropout_keep2's).
template <bool WORDS>
__device__ __forceinline__ void l4j_lora_keeps_shared(unsigned long long seed, unsigned long long e0,
                                                      unsigned long long e1, uint32_t threshold, bool upper,
                                                      uint32_t& keep0, uint32_t& keep1) {
    uint32_t draws0, draws1;
    l4j_lora_pair_draws_shared(seed, e0, e1, upper, draws0, draws1);
    keep0 = WORDS ? l4j_lora_keep_mask(draws0, threshold) : l4j_dropout_keep_half(draws0, threshold);
    keep1 = WORDS ? l4j_lora_keep_mask(draws1, threshold) : l4j_dropout_keep_half(draws1, threshold);
}

// ---- forward on the tensor cores -----------------------------------------------------------------------------
// Block (split s, 128-row tile): columns [s * split_cols, min(k, (s + 1) * split_cols)), 64 per step. The x tile
// comes in by cp.async (16-byte rows: VEC) or element by element, double-buffered; a's 64 columns are read as F32,
// rounded to bf16 into shared memory while the previous step computes. Warp w multiplies its 16 rows by the R ranks:
// the mask is applied to the A fragments in registers (a fragment register holds two adjacent columns, half a group
// of four; with k % 4 == 0 lanes 2m and 2m + 1 hold the two halves of a group and share its hash).
// The 16 x R sums of each warp go to partial[s][row][j] (row stride partial_stride, the full rank).
template <int RG, bool VEC>
__device__ __forceinline__ void l4j_lora_down_mma(const uint16_t* __restrict__ x, const float* __restrict__ a,
                                                  float* __restrict__ partial, int n, int k, int r, int partial_stride,
                                                  int split_cols, unsigned long long seed, unsigned threshold) {
    constexpr int R = 16 * RG, LD = L4J_LORA_FWD_LD, XT = L4J_LORA_FWD_ROWS * LD, AT = R * LD;
    constexpr int A_PER_THREAD = R * L4J_LORA_FWD_COLS / L4J_LORA_THREADS;  // 4 RG
    l4j_require_dynamic_shared(l4j_lora_forward_shared(RG));
    L4J_DYNAMIC_SHARED(float, smem);
    uint16_t* xs = reinterpret_cast<uint16_t*>(smem);  // [2][128][LD]
    uint16_t* as = xs + 2 * XT;                        // [2][R][LD]

    const int row_tiles = (n + L4J_LORA_FWD_ROWS - 1) / L4J_LORA_FWD_ROWS;
    const int split = (int) (blockIdx.x / row_tiles);
    const int row0 = (int) (blockIdx.x % row_tiles) * L4J_LORA_FWD_ROWS;
    const int c_begin = split * split_cols, c_end = min(k, c_begin + split_cols);
    const int steps = (c_end - c_begin + L4J_LORA_FWD_COLS - 1) / L4J_LORA_FWD_COLS;
    const int tid = threadIdx.x, warp = tid >> 5, l = tid & 31, g = l >> 2, t = l & 3, mi = l >> 3;

    float acc[2 * RG][4];
#pragma unroll
    for (int nt = 0; nt < 2 * RG; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
    float a_next[A_PER_THREAD];

    auto load_x = [&](int buf, int c0) {
        uint16_t* tile = xs + buf * XT;
        if (VEC) {
            // 128 rows of 8 16-byte pieces: 4 per thread.
#pragma unroll
            for (int q = 0; q < 4; q++) {
                const int id = tid + q * L4J_LORA_THREADS, row = id >> 3, cc = (id & 7) * 8;
                const bool valid = row0 + row < n && c0 + cc < c_end;
                l4j_cp_async_16(tile + row * LD + cc, x + (valid ? (long long) (row0 + row) * k + c0 + cc : 0), valid);
            }
        } else {
            for (int id = tid; id < L4J_LORA_FWD_ROWS * L4J_LORA_FWD_COLS; id += L4J_LORA_THREADS) {
                const int row = id >> 6, cc = id & 63;
                const bool valid = row0 + row < n && c0 + cc < c_end;
                tile[row * LD + cc] = valid ? x[(long long) (row0 + row) * k + c0 + cc] : (uint16_t) 0;
            }
        }
    };
    auto load_a = [&](int c0) {
#pragma unroll
        for (int q = 0; q < A_PER_THREAD; q++) {
            const int id = tid + q * L4J_LORA_THREADS, j = id >> 6, cc = id & 63;
            a_next[q] = j < r && c0 + cc < c_end ? a[(long long) j * k + c0 + cc] : 0.0f;
        }
    };
    auto store_a = [&](int buf) {
#pragma unroll
        for (int q = 0; q < A_PER_THREAD; q++) {
            const int id = tid + q * L4J_LORA_THREADS, j = id >> 6, cc = id & 63;
            as[buf * AT + j * LD + cc] = l4j_float_to_bf16(a_next[q]);
        }
    };

    if (steps > 0) {
        load_x(0, c_begin);
        l4j_cp_async_commit();
        load_a(c_begin);
        store_a(0);
    }
    const int mr = warp * 16;  // this warp's rows in the tile
    const int ra = row0 + mr + g, rb = ra + 8;
    const bool quads = (k & 3) == 0 && (c_begin & 3) == 0;  // column 2t starts a group for even t
    for (int s = 0; s < steps; s++) {
        const int c0 = c_begin + s * L4J_LORA_FWD_COLS, buf = s & 1;
        l4j_cp_async_wait<0>();
        __syncthreads();  // tile s is in; every warp is done with step s - 1, whose buffers refill now
        if (s + 1 < steps) {
            load_x(buf ^ 1, c0 + L4J_LORA_FWD_COLS);
            l4j_cp_async_commit();
            load_a(c0 + L4J_LORA_FWD_COLS);
        }
        const l4j_shared_address xt = l4j_shared(xs + buf * XT), at = l4j_shared(as + buf * AT);
#pragma unroll
        for (int kk = 0; kk < L4J_LORA_FWD_COLS / 16; kk++) {
            uint32_t af[4];
            l4j_ldmatrix_x4(af, xt + 2 * ((mr + (mi & 1) * 8 + (l & 7)) * LD + kk * 16 + (mi >> 1) * 8));
            if (threshold != 0) {
                const unsigned long long ca = (unsigned long long) (c0 + kk * 16 + 2 * t), cb = ca + 8;
                const unsigned long long ea = (unsigned long long) ra * k, eb = (unsigned long long) rb * k;
                uint32_t keep[4];  // keep words
                if (quads) {
                    l4j_lora_keeps_shared<true>(seed, ea + ca, eb + ca, threshold, (t & 1) != 0, keep[0], keep[1]);
                    l4j_lora_keeps_shared<true>(seed, ea + cb, eb + cb, threshold, (t & 1) != 0, keep[2], keep[3]);
                } else {
                    keep[0] = l4j_lora_keep_word(l4j_dropout_keep2(seed, ea + ca, threshold));
                    keep[1] = l4j_lora_keep_word(l4j_dropout_keep2(seed, eb + ca, threshold));
                    keep[2] = l4j_lora_keep_word(l4j_dropout_keep2(seed, ea + cb, threshold));
                    keep[3] = l4j_lora_keep_word(l4j_dropout_keep2(seed, eb + cb, threshold));
                }
#pragma unroll
                for (int q = 0; q < 4; q++) af[q] &= keep[q];
            }
#pragma unroll
            for (int np = 0; np < RG; np++) {
                uint32_t bf[4];
                l4j_ldmatrix_x4(bf, at + 2 * ((np * 16 + (mi >> 1) * 8 + (l & 7)) * LD + kk * 16 + (mi & 1) * 8));
                l4j_mma_m16n8k16_bf16(acc[2 * np], af, bf, acc[2 * np]);
                l4j_mma_m16n8k16_bf16(acc[2 * np + 1], af, bf + 2, acc[2 * np + 1]);
            }
        }
        if (s + 1 < steps) store_a(buf ^ 1);
    }
    float* out = partial + (long long) split * n * partial_stride;
#pragma unroll
    for (int nt = 0; nt < 2 * RG; nt++) {
        const int j = nt * 8 + 2 * t;
        if (ra < n) {
            if (j < r) out[(long long) ra * partial_stride + j] = acc[nt][0];
            if (j + 1 < r) out[(long long) ra * partial_stride + j + 1] = acc[nt][1];
        }
        if (rb < n) {
            if (j < r) out[(long long) rb * partial_stride + j] = acc[nt][2];
            if (j + 1 < r) out[(long long) rb * partial_stride + j + 1] = acc[nt][3];
        }
    }
}

// ---- backward on the tensor cores ----------------------------------------------------------------------------
// Block (split s, 128-column tile): rows [s * block_rows, min(n, (s + 1) * block_rows)), 64 per step; a's 128 columns
// are rounded to bf16 into shared memory once. The next step's x tile (and, on the vector path when dX accumulates,
// its tile of dX) comes in by cp.async while a step computes, so every read of global memory is one step ahead.
// Each step:
//   dX:    warp w computes rows 16 (w % 4) .. + 15, columns 64 (w / 4) .. + 63 of dHidden a (K = the R ranks), draws
//          the mask of each adjacent pair of columns it holds (with k % 4 == 0 lanes 2m and 2m + 1 share the hash of
//          a group of four), writes dX = kept ? factor * sum : 0 (+ dX) rounded once,
//          and zeroes the dropped elements of the x tile in shared memory;
//   gradA: warp w adds dHidden^T times the masked x tile to its 16 columns of the R x 128 sums (K = the 64 rows).
// At the end the R x 128 sums go to partial[s][j][c] (rank stride k: the partial of the whole gradA).
template <int RG, bool VEC>
__device__ __forceinline__ void l4j_lora_down_backward_mma(
        const uint16_t* __restrict__ x, const float* __restrict__ a, const uint16_t* __restrict__ dh,
        uint16_t* __restrict__ dx, float* __restrict__ partial, int n, int k, int r, int dh_stride, int block_rows,
        long long partial_split_stride, unsigned long long seed, unsigned threshold, float factor, int accumulate) {
    constexpr int R = 16 * RG, LD = L4J_LORA_BWD_LD, HLD = R + 8, XT = L4J_LORA_BWD_ROWS * LD;
    constexpr int HT = L4J_LORA_BWD_ROWS * HLD, H_PER_THREAD = L4J_LORA_BWD_ROWS * R / L4J_LORA_THREADS;  // 4 RG
    l4j_require_dynamic_shared(l4j_lora_backward_shared(RG, VEC && accumulate));
    L4J_DYNAMIC_SHARED(float, smem);
    uint16_t* as = reinterpret_cast<uint16_t*>(smem);  // [R][LD]
    uint16_t* xs = as + R * LD;                        // [2][64][LD]
    uint16_t* hs = xs + 2 * XT;                        // [2][64][HLD]
    uint16_t* ds = hs + 2 * HT;                        // [2][64][LD]: dX's old values (VEC and accumulate only)
    const bool old_in_shared = VEC && accumulate;

    const int col_tiles = (k + L4J_LORA_BWD_COLS - 1) / L4J_LORA_BWD_COLS;
    const int split = (int) (blockIdx.x / col_tiles);
    const int c0 = (int) (blockIdx.x % col_tiles) * L4J_LORA_BWD_COLS;
    const int r_begin = split * block_rows, r_end = min(n, r_begin + block_rows);
    const int steps = (r_end - r_begin + L4J_LORA_BWD_ROWS - 1) / L4J_LORA_BWD_ROWS;
    const int tid = threadIdx.x, warp = tid >> 5, l = tid & 31, g = l >> 2, t = l & 3, mi = l >> 3;

    for (int id = tid; id < R * L4J_LORA_BWD_COLS; id += L4J_LORA_THREADS) {
        const int j = id >> 7, cc = id & 127;
        as[j * LD + cc] = l4j_float_to_bf16(j < r && c0 + cc < k ? a[(long long) j * k + c0 + cc] : 0.0f);
    }

    uint16_t h_next[H_PER_THREAD];
    auto load_x = [&](int buf, int i0) {
        uint16_t* tile = xs + buf * XT;
        if (VEC) {
            // 64 rows of 16 16-byte pieces: 4 per thread, and as many of dX.
#pragma unroll
            for (int q = 0; q < 4; q++) {
                const int id = tid + q * L4J_LORA_THREADS, row = id >> 4, cc = (id & 15) * 8;
                const bool valid = i0 + row < r_end && c0 + cc < k;
                const long long e = valid ? (long long) (i0 + row) * k + c0 + cc : 0;
                l4j_cp_async_16(tile + row * LD + cc, x + e, valid);
                if (old_in_shared) l4j_cp_async_16(ds + buf * XT + row * LD + cc, dx + e, valid);
            }
        } else {
            for (int id = tid; id < L4J_LORA_BWD_ROWS * L4J_LORA_BWD_COLS; id += L4J_LORA_THREADS) {
                const int row = id >> 7, cc = id & 127;
                const bool valid = i0 + row < r_end && c0 + cc < k;
                tile[row * LD + cc] = valid ? x[(long long) (i0 + row) * k + c0 + cc] : (uint16_t) 0;
            }
        }
    };
    auto load_h = [&](int i0) {
#pragma unroll
        for (int q = 0; q < H_PER_THREAD; q++) {
            const int id = tid + q * L4J_LORA_THREADS, row = id / R, j = id % R;
            h_next[q] = i0 + row < r_end && j < r ? dh[(long long) (i0 + row) * dh_stride + j] : (uint16_t) 0;
        }
    };
    auto store_h = [&](int buf) {
#pragma unroll
        for (int q = 0; q < H_PER_THREAD; q++) {
            const int id = tid + q * L4J_LORA_THREADS, row = id / R, j = id % R;
            hs[buf * HT + row * HLD + j] = h_next[q];
        }
    };

    float gacc[RG][2][4];
#pragma unroll
    for (int ms = 0; ms < RG; ms++)
#pragma unroll
        for (int nt = 0; nt < 2; nt++) gacc[ms][nt][0] = gacc[ms][nt][1] = gacc[ms][nt][2] = gacc[ms][nt][3] = 0.0f;

    if (steps > 0) {
        load_x(0, r_begin);
        l4j_cp_async_commit();
        load_h(r_begin);
        store_h(0);
    }
    const l4j_shared_address at = l4j_shared(as);
    const int mt = warp & 3, ch = warp >> 2;  // dX: this warp's 16 rows and 64 columns of the step's tile
    const bool quads = (k & 3) == 0;            // column c0 + 2t (c0 a multiple of 128) starts a group for even t
    for (int s = 0; s < steps; s++) {
        const int i0 = r_begin + s * L4J_LORA_BWD_ROWS, buf = s & 1;
        l4j_cp_async_wait<0>();
        __syncthreads();  // step s's tiles are in (and a's, before step 0); step s - 1's buffers may refill
        if (s + 1 < steps) {
            load_x(buf ^ 1, i0 + L4J_LORA_BWD_ROWS);
            l4j_cp_async_commit();
            load_h(i0 + L4J_LORA_BWD_ROWS);
        }
        uint16_t* xtile = xs + buf * XT;
        const l4j_shared_address xt = l4j_shared(xtile), ht = l4j_shared(hs + buf * HT);

        float dacc[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; nt++) dacc[nt][0] = dacc[nt][1] = dacc[nt][2] = dacc[nt][3] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < RG; ks++) {
            uint32_t af[4];
            l4j_ldmatrix_x4(af, ht + 2 * ((mt * 16 + (mi & 1) * 8 + (l & 7)) * HLD + ks * 16 + (mi >> 1) * 8));
#pragma unroll
            for (int np = 0; np < 4; np++) {
                uint32_t bf[4];
                l4j_ldmatrix_x4_trans(bf, at + 2 * ((ks * 16 + (mi & 1) * 8 + (l & 7)) * LD + ch * 64 + np * 16
                                                    + (mi >> 1) * 8));
                l4j_mma_m16n8k16_bf16(dacc[2 * np], af, bf, dacc[2 * np]);
                l4j_mma_m16n8k16_bf16(dacc[2 * np + 1], af, bf + 2, dacc[2 * np + 1]);
            }
        }
        uint32_t keeps[2][8];  // [h][nt]: the keep words of rows g and g + 8 of this warp's 16
        if (threshold != 0) {
            const unsigned long long e0 = (unsigned long long) (i0 + mt * 16 + g) * k, e1 = e0 + 8ull * k;
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
                const unsigned long long c = (unsigned long long) (c0 + ch * 64 + nt * 8 + 2 * t);
                if (quads) {
                    l4j_lora_keeps_shared<true>(seed, e0 + c, e1 + c, threshold, (t & 1) != 0, keeps[0][nt],
                                               keeps[1][nt]);
                } else {
                    keeps[0][nt] = l4j_lora_keep_word(l4j_dropout_keep2(seed, e0 + c, threshold));
                    keeps[1][nt] = l4j_lora_keep_word(l4j_dropout_keep2(seed, e1 + c, threshold));
                }
            }
        }
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int lrow = mt * 16 + g + 8 * h, row = i0 + lrow;
            const bool row_in = row < r_end;
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
                const int lc = ch * 64 + nt * 8 + 2 * t, c = c0 + lc;
                uint32_t keep = 0xffffffffu;
                if (threshold != 0) {
                    keep = keeps[h][nt];
                    uint32_t* word = reinterpret_cast<uint32_t*>(xtile + lrow * LD + lc);
                    *word &= keep;
                }
                if (!row_in || c >= k) continue;
                const long long e = (long long) row * k + c;
                float v0 = (keep & 0xffffu) ? l4j_mul(factor, dacc[nt][2 * h]) : 0.0f;
                float v1 = (keep >> 16) ? l4j_mul(factor, dacc[nt][2 * h + 1]) : 0.0f;
                if (VEC) {  // e is even and dx 16-byte aligned: the pair is one 4-byte word
                    uint32_t* d = reinterpret_cast<uint32_t*>(dx + e);
                    if (accumulate) {
                        const uint32_t old = *reinterpret_cast<const uint32_t*>(ds + buf * XT + lrow * LD + lc);
                        v0 = l4j_add(v0, l4j_bf16_to_float((uint16_t) (old & 0xffffu)));
                        v1 = l4j_add(v1, l4j_bf16_to_float((uint16_t) (old >> 16)));
                    }
                    // The hardware's round-to-nearest-even pair conversion (one instruction, against a dozen for
                    // the bit-exact software one): the same bits but for NaN payloads.
                    *d = l4j_pack_bf16x2(v0, v1);
                } else {
                    if (accumulate) v0 = l4j_add(v0, l4j_bf16_to_float(dx[e]));
                    dx[e] = l4j_float_to_bf16(v0);
                    if (c + 1 < k) {
                        if (accumulate) v1 = l4j_add(v1, l4j_bf16_to_float(dx[e + 1]));
                        dx[e + 1] = l4j_float_to_bf16(v1);
                    }
                }
            }
        }
        __syncthreads();  // the x tile is masked
#pragma unroll
        for (int kk = 0; kk < L4J_LORA_BWD_ROWS / 16; kk++) {
            uint32_t bf[4];
            l4j_ldmatrix_x4_trans(bf, xt + 2 * ((kk * 16 + (mi & 1) * 8 + (l & 7)) * LD + warp * 16 + (mi >> 1) * 8));
#pragma unroll
            for (int ms = 0; ms < RG; ms++) {
                uint32_t af[4];  // dHidden^T: the transposed load of the [rows][ranks] tile
                l4j_ldmatrix_x4_trans(af, ht + 2 * ((kk * 16 + (mi >> 1) * 8 + (l & 7)) * HLD + ms * 16 + (mi & 1) * 8));
                l4j_mma_m16n8k16_bf16(gacc[ms][0], af, bf, gacc[ms][0]);
                l4j_mma_m16n8k16_bf16(gacc[ms][1], af, bf + 2, gacc[ms][1]);
            }
        }
        if (s + 1 < steps) store_h(buf ^ 1);
    }
    float* out = partial + split * partial_split_stride;
#pragma unroll
    for (int ms = 0; ms < RG; ms++) {
#pragma unroll
        for (int nt = 0; nt < 2; nt++) {
            const int c = c0 + warp * 16 + nt * 8 + 2 * t;
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int j = ms * 16 + g + 8 * h;
                if (j >= r) continue;
                if (c < k) out[(long long) j * k + c] = gacc[ms][nt][2 * h];
                if (c + 1 < k) out[(long long) j * k + c + 1] = gacc[ms][nt][2 * h + 1];
            }
        }
    }
}

#define L4J_LORA_MMA(RG, VEC, NAME)                                                                                   \
    extern "C" __global__ void __launch_bounds__(L4J_LORA_THREADS) lora4j_lora_down_mma_##RG##_##NAME(               \
            const uint16_t* x, const float* a, float* partial, int n, int k, int r, int partial_stride,              \
            int split_cols, unsigned long long seed, unsigned threshold) {                                            \
        l4j_lora_down_mma<RG, VEC>(x, a, partial, n, k, r, partial_stride, split_cols, seed, threshold);            \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(L4J_LORA_THREADS) lora4j_lora_down_backward_mma_##RG##_##NAME(      \
            const uint16_t* x, const float* a, const uint16_t* dh, uint16_t* dx, float* partial, int n, int k, int r, \
            int dh_stride, int block_rows, long long partial_split_stride, unsigned long long seed,                   \
            unsigned threshold, float factor, int accumulate) {                                                       \
        l4j_lora_down_backward_mma<RG, VEC>(x, a, dh, dx, partial, n, k, r, dh_stride, block_rows,                  \
                                            partial_split_stride, seed, threshold, factor, accumulate);               \
    }

L4J_LORA_MMA(1, true, vec)
L4J_LORA_MMA(1, false, any)
L4J_LORA_MMA(2, true, vec)
L4J_LORA_MMA(2, false, any)
L4J_LORA_MMA(4, true, vec)
L4J_LORA_MMA(4, false, any)

// ---- F32 on the CUDA cores -----------------------------------------------------------------------------------

// One round of l4j_lora_warp_reduce_scatter64: lanes exchange the half of their HALF * 2 values they give up with
// the lane OFFSET away and add the half they keep (the upper half where this lane's OFFSET bit is set).
template <int OFFSET, int HALF>
__device__ __forceinline__ void l4j_lora_reduce_round(float v[64], bool upper) {
#pragma unroll
    for (int i = 0; i < HALF; i++) {
        const float send = upper ? v[i] : v[i + HALF];
        const float kept = upper ? v[i + HALF] : v[i];
        v[i] = kept + __shfl_xor_sync(0xffffffffu, send, OFFSET);
    }
}

// Sums v[64] of each lane over the warp's 32 lanes, in a fixed tree (reduce-scatter: each round exchanges half of
// what a lane still holds): lane l ends with the sums of elements 2l and 2l + 1 in v[0] and v[1].
__device__ __forceinline__ void l4j_lora_warp_reduce_scatter64(float v[64]) {
    const int l = threadIdx.x & 31;
    l4j_lora_reduce_round<16, 32>(v, (l & 16) != 0);
    l4j_lora_reduce_round<8, 16>(v, (l & 8) != 0);
    l4j_lora_reduce_round<4, 8>(v, (l & 4) != 0);
    l4j_lora_reduce_round<2, 4>(v, (l & 2) != 0);
    l4j_lora_reduce_round<1, 2>(v, (l & 1) != 0);
}

// hidden's partial sums over one split of the columns, 16 ranks [r <= 16 of them valid] per pass. Block: 8 warps
// of 4 rows (32 rows) x one split; each step a lane takes 2 adjacent columns of 64: x's 4 x 2 values, their masks
// (2 hashes, shared with the neighbouring lane, when k % 4 == 0; else 4) and a's 16 x 2 values, 128 FMAs. At the end each warp's 4 x 16 sums are added over its lanes.
extern "C" __global__ void __launch_bounds__(L4J_LORA_THREADS) lora4j_lora_down_cores_f32(
        const float* __restrict__ x, const float* __restrict__ a, float* __restrict__ partial, int n, int k, int r,
        int partial_stride, int split_cols, unsigned long long seed, unsigned threshold) {
    constexpr int Q = L4J_LORA_CORE_ROWS, J = L4J_LORA_CORE_RANKS;
    const int row_groups = (n + 8 * Q - 1) / (8 * Q);
    const int split = (int) (blockIdx.x / row_groups);
    const int row0 = (int) (blockIdx.x % row_groups) * 8 * Q + (threadIdx.x >> 5) * Q;
    const int c_begin = split * split_cols, c_end = min(k, c_begin + split_cols), l = threadIdx.x & 31;
    const bool quads = (k & 3) == 0 && (c_begin & 3) == 0;  // column c0 + 2l starts a group for even l
    float acc[Q * J];
#pragma unroll
    for (int i = 0; i < Q * J; i++) acc[i] = 0.0f;
    for (int c0 = c_begin; c0 < c_end; c0 += 64) {
        const int c = c0 + 2 * l;
        const bool in0 = c < c_end, in1 = c + 1 < c_end;
        float a0[J], a1[J];
#pragma unroll
        for (int j = 0; j < J; j++) {
            a0[j] = j < r && in0 ? a[(long long) j * k + c] : 0.0f;
            a1[j] = j < r && in1 ? a[(long long) j * k + c + 1] : 0.0f;
        }
        uint32_t keep[Q];
        if (threshold != 0) {
#pragma unroll
            for (int q = 0; q < Q; q += 2) {
                const unsigned long long e0 = (unsigned long long) (row0 + q) * k + c, e1 = e0 + k;
                if (quads) {
                    l4j_lora_keeps_shared<false>(seed, e0, e1, threshold, (l & 1) != 0, keep[q], keep[q + 1]);
                } else {
                    keep[q] = l4j_dropout_keep2(seed, e0, threshold);
                    keep[q + 1] = l4j_dropout_keep2(seed, e1, threshold);
                }
            }
        }
#pragma unroll
        for (int q = 0; q < Q; q++) {
            const int row = row0 + q;
            const long long e = (long long) row * k + c;
            float x0 = row < n && in0 ? x[e] : 0.0f, x1 = row < n && in1 ? x[e + 1] : 0.0f;
            if (threshold != 0) {
                if (!(keep[q] & 1u)) x0 = 0.0f;
                if (!(keep[q] & 2u)) x1 = 0.0f;
            }
#pragma unroll
            for (int j = 0; j < J; j++) acc[q * J + j] = fmaf(x1, a1[j], fmaf(x0, a0[j], acc[q * J + j]));
        }
    }
    l4j_lora_warp_reduce_scatter64(acc);  // lane l: row l / 8, ranks 2 (l % 8) and 2 (l % 8) + 1
    const int row = row0 + l / 8, j = 2 * (l % 8);
    if (row < n) {
        float* out = partial + ((long long) split * n + row) * partial_stride;
        if (j < r) out[j] = acc[0];
        if (j + 1 < r) out[j + 1] = acc[1];
    }
}

// dX for 16 ranks [r <= 16 valid] and gradA's partial sums over one split of the rows. Block: 64 columns (a lane's 2
// adjacent ones: a's 16 x 2 values stay in registers) x one split of rows, which the 8 warps take in turn (warp w:
// rows w, w + 8, ...). Per row a lane draws its pair's mask once (with k % 4 == 0 lanes 2m and 2m + 1 hold a group of
// four: every other row each hashes one of the groups of rows row and row + 8 and they swap halves), forms dX and
// adds dHidden times the masked x to its 16 x 2 gradA sums; at the end the warps' sums are added in warp order through shared memory.
extern "C" __global__ void __launch_bounds__(L4J_LORA_THREADS) lora4j_lora_down_backward_cores_f32(
        const float* __restrict__ x, const float* __restrict__ a, const float* __restrict__ dh, float* __restrict__ dx,
        float* __restrict__ partial, int n, int k, int r, int dh_stride, int block_rows, long long partial_split_stride,
        unsigned long long seed, unsigned threshold, float factor, int accumulate) {
    constexpr int J = L4J_LORA_CORE_RANKS;
    L4J_DYNAMIC_SHARED(float, red);  // [8 warps][J][64]
    const int col_tiles = (k + 63) / 64;
    const int split = (int) (blockIdx.x / col_tiles), c_tile = (int) (blockIdx.x % col_tiles) * 64;
    const int r_begin = split * block_rows, r_end = min(n, r_begin + block_rows);
    const int warp = threadIdx.x >> 5, l = threadIdx.x & 31, c = c_tile + 2 * l;
    const bool in0 = c < k, in1 = c + 1 < k;
    float a0[J], a1[J], g0[J], g1[J];
#pragma unroll
    for (int j = 0; j < J; j++) {
        a0[j] = j < r && in0 ? a[(long long) j * k + c] : 0.0f;
        a1[j] = j < r && in1 ? a[(long long) j * k + c + 1] : 0.0f;
        g0[j] = g1[j] = 0.0f;
    }
    const bool quads = (k & 3) == 0;  // c_tile is a multiple of 64
    uint32_t keep_next = 3u;          // row + 8's mask, drawn with this row's
    for (int row = r_begin + warp, it = 0; row < r_end; row += 8, it++) {
        uint32_t keep = 3u;
        if (threshold != 0) {
            const unsigned long long e0 = (unsigned long long) row * k + c;
            if (!quads) {
                keep = l4j_dropout_keep2(seed, e0, threshold);
            } else if ((it & 1) == 0) {  // the warp's rows are uniform, so all its lanes shuffle together
                l4j_lora_keeps_shared<false>(seed, e0, e0 + 8ull * k, threshold, (l & 1) != 0, keep, keep_next);
            } else {
                keep = keep_next;
            }
        }
        float h[J];
#pragma unroll
        for (int j = 0; j < J; j++) h[j] = j < r ? dh[(long long) row * dh_stride + j] : 0.0f;
        float d0 = 0.0f, d1 = 0.0f;
#pragma unroll
        for (int j = 0; j < J; j++) {
            d0 = fmaf(h[j], a0[j], d0);
            d1 = fmaf(h[j], a1[j], d1);
        }
        const long long e = (long long) row * k + c;
        const float x0 = in0 && (keep & 1u) ? x[e] : 0.0f, x1 = in1 && (keep & 2u) ? x[e + 1] : 0.0f;
#pragma unroll
        for (int j = 0; j < J; j++) {
            g0[j] = fmaf(h[j], x0, g0[j]);
            g1[j] = fmaf(h[j], x1, g1[j]);
        }
        if (in0) {
            float v = (keep & 1u) ? l4j_mul(factor, d0) : 0.0f;
            dx[e] = accumulate ? l4j_add(dx[e], v) : v;
        }
        if (in1) {
            float v = (keep & 2u) ? l4j_mul(factor, d1) : 0.0f;
            dx[e + 1] = accumulate ? l4j_add(dx[e + 1], v) : v;
        }
    }
#pragma unroll
    for (int j = 0; j < J; j++) {
        red[(warp * J + j) * 64 + 2 * l] = g0[j];
        red[(warp * J + j) * 64 + 2 * l + 1] = g1[j];
    }
    __syncthreads();
    float* out = partial + split * partial_split_stride;
    for (int id = threadIdx.x; id < J * 64; id += L4J_LORA_THREADS) {
        const int j = id >> 6, cc = id & 63;
        float sum = 0.0f;
        for (int w = 0; w < 8; w++) sum += red[(w * J + j) * 64 + cc];
        if (j < r && c_tile + cc < k) out[(long long) j * k + c_tile + cc] = sum;
    }
}

// ---- the sums of the splits ----------------------------------------------------------------------------------

// hidden[e] = factor * (partial[0][e] + partial[1][e] + ...), rounded once to hidden's type.
template <typename T>
__device__ __forceinline__ void l4j_lora_hidden(const float* __restrict__ partial, T* __restrict__ hidden,
                                                long long count, int splits, float factor) {
    L4J_FOR_EACH(e, count) {
        float sum = 0.0f;
        for (int s = 0; s < splits; s++) sum = l4j_add(sum, partial[s * count + e]);
        l4j_store(hidden, e, l4j_mul(factor, sum));
    }
}

extern "C" __global__ void lora4j_lora_hidden_f32(const float* partial, float* hidden, long long count, int splits,
                                                  float factor) {
    l4j_lora_hidden(partial, hidden, count, splits, factor);
}

extern "C" __global__ void lora4j_lora_hidden_bf16(const float* partial, l4j_bf16* hidden, long long count,
                                                   int splits, float factor) {
    l4j_lora_hidden(partial, hidden, count, splits, factor);
}

// grad[e] += factor * (partial[0][e] + partial[1][e] + ...).
extern "C" __global__ void lora4j_lora_grad_a(const float* __restrict__ partial, float* __restrict__ grad,
                                              long long count, int splits, float factor) {
    L4J_FOR_EACH(e, count) {
        float sum = 0.0f;
        for (int s = 0; s < splits; s++) sum = l4j_add(sum, partial[s * count + e]);
        grad[e] = l4j_add(grad[e], l4j_mul(factor, sum));
    }
}

#endif
