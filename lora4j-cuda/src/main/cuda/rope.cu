// Rotary position embedding in place, Hugging Face's rotate_half layout: within each head, element j pairs with
// element j + headDim/2. The backward pass rotates by the opposite angle (the transpose of a rotation is its inverse).
// BF16 activations are widened, rotated in FP32 and rounded once.
//
// A block takes a tile of `rows_per_block` rows by `heads_per_block` heads (CudaBackend.rotate picks them so that a
// tile holds about 64 bytes of pairs per thread: for BF16, 2 rows of 32 heads of 128 or 8 rows of 8 heads). Each
// thread first issues the loads of its groups of pairs (16-byte accesses to both halves of the head when every group
// is aligned), while the block computes the cosines and sines of its rows' angles once into shared memory; then it
// rotates and stores. So every angle is computed once per block rather than once per head, and a block's loads are
// all in flight together.
#include "groups.cuh"

// Threads per block (CudaKernels.ROPE_THREADS), and groups of 8 pairs a thread loads at once: 64 bytes of pairs, two
// groups of BF16 or one of F32 (CudaKernels.ropeGroupsPerBlock).
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
                                              int n, int width, int head_dim, int rows_per_block, int heads_per_block) {
    // The cosines of the tile's rows (rows_per_block x half), then their sines; used when a head's groups fit one
    // pass of the block (heads of up to 8192), otherwise each thread computes its own.
    L4J_DYNAMIC_SHARED(float, table);
    const int half = head_dim / 2, heads = width / head_dim;
    const int groups = (half + L4J_GROUP - 1) / L4J_GROUP;
    const int chunks = (heads + heads_per_block - 1) / heads_per_block;
    const long long r0 = (long long) (blockIdx.x / chunks) * rows_per_block;
    const int h0 = (int) (blockIdx.x % chunks) * heads_per_block;
    const int rows = (int) min((long long) rows_per_block, (long long) n - r0);
    const int hs = min(heads_per_block, heads - h0);
    const int items = rows * hs * groups;
    constexpr int ITEMS = 4 / (int) sizeof(T);
    const bool tabled = groups <= L4J_ROPE_THREADS * ITEMS;
    const int sines = rows_per_block * half;

    // Item i: group g of head h0 + h of row r0 + rl.
    auto start = [&](int i, int& rl, int& j) {
        rl = i / (hs * groups);
        int rest = i - rl * (hs * groups), h = rest / groups;
        j = (rest - h * groups) * L4J_GROUP;
        return x + (r0 + rl) * (long long) width + (long long) (h0 + h) * head_dim + j;
    };
    auto rotate = [&](T* p, int rl, int j, const l4j_group<T>& ga, const l4j_group<T>& gb) {
        float a[8], b[8];
        ga.get(a);
        gb.get(b);
#pragma unroll
        for (int k = 0; k < 8; k++) {
            if (!VEC && j + k >= half) break;  // past the end of a head whose half is not a whole number of groups
            float c, s;
            if (tabled) {
                c = table[rl * half + j + k];
                s = table[sines + rl * half + j + k];
            } else {
                l4j_rope_cos_sin(positions[r0 + rl], inv_freq[j + k], c, s);
            }
            l4j_rotate<INVERSE>(a[k], b[k], c, s);
        }
        l4j_group_store<VEC>(p, 0, half - j, a);
        l4j_group_store<VEC>(p + half, 0, half - j, b);
    };

    // ITEMS groups per thread and pass, all loaded before any is rotated; the first pass's loads are in
    // flight while the table is made.
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
        if (tabled && first == 0) {  // every thread makes the first pass (items > 0), so all reach the barrier
            for (int e = threadIdx.x; e < rows * half; e += blockDim.x) {
                int er = e / half;
                l4j_rope_cos_sin(positions[r0 + er], inv_freq[e - er * half], table[e], table[sines + e]);
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
                                         int n, int width, int head_dim, int rows_per_block, int heads_per_block) {
    // Rows are aligned when x is, as width is a multiple of head_dim and so of 16.
    if ((head_dim / 2) % L4J_GROUP == 0 && l4j_aligned16(x)) {
        l4j_rope_tile<INVERSE, true>(x, positions, inv_freq, n, width, head_dim, rows_per_block, heads_per_block);
    } else {
        l4j_rope_tile<INVERSE, false>(x, positions, inv_freq, n, width, head_dim, rows_per_block, heads_per_block);
    }
}

// Four blocks of L4J_ROPE_THREADS per multiprocessor at least: the double-precision cosine and sine must not cost
// the occupancy that keeps the loads in flight.
#define L4J_ROPE(name, INVERSE, T) \
    extern "C" __global__ void __launch_bounds__(L4J_ROPE_THREADS, 4) \
    name(T* x, const int* positions, const float* inv_freq, int n, int width, int head_dim, int rows_per_block, \
         int heads_per_block) { \
        l4j_rope<INVERSE>(x, positions, inv_freq, n, width, head_dim, rows_per_block, heads_per_block); \
    }

L4J_ROPE(lora4j_rope_f32, false, float)
L4J_ROPE(lora4j_rope_backward_f32, true, float)
L4J_ROPE(lora4j_rope_bf16, false, l4j_bf16)
L4J_ROPE(lora4j_rope_backward_bf16, true, l4j_bf16)
