//! In-process tests of every route over a small fake backend (no model files needed).
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use deposium_engine::registry::ModelSpec;
use deposium_engine::{cosine, Backend, EmbedRequest, EngineError, Model, ModelInfo, Prompt};
use deposium_server::{router, AppState, BatchConfig, Config};
use deposium_test_support::{assert_openai_error, assert_plain_error, base64_floats, matrix, vector};
use serde_json::{json, Value};
use tower::ServiceExt;

const DIM: usize = 16;
const MAX_TOKENS: usize = 32;

/// Words → ids by hash; a vector from the ids. "nan" embeds to NaN, "panic" panics, every call sleeps `delay`.
struct Fake {
    info: ModelInfo,
    delay: Duration,
    calls: AtomicUsize,
    embedded: AtomicUsize,
    largest_batch: AtomicUsize,
}

impl Fake {
    fn new(name: &str, delay: Duration) -> Self {
        let prompts: BTreeMap<String, String> = [("query", "search_query: "), ("document", "search_document: ")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let info = ModelInfo {
            name: name.to_string(),
            family: "fake".into(),
            dim: DIM,
            max_tokens: MAX_TOKENS,
            prompts,
            default_prompt_name: None,
            quantization: "fp32".into(),
            size_bytes: 1234,
            parameter_count: Some(7_559_168),
            digest: "sha256:00".into(),
            matryoshka_dims: vec![8, 4],
            path: "/nonexistent".into(),
        };
        Fake {
            info,
            delay,
            calls: AtomicUsize::new(0),
            embedded: AtomicUsize::new(0),
            largest_batch: AtomicUsize::new(0),
        }
    }
}

const VOCAB: u32 = 1000;

impl Backend for Fake {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn tokenize(&self, text: &str) -> deposium_engine::Result<Vec<u32>> {
        let mut ids = vec![1];
        for w in text.split_whitespace() {
            let id = match w {
                "nan" => 4,
                "panic" => 5,
                _ => 10 + w.bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32)) % (VOCAB - 10),
            };
            ids.push(id);
        }
        ids.push(2);
        Ok(ids)
    }

    fn embed_tokens(&self, batch: &[Vec<u32>]) -> deposium_engine::Result<Vec<Vec<f32>>> {
        std::thread::sleep(self.delay);
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.embedded.fetch_add(batch.len(), Ordering::SeqCst);
        self.largest_batch.fetch_max(batch.len(), Ordering::SeqCst);
        batch
            .iter()
            .map(|ids| {
                if let Some(bad) = ids.iter().find(|&&id| id >= VOCAB) {
                    return Err(EngineError::InvalidInput(format!("token id {bad} is outside the vocabulary")));
                }
                if ids.contains(&5) {
                    panic!("fake backend asked to panic");
                }
                let mut v: Vec<f32> = (0..DIM)
                    .map(|j| {
                        ids.iter().map(|&id| ((id as f32 + 1.0) * (j as f32 + 1.0) * 0.37).sin()).sum::<f32>()
                            / ids.len() as f32
                    })
                    .collect();
                if ids.contains(&4) {
                    v[0] = f32::NAN;
                }
                deposium_engine::l2_normalize(&mut v);
                Ok(v)
            })
            .collect()
    }
}

fn spec(name: &str, aliases: &[&str]) -> ModelSpec {
    ModelSpec {
        name: name.into(),
        dir: "/nonexistent".into(),
        scheme: "fp32".into(),
        aliases: aliases.iter().map(|s| s.to_string()).collect(),
    }
}

struct Setup {
    app: Router,
    fake: Arc<Fake>,
    /// The same model outside the server (unbatched `Model::embed`), for reference vectors.
    reference: Model,
}

fn setup_with(config: Config, delay: Duration) -> Setup {
    let fake = Arc::new(Fake::new("fake", delay));
    let other = Arc::new(Fake::new("other", Duration::ZERO));
    let state = AppState::with_models(
        config,
        vec![
            (spec("fake", &["fake-alias", "fk:300m"]), Model::new(fake.clone())),
            (spec("other", &[]), Model::new(other)),
        ],
    );
    // A separate instance for reference vectors, so the server's counters see only server calls.
    Setup { app: router(state), reference: Model::new(Arc::new(Fake::new("fake", Duration::ZERO))), fake }
}

fn setup() -> Setup {
    setup_with(Config::default(), Duration::ZERO)
}

fn reference(model: &Model, texts: &[&str], prompt: Prompt) -> Vec<Vec<f32>> {
    let mut req = EmbedRequest::new(texts.iter().map(|s| s.to_string()).collect());
    req.prompt = prompt;
    model.embed(&req).unwrap().embeddings
}

