// SwiGLU of the gate and up projections with both LoRA adapters' B products added on the way (Backend.swigluWithLora):
//   gate += hg bg^T,  up += hu bu^T  (each rounded once to BF16),  out = silu(gate) * up
// with hg, hu the adapters' hidden activations [n, r] (BF16) and bg, bu their B matrices [ff, r] (F32, rounded to BF16
// for the tensor cores, as CudaProducts rounds an F32 adapter). Composed, the two B products each read and write a
// whole [n, ff] projection and SwiGLU reads both again: three passes over gate and up. Here each block forms its
// tile's two B products on the tensor cores (mma.sync m16n8k16, one k-step per 16 ranks, FP32 sums) into shared
// memory, then streams the tile of gate and up once: reads them, adds the sums in FP32 and rounds once (as the
// product's epilogue does, D = round(acc + C)), writes them back, and writes silu(gate) * up from the rounded values.
//
// A block: 8 warps over a 32-row x 128-column tile; warp w forms rows 16 (w / 4) .. + 15 (an m-tile) and columns
// 32 (w % 4) .. + 31 (4 n-tiles) of both products. Each thread
// first starts the loads of its 4 groups of 8 elements of gate and up, so that they are in flight while the products
// form, then adds, rounds and writes them once the block's sums are in shared memory. Columns come in groups of 8
// (ff % 8 == 0, 16-byte aligned rows: the caller checks).
#include "common.cuh"

#define L4J_SWIGLU_LORA_THREADS 256
#define L4J_SWIGLU_LORA_ROWS 32
#define L4J_SWIGLU_LORA_MT (L4J_SWIGLU_LORA_ROWS / 32)  // m-tiles of each warp's products
#define L4J_SWIGLU_LORA_COLS 128
#define L4J_SWIGLU_LORA_LD (L4J_SWIGLU_LORA_COLS + 4)  // floats per shared row: 4 more, so rows start in other banks
#define L4J_SWIGLU_LORA_MAX_RANK 64

// Shared memory, in bytes (CudaBackend mirrors it): the two F32 tiles of B products.
__host__ __device__ __forceinline__ int l4j_swiglu_lora_shared() {
    return 2 * L4J_SWIGLU_LORA_ROWS * L4J_SWIGLU_LORA_LD * (int) sizeof(float);
}

#ifdef L4J_DEVICE_CODE

// Element (row, k) of a hidden activation [n, r], zero outside it.
__device__ __forceinline__ uint32_t l4j_swiglu_lora_h(const l4j_bf16* h, int row, int k, int n, int r) {
    return row < n && k < r ? h[(long long) row * r + k].bits : 0u;
}

// Element (col, k) of a B matrix [ff, r] rounded to BF16, zero outside it.
__device__ __forceinline__ float l4j_swiglu_lora_b(const float* b, int col, int k, int ff, int r) {
    return col < ff && k < r ? b[(long long) col * r + k] : 0.0f;
}

// acc[MT][4][4] = H B^T for this warp's 16 MT rows (row0.., MT m-tiles) and 4 n-tiles of 8 columns (col0..), over r ranks.
__device__ __forceinline__ void l4j_swiglu_lora_product(float acc[L4J_SWIGLU_LORA_MT][4][4], const l4j_bf16* h, const float* b,
                                                        int row0, int col0, int n, int ff, int r) {
    const int l = threadIdx.x & 31, g = l >> 2, t = l & 3;
#pragma unroll
    for (int mt = 0; mt < L4J_SWIGLU_LORA_MT; mt++) {
#pragma unroll
        for (int nt = 0; nt < 4; nt++) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;
    }
    for (int k0 = 0; k0 < r; k0 += 16) {
        const int ka = k0 + 2 * t, kb = ka + 8;
        uint32_t bf[4][2];
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            const int col = col0 + nt * 8 + g;
            bf[nt][0] = l4j_pack_bf16x2(l4j_swiglu_lora_b(b, col, ka, ff, r), l4j_swiglu_lora_b(b, col, ka + 1, ff, r));
            bf[nt][1] = l4j_pack_bf16x2(l4j_swiglu_lora_b(b, col, kb, ff, r), l4j_swiglu_lora_b(b, col, kb + 1, ff, r));
        }
#pragma unroll
        for (int mt = 0; mt < L4J_SWIGLU_LORA_MT; mt++) {
            const int ra = row0 + mt * 16 + g, rb = ra + 8;
            uint32_t a[4];
            a[0] = l4j_swiglu_lora_h(h, ra, ka, n, r) | l4j_swiglu_lora_h(h, ra, ka + 1, n, r) << 16;
            a[1] = l4j_swiglu_lora_h(h, rb, ka, n, r) | l4j_swiglu_lora_h(h, rb, ka + 1, n, r) << 16;
            a[2] = l4j_swiglu_lora_h(h, ra, kb, n, r) | l4j_swiglu_lora_h(h, ra, kb + 1, n, r) << 16;
            a[3] = l4j_swiglu_lora_h(h, rb, kb, n, r) | l4j_swiglu_lora_h(h, rb, kb + 1, n, r) << 16;
#pragma unroll
            for (int nt = 0; nt < 4; nt++) l4j_mma_m16n8k16_bf16(acc[mt][nt], a, bf[nt], acc[mt][nt]);
        }
    }
}

