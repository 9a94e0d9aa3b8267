// The CUDA built-ins lora4j's kernels use, for compiling them as host code: the device emulator runs every CUDA
// thread of a block as a fiber on one host thread, switching at barriers (__syncthreads, and the warp barriers of
// the shuffles), so barrier semantics, shared memory and warp shuffles behave as on a GPU. Fibers of a block run
// one after another between barriers, which exposes a missing barrier (a later fiber's write is not yet there when
// an earlier fiber reads); dynamic shared memory starts each block filled with NaNs, which exposes reads of
// values never written.
//
// Included before the kernel sources, with L4J_EMULATION defined (common.cuh then compiles its device part).
#pragma once

#define L4J_EMULATION 1

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Blocks run one at a time, so a function's static storage serves as the block's shared memory.
#define __shared__ static

struct l4j_emu_dim3 {
    unsigned x, y, z;
};

namespace l4j_emu {

struct Fiber;

extern Fiber* current;
extern l4j_emu_dim3 block_idx;
extern l4j_emu_dim3 block_dim;
extern l4j_emu_dim3 grid_dim;
extern unsigned char* dynamic_shared;

const l4j_emu_dim3& thread_index();
void sync_block();
void sync_warp();
uint64_t* warp_slots();
unsigned lane();

// The tensor-core operations of common.cuh, as the warp computes them together (runtime.cpp).
void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]);
void ldmatrix_x4(uint32_t r[4], const void* row, bool trans);
void copy_16(void* shared_dst, const void* global_src, bool valid);
// Fails the launch (as a trap does on the GPU) unless it was given at least `bytes` of dynamic shared memory.
void require_dynamic_shared(size_t bytes);

}  // namespace l4j_emu

#define threadIdx (l4j_emu::thread_index())
#define blockIdx (l4j_emu::block_idx)
#define blockDim (l4j_emu::block_dim)
#define gridDim (l4j_emu::grid_dim)
#define L4J_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(l4j_emu::dynamic_shared)

inline void __syncthreads() { l4j_emu::sync_block(); }

// Every lane of the warp must call it, as on the GPU (the mask is not looked at).
template <typename T>
inline T __shfl_xor_sync(unsigned, T value, int lane_mask) {
    static_assert(sizeof(T) <= 8, "a shuffle moves at most 8 bytes");
    uint64_t* slots = l4j_emu::warp_slots();
    unsigned lane = l4j_emu::lane();
    uint64_t bits = 0;
    memcpy(&bits, &value, sizeof(T));
    slots[lane] = bits;
    l4j_emu::sync_warp();
    uint64_t other = slots[lane ^ (unsigned) lane_mask];
    l4j_emu::sync_warp();  // every lane has read before the slots are written again
    T result;
    memcpy(&result, &other, sizeof(T));
    return result;
}

// Whether the predicate holds in any lane. Every lane of the warp must call it, as for the shuffles (the mask is not
// looked at).
inline bool __any_sync(unsigned, bool predicate) {
    uint64_t* slots = l4j_emu::warp_slots();
    slots[l4j_emu::lane()] = predicate ? 1 : 0;
    l4j_emu::sync_warp();
    bool any = false;
    for (int i = 0; i < 32; i++) any = any || slots[i] != 0;
    l4j_emu::sync_warp();  // every lane has read before the slots are written again
    return any;
}

// One host thread runs every fiber and switches only at barriers, so a plain read-modify-write is atomic.
inline float atomicAdd(float* address, float value) {
    float old = *address;
    *address = old + value;
    return old;
}

inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }

using std::max;
using std::min;
