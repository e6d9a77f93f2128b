//! What everyday clients send and expect (issue 20), in-process on the real EmbeddingGemma int8 and potion-base-8M:
//! TEI's `POST /`, `/tokenize` token objects, `/decode`, `/similarity` parameters, TEI status codes; OpenAI token ids
//! behind `--allow-token-ids`; Cohere/Jina `/v1/rerank`; Ollama conventions; CORS.
mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use deposium_server::{router, router_with_cors, Config};
use serde_json::{json, Value};
use support::{backends, state, GEMMA, POTION};
use tower::ServiceExt;

fn app() -> Router {
    router(state(Config::default()))
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let v = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, v)
}

async fn call(app: &Router, path: &str, body: Value) -> (StatusCode, Value) {
    let req =
        Request::post(path).header("content-type", "application/json").body(Body::from(body.to_string())).unwrap();
    let (st, _, v) = send(app, req).await;
    (st, v)
}

async fn ok(app: &Router, path: &str, body: Value) -> Value {
    let (st, v) = call(app, path, body.clone()).await;
    assert_eq!(st, StatusCode::OK, "{path} {body}: {v}");
    v
}

#[tokio::test]
async fn tei_root_serves_feature_extraction_and_sentence_similarity() {
    let app = app();
    // huggingface_hub's feature_extraction: {"inputs", "normalize", "prompt_name", "truncate", "truncation_direction"}.
    let body = json!({"inputs": ["What is Deep Learning?", "Paris"], "normalize": true, "prompt_name": "query",
        "truncate": true, "truncation_direction": "Right"});
    let at_root = ok(&app, "/", body.clone()).await;
    assert_eq!(at_root, ok(&app, "/embed", body).await);
    assert_eq!(at_root.as_array().unwrap().len(), 2);
    assert_eq!(at_root[0].as_array().unwrap().len(), 768);
    let one = ok(&app, "/", json!({"inputs": "What is Deep Learning?", "prompt_name": "query"})).await;
    assert_eq!(one[0], at_root[0]);
    // sentence_similarity: {"inputs": {"source_sentence", "sentences"}}, maybe with "parameters".
    let body = json!({"inputs": {"source_sentence": "A man is eating food.",
        "sentences": ["A man is eating pasta.", "A monkey plays drums."]}, "parameters": {"prompt_name": "STS"}});
    let scores = ok(&app, "/", body.clone()).await;
    assert_eq!(scores, ok(&app, "/similarity", body).await);
    let s: Vec<f64> = scores.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert!(s[0] > s[1], "{s:?}");
    // GET / stays Ollama's liveness answer.
    let (st, _, v) = send(&app, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!((st, v), (StatusCode::OK, json!("Ollama is running")));
    // Errors at the root are TEI's.
    let (st, v) = call(&app, "/", json!({"inputs": 5})).await;
    assert_eq!((st, v["error_type"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("validation")), "{v}");
}

#[tokio::test]
async fn similarity_parameters_apply() {
    let app = app();
    let inputs =
        json!({"source_sentence": "A man is eating food.", "sentences": ["A man is eating a piece of bread."]});
    let top = ok(&app, "/similarity", json!({"inputs": inputs, "prompt_name": "STS"})).await;
    let params =
        ok(&app, "/similarity", json!({"inputs": inputs, "parameters": {"prompt_name": "STS", "truncate": true}}))
            .await;
    let none = ok(&app, "/similarity", json!({"inputs": inputs})).await;
    assert_eq!(params, top);
    assert_ne!(params, none, "the prompt changes the score");
    let (st, v) = call(&app, "/similarity", json!({"inputs": inputs, "parameters": {"prompt_name": "nope"}})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"].as_str().unwrap().contains("known: "), "{v}");
    let (st, v) =
        call(&app, "/similarity", json!({"inputs": inputs, "parameters": {"truncation_direction": "Left"}})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
}

/// Characters `start..stop` of `s`.
fn chars(s: &str, start: u64, stop: u64) -> String {
    s.chars().skip(start as usize).take((stop - start) as usize).collect()
}

#[tokio::test]
async fn tokenize_returns_tei_tokens_and_decode_inverts_it() {
    let app = app();
    let text = "Héllo wörld, ça va? 東京";
    let v = ok(&app, "/tokenize", json!({"inputs": text})).await;
    let toks = v[0].as_array().unwrap();
    assert_eq!(toks[0]["special"], true, "<bos> first: {v}");
    assert_eq!(toks[0]["start"], Value::Null);
    assert_eq!(toks.last().unwrap()["special"], true, "<eos> last");
    let mut ids = Vec::new();
    for t in toks {
        ids.push(t["id"].as_u64().unwrap() as u32);
        if t["special"] == false {
            let (a, b) = (t["start"].as_u64().unwrap(), t["stop"].as_u64().unwrap());
            assert_eq!(t["text"].as_str().unwrap(), chars(text, a, b), "offsets are in characters: {t}");
        }
    }
    // The ids are the ones the model embeds.
    let (_, gemma) = &backends()[0];
    assert_eq!(ids, gemma.tokenize(text).unwrap());
    // Without special tokens; with the model's prompt (offsets then count in prompt + input).
    let v = ok(&app, "/tokenize", json!({"inputs": [text], "add_special_tokens": false})).await;
    assert!(v[0].as_array().unwrap().iter().all(|t| t["special"] == false));
    assert_eq!(v[0].as_array().unwrap().len(), ids.len() - 2);
    let v = ok(&app, "/tokenize", json!({"inputs": "Paris", "prompt_name": "query"})).await;
    let full = "task: search result | query: Paris";
    let last = v[0].as_array().unwrap().iter().rev().find(|t| t["special"] == false).unwrap();
    assert_eq!(last["text"], " Paris", "the prompt's trailing space joins the word");
    assert_eq!(chars(full, last["start"].as_u64().unwrap(), last["stop"].as_u64().unwrap()), " Paris");
    assert_eq!(v, ok(&app, "/tokenize", json!({"inputs": "Paris", "model": "embeddinggemma@query"})).await);

    // /decode: one list → one string; skip_special_tokens (default true).
    let v = ok(&app, "/decode", json!({"ids": ids})).await;
    assert_eq!(v, json!([text]));
    let v = ok(&app, "/decode", json!({"ids": [ids, ids], "skip_special_tokens": false})).await;
    let with = v[0].as_str().unwrap();
    assert!(with.starts_with("<bos>") && with.contains(text), "{with}");
    let (st, v) = call(&app, "/decode", json!({"ids": [4_000_000_000u64]})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (st, v) = call(&app, "/decode", json!({"ids": []})).await;
    assert_eq!((st, v["error_type"].clone()), (StatusCode::BAD_REQUEST, json!("empty")));

    // potion-base-8M: by default the tokens it embeds (no special tokens), [CLS]/[SEP] when asked.
    let texts = |v: &Value| -> Vec<String> {
        v[0].as_array().unwrap().iter().map(|t| t["text"].as_str().unwrap().to_string()).collect()
    };
    let v = ok(&app, "/tokenize", json!({"model": POTION, "inputs": "hello world"})).await;
    assert_eq!(texts(&v), ["hello", "world"]);
    let v = ok(&app, "/tokenize", json!({"model": POTION, "inputs": "hello world", "add_special_tokens": true})).await;
    assert_eq!(texts(&v), ["[CLS]", "hello", "world", "[SEP]"]);
}

#[tokio::test]
async fn tei_status_codes() {
    let app = router(state(Config { max_inputs: 4, ..Config::default() }));
    for (path, body, status, error_type) in [
        ("/embed", json!({"inputs": []}), 400, "empty"),
        ("/embed", json!({"inputs": 5}), 422, "validation"),
        ("/embed", json!({"inputs": ["a", "b", "c", "d", "e"]}), 413, "validation"),
        ("/embed", json!({"inputs": "a", "prompt_name": "nope"}), 422, "validation"),
        ("/embed", json!({"model": POTION, "inputs": "word ".repeat(600), "truncate": false}), 422, "tokenizer"),
        ("/rerank", json!({"query": "q", "texts": []}), 400, "empty"),
        ("/rerank", json!({"query": "q", "texts": "a", "raw_scores": "yes"}), 422, "validation"),
        ("/tokenize", json!({"inputs": {"a": 1}}), 422, "validation"),
        ("/similarity", json!({"inputs": {"source_sentence": "a", "sentences": []}}), 400, "empty"),
    ] {
        let (st, v) = call(&app, path, body.clone()).await;
        assert_eq!(st.as_u16(), status, "{path} {body}: {v}");
        assert_eq!(v["error_type"], error_type, "{path} {body}: {v}");
        assert!(v["error"].is_string());
    }
    // Malformed JSON: 400, as TEI's JSON extractor answers.
    let req = Request::post("/embed").body(Body::from("{\"inputs\": ")).unwrap();
    let (st, _, v) = send(&app, req).await;
    assert_eq!((st, v["error_type"].clone()), (StatusCode::BAD_REQUEST, json!("validation")));
    // Other families keep their own codes.
    let (st, v) = call(&app, "/api/embed", json!({"input": 5})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, v) = call(&app, "/v1/embeddings", json!({"input": 5})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
}

#[tokio::test]
async fn rerank_raw_scores_and_v1_rerank() {
    let app = app();
    let docs = ["Berlin is in Germany.", "Paris is the capital of France.", "The Louvre is in Paris."];
    let query = "What is the capital of France?";
    let tei = ok(&app, "/rerank", json!({"query": query, "texts": docs})).await;
    let raw = ok(&app, "/rerank", json!({"query": query, "texts": docs, "raw_scores": true})).await;
    assert_eq!(tei, raw, "cosines are already raw scores");
    let seed = ok(&app, "/api/rerank", json!({"query": query, "documents": docs})).await;

    // Cohere/Jina: {model, query, documents, top_n, return_documents} → {results: [{index, relevance_score, document?}]}.
    let v = ok(&app, "/v1/rerank", json!({"model": GEMMA, "query": query, "documents": docs})).await;
    assert_eq!(v["model"], GEMMA);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for (r, s) in results.iter().zip(seed["results"].as_array().unwrap()) {
        assert_eq!((&r["index"], &r["relevance_score"]), (&s["index"], &s["relevance_score"]));
        assert!(r.get("document").is_none());
    }
    assert_eq!(results[0]["index"], 1);
    assert!(v["usage"]["total_tokens"].as_u64().unwrap() > 20);
    let v = ok(
        &app,
        "/v1/rerank",
        json!({"model": "embeddinggemma@query", "query": query, "documents": [{"text": docs[0]}, docs[1]],
            "top_n": 1, "return_documents": true}),
    )
    .await;
    assert_eq!(v["results"].as_array().unwrap().len(), 1);
    assert_eq!(v["results"][0]["document"], json!({"text": docs[1]}));
    let (st, v) = call(&app, "/v1/rerank", json!({"query": query, "documents": []})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["param"], "documents", "OpenAI-family error shape: {v}");
    let (st, v) = call(&app, "/v1/rerank", json!({"model": "nope", "query": query, "documents": ["a"]})).await;
    assert_eq!((st, v["error"]["code"].clone()), (StatusCode::NOT_FOUND, json!("model_not_found")));
}

#[tokio::test]
async fn openai_token_ids_only_with_the_flag() {
    let text = "The quick brown fox jumps over the lazy dog.";
    let (_, gemma) = &backends()[0];
    let ids = gemma.tokenize(text).unwrap();
    let (st, v) = call(&app(), "/v1/embeddings", json!({"model": GEMMA, "input": [ids]})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("check_embedding_ctx_length=False"), "{v}");
    // tiktoken's ids for the same text (cl100k_base), as LangChain would send them: refused, not mis-embedded.
    let (st, _) =
        call(&app(), "/v1/embeddings", json!({"input": [[791, 4062, 14198, 39935, 35308, 927, 279, 16053, 5679, 13]]}))
            .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    let app = router(state(Config { allow_token_ids: true, ..Config::default() }));
    let by_ids = ok(&app, "/v1/embeddings", json!({"model": GEMMA, "input": [ids]})).await;
    let by_text = ok(&app, "/v1/embeddings", json!({"model": GEMMA, "input": text})).await;
    assert_eq!(by_ids["data"][0]["embedding"], by_text["data"][0]["embedding"]);
}

#[tokio::test]
async fn ollama_conventions() {
    let app = app();
    let v = ok(&app, "/api/embeddings", json!({"model": GEMMA})).await;
    assert_eq!(v, json!({"embedding": []}));
    let a = ok(&app, "/api/embed", json!({"model": GEMMA, "input": "hi", "dimensions": 0})).await;
    let b = ok(&app, "/api/embed", json!({"model": GEMMA, "input": "hi"})).await;
    assert_eq!(a["embeddings"], b["embeddings"]);
    assert_eq!(a["embeddings"][0].as_array().unwrap().len(), 768);
    let req = Request::get("/api/tags").body(Body::empty()).unwrap();
    let (_, _, v) = send(&app, req).await;
    for m in v["models"].as_array().unwrap() {
        assert_eq!(m["capabilities"], json!(["embedding"]), "{m}");
        for k in ["parent_model", "format", "family", "families", "parameter_size", "quantization_level"] {
            assert!(m["details"].get(k).is_some(), "details.{k}: {m}");
        }
    }
    let v = ok(&app, "/api/show", json!({"model": GEMMA})).await;
    assert_eq!(v["capabilities"], json!(["embedding"]));
    assert_eq!(v["model_info"]["gemma3.embedding_length"], 768);
}

#[tokio::test]
async fn cors_only_when_asked() {
    let preflight = || {
        Request::builder()
            .method("OPTIONS")
            .uri("/api/embed")
            .header("origin", "http://app.example")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .body(Body::empty())
            .unwrap()
    };
    let plain = router_with_cors(state(Config::default()), &[]).unwrap();
    let (_, h, _) = send(&plain, preflight()).await;
    assert!(h.get("access-control-allow-origin").is_none());

    let cors = router_with_cors(state(Config::default()), &["http://app.example".into()]).unwrap();
    let (st, h, _) = send(&cors, preflight()).await;
    assert!(st.is_success(), "{st}");
    assert_eq!(h["access-control-allow-origin"], "http://app.example");
    let req = Request::post("/api/embed")
        .header("origin", "http://app.example")
        .body(Body::from(json!({"model": POTION, "input": "hi"}).to_string()))
        .unwrap();
    let (st, h, _) = send(&cors, req).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["access-control-allow-origin"], "http://app.example");
    let other = Request::get("/api/tags").header("origin", "http://evil.example").body(Body::empty()).unwrap();
    let (_, h, _) = send(&cors, other).await;
    assert!(h.get("access-control-allow-origin").is_none());

    let any = router_with_cors(state(Config::default()), &["*".into()]).unwrap();
    let (_, h, _) = send(&any, preflight()).await;
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(router_with_cors(state(Config::default()), &["bad\norigin".into()]).is_err());
}
