//! ONNX Runtime backend (being written).
use std::path::Path;

use crate::{Backend, EngineError, ModelInfo, Result};

pub struct OnnxModel {
    info: ModelInfo,
}

impl OnnxModel {
    pub fn load_dir(dir: &Path, _name: &str, _scheme: &str) -> Result<Self> {
        Err(EngineError::Load(format!("{}: ONNX backend not written yet", dir.display())))
    }
}

impl Backend for OnnxModel {
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
