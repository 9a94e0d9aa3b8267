// Training attention on the tensor cores, the flash-attention way (FlashAttention-2): forward and backward passes of
// causal grouped-query attention with an optional sliding window, for head sizes 64 and 128, never holding more of
// the [n, n] score matrix than one 64 x 64 tile per block, in registers.
//
// Operands are BF16 ([n, heads*D] row-major: activations stored so, or F32 ones rounded to nearest even by the caller),
// products run on mma.sync m16n8k16 with FP32 accumulation, the softmax and every statistic are FP32; outputs and
// gradients are stored as the activations are, F32 or BF16 (rounded once), lse as F32.
// With S = scale q k^T (masked), P = softmax(S) and O = P v:
//   forward:  online softmax over 64-key tiles (running max and sum per row), lse = log(sum exp S) per row;
//   backward: P = exp(S - lse) recomputed, dP = dO v^T, Dsum = rowsum(dO * O), dS = P * (dP - Dsum),
//             dv = P^T dO, dk = scale dS^T q, dq = scale dS k.
// Every output element has one writer and sums in a fixed order, so results repeat bit for bit: dq by blocks of
// query rows, dk and dv by blocks of key rows per query head; where several query heads share a KV head, each head's
// dk and dv go to a slice of a scratch buffer and lora4j_flash_attention_group_sum adds the slices in head order.
// The dk/dv pass computes dS for every (key, query) pair; where FlashAttention can spare the memory it stores dS
// (BF16, as the products use it) and the dq pass is one product, dS k, instead of three (S, dP and dS k again).
//
// Blocks of 4 warps; a block owns 64 query rows (forward, dq) or 64 key rows (dk, dv). In the forward pass each warp
// takes 32 query rows against half of every key tile (so that each fragment it loads serves two 16-row m-tiles), and
// the two warps of a row range merge their softmax statistics at the end (a forward block may also take the same
// rows of two query heads of one KV head, 8 warps, so that each key and value tile it loads serves both); the dq pass
// from stored dS splits its block into 32 rows by D/2 columns per warp; the dk/dv pass, and the dq pass that
// recomputes dS, take 16 rows per warp. The other operand streams through shared memory in 64-row tiles, double-buffered with cp.async. Shared
// tiles are [64][D + 8] bf16: the 16 bytes of padding put the 8 rows an ldmatrix reads in different banks. Tiles
// wholly outside the causal band or the window are skipped; only tiles that straddle its edges (or the end of the
// sequence) are masked.
#include "common.cuh"

#define L4J_FA_THREADS 128
#define L4J_FA_ROWS 64  // rows of every tile: queries or keys

// Shared memory of each kernel, in bytes (CudaBackend's FlashAttention mirrors these).
__host__ __device__ __forceinline__ int l4j_fa_tile_bytes(int d) { return L4J_FA_ROWS * (d + 8) * 2; }
// The forward pass of hg query heads per block: a query tile per head and two buffers each of key and value tiles.
__host__ __device__ __forceinline__ int l4j_fa_forward_shared(int d, int hg) { return (hg + 4) * l4j_fa_tile_bytes(d); }
__host__ __device__ __forceinline__ int l4j_fa_dq_shared(int d) { return 6 * l4j_fa_tile_bytes(d); }
__host__ __device__ __forceinline__ int l4j_fa_dkv_shared(int d) {
    return 6 * l4j_fa_tile_bytes(d) + 4 * L4J_FA_ROWS * (int) sizeof(float);
}
// The dq pass from stored dS: two key tiles and two dS tiles (64 x 64 bf16, unpadded).
__host__ __device__ __forceinline__ int l4j_fa_dq_stored_shared(int d) {
    return 2 * l4j_fa_tile_bytes(d) + 2 * L4J_FA_ROWS * L4J_FA_ROWS * 2;
}

// Rows [row0, row0 + 64) of a row-major bf16 matrix (row stride `stride` elements, `src` at the head's first column)
// into tile[64][D + 8] with cp.async by the THREADS threads of the block; rows at or past n become zeros. Each thread
// copies the same 16-byte column of every (THREADS / (D / 8))-th row, so its addresses are one base and constant
// steps: the generic chunk-index arithmetic (a division, a 64-bit product per chunk) had made these copies a quarter
// of the forward pass's instructions.
template <int D, int THREADS = L4J_FA_THREADS>
__device__ __forceinline__ void l4j_fa_load_tile(uint16_t* tile, const uint16_t* src, int row0, int n,
                                                 long long stride) {
    constexpr int CHUNKS = D / 8;  // 16-byte pieces of a row
    constexpr int ROWS_PER_PASS = THREADS / CHUNKS, PASSES = L4J_FA_ROWS / ROWS_PER_PASS;
    static_assert(THREADS % CHUNKS == 0 && L4J_FA_ROWS % ROWS_PER_PASS == 0, "whole rows per pass");
    const int r = (int) threadIdx.x / CHUNKS, c = ((int) threadIdx.x % CHUNKS) * 8;
    const uint16_t* from = src + (long long) (row0 + r) * stride + c;
    const long long step = (long long) ROWS_PER_PASS * stride;
    uint16_t* to = tile + r * (D + 8) + c;
    if (row0 + L4J_FA_ROWS <= n) {  // every tile but the last of a sequence off the 64-row grid: no row to test
#pragma unroll
        for (int i = 0; i < PASSES; i++) l4j_cp_async_16(to + i * ROWS_PER_PASS * (D + 8), from + i * step, true);
    } else {
#pragma unroll
        for (int i = 0; i < PASSES; i++) {
            const bool valid = row0 + r + i * ROWS_PER_PASS < n;
            // A row past the end reads nothing; it still names an address inside the matrix.
            l4j_cp_async_16(to + i * ROWS_PER_PASS * (D + 8), valid ? from + i * step : src + c, valid);
        }
    }
}

// A 4-byte asynchronous copy (cp.async.ca; .cg takes 16 bytes only), zero-filled where not valid, waited for as
// l4j_cp_async_16's copies are. The emulator copies at once, as it does those.
__device__ __forceinline__ void l4j_fa_cp_async_4(void* shared_dst, const void* global_src, bool valid) {
#if defined(__CUDA_ARCH__)
    unsigned address = (unsigned) __cvta_generic_to_shared(shared_dst);
    int bytes = valid ? 4 : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(address), "l"(global_src), "r"(bytes)
                 : "memory");
#else
    if (valid) {
        memcpy(shared_dst, global_src, 4);
    } else {
        memset(shared_dst, 0, 4);
    }
#endif
}

// lse and Dsum of rows row0 .. row0 + 63 of head h ([n][n_heads] each) into lse_dst[64] and dsum_dst[64], zeros past
// the sequence's end: asynchronous, like the tiles, so that no thread waits for them before the product that needs
// them (a plain load stalls its warp at the store into shared memory).
__device__ __forceinline__ void l4j_fa_load_row_stats(float* lse_dst, float* dsum_dst, const float* lse,
                                                      const float* dsum, int row0, int n, int n_heads, int h) {
    if (threadIdx.x < 2 * L4J_FA_ROWS) {
        const int r = threadIdx.x % L4J_FA_ROWS, row = row0 + r;
        const bool valid = row < n;
        const long long at = (long long) (valid ? row : 0) * n_heads + h;
        if (threadIdx.x < L4J_FA_ROWS) {
            l4j_fa_cp_async_4(lse_dst + r, lse + at, valid);
        } else {
            l4j_fa_cp_async_4(dsum_dst + r, dsum + at, valid);
        }
    }
}

// Two floats read as one 8-byte access.
struct alignas(8) l4j_fa_pair {
    float x, y;
};

// One stored 64 x 64 dS tile (8 KiB, contiguous) into shared memory as it is, with cp.async.
__device__ __forceinline__ void l4j_fa_load_ds_tile(uint16_t* tile, const uint16_t* src) {
    for (int idx = threadIdx.x; idx < L4J_FA_ROWS * L4J_FA_ROWS / 8; idx += L4J_FA_THREADS) {
        l4j_cp_async_16(tile + idx * 8, src + idx * 8, true);
    }
}

