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

impl Prefetch {
    /// Micro-kernel call `c` of `calls`' share of the `lines` cache lines at `next` (the next tile's weights); none
    /// without a next tile.
    pub fn part(next: Option<*const u8>, lines: usize, c: usize, calls: usize) -> Self {
        match next {
            Some(base) => Prefetch { base, from: c * lines / calls, to: (c + 1) * lines / calls },
            None => Prefetch { base: std::ptr::null(), from: 0, to: 0 },
        }
    }
}

/// Block `b` of `nb`'s share of the lines.
///
/// # Safety
/// Unless `pf.from..pf.to` is empty, `pf.base` must point into the weights with those lines inside them
/// (prefetches never fault, but the address arithmetic must stay in the allocation).
#[inline(always)]
pub unsafe fn prefetch_share(pf: Prefetch, b: usize, nb: usize) {
    let n = pf.to - pf.from;
    for l in pf.from + b * n / nb..pf.from + (b + 1) * n / nb {
        _mm_prefetch::<_MM_HINT_T0>(pf.base.add(l * 64) as *const i8);
    }
}
