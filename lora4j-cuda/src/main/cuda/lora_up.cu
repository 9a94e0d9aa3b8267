// The backward pass of LoRA's up projection (out += hidden b^T) in one read of dY (Backend.loraUpBackward):
//   gradB += dY^T hidden   (F32 [m, r], accumulated)      dHidden = dY b   ([n, r], BF16, rounded once)
// with dY [n, m] and hidden [n, r] BF16 activations and b [m, r] F32, rounded to BF16 for the tensor cores as
// CudaProducts rounds an F32 adapter. Composed, the two are skinny products that each read all of dY; here each block
// reads its part once and forms both, on the tensor cores (mma.sync m16n8k16, FP32 sums), for ranks up to 16.
//
// A block owns 512 columns of dY (4 sub-tiles of 128) and a split of its rows, 64 per step; the tiles stream through
// shared memory by cp.async, double-buffered. gradB's sums run over rows, so each warp keeps its 16 columns of each
// sub-tile x 16 ranks in registers for the whole split, and the block writes them to partial_db[split] at the end;
// dHidden's run over columns, so each warp keeps its 16 rows x 8 ranks of a step over the 4 sub-tiles and writes them
// to partial_dh[column block]. lora4j_lora_grad_a and lora4j_lora_hidden_bf16 (lora.cu) then add the partials in
// split order: no atomics, results repeat bit for bit.
#include "common.cuh"

#define L4J_LORA_UP_THREADS 256
#define L4J_LORA_UP_ROWS 64
#define L4J_LORA_UP_COLS 128
#define L4J_LORA_UP_SUBTILES 4
#define L4J_LORA_UP_LD 136  // 128 + 8 bf16: the 8 rows an ldmatrix reads fall in different banks
#define L4J_LORA_UP_RLD 24  // 16 + 8 bf16: rows of the hidden and b tiles

// Shared memory, in bytes (CudaLora mirrors it): two dY tiles, two hidden tiles, the block's b columns.
__host__ __device__ __forceinline__ int l4j_lora_up_shared() {
    return (2 * L4J_LORA_UP_ROWS * L4J_LORA_UP_LD + 2 * L4J_LORA_UP_ROWS * L4J_LORA_UP_RLD
            + L4J_LORA_UP_SUBTILES * L4J_LORA_UP_COLS * L4J_LORA_UP_RLD) * 2;
}

#ifdef L4J_DEVICE_CODE

