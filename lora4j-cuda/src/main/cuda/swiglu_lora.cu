// SwiGLU of the gate and up projections with both LoRA adapters' B products added on the way (Backend.swigluWithLora):
//   gate += hg bg^T,  up += hu bu^T  (each rounded once to BF16),  out = silu(gate) * up
// with hg, hu the adapters' hidden activations [n, r] (BF16) and bg, bu their B matrices [ff, r] (F32, rounded to BF16
// for the tensor cores, as CudaProducts rounds an F32 adapter). Composed, the two B products each read and write a
// whole [n, ff] projection and SwiGLU reads both again: three passes over gate and up. Here each warp forms its tile's
// two B products on the tensor cores (mma.sync m16n8k16, one k-step per 16 ranks, FP32 sums) and streams the tile of
// gate and up once: reads them, adds the sums in FP32 and rounds once (as the product's epilogue does,
// D = round(acc + C)), writes them back, and writes silu(gate) * up from the rounded values.
//
// A warp owns 16 rows and walks 4 strips of 32 columns, starting the loads of the next strip before the products of
// the current one; the 4 warps of a block stack down the same strips, so that the B columns they load are the same
// (cache hits after the first). The products' columns are permuted so that the accumulators land
// where the streaming wants them: column n of n-tile nt is the strip's column 8 (n / 2) + 2 nt + n % 2, so the lane
// with t = lane % 4 holds, across the 4 n-tiles, columns 8t .. 8t + 7 of its two rows (g and g + 8): one 16-byte
// load and store each, no shared memory and no barrier. Each lane starts its loads of gate and up before the products,
// so that they are in flight meanwhile. Columns come in groups of 8 (ff % 8 == 0, 16-byte aligned rows: the caller
// checks).
#include "common.cuh"

#define L4J_SWIGLU_LORA_THREADS 128
#define L4J_SWIGLU_LORA_ROWS 64  // 4 warps of 16 rows
#define L4J_SWIGLU_LORA_COLS 32   // columns of a strip
#define L4J_SWIGLU_LORA_STRIPS 4  // strips of a block, one after the other: 128 columns
#define L4J_SWIGLU_LORA_MAX_RANK 64

#ifdef L4J_DEVICE_CODE

// Element (row, k) of a hidden activation [n, r], zero outside it.
__device__ __forceinline__ uint32_t l4j_swiglu_lora_h(const l4j_bf16* h, int row, int k, int n, int r) {
    return row < n && k < r ? h[(long long) row * r + k].bits : 0u;
}

// Element (col, k) of a B matrix [ff, r], zero outside it.
__device__ __forceinline__ float l4j_swiglu_lora_b(const float* b, int col, int k, int ff, int r) {
    return col < ff && k < r ? b[(long long) col * r + k] : 0.0f;
}

// acc[nt][4] = H B^T for this warp's 16 rows (row0..) and the strip's 32 columns (col0..) in the permuted order above.
__device__ __forceinline__ void l4j_swiglu_lora_product(float acc[4][4], const l4j_bf16* h, const float* b, int row0,
                                                        int col0, int n, int ff, int r) {
    const int l = threadIdx.x & 31, g = l >> 2, t = l & 3;
#pragma unroll
    for (int nt = 0; nt < 4; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
    const int ra = row0 + g, rb = ra + 8;
    for (int k0 = 0; k0 < r; k0 += 16) {
        const int ka = k0 + 2 * t, kb = ka + 8;
        uint32_t a[4];
        a[0] = l4j_swiglu_lora_h(h, ra, ka, n, r) | l4j_swiglu_lora_h(h, ra, ka + 1, n, r) << 16;
        a[1] = l4j_swiglu_lora_h(h, rb, ka, n, r) | l4j_swiglu_lora_h(h, rb, ka + 1, n, r) << 16;
        a[2] = l4j_swiglu_lora_h(h, ra, kb, n, r) | l4j_swiglu_lora_h(h, ra, kb + 1, n, r) << 16;
        a[3] = l4j_swiglu_lora_h(h, rb, kb, n, r) | l4j_swiglu_lora_h(h, rb, kb + 1, n, r) << 16;
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            const int col = col0 + 8 * (g >> 1) + 2 * nt + (g & 1);  // the strip column of this lane's B column g
            uint32_t bf[2];
            bf[0] = l4j_pack_bf16x2(l4j_swiglu_lora_b(b, col, ka, ff, r), l4j_swiglu_lora_b(b, col, ka + 1, ff, r));
            bf[1] = l4j_pack_bf16x2(l4j_swiglu_lora_b(b, col, kb, ff, r), l4j_swiglu_lora_b(b, col, kb + 1, ff, r));
            l4j_mma_m16n8k16_bf16(acc[nt], a, bf, acc[nt]);
        }
    }
}

// Four bf16x2 words to 16-byte aligned memory with one store.
__device__ __forceinline__ void l4j_swiglu_lora_store8(l4j_bf16* p, const uint32_t w[4]) {
    l4j_u32x4 c;
    c.x = w[0], c.y = w[1], c.z = w[2], c.w = w[3];
    *reinterpret_cast<l4j_u32x4*>(p) = c;
}