// Fragment loads address a shared tile through this lane's row: ldmatrix lanes 8i..8i+7 give rows 0..7 of matrix i.
// (row0, col0) below are compile-time offsets, so each load is one base address plus an immediate.

// The A fragment (16 x 16) at (row0, col0) of a row-major shared tile with rows of LD elements.
template <int LD>
__device__ __forceinline__ void l4j_fa_frag_a(uint32_t a[4], l4j_shared_address tile, int row0, int col0) {
    const int l = threadIdx.x & 31, mi = l >> 3;
    l4j_ldmatrix_x4(a, tile + 2 * ((row0 + (mi & 1) * 8 + (l & 7)) * LD + col0 + (mi >> 1) * 8));
}

// B fragments of two 8-column n-tiles of B = X^T, X a row-major [n][k] shared tile: b[0..1] for X rows n0..n0+7,
// b[2..3] for rows n0+8..n0+15, over columns (k) k0..k0+15.
template <int LD>
__device__ __forceinline__ void l4j_fa_frag_b(uint32_t b[4], l4j_shared_address tile, int n0, int k0) {
    const int l = threadIdx.x & 31, mi = l >> 3;
    l4j_ldmatrix_x4(b, tile + 2 * ((n0 + (mi >> 1) * 8 + (l & 7)) * LD + k0 + (mi & 1) * 8));
}

// B fragments of two n-tiles of B = X, X a row-major [k][n] shared tile (loaded transposed): b[0..1] for columns
// n0..n0+7, b[2..3] for n0+8..n0+15, over rows (k) k0..k0+15.
template <int LD>
__device__ __forceinline__ void l4j_fa_frag_bt(uint32_t b[4], l4j_shared_address tile, int k0, int n0) {
    const int l = threadIdx.x & 31, mi = l >> 3;
    l4j_ldmatrix_x4_trans(b, tile + 2 * ((k0 + (mi & 1) * 8 + (l & 7)) * LD + n0 + (mi >> 1) * 8));
}

// acc[NT][4] += A X^T and acc2[NT][4] += A2 X2^T for a warp, side by side (twice the independent accumulators in
// flight): A, A2 the 16 x D rows a_row0.. of two row-major shared tiles, X, X2 the 8 NT rows x_row0.. of two others
// (NT even): 16 x 8NT blocks of scores and of dP, or of their transposes.
template <int D, int NT>
__device__ __forceinline__ void l4j_fa_two_rows_times_tiles_t(float acc[NT][4], float acc2[NT][4],
                                                              l4j_shared_address a_tile, l4j_shared_address a2_tile,
                                                              int a_row0, l4j_shared_address x_tile,
                                                              l4j_shared_address x2_tile, int x_row0) {
    constexpr int LD = D + 8;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        uint32_t a[4], a2[4];
        l4j_fa_frag_a<LD>(a, a_tile, a_row0, kk * 16);
        l4j_fa_frag_a<LD>(a2, a2_tile, a_row0, kk * 16);
#pragma unroll
        for (int np = 0; np < NT / 2; np++) {
            uint32_t b[4], b2[4];
            l4j_fa_frag_b<LD>(b, x_tile, x_row0 + np * 16, kk * 16);
            l4j_fa_frag_b<LD>(b2, x2_tile, x_row0 + np * 16, kk * 16);
            l4j_mma_m16n8k16_bf16(acc[2 * np], a, b, acc[2 * np]);
            l4j_mma_m16n8k16_bf16(acc2[2 * np], a2, b2, acc2[2 * np]);
            l4j_mma_m16n8k16_bf16(acc[2 * np + 1], a, b + 2, acc[2 * np + 1]);
            l4j_mma_m16n8k16_bf16(acc2[2 * np + 1], a2, b2 + 2, acc2[2 * np + 1]);
        }
    }
}

// out[D/8][4] += P Y for a warp: P a 16 x 8NT accumulator block, rounded to BF16 (an accumulator block is laid out
// as the A fragments of the next product), and Y the 8 NT rows y_row0.. of a row-major [.][D] shared tile.
template <int D, int NT>
__device__ __forceinline__ void l4j_fa_block_times_tile(float out[D / 8][4], const float p[NT][4],
                                                        l4j_shared_address y_tile, int y_row0) {
    constexpr int LD = D + 8;
#pragma unroll
    for (int kk = 0; kk < NT / 2; kk++) {
        uint32_t a[4];
        a[0] = l4j_pack_bf16x2(p[2 * kk][0], p[2 * kk][1]);
        a[1] = l4j_pack_bf16x2(p[2 * kk][2], p[2 * kk][3]);
        a[2] = l4j_pack_bf16x2(p[2 * kk + 1][0], p[2 * kk + 1][1]);
        a[3] = l4j_pack_bf16x2(p[2 * kk + 1][2], p[2 * kk + 1][3]);
#pragma unroll
        for (int dp = 0; dp < D / 16; dp++) {
            uint32_t b[4];
            l4j_fa_frag_bt<LD>(b, y_tile, y_row0 + kk * 16, dp * 16);
            l4j_mma_m16n8k16_bf16(out[2 * dp], a, b, out[2 * dp]);
            l4j_mma_m16n8k16_bf16(out[2 * dp + 1], a, b + 2, out[2 * dp + 1]);
        }
    }
}

// Whether query i attends to key j: causal, and with a window, fewer than `window` positions back.
__device__ __forceinline__ bool l4j_fa_attends(int i, int j, int window) {
    return j <= i && (window <= 0 || i - j < window);
}

// Whether some (query, key) of the 64 x 64 tile pair at (q0, k0) is outside the mask or past the sequence's end.
__device__ __forceinline__ bool l4j_fa_needs_mask(int q0, int k0, int n, int window) {
    return k0 + L4J_FA_ROWS - 1 > q0 || (window > 0 && q0 + L4J_FA_ROWS - 1 - k0 >= window)
           || q0 + L4J_FA_ROWS > n || k0 + L4J_FA_ROWS > n;
}

// Whether the 32 x 32 block of queries row0.. and keys c0.. has nothing to compute: every key after every query,
// or (with a window) too far before every query, or every query past the sequence's end.
__device__ __forceinline__ bool l4j_fa_skips(int row0, int c0, int n, int window) {
    return c0 > row0 + 31 || row0 >= n || (window > 0 && row0 - (c0 + 31) >= window);
}

// Whether some (query, key) of that block is outside the mask. Keys past the sequence's end need no test of their
// own: they come after every query that is stored.
__device__ __forceinline__ bool l4j_fa_needs_mask32(int row0, int c0, int window) {
    return c0 + 31 > row0 || (window > 0 && row0 + 31 - c0 >= window);
}

// How far (base 2) a row's maximum may grow past the running maximum before o and l are rescaled to it.
#define L4J_FA_RESCALE_SLACK 8.0f

// 2^x for x up to a few units (or -inf, giving 0): ex2.approx.ftz on the GPU, one MUFU instruction (exp2f adds a
// denormal range fix-up around it); results under FLT_MIN flush to zero in both places.
__device__ __forceinline__ float l4j_fa_exp2(float x) {
#if defined(__CUDA_ARCH__)
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
#else
    const float y = exp2f(x);
    return y < 1.17549435e-38f ? 0.0f : y;
#endif
}

// A warp's 32 x 32 block of scores (two m-tiles of 16 query rows from r0, four n-tiles of 8 keys from this lane's
// first key c), scaled to base 2 in place, with keys outside the mask at -inf where MASKED; mx, each row's maximum
// over the block, shared by the 4 lanes of the row's quad.
template <bool MASKED>
__device__ __forceinline__ void l4j_fa_scale_scores(float s[2][4][4], float mx[2][2], int r0, int c, int window,
                                                    float scale_log2) {
#pragma unroll
    for (int mt = 0; mt < 2; mt++) {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int row = r0 + mt * 16 + r * 8;
            float x_max = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    // A product rounded on its own: the maximum's own exponent is then exactly exp2(0) = 1.
                    float x = __fmul_rn(s[mt][nt][2 * r + e], scale_log2);
                    if (MASKED && !l4j_fa_attends(row, c + nt * 8 + e, window)) x = -INFINITY;
                    s[mt][nt][2 * r + e] = x;
                    x_max = fmaxf(x_max, x);
                }
            }
            x_max = fmaxf(x_max, __shfl_xor_sync(0xffffffffu, x_max, 1));  // the 4 lanes of a quad share the row
            x_max = fmaxf(x_max, __shfl_xor_sync(0xffffffffu, x_max, 2));
            mx[mt][r] = x_max;
        }
    }
}

