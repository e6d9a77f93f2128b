//! Model names, aliases and loading.
//!
//! A model spec is `NAME` (a known model, fetched by `scripts/fetch.sh` into `$DEPOSIUM_HOME/models`) or
//! `NAME=PATH` (any directory: sentence-transformers/transformers safetensors, ONNX export, or Model2Vec).
//! A `:tag` picks the quantization of a built-in transformer: `embeddinggemma:fp32`, `:int8` (default), `:w8a16`
//! (int8 weights, 16-bit activations), `:int4`.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{paths, EngineError, Model, ModelInfo, Result};

/// Known models: canonical name, directory under `$DEPOSIUM_HOME/models`, default scheme, aliases.
pub const KNOWN: &[(&str, &str, &str, &[&str])] = &[
    (
        "embeddinggemma",
        "embeddinggemma-300m",
        "int8",
        &["embeddinggemma-300m", "embeddinggemma:300m", "google/embeddinggemma-300m", "gemma-int8", "int8"],
    ),
    ("potion-base-8M", "potion-base-8M", "fp32", &["minishlab/potion-base-8M", "potion", "model2vec"]),
    ("all-MiniLM-L6-v2", "all-MiniLM-L6-v2", "fp32", &["sentence-transformers/all-MiniLM-L6-v2", "minilm"]),
    ("minilm-int8-onnx", "minilm-int8-onnx", "onnx", &[]),
    ("tokenlearn-static", "tokenlearn-static", "fp32", &[]),
];

/// Quantization schemes the graph builder knows.
pub const SCHEMES: &[&str] = &["fp32", "int8", "w8a16", "int4"];

#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Name the model is served under: with its `:tag` when the tag is not the model's default scheme
    /// (`embeddinggemma:int4`, also for `embeddinggemma:int4=PATH`), so that two specs of one model never share it.
    pub name: String,
    pub dir: PathBuf,
    /// `fp32`, `int8`, `w8a16`, `int4` for graphs we build; ignored for ONNX/static models.
    pub scheme: String,
    pub aliases: Vec<String>,
}

fn known_entry(name: &str) -> Option<&'static (&'static str, &'static str, &'static str, &'static [&'static str])> {
    KNOWN.iter().find(|(canon, _, _, aliases)| {
        canon.eq_ignore_ascii_case(name) || aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    })
}

/// Split `name:tag` where the tag is a scheme; other tags (`latest`, `300m`) are part of an alias or ignored.
fn split_tag(name: &str) -> (String, Option<String>) {
    if let Some((base, tag)) = name.rsplit_once(':') {
        if SCHEMES.contains(&tag.to_ascii_lowercase().as_str()) {
            return (base.to_string(), Some(tag.to_ascii_lowercase()));
        }
        if tag.eq_ignore_ascii_case("latest") {
            return (base.to_string(), None);
        }
    }
    (name.to_string(), None)
}

/// Resolve a spec string to a directory and scheme (no loading).
pub fn resolve(spec: &str) -> Result<ModelSpec> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(EngineError::InvalidInput("empty model name".into()));
    }
    if let Some((name, path)) = spec.split_once('=') {
        let (base, tag) = split_tag(name);
        let dir = PathBuf::from(path);
        let known = known_entry(&base);
        let default_scheme = known.map_or("fp32", |k| k.2);
        let scheme = tag.clone().unwrap_or_else(|| default_scheme.to_string());
        let aliases =
            known.filter(|k| k.2 == scheme).map(|k| k.3.iter().map(|s| s.to_string()).collect()).unwrap_or_default();
        let name = if scheme == default_scheme { base } else { format!("{base}:{scheme}") };
        return Ok(ModelSpec { name, dir, scheme, aliases });
    }
    let (base, tag) = split_tag(spec);
    let Some(&(canon, dirname, default_scheme, aliases)) = known_entry(&base) else {
        // A bare path works too.
        let p = Path::new(spec);
        if p.is_dir() {
            let name = p.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| spec.to_string());
            return Ok(ModelSpec { name, dir: p.to_path_buf(), scheme: "fp32".into(), aliases: vec![] });
        }
        return Err(EngineError::UnknownModel { name: spec.to_string(), available: known_names().join(", ") });
    };
    let scheme = tag.unwrap_or_else(|| default_scheme.to_string());
    let name = if scheme == default_scheme { canon.to_string() } else { format!("{canon}:{scheme}") };
    let aliases = if scheme == default_scheme { aliases.iter().map(|s| s.to_string()).collect() } else { vec![] };
    Ok(ModelSpec { name, dir: paths::models_dir().join(dirname), scheme, aliases })
}

pub fn known_names() -> Vec<String> {
    KNOWN.iter().map(|k| k.0.to_string()).collect()
}

/// Load a model from a spec string.
pub fn load(spec: &str) -> Result<Model> {
    let s = resolve(spec)?;
    load_spec(&s)
}

