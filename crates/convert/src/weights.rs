//! Reading safetensors weights (memory-mapped) as f32.
use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::{Dtype, SafeTensors};

pub struct Weights {
    mmap: memmap2::Mmap,
    pub path: std::path::PathBuf,
}

/// A weight as f32 with its shape.
pub struct W {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Weights {
    pub fn open(path: &Path) -> Result<Self> {
        let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: read-only map of a file we do not modify while it is mapped.
        let mmap = unsafe { memmap2::Mmap::map(&f) }.with_context(|| format!("cannot map {}", path.display()))?;
        SafeTensors::deserialize(&mmap)
            .map_err(|e| anyhow::anyhow!("{} is not a valid safetensors file: {e}", path.display()))?;
        Ok(Self { mmap, path: path.to_path_buf() })
    }

    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.mmap).expect("validated at open")
    }

    pub fn names(&self) -> Vec<String> {
        self.st().names().into_iter().map(|s| s.to_string()).collect()
    }

    pub fn has(&self, name: &str) -> bool {
        self.st().tensor(name).is_ok()
    }

    pub fn get(&self, name: &str) -> Result<W> {
        let st = self.st();
        let t = st.tensor(name).map_err(|_| anyhow::anyhow!("{}: tensor '{name}' not found", self.path.display()))?;
        let b = t.data();
        let data: Vec<f32> = match t.dtype() {
            Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F16 => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            d => bail!("{}: tensor '{name}' has unsupported dtype {d:?}", self.path.display()),
        };
        Ok(W { shape: t.shape().to_vec(), data })
    }

    /// A 2-D weight `[rows, cols]`, checked.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<W> {
        let w = self.get(name)?;
        if w.shape != [rows, cols] {
            bail!("tensor '{name}' has shape {:?}, expected [{rows}, {cols}]", w.shape);
        }
        Ok(w)
    }

    pub fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        let w = self.get(name)?;
        if w.data.len() != n {
            bail!("tensor '{name}' has shape {:?}, expected [{n}]", w.shape);
        }
        Ok(w.data)
    }
}

/// `[rows, cols]` → `[cols, rows]`.
pub fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    const T: usize = 32;
    for r0 in (0..rows).step_by(T) {
        for c0 in (0..cols).step_by(T) {
            for r in r0..(r0 + T).min(rows) {
                for c in c0..(c0 + T).min(cols) {
                    out[c * rows + r] = data[r * cols + c];
                }
            }
        }
    }
    out
}