// ---- forward ------------------------------------------------------------------------------------------------

// One block per (64-row query tile, query head), the tiles with the most keys first. Each warp holds 32 query rows
// (two 16-row m-tiles) against one half of every 64-key tile: warps 0 and 1 take rows 0-31 and 32-63 with keys
// 0-31, warps 2 and 3 the same rows with keys 32-63. Every K and V fragment a warp loads from shared memory thus
// serves two m-tiles, and the 32 x 32 score block of a warp takes 32 registers. Each warp keeps its own running
// maximum (moved only past a slack, L4J_FA_RESCALE_SLACK) and sum per row; at the end the two warps of a row range
// merge theirs through shared memory, in a fixed order. Scores are kept in base-2 units (scale_log2 = scale *
// log2(e)) so that every exponential is one ex2.
//
// With grouped-query attention a block may own the same 64 query rows of HG query heads of one KV head (HG dividing
// n_heads / n_kv_heads): 4 HG warps, warps 4 hg .. 4 hg + 3 doing for head hg exactly what the 4 warps of a one-head
// block do, so every row is computed in the same order and results are the same bits. Each key and value tile that
// the block loads then serves HG heads: 1/HG of the copies from global memory into shared memory per query row.
template <int D, int HG, typename O>
__device__ __forceinline__ void l4j_flash_forward(const uint16_t* __restrict__ q, const uint16_t* __restrict__ k,
                                                  const uint16_t* __restrict__ v, O* __restrict__ out,
                                                  float* __restrict__ lse, int n, int n_heads, int n_kv_heads,
                                                  int window, float scale_log2) {
    constexpr int LD = D + 8, TILE = L4J_FA_ROWS * LD, DT = D / 8, THREADS = HG * L4J_FA_THREADS;
    l4j_require_dynamic_shared(l4j_fa_forward_shared(D, HG));
    L4J_DYNAMIC_SHARED(float, smem);
    uint16_t* qs_all = reinterpret_cast<uint16_t*>(smem);  // [HG][64][LD]
    uint16_t* ks = qs_all + HG * TILE;  // [2][64][LD]
    uint16_t* vs = ks + 2 * TILE;       // [2][64][LD]

    const int tiles = (n + L4J_FA_ROWS - 1) / L4J_FA_ROWS;
    const int head_blocks = n_heads / HG;  // blocks per query tile
    const int h0 = (int) (blockIdx.x % head_blocks) * HG;  // the block's first query head
    const int q0 = (tiles - 1 - (int) (blockIdx.x / head_blocks)) * L4J_FA_ROWS;
    const int kvh = h0 / (n_heads / n_kv_heads);
    const long long q_stride = (long long) n_heads * D, kv_stride = (long long) n_kv_heads * D;
    const int warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int hg = (int) (threadIdx.x >> 7), h = h0 + hg;  // this warp's query head
    const int rh = warp & 1, kh = warp >> 1;  // row half and key half of this warp
    uint16_t* qs = qs_all + hg * TILE;
    const uint16_t* kh_src = k + (long long) kvh * D;
    const uint16_t* vh_src = v + (long long) kvh * D;

    const int j_last = (min(n, q0 + L4J_FA_ROWS) - 1) / L4J_FA_ROWS;
    const int j_first = window > 0 ? max(0, q0 - window + 1) / L4J_FA_ROWS : 0;

#pragma unroll
    for (int i = 0; i < HG; i++) l4j_fa_load_tile<D, THREADS>(qs_all + i * TILE, q + (long long) (h0 + i) * D, q0, n, q_stride);
    l4j_fa_load_tile<D, THREADS>(ks, kh_src, j_last * L4J_FA_ROWS, n, kv_stride);
    l4j_cp_async_commit();
    l4j_fa_load_tile<D, THREADS>(vs, vh_src, j_last * L4J_FA_ROWS, n, kv_stride);
    l4j_cp_async_commit();

    // This thread's accumulator rows: m-tile mt, element pair r: query r0 + 16 mt + 8 r + g.
    const int r0 = q0 + rh * 32 + g;
    float o[2][DT][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++) {
#pragma unroll
        for (int dt = 0; dt < DT; dt++) o[mt][dt][0] = o[mt][dt][1] = o[mt][dt][2] = o[mt][dt][3] = 0.0f;
    }
    float m[2][2], l[2][2];  // running maximum (base 2) and this thread's part of the running sum, per row
#pragma unroll
    for (int mt = 0; mt < 2; mt++) m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.0f;
    // The query fragments stay in registers where they fit beside o (D = 64); for D = 128 they would spill, and are
    // read from the query tile for every key tile instead.
    constexpr bool Q_IN_REGISTERS = D <= 64;
    uint32_t qf[2][Q_IN_REGISTERS ? D / 16 : 1][4];

    // The diagonal tile first: it holds the last rows' own keys, so most running maxima are final early.
    for (int j = j_last, it = 0; j >= j_first; j--, it++) {
        // Keys and values arrive as separate groups of copies, so that the scores and their softmax run while this
        // tile's values are still on their way.
        l4j_cp_async_wait<1>();
        __syncthreads();  // this key tile is in; every warp is done with the previous tiles, whose buffers refill now
        const l4j_shared_address kt = l4j_shared(ks + (it & 1) * TILE);
        const l4j_shared_address vt = l4j_shared(vs + (it & 1) * TILE);
        const bool more = j > j_first;
        if (more) {
            l4j_fa_load_tile<D, THREADS>(ks + ((it + 1) & 1) * TILE, kh_src, (j - 1) * L4J_FA_ROWS, n, kv_stride);
            l4j_cp_async_commit();
            l4j_fa_load_tile<D, THREADS>(vs + ((it + 1) & 1) * TILE, vh_src, (j - 1) * L4J_FA_ROWS, n, kv_stride);
            l4j_cp_async_commit();
        }
        if (Q_IN_REGISTERS && it == 0) {
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
#pragma unroll
                for (int kk = 0; kk < D / 16; kk++) {
                    l4j_fa_frag_a<LD>(qf[mt][Q_IN_REGISTERS ? kk : 0], l4j_shared(qs), rh * 32 + mt * 16, kk * 16);
                }
            }
        }
        const int c0 = j * L4J_FA_ROWS + kh * 32;  // this warp's first key
        const bool skip = l4j_fa_skips(r0 - g, c0, n, window);
        uint32_t pa[2][2][4];  // P rounded to BF16, as the A fragments of P v: [m-tile][16-key step]
        if (!skip) {
            float s[2][4][4];
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
#pragma unroll
                for (int nt = 0; nt < 4; nt++) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.0f;
            }
#pragma unroll 4  // fully unrolled, ptxas loads fragments so far ahead that D = 128 spills
            for (int kk = 0; kk < D / 16; kk++) {
                const int qk = Q_IN_REGISTERS ? kk : 0;
                if (!Q_IN_REGISTERS) {
#pragma unroll
                    for (int mt = 0; mt < 2; mt++) {
                        l4j_fa_frag_a<LD>(qf[mt][0], l4j_shared(qs), rh * 32 + mt * 16, kk * 16);
                    }
                }
#pragma unroll
                for (int np = 0; np < 2; np++) {
                    uint32_t b[4];
                    l4j_fa_frag_b<LD>(b, kt, kh * 32 + np * 16, kk * 16);
#pragma unroll
                    for (int mt = 0; mt < 2; mt++) {
                        l4j_mma_m16n8k16_bf16(s[mt][2 * np], qf[mt][qk], b, s[mt][2 * np]);
                        l4j_mma_m16n8k16_bf16(s[mt][2 * np + 1], qf[mt][qk], b + 2, s[mt][2 * np + 1]);
                    }
                }
            }

            // Scaled and masked scores, and each row's maximum over the tile.
            float mx[2][2];
            // The whole warp takes one side: a mask tested per element, even where it never applies, costs the tiles
            // off the diagonal a hundred predicated instructions each.
            if (l4j_fa_needs_mask32(r0 - g, c0, window)) {
                l4j_fa_scale_scores<true>(s, mx, r0, c0 + 2 * t, window, scale_log2);
            } else {
                l4j_fa_scale_scores<false>(s, mx, r0, c0 + 2 * t, window, scale_log2);
            }
            bool grows = false;
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    grows |= mx[mt][r] > m[mt][r] + L4J_FA_RESCALE_SLACK;  // always where m is -inf and mx is not
                }
            }
            // The running maxima move, and o and l are rescaled, only when some row's maximum grows by more than the
            // slack: until then exponents stay <= slack (P <= 2^slack, far from FP32's range), and the 128 multiplies
            // per thread of a rescale are skipped on most tiles. The whole warp decides, so that it stays converged.
            if (__any_sync(0xffffffffu, grows)) {
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
#pragma unroll
                    for (int r = 0; r < 2; r++) {
                        const float m_new = fmaxf(m[mt][r], mx[mt][r]);
                        const float base = m_new == -INFINITY ? 0.0f : m_new;  // nothing unmasked yet: stays at 0
                        const float correction = l4j_fa_exp2(m[mt][r] - base);
                        m[mt][r] = m_new;
                        l[mt][r] *= correction;
#pragma unroll
                        for (int dt = 0; dt < DT; dt++) {
                            o[mt][dt][2 * r] *= correction;
                            o[mt][dt][2 * r + 1] *= correction;
                        }
                    }
                }
            }
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    const float base = m[mt][r] == -INFINITY ? 0.0f : m[mt][r];
                    float sum = 0.0f;
