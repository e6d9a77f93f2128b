//! CPU capabilities, detected once. Each kernel family asks for the features it needs (`Caps::int8` for the
//! VNNI GEMM, `Caps::f32x16` for the fp32 kernels), so a CPU with AVX-512F but no VNNI still gets fast attention.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    pub avx512f: bool,
    pub avx512bw: bool,
    pub avx512vnni: bool,
}

impl Caps {
    /// The int8 GEMM and activation quantization (`vpdpbusd`, byte shuffles): AVX-512 F, BW and VNNI.
    pub fn int8(self) -> bool {
        self.avx512f && self.avx512bw && self.avx512vnni
    }

    /// The fp32 kernels (attention scores, softmax, weighted sums, GeGLU): AVX-512 F.
    pub fn f32x16(self) -> bool {
        self.avx512f
    }
}

/// This CPU's capabilities (detected on first use).
pub fn caps() -> Caps {
    static CAPS: OnceLock<Caps> = OnceLock::new();
    *CAPS.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Caps {
    Caps {
        avx512f: is_x86_feature_detected!("avx512f"),
        avx512bw: is_x86_feature_detected!("avx512bw"),
        avx512vnni: is_x86_feature_detected!("avx512vnni"),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Caps {
    Caps::default()
}

/// Whether the int8 GEMM runs its fast path on this CPU.
pub fn accelerated() -> bool {
    caps().int8()
}
