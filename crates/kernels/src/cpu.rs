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

/// Bytes of L2 cache per core (from sysfs on Linux; 1 MiB where it cannot be read): sizes the GEMM's row blocks.
pub fn l2_bytes() -> usize {
    static L2: OnceLock<usize> = OnceLock::new();
    *L2.get_or_init(|| read_l2().unwrap_or(1 << 20))
}

fn read_l2() -> Option<usize> {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let read = |name: &str| std::fs::read_to_string(entry.path().join(name)).ok();
        if read("level")?.trim() != "2" || read("type")?.trim() == "Instruction" {
            continue;
        }
        let size = read("size")?;
        let size = size.trim();
        let (digits, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit()).unwrap_or(size.len()));
        let mult = match unit {
            "K" => 1 << 10,
            "M" => 1 << 20,
            "" => 1,
            _ => return None,
        };
        return digits.parse::<usize>().ok().map(|n| n * mult).filter(|&b| b >= 64 << 10);
    }
    None
}

/// Whether the int8 GEMM runs its fast path on this CPU.
pub fn accelerated() -> bool {
    caps().int8()
}