#pragma unroll
                    for (int nt = 0; nt < 4; nt++) {
                        s[mt][nt][2 * r] = l4j_fa_exp2(s[mt][nt][2 * r] - base);
                        s[mt][nt][2 * r + 1] = l4j_fa_exp2(s[mt][nt][2 * r + 1] - base);
                        sum += s[mt][nt][2 * r] + s[mt][nt][2 * r + 1];
                    }
                    l[mt][r] += sum;
                }
#pragma unroll
                for (int ks2 = 0; ks2 < 2; ks2++) {
                    pa[mt][ks2][0] = l4j_pack_bf16x2(s[mt][2 * ks2][0], s[mt][2 * ks2][1]);
                    pa[mt][ks2][1] = l4j_pack_bf16x2(s[mt][2 * ks2][2], s[mt][2 * ks2][3]);
                    pa[mt][ks2][2] = l4j_pack_bf16x2(s[mt][2 * ks2 + 1][0], s[mt][2 * ks2 + 1][1]);
                    pa[mt][ks2][3] = l4j_pack_bf16x2(s[mt][2 * ks2 + 1][2], s[mt][2 * ks2 + 1][3]);
                }
            }
        }
        // This value tile: its group is the third newest where the next tiles' two are in flight.
        if (more) {
            l4j_cp_async_wait<2>();
        } else {
            l4j_cp_async_wait<0>();
        }
        __syncthreads();
        if (skip) continue;
        // o += P v over this warp's 32 keys.
#pragma unroll
        for (int ks2 = 0; ks2 < 2; ks2++) {
#pragma unroll
            for (int dp = 0; dp < D / 16; dp++) {
                uint32_t b[4];
                l4j_fa_frag_bt<LD>(b, vt, kh * 32 + ks2 * 16, dp * 16);
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    l4j_mma_m16n8k16_bf16(o[mt][2 * dp], pa[mt][ks2], b, o[mt][2 * dp]);
                    l4j_mma_m16n8k16_bf16(o[mt][2 * dp + 1], pa[mt][ks2], b + 2, o[mt][2 * dp + 1]);
                }
            }
        }
    }

    // Merge the two key halves of each row: warp (rh, kh) hands m-tile 1 - kh of its rows to its partner and takes
    // m-tile kh of the partner's, through shared memory that no copy writes any more (the last tile needed none).
    // The heads of a block take turns: one head's exchange fills the space of more than three tiles.
#pragma unroll
    for (int mt = 0; mt < 2; mt++) {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            l[mt][r] += __shfl_xor_sync(0xffffffffu, l[mt][r], 1);
            l[mt][r] += __shfl_xor_sync(0xffffffffu, l[mt][r], 2);
        }
    }
    // [row half][m-tile][DT * 4 + 4 values][32 lanes]: lane-minor, so that every access is conflict-free.
    constexpr int SLOT = (DT * 4 + 4) * 32;
    float* xs = smem;
#pragma unroll 1
    for (int turn = 0; turn < HG; turn++) {
        __syncthreads();  // every warp is done with the tiles, or the previous head with the exchange
        if (HG == 1 || hg == turn) {
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                if (mt == kh) continue;  // m-tile 1 - kh goes to the partner
                float* dst = xs + (rh * 2 + mt) * SLOT + lane;
#pragma unroll
                for (int dt = 0; dt < DT; dt++) {
#pragma unroll
                    for (int e = 0; e < 4; e++) dst[(dt * 4 + e) * 32] = o[mt][dt][e];
                }
                dst[(DT * 4 + 0) * 32] = m[mt][0];
                dst[(DT * 4 + 1) * 32] = m[mt][1];
                dst[(DT * 4 + 2) * 32] = l[mt][0];
                dst[(DT * 4 + 3) * 32] = l[mt][1];
            }
        }
        __syncthreads();
        if (HG == 1 || hg == turn) {
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                if (mt != kh) continue;  // m-tile kh is this warp's to finish
                const float* src = xs + (rh * 2 + mt) * SLOT + lane;
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    // Key half 0 first in either warp, so that every row merges in the same order.
                    const float m_other = src[(DT * 4 + r) * 32], l_other = src[(DT * 4 + 2 + r) * 32];
                    const float m_a = kh == 0 ? m[mt][r] : m_other, m_b = kh == 0 ? m_other : m[mt][r];
                    const float l_a = kh == 0 ? l[mt][r] : l_other, l_b = kh == 0 ? l_other : l[mt][r];
                    const float m_all = fmaxf(m_a, m_b);
                    const float base = m_all == -INFINITY ? 0.0f : m_all;
                    const float ca = l4j_fa_exp2(m_a - base), cb = l4j_fa_exp2(m_b - base);
                    const float l_all = __fadd_rn(__fmul_rn(l_a, ca), __fmul_rn(l_b, cb));
                    const int row = r0 + mt * 16 + r * 8;
                    if (row >= n) continue;
                    const float inv = 1.0f / l_all;
                    O* dst = out + (long long) row * q_stride + (long long) h * D + 2 * t;
#pragma unroll
                    for (int dt = 0; dt < DT; dt++) {
#pragma unroll
                        for (int e = 0; e < 2; e++) {
                            const float mine = o[mt][dt][2 * r + e], other = src[(dt * 4 + 2 * r + e) * 32];
                            const float oa = kh == 0 ? mine : other, ob = kh == 0 ? other : mine;
                            l4j_store(dst, dt * 8 + e, __fadd_rn(__fmul_rn(oa, ca), __fmul_rn(ob, cb)) * inv);
                        }
                    }
                    // Natural log: lse = ln(sum exp(scale s)) = (m + log2(l)) ln 2.
                    if (t == 0) lse[(long long) row * n_heads + h] = (m_all + log2f(l_all)) * 0.69314718055994531f;
                }
            }
        }
    }
}

// ---- backward -----------------------------------------------------------------------------------------------

// Where the score gradients dS can be kept (FlashAttention decides by their size), the dk/dv pass stores them, BF16
// as it multiplies them, and the dq pass reads them back instead of recomputing S and dP: per query head, the tiles
// (query tile i, key tile kb) of the band kb_lo(i) <= kb <= i in row order, where a row holds min(i + 1, band) tiles
// (band: the most key tiles a query tile sees, ceil((window - 1) / 64) + 1 or all of them). A tile is the
// 64 x 64 dS^T (keys by queries) as 8 x 8 blocks of 128 bytes, block (key / 8, query / 8) at 8 (key / 8) + query / 8,
// each 8 rows of keys by 8 queries: the dk/dv pass writes one block per warp-wide store and ldmatrix reads one
// block per matrix, bank-conflict free, with no padding.
#define L4J_FA_DS_TILE (L4J_FA_ROWS * L4J_FA_ROWS)  // bf16 elements

