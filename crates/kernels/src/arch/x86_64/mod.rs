//! x86-64: AVX-512 (F for the fp32 kernels; F + BW + VNNI for the int8 GEMM), and `avx2`, every kernel for CPUs
//! without AVX-512.
pub mod activation;
pub mod attention;
pub mod avx2;
pub mod gemm;

use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};

/// Cache lines `from..to` of `base` to prefetch during one micro-kernel call.
#[derive(Clone, Copy)]
pub struct Prefetch {
    pub base: *const u8,
    pub from: usize,
    pub to: usize,
}

/// Block `b` of `nb`'s share of the lines.
///
/// # Safety
/// `pf.base` must point into the weights with lines `pf.from..pf.to` inside them (prefetches never fault, but the
/// address arithmetic must stay in the allocation).
#[inline(always)]
pub unsafe fn prefetch_share(pf: Prefetch, b: usize, nb: usize) {
    let n = pf.to - pf.from;
    for l in pf.from + b * n / nb..pf.from + (b + 1) * n / nb {
        _mm_prefetch::<_MM_HINT_T0>(pf.base.add(l * 64) as *const i8);
    }
}