// This warp's sums into the shared tile [ROWS][LD] at its rows (r0, tile-relative) and columns (c0).
__device__ __forceinline__ void l4j_swiglu_lora_stage(float* tile, const float acc[L4J_SWIGLU_LORA_MT][4][4], int r0, int c0) {
    const int l = threadIdx.x & 31, g = l >> 2, t = l & 3;
#pragma unroll
    for (int mt = 0; mt < L4J_SWIGLU_LORA_MT; mt++) {
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            float* p = tile + (r0 + mt * 16 + g) * L4J_SWIGLU_LORA_LD + c0 + nt * 8 + 2 * t;
            p[0] = acc[mt][nt][0];
            p[1] = acc[mt][nt][1];
            p[8 * L4J_SWIGLU_LORA_LD] = acc[mt][nt][2];
            p[8 * L4J_SWIGLU_LORA_LD + 1] = acc[mt][nt][3];
        }
    }
}

struct alignas(16) l4j_swiglu_lora_f32x4 {
    float v[4];
};

// 8 floats of a shared row (16-byte aligned) with two 16-byte reads.
__device__ __forceinline__ void l4j_swiglu_lora_read8(const float* p, float out[8]) {
    const l4j_swiglu_lora_f32x4 a = reinterpret_cast<const l4j_swiglu_lora_f32x4*>(p)[0];
    const l4j_swiglu_lora_f32x4 b = reinterpret_cast<const l4j_swiglu_lora_f32x4*>(p)[1];
#pragma unroll
    for (int k = 0; k < 4; k++) out[k] = a.v[k], out[4 + k] = b.v[k];
}

// Four bf16x2 words to 16-byte aligned memory with one store.
__device__ __forceinline__ void l4j_swiglu_lora_store8(l4j_bf16* p, const uint32_t w[4]) {
    l4j_u32x4 c;
    c.x = w[0], c.y = w[1], c.z = w[2], c.w = w[3];
    *reinterpret_cast<l4j_u32x4*>(p) = c;
}

