//! Model2Vec backend against the real models (`scripts/fetch.sh small`) and the upstream reference vectors
//! (`shared/fixtures/small_models_reference.json`).
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use deposium_engine::model2vec::{is_model2vec_dir, StaticModel};
use deposium_engine::{cosine, paths, registry, Backend, EmbedRequest, EngineError, Model, Prompt};

const POTION: &str = "potion-base-8M";
const TOKENLEARN: &str = "tokenlearn-static";
/// Key of `tokenlearn-static` in the reference file.
const TOKENLEARN_REF: &str = "tokenlearn-static-10k-64d-int8";

fn model_dir(name: &str) -> PathBuf {
    let d = paths::models_dir().join(name);
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        assert!(
            d.join(f).is_file(),
            "{} is missing: run `scripts/fetch.sh small` (models go to $DEPOSIUM_HOME/models, default ~/.cache/deposium/models)",
            d.join(f).display()
        );
    }
    d
}

fn load(name: &str) -> Arc<StaticModel> {
    static POT: OnceLock<Arc<StaticModel>> = OnceLock::new();
    static TL: OnceLock<Arc<StaticModel>> = OnceLock::new();
    let cell = if name == POTION { &POT } else { &TL };
    cell.get_or_init(|| Arc::new(StaticModel::load(&model_dir(name), name).expect("model loads"))).clone()
}

fn model(name: &str) -> Model {
    Model::new(load(name))
}

/// `shared/` beside the repository (as in CI), or `$DEPOSIUM_SHARED`.
fn shared_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DEPOSIUM_SHARED") {
        return PathBuf::from(d);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for cand in [root.join("../shared"), root.join("shared")] {
        if cand.is_dir() {
            return cand;
        }
    }
    panic!("no shared/ directory beside the repository ({}); set DEPOSIUM_SHARED", root.display());
}

fn reference() -> &'static serde_json::Value {
    static R: OnceLock<serde_json::Value> = OnceLock::new();
    R.get_or_init(|| {
        let p = shared_dir().join("fixtures/small_models_reference.json");
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
        serde_json::from_str(&text).expect("reference JSON")
    })
}

