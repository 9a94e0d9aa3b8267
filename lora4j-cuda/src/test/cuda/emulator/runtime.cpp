// The fibers of the device emulator: every CUDA thread of a block is a fiber with its own stack, and one host thread
// switches among them. A fiber runs until it reaches a barrier or returns; a barrier opens when every thread of its
// scope (the block for __syncthreads, the warp for a shuffle) that has not returned has reached it. The switch saves
// the callee-saved registers of the x86-64 System V ABI on the fiber's stack; it is written for that ABI only.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "emulation.h"
#include "runtime.h"

#if !defined(__x86_64__)
#error "the device emulator's fiber switch is written for x86-64"
#endif

// void l4j_fiber_switch(void** save_sp, void* load_sp): saves the current context on the current stack and its
// stack pointer in *save_sp, then resumes the context saved at load_sp.
extern "C" void l4j_fiber_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .globl l4j_fiber_switch
    .type l4j_fiber_switch, @function
l4j_fiber_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size l4j_fiber_switch, .-l4j_fiber_switch
    .section .note.GNU-stack,"",@progbits
    .text
)");

namespace l4j_emu {

enum class State { Ready, AtBlockBarrier, AtWarpBarrier, Done };

struct Fiber {
    void* sp;
    char* stack;
    l4j_emu_dim3 index;
    unsigned warp;
    State state;
};

struct Warp {
    uint64_t slots[32];
    int active;   // lanes that have not returned
    int arrived;  // lanes waiting at the warp barrier
};

Fiber* current;
l4j_emu_dim3 block_idx;
l4j_emu_dim3 block_dim;
l4j_emu_dim3 grid_dim;
unsigned char* dynamic_shared;

namespace {

constexpr size_t STACK_BYTES = 128 * 1024;

void* scheduler_sp;
std::vector<Fiber> fibers;
std::vector<Warp> warps;
int block_active;
int block_arrived;
const Kernel* running;
void** running_params;

void yield() { l4j_fiber_switch(&current->sp, scheduler_sp); }

// Opens every barrier that all of its remaining threads have reached.
void release() {
    if (block_arrived > 0 && block_arrived == block_active) {
        for (Fiber& f : fibers) if (f.state == State::AtBlockBarrier) f.state = State::Ready;
        block_arrived = 0;
    }
    for (size_t w = 0; w < warps.size(); w++) {
        Warp& warp = warps[w];
        if (warp.arrived > 0 && warp.arrived == warp.active) {
            for (size_t i = w * 32; i < fibers.size() && i < (w + 1) * 32; i++) {
                if (fibers[i].state == State::AtWarpBarrier) fibers[i].state = State::Ready;
            }
            warp.arrived = 0;
        }
    }
}

void fiber_main() {
    running->invoke(running_params);
    Fiber* f = current;
    f->state = State::Done;
    block_active--;
    warps[f->warp].active--;
    release();
    yield();
    abort();  // a finished fiber is never resumed
}

// A fresh context whose first switch enters fiber_main as if it had been called (stack aligned as the ABI says).
void prepare(Fiber& f) {
    uintptr_t top = ((uintptr_t) (f.stack + STACK_BYTES)) & ~(uintptr_t) 15;
    uint64_t* sp = (uint64_t*) top;
    *--sp = 0;                          // fiber_main's return address: it never returns
    *--sp = (uint64_t) &fiber_main;     // where the switch's ret goes
    for (int i = 0; i < 6; i++) *--sp = 0;  // rbp, rbx, r12-r15
    --sp;
    uint32_t* control = (uint32_t*) sp;
    control[0] = 0x1F80;                // MXCSR: round to nearest, exceptions masked
    control[1] = 0x037F;                // x87 control word
    f.sp = sp;
}

}  // namespace

const l4j_emu_dim3& thread_index() { return current->index; }

unsigned lane() { return current->index.x % 32; }

uint64_t* warp_slots() { return warps[current->warp].slots; }

void sync_block() {
    current->state = State::AtBlockBarrier;
    block_arrived++;
    release();
    yield();
}

void sync_warp() {
    current->state = State::AtWarpBarrier;
    warps[current->warp].arrived++;
    release();
    yield();
}

const char* launch(const Kernel& kernel, unsigned grid, unsigned block, unsigned shared, void** params) {
    static char message[256];
    if (block == 0 || block > 1024) return "block size outside [1, 1024]";
    while (fibers.size() < block) {
        Fiber f{};
        f.stack = (char*) malloc(STACK_BYTES);
        if (f.stack == nullptr) return "out of host memory for fiber stacks";
        fibers.push_back(f);
    }
    // Keep the stacks of larger blocks for later launches, but schedule only this block's fibers.
    std::vector<Fiber> spare(fibers.begin() + block, fibers.end());
    fibers.resize(block);
    std::vector<unsigned char> shared_memory(shared + 64);
    dynamic_shared = (unsigned char*) (((uintptr_t) shared_memory.data() + 63) & ~(uintptr_t) 63);
    warps.assign((block + 31) / 32, Warp{});
    block_dim = {block, 1, 1};
    grid_dim = {grid, 1, 1};
    running = &kernel;
    running_params = params;
    const char* failure = nullptr;
    for (unsigned b = 0; b < grid && failure == nullptr; b++) {
        block_idx = {b, 0, 0};
        memset(dynamic_shared, 0xff, shared);  // NaNs: a read of shared memory nobody wrote shows up in the results
        for (size_t w = 0; w < warps.size(); w++) {
            warps[w].active = (int) (w + 1 < warps.size() ? 32 : block - 32 * w);
            warps[w].arrived = 0;
        }
        block_active = (int) block;
        block_arrived = 0;
        for (unsigned t = 0; t < block; t++) {
            Fiber& f = fibers[t];
            f.index = {t, 0, 0};
            f.warp = t / 32;
            f.state = State::Ready;
            prepare(f);
        }
        for (;;) {
            bool ran = false, done = true;
            for (Fiber& f : fibers) {
                if (f.state == State::Done) continue;
                done = false;
                if (f.state != State::Ready) continue;
                ran = true;
                current = &f;
                l4j_fiber_switch(&scheduler_sp, f.sp);
            }
            if (done) break;
            if (!ran) {
                int at_block = 0, at_warp = 0;
                for (Fiber& f : fibers) {
                    at_block += f.state == State::AtBlockBarrier;
                    at_warp += f.state == State::AtWarpBarrier;
                }
                snprintf(message, sizeof message,
                         "%s block %u: threads wait at barriers that the others never reach (%d at __syncthreads, %d at"
                         " a warp shuffle, %d returned)", kernel.name, b, at_block, at_warp, (int) block - block_active);
                failure = message;
            }
        }
    }
    fibers.insert(fibers.end(), spare.begin(), spare.end());
    current = nullptr;
    return failure;
}

}  // namespace l4j_emu
