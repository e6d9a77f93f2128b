//! deposium-server