fn ref_texts() -> Vec<String> {
    reference()["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect()
}

fn check_against_reference(name: &str, ref_key: &str) {
    let r = &reference()["models"][ref_key];
    assert!(r.is_object(), "reference has no entry {ref_key}");
    let texts = ref_texts();
    let m = model(name);
    let backend = load(name);
    let out = m.embed(&EmbedRequest::new(texts.clone())).unwrap();
    let ref_ids = r["token_ids"].as_array();
    for (i, text) in texts.iter().enumerate() {
        if let Some(ids) = ref_ids.and_then(|a| a.get(i)) {
            let want: Vec<u32> = ids.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            assert_eq!(backend.tokenize(text).unwrap(), want, "{name}: token ids of {text:?}");
            assert_eq!(backend.tokenize_reference(text).unwrap(), want, "{name}: crate token ids of {text:?}");
            assert_eq!(out.token_counts[i], want.len().min(512));
        }
        let want: Vec<f32> =
            r["embeddings"][i].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        let got = &out.embeddings[i];
        assert_eq!(got.len(), want.len(), "{name}: dim for {text:?}");
        if want.iter().all(|&x| x == 0.0) {
            assert!(got.iter().all(|&x| x == 0.0), "{name}: {text:?} should embed to zeros, got {:?}", &got[..4]);
        } else {
            let c = cosine(got, &want);
            assert!(c >= 0.9999, "{name}: cosine {c} for {text:?}");
            let n: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((n - 1.0).abs() < 1e-4, "{name}: norm {n} for {text:?}");
        }
    }
}

#[test]
fn potion_matches_reference() {
    check_against_reference(POTION, POTION);
}

#[test]
fn tokenlearn_matches_reference() {
    check_against_reference(TOKENLEARN, TOKENLEARN_REF);
}

#[test]
fn model_info() {
    let p = load(POTION);
    let i = p.info();
    assert_eq!(i.name, POTION);
    assert_eq!(i.family, "model2vec");
    assert_eq!(i.dim, 256);
    assert_eq!(i.max_tokens, 512);
    assert_eq!(i.quantization, "fp32");
    assert_eq!(i.parameter_count, Some(29528 * 256));
    assert!(i.prompts.is_empty() && i.matryoshka_dims.is_empty() && i.default_prompt_name.is_none());
    assert_eq!(i.digest.len(), 64);
    assert!(i.digest.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(i.size_bytes > 30_000_000, "size_bytes {}", i.size_bytes);
    assert!(p.normalizes());
    assert!(p.has_fast_tokenizer());

    let t = load(TOKENLEARN);
    let i = t.info();
    assert_eq!((i.dim, i.quantization.as_str(), i.parameter_count), (64, "int8", Some(10000 * 64)));
    assert!(!t.has_fast_tokenizer(), "Unigram goes through the tokenizers crate");

    for dir in [model_dir(POTION), model_dir(TOKENLEARN)] {
        assert!(is_model2vec_dir(&dir), "{}", dir.display());
    }
    let minilm = paths::models_dir().join("all-MiniLM-L6-v2");
    if minilm.is_dir() {
        assert!(!is_model2vec_dir(&minilm));
    }
}

#[test]
fn registry_loads_static_models() {
    let _ = model_dir(POTION);
    let m = registry::load("potion").unwrap();
    assert_eq!(m.info().family, "model2vec");
    let _ = model_dir(TOKENLEARN);
    let m = registry::load(TOKENLEARN).unwrap();
    assert_eq!(m.info().dim, 64);
}

#[test]
fn empty_text_is_zero_vector() {
    for name in [POTION, TOKENLEARN] {
        let m = model(name);
        for text in ["", "   ", "\t\n"] {
            let out = m.embed(&EmbedRequest::new(vec![text.to_string()])).unwrap();
            assert_eq!(out.token_counts, vec![0]);
            assert_eq!(out.embeddings[0], vec![0.0; m.info().dim], "{name}: {text:?}");
        }
    }
}

#[test]
fn batch_equals_one_by_one() {
    let mut texts = ref_texts();
    texts.push("A much longer sentence, with punctuation; numbers like 3.14 and [CLS] tokens, and Ünïcödé.".into());
    texts.push("short".into());
    texts.extend(sts_sentences().into_iter().take(100));
    for name in [POTION, TOKENLEARN] {
        let m = model(name);
        let batch = m.embed(&EmbedRequest::new(texts.clone())).unwrap();
        for (i, t) in texts.iter().enumerate() {
            let one = m.embed(&EmbedRequest::new(vec![t.clone()])).unwrap();
            assert_eq!(one.embeddings[0], batch.embeddings[i], "{name}: {t:?}");
            assert_eq!(one.token_counts[0], batch.token_counts[i]);
        }
    }
}

#[test]
fn matryoshka_prefix_is_renormalised() {
    let m = model(POTION);
    let texts = vec!["The cat sits on the mat.".to_string(), "How do I bake bread?".to_string()];
    let full = m.embed(&EmbedRequest::new(texts.clone())).unwrap();
    let mut req = EmbedRequest::new(texts);
    req.dimensions = Some(64);
    let cut = m.embed(&req).unwrap();
    for (f, c) in full.embeddings.iter().zip(&cut.embeddings) {
        assert_eq!(c.len(), 64);
        let n: f32 = c.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5, "norm {n}");
        assert!(cosine(c, &f[..64]) > 0.99999);
    }
    req.dimensions = Some(257);
    assert!(matches!(m.embed(&req), Err(EngineError::InvalidInput(_))));
}

#[test]
fn long_input_truncates_or_refuses() {
    for name in [POTION, TOKENLEARN] {
        let m = model(name);
        let long = "the quick brown fox jumps over the lazy dog ".repeat(100); // 900 words
        assert!(load(name).tokenize(&long).unwrap().len() > 512, "{name}: tokenize returns uncut ids");
        let mut req = EmbedRequest::new(vec![long.clone()]);
        let out = m.embed(&req).unwrap();
        assert_eq!(out.token_counts, vec![512]);
        // Same as embedding exactly the first 512 tokens.
        let ids = load(name).tokenize(&long).unwrap();
        let direct = load(name).embed_tokens(&[ids[..512].to_vec()]).unwrap();
        assert!(cosine(&direct[0], &out.embeddings[0]) > 0.99999);

        req.truncate = false;
        match m.embed(&req) {
            Err(EngineError::TooLong { tokens, max }) => {
                assert_eq!(max, 512);
                assert!(tokens > 512, "{tokens}");
            }
            other => panic!("{name}: expected TooLong, got {:?}", other.map(|r| r.token_counts)),
        }
        // Not too long: fine with truncate=false.
        req.inputs = vec!["a short one".into()];
        assert!(m.embed(&req).is_ok());
    }
}

#[test]
fn prompt_is_prepended() {
    let m = model(POTION);
    let mut req = EmbedRequest::new(vec!["bread".into()]);
    req.prompt = Prompt::Raw("query: ".into());
    let a = m.embed(&req).unwrap();
    let b = m.embed(&EmbedRequest::new(vec!["query: bread".into()])).unwrap();
    assert_eq!(a.embeddings, b.embeddings);
    req.prompt = Prompt::Named("STS".into());
    assert!(matches!(m.embed(&req), Err(EngineError::InvalidInput(_))));
}

#[test]
fn out_of_range_ids_are_an_error() {
    let p = load(POTION);
    assert!(matches!(p.embed_tokens(&[vec![1002, 29528]]), Err(EngineError::InvalidInput(_))));
}

/// The ids-only WordPiece gives the `tokenizers` crate's ids on real and adversarial text.
#[test]
fn fast_wordpiece_matches_tokenizers_crate() {
    let p = load(POTION);
    let mut texts = sts_sentences();
    texts.extend(ref_texts());
    let nasty = [
        "Hello, World! It's 3:45pm -- (really?) [yes] {no} <maybe> a_b c-d e.f",
        "UPPER lower MiXeD CaSe",
        "tabs\tand\nnewlines\r\nand  double  spaces   ",
        "control\u{1}chars\u{7f}inside\u{0}words\u{b}and\u{c}feeds",
        "literal [CLS] and [SEP] and [MASK] and [UNK] and [PAD]",
        "[CLS]",
        "unbalanced [CL S] [ CLS] [cls]",
        &"a".repeat(99),
        &"a".repeat(100),
        &"a".repeat(101),
        &"supercalifragilisticexpialidocious".repeat(4),
        "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
        "xqzjv qqqqqq zzzzzzz 1234567890 007 3.14159 1e-10",
        "!!!???...,,,;;;:::'''\"\"\"```~~~@@@###$$$%%%^^^&&&***",
        "##ing ##s ## #",
        "email@example.com http://example.com/path?query=1&x=2#frag",
        "café naïve résumé",
        "日本語のテキスト",
        "emoji 😀 test",
        "",
        " ",
        ".",
    ];
    texts.extend(nasty.iter().map(|s| s.to_string()));
    let mut checked = 0;
    for t in &texts {
        let fast = p.tokenize(t).unwrap();
        let slow = p.tokenize_reference(t).unwrap();
        assert_eq!(fast, slow, "{t:?}");
        checked += 1;
    }
    assert!(checked > 2700);
}

#[test]
fn f16_table_matches_f32() {
    // Re-save potion-base-8M's table as f16 in a temp dir; vectors stay within f16 rounding of the f32 ones.
    let src = model_dir(POTION);
    let dir = temp_dir("f16");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("embeddings").unwrap();
    let half: Vec<u8> = t
        .data()
        .chunks_exact(4)
        .flat_map(|c| half::f16::from_f32(f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes())
        .collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F16, t.shape().to_vec(), &half).unwrap();
    safetensors::serialize_to_file([("embeddings", view)], None, &dir.join("model.safetensors")).unwrap();

    let m16 = Model::new(Arc::new(StaticModel::load(&dir, "potion-f16").unwrap()));
    assert_eq!(m16.info().quantization, "f16");
    let texts = ref_texts();
    let a = model(POTION).embed(&EmbedRequest::new(texts.clone())).unwrap();
    let b = m16.embed(&EmbedRequest::new(texts)).unwrap();
    for (x, y) in a.embeddings.iter().zip(&b.embeddings) {
        if x.iter().all(|&v| v == 0.0) {
            assert!(y.iter().all(|&v| v == 0.0));
        } else {
            assert!(cosine(x, y) > 0.9999, "{}", cosine(x, y));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corrupt_safetensors_is_a_load_error() {
    let src = model_dir(POTION);
    let dir = temp_dir("corrupt");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("model.safetensors"), b"this is not a safetensors file at all \x00\x01\x02").unwrap();
    assert!(is_model2vec_dir(&dir));
    match StaticModel::load(&dir, "broken") {
        Err(e @ EngineError::Load { .. }) => {
            let msg = e.report();
            assert!(msg.contains("model.safetensors") && msg.contains(&dir.display().to_string()), "{msg}");
        }
        Err(e) => panic!("expected EngineError::Load, got {e:?}"),
        Ok(_) => panic!("corrupt model loaded"),
    }
    // Through the registry too.
    match registry::load(&format!("broken={}", dir.display())) {
        Err(e @ EngineError::Load { .. }) => {
            let msg = e.report();
            assert!(msg.contains("model.safetensors"), "{msg}")
        }
        other => panic!("expected EngineError::Load, got {:?}", other.err()),
    }

    // Truncated header length, and a valid file without an `embeddings` tensor.
    std::fs::write(dir.join("model.safetensors"), [0xffu8; 8]).unwrap();
    assert!(matches!(StaticModel::load(&dir, "broken"), Err(EngineError::Load { .. })));
    let data = [0u8; 16];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 2], &data).unwrap();
    safetensors::serialize_to_file([("other", view)], None, &dir.join("model.safetensors")).unwrap();
    match StaticModel::load(&dir, "broken") {
        Err(e @ EngineError::Load { .. }) => {
            let msg = e.report();
            assert!(msg.contains("embeddings"), "{msg}")
        }
        other => panic!("expected EngineError::Load, got {:?}", other.err()),
    }
    // Table smaller than the tokenizer's vocabulary.
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 2], &data).unwrap();
    safetensors::serialize_to_file([("embeddings", view)], None, &dir.join("model.safetensors")).unwrap();
    match StaticModel::load(&dir, "broken") {
        Err(e @ EngineError::Load { .. }) => {
            let msg = e.report();
            assert!(msg.contains("tokenizer.json has"), "{msg}")
        }
        other => panic!("expected EngineError::Load, got {:?}", other.err()),
    }
    // Missing tokenizer.
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    match StaticModel::load(&dir, "broken") {
        Err(e @ EngineError::Load { .. }) => {
            let msg = e.report();
            assert!(msg.contains("tokenizer.json"), "{msg}")
        }
        other => panic!("expected EngineError::Load, got {:?}", other.err()),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("deposium-m2v-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// STSBenchmark test sentences (both columns), when the shared data is there.
fn sts_sentences() -> Vec<String> {
    let p = shared_dir().join("data/sts/STSBenchmark_test.tsv");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    text.lines()
        .skip(1)
        .flat_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            [f.get(1).unwrap_or(&"").to_string(), f.get(2).unwrap_or(&"").to_string()]
        })
        .collect()
}
