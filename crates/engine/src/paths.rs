//! Where deposium keeps downloads and converted models.
use std::path::PathBuf;

/// `${DEPOSIUM_HOME:-~/.cache/deposium}`
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("DEPOSIUM_HOME") {
        return PathBuf::from(h);
    }
    let base = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    base.join(".cache").join("deposium")
}

pub fn models_dir() -> PathBuf {
    home().join("models")
}

pub fn converted_dir() -> PathBuf {
    home().join("converted")
}
