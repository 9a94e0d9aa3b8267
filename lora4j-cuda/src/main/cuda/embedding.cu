// Embedding lookup: out[i, :] = table[ids[i], :] in the activation type (F32, or BF16 rounded to nearest even). The
// ids were checked against the vocabulary on the host.
#include "common.cuh"

template <typename T, typename O>
__device__ __forceinline__ void l4j_embedding(const T* __restrict__ table, const int* __restrict__ ids,
                                              O* __restrict__ out, int n, long long d) {
    // Blocks walk the rows, threads the columns: one id read per row, 16-byte accesses when rows are aligned.
    const bool aligned = d % L4J_GROUP == 0 && l4j_aligned16(table) && l4j_aligned16(out);
    for (long long i = blockIdx.x; i < n; i += gridDim.x) {
        const T* src = table + (long long) ids[i] * d;
        O* dst = out + i * d;
        if (aligned) {
            for (long long j = (long long) threadIdx.x * L4J_GROUP; j < d; j += (long long) blockDim.x * L4J_GROUP) {
                float v[L4J_GROUP];
                l4j_load8(src, j, v);
                l4j_store8(dst, j, v);
            }
        } else {
            for (long long j = threadIdx.x; j < d; j += blockDim.x) l4j_store(dst, j, l4j_load(src, j));
        }
    }
}

#define L4J_EMBEDDING(name, T, O) \
    extern "C" __global__ void lora4j_embedding_##name(const T* table, const int* ids, O* out, int n, long long d) { \
        l4j_embedding<T, O>(table, ids, out, n, d); \
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
