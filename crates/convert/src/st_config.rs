//! sentence-transformers directory layout: modules.json, pooling, dense heads, prompts, max_seq_length.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, Default)]
pub struct StConfig {
    /// Module list in order (type name, path).
    pub modules: Vec<(String, PathBuf)>,
    pub pooling: Pooling,
    pub include_prompt: bool,
    /// Dense heads after pooling, in order.
    pub dense: Vec<DenseConfig>,
    pub normalize: bool,
    pub prompts: BTreeMap<String, String>,
    pub default_prompt_name: Option<String>,
    pub max_seq_length: Option<usize>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Pooling {
    #[default]
    Mean,
    Cls,
    LastToken,
}

#[derive(Debug, Clone)]
pub struct DenseConfig {
    pub dir: PathBuf,
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
    pub activation: String,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    ty: String,
}

#[derive(Deserialize, Default)]
struct PoolingJson {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
    #[serde(default = "yes")]
    include_prompt: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct DenseJson {
    in_features: usize,
    out_features: usize,
    #[serde(default = "yes")]
    bias: bool,
    #[serde(default)]
    activation_function: String,
}

#[derive(Deserialize, Default)]
struct StJson {
    #[serde(default)]
    prompts: BTreeMap<String, String>,
    #[serde(default)]
    default_prompt_name: Option<String>,
}

#[derive(Deserialize, Default)]
struct BertJson {
    max_seq_length: Option<usize>,
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let s = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&s).with_context(|| format!("{} is not valid", path.display()))
}

impl StConfig {
    /// Read a sentence-transformers directory. A plain transformers directory (no modules.json) gets mean pooling
    /// and normalisation, the usual default for embedding models.
    pub fn load(dir: &Path) -> Result<Self> {
        let mut cfg = StConfig { normalize: true, include_prompt: true, ..Default::default() };
        let modules_path = dir.join("modules.json");
        if modules_path.exists() {
            cfg.normalize = false;
            let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
            for m in modules {
                let p = dir.join(&m.path);
                let short = m.ty.rsplit('.').next().unwrap_or(&m.ty).to_string();
                match short.as_str() {
                    "Pooling" => {
                        let pj: PoolingJson = read_json(&p.join("config.json"))?;
                        cfg.pooling = if pj.pooling_mode_cls_token {
                            Pooling::Cls
                        } else if pj.pooling_mode_lasttoken {
                            Pooling::LastToken
                        } else if pj.pooling_mode_mean_tokens {
                            Pooling::Mean
                        } else {
                            bail!("{}: unsupported pooling mode (mean, cls, lasttoken are supported)", p.display());
                        };
                        cfg.include_prompt = pj.include_prompt;
                    }
                    "Dense" => {
                        let dj: DenseJson = read_json(&p.join("config.json"))?;
                        cfg.dense.push(DenseConfig {
                            dir: p.clone(),
                            in_features: dj.in_features,
                            out_features: dj.out_features,
                            bias: dj.bias,
                            activation: dj.activation_function,
                        });
                    }
                    "Normalize" => cfg.normalize = true,
                    _ => {}
                }
                cfg.modules.push((short, p));
            }
        }
        let st_path = dir.join("config_sentence_transformers.json");
        if st_path.exists() {
            let st: StJson = read_json(&st_path)?;
            cfg.prompts = st.prompts;
            cfg.default_prompt_name = st.default_prompt_name;
        }
        let bert_path = dir.join("sentence_bert_config.json");
        if bert_path.exists() {
            let b: BertJson = read_json(&bert_path)?;
            cfg.max_seq_length = b.max_seq_length;
        }
        Ok(cfg)
    }
}
