//! Model2Vec static models (being written).
use std::path::Path;

use crate::{Backend, EngineError, ModelInfo, Result};

pub fn is_model2vec_dir(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json")).map(|s| s.contains("model2vec") || s.contains("vocabulary_quantization")).unwrap_or(false)
}

pub struct StaticModel {
    info: ModelInfo,
}

impl StaticModel {
    pub fn load(dir: &Path, _name: &str) -> Result<Self> {
        Err(EngineError::Load(format!("{}: Model2Vec loader not written yet", dir.display())))
    }
}

impl Backend for StaticModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn tokenize(&self, _text: &str) -> Result<Vec<u32>> {
        unimplemented!()
    }
    fn embed_tokens(&self, _batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        unimplemented!()
    }
}
