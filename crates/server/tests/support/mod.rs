//! Shared by the in-process test binaries: the real EmbeddingGemma int8 and potion-base-8M, loaded once per binary.
use std::sync::{Arc, OnceLock};

use deposium_engine::registry::{self, ModelSpec};
use deposium_engine::{Backend, Model};
use deposium_server::{AppState, Config};

pub const GEMMA: &str = "embeddinggemma";
pub const POTION: &str = "potion-base-8M";

/// Loaded once per test binary; every test builds its own state over the same backends.
pub fn backends() -> &'static Vec<(ModelSpec, Arc<dyn Backend>)> {
    static B: OnceLock<Vec<(ModelSpec, Arc<dyn Backend>)>> = OnceLock::new();
    B.get_or_init(|| {
        [GEMMA, POTION]
            .iter()
            .map(|name| {
                let spec = registry::resolve(name).expect("known model");
                assert!(spec.dir.is_dir(), "model {} missing: run `make fetch` first", spec.dir.display());
                let model = registry::load_spec(&spec).unwrap_or_else(|e| panic!("loading {name}: {e}"));
                (spec, model.backend().clone())
            })
            .collect()
    })
}

/// Server state over both models with `config`.
pub fn state(config: Config) -> AppState {
    let models = backends().iter().map(|(s, b)| (s.clone(), Model::new(b.clone()))).collect();
    AppState::with_models(config, models)
}