async fn call_raw(
    app: &Router,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app.clone().oneshot(req.body(Body::from(body.to_string())).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn call(app: &Router, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let text = if body.is_null() { String::new() } else { body.to_string() };
    let (status, out) = call_raw(app, method, path, &text, &[]).await;
    let v = serde_json::from_str(&out).unwrap_or_else(|_| Value::String(out.clone()));
    (status, v)
}

fn assert_close(a: &[Vec<f32>], b: &[Vec<f32>]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.len(), y.len());
        assert!(cosine(x, y) > 0.999_999, "cosine {}", cosine(x, y));
        for (p, q) in x.iter().zip(y) {
            assert!((p - q).abs() < 1e-6, "{p} vs {q}");
        }
    }
}

#[tokio::test]
async fn ollama_embed_matches_engine() {
    let s = setup();
    let texts = ["hello world", "the capital of France is Paris", "x"];
    let (st, v) = call(&s.app, "POST", "/api/embed", json!({"model": "fake", "input": texts})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["model"], "fake");
    assert_close(&matrix(&v["embeddings"]), &reference(&s.reference, &texts, Prompt::Default));
    assert_eq!(v["prompt_eval_count"], json!(4 + 8 + 3));
    assert!(v["total_duration"].as_u64().unwrap() > 0);
    assert_eq!(v["load_duration"], json!(0));

    // One string, aliases, tags, keep_alive/options ignored, no model → the default.
    for model in [json!("fake-alias"), json!("fake:latest"), json!("fk:300m"), Value::Null] {
        let (st, v) = call(
            &s.app,
            "POST",
            "/api/embed",
            json!({"model": model, "input": "hello world", "keep_alive": "5m", "options": {"temperature": 0}}),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{model}: {v}");
        assert_close(&matrix(&v["embeddings"]), &reference(&s.reference, &["hello world"], Prompt::Default));
    }

    // Prompts by name and raw; dimensions.
    let (_, v) = call(&s.app, "POST", "/api/embed", json!({"input": ["a b"], "prompt_name": "query"})).await;
    assert_close(&matrix(&v["embeddings"]), &reference(&s.reference, &["a b"], Prompt::Named("query".into())));
    let (_, v) = call(&s.app, "POST", "/api/embed", json!({"input": ["a b"], "prompt": "zzz: "})).await;
    assert_close(&matrix(&v["embeddings"]), &reference(&s.reference, &["a b"], Prompt::Raw("zzz: ".into())));
    let (_, v) = call(&s.app, "POST", "/api/embed", json!({"input": ["a b"], "dimensions": 4})).await;
    let e = vector(&v["embeddings"][0]);
    assert_eq!(e.len(), 4);
    assert!((e.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);

    // Empty list and empty string → no embeddings.
    for input in [json!([]), json!("")] {
        let (st, v) = call(&s.app, "POST", "/api/embed", json!({"model": "fake", "input": input})).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(v["embeddings"], json!([]));
    }
}

#[tokio::test]
async fn ollama_errors() {
    let s = setup();
    let cases: Vec<(&str, StatusCode)> = vec![
        ("{not json", StatusCode::BAD_REQUEST),
        ("", StatusCode::BAD_REQUEST),
        (r#"{"input": 5}"#, StatusCode::BAD_REQUEST),
        (r#"{"input": ["a", 5]}"#, StatusCode::BAD_REQUEST),
        (r#"{"input": "a", "truncate": "yes"}"#, StatusCode::BAD_REQUEST),
        (r#"{"input": "a", "dimensions": -3}"#, StatusCode::BAD_REQUEST),
        (r#"{"input": "a", "dimensions": 999}"#, StatusCode::BAD_REQUEST),
        (r#"{"input": "a", "prompt_name": "nope"}"#, StatusCode::BAD_REQUEST),
        (r#"{"input": "a", "prompt_name": "query", "prompt": "x"}"#, StatusCode::BAD_REQUEST),
        (r#"{"model": "missing", "input": "a"}"#, StatusCode::NOT_FOUND),
        (r#"[1, 2]"#, StatusCode::BAD_REQUEST),
    ];
    for (body, want) in cases {
        let (st, out) = call_raw(&s.app, "POST", "/api/embed", body, &[]).await;
        assert_eq!(st, want, "{body}: {out}");
        assert_plain_error(&serde_json::from_str(&out).unwrap());
    }
    let (_, v) = call(&s.app, "POST", "/api/embed", json!({"model": "missing", "input": "a"})).await;
    assert!(v["error"].as_str().unwrap().contains("fake, other"), "{v}");

    // Too long with truncate=false → 400 with the reason; truncated by default.
    let long = vec!["word"; 100].join(" ");
    let (st, v) = call(&s.app, "POST", "/api/embed", json!({"input": [long.clone()], "truncate": false})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("limit"), "{v}");
    let (st, v) = call(&s.app, "POST", "/api/embed", json!({"input": [long]})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["prompt_eval_count"], json!(MAX_TOKENS));
}

#[tokio::test]
async fn legacy_embeddings_both_shapes() {
    let s = setup();
    let want = reference(&s.reference, &["hello there"], Prompt::Default);
    let (st, v) = call(&s.app, "POST", "/api/embeddings", json!({"model": "fake", "prompt": "hello there"})).await;
    assert_eq!(st, StatusCode::OK);
    assert_close(&[vector(&v["embedding"])], &want);
    assert!(v.get("embeddings").is_none());

    let (st, v) = call(&s.app, "POST", "/api/embeddings", json!({"model": "fake", "input": "hello there"})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["model"], "fake");
    assert_close(&matrix(&v["embeddings"]), &want);

    let (st, v) = call(&s.app, "POST", "/api/embeddings", json!({"input": ["hello there", "b"]})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["embeddings"].as_array().unwrap().len(), 2);

    // No text: Ollama answers an empty embedding (clients send this to load a model).
    let (st, v) = call(&s.app, "POST", "/api/embeddings", json!({"model": "fake"})).await;
    assert_eq!((st, v), (StatusCode::OK, json!({"embedding": []})));
    let (st, v) = call(&s.app, "POST", "/api/embeddings", json!({"model": "nope"})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_plain_error(&v);
    // `dimensions: 0` is unset, as in Ollama.
    let (st, v) = call(&s.app, "POST", "/api/embeddings", json!({"prompt": "a b", "dimensions": 0})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["embedding"].as_array().unwrap().len(), DIM);
    let (st, _) = call(&s.app, "POST", "/api/embeddings", json!({"prompt": ["a"]})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, v) = call(&s.app, "POST", "/api/embeddings", json!({"prompt": ""})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["embedding"], json!([]));
}

#[tokio::test]
async fn ollama_listing_routes() {
    let s = setup();
    let (st, body) = call_raw(&s.app, "GET", "/", "", &[]).await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, "Ollama is running"));
    let (st, body) = call_raw(&s.app, "HEAD", "/", "", &[]).await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, ""));

    let (_, v) = call(&s.app, "GET", "/api/tags", Value::Null).await;
    let m = &v["models"][0];
    assert_eq!(m["name"], "fake:latest");
    assert_eq!(m["model"], "fake:latest");
    assert_eq!(m["size"], 1234);
    assert_eq!(m["digest"], "sha256:00");
    assert!(m["modified_at"].as_str().unwrap().ends_with('Z'));
    for k in ["format", "family", "families", "parameter_size", "quantization_level"] {
        assert!(m["details"].get(k).is_some(), "details.{k}");
    }
    assert_eq!(m["details"]["parameter_size"], "7.6M");
    assert_eq!(m["details"]["quantization_level"], "F32");
    assert_eq!(m["aliases"], json!(["fake", "fake-alias", "fk:300m"]));
    assert_eq!(m["capabilities"], json!(["embedding"]));
    // Each model, then one `NAME@PROMPT` entry per prompt it defines.
    let names: Vec<&str> = v["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "fake:latest",
            "fake@query:latest",
            "fake@document:latest",
            "other:latest",
            "other@query:latest",
            "other@document:latest"
        ]
    );

    let (st, v) = call(&s.app, "POST", "/api/show", json!({"model": "fake-alias"})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["capabilities"], json!(["embedding"]));
    assert_eq!(v["model_info"]["fake.embedding_length"], DIM);
    assert_eq!(v["prompts"]["query"], "search_query: ");
    let (st, v) = call(&s.app, "POST", "/api/show", json!({"name": "nope"})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_plain_error(&v);

    let (_, v) = call(&s.app, "GET", "/api/ps", Value::Null).await;
    assert_eq!(v["models"][0]["name"], "fake:latest");
    let (_, v) = call(&s.app, "GET", "/api/version", Value::Null).await;
    assert!(v["version"].is_string());
}

#[tokio::test]
async fn openai_embeddings() {
    let s = setup();
    let texts = ["hello world", "another one"];
    let want = reference(&s.reference, &texts, Prompt::Default);
    let (st, v) = call(&s.app, "POST", "/v1/embeddings", json!({"model": "fake", "input": texts, "user": "u1"})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "fake");
    assert_eq!(v["data"][1]["object"], "embedding");
    assert_eq!(v["data"][1]["index"], 1);
    let got: Vec<Vec<f32>> = v["data"].as_array().unwrap().iter().map(|d| vector(&d["embedding"])).collect();
    assert_close(&got, &want);
    assert_eq!(v["usage"]["prompt_tokens"], json!(8));
    assert_eq!(v["usage"]["total_tokens"], json!(8));

    // base64: little-endian f32, bit-exact with the float response.
    let (_, b) =
        call(&s.app, "POST", "/v1/embeddings", json!({"model": "fake", "input": texts, "encoding_format": "base64"}))
            .await;
    for (i, d) in b["data"].as_array().unwrap().iter().enumerate() {
        assert_eq!(base64_floats(d["embedding"].as_str().unwrap()).unwrap(), got[i]);
    }

    // Token ids are refused by default (another tokenizer's ids would give wrong vectors), naming LangChain's fix.
    let ids = s.reference.backend().tokenize("hello world").unwrap();
    let (st, v) = call(&s.app, "POST", "/v1/embeddings", json!({"input": ids})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_openai_error(&v);
    assert_eq!(v["error"]["code"], "token_ids_not_allowed");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("check_embedding_ctx_length=False") && msg.contains("--allow-token-ids"), "{msg}");
    let (st, _) = call(&s.app, "POST", "/v1/embeddings", json!({"input": [ids, ids]})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // With --allow-token-ids: one list or several, equal to the same text's ids.
    let s = setup_with(Config { allow_token_ids: true, ..Config::default() }, Duration::ZERO);
    let (st, v) = call(&s.app, "POST", "/v1/embeddings", json!({"input": ids})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_close(&[vector(&v["data"][0]["embedding"])], &want[..1]);
    let (st, v) = call(&s.app, "POST", "/v1/embeddings", json!({"input": [ids, ids]})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["usage"]["prompt_tokens"], json!(8));

    let (_, v) = call(&s.app, "POST", "/v1/embeddings", json!({"input": "a", "dimensions": 8})).await;
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);
}

#[tokio::test]
async fn openai_errors() {
    let s = setup();
    let cases: Vec<(Value, StatusCode, Option<&str>)> = vec![
        (json!({"input": "a", "encoding_format": "int8"}), StatusCode::BAD_REQUEST, Some("encoding_format")),
        (json!({"input": "a", "encoding_format": 3}), StatusCode::BAD_REQUEST, None),
        (json!({"input": ""}), StatusCode::BAD_REQUEST, Some("input")),
        (json!({"input": []}), StatusCode::BAD_REQUEST, Some("input")),
        (json!({"input": [""]}), StatusCode::BAD_REQUEST, Some("input")),
        (json!({}), StatusCode::BAD_REQUEST, Some("input")),
        (json!({"input": {"a": 1}}), StatusCode::BAD_REQUEST, Some("input")),
        (json!({"input": [1, "a"]}), StatusCode::BAD_REQUEST, Some("input")),
        (json!({"input": [-1]}), StatusCode::BAD_REQUEST, Some("input")),
        (json!({"input": [1.5]}), StatusCode::BAD_REQUEST, Some("input")),
        (json!({"input": [[]]}), StatusCode::BAD_REQUEST, Some("input")),
        (json!({"input": [5000000]}), StatusCode::BAD_REQUEST, None),
        (json!({"input": [1, 2], "prompt_name": "query"}), StatusCode::BAD_REQUEST, Some("input")),
        (json!({"input": "a", "model": "gpt-4"}), StatusCode::NOT_FOUND, Some("model")),
    ];
    for (body, want, param) in cases {
        let (st, v) = call(&s.app, "POST", "/v1/embeddings", body.clone()).await;
        assert_eq!(st, want, "{body}: {v}");
        assert_openai_error(&v);
        if let Some(p) = param {
            assert_eq!(v["error"]["param"], p, "{body}: {v}");
        }
    }
    let (_, v) = call(&s.app, "POST", "/v1/embeddings", json!({"input": "a", "model": "gpt-4"})).await;
    assert_eq!(v["error"]["code"], "model_not_found");
    let (st, out) = call_raw(&s.app, "POST", "/v1/embeddings", "{\"input\": ", &[]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_openai_error(&serde_json::from_str(&out).unwrap());

    let (_, v) = call(&s.app, "GET", "/v1/models", Value::Null).await;
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "fake");
    assert_eq!(v["data"][0]["object"], "model");
    let (st, v) = call(&s.app, "GET", "/v1/models/fake-alias", Value::Null).await;
    assert_eq!((st, v["id"].clone()), (StatusCode::OK, json!("fake")));
    let (st, v) = call(&s.app, "GET", "/v1/models/nope", Value::Null).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_openai_error(&v);
    let (st, v) = call(&s.app, "GET", "/v1/nothing-here", Value::Null).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_openai_error(&v);
}

#[tokio::test]
async fn tei_routes() {
    let s = setup();
    let texts = ["one two", "three"];
    let (st, v) = call(&s.app, "POST", "/embed", json!({"inputs": texts})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_close(&matrix(&v), &reference(&s.reference, &texts, Prompt::Default));
    let (_, v) = call(&s.app, "POST", "/embed", json!({"inputs": "one two", "prompt_name": "document"})).await;
    assert_close(&matrix(&v), &reference(&s.reference, &["one two"], Prompt::Named("document".into())));
    let (_, v) =
        call(&s.app, "POST", "/embed", json!({"inputs": "one two", "normalize": false, "dimensions": 4})).await;
    assert_eq!(v[0].as_array().unwrap().len(), 4);

    // TEI's status codes: empty batch 400 `empty`, validation 422.
    let (st, v) = call(&s.app, "POST", "/embed", json!({"inputs": []})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["error_type"], "empty", "{v}");
    let (st, v) = call(&s.app, "POST", "/embed", json!({"inputs": "a", "truncation_direction": "Left"})).await;
    assert_eq!((st, v["error_type"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("validation")));

    let (st, v) = call(
        &s.app,
        "POST",
        "/similarity",
        json!({"inputs": {"source_sentence": "one two", "sentences": ["one two", "three"]}}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let scores = vector(&v);
    assert!((scores[0] - 1.0).abs() < 1e-5);
    let r = reference(&s.reference, &["one two", "three"], Prompt::Default);
    assert!((scores[1] - cosine(&r[0], &r[1])).abs() < 1e-5);
    let (st, _) = call(&s.app, "POST", "/similarity", json!({"inputs": {"sentences": ["a"]}})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);

    // This fake backend has no tokenizer to show (the real models' tokens: tests/tei_compat.rs).
    let (st, v) = call(&s.app, "POST", "/tokenize", json!({"inputs": ["hello world", "x"]})).await;
    assert_eq!((st, v["error_type"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("validation")), "{v}");

    let (st, v) = call(&s.app, "GET", "/info", Value::Null).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["model_id"], "fake");
    assert_eq!(v["max_input_length"], MAX_TOKENS);
    assert_eq!(v["models"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn rerank_routes() {
    let s = setup();
    let docs = ["the cat sat", "paris is the capital of france", "x y z", "paris is the capital of france"];
    let query = "capital of france";
    let (st, v) =
        call(&s.app, "POST", "/api/rerank", json!({"model": "fake", "query": query, "documents": docs})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["model"], "fake");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    // Scores are the cosines of the query (query prompt) and documents (document prompt).
    let q = reference(&s.reference, &[query], Prompt::Named("query".into()));
    let d = reference(&s.reference, &docs, Prompt::Named("document".into()));
    for r in results {
        let i = r["index"].as_u64().unwrap() as usize;
        assert_eq!(r["document"], docs[i]);
        let want = cosine(&q[0], &d[i]);
        assert!((r["relevance_score"].as_f64().unwrap() as f32 - want).abs() < 1e-5);
    }
    let scores: Vec<f64> = results.iter().map(|r| r["relevance_score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "sorted: {scores:?}");
    // Ties keep input order.
    let tied: Vec<u64> = results.iter().map(|r| r["index"].as_u64().unwrap()).filter(|&i| i == 1 || i == 3).collect();
    assert_eq!(tied, vec![1, 3]);

    // texts/top_n spellings, top_k after sorting, prompt_name override.
    let (_, v) = call(&s.app, "POST", "/api/rerank", json!({"query": query, "texts": docs, "top_n": 2})).await;
    assert_eq!(v["results"].as_array().unwrap().len(), 2);
    assert_eq!(v["results"][0]["index"], results[0]["index"]);
    let (_, v) = call(&s.app, "POST", "/api/rerank", json!({"query": query, "documents": docs, "top_k": 99})).await;
    assert_eq!(v["results"].as_array().unwrap().len(), 4);
    let (_, v) =
        call(&s.app, "POST", "/api/rerank", json!({"query": query, "documents": ["x y z"], "prompt_name": "query"}))
            .await;
    let d = reference(&s.reference, &["x y z"], Prompt::Named("query".into()));
    assert!((v["results"][0]["relevance_score"].as_f64().unwrap() as f32 - cosine(&q[0], &d[0])).abs() < 1e-5);

    for (body, want) in [
        (json!({"query": query, "documents": []}), StatusCode::BAD_REQUEST),
        (json!({"query": query}), StatusCode::BAD_REQUEST),
        (json!({"documents": ["a"]}), StatusCode::BAD_REQUEST),
        (json!({"query": query, "documents": [1]}), StatusCode::BAD_REQUEST),
        (json!({"query": query, "documents": ["a"], "top_k": 0}), StatusCode::BAD_REQUEST),
        (json!({"model": "nope", "query": query, "documents": ["a"]}), StatusCode::NOT_FOUND),
    ] {
        let (st, v) = call(&s.app, "POST", "/api/rerank", body.clone()).await;
        assert_eq!(st, want, "{body}: {v}");
        assert_plain_error(&v);
    }
    let (_, v) = call(&s.app, "POST", "/api/rerank", json!({"model": "nope", "query": "q", "documents": ["a"]})).await;
    assert!(v["error"].as_str().unwrap().contains("available: fake, other"));

    // TEI shape: [{index, score, text?}].
    let (st, v) = call(&s.app, "POST", "/rerank", json!({"query": query, "texts": docs, "return_text": true})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v[0]["index"], results[0]["index"]);
    assert_eq!(v[0]["score"], results[0]["relevance_score"]);
    assert!(v[0]["text"].is_string());
    let (_, v) = call(&s.app, "POST", "/rerank", json!({"query": query, "documents": docs, "top_k": 1})).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert!(v[0].get("text").is_none());

    // 1,000 documents in one request.
    let many: Vec<String> = (0..1000).map(|i| format!("document number {i}")).collect();
    let (st, v) = call(&s.app, "POST", "/api/rerank", json!({"query": "number 7", "documents": many})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["results"].as_array().unwrap().len(), 1000);
}

#[tokio::test]
async fn limits_are_enforced() {
    let config = Config { max_inputs: 100, max_body_bytes: 10_000, ..Config::default() };
    let s = setup_with(config, Duration::ZERO);
    let too_many: Vec<String> = (0..101).map(|i| i.to_string()).collect();
    let (st, v) = call(&s.app, "POST", "/api/embed", json!({"input": too_many})).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(v["error"].as_str().unwrap().contains("--max-inputs"));
    let (st, v) = call(&s.app, "POST", "/v1/embeddings", json!({"input": too_many})).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert_openai_error(&v);

    let big = "a ".repeat(10_000);
    let (st, v) = call(&s.app, "POST", "/api/embed", json!({"input": big})).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(v["error"].as_str().unwrap().contains("--max-body-bytes"), "{v}");
    let (st, v) = call(&s.app, "POST", "/v1/embeddings", json!({"input": big})).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert_openai_error(&v);
    let (st, v) = call(&s.app, "POST", "/embed", json!({"inputs": big})).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(v["error_type"].is_string());
}

#[tokio::test]
async fn api_key_guards_all_but_health() {
    let config = Config { api_key: Some("s3cret".into()), ..Config::default() };
    let s = setup_with(config, Duration::ZERO);
    let body = r#"{"input": "a"}"#;
    let (st, out) = call_raw(&s.app, "POST", "/api/embed", body, &[]).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_plain_error(&serde_json::from_str(&out).unwrap());
    let (st, out) = call_raw(&s.app, "POST", "/v1/embeddings", body, &[("authorization", "Bearer wrong")]).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_openai_error(&serde_json::from_str(&out).unwrap());
    let (st, _) = call_raw(&s.app, "POST", "/v1/embeddings", body, &[("authorization", "Bearer s3cret")]).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = call_raw(&s.app, "GET", "/metrics", "", &[]).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    for open in ["/health", "/", "/docs/"] {
        let (st, _) = call_raw(&s.app, "GET", open, "", &[]).await;
        assert_eq!(st, StatusCode::OK, "{open}");
    }
    // TEI's POST / embeds: it needs the key like every other embed route.
    let (st, _) = call_raw(&s.app, "POST", "/", r#"{"inputs": "a"}"#, &[]).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = call_raw(&s.app, "POST", "/", r#"{"inputs": "a"}"#, &[("authorization", "Bearer s3cret")]).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn docs_page_is_served_from_the_binary() {
    let s = setup();
    let (st, html) = call_raw(&s.app, "GET", "/docs/", "", &[]).await;
    assert_eq!(st, StatusCode::OK);
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(!html.contains("https://"), "no asset from a CDN: {html}");
    let (st, init) = call_raw(&s.app, "GET", "/docs/swagger-initializer.js", "", &[]).await;
    assert_eq!(st, StatusCode::OK);
    assert!(init.contains("/openapi.json"), "{init}");
    let (st, js) = call_raw(&s.app, "GET", "/docs/swagger-ui-bundle.js", "", &[]).await;
    assert_eq!(st, StatusCode::OK);
    assert!(js.len() > 100_000);
}

#[tokio::test]
async fn nan_and_panic_are_500_and_server_keeps_serving() {
    let s = setup();
    let (st, v) = call(&s.app, "POST", "/api/embed", json!({"input": ["fine", "nan"]})).await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(v["error"].as_str().unwrap().contains("NaN"), "{v}");
    // TEI routes answer a backend failure with 424 `backend`, as TEI does.
    let (st, v) = call(&s.app, "POST", "/embed", json!({"inputs": ["nan"]})).await;
    assert_eq!((st, v["error_type"].clone()), (StatusCode::FAILED_DEPENDENCY, json!("backend")), "{v}");
    let (st, v) = call(&s.app, "POST", "/v1/embeddings", json!({"input": ["panic"]})).await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
    assert_openai_error(&v);
    let (st, _) = call(&s.app, "POST", "/api/embed", json!({"input": ["fine"]})).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn batched_results_equal_unbatched() {
    // Small steps so concurrent requests share steps and big ones are split.
    let config =
        Config { batch: BatchConfig { max_batch_tokens: 64, max_batch_size: 4, workers: 2 }, ..Config::default() };
    let s = setup_with(config, Duration::from_millis(1));
    let mut tasks = Vec::new();
    for r in 0..24 {
        let app = s.app.clone();
        let texts: Vec<String> =
            (0..(r % 7 + 1)).map(|i| format!("request {r} text {i} {}", "w ".repeat(i * 3))).collect();
        tasks.push(tokio::spawn(async move {
            let (st, v) = call(&app, "POST", "/api/embed", json!({"input": texts})).await;
            assert_eq!(st, StatusCode::OK);
            (texts, matrix(&v["embeddings"]))
        }));
    }
    for t in tasks {
        let (texts, got) = t.await.unwrap();
        let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
        let want = reference(&s.reference, &refs, Prompt::Default);
        assert_eq!(got, want, "batched vectors must be bit-identical to unbatched");
    }
    assert!(s.fake.largest_batch.load(Ordering::SeqCst) <= 4);

    // An oversized client batch is split, not refused.
    let texts: Vec<String> = (0..300).map(|i| format!("t{i}")).collect();
    let (st, v) = call(&s.app, "POST", "/api/embed", json!({"input": texts})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["embeddings"].as_array().unwrap().len(), 300);
    assert!(s.fake.largest_batch.load(Ordering::SeqCst) <= 4);

    // A bad request sharing steps with good ones fails alone.
    let bad = tokio::spawn({
        let app = s.app.clone();
        async move { call(&app, "POST", "/v1/embeddings", json!({"input": [[1, 2, 5000]]})).await }
    });
    let good = call(&s.app, "POST", "/api/embed", json!({"input": ["good one"]})).await;
    assert_eq!(good.0, StatusCode::OK);
    assert_eq!(bad.await.unwrap().0, StatusCode::BAD_REQUEST);

    let (_, metrics) = call_raw(&s.app, "GET", "/metrics", "", &[]).await;
    for needle in [
        "deposium_requests_total{route=\"/api/embed\",status=\"200\"}",
        "deposium_queue_depth{model=\"fake\"} 0",
        "deposium_tokenize_seconds_bucket{model=\"fake\"",
        "deposium_inference_seconds_count{model=\"fake\"}",
        "deposium_batch_size_bucket{model=\"fake\",le=\"4\"}",
        "deposium_request_duration_seconds_bucket{route=\"/api/embed\"",
    ] {
        assert!(metrics.contains(needle), "metrics lack {needle}:\n{metrics}");
    }
}

#[tokio::test]
async fn concurrency_limit_gives_429() {
    let config = Config { max_concurrent_requests: 1, ..Config::default() };
    let s = setup_with(config, Duration::from_millis(300));
    let slow = tokio::spawn({
        let app = s.app.clone();
        async move { call(&app, "POST", "/api/embed", json!({"input": "slow"})).await.0 }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (st, v) = call(&s.app, "POST", "/v1/embeddings", json!({"input": "x"})).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_openai_error(&v);
    let (st, _) = call_raw(&s.app, "GET", "/health", "", &[]).await;
    assert_eq!(st, StatusCode::OK, "health is outside the limit");
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
    let (st, _) = call(&s.app, "POST", "/api/embed", json!({"input": "x"})).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn dropped_request_leaks_no_work() {
    let s = setup_with(
        Config { batch: BatchConfig { max_batch_tokens: 10_000, max_batch_size: 1, workers: 1 }, ..Config::default() },
        Duration::from_millis(20),
    );
    // A 50-input request whose client goes away after ~100 ms.
    let texts: Vec<String> = (0..50).map(|i| format!("doomed {i}")).collect();
    let app = s.app.clone();
    let doomed = tokio::spawn(async move { call(&app, "POST", "/api/embed", json!({"input": texts})).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    doomed.abort();
    let _ = doomed.await;
    // Others are still answered; the rest of the dropped request is skipped.
    let (st, _) = call(&s.app, "POST", "/api/embed", json!({"input": ["survivor"]})).await;
    assert_eq!(st, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let embedded = s.fake.embedded.load(Ordering::SeqCst);
    assert!(embedded < 20, "{embedded} inputs embedded: the dropped request's work went on");
    let (_, metrics) = call_raw(&s.app, "GET", "/metrics", "", &[]).await;
    assert!(metrics.contains("deposium_queue_depth{model=\"fake\"} 0"), "{metrics}");
    assert!(metrics.contains("route=\"/api/embed\",status=\"499\""), "{metrics}");
    assert!(!metrics.contains("deposium_cancelled_inputs_total{model=\"fake\"} 0"), "{metrics}");
}

#[tokio::test]
async fn loading_and_failed_models() {
    // Nothing loads here: one model stays "loading", one cannot be resolved.
    let state = AppState::new(Config::default(), &["potion-base-8M".to_string(), "no-such-model".to_string()]);
    let app = router(state);
    let (st, v) = call(&app, "GET", "/health", Value::Null).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["status"], "loading");
    assert_eq!(v["models"][1]["status"], "failed");
    assert!(v["models"][1]["error"].as_str().unwrap().contains("no-such-model"));
    let (st, v) = call(&app, "POST", "/api/embed", json!({"input": "a"})).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert!(v["error"].as_str().unwrap().contains("loading"), "{v}");
    let (st, _) = call(&app, "POST", "/api/embed", json!({"model": "potion", "input": "a"})).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    let (_, v) = call(&app, "GET", "/api/status", Value::Null).await;
    assert_eq!(v["status"], "loading");
    assert_eq!(v["models"][1]["status"], "failed");
}

#[tokio::test]
async fn status_metrics_openapi_fallbacks() {
    let s = setup();
    call(&s.app, "POST", "/api/embed", json!({"input": "a"})).await;
    let (st, v) = call(&s.app, "GET", "/api/status", Value::Null).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["models"][0]["name"], "fake");
    assert_eq!(v["models"][0]["memory_bytes"], 1234);
    assert_eq!(v["models"][0]["requests"], 1);
    assert!(v["uptime_seconds"].as_f64().unwrap() >= 0.0);
    assert!(v["requests"]["total"].as_u64().unwrap() >= 1);

    let (st, v) = call(&s.app, "GET", "/health", Value::Null).await;
    assert_eq!((st, v["status"].clone()), (StatusCode::OK, json!("ok")));

    let (st, v) = call(&s.app, "GET", "/openapi.json", Value::Null).await;
    assert_eq!(st, StatusCode::OK);
    let paths = v["paths"].as_object().expect("openapi paths");
    for p in [
        "/",
        "/api/embed",
        "/api/embeddings",
        "/api/tags",
        "/api/show",
        "/api/ps",
        "/api/version",
        "/api/rerank",
        "/api/status",
        "/v1/embeddings",
        "/v1/models",
        "/v1/models/{id}",
        "/embed",
        "/rerank",
        "/similarity",
        "/tokenize",
        "/decode",
        "/v1/rerank",
        "/info",
        "/health",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(paths.contains_key(p), "openapi.json lacks {p}");
    }
    assert!(paths["/"]["post"].is_object(), "TEI's POST /");
    assert!(paths["/embed"]["post"]["responses"]["422"].is_object());

    let (st, v) = call(&s.app, "GET", "/nope", Value::Null).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_plain_error(&v);
    let (st, v) = call(&s.app, "GET", "/api/embed", Value::Null).await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
    assert_plain_error(&v);
}
