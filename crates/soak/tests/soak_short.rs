//! The short soak (part of `make test` / `cargo test --workspace`): 30 s, 8 clients, both models, every route,
//! every vector checked against its single-request reference, nothing lost. `make soak` runs the 10-minute one.
use std::path::{Path, PathBuf};
use std::process::Command;

const SOAK: &str = env!("CARGO_BIN_EXE_deposium-soak");

/// `deposium-embed` from the same target directory as this test's `deposium-soak` (no extra build here).
fn server_binary() -> PathBuf {
    deposium_soak::find_server_binary(Some(Path::new(SOAK))).unwrap_or_else(|| {
        panic!(
            "deposium-embed not found next to {SOAK}: build it first (`cargo build -p deposium-embed`, or run the \
             whole workspace: `cargo test --workspace`), or set DEPOSIUM_EMBED_BIN"
        )
    })
}

fn require_models() {
    let home = std::env::var("DEPOSIUM_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/deposium"));
    for dir in ["potion-base-8M", "embeddinggemma-300m"] {
        let p = home.join("models").join(dir);
        assert!(p.is_dir(), "model {} missing: run `make fetch` (scripts/fetch.sh) first", p.display());
    }
}

#[test]
fn short_soak_both_models_nothing_lost_every_vector_matches() {
    require_models();
    let bin = server_binary();
    let out = deposium_soak::workspace_root().join("target/tmp/soak-short");
    let status = Command::new(SOAK)
        .args([
            "--bin",
            bin.to_str().unwrap(),
            "--duration",
            "30s",
            "--concurrency",
            "8",
            "--pool",
            "96",
            "--heavy-pool",
            "16",
            "--max-tokens",
            "512",
            "--heavy-request-tokens",
            "1024",
            "--heavy-clients",
            "2",
            "--timeout",
            "120s",
            // 30 s cannot tell ONNX Runtime's arena warm-up from growth; `make soak` holds RSS to 5%.
            "--max-rss-growth",
            "100",
            "--out",
            out.to_str().unwrap(),
        ])
        .status()
        .expect("running deposium-soak");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.with_extension("json")).expect("the soak wrote its JSON report"))
            .expect("JSON report");
    assert!(status.success(), "soak failed ({status:?}): {:#}", report["checks"]);
    assert_eq!(report["pass"], true);
    let q = &report["requests"];
    assert_eq!(q["lost"], 0);
    assert_eq!(q["unexpected_status"], 0);
    assert_eq!(q["mismatched"], 0);
    assert!(q["ok"].as_u64().unwrap() > 100, "{q}");
    for m in report["models"].as_array().unwrap() {
        assert!(m["inputs_embedded"].as_u64().unwrap() > 0, "{m}");
    }
    assert_eq!(report["shutdown"]["exit_code"], 0);
}