// One row's group: x (8 values of gate or up as loaded) plus the sums of half `half` (0: row g, 1: row g + 8) of
// acc, rounded to nearest even in pairs (one cvt each on the GPU; the element-wise kernels' bit-exact conversion
// costs more than the memory here, and the two differ only in NaN payloads).
__device__ __forceinline__ void l4j_swiglu_lora_add(uint32_t out[4], const l4j_u32x4& x, const float acc[4][4],
                                                    int half) {
    float v[L4J_GROUP];
    l4j_halves_to_float(x, v, true);
#pragma unroll
    for (int nt = 0; nt < 4; nt++) {
        out[nt] = l4j_pack_bf16x2(v[2 * nt] + acc[nt][2 * half], v[2 * nt + 1] + acc[nt][2 * half + 1]);
    }
}

// One strip's two groups of this lane (rows g and g + 8 of the warp's rows, columns 8t .. of the strip at col0).
struct l4j_swiglu_lora_groups {
    long long at[2];
    l4j_u32x4 g[2], u[2];
};

__device__ __forceinline__ void l4j_swiglu_lora_load(l4j_swiglu_lora_groups& x, const l4j_bf16* gate, const l4j_bf16* up,
                                                     int row0, int col0, int n, int ff) {
    const int l = threadIdx.x & 31, g = l >> 2, t = l & 3, col = col0 + 8 * t;
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int row = row0 + g + 8 * half;
        x.at[half] = col < ff && row < n ? (long long) row * ff + col : -1;
        if (x.at[half] >= 0) {
            x.g[half] = *reinterpret_cast<const l4j_u32x4*>(gate + x.at[half]);
            x.u[half] = *reinterpret_cast<const l4j_u32x4*>(up + x.at[half]);
        }
    }
}

extern "C" __global__ void __launch_bounds__(L4J_SWIGLU_LORA_THREADS) lora4j_swiglu_lora_bf16(
        l4j_bf16* gate, l4j_bf16* up, l4j_bf16* out, const l4j_bf16* hg, const float* bg, const l4j_bf16* hu,
        const float* bu, int n, int ff, int r) {
    constexpr int BLOCK_COLS = L4J_SWIGLU_LORA_COLS * L4J_SWIGLU_LORA_STRIPS;
    const int col_tiles = (ff + BLOCK_COLS - 1) / BLOCK_COLS;
    const int block_col0 = (int) (blockIdx.x % col_tiles) * BLOCK_COLS;
    const int row0 = (int) (blockIdx.x / col_tiles) * L4J_SWIGLU_LORA_ROWS + (int) (threadIdx.x >> 5) * 16;

    // The strips one after the other, the next strip's loads started before this one's products.
    l4j_swiglu_lora_groups cur, next;
    l4j_swiglu_lora_load(cur, gate, up, row0, block_col0, n, ff);
#pragma unroll 1
    for (int s = 0; s < L4J_SWIGLU_LORA_STRIPS; s++) {
        const int col0 = block_col0 + s * L4J_SWIGLU_LORA_COLS;
        if (col0 >= ff) break;
        if (s + 1 < L4J_SWIGLU_LORA_STRIPS) l4j_swiglu_lora_load(next, gate, up, row0, col0 + L4J_SWIGLU_LORA_COLS, n, ff);
        float acc[4][4];
        uint32_t gr[2][4], ur[2][4];
        l4j_swiglu_lora_product(acc, hg, bg, row0, col0, n, ff, r);
#pragma unroll
        for (int half = 0; half < 2; half++) {
            if (cur.at[half] >= 0) l4j_swiglu_lora_add(gr[half], cur.g[half], acc, half);
        }
        l4j_swiglu_lora_product(acc, hu, bu, row0, col0, n, ff, r);
#pragma unroll
        for (int half = 0; half < 2; half++) {
            if (cur.at[half] < 0) continue;
            l4j_swiglu_lora_add(ur[half], cur.u[half], acc, half);
            uint32_t aw[4];
#pragma unroll
            for (int k = 0; k < 4; k++) {
                float a[2];
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    // The rounded values, as stored and as the backward pass reads them.
                    const float gv = l4j_bf16_to_float((uint16_t) (gr[half][k] >> (16 * e)));
                    const float uv = l4j_bf16_to_float((uint16_t) (ur[half][k] >> (16 * e)));
                    a[e] = gv / (1.0f + expf(-gv)) * uv;  // as l4j_swiglu
                }
                aw[k] = l4j_pack_bf16x2(a[0], a[1]);
            }
            l4j_swiglu_lora_store8(gate + cur.at[half], gr[half]);
            l4j_swiglu_lora_store8(up + cur.at[half], ur[half]);
            l4j_swiglu_lora_store8(out + cur.at[half], aw);
        }
        cur = next;
    }
}

#endif
