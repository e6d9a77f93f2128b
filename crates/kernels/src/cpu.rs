//! CPU capabilities, detected once. Each kernel family asks for the features it needs (`Caps::int8` for the
//! VNNI GEMM, `Caps::f32x16` for the AVX-512 fp32 kernels, `Caps::avx2` for the path of CPUs without AVX-512), so a
//! CPU with AVX-512F but no VNNI still gets fast attention.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    pub avx512f: bool,
    pub avx512bw: bool,
    pub avx512vnni: bool,
    pub avx2: bool,
    pub fma: bool,
    pub f16c: bool,
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

    /// Every kernel's AVX2 path (int8 GEMM by `vpmaddubsw`, fp32 by FMA, fp16 scales by F16C).
    pub fn avx2(self) -> bool {
        self.avx2 && self.fma && self.f16c
    }

    /// The int8 GEMM's and activation quantizer's path.
    pub fn int8_path(self) -> Path {
        Path::best(self.int8(), self.avx2())
    }

    /// The path of the GEMM with 16-bit activations (`matmul_a16`): AVX2's `vpmaddwd` kernel, on AVX-512 CPUs too.
    pub fn a16_path(self) -> Path {
        Path::best(false, self.avx2())
    }

    /// The fp32 kernels' path (attention, softmax, GeGLU).
    pub fn f32_path(self) -> Path {
        Path::best(self.f32x16(), self.avx2())
    }
}

/// Which tree of kernels a family runs: `arch::x86_64`'s AVX-512 or AVX2 ones, or `portable`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Avx512,
    Avx2,
    Portable,
}

impl Path {
    fn best(avx512: bool, avx2: bool) -> Path {
        if avx512 {
            Path::Avx512
        } else if avx2 {
            Path::Avx2
        } else {
            Path::Portable
        }
    }

    /// Whether this CPU has the path's features (as the int8 GEMM needs them).
    pub fn runs_here(self) -> bool {
        match self {
            Path::Avx512 => caps().int8(),
            Path::Avx2 => caps().avx2(),
            Path::Portable => true,
        }
    }

    /// The int8 paths this CPU can run, fastest first.
    #[cfg(test)]
    pub(crate) fn int8_paths() -> Vec<Path> {
        [Path::Avx512, Path::Avx2, Path::Portable].into_iter().filter(|p| p.runs_here()).collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Path::Avx512 => "avx512",
            Path::Avx2 => "avx2",
            Path::Portable => "portable",
        }
    }
}

/// This CPU's capabilities (detected on first use), less what `DEPOSIUM_KERNELS` turns off: `avx2` hides AVX-512,
/// `portable` every vector path (to compare paths on one machine, or to rule a kernel out).
pub fn caps() -> Caps {
    static CAPS: OnceLock<Caps> = OnceLock::new();
    *CAPS.get_or_init(|| limit(detect(), std::env::var("DEPOSIUM_KERNELS").ok().as_deref()))
}

fn limit(c: Caps, to: Option<&str>) -> Caps {
    match to {
        Some("portable") => Caps::default(),
        Some("avx2") => Caps { avx512f: false, avx512bw: false, avx512vnni: false, ..c },
        _ => c,
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Caps {
    Caps {
        avx512f: is_x86_feature_detected!("avx512f"),
        avx512bw: is_x86_feature_detected!("avx512bw"),
        avx512vnni: is_x86_feature_detected!("avx512vnni"),
        avx2: is_x86_feature_detected!("avx2"),
        fma: is_x86_feature_detected!("fma"),
        f16c: is_x86_feature_detected!("f16c"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deposium_kernels_caps_the_path() {
        let all = Caps { avx512f: true, avx512bw: true, avx512vnni: true, avx2: true, fma: true, f16c: true };
        assert_eq!(limit(all, None).int8_path(), Path::Avx512);
        assert_eq!(limit(all, Some("avx2")).int8_path(), Path::Avx2);
        assert_eq!(limit(all, Some("avx2")).f32_path(), Path::Avx2);
        assert_eq!(limit(all, Some("portable")).int8_path(), Path::Portable);
        let no_vnni = Caps { avx512vnni: false, ..all };
        assert_eq!((no_vnni.int8_path(), no_vnni.f32_path()), (Path::Avx2, Path::Avx512));
    }
}
