//! On-disk embedding cache, one append-only file per model and weights digest.
//!
//! Layout: `DPEMBC01`, u32 LE header length, JSON header `{model, digest}`, then records:
//! 16-byte key, u32 LE dim, dim f32 LE. The key is the first 16 bytes of
//! sha256(model NUL digest NUL prompt NUL text). A truncated last record (interrupted run) is dropped.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"DPEMBC01";

pub type Key = [u8; 16];

#[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
struct Header {
    model: String,
    digest: String,
}

pub struct EmbeddingCache {
    header: Header,
    /// None when caching is off.
    path: Option<PathBuf>,
    map: HashMap<Key, Vec<f32>>,
}

impl EmbeddingCache {
    /// A cache that stores nothing.
    pub fn disabled(model: &str, digest: &str) -> Self {
        Self { header: Header { model: model.into(), digest: digest.into() }, path: None, map: HashMap::new() }
    }

    /// Open (or start) the cache file for `model`/`digest` in `dir`.
    pub fn open(dir: &Path, model: &str, digest: &str) -> Result<Self> {
        let short: String = digest.chars().take(16).collect();
        let path = dir.join(format!("{}-{short}.bin", sanitize(model)));
        let mut cache = Self::disabled(model, digest);
        cache.path = Some(path.clone());
        if let Ok(bytes) = std::fs::read(&path) {
            match cache.parse(&bytes) {
                Some(valid_len) if valid_len < bytes.len() => {
                    tracing::warn!(path = %path.display(), "dropping a truncated record at the end of the embedding cache");
                    OpenOptions::new().write(true).open(&path)?.set_len(valid_len as u64)?;
                }
                Some(_) => {}
                None => {
                    tracing::warn!(path = %path.display(), "embedding cache is for another model or corrupt; starting afresh");
                    cache.map.clear();
                    std::fs::remove_file(&path)?;
                }
            }
        }
        Ok(cache)
    }

    /// Read records into the map; returns the length of the valid prefix, None if the header doesn't match.
    fn parse(&mut self, bytes: &[u8]) -> Option<usize> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let hlen = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let header: Header = serde_json::from_slice(rest.get(4..4 + hlen)?).ok()?;
        if header != self.header {
            return None;
        }
        let mut pos = MAGIC.len() + 4 + hlen;
        while let Some(head) = bytes.get(pos..pos + 20) {
            let key: Key = head[..16].try_into().unwrap();
            let dim = u32::from_le_bytes(head[16..20].try_into().unwrap()) as usize;
            let Some(body) = bytes.get(pos + 20..pos + 20 + 4 * dim) else { break };
            let v = body.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            self.map.insert(key, v);
            pos += 20 + 4 * dim;
        }
        Some(pos)
    }

    pub fn key(&self, prompt: &str, text: &str) -> Key {
        let mut h = Sha256::new();
        for part in [self.header.model.as_str(), self.header.digest.as_str(), prompt, text] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        h.finalize()[..16].try_into().unwrap()
    }

    pub fn get(&self, key: &Key) -> Option<&Vec<f32>> {
        self.map.get(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Add entries, appending them to the file in one write.
    pub fn insert(&mut self, entries: Vec<(Key, Vec<f32>)>) -> Result<()> {
        if let Some(path) = &self.path {
            let mut buf = Vec::new();
            let new_file = !path.exists();
            if new_file {
                let header = serde_json::to_vec(&self.header)?;
                buf.extend_from_slice(MAGIC);
                buf.extend_from_slice(&(header.len() as u32).to_le_bytes());
                buf.extend_from_slice(&header);
            }
            for (k, v) in &entries {
                buf.extend_from_slice(k);
                buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
                v.iter().for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
            }
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let mut f: File = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            f.write_all(&buf).with_context(|| format!("writing {}", path.display()))?;
        }
        self.map.extend(entries);
        Ok(())
    }
}

/// A model name as a file or directory name (`embeddinggemma:fp32` → `embeddinggemma-fp32`).
pub fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncated_tail() {
        let dir = std::env::temp_dir().join(format!("deposium-eval-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut c = EmbeddingCache::open(&dir, "m:fp32", "abcdef").unwrap();
        let (k1, k2) = (c.key("p: ", "hello"), c.key("", "hello"));
        assert_ne!(k1, k2, "the prompt is part of the key");
        c.insert(vec![(k1, vec![1.0, 2.0]), (k2, vec![3.0, -4.5])]).unwrap();
        let path = c.path().unwrap().to_path_buf();
        assert!(path.ends_with("m-fp32-abcdef.bin"));

        let c = EmbeddingCache::open(&dir, "m:fp32", "abcdef").unwrap();
        assert_eq!(c.get(&k1), Some(&vec![1.0, 2.0]));
        assert_eq!(c.get(&k2), Some(&vec![3.0, -4.5]));

        // Cut the last record in half: it is dropped, the first survives.
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 3).unwrap();
        let mut c = EmbeddingCache::open(&dir, "m:fp32", "abcdef").unwrap();
        assert_eq!(c.len(), 1);
        c.insert(vec![(k2, vec![5.0])]).unwrap();
        let c = EmbeddingCache::open(&dir, "m:fp32", "abcdef").unwrap();
        assert_eq!(c.get(&k2), Some(&vec![5.0]));

        // Another digest does not see these entries.
        let other = EmbeddingCache::open(&dir, "m:fp32", "abcdef99").unwrap();
        assert!(other.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