// Tiles of the band before query tile i.
__host__ __device__ __forceinline__ long long l4j_fa_ds_row(int i, int band) {
    return i <= band ? (long long) i * (i + 1) / 2 : (long long) band * (band + 1) / 2 + (long long) (i - band) * band;
}

__host__ __device__ __forceinline__ long long l4j_fa_ds_tiles(int tiles, int band) {
    return l4j_fa_ds_row(tiles, band);
}

// The most key tiles one query tile sees: all of them, or with a window, those it reaches.
__device__ __forceinline__ int l4j_fa_band(int tiles, int window) {
    if (window <= 0) return tiles;
    const long long reach = ((long long) window - 1 + L4J_FA_ROWS - 1) / L4J_FA_ROWS + 1;
    return reach < tiles ? (int) reach : tiles;
}

__host__ __device__ __forceinline__ long long l4j_fa_ds_slot(int i, int kb, int band) {
    return l4j_fa_ds_row(i, band) + kb - (i + 1 - (i + 1 < band ? i + 1 : band));  // kb - kb_lo(i)
}

// dsum[w] = sum_d bf16(dO[w, d]) * O[w, d] for each (row, head) w, and F32 dO rounded to BF16 for the products
// (d_out_bf16, null for BF16 dO): Dsum from the same rounded dO as dP = dO v^T, so that where P puts all its weight
// on one key dP - Dsum cancels. One warp per (row, head); out and d_out are [n, heads*headDim], so w starts at
// w * headDim.
template <typename T>
__device__ __forceinline__ void l4j_flash_backward_prep(const T* __restrict__ out, const T* __restrict__ d_out,
                                                        uint16_t* __restrict__ d_out_bf16, float* __restrict__ dsum,
                                                        long long rows_heads, int head_dim) {
    const long long w = (long long) blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (w >= rows_heads) return;  // whole warps leave together
    const long long base = w * head_dim;
    float s = 0.0f;
    for (int d = lane; d < head_dim; d += 32) {
        const uint16_t g = l4j_float_to_bf16(l4j_load(d_out, base + d));
        if (d_out_bf16 != nullptr) d_out_bf16[base + d] = g;
        s = fmaf(l4j_bf16_to_float(g), l4j_load(out, base + d), s);
    }
    s = l4j_warp_sum(s);
    if (lane == 0) dsum[w] = s;
}

// dk, dv: one block per (64-row key tile, query head), the tiles that most queries see first. Each warp holds the
// gradients of its 16 keys in registers while the query tiles that see them stream through shared memory. Outputs
// go to dk + (h % group) * head_slice (and dv likewise): the KV head's rows directly when it has one query head.
template <int D, typename G>
__device__ __forceinline__ void l4j_flash_backward_dkv(const uint16_t* __restrict__ q, const uint16_t* __restrict__ k,
                                                       const uint16_t* __restrict__ v,
                                                       const uint16_t* __restrict__ d_out,
                                                       const float* __restrict__ lse, const float* __restrict__ dsum,
                                                       G* __restrict__ dk, G* __restrict__ dv,
                                                       uint16_t* __restrict__ ds_out, int n, int n_heads,
                                                       int n_kv_heads, int window, int head0, float scale) {
    constexpr int LD = D + 8, TILE = L4J_FA_ROWS * LD;
    l4j_require_dynamic_shared(l4j_fa_dkv_shared(D));
    L4J_DYNAMIC_SHARED(float, smem);
    uint16_t* ks = reinterpret_cast<uint16_t*>(smem);
    uint16_t* vs = ks + TILE;
    uint16_t* qs = vs + TILE;       // [2][64][LD]
    uint16_t* dos = qs + 2 * TILE;  // [2][64][LD]
    float* lse_s = reinterpret_cast<float*>(dos + 2 * TILE);  // [2][64], natural log
    float* dsum_s = lse_s + 2 * L4J_FA_ROWS;                  // [2][64]

    const int tiles = (n + L4J_FA_ROWS - 1) / L4J_FA_ROWS, band = l4j_fa_band(tiles, window);
    const int heads = (int) (gridDim.x / tiles);  // the launch's query heads, head0..
    const int h = head0 + (int) (blockIdx.x % heads);
    const int kb = (int) (blockIdx.x / heads), k0 = kb * L4J_FA_ROWS;
    const long long head_slice = (long long) n * n_kv_heads * D;  // one query head's dk or dv
    const float scale_log2 = __fmul_rn(scale, 1.4426950408889634f);  // as FlashAttention computes it
    const int group = n_heads / n_kv_heads, kvh = h / group;
    const long long q_stride = (long long) n_heads * D, kv_stride = (long long) n_kv_heads * D;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const uint16_t* qh = q + (long long) h * D;
    const uint16_t* doh = d_out + (long long) h * D;
    constexpr float LOG2E = 1.4426950408889634f;

    // Queries at or after the first key and, with a window, before the last key + window.
    const int i_first = k0 / L4J_FA_ROWS;
    const long long last_query = window > 0 ? (long long) k0 + L4J_FA_ROWS - 2 + window : n - 1;  // no int overflow
    const int i_last = (int) (last_query < n - 1 ? last_query : n - 1) / L4J_FA_ROWS;

    l4j_fa_load_tile<D>(ks, k + (long long) kvh * D, k0, n, kv_stride);
    l4j_fa_load_tile<D>(vs, v + (long long) kvh * D, k0, n, kv_stride);
    l4j_fa_load_tile<D>(qs, qh, i_first * L4J_FA_ROWS, n, q_stride);
    l4j_fa_load_tile<D>(dos, doh, i_first * L4J_FA_ROWS, n, q_stride);
    l4j_fa_load_row_stats(lse_s, dsum_s, lse, dsum, i_first * L4J_FA_ROWS, n, n_heads, h);
    l4j_cp_async_commit();

    const int keys[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};
    float ak[D / 8][4], av[D / 8][4];
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) {
        ak[dt][0] = ak[dt][1] = ak[dt][2] = ak[dt][3] = 0.0f;
        av[dt][0] = av[dt][1] = av[dt][2] = av[dt][3] = 0.0f;
    }

    for (int i = i_first, it = 0; i <= i_last; i++, it++) {
        l4j_cp_async_wait<0>();
        __syncthreads();
        const int buf = it & 1;
        const l4j_shared_address qt = l4j_shared(qs + buf * TILE);
        const l4j_shared_address dot = l4j_shared(dos + buf * TILE);
        const float* lse_t = lse_s + buf * L4J_FA_ROWS;
        const float* dsum_t = dsum_s + buf * L4J_FA_ROWS;
        if (i < i_last) {
            const int nb = buf ^ 1, next0 = (i + 1) * L4J_FA_ROWS;
            l4j_fa_load_tile<D>(qs + nb * TILE, qh, next0, n, q_stride);
            l4j_fa_load_tile<D>(dos + nb * TILE, doh, next0, n, q_stride);
            l4j_fa_load_row_stats(lse_s + nb * L4J_FA_ROWS, dsum_s + nb * L4J_FA_ROWS, lse, dsum, next0, n, n_heads, h);
            l4j_cp_async_commit();
        }
        const int q0 = i * L4J_FA_ROWS;
        uint32_t* ds_tile = ds_out == nullptr ? nullptr
                : reinterpret_cast<uint32_t*>(ds_out + ((long long) (h - head0) * l4j_fa_ds_tiles(tiles, band)
                                                        + l4j_fa_ds_slot(i, kb, band)) * L4J_FA_DS_TILE);

        const bool masked = l4j_fa_needs_mask(q0, k0, n, window);
        // Half the query tile at a time, so that P^T and dS^T of the warp's 16 keys take 16 registers each.
#pragma unroll 1
        for (int c0 = 0; c0 < L4J_FA_ROWS; c0 += 32) {
            // S^T = k q^T and dP^T = v dO^T side by side: eight independent accumulator chains instead of four.
            float p[4][4], ds[4][4];  // P^T; dP^T, then dS^T = P^T (dP^T - Dsum) in place
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                p[nt][0] = p[nt][1] = p[nt][2] = p[nt][3] = 0.0f;
                ds[nt][0] = ds[nt][1] = ds[nt][2] = ds[nt][3] = 0.0f;
            }
            l4j_fa_two_rows_times_tiles_t<D, 4>(p, ds, l4j_shared(ks), l4j_shared(vs), warp * 16, qt, dot, c0);
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                // This thread's two query columns c, c + 1 of n-tile nt.
                const l4j_fa_pair lse2 = *reinterpret_cast<const l4j_fa_pair*>(lse_t + c0 + nt * 8 + 2 * t);
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    p[nt][e] = l4j_fa_exp2(p[nt][e] * scale_log2 - ((e & 1) ? lse2.y : lse2.x) * LOG2E);
                }
            }
            // Only tiles on the mask's edges test it (the warp takes one side): a test per element everywhere
            // would cost every other tile as many predicated instructions.
            if (masked) {
#pragma unroll
                for (int nt = 0; nt < 4; nt++) {
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int col = q0 + c0 + nt * 8 + 2 * t + (e & 1);
                        if (!(col < n && l4j_fa_attends(col, keys[e >> 1], window))) p[nt][e] = 0.0f;
                    }
                }
            }
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                const l4j_fa_pair dsum2 = *reinterpret_cast<const l4j_fa_pair*>(dsum_t + c0 + nt * 8 + 2 * t);
#pragma unroll
                for (int e = 0; e < 4; e++) ds[nt][e] = p[nt][e] * (ds[nt][e] - ((e & 1) ? dsum2.y : dsum2.x));
            }
            if (ds_tile != nullptr) {
                // dS^T rounded as the product below rounds it, into the 8 x 8 blocks of (key rows g, g + 8 of this
                // warp) x (queries c0 + 8 nt ..): one whole 128-byte block per store.
#pragma unroll
                for (int nt = 0; nt < 4; nt++) {
#pragma unroll
                    for (int r = 0; r < 2; r++) {
                        ds_tile[((2 * warp + r) * 8 + c0 / 8 + nt) * 32 + lane] =
                                l4j_pack_bf16x2(ds[nt][2 * r], ds[nt][2 * r + 1]);
                    }
                }
            }
            l4j_fa_block_times_tile<D, 4>(av, p, dot, c0);  // dv += P^T dO
            l4j_fa_block_times_tile<D, 4>(ak, ds, qt, c0);  // dk += dS^T q
        }
    }

    const long long slice = (long long) (h % group) * head_slice;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (keys[r] >= n) continue;
        const long long at = slice + (long long) keys[r] * kv_stride + (long long) kvh * D + 2 * t;