pub fn load_spec(s: &ModelSpec) -> Result<Model> {
    if !s.dir.is_dir() {
        return Err(EngineError::load(format!(
            "model directory {} for '{}' does not exist; run `make fetch` (scripts/fetch.sh) or pass NAME=PATH",
            s.dir.display(),
            s.name
        )));
    }
    let backend: Arc<dyn crate::Backend> = if crate::model2vec::is_model2vec_dir(&s.dir) {
        Arc::new(crate::model2vec::StaticModel::load(&s.dir, &s.name)?)
    } else {
        Arc::new(crate::onnx::OnnxModel::load_dir(&s.dir, &s.name, &s.scheme)?)
    };
    Ok(Model::new(backend))
}

/// Loaded models, looked up by name, alias or Ollama-style tag.
#[derive(Default, Clone)]
pub struct Registry {
    entries: Vec<(ModelSpec, Arc<Model>)>,
}

impl Registry {
    pub fn insert(&mut self, spec: ModelSpec, model: Arc<Model>) {
        self.entries.retain(|(s, _)| s.name != spec.name);
        self.entries.push((spec, model));
    }

    pub fn models(&self) -> impl Iterator<Item = (&ModelSpec, &Arc<Model>)> {
        self.entries.iter().map(|(s, m)| (s, m))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first model (served when a request names none).
    pub fn default_model(&self) -> Option<&Arc<Model>> {
        self.entries.first().map(|(_, m)| m)
    }

    pub fn get(&self, name: &str) -> Result<Arc<Model>> {
        let name = name.trim();
        let plain = name.strip_suffix(":latest").unwrap_or(name);
        let hit = self.entries.iter().find(|(s, _)| {
            s.name.eq_ignore_ascii_case(plain) || s.aliases.iter().any(|a| a.eq_ignore_ascii_case(plain))
        });
        if let Some((_, m)) = hit {
            return Ok(m.clone());
        }
        // `embeddinggemma:int8` names the default-scheme model served as `embeddinggemma`.
        if let Ok(spec) = resolve(plain) {
            if let Some((_, m)) = self.entries.iter().find(|(s, _)| s.name == spec.name) {
                return Ok(m.clone());
            }
        }
        Err(EngineError::UnknownModel {
            name: name.to_string(),
            available: self.entries.iter().map(|(s, _)| s.name.clone()).collect::<Vec<_>>().join(", "),
        })
    }
}

/// Split a prompt selector off a model name: `embeddinggemma:int4@query` → (`embeddinggemma:int4`, `query`).
/// An Ollama `:latest` tag after the selector (`embeddinggemma@query:latest`) is dropped.
pub fn split_prompt_selector(name: &str) -> Option<(&str, &str)> {
    let (base, selector) = name.rsplit_once('@')?;
    let selector = selector.strip_suffix(":latest").unwrap_or(selector);
    Some((base, selector))
}

/// The model's prompt names, `query` and `document` first, then the rest in name order.
pub fn prompt_names(info: &ModelInfo) -> Vec<String> {
    let mut names: Vec<String> = info.prompts.keys().cloned().collect();
    names.sort_by_key(|n| (n != "query", n != "document", n.clone()));
    names
}

/// The model's prompt a selector names: exact match, else the one name equal ignoring case.
pub fn prompt_selector(info: &ModelInfo, selector: &str) -> Result<String> {
    if info.prompts.contains_key(selector) {
        return Ok(selector.to_string());
    }
    let mut folded = info.prompts.keys().filter(|k| k.eq_ignore_ascii_case(selector));
    if let (Some(k), None) = (folded.next(), folded.next()) {
        return Ok(k.clone());
    }
    let known = prompt_names(info);
    Err(EngineError::InvalidInput(format!(
        "'{selector}' is not a prompt of model '{}'; known prompts: {}",
        info.name,
        if known.is_empty() { "none (this model takes no prompt selector)".to_string() } else { known.join(", ") }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_is_named_with_its_tag_unless_the_tag_is_the_default() {
        let name = |spec: &str| resolve(spec).unwrap().name;
        assert_eq!(name("embeddinggemma"), "embeddinggemma");
        assert_eq!(name("embeddinggemma:int8"), "embeddinggemma");
        assert_eq!(name("embeddinggemma:w8a16"), "embeddinggemma:w8a16");
        assert_eq!(name("embeddinggemma=/m"), "embeddinggemma");
        assert_eq!(name("embeddinggemma:int8=/m"), "embeddinggemma");
        assert_eq!(name("embeddinggemma:INT4=/m"), "embeddinggemma:int4");
        assert_eq!(name("mine=/m"), "mine");
        assert_eq!(name("mine:fp32=/m"), "mine");
        assert_eq!(name("mine:int8=/m"), "mine:int8");
        let s = resolve("embeddinggemma:w8a16=/m").unwrap();
        assert_eq!((s.scheme.as_str(), s.dir.as_path(), s.aliases.len()), ("w8a16", Path::new("/m"), 0));
        assert!(!resolve("embeddinggemma=/m").unwrap().aliases.is_empty());
    }
}
