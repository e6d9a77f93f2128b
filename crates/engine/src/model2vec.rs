//! Model2Vec static models: a token → vector lookup table, mean-pooled.
//!
//! A Model2Vec directory holds `config.json`, `tokenizer.json` and `model.safetensors` with an `embeddings`
//! table (`[rows, dim]`, f32, f16, bf16 or int8) and, for vocabulary-quantized models, a `mapping` (token id →
//! table row) and per-token `weights`.
//!
//! Encoding follows upstream (Python) `model2vec`:
//! 1. tokenize **without** special tokens;
//! 2. drop the tokenizer model's unknown token (`[UNK]`) for WordPiece / WordLevel / BPE-with-unk models. As in
//!    upstream, a Unigram model's `unk_id` is *not* dropped (the `tokenizers` Python binding exposes no
//!    `unk_token` for Unigram); for `tokenlearn-static` that id is 3, the "." piece, and the reference vectors
//!    include it;
//! 3. cut to 512 tokens ([`ModelInfo::max_tokens`]; [`Backend::tokenize`] returns the uncut ids and
//!    [`crate::Model`] cuts or refuses them);
//! 4. vector = mean over tokens of `embeddings[mapping[id]] * weights[id]` (`mapping`/`weights` only when present);
//! 5. L2-normalise when the config says `normalize`.
//!
//! # Why not the `model2vec-rs` crate
//! `model2vec-rs` 0.4.0 was evaluated and not used:
//! - it has no token-id API (its tokenizer is private, it encodes strings end to end), so it cannot implement
//!   [`Backend::tokenize`] / [`Backend::embed_tokens`], report token counts, or refuse over-long inputs
//!   (`truncate=false`);
//! - it removes a Unigram model's `unk_id` (id 3, ".", in `tokenlearn-static`), which the reference vectors keep;
//! - it depends on `tokenizers` 0.21 and `safetensors` 0.5, a second copy of each next to the workspace's 0.22 /
//!   0.6;
//! - it expands f16 tables to f32.
//!
//! So this module is its own loader on the workspace's `safetensors` and `tokenizers` crates. The embedding
//! table stays in its stored element type (an int8 table takes a quarter of the f32 memory); rows are widened
//! to f32 while summing. For the BERT pipeline (BertNormalizer + BertPreTokenizer + WordPiece, every POTION
//! model) ASCII texts go through a small ids-only WordPiece ([`FastWordPiece`]) that gives the same ids as the
//! `tokenizers` crate without building an `Encoding` (offsets, masks...); every other text, and every other
//! pipeline, goes through `tokenizers`' `encode_fast`.
//!
//! # Empty input
//! A text with no tokens (`""`, only whitespace, only unknown words) embeds to a vector of `dim` zeros, as
//! upstream `model2vec` does (and as `small_models_reference.json` records for `""`); normalisation leaves it
//! at zero.
use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::Tokenizer;

use crate::{Backend, EngineError, LoadContext, ModelInfo, Result};

/// Longest token sequence used per text, as upstream `model2vec`'s `encode(max_length=512)`.
pub const MAX_TOKENS: usize = 512;

/// Whether `dir` holds a Model2Vec model, judged from its `config.json`: `model_type` is `model2vec`, it has a
/// `vocabulary_quantization` key, or its `architectures` name `StaticModel`. The files themselves are checked
/// by [`StaticModel::load`], so a broken Model2Vec directory gets a Model2Vec error message.
pub fn is_model2vec_dir(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("config.json")) else {
        return false;
    };
    let Ok(serde_json::Value::Object(cfg)) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    cfg.get("model_type").and_then(|v| v.as_str()).is_some_and(|t| t.eq_ignore_ascii_case("model2vec"))
        || cfg.contains_key("vocabulary_quantization")
        || cfg
            .get("architectures")
            .and_then(|v| v.as_array())
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some("StaticModel")))
}

/// The embedding table, kept in its stored element type, row-major `[rows, dim]`.
enum Table {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I8(Vec<i8>),
}

