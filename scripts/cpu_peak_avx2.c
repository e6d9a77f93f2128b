// This CPU's AVX2 peaks, the reference for the kernels' AVX2 path (CPUs without AVX-512, where
// ../shared/scripts/cpu_peak.c cannot run). Build and run:
//   gcc -O3 -mavx2 -mfma -fopenmp scripts/cpu_peak_avx2.c -o /tmp/cpu_peak_avx2 && OMP_NUM_THREADS=2 /tmp/cpu_peak_avx2
// int8: independent chains of vpmaddubsw (32 u8 x s8 products) + vpmaddwd by ones + vpaddd in registers, the
// cheapest exact int8 dot product AVX2 has; 32 multiply-adds per vpmaddubsw. fp32: independent vfmadd ymm chains.
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
            __m256i acc[12];
            for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_epi32(i);
            __m256i x = _mm256_set1_epi8(3), y = _mm256_set1_epi8(5), ones = _mm256_set1_epi16(1);
            for (long k = 0; k < iters / 12; k++)
                for (int i = 0; i < 12; i++)
                    acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), ones));
            int s = 0;
            for (int i = 0; i < 12; i++) s += _mm256_extract_epi32(acc[i], 0);
            if (s == 42) printf("!");
            __asm__ volatile("" ::: "memory");
        }
        double t = now() - a, g = (double)(iters / 12 * 12) * nt * 32 / t / 1e9;
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
