//! An answer checked against what its request planned: the status, and every vector and score against the
//! single-request references.
use std::collections::HashSet;

use deposium_test_support::{base64_floats, cosine, floats};

use super::workload::{prompt_name, Check, Planned, Shape, Stats, Workload, P_DOCUMENT, P_NONE, P_QUERY};
use crate::http::Resp;

pub(super) enum Verdict {
    Ok,
    Rejected,
    Unexpected(String),
    Mismatch(String),
}

pub(super) fn check(work: &Workload, plan: &Planned, resp: &Resp, stats: &mut Stats) -> Verdict {
    if let Check::Status(want) = plan.check {
        if resp.status == want && resp.is_json_error() {
            return Verdict::Rejected;
        }
        return Verdict::Unexpected(format!(
            "{} {}: wanted {want} with a JSON error, got {} {}",
            plan.method,
            plan.path,
            resp.status,
            snippet(resp)
        ));
    }
    if resp.status == 429 && resp.is_json_error() {
        return Verdict::Rejected;
    }
    if resp.status != 200 {
        return Verdict::Unexpected(format!("status {} {}", resp.status, snippet(resp)));
    }
    let Some(v) = resp.json() else {
        return Verdict::Mismatch(format!("not JSON: {}", snippet(resp)));
    };
    match &plan.check {
        Check::Vectors { shape, model, items, dims, normalized } => {
            let got: Option<Vec<Vec<f32>>> = match shape {
                Shape::OllamaEmbed | Shape::LegacyList => {
                    v["embeddings"].as_array().and_then(|a| a.iter().map(floats).collect())
                }
                Shape::LegacySingle => floats(&v["embedding"]).map(|e| vec![e]),
                Shape::Tei => v.as_array().and_then(|a| a.iter().map(floats).collect()),
                Shape::OpenAiFloat | Shape::OpenAiBase64 => v["data"].as_array().and_then(|a| {
                    a.iter()
                        .enumerate()
                        .map(|(i, d)| {
                            if d["index"].as_u64() != Some(i as u64) {
                                return None;
                            }
                            if *shape == Shape::OpenAiBase64 {
                                d["embedding"].as_str().and_then(base64_floats)
                            } else {
                                floats(&d["embedding"])
                            }
                        })
                        .collect()
                }),
            };
            let Some(got) = got else {
                return Verdict::Mismatch(format!("unexpected response shape: {}", snippet(resp)));
            };
            let md = &work.models[*model];
            if got.len() != items.len() {
                return Verdict::Mismatch(format!("{} vectors for {} inputs", got.len(), items.len()));
            }
            let want_dim = dims.unwrap_or(md.dim);
            let entry = stats.vectors.entry(md.name.clone()).or_default();
            *stats.inputs_by_model.entry(md.name.clone()).or_default() += items.len() as u64;
            stats.batch_sizes.push(items.len());
            for (i, (g, &(t, p))) in got.iter().zip(items).enumerate() {
                let Some(r) = work.refs.get(&(*model, p, t)) else {
                    return Verdict::Mismatch(format!("no reference for text {t} prompt {p}"));
                };
                if g.len() != want_dim {
                    return Verdict::Mismatch(format!("input {i}: {} dims, wanted {want_dim}", g.len()));
                }
                let c = cosine(g, &r[..want_dim]);
                entry.checked += 1;
                entry.min_cosine = entry.min_cosine.min(c);
                if dims.is_none() && *normalized {
                    entry.comparable += 1;
                    entry.identical += u64::from(g == r);
                    if g != r && stats.not_identical.len() < 10 {
                        let max_diff = g.iter().zip(r.iter()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                        let example = format!(
                            "{} {} text {t} ({} tokens, prompt {:?}) in a request of {}: max |diff| {max_diff:e}, cosine {c:.9}",
                            md.name, plan.route, md.tokens[t], prompt_name(p), items.len()
                        );
                        stats.not_identical.push(example);
                    }
                }
                if c.is_nan() || c < work.cfg.min_cosine {
                    return Verdict::Mismatch(format!(
                        "input {i} (text {t}, {} tokens, prompt {:?}, dims {dims:?}): cosine {c:.7} to its single-request reference",
                        md.tokens[t],
                        prompt_name(p)
                    ));
                }
            }
            Verdict::Ok
        }
        Check::Rerank { tei, model, query, docs, top_k, with_text } => {
            let md = &work.models[*model];
            let results = if *tei { v.as_array() } else { v["results"].as_array() };
            let Some(results) = results else {
                return Verdict::Mismatch(format!("unexpected rerank shape: {}", snippet(resp)));
            };
            let want_len = top_k.unwrap_or(docs.len()).min(docs.len());
            if results.len() != want_len {
                return Verdict::Mismatch(format!("{} results, wanted {want_len}", results.len()));
            }
            let (qp, dp) =
                (if md.has_query { P_QUERY } else { P_NONE }, if md.has_document { P_DOCUMENT } else { P_NONE });
            let Some(qv) = work.refs.get(&(*model, qp, *query)) else {
                return Verdict::Mismatch(format!("no reference for query {query}"));
            };
            let mut all: Vec<(usize, f64)> =
                docs.iter().enumerate().map(|(i, &t)| (i, cosine(qv, &work.refs[&(*model, dp, t)]))).collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1));
            let kth = all[want_len - 1].1;
            let mut seen = HashSet::new();
            let mut prev = f64::INFINITY;
            let entry = stats.vectors.entry(md.name.clone()).or_default();
            *stats.inputs_by_model.entry(md.name.clone()).or_default() += docs.len() as u64 + 1;
            stats.batch_sizes.push(docs.len() + 1);
            for r in results {
                let (score_key, text_key) = if *tei { ("score", "text") } else { ("relevance_score", "document") };
                let (Some(index), Some(score)) = (r["index"].as_u64(), r[score_key].as_f64()) else {
                    return Verdict::Mismatch(format!("bad result {r}"));
                };
                let index = index as usize;
                if index >= docs.len() || !seen.insert(index) {
                    return Verdict::Mismatch(format!("bad or repeated index {index}"));
                }
                let want = all.iter().find(|(i, _)| *i == index).map(|x| x.1).unwrap_or(f64::NAN);
                entry.checked += 1;
                if want.is_nan() || (score - want).abs() > 1e-4 {
                    return Verdict::Mismatch(format!(
                        "document {index}: score {score} but the references give {want}"
                    ));
                }
                if score > prev + 1e-6 {
                    return Verdict::Mismatch(format!("results not sorted: {score} after {prev}"));
                }
                // Anything returned under top_k must be among the best (ties within rounding allowed).
                if score < kth - 1e-4 {
                    return Verdict::Mismatch(format!("document {index} (score {score}) is not in the top {want_len}"));
                }
                prev = score;
                if *with_text && r[text_key].as_str() != Some(work.texts[docs[index]].as_str()) {
                    return Verdict::Mismatch(format!("document {index}: wrong text returned"));
                }
            }
            Verdict::Ok
        }
        Check::Status(_) => unreachable!(),
    }
}

pub(super) fn snippet(r: &Resp) -> String {
    let t = r.text();
    if t.len() > 300 {
        format!("{}…", &t[..t.floor_char_boundary(300)])
    } else {
        t
    }
}
