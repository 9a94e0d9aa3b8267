// The fibers of the device emulator: every CUDA thread of a block is a fiber with its own stack, and one host thread
// switches among them. A fiber runs until it reaches a barrier or returns; a barrier opens when every thread of its
// scope (the block for __syncthreads, the warp for a shuffle) that has not returned has reached it. The switch saves
// the callee-saved registers of the x86-64 System V ABI on the fiber's stack; it is written for that ABI only.
#include <math.h>
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
    unsigned collectives;  // tensor-core operations this thread has entered: picks the exchange of the next one
};

// What the lanes of one warp-collective tensor-core operation hand each other: fragment registers or row addresses,
// and the product, which the first lane past the barrier computes for all.
struct Exchange {
    uint32_t a[32][4], b[32][2];
    float c[32][4];
    const void* rows[32];
    float d[16][8];
    bool computed;
};

struct Warp {
    uint64_t slots[32];
    int active;   // lanes that have not returned
    int arrived;  // lanes waiting at the warp barrier
    // Tensor-core operations alternate between two exchanges, so each needs one barrier only: a lane can write an
    // exchange again only after passing the next operation's barrier, which every other lane reaches after it has
    // finished reading this one.
    Exchange exchange[2];
};

Fiber* current;
l4j_emu_dim3 block_idx;
l4j_emu_dim3 block_dim;
l4j_emu_dim3 grid_dim;
unsigned char* dynamic_shared;

namespace {

size_t dynamic_shared_bytes;
const char* fault;  // the first illegal operation of the running launch, reported when its block ends

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

namespace {

// Records an illegal operation (the launch then fails with this message, as the GPU would fault); false.
bool illegal(const char* what) {
    if (fault == nullptr) fault = what;
    return false;
}

// The exchange of this lane's next tensor-core operation; null (after recording why) when the warp is not whole.
Exchange* enter_collective() {
    Warp& w = warps[current->warp];
    if (w.active != 32) {
        illegal("a tensor-core operation (mma, ldmatrix) needs all 32 lanes of the warp");
        return nullptr;
    }
    return &w.exchange[current->collectives++ & 1];
}

}  // namespace

void require_dynamic_shared(size_t bytes) {
    if (dynamic_shared_bytes < bytes) illegal("the launch has less dynamic shared memory than the kernel's own size function asks");
}

namespace {

// Whether [p, p + bytes) is 16-byte aligned and inside the launch's dynamic shared memory.
bool shared_operand(const void* p, size_t bytes, const char* what) {
    uintptr_t a = (uintptr_t) p, base = (uintptr_t) dynamic_shared;
    if (a % 16 != 0) return illegal(what);
    if (a < base || a + bytes > base + dynamic_shared_bytes) return illegal(what);
    return true;
}

uint16_t half_of(uint32_t word, int high) { return (uint16_t) (high ? word >> 16 : word & 0xffffu); }

// bfloat16 is the top half of an IEEE float.
double bf16_value(uint16_t bits) {
    uint32_t word = (uint32_t) bits << 16;
    float f;
    memcpy(&f, &word, 4);
    return f;
}

}  // namespace

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: every lane hands over its A, B and C fragments; the first lane
// past the barrier rebuilds A, B and C from them by PTX's layout and computes D for the warp; each lane then takes
// its own four elements. Each element of D is the sum of its 16 exact products and C formed in double and rounded
// once to FP32: FP32 accumulation without intermediate roundings (the hardware's adder may differ in the last bit).
void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
    Exchange* e = enter_collective();
    const unsigned l = lane();
    if (e != nullptr) {
        e->computed = false;  // every lane left this exchange's previous use (see Warp) before any lane got here
        memcpy(e->a[l], a, sizeof e->a[l]);
        memcpy(e->b[l], b, sizeof e->b[l]);
        memcpy(e->c[l], c, sizeof e->c[l]);
    }
    sync_warp();
    if (e == nullptr) {
        for (int i = 0; i < 4; i++) d[i] = NAN;
        return;
    }
    if (!e->computed) {
        // A[row][k] is in lane (row % 8) * 4 + (k % 8) / 2, register (row >= 8) + 2 (k >= 8), half k % 2;
        // B[k][col] in lane col * 4 + (k % 8) / 2, register (k >= 8), half k % 2; C[row][col] in lane
        // (row % 8) * 4 + col / 2, element 2 (row >= 8) + col % 2.
        double am[16][16], bm[16][8];
        for (unsigned row = 0; row < 16; row++) {
            for (unsigned k = 0; k < 16; k++) {
                uint32_t word = e->a[(row % 8) * 4 + (k % 8) / 2][(row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)];
                am[row][k] = bf16_value(half_of(word, k & 1));
            }
        }
        for (unsigned k = 0; k < 16; k++) {
            for (unsigned col = 0; col < 8; col++) {
                bm[k][col] = bf16_value(half_of(e->b[col * 4 + (k % 8) / 2][k >= 8 ? 1 : 0], k & 1));
            }
        }
        for (unsigned row = 0; row < 16; row++) {
            for (unsigned col = 0; col < 8; col++) {
                double sum = e->c[(row % 8) * 4 + col / 2][(row >= 8 ? 2 : 0) + col % 2];
                for (unsigned k = 0; k < 16; k++) sum += am[row][k] * bm[k][col];
                e->d[row][col] = (float) sum;
            }
        }
        e->computed = true;
    }
    const unsigned g = l / 4, t = l % 4;
    for (int i = 0; i < 4; i++) d[i] = e->d[g + (i >= 2 ? 8 : 0)][2 * t + (i & 1)];
}

// ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16: every lane hands over one row address, then gathers its four
// registers from the rows of the others.
void ldmatrix_x4(uint32_t r[4], const void* row, bool trans) {
    Exchange* e = enter_collective();
    const unsigned l = lane();
    bool ok = shared_operand(row, 16, "ldmatrix: a row address is not 16-byte aligned inside the dynamic shared memory");
    if (e != nullptr) e->rows[l] = ok ? row : nullptr;
    sync_warp();
    for (int i = 0; i < 4; i++) {
        const uint16_t *lo, *hi;
        int column;
        if (e == nullptr) {
            r[i] = 0;
            continue;
        }
        if (!trans) {  // row l/4, columns 2(l%4) and 2(l%4)+1
            lo = hi = (const uint16_t*) e->rows[i * 8 + l / 4];
            column = 2 * (l % 4);
        } else {       // column l/4 of rows 2(l%4) and 2(l%4)+1
            lo = (const uint16_t*) e->rows[i * 8 + 2 * (l % 4)];
            hi = (const uint16_t*) e->rows[i * 8 + 2 * (l % 4) + 1];
            column = l / 4;
        }
        if (lo == nullptr || hi == nullptr) {
            r[i] = 0;
            continue;
        }
        uint16_t x, y;
        memcpy(&x, lo + column, 2);
        memcpy(&y, hi + column + (trans ? 0 : 1), 2);
        r[i] = (uint32_t) x | ((uint32_t) y << 16);
    }
}

// cp.async of 16 bytes, done at once: the emulator has nothing to overlap it with.
void copy_16(void* shared_dst, const void* global_src, bool valid) {
    if (!shared_operand(shared_dst, 16, "cp.async: the destination is not 16-byte aligned inside the dynamic shared memory")) return;
    if (!valid) {
        memset(shared_dst, 0, 16);
        return;
    }
    if ((uintptr_t) global_src % 16 != 0) {
        illegal("cp.async: the source address is not 16-byte aligned");
        return;
    }
    memcpy(shared_dst, global_src, 16);
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
    dynamic_shared_bytes = shared;
    fault = nullptr;
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
            f.collectives = 0;
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
        if (failure == nullptr && fault != nullptr) {
            snprintf(message, sizeof message, "%s block %u: %s", kernel.name, b, fault);
            failure = message;
        }
    }
    fibers.insert(fibers.end(), spare.begin(), spare.end());
    current = nullptr;
    return failure;
}

}  // namespace l4j_emu