#pragma unroll
        for (int dt = 0; dt < D / 8; dt++) {
            l4j_store(dk, at + dt * 8, ak[dt][2 * r] * scale);
            l4j_store(dk, at + dt * 8 + 1, ak[dt][2 * r + 1] * scale);
            l4j_store(dv, at + dt * 8, av[dt][2 * r]);
            l4j_store(dv, at + dt * 8 + 1, av[dt][2 * r + 1]);
        }
    }
}

// dq: one block per (64-row query tile, query head), the longest rows first; the key and value tiles the rows see
// stream through shared memory.
template <int D, typename G>
__device__ __forceinline__ void l4j_flash_backward_dq(const uint16_t* __restrict__ q, const uint16_t* __restrict__ k,
                                                      const uint16_t* __restrict__ v,
                                                      const uint16_t* __restrict__ d_out,
                                                      const float* __restrict__ lse, const float* __restrict__ dsum,
                                                      G* __restrict__ dq, int n, int n_heads, int n_kv_heads,
                                                      int window, float scale, float scale_log2) {
    constexpr int LD = D + 8, TILE = L4J_FA_ROWS * LD;
    l4j_require_dynamic_shared(l4j_fa_dq_shared(D));
    L4J_DYNAMIC_SHARED(float, smem);
    uint16_t* qs = reinterpret_cast<uint16_t*>(smem);
    uint16_t* dos = qs + TILE;
    uint16_t* ks = dos + TILE;     // [2][64][LD]
    uint16_t* vs = ks + 2 * TILE;  // [2][64][LD]

    const int tiles = (n + L4J_FA_ROWS - 1) / L4J_FA_ROWS;
    const int h = (int) (blockIdx.x % n_heads);
    const int q0 = (tiles - 1 - (int) (blockIdx.x / n_heads)) * L4J_FA_ROWS;
    const int kvh = h / (n_heads / n_kv_heads);
    const long long q_stride = (long long) n_heads * D, kv_stride = (long long) n_kv_heads * D;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const uint16_t* kh = k + (long long) kvh * D;
    const uint16_t* vh = v + (long long) kvh * D;

    const int j_last = (min(n, q0 + L4J_FA_ROWS) - 1) / L4J_FA_ROWS;
    const int j_first = window > 0 ? max(0, q0 - window + 1) / L4J_FA_ROWS : 0;

    l4j_fa_load_tile<D>(qs, q + (long long) h * D, q0, n, q_stride);
    l4j_fa_load_tile<D>(dos, d_out + (long long) h * D, q0, n, q_stride);
    l4j_fa_load_tile<D>(ks, kh, j_last * L4J_FA_ROWS, n, kv_stride);
    l4j_fa_load_tile<D>(vs, vh, j_last * L4J_FA_ROWS, n, kv_stride);
    l4j_cp_async_commit();

    const int rows[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
    float lse2[2], dsm[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const bool valid = rows[r] < n;
        lse2[r] = valid ? lse[(long long) rows[r] * n_heads + h] * 1.4426950408889634f : 0.0f;
        dsm[r] = valid ? dsum[(long long) rows[r] * n_heads + h] : 0.0f;
    }
    float acc[D / 8][4];
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) acc[dt][0] = acc[dt][1] = acc[dt][2] = acc[dt][3] = 0.0f;
    uint32_t qf[D / 16][4];

    for (int j = j_last, it = 0; j >= j_first; j--, it++) {
        l4j_cp_async_wait<0>();
        __syncthreads();
        const l4j_shared_address kt = l4j_shared(ks + (it & 1) * TILE);
        const l4j_shared_address vt = l4j_shared(vs + (it & 1) * TILE);
        if (j > j_first) {
            l4j_fa_load_tile<D>(ks + ((it + 1) & 1) * TILE, kh, (j - 1) * L4J_FA_ROWS, n, kv_stride);
            l4j_fa_load_tile<D>(vs + ((it + 1) & 1) * TILE, vh, (j - 1) * L4J_FA_ROWS, n, kv_stride);
            l4j_cp_async_commit();
        }
        if (it == 0) {
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) l4j_fa_frag_a<LD>(qf[kk], l4j_shared(qs), warp * 16, kk * 16);
        }
        const int k0 = j * L4J_FA_ROWS;
        const bool masked = l4j_fa_needs_mask(q0, k0, n, window);
        // Half the key tile at a time, so that P and dS of the warp's 16 rows take 16 registers each.
#pragma unroll 1
        for (int c0 = 0; c0 < L4J_FA_ROWS; c0 += 32) {
            // S = q k^T and dP = dO v^T side by side (eight independent accumulator chains); dS = P (dP - Dsum).
            float p[4][4], ds[4][4];
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                p[nt][0] = p[nt][1] = p[nt][2] = p[nt][3] = 0.0f;
                ds[nt][0] = ds[nt][1] = ds[nt][2] = ds[nt][3] = 0.0f;
            }
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) {
                uint32_t a2[4];
                l4j_fa_frag_a<LD>(a2, l4j_shared(dos), warp * 16, kk * 16);
#pragma unroll
                for (int np = 0; np < 2; np++) {
                    uint32_t b[4], b2[4];
                    l4j_fa_frag_b<LD>(b, kt, c0 + np * 16, kk * 16);
                    l4j_fa_frag_b<LD>(b2, vt, c0 + np * 16, kk * 16);
                    l4j_mma_m16n8k16_bf16(p[2 * np], qf[kk], b, p[2 * np]);
                    l4j_mma_m16n8k16_bf16(ds[2 * np], a2, b2, ds[2 * np]);
                    l4j_mma_m16n8k16_bf16(p[2 * np + 1], qf[kk], b + 2, p[2 * np + 1]);
                    l4j_mma_m16n8k16_bf16(ds[2 * np + 1], a2, b2 + 2, ds[2 * np + 1]);
                }
            }
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int r = e >> 1;
                    const bool live = !masked
                            || (rows[r] < n && l4j_fa_attends(rows[r], k0 + c0 + nt * 8 + 2 * t + (e & 1), window));
                    p[nt][e] = live ? l4j_fa_exp2(p[nt][e] * scale_log2 - lse2[r]) : 0.0f;
                    ds[nt][e] = p[nt][e] * (ds[nt][e] - dsm[r]);
                }
            }
            l4j_fa_block_times_tile<D, 4>(acc, ds, kt, c0);  // dq += dS k
        }
    }

