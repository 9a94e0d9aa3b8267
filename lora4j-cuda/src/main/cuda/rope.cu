// Rotary position embedding in place, Hugging Face's rotate_half layout: within each head, element j pairs with
// element j + headDim/2. The backward pass rotates by the opposite angle (the transpose of a rotation is its inverse).
// BF16 activations are widened, rotated in FP32 and rounded once.
//
// A block takes a tile of rows by heads (by groups of 8 pairs, for heads too long for one tile) that CudaBackend.rotate
// sizes to about 64 bytes of pairs per thread: for BF16, 2 rows of 32 heads of 128 or 8 rows of 8 heads. Each thread
// first issues the loads of its groups of pairs (16-byte accesses to both halves of the head when every group is
// aligned), while the block computes the cosines and sines of the tile's angles once into shared memory; then it
// rotates and stores. So every angle is computed once per block rather than once per head, and a block's loads are
// all in flight together.
#include "groups.cuh"

// Threads per block (CudaKernels.ROPE_THREADS); each loads 64 bytes of pairs at once, two groups of 8 of BF16 or one
// of F32 (CudaKernels.ropeGroupsPerBlock).
#define L4J_ROPE_THREADS 256

// One pair rotated by (c, s). Explicit roundings keep the compiler from fusing these into FMAs, so they round as the
// CPU's do.
template <bool INVERSE>
__device__ __forceinline__ void l4j_rotate(float& a, float& b, float c, float s) {
    float ra, rb;
    if (INVERSE) {
        ra = __fadd_rn(__fmul_rn(a, c), __fmul_rn(b, s));
        rb = __fsub_rn(__fmul_rn(b, c), __fmul_rn(a, s));
    } else {
        ra = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
        rb = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
    }
    a = ra;
    b = rb;
}

// The cosine and sine of pair j's angle at a position, as the CPU backend computes them: the angle is an FP32
// product, as torch computes it; its cosine and sine are taken in double and rounded once, which matters because
// positions times frequencies reach tens of thousands of radians.
__device__ __forceinline__ void l4j_rope_cos_sin(int position, float inv_freq, float& c, float& s) {
    double dc, ds;
    sincos((double) __fmul_rn((float) position, inv_freq), &ds, &dc);  // one range reduction for both
    c = (float) dc;
    s = (float) ds;
}

