//! deposium-engine: tokenize → backend (ONNX Runtime graph or static lookup) → pool → normalize → truncate.
//!
//! Every API goes through [`Model::embed`]. Backends implement the small [`Backend`] trait.

mod calibrate;
pub mod conversion;
pub mod error;
pub mod fidelity;
pub mod model2vec;
pub mod onnx;
mod ops;
pub mod paths;
pub mod registry;
pub mod runtime;
pub mod tokenizer_load;
pub use deposium_convert::st_config;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use error::{BoxError, EngineError, LoadContext, Result};
pub use tokenizers::Tokenizer;

/// What a model is, for listing and validation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    /// Canonical name, e.g. `embeddinggemma` or `potion-base-8M`.
    pub name: String,
    /// Architecture family: `gemma3`, `bert`, `model2vec`, `onnx`.
    pub family: String,
    /// Output dimension before any Matryoshka truncation.
    pub dim: usize,
    /// Longest token sequence the model accepts (special tokens included).
    pub max_tokens: usize,
    /// Named prompts (sentence-transformers `prompts`).
    pub prompts: BTreeMap<String, String>,
    pub default_prompt_name: Option<String>,
    /// `fp32`, `int8`, `int4`, `f16`...
    pub quantization: String,
    /// Bytes on disk of the files the model runs from.
    pub size_bytes: u64,
    pub parameter_count: Option<u64>,
    /// sha256 of the main weights file (hex), Ollama-style digest.
    pub digest: String,
    /// Dimensions a user may truncate to and still get a trained representation.
    pub matryoshka_dims: Vec<usize>,
    pub path: std::path::PathBuf,
}

/// A model backend: turns token ids into one vector per sequence.
pub trait Backend: Send + Sync {
    fn info(&self) -> &ModelInfo;
    /// Token ids the backend will consume for `text` (special tokens included), not yet cut to `max_tokens`.
    fn tokenize(&self, text: &str) -> Result<Vec<u32>>;
    /// Embed already tokenized sequences (each ≤ `max_tokens`). Output vectors have `info().dim` floats, and are
    /// L2-normalised when the model normalises. A sequence's vector must not depend on the rest of the batch.
    fn embed_tokens(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>>;
    /// Cut an over-long token sequence to `max_tokens`, keeping the model's trailing special tokens.
    fn truncate_tokens(&self, ids: &mut Vec<u32>) {
        ids.truncate(self.info().max_tokens);
    }
    /// Sequence-length boundaries a batch must not straddle: sequences of lengths on different sides of a boundary
    /// never share a backend call. Int8 kernels pick different code paths by padded length; bucketing keeps a text's
    /// vector independent of its batch.
    fn batch_buckets(&self) -> &[usize] {
        &[]
    }
    /// The tokenizer behind [`Backend::tokenize`], for token texts and offsets and for decoding ids (TEI `/tokenize`,
    /// `/decode`); `None` when the backend has none.
    fn tokenizer(&self) -> Option<&Tokenizer> {
        None
    }
    /// Whether [`Backend::tokenize`] adds the tokenizer's special tokens (Model2Vec models embed none).
    fn adds_special_tokens(&self) -> bool {
        true
    }
    /// Whether [`Backend::embed_tokens`] already returns unit vectors: [`Model::finish`] then normalises only after
    /// a Matryoshka cut.
    fn normalizes(&self) -> bool {
        false
    }
}

/// Which prompt to prepend to every input.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Prompt {
    /// The model's `default_prompt_name` if it has one, else nothing.
    #[default]
    Default,
    /// No prompt at all.
    None,
    /// A prompt from the model's config by name (`STS`, `query`, `document`...).
    Named(String),
    /// A literal prefix.
    Raw(String),
}

#[derive(Debug, Clone)]
pub struct EmbedRequest {
    pub inputs: Vec<String>,
    pub prompt: Prompt,
    /// Matryoshka truncation, then re-normalisation.
    pub dimensions: Option<usize>,
    /// Cut over-long inputs (true) or refuse them (false).
    pub truncate: bool,
    /// L2-normalise the output (true by default for every API).
    pub normalize: bool,
}

impl EmbedRequest {
    pub fn new(inputs: Vec<String>) -> Self {
        Self { inputs, prompt: Prompt::Default, dimensions: None, truncate: true, normalize: true }
    }
}