// Three blocks per SM (80 registers a thread): the silu's exponential and division are latency-bound chains, and
// more warps overlap them with the memory traffic.
extern "C" __global__ void __launch_bounds__(L4J_SWIGLU_LORA_THREADS, 3) lora4j_swiglu_lora_bf16(l4j_bf16* gate, l4j_bf16* up, l4j_bf16* out, const l4j_bf16* hg,
                                                   const float* bg, const l4j_bf16* hu, const float* bu, int n,
                                                   int ff, int r) {
    l4j_require_dynamic_shared(l4j_swiglu_lora_shared());
    L4J_DYNAMIC_SHARED(float, smem);
    float* sg = smem;                                               // [ROWS][LD]
    float* su = smem + L4J_SWIGLU_LORA_ROWS * L4J_SWIGLU_LORA_LD;  // [ROWS][LD]
    const int col_tiles = (ff + L4J_SWIGLU_LORA_COLS - 1) / L4J_SWIGLU_LORA_COLS;
    const int row0 = (int) (blockIdx.x / col_tiles) * L4J_SWIGLU_LORA_ROWS;
    const int col0 = (int) (blockIdx.x % col_tiles) * L4J_SWIGLU_LORA_COLS;
    const int warp = threadIdx.x >> 5, wr = (warp >> 2) * 16 * L4J_SWIGLU_LORA_MT, wc = (warp & 3) * 32;

    // This thread's groups: id = threadIdx.x + 256 i, at tile row id / 16 and column 8 (id % 16).
    constexpr int GROUPS_PER_ROW = L4J_SWIGLU_LORA_COLS / L4J_GROUP;  // 16
    constexpr int GROUPS = L4J_SWIGLU_LORA_ROWS * GROUPS_PER_ROW / L4J_SWIGLU_LORA_THREADS;  // 4
    l4j_u32x4 gw[GROUPS], uw[GROUPS];
    long long at[GROUPS];
#pragma unroll
    for (int i = 0; i < GROUPS; i++) {
        const int id = threadIdx.x + i * L4J_SWIGLU_LORA_THREADS;
        const int row = row0 + id / GROUPS_PER_ROW, col = col0 + (id % GROUPS_PER_ROW) * L4J_GROUP;
        at[i] = row < n && col < ff ? (long long) row * ff + col : -1;  // the group's first element
        if (at[i] >= 0) {
            gw[i] = *reinterpret_cast<const l4j_u32x4*>(gate + at[i]);
            uw[i] = *reinterpret_cast<const l4j_u32x4*>(up + at[i]);
        }
    }

    float acc[L4J_SWIGLU_LORA_MT][4][4];
    l4j_swiglu_lora_product(acc, hg, bg, row0 + wr, col0 + wc, n, ff, r);
    l4j_swiglu_lora_stage(sg, acc, wr, wc);
    l4j_swiglu_lora_product(acc, hu, bu, row0 + wr, col0 + wc, n, ff, r);
    l4j_swiglu_lora_stage(su, acc, wr, wc);
    __syncthreads();

#pragma unroll
    for (int i = 0; i < GROUPS; i++) {
        if (at[i] < 0) continue;
        const int id = threadIdx.x + i * L4J_SWIGLU_LORA_THREADS;
        const int tr = id / GROUPS_PER_ROW, tc = (id % GROUPS_PER_ROW) * L4J_GROUP;
        float gv[L4J_GROUP], uv[L4J_GROUP];
        l4j_halves_to_float(gw[i], gv, true);
        l4j_halves_to_float(uw[i], uv, true);
        // The sums as 16-byte reads: lanes 32 bytes apart, so a quarter warp's 8 reads meet each bank twice, against
        // four times per float read.
        float lg[L4J_GROUP], lu[L4J_GROUP];
        l4j_swiglu_lora_read8(sg + tr * L4J_SWIGLU_LORA_LD + tc, lg);
        l4j_swiglu_lora_read8(su + tr * L4J_SWIGLU_LORA_LD + tc, lu);
        // Rounded to nearest even in pairs (one cvt each on the GPU: the element-wise path's bit-exact conversion
        // costs more than the memory here; the two differ only in NaN payloads), stored, and read back as the
        // product below and the backward pass read them.
        uint32_t gw2[L4J_GROUP / 2], uw2[L4J_GROUP / 2], aw2[L4J_GROUP / 2];
#pragma unroll
        for (int k = 0; k < L4J_GROUP / 2; k++) {
            gw2[k] = l4j_pack_bf16x2(gv[2 * k] + lg[2 * k], gv[2 * k + 1] + lg[2 * k + 1]);
            uw2[k] = l4j_pack_bf16x2(uv[2 * k] + lu[2 * k], uv[2 * k + 1] + lu[2 * k + 1]);
            float a[2];
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float g = l4j_bf16_to_float((uint16_t) (gw2[k] >> (16 * e)));
                const float u = l4j_bf16_to_float((uint16_t) (uw2[k] >> (16 * e)));
                a[e] = g / (1.0f + expf(-g)) * u;  // as l4j_swiglu
            }
            aw2[k] = l4j_pack_bf16x2(a[0], a[1]);
        }
        l4j_swiglu_lora_store8(gate + at[i], gw2);
        l4j_swiglu_lora_store8(up + at[i], uw2);
        l4j_swiglu_lora_store8(out + at[i], aw2);
    }
}

#endif
