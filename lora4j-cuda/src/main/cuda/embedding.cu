// Embedding lookup: out[i, :] = table[ids[i], :] in the activation type (F32, or BF16 rounded to nearest even). The
// ids were checked against the vocabulary on the host.
#include "common.cuh"

template <typename T, typename O>
__device__ __forceinline__ void l4j_embedding(const T* __restrict__ table, const int* __restrict__ ids,
                                              O* __restrict__ out, int n, long long d) {
    L4J_FOR_EACH(idx, (long long) n * d) {
        long long i = idx / d, j = idx - i * d;
        l4j_store(out, idx, l4j_load(table, (long long) ids[i] * d + j));
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
    L4J_FOR_EACH(idx, (long long) n * d) {
        long long i = idx / d, j = idx - i * d;
        atomicAdd(d_table + (long long) ids[i] * d + j, l4j_load(d_out, idx));
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