/// A loaded Model2Vec model. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct StaticModel {
    info: ModelInfo,
    tokenizer: Tokenizer,
    /// Id removed from every tokenization (the WordPiece/WordLevel/BPE unknown token), as upstream.
    unk_id: Option<u32>,
    fast: Option<FastWordPiece>,
    table: Table,
    dim: usize,
    /// Token id → table row (vocabulary quantization).
    mapping: Option<Vec<u32>>,
    /// Per-token weight, indexed by token id.
    weights: Option<Vec<f32>>,
    /// Number of valid token ids (`mapping.len()`, else table rows).
    n_ids: usize,
    normalize: bool,
}

/// What failed, in the model at `dir`.
fn at(dir: &Path, what: impl std::fmt::Display) -> String {
    format!("Model2Vec model at {}: {what}", dir.display())
}

fn load_err(dir: &Path, msg: impl std::fmt::Display) -> EngineError {
    EngineError::load(at(dir, msg))
}

impl StaticModel {
    /// Load a Model2Vec model from `dir` (`config.json`, `tokenizer.json`, `model.safetensors`), served as `name`.
    ///
    /// `normalize` comes from `config.json`; when the config omits it the model normalises (`true`), like the
    /// Rust crate `model2vec-rs` (upstream Python defaults to `false`, but every published Model2Vec config sets
    /// it, and every API of this server L2-normalises by default anyway).
    pub fn load(dir: &Path, name: &str) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let cfg_text = std::fs::read_to_string(&cfg_path).context_load(|| at(dir, "reading config.json"))?;
        let cfg: serde_json::Value =
            serde_json::from_str(&cfg_text).context_load(|| at(dir, "config.json is not valid JSON"))?;
        let normalize = match cfg.get("normalize") {
            None | Some(serde_json::Value::Null) => true,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(other) => {
                return Err(load_err(dir, format!("config.json: `normalize` must be a boolean, got {other}")))
            }
        };

