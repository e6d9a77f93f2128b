// This CPU's AVX2 peaks, the reference for the kernels' AVX2 path (CPUs without AVX-512, where
// ../shared/scripts/cpu_peak.c cannot run). Build and run:
//   gcc -O3 -mavx2 -mfma -fopenmp scripts/cpu_peak_avx2.c -o /tmp/cpu_peak_avx2 && OMP_NUM_THREADS=2 /tmp/cpu_peak_avx2
// int8: six independent chains of vpmaddubsw (32 u8 x s8 products) + vpmaddwd by ones + vpaddd in registers, the
// cheapest exact int8 dot product AVX2 has; 32 multiply-adds per vpmaddubsw. Written in inline assembly: from C
// intrinsics on loop-invariant inputs the compiler hoists both multiplies out of the loop and times only vpaddd.
// fp32: independent vfmadd ymm chains (each depends on its own previous value, so nothing can be hoisted).
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    int nt = omp_get_max_threads();
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        long iters = 100000000 / nt;
        double a = now();
#pragma omp parallel
        {
            long n = iters / 6;
            __asm__ volatile(
                "vpcmpeqw %%ymm15, %%ymm15, %%ymm15\n vpabsw %%ymm15, %%ymm15\n"  /* i16 ones */
                "vpcmpeqb %%ymm14, %%ymm14, %%ymm14\n vpabsb %%ymm14, %%ymm14\n"  /* u8 ones */
                "vmovdqa %%ymm14, %%ymm13\n"
                "vpxor %%ymm0, %%ymm0, %%ymm0\n vpxor %%ymm1, %%ymm1, %%ymm1\n vpxor %%ymm2, %%ymm2, %%ymm2\n"
                "vpxor %%ymm3, %%ymm3, %%ymm3\n vpxor %%ymm4, %%ymm4, %%ymm4\n vpxor %%ymm5, %%ymm5, %%ymm5\n"
                "1:\n"
                "vpmaddubsw %%ymm13, %%ymm14, %%ymm6\n vpmaddubsw %%ymm13, %%ymm14, %%ymm7\n"
                "vpmaddubsw %%ymm13, %%ymm14, %%ymm8\n vpmaddubsw %%ymm13, %%ymm14, %%ymm9\n"
                "vpmaddubsw %%ymm13, %%ymm14, %%ymm10\n vpmaddubsw %%ymm13, %%ymm14, %%ymm11\n"
                "vpmaddwd %%ymm15, %%ymm6, %%ymm6\n vpmaddwd %%ymm15, %%ymm7, %%ymm7\n"
                "vpmaddwd %%ymm15, %%ymm8, %%ymm8\n vpmaddwd %%ymm15, %%ymm9, %%ymm9\n"
                "vpmaddwd %%ymm15, %%ymm10, %%ymm10\n vpmaddwd %%ymm15, %%ymm11, %%ymm11\n"
                "vpaddd %%ymm6, %%ymm0, %%ymm0\n vpaddd %%ymm7, %%ymm1, %%ymm1\n vpaddd %%ymm8, %%ymm2, %%ymm2\n"
                "vpaddd %%ymm9, %%ymm3, %%ymm3\n vpaddd %%ymm10, %%ymm4, %%ymm4\n vpaddd %%ymm11, %%ymm5, %%ymm5\n"
                "dec %0\n jnz 1b\n vzeroupper\n"
                : "+r"(n)
                :
                : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
                  "xmm13", "xmm14", "xmm15", "cc");
        }
        double t = now() - a, g = (double)(iters / 6 * 6) * nt * 32 / t / 1e9;
        if (g > best) best = g;
    }
    printf("threads %d: peak int8 AVX2 (vpmaddubsw) %.0f GMAC/s\n", nt, best);
    best = 0;
    for (int rep = 0; rep < 5; rep++) {
        long iters = 200000000 / nt;
        double a = now();
#pragma omp parallel
        {
            __m256 acc[12];
            for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps((float)i);
            __m256 x = _mm256_set1_ps(1.0000001f), y = _mm256_set1_ps(0.9999999f);
            for (long k = 0; k < iters / 12; k++)
                for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
            float s = 0;
            for (int i = 0; i < 12; i++) s += _mm256_cvtss_f32(acc[i]);
            if (s == 42.0f) printf("!");
        }
        double t = now() - a, g = (double)(iters / 12 * 12) * nt * 8 / t / 1e9;
        if (g > best) best = g;
    }
    printf("threads %d: peak fp32 FMA (ymm) %.0f GMAC/s\n", nt, best);
    return 0;
}
