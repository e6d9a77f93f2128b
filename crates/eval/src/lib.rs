//! deposium-eval