        // Tokenizer.
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(load_err(dir, "tokenizer.json is missing"));
        }
        let mut tokenizer = Tokenizer::from_file(&tok_path).context_load(|| at(dir, "cannot load tokenizer.json"))?;
        tokenizer.with_truncation(None).context_load(|| at(dir, "tokenizer.json"))?;
        tokenizer.with_padding(None);
        let unk_id = match tokenizer.get_model() {
            ModelWrapper::WordPiece(m) => tokenizer.token_to_id(&m.unk_token),
            ModelWrapper::WordLevel(m) => tokenizer.token_to_id(&m.unk_token),
            ModelWrapper::BPE(m) => m.unk_token.as_deref().and_then(|t| tokenizer.token_to_id(t)),
            ModelWrapper::Unigram(_) => None,
        };
        let fast = FastWordPiece::from_tokenizer(&tokenizer);

        // Weights.
        let st_path = dir.join("model.safetensors");
        let bytes = std::fs::read(&st_path).context_load(|| at(dir, "reading model.safetensors"))?;
        let digest = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        let st = SafeTensors::deserialize(&bytes)
            .context_load(|| at(dir, "model.safetensors is not a valid safetensors file"))?;
        let emb = ["embeddings", "embedding.weight", "0"].iter().find_map(|n| st.tensor(n).ok()).ok_or_else(|| {
            let names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
            load_err(dir, format!("model.safetensors has no `embeddings` tensor (tensors: {})", names.join(", ")))
        })?;
        let &[rows, dim] = emb.shape() else {
            return Err(load_err(dir, format!("`embeddings` must be 2-D, got shape {:?}", emb.shape())));
        };
        if rows == 0 || dim == 0 {
            return Err(load_err(dir, format!("`embeddings` is empty (shape [{rows}, {dim}])")));
        }
        let raw = emb.data();
        let (table, quantization) = match emb.dtype() {
            Dtype::F32 => (Table::F32(decode(raw, f32::from_le_bytes)), "fp32"),
            Dtype::F64 => (Table::F32(decode(raw, |b: [u8; 8]| f64::from_le_bytes(b) as f32)), "fp32"),
            Dtype::F16 => (Table::F16(decode(raw, f16::from_le_bytes)), "f16"),
            Dtype::BF16 => (Table::BF16(decode(raw, bf16::from_le_bytes)), "bf16"),
            Dtype::I8 => (Table::I8(raw.iter().map(|&b| b as i8).collect()), "int8"),
            other => return Err(load_err(dir, format!("unsupported `embeddings` dtype {other:?}"))),
        };

        let mapping = match st.tensor("mapping") {
            Err(_) => None,
            Ok(t) => {
                let vals: Vec<i64> = match t.dtype() {
                    Dtype::I64 => decode(t.data(), i64::from_le_bytes),
                    Dtype::I32 => decode(t.data(), |b: [u8; 4]| i32::from_le_bytes(b) as i64),
                    Dtype::U32 => decode(t.data(), |b: [u8; 4]| u32::from_le_bytes(b) as i64),
                    other => return Err(load_err(dir, format!("unsupported `mapping` dtype {other:?}"))),
                };
                let mut out = Vec::with_capacity(vals.len());
                for (i, v) in vals.into_iter().enumerate() {
                    if v < 0 || v as usize >= rows {
                        return Err(load_err(dir, format!("`mapping[{i}]` = {v} is outside the {rows}-row table")));
                    }
                    out.push(v as u32);
                }
                Some(out)
            }
        };
        let n_ids = mapping.as_ref().map_or(rows, |m| m.len());
        let weights = match st.tensor("weights") {
            Err(_) => None,
            Ok(t) => {
                let w: Vec<f32> = match t.dtype() {
                    Dtype::F32 => decode(t.data(), f32::from_le_bytes),
                    Dtype::F64 => decode(t.data(), |b: [u8; 8]| f64::from_le_bytes(b) as f32),
                    Dtype::F16 => decode(t.data(), |b| f16::from_le_bytes(b).to_f32()),
                    other => return Err(load_err(dir, format!("unsupported `weights` dtype {other:?}"))),
                };
                if w.len() != n_ids {
                    return Err(load_err(dir, format!("`weights` has {} entries for {n_ids} token ids", w.len())));
                }
                Some(w)
            }
        };
        let vocab = tokenizer.get_vocab_size(true);
        if vocab > n_ids {
            return Err(load_err(
                dir,
                format!("tokenizer.json has {vocab} tokens but the embeddings cover only {n_ids} token ids"),
            ));
        }
        drop(st);
        drop(bytes);

        let size_bytes =
            [&cfg_path, &tok_path, &st_path].iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
        let info = ModelInfo {
            name: name.to_string(),
            family: "model2vec".into(),
            dim,
            max_tokens: MAX_TOKENS,
            prompts: Default::default(),
            default_prompt_name: None,
            quantization: quantization.into(),
            size_bytes,
            parameter_count: Some((rows * dim) as u64),
            digest,
            matryoshka_dims: Vec::new(),
            path: dir.to_path_buf(),
        };
        tracing::debug!(
            model = name,
            rows,
            dim,
            quantization,
            fast_tokenizer = fast.is_some(),
            "loaded Model2Vec model"
        );
        Ok(Self { info, tokenizer, unk_id, fast, table, dim, mapping, weights, n_ids, normalize })
    }

    /// Whether the model L2-normalises its vectors (`normalize` in `config.json`, default `true`).
    pub fn normalizes(&self) -> bool {
        self.normalize
    }

    /// Whether ASCII texts take the ids-only WordPiece path instead of the `tokenizers` crate.
    pub fn has_fast_tokenizer(&self) -> bool {
        self.fast.is_some()
    }

    /// Token ids through the `tokenizers` crate only (no fast path), with the unknown token removed: the
    /// reference the fast path must agree with.
    pub fn tokenize_reference(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode_fast(text, false)
            .map_err(|e| EngineError::Internal(format!("tokenizer failed on input: {e}")))?;
        Ok(self.without_unk(enc.get_ids()).into_owned())
    }

    /// `ids` without the unknown token, which this model never embeds (borrowed when there is none to drop).
    fn without_unk<'a>(&self, ids: &'a [u32]) -> Cow<'a, [u32]> {
        match self.unk_id {
            Some(unk) if ids.contains(&unk) => Cow::Owned(ids.iter().copied().filter(|&i| i != unk).collect()),
            _ => Cow::Borrowed(ids),
        }
    }

    /// Mean-pool (and normalise) one token sequence into `out` (`dim` floats, overwritten).
    fn pool_into(&self, ids: &[u32], out: &mut [f32]) -> Result<()> {
        out.fill(0.0);
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.n_ids) {
            return Err(EngineError::InvalidInput(format!(
                "token id {bad} is outside the vocabulary of model '{}' ({} ids)",
                self.info.name, self.n_ids
            )));
        }
        match &self.table {
            Table::F32(t) => self.sum_rows(t, ids, out),
            Table::F16(t) => self.sum_rows(t, ids, out),
            Table::BF16(t) => self.sum_rows(t, ids, out),
            Table::I8(t) => self.sum_rows(t, ids, out),
        }
        if ids.is_empty() {
            return Ok(());
        }
        let inv_n = 1.0 / ids.len() as f32;
        if self.normalize {
            // The mean's scale cancels out: normalise the sum directly.
            let norm = out.iter().map(|&x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                let inv = 1.0 / norm;
                out.iter_mut().for_each(|x| *x *= inv);
            }
        } else {
            out.iter_mut().for_each(|x| *x *= inv_n);
        }
        Ok(())
    }

    /// `out += Σ table[row(id)] * weight(id)`; ids are already bounds-checked.
    #[inline]
    fn sum_rows<T: Elem>(&self, table: &[T], ids: &[u32], out: &mut [f32]) {
        match (&self.mapping, &self.weights) {
            (None, None) => self.sum_rows_with(table, ids, out, |id| (id, 1.0)),
            (None, Some(w)) => self.sum_rows_with(table, ids, out, |id| (id, w[id])),
            (Some(m), None) => self.sum_rows_with(table, ids, out, |id| (m[id] as usize, 1.0)),
            (Some(m), Some(w)) => self.sum_rows_with(table, ids, out, |id| (m[id] as usize, w[id])),
        }
    }

    /// Adds rows four at a time (one pass over `out` per four rows, four independent row streams in flight),
    /// then the rest one by one. The order of additions depends only on the sequence itself.
    #[inline(always)]
    fn sum_rows_with<T: Elem>(&self, table: &[T], ids: &[u32], out: &mut [f32], at: impl Fn(usize) -> (usize, f32)) {
        let dim = self.dim;
        let row = |id: u32| {
            let (r, w) = at(id as usize);
            (&table[r * dim..(r + 1) * dim], w)
        };
        let mut quads = ids.chunks_exact(4);
        for q in &mut quads {
            let (r0, w0) = row(q[0]);
            let (r1, w1) = row(q[1]);
            let (r2, w2) = row(q[2]);
            let (r3, w3) = row(q[3]);
            T::add4(out, [r0, r1, r2, r3], [w0, w1, w2, w3]);
        }
        for &id in quads.remainder() {
            let (r, w) = row(id);
            T::add_scaled(out, r, w);
        }
    }
}

