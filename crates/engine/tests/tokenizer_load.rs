//! The fast tokenizer.json loader builds the same tokenizer as `Tokenizer::from_bytes`: the same serialization and
//! the same encodings (EmbeddingGemma's BPE through the fast path, a WordPiece tokenizer through the fallback).
use std::path::Path;

use deposium_engine::{paths, tokenizer_load, EngineError};
use tokenizers::Tokenizer;

fn same(json: &[u8], texts: &[&str]) {
    let stock = Tokenizer::from_bytes(json).unwrap();
    let fast = tokenizer_load::from_json(json, Path::new("tokenizer.json")).unwrap();
    assert_eq!(stock.to_string(false).unwrap(), fast.to_string(false).unwrap(), "serialized forms differ");
    for t in texts {
        for special in [true, false] {
            let (a, b) = (stock.encode_fast(*t, special).unwrap(), fast.encode_fast(*t, special).unwrap());
            assert_eq!(a.get_ids(), b.get_ids(), "{t:?}");
            assert_eq!(a.get_offsets(), b.get_offsets(), "{t:?}");
        }
    }
}

const TEXTS: &[&str] = &[
    "A man is playing a guitar.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "今日は天気がいいですね。 오늘 날씨가 좋네요.",
    "🙂🚀 emoji only",
    "",
    "   ",
    "<start_of_image> <unused5> [CLS] <bos>text<eos> <pad>",
    "\t\ttabs\n\nand newlines\u{0}",
];

fn model_file(dir: &str) -> std::path::PathBuf {
    let p = paths::models_dir().join(dir).join("tokenizer.json");
    assert!(p.exists(), "{} missing: run `scripts/fetch.sh` (make fetch) first", p.display());
    p
}

#[test]
fn embeddinggemma_bpe_loads_identically() {
    same(&std::fs::read(model_file("embeddinggemma-300m")).unwrap(), TEXTS);
}

#[test]
fn wordpiece_falls_back_to_the_stock_loader() {
    same(&std::fs::read(model_file("all-MiniLM-L6-v2")).unwrap(), TEXTS);
}

#[test]
fn invalid_json_is_an_error() {
    let path = Path::new("/models/x/tokenizer.json");
    for json in [&b"{\"not\": \"a tokenizer\"}"[..], b""] {
        let e = tokenizer_load::from_json(json, path).unwrap_err();
        assert!(matches!(e, EngineError::Load { source: Some(_), .. }), "{e:?}");
        // The file, then the parser's reason.
        let msg = e.report();
        assert!(msg.starts_with("failed to load model: /models/x/tokenizer.json: "), "{msg}");
        assert!(msg.len() > "failed to load model: /models/x/tokenizer.json: ".len() + 5, "{msg}");
    }
}