extern "C" __global__ void __launch_bounds__(L4J_LORA_UP_THREADS) lora4j_lora_up_backward_bf16(
        const uint16_t* __restrict__ dy, const uint16_t* __restrict__ hidden, const float* __restrict__ b,
        float* __restrict__ partial_db, float* __restrict__ partial_dh, int n, int m, int r, int block_rows) {
    constexpr int LD = L4J_LORA_UP_LD, RLD = L4J_LORA_UP_RLD, TILE = L4J_LORA_UP_ROWS * LD;
    constexpr int HT = L4J_LORA_UP_ROWS * RLD, BLOCK_COLS = L4J_LORA_UP_SUBTILES * L4J_LORA_UP_COLS;
    l4j_require_dynamic_shared(l4j_lora_up_shared());
    L4J_DYNAMIC_SHARED(float, smem);
    uint16_t* ys = reinterpret_cast<uint16_t*>(smem);  // [2][64][LD]
    uint16_t* hs = ys + 2 * TILE;                      // [2][64][RLD]
    uint16_t* bs = hs + 2 * HT;                        // [512][RLD]

    const int col_blocks = (m + BLOCK_COLS - 1) / BLOCK_COLS;
    const int cb = (int) (blockIdx.x % col_blocks), split = (int) (blockIdx.x / col_blocks);
    const int c0 = cb * BLOCK_COLS;
    const int r_begin = split * block_rows, r_end = min(n, r_begin + block_rows);
    const int steps = (r_end - r_begin + L4J_LORA_UP_ROWS - 1) / L4J_LORA_UP_ROWS;
    const int tid = threadIdx.x, warp = tid >> 5, l = tid & 31, g = l >> 2, t = l & 3, mi = l >> 3;

    for (int id = tid; id < BLOCK_COLS * 16; id += L4J_LORA_UP_THREADS) {
        const int col = id >> 4, j = id & 15;
        bs[col * RLD + j] = l4j_float_to_bf16(c0 + col < m && j < r ? b[(long long) (c0 + col) * r + j] : 0.0f);
    }
    // Tile i of the block's sequence: step i / 4, sub-tile i % 4; the hidden rows come with a step's first tile.
    auto load_tile = [&](int i) {
        const int s = i / L4J_LORA_UP_SUBTILES, c = i % L4J_LORA_UP_SUBTILES, i0 = r_begin + s * L4J_LORA_UP_ROWS;
        uint16_t* tile = ys + (i & 1) * TILE;
#pragma unroll
        for (int q = 0; q < 4; q++) {  // 64 rows of 16 16-byte pieces
            const int id = tid + q * L4J_LORA_UP_THREADS, row = id >> 4, cc = (id & 15) * 8;
            const int col = c0 + c * L4J_LORA_UP_COLS + cc;
            const bool valid = i0 + row < r_end && col < m;
            l4j_cp_async_16(tile + row * LD + cc, dy + (valid ? (long long) (i0 + row) * m + col : 0), valid);
        }
        if (c == 0) {
            uint16_t* ht = hs + (s & 1) * HT;
#pragma unroll
            for (int q = 0; q < 4; q++) {  // 64 rows of 16 ranks
                const int id = tid + q * L4J_LORA_UP_THREADS, row = id >> 4, j = id & 15;
                ht[row * RLD + j] = i0 + row < r_end && j < r ? hidden[(long long) (i0 + row) * r + j] : (uint16_t) 0;
            }
        }
    };

    float gacc[L4J_LORA_UP_SUBTILES][2][4];  // gradB: this warp's 16 columns of each sub-tile x 16 ranks
#pragma unroll
    for (int c = 0; c < L4J_LORA_UP_SUBTILES; c++)
#pragma unroll
        for (int nt = 0; nt < 2; nt++) gacc[c][nt][0] = gacc[c][nt][1] = gacc[c][nt][2] = gacc[c][nt][3] = 0.0f;
    const int mt = warp & 3, nh = warp >> 2;  // dHidden: this warp's 16 rows and 8 ranks of a step
    const l4j_shared_address bt = l4j_shared(bs);

    const int tiles = steps * L4J_LORA_UP_SUBTILES;
    if (tiles > 0) {
        load_tile(0);
        l4j_cp_async_commit();
    }
    for (int s = 0; s < steps; s++) {
        float dacc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int c = 0; c < L4J_LORA_UP_SUBTILES; c++) {
            const int i = s * L4J_LORA_UP_SUBTILES + c;
            l4j_cp_async_wait<0>();
            __syncthreads();  // tile i is in (and b, and the step's hidden rows); tile i - 1's buffer may refill
            if (i + 1 < tiles) {
                load_tile(i + 1);
                l4j_cp_async_commit();
            }
            const l4j_shared_address yt = l4j_shared(ys + (i & 1) * TILE), ht = l4j_shared(hs + (s & 1) * HT);
            // gradB += Y^T H over the tile's 64 rows: A = Y^T (this warp's 16 columns), B = H (16 ranks).
#pragma unroll
            for (int kk = 0; kk < L4J_LORA_UP_ROWS / 16; kk++) {
                uint32_t a[4], bf[4];
                l4j_ldmatrix_x4_trans(a, yt + 2 * ((kk * 16 + (mi >> 1) * 8 + (l & 7)) * LD + warp * 16 + (mi & 1) * 8));
                l4j_ldmatrix_x4_trans(bf, ht + 2 * ((kk * 16 + (mi & 1) * 8 + (l & 7)) * RLD + (mi >> 1) * 8));
                l4j_mma_m16n8k16_bf16(gacc[c][0], a, bf, gacc[c][0]);
                l4j_mma_m16n8k16_bf16(gacc[c][1], a, bf + 2, gacc[c][1]);
            }
            // dHidden += Y b over the sub-tile's 128 columns: A = Y (this warp's 16 rows), B = b (its 8 ranks).
#pragma unroll
            for (int kk = 0; kk < L4J_LORA_UP_COLS / 16; kk++) {
                uint32_t a[4], bf[4];
                l4j_ldmatrix_x4(a, yt + 2 * ((mt * 16 + (mi & 1) * 8 + (l & 7)) * LD + kk * 16 + (mi >> 1) * 8));
                l4j_ldmatrix_x4_trans(bf, bt + 2 * ((c * L4J_LORA_UP_COLS + kk * 16 + (mi & 1) * 8 + (l & 7)) * RLD
                                                    + (mi >> 1) * 8));
                const uint32_t half[2] = {nh ? bf[2] : bf[0], nh ? bf[3] : bf[1]};  // registers, not an indexed array
                l4j_mma_m16n8k16_bf16(dacc, a, half, dacc);
            }
        }
        // This step's sums over the block's columns, rows i0 + 16 mt + g (+ 8), ranks 8 nh + 2t (+ 1).
        float* out = partial_dh + (long long) cb * n * r;
        const int i0 = r_begin + s * L4J_LORA_UP_ROWS, j = nh * 8 + 2 * t;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int row = i0 + mt * 16 + g + 8 * h;
            if (row >= r_end) continue;
            if (j < r) out[(long long) row * r + j] = dacc[2 * h];
            if (j + 1 < r) out[(long long) row * r + j + 1] = dacc[2 * h + 1];
        }
    }
    // The split's gradB sums: columns c0 + 128 c + 16 warp + g (+ 8), ranks 8 nt + 2t (+ 1).
    float* out = partial_db + (long long) split * m * r;
#pragma unroll
    for (int c = 0; c < L4J_LORA_UP_SUBTILES; c++) {
#pragma unroll
        for (int nt = 0; nt < 2; nt++) {
            const int j = nt * 8 + 2 * t;
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int col = c0 + c * L4J_LORA_UP_COLS + warp * 16 + g + 8 * h;
                if (col >= m) continue;
                if (j < r) out[(long long) col * r + j] = gacc[c][nt][2 * h];
                if (j + 1 < r) out[(long long) col * r + j + 1] = gacc[c][nt][2 * h + 1];
            }
        }
    }
}

#endif