impl Backend for StaticModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        if let Some(fast) = &self.fast {
            let mut ids = Vec::with_capacity(text.len() / 4 + 4);
            if fast.encode(text, &mut ids) {
                return Ok(ids);
            }
        }
        self.tokenize_reference(text)
    }

    fn tokenizer(&self) -> Option<&Tokenizer> {
        Some(&self.tokenizer)
    }

    fn adds_special_tokens(&self) -> bool {
        false
    }

    fn normalizes(&self) -> bool {
        self.normalize
    }

    fn embed_tokens(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        batch
            .iter()
            .map(|ids| {
                let mut v = vec![0f32; self.dim];
                // Token-id input may hold the unknown token, which text input never embeds: drop it here too.
                self.pool_into(&self.without_unk(ids), &mut v)?;
                Ok(v)
            })
            .collect()
    }
}

/// Decode a little-endian tensor payload element by element.
fn decode<const N: usize, T>(raw: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N).map(|c| f(c.try_into().expect("chunk of N bytes"))).collect()
}

/// A table element type, widened to f32 while summing rows.
trait Elem: Copy {
    /// `acc += row * w`
    fn add_scaled(acc: &mut [f32], row: &[Self], w: f32);
    /// `acc += Σ rows[k] * w[k]`
    fn add4(acc: &mut [f32], rows: [&[Self]; 4], w: [f32; 4]) {
        for (r, w) in rows.into_iter().zip(w) {
            Self::add_scaled(acc, r, w);
        }
    }
}

