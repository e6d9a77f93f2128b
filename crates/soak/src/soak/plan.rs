//! The next request of a client: route, model, texts and options, and what its answer must be.
use std::sync::atomic::{AtomicUsize, Ordering};

use deposium_test_support::Rng;
use serde_json::{json, Value};

use super::workload::{prompt_name, Check, Planned, Shape, Workload, P_DOCUMENT, P_NONE};

/// Pick texts for one request: `n` wanted, within a token budget for transformer models (at least one).
pub(super) fn pick_texts(work: &Workload, m: usize, n: usize, rng: &mut Rng) -> Vec<usize> {
    let md = &work.models[m];
    let mut out = Vec::with_capacity(n);
    let mut tokens = 0;
    let mut tries = 0;
    while out.len() < n && tries < n * 4 {
        tries += 1;
        let t = rng.below(md.n_texts);
        let cost = md.tokens[t] + 8;
        if md.heavy && !out.is_empty() && tokens + cost > work.cfg.heavy_request_tokens {
            continue;
        }
        tokens += cost;
        out.push(t);
    }
    out
}

/// The next request: route, model, texts, options, and what its answer must be.
pub(super) fn plan(work: &Workload, rng: &mut Rng, heavy_inflight: &AtomicUsize) -> Planned {
    let cfg = &work.cfg;
    if rng.chance(cfg.bad_share) {
        return plan_invalid(work, rng);
    }
    // A model; transformer models only while fewer than `heavy_clients` requests are on them.
    let mut m = rng.below(work.models.len());
    let mut heavy = work.models[m].heavy;
    if heavy && heavy_inflight.fetch_add(1, Ordering::Relaxed) >= cfg.heavy_clients {
        heavy_inflight.fetch_sub(1, Ordering::Relaxed);
        if let Some(light) = work.models.iter().position(|d| !d.heavy) {
            m = light;
            heavy = false;
        } else {
            heavy_inflight.fetch_add(1, Ordering::Relaxed);
        }
    }
    let md = &work.models[m];
    let name = md.name.as_str();
    let n = rng.log_uniform(1, cfg.max_batch);
    let doc_prompt = |rng: &mut Rng| {
        if md.has_document && rng.chance(0.5) {
            P_DOCUMENT
        } else {
            P_NONE
        }
    };
    let dims = |rng: &mut Rng| -> Option<usize> {
        let choices: Vec<usize> = md.matryoshka.iter().copied().filter(|&d| d < md.dim).collect();
        if !choices.is_empty() && rng.chance(0.2) {
            Some(*rng.pick(&choices))
        } else {
            None
        }
    };
    let strs = |items: &[usize]| -> Vec<&str> { items.iter().map(|&t| work.texts[t].as_str()).collect() };
    // `input`: one text as a bare string half the time, else a list.
    let input = |items: &[usize], rng: &mut Rng| -> Value {
        if items.len() == 1 && rng.chance(0.5) {
            json!(work.texts[items[0]])
        } else {
            json!(strs(items))
        }
    };
    let set_options = |body: &mut Value, p: u8, d: Option<usize>| {
        if let Some(pn) = prompt_name(p) {
            body["prompt_name"] = json!(pn);
        }
        if let Some(d) = d {
            body["dimensions"] = json!(d);
        }
    };
    let r = rng.unit();
    let (route, path, body, check) = if r < 0.19 {
        let items = pick_texts(work, m, n, rng);
        let p = doc_prompt(rng);
        let d = dims(rng);
        let mut body = json!({ "model": name, "input": input(&items, rng) });
        set_options(&mut body, p, d);
        let items = items.into_iter().map(|t| (t, p)).collect();
        (
            "/api/embed",
            "/api/embed",
            body,
            Check::Vectors { shape: Shape::OllamaEmbed, model: m, items, dims: d, normalized: true },
        )
    } else if r < 0.26 {
        let items = pick_texts(work, m, 1, rng);
        let p = doc_prompt(rng);
        let mut body = json!({ "model": name, "prompt": work.texts[items[0]] });
        set_options(&mut body, p, None);
        let items = items.into_iter().map(|t| (t, p)).collect();
        (
            "/api/embeddings (prompt)",
            "/api/embeddings",
            body,
            Check::Vectors { shape: Shape::LegacySingle, model: m, items, dims: None, normalized: true },
        )
    } else if r < 0.34 {
        let items = pick_texts(work, m, n, rng);
        let body = json!({ "model": name, "input": strs(&items) });
        let items = items.into_iter().map(|t| (t, P_NONE)).collect();
        (
            "/api/embeddings (input)",
            "/api/embeddings",
            body,
            Check::Vectors { shape: Shape::LegacyList, model: m, items, dims: None, normalized: true },
        )
    } else if r < 0.62 {
        let base64 = r >= 0.48;
        let items = pick_texts(work, m, n, rng);
        let p = doc_prompt(rng);
        let d = dims(rng);
        let mut body = json!({ "model": name, "input": input(&items, rng) });
        body["encoding_format"] = json!(if base64 { "base64" } else { "float" });
        set_options(&mut body, p, d);
        let items = items.into_iter().map(|t| (t, p)).collect();
        let (route, shape) = if base64 {
            ("/v1/embeddings (base64)", Shape::OpenAiBase64)
        } else {
            ("/v1/embeddings (float)", Shape::OpenAiFloat)
        };
        (route, "/v1/embeddings", body, Check::Vectors { shape, model: m, items, dims: d, normalized: true })
    } else if r < 0.80 {
        let items = pick_texts(work, m, n, rng);
        let p = doc_prompt(rng);
        let d = dims(rng);
        let normalize = !rng.chance(0.2);
        let mut body = json!({ "model": name, "inputs": strs(&items) });
        set_options(&mut body, p, d);
        if !normalize {
            body["normalize"] = json!(false);
        }
        let items = items.into_iter().map(|t| (t, p)).collect();
        (
            "/embed",
            "/embed",
            body,
            Check::Vectors { shape: Shape::Tei, model: m, items, dims: d, normalized: normalize },
        )
    } else {
        let tei = r < 0.90;
        let query = *rng.pick(&md.queries);
        let docs = pick_texts(work, m, n, rng);
        let top_k = if rng.chance(0.3) { Some(rng.log_uniform(1, docs.len())) } else { None };
        let with_text = rng.chance(0.5);
        let (route, path, mut body) = if tei {
            (
                "/rerank",
                "/rerank",
                json!({ "model": name, "query": work.texts[query], "texts": strs(&docs), "return_text": with_text }),
            )
        } else {
            (
                "/api/rerank",
                "/api/rerank",
                json!({ "model": name, "query": work.texts[query], "documents": strs(&docs) }),
            )
        };
        if let Some(k) = top_k {
            body[if tei { "top_n" } else { "top_k" }] = json!(k);
        }
        (route, path, body, Check::Rerank { tei, model: m, query, docs, top_k, with_text: with_text || !tei })
    };
    Planned {
        route,
        method: "POST",
        path,
        body: body.to_string().into_bytes(),
        close: false,
        model: Some(m),
        heavy,
        check,
    }
}

