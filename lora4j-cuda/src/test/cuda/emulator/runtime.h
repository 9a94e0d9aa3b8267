// The device emulator's runtime: kernels by name, and launches that run a grid block by block, each block's CUDA
// threads as fibers (see emulation.h).
#pragma once

#include <stddef.h>

namespace l4j_emu {

// One kernel of the emulated module: its extern "C" name, a call that unpacks cuLaunchKernel's kernelParams (each
// entry points at one argument's value) into a typed call, and its parameters' sizes.
struct Kernel {
    const char* name;
    void (*invoke)(void** params);
    int param_count;
    const size_t* param_sizes;
};

const Kernel* find_kernel(const char* name);

// Runs grid x block threads of the kernel with `shared` bytes of dynamic shared memory. Returns null, or what went
// wrong (a barrier some threads never reach).
const char* launch(const Kernel& kernel, unsigned grid, unsigned block, unsigned shared, void** params);

}  // namespace l4j_emu