macro_rules! widening_elem {
    ($t:ty) => {
        impl Elem for $t {
            #[inline(always)]
            fn add_scaled(acc: &mut [f32], row: &[$t], w: f32) {
                acc.iter_mut().zip(row).for_each(|(a, &r)| *a += r as f32 * w);
            }
            #[inline(always)]
            fn add4(acc: &mut [f32], [r0, r1, r2, r3]: [&[$t]; 4], [w0, w1, w2, w3]: [f32; 4]) {
                let n = acc.len();
                let (r0, r1, r2, r3) = (&r0[..n], &r1[..n], &r2[..n], &r3[..n]);
                for j in 0..n {
                    acc[j] += (r0[j] as f32 * w0 + r1[j] as f32 * w1) + (r2[j] as f32 * w2 + r3[j] as f32 * w3);
                }
            }
        }
    };
}
widening_elem!(f32);
widening_elem!(i8);

/// Half-precision rows are widened 64 at a time with `half`'s (SIMD where available) slice conversion.
macro_rules! half_elem {
    ($t:ty) => {
        impl Elem for $t {
            #[inline]
            fn add_scaled(acc: &mut [f32], row: &[$t], w: f32) {
                let mut buf = [0f32; 64];
                for (a, r) in acc.chunks_mut(64).zip(row.chunks(64)) {
                    let b = &mut buf[..r.len()];
                    r.convert_to_f32_slice(b);
                    a.iter_mut().zip(b.iter()).for_each(|(a, &x)| *a += x * w);
                }
            }
        }
    };
}
half_elem!(f16);
half_elem!(bf16);

// ---------------------------------------------------------------------------------------------------------------
// Ids-only WordPiece for ASCII text.

/// FxHash-style hasher for short byte keys (vocabulary pieces); `finish` rotates so the low bits, which pick the
/// bucket, depend on every input byte.
#[derive(Default, Clone, Copy)]
struct PieceHasher(u64);

impl PieceHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;
    #[inline(always)]
    fn add(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(Self::K);
    }
}

impl Hasher for PieceHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b));
        }
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

type PieceMap = HashMap<Box<[u8]>, u32, BuildHasherDefault<PieceHasher>>;

/// Byte classes of the fast path's 128-entry ASCII table.
const WORD: u8 = 0;
const SPACE: u8 = 1;
const PUNCT: u8 = 2;
/// Removed by `clean_text` (control characters).
const SKIP: u8 = 3;
const KIND: u8 = 3;
/// The byte starts some added token: the text must be checked for added tokens.
const ADDED: u8 = 4;
/// Word buffer size; pipelines with a larger `max_input_chars_per_word` do not get the fast path.
const WORD_BUF: usize = 256;

/// An ids-only reimplementation of `BertNormalizer` + `BertPreTokenizer` + `WordPiece` for **ASCII** text, giving
/// exactly the ids of `tokenizers`' `encode(text, add_special_tokens = false)` minus the unknown token. It skips
/// what the static path does not need (offsets, alignment maps, `Encoding`), which makes it several times faster.
///
/// On ASCII text the normaliser reduces to: drop control characters (`clean_text`), map `\t \n \r` to spaces,
/// ASCII-lowercase (`lowercase`); Chinese-character splitting and accent stripping have nothing to act on. The
/// pre-tokenizer splits on whitespace and isolates each ASCII punctuation character. Texts that are not ASCII,
/// or that contain the literal text of an added token (`[CLS]`, `[MASK]`...), are left to the crate
/// ([`FastWordPiece::encode`] returns `false`). Pipelines with added tokens matched after normalisation are not
/// handled at all.
struct FastWordPiece {
    class: [u8; 128],
    lower: [u8; 128],
    /// Every vocabulary entry, for the first piece of a word.
    initial: PieceMap,
    /// Entries starting with the continuing-subword prefix (`##`), prefix removed.
    cont: PieceMap,
    max_initial: usize,
    max_cont: usize,
    max_word: usize,
    unk_id: u32,
    /// Contents of the added tokens (matched on the raw text).
    added: Vec<Box<[u8]>>,
}