/// A deliberately invalid request and the status it must get.
pub(super) fn plan_invalid(work: &Workload, rng: &mut Rng) -> Planned {
    let light = work.models.iter().position(|m| !m.heavy).unwrap_or(0);
    let md = &work.models[light];
    let name = md.name.clone();
    let kind = rng.below(10);
    let (path, method, body, status): (&'static str, &'static str, Vec<u8>, u16) = match kind {
        0 => ("/api/embed", "POST", json!({"model": "no-such-model", "input": "x"}).to_string().into(), 404),
        1 => ("/v1/embeddings", "POST", json!({"model": "no-such-model", "input": "x"}).to_string().into(), 404),
        2 => ("/embed", "POST", br#"{"inputs": ["unterminated"#.to_vec(), 400),
        3 => (
            "/api/embed",
            "POST",
            json!({"model": name, "input": "x", "prompt_name": "no-such-prompt"}).to_string().into(),
            400,
        ),
        4 => {
            let long = "word ".repeat(md.max_tokens + 64);
            ("/v1/embeddings", "POST", json!({"model": name, "input": long, "truncate": false}).to_string().into(), 400)
        }
        5 => {
            let many = vec!["x"; work.max_inputs + 1];
            ("/api/embed", "POST", json!({"model": name, "input": many}).to_string().into(), 413)
        }
        6 if rng.chance(0.25) => ("/api/embed", "POST", work.oversized.clone(), 413),
        7 => ("/api/embed", "GET", Vec::new(), 405),
        8 => ("/api/rerank", "POST", Vec::new(), 400),
        _ => ("/v1/embeddings", "POST", json!({"model": name, "input": []}).to_string().into(), 400),
    };
    let _ = work.max_body_bytes;
    Planned {
        route: "invalid",
        method,
        path,
        body,
        close: true,
        model: None,
        heavy: false,
        check: Check::Status(status),
    }
}
