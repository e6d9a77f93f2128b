//! Loading a tokenizer.json with less memory and time than `Tokenizer::from_bytes`.
//!
//! The tokenizers crate deserializes the `model` section through serde's untagged/flatten machinery: the whole
//! model is buffered as generic content, then as a `serde_json::Value`, then converted. For EmbeddingGemma's BPE
//! (262,144 tokens, 514,906 merges) that peaks at ~340 MB and takes ~0.8 s. Here the model's vocab and merges are
//! read straight into the types the BPE builder takes, and the tokenizer is assembled the way tokenizers'
//! own deserializer does (the same builder, the same `add_tokens` call for the added tokens). Anything else (other
//! model types, legacy `"a b"` merges, a version other than 1.0) goes through `Tokenizer::from_bytes`.
use std::path::Path;

use serde::Deserialize;
use serde_json::value::RawValue;
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, Tokenizer};

use crate::{LoadContext, Result};

#[derive(Deserialize)]
struct File<'a> {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    truncation: Option<tokenizers::TruncationParams>,
    #[serde(default)]
    padding: Option<tokenizers::PaddingParams>,
    #[serde(default)]
    added_tokens: Vec<AddedTokenWithId>,
    #[serde(default)]
    normalizer: Option<NormalizerWrapper>,
    #[serde(default)]
    pre_tokenizer: Option<PreTokenizerWrapper>,
    #[serde(default)]
    post_processor: Option<PostProcessorWrapper>,
    #[serde(default)]
    decoder: Option<DecoderWrapper>,
    #[serde(borrow)]
    model: &'a RawValue,
}

#[derive(Deserialize)]
struct AddedTokenWithId {
    content: String,
    #[serde(default)]
    single_word: bool,
    #[serde(default)]
    lstrip: bool,
    #[serde(default)]
    rstrip: bool,
    #[serde(default = "yes")]
    normalized: bool,
    #[serde(default)]
    special: bool,
}

fn yes() -> bool {
    true
}

/// A BPE model with merges as pairs (the current tokenizers format).
#[derive(Deserialize)]
struct BpeModel {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    dropout: Option<f32>,
    #[serde(default)]
    unk_token: Option<String>,
    #[serde(default)]
    continuing_subword_prefix: Option<String>,
    #[serde(default)]
    end_of_word_suffix: Option<String>,
    #[serde(default)]
    fuse_unk: Option<bool>,
    #[serde(default)]
    byte_fallback: Option<bool>,
    #[serde(default)]
    ignore_merges: Option<bool>,
    vocab: Vocab,
    merges: Merges,
}

/// The tokenizer a tokenizer.json describes; identical to `Tokenizer::from_bytes(json)`. `path` names the file
/// in errors.
pub fn from_json(json: &[u8], path: &Path) -> Result<Tokenizer> {
    match fast(json) {
        Some(t) => t,
        None => Tokenizer::from_bytes(json),
    }
    .context_load(|| path.display().to_string())
}

/// None when the file is not one the fast path handles.
fn fast(json: &[u8]) -> Option<tokenizers::Result<Tokenizer>> {
    let file: File<'_> = serde_json::from_slice(json).ok()?;
    if file.version.as_deref().is_some_and(|v| v != "1.0") {
        return None;
    }
    let m: BpeModel = serde_json::from_str(file.model.get()).ok()?;
    if m.kind != "BPE" {
        return None;
    }
    Some(build(file, m))
}

fn build(file: File<'_>, m: BpeModel) -> tokenizers::Result<Tokenizer> {
    let mut b = BPE::builder().vocab_and_merges(m.vocab, m.merges);
    if let Some(d) = m.dropout {
        b = b.dropout(d);
    }
    if let Some(u) = m.unk_token {
        b = b.unk_token(u);
    }
    if let Some(p) = m.continuing_subword_prefix {
        b = b.continuing_subword_prefix(p);
    }
    if let Some(s) = m.end_of_word_suffix {
        b = b.end_of_word_suffix(s);
    }
    if let Some(f) = m.fuse_unk {
        b = b.fuse_unk(f);
    }
    if let Some(f) = m.byte_fallback {
        b = b.byte_fallback(f);
    }
    if let Some(f) = m.ignore_merges {
        b = b.ignore_merges(f);
    }
    let bpe = b.build()?;
    let inner = tokenizers::TokenizerBuilder::<
        tokenizers::ModelWrapper,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    >::new()
    .with_model(bpe.into())
    .with_normalizer(file.normalizer)
    .with_pre_tokenizer(file.pre_tokenizer)
    .with_post_processor(file.post_processor)
    .with_decoder(file.decoder)
    .with_truncation(file.truncation)
    .with_padding(file.padding)
    .build()?;
    let mut tokenizer = Tokenizer::from(inner);
    let added: Vec<AddedToken> = file
        .added_tokens
        .into_iter()
        .map(|t| AddedToken {
            content: t.content,
            single_word: t.single_word,
            lstrip: t.lstrip,
            rstrip: t.rstrip,
            normalized: t.normalized,
            special: t.special,
        })
        .collect();
    tokenizer.add_tokens(&added);
    Ok(tokenizer)
}