impl FastWordPiece {
    fn from_tokenizer(tok: &Tokenizer) -> Option<Self> {
        use tokenizers::Model as _;
        let ModelWrapper::WordPiece(wp) = tok.get_model() else { return None };
        let Some(NormalizerWrapper::BertNormalizer(norm)) = tok.get_normalizer() else { return None };
        if !matches!(tok.get_pre_tokenizer(), Some(PreTokenizerWrapper::BertPreTokenizer(_))) {
            return None;
        }
        if wp.max_input_chars_per_word >= WORD_BUF {
            return None;
        }
        let vocab = wp.get_vocab();
        let unk_id = *vocab.get(&wp.unk_token)?;
        let mut added = Vec::new();
        for t in tok.get_added_tokens_decoder().into_values() {
            if t.normalized || t.content.is_empty() {
                return None;
            }
            if t.content.is_ascii() {
                added.push(t.content.into_bytes().into_boxed_slice());
            }
        }

        let prefix = wp.continuing_subword_prefix.as_bytes();
        let mut initial = PieceMap::with_capacity_and_hasher(vocab.len(), Default::default());
        let mut cont = PieceMap::default();
        let (mut max_initial, mut max_cont) = (0, 0);
        for (token, &id) in &vocab {
            let b = token.as_bytes();
            max_initial = max_initial.max(b.len());
            initial.insert(b.into(), id);
            if let Some(rest) = b.strip_prefix(prefix) {
                max_cont = max_cont.max(rest.len());
                cont.insert(rest.into(), id);
            }
        }

        let mut class = [WORD; 128];
        let mut lower = [0u8; 128];
        for b in 0..128u8 {
            lower[b as usize] = if norm.lowercase { b.to_ascii_lowercase() } else { b };
            let c = b as char;
            class[b as usize] = if norm.clean_text {
                match b {
                    b'\t' | b'\n' | b'\r' | b' ' => SPACE,
                    0..=0x1f | 0x7f => SKIP,
                    _ if c.is_ascii_punctuation() => PUNCT,
                    _ => WORD,
                }
            } else if c.is_whitespace() {
                SPACE
            } else if c.is_ascii_punctuation() {
                PUNCT
            } else {
                WORD
            };
        }
        for a in &added {
            class[a[0] as usize] |= ADDED;
        }
        Some(Self {
            class,
            lower,
            initial,
            cont,
            max_initial,
            max_cont,
            max_word: wp.max_input_chars_per_word,
            unk_id,
            added,
        })
    }

    /// Append the ids of `text` to `out` (unknown words dropped). Returns `false`, leaving `out` in an
    /// unspecified state, when the text must go through the `tokenizers` crate instead.
    fn encode(&self, text: &str, out: &mut Vec<u32>) -> bool {
        let bytes = text.as_bytes();
        if !bytes.is_ascii() {
            return false;
        }
        let mut word = [0u8; WORD_BUF];
        let mut len = 0usize;
        for (i, &b) in bytes.iter().enumerate() {
            let c = self.class[b as usize];
            if c & ADDED != 0 && self.added.iter().any(|a| bytes[i..].starts_with(a)) {
                return false;
            }
            match c & KIND {
                WORD => {
                    if len < WORD_BUF {
                        word[len] = self.lower[b as usize];
                    }
                    len += 1;
                }
                SPACE => {
                    self.word(&word, len, out);
                    len = 0;
                }
                PUNCT => {
                    self.word(&word, len, out);
                    len = 0;
                    self.pieces(&[b], out);
                }
                _ => {}
            }
        }
        self.word(&word, len, out);
        true
    }

    #[inline]
    fn word(&self, buf: &[u8; WORD_BUF], len: usize, out: &mut Vec<u32>) {
        // Longer than `max_input_chars_per_word`: a single [UNK], which is dropped.
        if len > 0 && len <= self.max_word {
            self.pieces(&buf[..len], out);
        }
    }

    /// Greedy longest-match-first WordPiece of one word; a word with an unmatchable rest is [UNK] (dropped).
    #[inline]
    fn pieces(&self, w: &[u8], out: &mut Vec<u32>) {
        let mark = out.len();
        let mut start = 0;
        while start < w.len() {
            let (map, max) = if start == 0 { (&self.initial, self.max_initial) } else { (&self.cont, self.max_cont) };
            let mut end = w.len().min(start + max);
            loop {
                if end == start {
                    out.truncate(mark);
                    return;
                }
                if let Some(&id) = map.get(&w[start..end]) {
                    if id != self.unk_id {
                        out.push(id);
                    }
                    break;
                }
                end -= 1;
            }
            start = end;
        }
    }
}