#[derive(Debug, Clone, Default)]
pub struct EmbedResponse {
    pub embeddings: Vec<Vec<f32>>,
    /// Tokens each input used (prompt and special tokens included, after truncation).
    pub token_counts: Vec<usize>,
}

/// A tokenized input, ready to batch.
#[derive(Debug, Clone)]
pub struct Tokenized {
    pub ids: Vec<u32>,
}

/// A loaded model: a backend plus the request logic every API shares.
pub struct Model {
    backend: Arc<dyn Backend>,
    /// Largest number of sequences per backend call (length-sorted sub-batches).
    pub max_batch: usize,
    /// Largest number of padded tokens per backend call.
    pub max_batch_tokens: usize,
}

impl Model {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend, max_batch: 32, max_batch_tokens: 8192 }
    }

    pub fn info(&self) -> &ModelInfo {
        self.backend.info()
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The text prefix a prompt choice resolves to.
    pub fn resolve_prompt(&self, prompt: &Prompt) -> Result<String> {
        let info = self.info();
        Ok(match prompt {
            Prompt::None => String::new(),
            Prompt::Raw(p) => p.clone(),
            Prompt::Named(name) => match info.prompts.get(name) {
                Some(p) => p.clone(),
                None => {
                    let known: Vec<&str> = info.prompts.keys().map(|s| s.as_str()).collect();
                    return Err(EngineError::InvalidInput(if known.is_empty() {
                        format!("model '{}' defines no prompts (asked for prompt_name '{name}')", info.name)
                    } else {
                        format!("unknown prompt_name '{name}' for model '{}'; known: {}", info.name, known.join(", "))
                    }));
                }
            },
            Prompt::Default => match &info.default_prompt_name {
                Some(n) => info.prompts.get(n).cloned().unwrap_or_default(),
                None => String::new(),
            },
        })
    }

    pub fn check_dimensions(&self, dimensions: Option<usize>) -> Result<()> {
        if let Some(d) = dimensions {
            let dim = self.info().dim;
            if d == 0 || d > dim {
                return Err(EngineError::InvalidInput(format!(
                    "dimensions must be between 1 and {dim} for model '{}', got {d}",
                    self.info().name
                )));
            }
        }
        Ok(())
    }

    /// Tokenize one input with its prompt, applying the truncation policy.
    pub fn tokenize_one(&self, prefix: &str, text: &str, truncate: bool) -> Result<Tokenized> {
        let full;
        let t = if prefix.is_empty() {
            text
        } else {
            full = format!("{prefix}{text}");
            &full
        };
        let mut ids = self.backend.tokenize(t)?;
        let max = self.info().max_tokens;
        if ids.len() > max {
            if truncate {
                self.backend.truncate_tokens(&mut ids);
            } else {
                return Err(EngineError::TooLong { tokens: ids.len(), max });
            }
        }
        Ok(Tokenized { ids })
    }

    /// Tokenize every input of a request.
    pub fn tokenize_request(&self, req: &EmbedRequest) -> Result<Vec<Tokenized>> {
        let prefix = self.resolve_prompt(&req.prompt)?;
        req.inputs.iter().map(|t| self.tokenize_one(&prefix, t, req.truncate)).collect()
    }

    /// Run the backend on tokenized inputs, in length-sorted sub-batches (see [`sub_batches`]). Output order
    /// follows input order.
    pub fn embed_tokenized(&self, items: &[Tokenized]) -> Result<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(items[i].ids.len()));
        let lengths: Vec<usize> = order.iter().map(|&i| items[i].ids.len().max(1)).collect();
        let mut out: Vec<Option<Vec<f32>>> = vec![None; items.len()];
        for range in sub_batches(&lengths, self.max_batch, self.max_batch_tokens, self.backend.batch_buckets()) {
            let batch: Vec<Vec<u32>> = order[range.clone()].iter().map(|&i| items[i].ids.clone()).collect();
            let vecs = self.backend.embed_tokens(&batch)?;
            if vecs.len() != batch.len() {
                return Err(EngineError::Internal(format!(
                    "backend returned {} vectors for {} inputs",
                    vecs.len(),
                    batch.len()
                )));
            }
            for (&i, v) in order[range].iter().zip(vecs) {
                out[i] = Some(v);
            }
        }
        Ok(out.into_iter().map(|v| v.expect("every index filled")).collect())
    }

    /// Matryoshka truncation + normalisation, and the NaN/Inf guard.
    pub fn finish(&self, mut v: Vec<f32>, dimensions: Option<usize>, normalize: bool) -> Result<Vec<f32>> {
        if v.iter().any(|x| !x.is_finite()) {
            tracing::error!(model = %self.info().name, "non-finite value in embedding output");
            return Err(EngineError::NonFinite(self.info().name.clone()));
        }
        if let Some(d) = dimensions {
            v.truncate(d);
        }
        if normalize && (dimensions.is_some() || !self.backend.normalizes()) {
            l2_normalize(&mut v);
        }
        Ok(v)
    }

    /// The one embed path every API uses.
    pub fn embed(&self, req: &EmbedRequest) -> Result<EmbedResponse> {
        self.check_dimensions(req.dimensions)?;
        let toks = self.tokenize_request(req)?;
        let vecs = self.embed_tokenized(&toks)?;
        let embeddings =
            vecs.into_iter().map(|v| self.finish(v, req.dimensions, req.normalize)).collect::<Result<Vec<_>>>()?;
        Ok(EmbedResponse { embeddings, token_counts: toks.iter().map(|t| t.ids.len()).collect() })
    }
}