#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (rows[r] >= n) continue;
        G* dst = dq + (long long) rows[r] * q_stride + (long long) h * D + 2 * t;
#pragma unroll
        for (int dt = 0; dt < D / 8; dt++) {
            l4j_store(dst, dt * 8, acc[dt][2 * r] * scale);
            l4j_store(dst, dt * 8 + 1, acc[dt][2 * r + 1] * scale);
        }
    }
}

// dq from the stored dS: one block per (64-row query tile, query head of the launch's heads head0..), the longest
// rows first; dq = scale sum_kb dS(i, kb) k(kb) over the band's key tiles in a fixed order, the dS and key tiles
// double-buffered in shared memory. Warp (rh, dh) takes query rows 32 rh.. and columns D/2 dh.. (two m-tiles
// against every key fragment it loads).
template <int D, typename G>
__device__ __forceinline__ void l4j_flash_backward_dq_stored(const uint16_t* __restrict__ k,
                                                             const uint16_t* __restrict__ ds, G* __restrict__ dq,
                                                             int n, int n_heads, int n_kv_heads, int window,
                                                             int head0, float scale) {
    constexpr int LD = D + 8, TILE = L4J_FA_ROWS * LD, NT = D / 16;  // NT: 8-column n-tiles of a warp's D/2 columns
    l4j_require_dynamic_shared(l4j_fa_dq_stored_shared(D));
    L4J_DYNAMIC_SHARED(float, smem);
    uint16_t* ks = reinterpret_cast<uint16_t*>(smem);  // [2][64][LD]
    uint16_t* dss = ks + 2 * TILE;                       // [2][64 x 64], as stored

    const int tiles = (n + L4J_FA_ROWS - 1) / L4J_FA_ROWS, band = l4j_fa_band(tiles, window);
    const int heads = (int) (gridDim.x / tiles);  // the launch's query heads, head0..
    const int hl = (int) (blockIdx.x % heads), h = head0 + hl;
    const int i = tiles - 1 - (int) (blockIdx.x / heads), q0 = i * L4J_FA_ROWS;
    const int kvh = h / (n_heads / n_kv_heads);
    const long long q_stride = (long long) n_heads * D, kv_stride = (long long) n_kv_heads * D;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int rh = warp & 1, dh = warp >> 1;
    const uint16_t* kh = k + (long long) kvh * D;

    const int j_last = (min(n, q0 + L4J_FA_ROWS) - 1) / L4J_FA_ROWS;
    const int j_first = window > 0 ? max(0, q0 - window + 1) / L4J_FA_ROWS : 0;
    // The row's tiles are consecutive, key tile j_first first.
    const uint16_t* ds_row = ds + ((long long) hl * l4j_fa_ds_tiles(tiles, band) + l4j_fa_ds_slot(i, j_first, band))
                                          * L4J_FA_DS_TILE;

    l4j_fa_load_tile<D>(ks, kh, j_first * L4J_FA_ROWS, n, kv_stride);
    l4j_fa_load_ds_tile(dss, ds_row);
    l4j_cp_async_commit();

    float acc[2][NT][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++) {
#pragma unroll
        for (int nt = 0; nt < NT; nt++) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;
    }
    const int mi = lane >> 3;
    for (int j = j_first, it = 0; j <= j_last; j++, it++) {
        l4j_cp_async_wait<0>();
        __syncthreads();
        const int buf = it & 1;
        const l4j_shared_address kt = l4j_shared(ks + buf * TILE);
        const l4j_shared_address dst = l4j_shared(dss + buf * L4J_FA_DS_TILE);
        if (j < j_last) {
            l4j_fa_load_tile<D>(ks + (buf ^ 1) * TILE, kh, (j + 1) * L4J_FA_ROWS, n, kv_stride);
            l4j_fa_load_ds_tile(dss + (buf ^ 1) * L4J_FA_DS_TILE, ds_row + (long long) (it + 1) * L4J_FA_DS_TILE);
            l4j_cp_async_commit();
        }
#pragma unroll 2  // fully unrolled it spills at 4 blocks per SM
        for (int kk = 0; kk < L4J_FA_ROWS / 16; kk++) {
            // A = dS (queries by keys) from the stored dS^T: matrix mi is the block of keys 16 kk + 8 (mi / 2) and
            // queries 32 rh + 16 mt + 8 (mi % 2), transposed as it loads.
            uint32_t a[2][4];
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                const int block = (2 * kk + (mi >> 1)) * 8 + rh * 4 + mt * 2 + (mi & 1);
                l4j_ldmatrix_x4_trans(a[mt], dst + 2 * (block * 64 + (lane & 7) * 8));
            }
#pragma unroll
            for (int dp = 0; dp < NT / 2; dp++) {
                uint32_t b[4];
                l4j_fa_frag_bt<LD>(b, kt, kk * 16, dh * (D / 2) + dp * 16);
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    l4j_mma_m16n8k16_bf16(acc[mt][2 * dp], a[mt], b, acc[mt][2 * dp]);
                    l4j_mma_m16n8k16_bf16(acc[mt][2 * dp + 1], a[mt], b + 2, acc[mt][2 * dp + 1]);
                }
            }
        }
    }

#pragma unroll
    for (int mt = 0; mt < 2; mt++) {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int row = q0 + rh * 32 + mt * 16 + r * 8 + g;
            if (row >= n) continue;
            G* out = dq + (long long) row * q_stride + (long long) h * D + dh * (D / 2) + 2 * t;
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                l4j_store(out, nt * 8, acc[mt][nt][2 * r] * scale);
                l4j_store(out, nt * 8 + 1, acc[mt][nt][2 * r + 1] * scale);
            }
        }
    }
}

// dst[i] = parts[i] + parts[count + i] + ... over `group` slices, in slice order (the query heads of a KV head), in
// 16-byte groups of 8 elements where every slice and dst allow (a thread then has a slice's 32 bytes in flight, not 4);
// each element sums the same way on either path.
template <typename G>
__device__ __forceinline__ void l4j_flash_group_sum(const float* __restrict__ parts, G* __restrict__ dst,
                                                    long long count, int group) {
    l4j_groups_then_rest(
            count, l4j_aligned16(parts) && l4j_aligned16(dst) && count % L4J_GROUP == 0,
            [&](long long j) {
                float s[L4J_GROUP], t[L4J_GROUP];
                l4j_load8(parts, j, s);
                for (int g = 1; g < group; g++) {
                    l4j_load8(parts + (long long) g * count, j, t);
#pragma unroll
                    for (int k = 0; k < L4J_GROUP; k++) s[k] += t[k];
                }
                l4j_store8(dst, j, s);
            },
            [&](long long i) {
                float s = parts[i];
                for (int g = 1; g < group; g++) s += parts[(long long) g * count + i];
                l4j_store(dst, i, s);
            });
}

