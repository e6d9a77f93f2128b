//! The `embed` command as a user runs it, and its errors.
mod common;

use std::io::Write;
use std::process::{Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_deposium-embed"))
}

fn run_with_stdin(args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut child =
        bin().args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn vectors(out: &[u8]) -> Vec<Vec<f32>> {
    String::from_utf8_lossy(out).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn embed_prints_vectors_with_prompt_and_dimensions() {
    common::require_model("embeddinggemma-300m");
    let out = bin()
        .args(["embed", "--model", "embeddinggemma", "--prompt-name", "STS", "A man is playing a guitar."])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = vectors(&out.stdout);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].len(), 768);
    let out = bin()
        .args([
            "embed",
            "--model",
            "embeddinggemma",
            "--prompt-name",
            "STS",
            "--dimensions",
            "256",
            "A man is playing a guitar.",
        ])
        .output()
        .unwrap();
    let t = vectors(&out.stdout);
    assert_eq!(t[0].len(), 256);
    let n: f32 = t[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((n - 1.0).abs() < 1e-5);
    // Truncation keeps the Matryoshka prefix direction.
    let prefix: Vec<f32> = v[0][..256].to_vec();
    assert!(deposium_engine::cosine(&prefix, &t[0]) > 0.99999);
    // JSONL on stdin: two texts, two vectors; the raw prompt equals the named one.
    let out = run_with_stdin(
        &["embed", "--model", "embeddinggemma", "--prompt", "task: sentence similarity | query: "],
        b"\"A man is playing a guitar.\"\n{\"text\": \"The cat sat on the mat.\"}\n",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = vectors(&out.stdout);
    assert_eq!(s.len(), 2);
    assert!(deposium_engine::cosine(&s[0], &v[0]) > 0.99999);
}

fn assert_clean_error(out: &std::process::Output, needle: &str) {
    assert!(!out.status.success(), "expected failure");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "stderr should mention {needle:?}: {err}");
    assert!(!err.contains("panicked"), "no panic: {err}");
}

#[test]
fn errors_are_clear_and_never_panic() {
    let out = bin().args(["embed", "--model", "no-such-model", "x"]).output().unwrap();
    assert_clean_error(&out, "unknown model 'no-such-model'");

    let empty = std::env::temp_dir().join(format!("deposium-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let spec = format!("broken={}", empty.display());
    let out = bin().args(["embed", "--model", &spec, "x"]).output().unwrap();
    assert_clean_error(&out, "no model found");

    // A transformers directory whose safetensors is garbage.
    std::fs::write(empty.join("config.json"), br#"{"model_type": "bert"}"#).unwrap();
    std::fs::write(empty.join("model.safetensors"), b"not a safetensors file").unwrap();
    let out = bin().args(["embed", "--model", &spec, "x"]).output().unwrap();
    assert_clean_error(&out, "safetensors");
    std::fs::remove_dir_all(&empty).unwrap();

    common::require_model("potion-base-8M");
    let out = run_with_stdin(&["embed", "--model", "potion-base-8M"], b"ok line\n\xff\xfe bad bytes\n");
    assert_clean_error(&out, "not valid UTF-8");

    // Two specs of one name would write the same results directory.
    for cmd in ["eval", "bench"] {
        let out =
            bin().args([cmd, "--model", "embeddinggemma", "--model", "embeddinggemma:int8=/nowhere"]).output().unwrap();
        assert_clean_error(&out, "are both named 'embeddinggemma'");
    }

    let out = bin().args(["embed", "--model", "embeddinggemma", "--dimensions", "4096", "x"]).output().unwrap();
    assert_clean_error(&out, "dimensions");
    let out = bin().args(["embed", "--model", "embeddinggemma", "--prompt-name", "nope", "x"]).output().unwrap();
    assert_clean_error(&out, "unknown prompt_name");
}

#[test]
fn no_truncate_refuses_long_input() {
    common::require_model("potion-base-8M");
    let long = "word ".repeat(3000);
    let out = bin().args(["embed", "--model", "potion-base-8M", "--no-truncate", &long]).output().unwrap();
    assert_clean_error(&out, "over the model's limit");
    let out = bin().args(["embed", "--model", "potion-base-8M", &long]).output().unwrap();
    assert!(out.status.success());
}

#[test]
fn big_job_writes_npy_and_jsonl() {
    common::require_model("potion-base-8M");
    let dir = std::env::temp_dir().join(format!("deposium-npy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.jsonl");
    let texts: Vec<String> = (0..1000).map(|i| format!("sentence number {i} about cats and dogs")).collect();
    std::fs::write(&input, texts.iter().map(|t| serde_json::to_string(t).unwrap() + "\n").collect::<String>()).unwrap();
    let embed_to = |output: &std::path::Path| {
        bin()
            .args(["embed", "--model", "potion-base-8M", "--input", input.to_str().unwrap(), "--output"])
            .arg(output)
            .output()
            .unwrap()
    };
    let npy = dir.join("v.npy");
    let out = embed_to(&npy);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&npy).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = String::from_utf8_lossy(&bytes[10..10 + hlen]);
    assert!(header.contains("'shape': (1000, 256)"), "{header}");
    assert_eq!(bytes.len(), 10 + hlen + 1000 * 256 * 4);
    // Row 7 of the matrix equals the vector of text 7 embedded alone.
    let row: Vec<f32> = bytes[10 + hlen + 7 * 1024..10 + hlen + 8 * 1024]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let alone = vectors(&bin().args(["embed", "--model", "potion-base-8M", &texts[7]]).output().unwrap().stdout);
    assert!(deposium_engine::cosine(&row, &alone[0]) > 0.99999);
    let jsonl = dir.join("v.jsonl");
    let out = embed_to(&jsonl);
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(&jsonl).unwrap().lines().count(), 1000);
    std::fs::remove_dir_all(&dir).unwrap();
}