pub fn l2_normalize(v: &mut [f32]) {
    let n: f64 = v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt();
    if n > 0.0 {
        let inv = (1.0 / n) as f32;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

/// Cosine similarity (0 when either vector is zero), computed in f64.
pub fn cosine_f64(a: &[f32], b: &[f32]) -> f64 {
    let (mut d, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        d += x as f64 * y as f64;
        na += x as f64 * x as f64;
        nb += y as f64 * y as f64;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    d / (na.sqrt() * nb.sqrt())
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    cosine_f64(a, b) as f32
}

/// Cut lengths sorted longest first into sub-batches: at most `max_batch` inputs and `max_batch_tokens` padded
/// tokens (inputs × the first, longest one), inputs on one side of each bucket edge, and at most an eighth of a
/// sub-batch's padded length (plus 16 tokens) as padding for any input, so that documents of mixed lengths are not
/// all padded to the longest (docs/long-inputs.md). Vectors do not depend on the cut: each input is computed as if
/// alone.
pub fn sub_batches(
    lengths: &[usize],
    max_batch: usize,
    max_batch_tokens: usize,
    buckets: &[usize],
) -> Vec<std::ops::Range<usize>> {
    let bucket_of = |len: usize| buckets.iter().filter(|&&b| len > b).count();
    let mut ranges = Vec::new();
    let mut start = 0;
    while start < lengths.len() {
        let longest = lengths[start];
        let mut end = start + 1;
        while end < lengths.len()
            && end - start < max_batch
            && (end - start + 1) * longest <= max_batch_tokens
            && bucket_of(lengths[end]) == bucket_of(longest)
            && longest - lengths[end] <= longest / 8 + 16
        {
            end += 1;
        }
        ranges.push(start..end);
        start = end;
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::sub_batches;

    #[test]
    fn short_texts_share_one_sub_batch() {
        assert_eq!(sub_batches(&[20, 16, 12, 5, 4], 64, 8192, &[64]), vec![0..5]);
    }

    #[test]
    fn documents_of_mixed_lengths_are_cut_by_length() {
        let lengths = [1086, 900, 820, 500, 420, 390, 310, 300, 120, 90];
        let ranges = sub_batches(&lengths, 64, 1 << 20, &[64]);
        assert_eq!(ranges, vec![0..1, 1..3, 3..4, 4..6, 6..8, 8..10]);
        for r in ranges {
            let padded = r.len() * lengths[r.start];
            let real: usize = lengths[r].iter().sum();
            assert!(padded * 8 <= real * 9 + 128, "padding over an eighth");
        }
    }

    #[test]
    fn limits_and_bucket_edges_cut_too() {
        assert_eq!(sub_batches(&[10; 5], 2, 8192, &[]), vec![0..2, 2..4, 4..5]);
        assert_eq!(sub_batches(&[100; 5], 64, 250, &[]), vec![0..2, 2..4, 4..5]);
        assert_eq!(sub_batches(&[70, 66, 64, 60], 64, 8192, &[64]), vec![0..2, 2..4]);
        assert!(sub_batches(&[], 64, 8192, &[64]).is_empty());
    }
}
