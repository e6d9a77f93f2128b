//! Shared helpers for the integration tests: fixtures from ../shared and the models fetched by scripts/fetch.sh.
#![allow(dead_code)]
use std::path::PathBuf;

pub fn shared() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared"))
}

pub fn require_model(dir: &str) {
    let p = deposium_engine::paths::models_dir().join(dir);
    assert!(p.is_dir(), "model {} missing: run `scripts/fetch.sh` (make fetch) first", p.display());
}

pub fn gemma_reference() -> deposium_engine::fidelity::Reference {
    deposium_engine::fidelity::Reference::load(&shared().join("fixtures")).expect("fixtures")
}
