// Turns each extern "C" kernel into a runtime.h Kernel: the parameter types come from the function's own type, so
// an argument is read with exactly the size the kernel declares, as the CUDA driver reads it.
#pragma once

#include <string.h>

#include <utility>

#include "runtime.h"

namespace l4j_emu {

template <typename T>
T parameter(void* value) {
    T v;
    memcpy(&v, value, sizeof(T));
    return v;
}

template <auto F>
struct KernelOf;

template <typename... A, void (*F)(A...)>
struct KernelOf<F> {
    static constexpr int count = sizeof...(A);
    static constexpr size_t sizes[sizeof...(A) + 1] = {sizeof(A)..., 0};

    static void invoke(void** params) { call(params, std::index_sequence_for<A...>{}); }

    template <size_t... I>
    static void call(void** params, std::index_sequence<I...>) {
        F(parameter<A>(params[I])...);
    }
};

}  // namespace l4j_emu

#define L4J_EMU_KERNEL(name) \
    {#name, &l4j_emu::KernelOf<&name>::invoke, l4j_emu::KernelOf<&name>::count, l4j_emu::KernelOf<&name>::sizes},