template <bool INVERSE, bool VEC, typename T>
__device__ __forceinline__ void l4j_rope_tile(T* x, const int* __restrict__ positions, const float* __restrict__ inv_freq,
                                              int n, int width, int head_dim, int rows_per_block, int heads_per_block,
                                              int groups_per_block) {
    const int half = head_dim / 2, heads = width / head_dim;
    const int groups = (half + L4J_GROUP - 1) / L4J_GROUP;
    // The tile: rows r0.., heads h0.., groups of pairs g0.. (all of a head's groups but in heads of over 8192 pairs).
    const int pair_chunks = (groups + groups_per_block - 1) / groups_per_block;
    const int head_chunks = (heads + heads_per_block - 1) / heads_per_block;
    const int g0 = (int) (blockIdx.x % pair_chunks) * groups_per_block;
    const int h0 = (int) (blockIdx.x / pair_chunks % head_chunks) * heads_per_block;
    const long long r0 = (long long) (blockIdx.x / pair_chunks / head_chunks) * rows_per_block;
    const int rows = (int) min((long long) rows_per_block, (long long) n - r0);
    const int hs = min(heads_per_block, heads - h0), gs = min(groups_per_block, groups - g0);
    const int p0 = g0 * L4J_GROUP, pairs = min(half - p0, gs * L4J_GROUP);
    const int items = rows * hs * gs;
    // The cosines of the tile's rows at its pairs (rows x pairs), then their sines.
    L4J_DYNAMIC_SHARED(float, table);
    const int sines = rows * pairs;

    // Item i: group g0 + g of head h0 + h of row r0 + rl, whose first pair is j.
    auto start = [&](int i, int& rl, int& j) {
        rl = i / (hs * gs);
        int rest = i - rl * (hs * gs), h = rest / gs;
        j = p0 + (rest - h * gs) * L4J_GROUP;
        return x + (r0 + rl) * (long long) width + (long long) (h0 + h) * head_dim + j;
    };
    auto rotate = [&](T* p, int rl, int j, const l4j_group<T>& ga, const l4j_group<T>& gb) {
        float a[8], b[8];
        ga.get(a);
        gb.get(b);
        const float* c = table + rl * pairs + (j - p0);
#pragma unroll
        for (int k = 0; k < 8; k++) {
            if (!VEC && j + k >= half) break;  // past the end of a head whose half is not a whole number of groups
            l4j_rotate<INVERSE>(a[k], b[k], c[k], c[sines + k]);
        }
        l4j_group_store<VEC>(p, 0, half - j, a);
        l4j_group_store<VEC>(p + half, 0, half - j, b);
    };

    // ITEMS groups per thread and pass, all loaded before any is rotated; the first pass's loads are in flight while
    // the table is made.
    constexpr int ITEMS = 4 / (int) sizeof(T);  // 64 bytes of pairs
    for (int first = 0; first < items; first += ITEMS * blockDim.x) {
        T* p[ITEMS];
        int rl[ITEMS], j[ITEMS];
        l4j_group<T> ga[ITEMS], gb[ITEMS];
#pragma unroll
        for (int k = 0; k < ITEMS; k++) {
            int i = first + k * blockDim.x + threadIdx.x;
            if (i < items) {
                p[k] = start(i, rl[k], j[k]);
                ga[k].template load<VEC>(p[k], 0, half - j[k]);
                gb[k].template load<VEC>(p[k] + half, 0, half - j[k]);
            }
        }
        if (first == 0) {  // every thread makes the first pass (items > 0), so all reach the barrier
            for (int e = threadIdx.x; e < rows * pairs; e += blockDim.x) {
                int er = e / pairs;
                l4j_rope_cos_sin(positions[r0 + er], inv_freq[p0 + e - er * pairs], table[e], table[sines + e]);
            }
            __syncthreads();
        }
#pragma unroll
        for (int k = 0; k < ITEMS; k++) {
            if (first + k * blockDim.x + threadIdx.x < items) rotate(p[k], rl[k], j[k], ga[k], gb[k]);
        }
    }
}

template <bool INVERSE, typename T>
__device__ __forceinline__ void l4j_rope(T* x, const int* __restrict__ positions, const float* __restrict__ inv_freq,
                                         int n, int width, int head_dim, int rows_per_block, int heads_per_block,
                                         int groups_per_block) {
    // Rows are aligned when x is, as width is a multiple of head_dim and so of 16.
    if ((head_dim / 2) % L4J_GROUP == 0 && l4j_aligned16(x)) {
        l4j_rope_tile<INVERSE, true>(x, positions, inv_freq, n, width, head_dim, rows_per_block, heads_per_block,
                                     groups_per_block);
    } else {
        l4j_rope_tile<INVERSE, false>(x, positions, inv_freq, n, width, head_dim, rows_per_block, heads_per_block,
                                      groups_per_block);
    }
}

// Four blocks of L4J_ROPE_THREADS per multiprocessor at least: the double-precision cosine and sine must not cost
// the occupancy that keeps the loads in flight.
#define L4J_ROPE(name, INVERSE, T) \
    extern "C" __global__ void __launch_bounds__(L4J_ROPE_THREADS, 4) \
    name(T* x, const int* positions, const float* inv_freq, int n, int width, int head_dim, int rows_per_block, \
         int heads_per_block, int groups_per_block) { \
        l4j_rope<INVERSE>(x, positions, inv_freq, n, width, head_dim, rows_per_block, heads_per_block, \
                          groups_per_block); \
    }

L4J_ROPE(lora4j_rope_f32, false, float)
L4J_ROPE(lora4j_rope_backward_f32, true, float)
L4J_ROPE(lora4j_rope_bf16, false, l4j_bf16)
L4J_ROPE(lora4j_rope_backward_bf16, true, l4j_bf16)
