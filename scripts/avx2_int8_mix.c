// What the AVX2 int8 GEMM's inner loop can reach on this CPU: the same instruction mixes as the kernels
// (crates/kernels/src/arch/x86_64/avx2.rs), six independent rows per iteration, in registers and L1, no epilogue.
// Build and run (one thread):
//   gcc -O2 scripts/avx2_int8_mix.c -o /tmp/avx2_int8_mix && /tmp/avx2_int8_mix
// peak: vpmaddubsw + vpmaddwd + vpaddd (scripts/cpu_peak_avx2.c's loop);
// +sign: the exact signed product |w| * (a with w's sign) adds a vpsignb per 32 multiply-adds;
// int8 kernel: and the activation's 4 bytes broadcast from memory (vpbroadcastd), as the kernel does per row;
// int4 kernel: broadcast, vpmaddubsw on 0..15 nibbles, i16 vpaddw (no sign, no widening in the loop);
// w8a16 kernel: per quad two vpmovzxbw weight loads shared by the six rows, then per row a 4 × i16 vpbroadcastq and
// two vpmaddwd + vpaddd (16-bit activations against 8-bit weights, as avx2.rs's micro16).
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static char mem[4096] __attribute__((aligned(64)));

#define SETUP                                                                                                      \
    "vpcmpeqw %%ymm15, %%ymm15, %%ymm15\n vpabsw %%ymm15, %%ymm15\n vpcmpeqb %%ymm14, %%ymm14, %%ymm14\n"          \
    "vpabsb %%ymm14, %%ymm14\n vmovdqa %%ymm14, %%ymm13\n"
#define CLOBBER                                                                                                    \
    "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13",      \
        "xmm14", "xmm15", "cc", "memory"
#define PEAK(t, a)                                                                                                 \
    "vpmaddubsw %%ymm13, %%ymm14, " t "\n vpmaddwd %%ymm15, " t ", " t "\n vpaddd " t ", " a ", " a "\n"
#define SIGN(t, a)                                                                                                 \
    "vpsignb %%ymm13, %%ymm14, " t "\n vpmaddubsw " t ", %%ymm14, " t "\n vpmaddwd %%ymm15, " t ", " t "\n"        \
    "vpaddd " t ", " a ", " a "\n"
#define INT8(t, a, off)                                                                                            \
    "vpbroadcastd " off "(%1), " t "\n vpsignb %%ymm13, " t ", " t "\n vpmaddubsw " t ", %%ymm14, " t "\n"         \
    "vpmaddwd %%ymm15, " t ", " t "\n vpaddd " t ", " a ", " a "\n"
#define INT4(t, a, off)                                                                                            \
    "vpbroadcastd " off "(%1), " t "\n vpmaddubsw " t ", %%ymm14, " t "\n vpaddw " t ", " a ", " a "\n"
#define A16(lo, hi, off)                                                                                           \
    "vpbroadcastq " off "(%1), %%ymm14\n vpmaddwd %%ymm12, %%ymm14, %%ymm15\n vpaddd %%ymm15, " lo ", " lo "\n"     \
    "vpmaddwd %%ymm13, %%ymm14, %%ymm15\n vpaddd %%ymm15, " hi ", " hi "\n"
#define A16_SIX                                                                                                    \
    "vpmovzxbw 1024(%1), %%ymm12\n vpmovzxbw 1040(%1), %%ymm13\n" A16("%%ymm0", "%%ymm1", "0")                    \
    A16("%%ymm2", "%%ymm3", "64") A16("%%ymm4", "%%ymm5", "128") A16("%%ymm6", "%%ymm7", "192")                     \
    A16("%%ymm8", "%%ymm9", "256") A16("%%ymm10", "%%ymm11", "320")
#define SIX(M) M("%%ymm6", "%%ymm0") M("%%ymm7", "%%ymm1") M("%%ymm8", "%%ymm2") M("%%ymm9", "%%ymm3")             \
    M("%%ymm10", "%%ymm4") M("%%ymm11", "%%ymm5")
#define SIX_MEM(M) M("%%ymm6", "%%ymm0", "0") M("%%ymm7", "%%ymm1", "64") M("%%ymm8", "%%ymm2", "128")              \
    M("%%ymm9", "%%ymm3", "192") M("%%ymm10", "%%ymm4", "256") M("%%ymm11", "%%ymm5", "320")
#define RUN(name, body)                                                                                            \
    do {                                                                                                           \
        double best = 0;                                                                                           \
        for (int rep = 0; rep < 5; rep++) {                                                                        \
            long n = 20000000;                                                                                     \
            double t = now();                                                                                      \
            __asm__ volatile(SETUP "1:\n" body "dec %0\n jnz 1b\n vzeroupper\n" : "+r"(n) : "r"(mem) : CLOBBER);   \
            double g = 20000000.0 * 6 * 32 / (now() - t) / 1e9;                                                    \
            if (g > best) best = g;                                                                                \
        }                                                                                                          \
        printf("%-12s %6.1f GMAC/s\n", name, best);                                                                \
    } while (0)

int main(void) {
    RUN("peak", SIX(PEAK));
    RUN("+sign", SIX(SIGN));
    RUN("int8 kernel", SIX_MEM(INT8));
    RUN("int4 kernel", SIX_MEM(INT4));
    RUN("w8a16 kernel", A16_SIX);
    return 0;
}
