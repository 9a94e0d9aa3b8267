// Embedding lookup: out[i, :] = table[ids[i], :] in the activation type (F32, or BF16 rounded to nearest even). The
// ids were checked against the vocabulary on the host.
//
// A block of 256 threads copies a tile of `rows_per_block` whole rows (CudaBackend.embedding: about
// L4J_EMBEDDING_ITEMS groups of 8 elements per thread, so two rows of 4096 or several narrow ones), each thread loading
// all its groups of a pass before it stores any, so that a block's loads are in flight together; 16-byte accesses when
// rows are aligned.
#include "groups.cuh"

// Groups of 8 elements a thread loads at once on the 16-byte path (CudaKernels.EMBEDDING_ITEMS); the element path,
// for odd views only, takes one at a time.
#define L4J_EMBEDDING_ITEMS 4

template <bool VEC, typename T, typename O>
__device__ __forceinline__ void l4j_embedding_tile(const T* __restrict__ table, const int* __restrict__ ids,
                                                   O* __restrict__ out, int n, long long d, int rows_per_block) {
    const long long groups = (d + L4J_GROUP - 1) / L4J_GROUP;
    const long long r0 = (long long) blockIdx.x * rows_per_block;
    const int rows = (int) min((long long) rows_per_block, (long long) n - r0);
    const long long items = rows * groups;
    constexpr int ITEMS = VEC ? L4J_EMBEDDING_ITEMS : 1;
    for (long long first = 0; first < items; first += ITEMS * blockDim.x) {
        l4j_group<T> g[ITEMS];
        O* dst[ITEMS];
        long long rest[ITEMS];  // elements from the group's start to the row's end
#pragma unroll
        for (int k = 0; k < ITEMS; k++) {
            long long i = first + k * blockDim.x + threadIdx.x;
            if (i < items) {
                // Tiles of several rows have few groups per row: the division is of ints.
                int rl = rows_per_block == 1 ? 0 : (int) i / (int) groups;
                long long j = (i - rl * groups) * L4J_GROUP;
                dst[k] = out + (r0 + rl) * d + j;
                rest[k] = d - j;
                g[k].template load<VEC>(table + (long long) ids[r0 + rl] * d + j, 0, rest[k]);
            }
        }
#pragma unroll
        for (int k = 0; k < ITEMS; k++) {
            if (first + k * blockDim.x + threadIdx.x < items) {
                float v[8];
                g[k].get(v);
                l4j_group_store<VEC>(dst[k], 0, rest[k], v);
            }
        }
    }
}

template <typename T, typename O>
__device__ __forceinline__ void l4j_embedding(const T* __restrict__ table, const int* __restrict__ ids,
                                              O* __restrict__ out, int n, long long d, int rows_per_block) {
    if (d % L4J_GROUP == 0 && l4j_aligned16(table) && l4j_aligned16(out)) {
        l4j_embedding_tile<true>(table, ids, out, n, d, rows_per_block);
    } else {
        l4j_embedding_tile<false>(table, ids, out, n, d, rows_per_block);
    }
}

#define L4J_EMBEDDING(name, T, O) \
    extern "C" __global__ void lora4j_embedding_##name(const T* table, const int* ids, O* out, int n, long long d, \
                                                       int rows_per_block) { \
        l4j_embedding<T, O>(table, ids, out, n, d, rows_per_block); \
    }

L4J_EMBEDDING(f32, float, float)
L4J_EMBEDDING(bf16, l4j_bf16, float)
L4J_EMBEDDING(f16, l4j_f16, float)
L4J_EMBEDDING(bf16act_f32, float, l4j_bf16)
L4J_EMBEDDING(bf16act_bf16, l4j_bf16, l4j_bf16)
L4J_EMBEDDING(bf16act_f16, l4j_f16, l4j_bf16)

// The gradient of the lookup: d_table[ids[i], :] += d_out[i, :], the table F32 whatever the activation type. Rows of
// repeated ids meet in the same table row, so the additions are atomic (their order, and so the last bits of a
// repeated row, may vary from run to run).
template <typename G>
__device__ __forceinline__ void l4j_embedding_backward(const int* __restrict__ ids, const G* __restrict__ d_out,
                                                       float* d_table, int n, long long d) {
    for (long long i = blockIdx.x; i < n; i += gridDim.x) {
        float* dst = d_table + (long long) ids[i] * d;
        for (long long j = threadIdx.x; j < d; j += blockDim.x) atomicAdd(dst + j, l4j_load(d_out, i * d + j));
    }
}

extern "C" __global__ void lora4j_embedding_backward_f32(const int* ids, const float* d_out, float* d_table, int n,
                                                         long long d) {
    l4j_embedding_backward(ids, d_out, d_table, n, d);
}

extern "C" __global__ void lora4j_embedding_backward_bf16(const int* ids, const l4j_bf16* d_out, float* d_table, int n,
                                                          long long d) {
    l4j_embedding_backward(ids, d_out, d_table, n, d);
}
