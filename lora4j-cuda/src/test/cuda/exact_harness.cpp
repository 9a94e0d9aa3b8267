// Runs the bit-exact arithmetic of src/main/cuda/exact.cuh on the host, for KernelExactArithmeticTest: the
// dropout kernel and the AdamW kernel use these very functions, so checking them here against the CPU backend
// checks the GPU's results without a GPU. Built with -ffp-contract=off, so that no product and sum is fused
// unless the source says fma.
//
//   exact_harness dropout   stdin: records {u64 seed, u64 index, f32 x, f32 p, f32 scale}
//                           stdout: records {u64 mix, f32 uniform, f32 dropout(x), u32 drop threshold of p,
//                                   u32 keep flags of elements index and index + 1, u32 keep flags of the low and
//                                   u32 of the high half of the hash of index's group of four}
//   exact_harness adamw     stdin: 7 f32 scalars (decay, 1-beta1, beta2, 1-beta2, -step size, sqrt of bias
//                           correction 2, eps), then records {f32 param, f32 grad, f32 m, f32 v}
//                           stdout: records {f32 param, f32 m, f32 v} after one step
// Little-endian throughout.
#include <stdio.h>
#include <string.h>
#include "exact.cuh"

static int dropout() {
    unsigned char in[28];
    while (fread(in, 1, sizeof in, stdin) == sizeof in) {
        uint64_t seed, index;
        float x, p, scale;
        memcpy(&seed, in, 8);
        memcpy(&index, in + 8, 8);
        memcpy(&x, in + 16, 4);
        memcpy(&p, in + 20, 4);
        memcpy(&scale, in + 24, 4);
        uint64_t mix = l4j_dropout_mix(seed, index);
        float u = l4j_dropout_uniform(seed, index);
        float out = l4j_dropout(x, p, scale, seed, index);
        uint32_t threshold = l4j_dropout_threshold(p);
        uint32_t keep = l4j_dropout_keep2(seed, index, threshold);
        uint64_t group = l4j_dropout_mix(seed, index >> 2);
        uint32_t keep_low = l4j_dropout_keep_half((uint32_t) group, threshold);
        uint32_t keep_high = l4j_dropout_keep_half((uint32_t) (group >> 32), threshold);
        fwrite(&mix, 8, 1, stdout);
        fwrite(&u, 4, 1, stdout);
        fwrite(&out, 4, 1, stdout);
        fwrite(&threshold, 4, 1, stdout);
        fwrite(&keep, 4, 1, stdout);
        fwrite(&keep_low, 4, 1, stdout);
        fwrite(&keep_high, 4, 1, stdout);
    }
    return 0;
}

static int adamw() {
    float scalars[7];
    if (fread(scalars, 4, 7, stdin) != 7) return 2;
    l4j_adamw_scalars s;
    s.decay = scalars[0];
    s.one_minus_beta1 = scalars[1];
    s.beta2 = scalars[2];
    s.one_minus_beta2 = scalars[3];
    s.neg_step_size = scalars[4];
    s.bias2_sqrt = scalars[5];
    s.eps = scalars[6];
    float rec[4];
    while (fread(rec, 4, 4, stdin) == 4) {
        float p = rec[0], m = rec[2], v = rec[3];
        l4j_adamw_step(&p, rec[1], &m, &v, s);
        float out[3] = {p, m, v};
        fwrite(out, 4, 3, stdout);
    }
    return 0;
}

int main(int argc, char** argv) {
    if (argc == 2 && strcmp(argv[1], "dropout") == 0) return dropout();
    if (argc == 2 && strcmp(argv[1], "adamw") == 0) return adamw();
    fprintf(stderr, "usage: exact_harness dropout|adamw\n");
    return 2;
}