// A copy of BF16 activations that are not 16-byte aligned (a view that starts inside a row), for cp.async.
extern "C" __global__ void lora4j_flash_attention_copy_bf16(const uint16_t* __restrict__ src, uint16_t* __restrict__ dst,
                                                            long long count) {
    L4J_FOR_EACH(i, count) dst[i] = src[i];
}

// Kernels by head size D and by the type T of the activations (F32 or BF16): outputs and gradients are stored as T;
// dk and dv as F32 slices (G = float) where a KV head has several query heads. The forward pass comes in blocks of one
// query head and (_x2) of two query heads of a KV head. Four heads would take 512 threads, which the register file
// holds only at 128 registers a thread (the kernel needs about 250).
#define L4J_FLASH_ATTENTION(D, name, T) \
    extern "C" __global__ void __launch_bounds__(L4J_FA_THREADS) lora4j_flash_attention_forward_##D##_##name( \
            const uint16_t* q, const uint16_t* k, const uint16_t* v, T* out, float* lse, int n, int n_heads, \
            int n_kv_heads, int window, float scale_log2) { \
        l4j_flash_forward<D, 1, T>(q, k, v, out, lse, n, n_heads, n_kv_heads, window, scale_log2); \
    } \
    extern "C" __global__ void __launch_bounds__(2 * L4J_FA_THREADS) lora4j_flash_attention_forward_##D##_##name##_x2( \
            const uint16_t* q, const uint16_t* k, const uint16_t* v, T* out, float* lse, int n, int n_heads, \
            int n_kv_heads, int window, float scale_log2) { \
        l4j_flash_forward<D, 2, T>(q, k, v, out, lse, n, n_heads, n_kv_heads, window, scale_log2); \
    } \
    extern "C" __global__ void __launch_bounds__(L4J_FA_THREADS) lora4j_flash_attention_backward_dkv_##D##_##name( \
            const uint16_t* q, const uint16_t* k, const uint16_t* v, const uint16_t* d_out, const float* lse, \
            const float* dsum, T* dk, T* dv, uint16_t* ds, int n, int n_heads, int n_kv_heads, int window, int head0, \
            float scale) { \
        l4j_flash_backward_dkv<D, T>(q, k, v, d_out, lse, dsum, dk, dv, ds, n, n_heads, n_kv_heads, window, head0, \
                                     scale); \
    } \
    extern "C" __global__ void __launch_bounds__(L4J_FA_THREADS) lora4j_flash_attention_backward_dq_##D##_##name( \
            const uint16_t* q, const uint16_t* k, const uint16_t* v, const uint16_t* d_out, const float* lse, \
            const float* dsum, T* dq, int n, int n_heads, int n_kv_heads, int window, float scale, float scale_log2) { \
        l4j_flash_backward_dq<D, T>(q, k, v, d_out, lse, dsum, dq, n, n_heads, n_kv_heads, window, scale, scale_log2); \
    } \
    extern "C" __global__ void __launch_bounds__(L4J_FA_THREADS, 4) \
    lora4j_flash_attention_backward_dq_stored_##D##_##name(const uint16_t* k, const uint16_t* ds, T* dq, int n, \
                                                           int n_heads, int n_kv_heads, int window, int head0, \
                                                           float scale) { \
        l4j_flash_backward_dq_stored<D, T>(k, ds, dq, n, n_heads, n_kv_heads, window, head0, scale); \
    }

L4J_FLASH_ATTENTION(64, f32, float)
L4J_FLASH_ATTENTION(128, f32, float)
L4J_FLASH_ATTENTION(64, bf16, l4j_bf16)
L4J_FLASH_ATTENTION(128, bf16, l4j_bf16)

#define L4J_FLASH_ATTENTION_TYPED(name, T) \
    extern "C" __global__ void lora4j_flash_attention_backward_prep_##name(const T* out, const T* d_out, \
                                                                           uint16_t* d_out_bf16, float* dsum, \
                                                                           long long rows_heads, int head_dim) { \
        l4j_flash_backward_prep<T>(out, d_out, d_out_bf16, dsum, rows_heads, head_dim); \
    } \
    extern "C" __global__ void lora4j_flash_attention_group_sum_##name(const float* parts, T* dst, long long count, \
                                                                       int group) { \
        l4j_flash_group_sum<T>(parts, dst, count, group); \
    }

L4J_FLASH_ATTENTION_TYPED(f32, float)
L4J_FLASH_ATTENTION_TYPED(bf16, l4j_bf16)

// ---- fragment probe -----------------------------------------------------------------------------------------

// One warp checks the fragment layouts that the kernels above rely on, where tests can compare it with a plain
// product (on the GPU, and in the device emulator whose mma and ldmatrix must behave alike): a [16][16], b [16][16]
// (row-major BF16 bits), c [16][16] F32; d [3][16][16] receives a b + c three times, with the fragments
//   d[0]: gathered from global memory by PTX's layout tables,
//   d[1]: loaded by ldmatrix (a as the A operand, b transposed as the B operand: l4j_fa_frag_a, l4j_fa_frag_bt),
//   d[2]: loaded by ldmatrix from b^T stored row-major (as keys are: l4j_fa_frag_b).
// Launch with 32 threads and 3 * 16 * 24 * 2 bytes of dynamic shared memory.
__device__ __forceinline__ void l4j_fa_fragment_probe(const uint16_t* __restrict__ a, const uint16_t* __restrict__ b,
                                                     const float* __restrict__ c, float* __restrict__ d) {
    constexpr int LD = 24;  // 16 columns + 8 of padding, as the kernels' tiles
    L4J_DYNAMIC_SHARED(float, smem);
    uint16_t* as = reinterpret_cast<uint16_t*>(smem);
    uint16_t* bs = as + 16 * LD;
    uint16_t* bts = bs + 16 * LD;
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    for (int i = lane; i < 256; i += 32) {
        const int r = i / 16, col = i % 16;
        as[r * LD + col] = a[i];
        bs[r * LD + col] = b[i];
        bts[col * LD + r] = b[i];
    }
    __syncthreads();

    uint32_t fa[3][4], fb[3][2][2];
    // By the tables: A[row][col] pairs (low half = lower column), B[k][n] pairs (low half = lower k).
    const int arow[4] = {g, g + 8, g, g + 8}, acol[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
    for (int r = 0; r < 4; r++) fa[0][r] = a[arow[r] * 16 + acol[r]] | ((uint32_t) a[arow[r] * 16 + acol[r] + 1] << 16);
    for (int nt = 0; nt < 2; nt++) {
        for (int r = 0; r < 2; r++) {
            const int k = 2 * t + 8 * r, col = nt * 8 + g;
            fb[0][nt][r] = b[k * 16 + col] | ((uint32_t) b[(k + 1) * 16 + col] << 16);
        }
    }
    uint32_t x[4];
    l4j_fa_frag_a<LD>(fa[1], l4j_shared(as), 0, 0);
    l4j_fa_frag_bt<LD>(x, l4j_shared(bs), 0, 0);
    fb[1][0][0] = x[0], fb[1][0][1] = x[1], fb[1][1][0] = x[2], fb[1][1][1] = x[3];
    for (int r = 0; r < 4; r++) fa[2][r] = fa[1][r];
    l4j_fa_frag_b<LD>(x, l4j_shared(bts), 0, 0);
    fb[2][0][0] = x[0], fb[2][0][1] = x[1], fb[2][1][0] = x[2], fb[2][1][1] = x[3];

    for (int way = 0; way < 3; way++) {
        for (int nt = 0; nt < 2; nt++) {
            float cf[4], df[4];
            for (int e = 0; e < 4; e++) cf[e] = c[(g + 8 * (e >> 1)) * 16 + nt * 8 + 2 * t + (e & 1)];
            l4j_mma_m16n8k16_bf16(df, fa[way], fb[way][nt], cf);
            for (int e = 0; e < 4; e++) d[way * 256 + (g + 8 * (e >> 1)) * 16 + nt * 8 + 2 * t + (e & 1)] = df[e];
        }
    }
}

extern "C" __global__ void lora4j_flash_attention_fragment_probe(const uint16_t* a, const uint16_t* b, const float* c,
                                                                 float* d) {
    l4j_fa_fragment_probe(a, b, c, d);
}
