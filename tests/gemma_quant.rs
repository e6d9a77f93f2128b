//! EmbeddingGemma int8 / w8a16 / int4 graphs: size, fidelity to the fp32 reference and batch invariance.
mod common;

use deposium_engine::{fidelity, registry};

fn check(spec: &str, mean_min: f32, min_min: f32, max_bytes: u64) -> fidelity::Fidelity {
    common::require_model("embeddinggemma-300m");
    let r = common::gemma_reference();
    let model = registry::load(spec).expect("load");
    let size = model.info().size_bytes;
    assert!(size > 0 && size < max_bytes, "{spec}: {size} bytes on disk (< {max_bytes})");
    let f = fidelity::measure(&model, &r).unwrap();
    eprintln!("{spec} fidelity: {}", serde_json::to_string(&f).unwrap());
    assert!(
        f.all.mean >= mean_min && f.all.min >= min_min,
        "{spec}: mean {} (≥ {mean_min}), min {} (≥ {min_min})",
        f.all.mean,
        f.all.min
    );
    // A text's vector must not depend on the rest of its batch.
    assert!(f.batch_vs_alone.min >= 0.99999, "{spec}: batched vs alone min cosine {}", f.batch_vs_alone.min);
    f
}

#[test]
fn int8_default_is_faithful_and_batch_invariant() {
    check("embeddinggemma", 0.9995, 0.998, 250_000_000);
}

/// int8 weights with 16-bit activation codes and a finer token table: without the activations' rounding, closer to
/// fp32 on the fixtures' mean and on every prompt kind's; issue 19's fidelity goal (mean ≥ 0.9997, min ≥ 0.9990 under
/// 250 MB).
#[test]
fn w8a16_is_more_faithful_than_int8_and_batch_invariant() {
    let a16 = check("embeddinggemma:w8a16", 0.9997, 0.9990, 250_000_000);
    let int8 = fidelity::measure(&registry::load("embeddinggemma").unwrap(), &common::gemma_reference()).unwrap();
    assert!(a16.all.mean > int8.all.mean, "w8a16 {:?} vs int8 {:?}", a16.all, int8.all);
    for (kind, s) in &a16.per_prompt {
        assert!(s.mean > int8.per_prompt[kind].mean, "{kind}: w8a16 {s:?} vs int8 {:?}", int8.per_prompt[kind]);
    }
}

#[test]
fn int4_is_faithful_and_batch_invariant() {
    check("embeddinggemma:int4", 0.99, 0.97, 200_000_000);
}

/// EmbeddingGemma converted with `scheme`'s settings changed by `edit`, into a fresh temporary directory.
fn convert_variant(
    scheme: &str,
    tag: &str,
    edit: impl FnOnce(&mut deposium_convert::QuantConfig),
) -> std::path::PathBuf {
    common::require_model("embeddinggemma-300m");
    let src = deposium_engine::paths::models_dir().join("embeddinggemma-300m");
    let out = std::env::temp_dir().join(format!("deposium-{tag}-{scheme}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut q = deposium_convert::QuantConfig::from_scheme(scheme).unwrap();
    edit(&mut q);
    deposium_convert::convert(&src, &out, &q).expect("convert");
    out
}

/// int4's calibration (activation-aware scales + GPTQ rounding, from E[xᵀx] of each layer on built-in texts) must
/// beat plain round-to-nearest with the same layout.
#[test]
fn calibrated_int4_is_more_faithful_than_round_to_nearest() {
    let out = convert_variant("int4", "rtn", |q| {
        (q.awq, q.gptq) = (false, false);
        assert!(!q.wants_calibration());
    });
    let r = common::gemma_reference();
    let rtn =
        fidelity::measure(&registry::load(&format!("embeddinggemma:int4={}", out.display())).unwrap(), &r).unwrap();
    let calibrated = fidelity::measure(&registry::load("embeddinggemma:int4").unwrap(), &r).unwrap();
    eprintln!("int4 round-to-nearest {:?}, calibrated {:?}", rtn.all, calibrated.all);
    assert!(
        calibrated.all.mean > rtn.all.mean + 0.0003,
        "calibrated {:?} vs round-to-nearest {:?}",
        calibrated.all,
        rtn.all
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// `convert --portable`: the int8 graph with stock ONNX Runtime ops only (MatMulNBits) instead of our QMatMul8
/// kernel. Both must be faithful, and agree with each other given the same (8-bit) token table.
#[test]
fn portable_int8_graph_uses_stock_ops_and_agrees_with_ours() {
    let out = convert_variant("int8", "portable", |q| q.custom_kernel = false);
    let graph = std::fs::read(out.join("model.onnx")).unwrap();
    let has = |needle: &[u8]| graph.windows(needle.len()).any(|w| w == needle);
    assert!(
        has(b"MatMulNBits") && !has(deposium_convert::CUSTOM_DOMAIN.as_bytes()),
        "portable graph must use stock ops only"
    );

    let r = common::gemma_reference();
    let portable = registry::load(&format!("embeddinggemma:int8={}", out.display())).unwrap();
    // Portable graphs store the table at 8 bits where ours entropy-codes it: compare kernels on the same table.
    let ours_dir = convert_variant("int8", "table8", |q| (q.embed_bits, q.embed_step) = (Some(8), None));
    let ours = registry::load(&format!("embeddinggemma:int8={}", ours_dir.display())).unwrap();
    let f = fidelity::measure(&portable, &r).unwrap();
    assert!(f.all.mean >= 0.9995 && f.all.min >= 0.998, "portable int8: {:?}", f.all);
    let texts: Vec<String> = r.sentences.iter().take(8).cloned().collect();
    let a = portable.embed(&deposium_engine::EmbedRequest::new(texts.clone())).unwrap().embeddings;
    let b = ours.embed(&deposium_engine::EmbedRequest::new(texts)).unwrap().embeddings;
    let s = fidelity::stats(&a, &b);
    assert!(s.min >= 0.9995, "QMatMul8 vs MatMulNBits: {s:?}");
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&ours_dir);
}

/// Spearman of `spec` on `task_names` within 0.002 of sentence-transformers fp32; returns the subsets checked.
fn sts_within_0002_of_fp32(spec: &str, task_names: &[&str]) -> usize {
    common::require_model("embeddinggemma-300m");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::shared().join("sts_reference.json")).unwrap()).unwrap();
    let data = common::shared().join("data/sts");
    let tasks: Vec<_> = task_names.iter().map(|t| deposium_eval::data::load_task(&data, t, "test").unwrap()).collect();
    let model = registry::load(spec).unwrap();
    let opts = deposium_eval::eval::EvalOptions {
        cache_dir: Some(deposium_engine::paths::home().join("cache/eval")),
        ..Default::default()
    };
    let ev = deposium_eval::eval::evaluate(&model, &tasks, &opts).unwrap();
    let mut checked = 0;
    for t in &ev.tasks {
        for s in &t.subsets {
            let key = if s.subset == "default" {
                format!("{}_test", t.task)
            } else {
                format!("{}_{}_test", t.task, s.subset)
            };
            let want = reference["scores"][&key].as_f64().unwrap_or_else(|| panic!("no reference for {key}"));
            let got = s.scores.cosine_spearman;
            eprintln!("{key}: {spec} {got:.4} fp32 {want:.4} Δ {:+.4}", got - want);
            assert!((got - want).abs() <= 0.002, "{key}: {spec} {got:.4} vs fp32 {want:.4}");
            checked += 1;
        }
    }
    checked
}

/// Every public STS task of ../shared/data/sts within 0.002 Spearman of sentence-transformers fp32.
#[test]
fn int8_sts_within_0002_of_fp32_on_every_task() {
    let checked = sts_within_0002_of_fp32("embeddinggemma", &["BIOSSES", "STSBenchmark", "STS17"]);
    assert_eq!(checked, 9, "BIOSSES, STSBenchmark and the 7 STS17 subsets");
}

#[test]
fn int4_stsbenchmark_within_0002_of_fp32() {
    assert_eq!(sts_within_0002_of_fp32("embeddinggemma:int4", &["STSBenchmark"]), 1);
}

/// A ~550-token text spans more than EmbeddingGemma's sliding window (local layers see keys within 257 positions):
/// our GemmaAttention op must apply the window and the padding mask as the fp32 graph's attention bias does, and a
/// text's vector must not change when it is padded next to a longer one.
#[test]
fn texts_past_the_sliding_window_match_fp32_and_batch_invariantly() {
    common::require_model("embeddinggemma-300m");
    let data = common::shared().join("data/sts/STSBenchmark_test.tsv");
    let lines = std::fs::read_to_string(data).unwrap();
    let sentences: Vec<&str> = lines.lines().skip(1).take(80).filter_map(|l| l.split('\t').nth(1)).collect();
    let (long, medium) = (sentences.join(" "), sentences[..45].join(" "));
    let int8 = registry::load("embeddinggemma").unwrap();
    let tokens = |t: &str| int8.tokenize_one("", t, true).unwrap().ids.len();
    assert!(tokens(&long) > 2 * 257 && tokens(&medium) > 257, "{} and {} tokens", tokens(&long), tokens(&medium));
    let fp32 = registry::load("embeddinggemma:fp32").unwrap();
    let embed = |m: &deposium_engine::Model, t: &[&String]| {
        m.embed(&deposium_engine::EmbedRequest::new(t.iter().map(|s| s.to_string()).collect())).unwrap().embeddings
    };
    let (q, f) = (embed(&int8, &[&long, &medium]), embed(&fp32, &[&long, &medium]));
    let s = fidelity::stats(&q, &f);
    assert!(s.min >= 0.999, "int8 vs fp32 on texts of {} and {} tokens: {s:?}", tokens(&long), tokens(&medium));
    assert_eq!(embed(&int8, &[&medium])[0], q[1], "the medium text alone vs padded next to the long one");
}

/// Real documents of mixed lengths (SciFact abstracts): each vector must be bit-identical whether the document is
/// embedded alone or padded inside a batch of longer ones (int8, w8a16 and int4 graphs).
#[test]
fn documents_are_bit_identical_alone_and_in_a_batch() {
    common::require_model("embeddinggemma-300m");
    let corpus = std::fs::read_to_string(common::shared().join("data/retrieval/SciFact/corpus.jsonl")).unwrap();
    let docs: Vec<String> = corpus
        .lines()
        .step_by(97)
        .take(24)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{} {}", v["title"].as_str().unwrap_or(""), v["text"].as_str().unwrap_or("")).trim().to_string()
        })
        .collect();
    for spec in ["embeddinggemma", "embeddinggemma:w8a16", "embeddinggemma:int4"] {
        let model = registry::load(spec).unwrap();
        let embed = |t: Vec<String>| model.embed(&deposium_engine::EmbedRequest::new(t)).unwrap().embeddings;
        let batched = embed(docs.clone());
        for (i, d) in docs.iter().enumerate() {
            assert_eq!(embed(vec![d.clone()])[0], batched[i], "{spec}: document {i} alone vs in the batch");
        }
    }
}
