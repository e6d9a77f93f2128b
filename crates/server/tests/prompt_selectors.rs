//! `NAME@PROMPT` model names and `--default-prompt-name`, in-process, on the real EmbeddingGemma int8 and
//! potion-base-8M: a selector gives the very vectors of the same `prompt_name` in the body, on every route family.
mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use clap::Parser;
use deposium_server::{router, Config, ServeArgs};
use serde_json::{json, Value};
use support::{state, GEMMA, POTION};
use tower::ServiceExt;

const TEXTS: [&str; 2] = ["Which planet is known as the red planet?", "Mars is often called the red planet."];

fn app_with(config: Config) -> Router {
    router(state(config))
}

fn app() -> Router {
    app_with(Config::default())
}

async fn call(app: &Router, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(if body.is_null() { String::new() } else { body.to_string() }))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let v = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, v)
}

async fn ok(app: &Router, path: &str, body: Value) -> Value {
    let (st, v) = call(app, "POST", path, body.clone()).await;
    assert_eq!(st, StatusCode::OK, "{path} {body}: {v}");
    v
}

/// `/api/embed` vectors for a body.
async fn ollama(app: &Router, body: Value) -> Value {
    ok(app, "/api/embed", body).await["embeddings"].clone()
}

#[tokio::test]
async fn selector_equals_prompt_name_on_every_route() {
    let app = app();
    let texts = json!(TEXTS);
    let plain = ollama(&app, json!({"model": GEMMA, "input": texts})).await;
    for (name, prompt) in [
        ("embeddinggemma@query", "query"),
        ("embeddinggemma@document", "document"),
        ("embeddinggemma@STS", "STS"),
        ("embeddinggemma@Retrieval-query", "Retrieval-query"),
        ("gemma-int8@query", "query"),
        ("embeddinggemma:latest@query", "query"),
        ("embeddinggemma@query:latest", "query"),
        ("embeddinggemma:300m@document", "document"),
        ("embeddinggemma@sts", "STS"),
    ] {
        let by_body = ollama(&app, json!({"model": GEMMA, "input": texts, "prompt_name": prompt})).await;
        let v = ok(&app, "/api/embed", json!({"model": name, "input": texts})).await;
        assert_eq!(v["embeddings"], by_body, "/api/embed {name}");
        assert_eq!(v["model"], name, "the response echoes the name sent");
        assert_ne!(by_body, plain, "{prompt} changes the vectors");

        let v = ok(&app, "/v1/embeddings", json!({"model": name, "input": texts})).await;
        assert_eq!(v["model"], name);
        let data: Vec<Value> = v["data"].as_array().unwrap().iter().map(|d| d["embedding"].clone()).collect();
        assert_eq!(Value::Array(data), by_body, "/v1/embeddings {name}");

        let v = ok(&app, "/embed", json!({"model": name, "inputs": texts})).await;
        assert_eq!(v, by_body, "/embed {name}");

        let v = ok(&app, "/api/embeddings", json!({"model": name, "prompt": TEXTS[0]})).await;
        assert_eq!(v["embedding"], by_body[0], "/api/embeddings {name}");
        let v = ok(&app, "/api/embeddings", json!({"model": name, "input": texts})).await;
        assert_eq!(v["embeddings"], by_body, "/api/embeddings input {name}");
    }
    // TEI /similarity and /tokenize take the selector too.
    let sim = |model: &str, prompt: Option<&str>| {
        let mut b = json!({"model": model, "inputs": {"source_sentence": TEXTS[0], "sentences": [TEXTS[1]]}});
        if let Some(p) = prompt {
            b["prompt_name"] = json!(p);
        }
        b
    };
    let by_body = ok(&app, "/similarity", sim(GEMMA, Some("STS"))).await;
    assert_eq!(ok(&app, "/similarity", sim("embeddinggemma@STS", None)).await, by_body);
    let by_body = ok(&app, "/tokenize", json!({"model": GEMMA, "inputs": "hi", "prompt_name": "query"})).await;
    let by_sel = ok(&app, "/tokenize", json!({"model": "embeddinggemma@query", "inputs": "hi"})).await;
    assert_eq!(by_sel, by_body);
}

#[tokio::test]
async fn body_prompt_wins_over_selector() {
    let app = app();
    let texts = json!(TEXTS);
    let document = ollama(&app, json!({"model": GEMMA, "input": texts, "prompt_name": "document"})).await;
    let v = ollama(&app, json!({"model": "embeddinggemma@query", "input": texts, "prompt_name": "document"})).await;
    assert_eq!(v, document);
    let raw = ollama(&app, json!({"model": GEMMA, "input": texts, "prompt": "title: none | text: "})).await;
    assert_eq!(raw, document, "the raw prefix equals the named prompt");
    let v =
        ollama(&app, json!({"model": "embeddinggemma@query", "input": texts, "prompt": "title: none | text: "})).await;
    assert_eq!(v, document);
    // An empty prompt_name asks for no prompt, whatever the name selects.
    let none = ollama(&app, json!({"model": GEMMA, "input": texts})).await;
    let v = ollama(&app, json!({"model": "embeddinggemma@query", "input": texts, "prompt_name": ""})).await;
    assert_eq!(v, none);
}

#[tokio::test]
async fn rerank_with_selectors() {
    let app = app();
    let docs = json!(["Venus is the hottest planet.", "Mars is often called the red planet.", "Paris is in France."]);
    let seed = |model: &str, prompt: Option<&str>| {
        let mut b = json!({"model": model, "query": TEXTS[0], "documents": docs});
        if let Some(p) = prompt {
            b["prompt_name"] = json!(p);
        }
        b
    };
    let scores = |v: &Value| -> Vec<(u64, f64)> {
        let items = if v.is_array() { v.clone() } else { v["results"].clone() };
        items
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["index"].as_u64().unwrap(), r["relevance_score"].as_f64().or(r["score"].as_f64()).unwrap()))
            .collect()
    };
    // A selector outside the query/document pair applies to both sides, exactly as `prompt_name` does.
    let by_body = ok(&app, "/api/rerank", seed(GEMMA, Some("STS"))).await;
    let by_sel = ok(&app, "/api/rerank", seed("embeddinggemma@STS", None)).await;
    assert_eq!(scores(&by_sel), scores(&by_body));
    assert_eq!(by_sel["model"], "embeddinggemma@STS");
    // `@query` / `@document` keep the pair: query prompt on the query, document prompt on the documents.
    let pair = ok(&app, "/api/rerank", seed(GEMMA, None)).await;
    assert_eq!(scores(&pair)[0].0, 1, "Mars ranks first: {pair}");
    for name in ["embeddinggemma@query", "embeddinggemma@document", "embeddinggemma@Retrieval-query"] {
        let v = ok(&app, "/api/rerank", seed(name, None)).await;
        assert_eq!(scores(&v), scores(&pair), "{name}");
    }
    assert_ne!(scores(&by_body), scores(&pair));
    // The same on TEI's /rerank and its `model` field.
    let tei = |model: &str, prompt: Option<&str>| {
        let mut b = json!({"model": model, "query": TEXTS[0], "texts": docs});
        if let Some(p) = prompt {
            b["prompt_name"] = json!(p);
        }
        b
    };
    let by_body = ok(&app, "/rerank", tei(GEMMA, Some("STS"))).await;
    assert_eq!(scores(&ok(&app, "/rerank", tei("embeddinggemma@STS", None)).await), scores(&by_body));
    assert_eq!(scores(&ok(&app, "/rerank", tei("embeddinggemma@query", None)).await), scores(&pair));
}

#[tokio::test]
async fn unknown_selectors_are_404_in_each_family() {
    let app = app();
    for (model, listed) in [("embeddinggemma@nope", "query, document, "), ("potion-base-8M@query", "none")] {
        let (st, v) = call(&app, "POST", "/api/embed", json!({"model": model, "input": "a"})).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(model) && msg.contains(listed), "{msg}");

        let (st, v) = call(&app, "POST", "/v1/embeddings", json!({"model": model, "input": "a"})).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["param"], "model");
        assert!(v["error"]["message"].as_str().unwrap().contains(listed), "{v}");

        let (st, v) = call(&app, "POST", "/embed", json!({"model": model, "inputs": "a"})).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
        assert!(v["error"].as_str().unwrap().contains(listed) && v["error_type"].is_string(), "{v}");

        let (st, v) =
            call(&app, "POST", "/api/rerank", json!({"model": model, "query": "a", "documents": ["b"]})).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
        let (st, v) = call(&app, "POST", "/api/show", json!({"model": model})).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
        assert!(v["error"].as_str().unwrap().contains(listed), "{v}");
        let (st, _) = call(&app, "GET", &format!("/v1/models/{model}"), Value::Null).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
    }
    // A selector on an unknown model names the model, as any unknown model does.
    let (st, v) = call(&app, "POST", "/api/embed", json!({"model": "nomic-embed-text@query", "input": "a"})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(v["error"].as_str().unwrap().contains("available: embeddinggemma, potion-base-8M"), "{v}");
}

#[tokio::test]
async fn listings_show_the_selectors() {
    let app = app();
    let (_, v) = call(&app, "GET", "/api/tags", Value::Null).await;
    let models = v["models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names[0], "embeddinggemma:latest");
    assert_eq!(names[1], "embeddinggemma@query:latest");
    assert_eq!(names[2], "embeddinggemma@document:latest");
    assert_eq!(names.len(), 1 + 14 + 1, "gemma, its 14 prompts, potion: {names:?}");
    assert_eq!(*names.last().unwrap(), "potion-base-8M:latest");
    let q = &models[1];
    assert_eq!(q["prompt_name"], "query");
    assert_eq!(q["prompt"], "task: search result | query: ");
    assert_eq!(q["details"], models[0]["details"]);
    assert!(q["digest"].is_string() && q["size"].is_u64() && q["modified_at"].is_string());
    assert!(models[0]["prompt_selectors"].as_array().unwrap().contains(&json!("embeddinggemma@STS")));
    assert_eq!(models.last().unwrap()["prompt_selectors"], json!([]));
    // Every listed name works as a model name.
    for name in &names {
        let (st, v) = call(&app, "POST", "/api/embed", json!({"model": name, "input": "a"})).await;
        assert_eq!(st, StatusCode::OK, "{name}: {v}");
    }

    let (_, v) = call(&app, "GET", "/v1/models", Value::Null).await;
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(&ids[..3], &["embeddinggemma", "embeddinggemma@query", "embeddinggemma@document"]);
    assert!(v["data"].as_array().unwrap().iter().all(|m| m["object"] == "model" && m["created"].is_u64()));
    let (st, v) = call(&app, "GET", "/v1/models/embeddinggemma@STS", Value::Null).await;
    assert_eq!((st, v["id"].clone(), v["parent"].clone()), (StatusCode::OK, json!("embeddinggemma@STS"), json!(GEMMA)));

    let (st, v) = call(&app, "POST", "/api/show", json!({"model": "embeddinggemma@query:latest"})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["prompt_name"], "query");
    assert_eq!(v["capabilities"], json!(["embedding"]));
    let (_, v) = call(&app, "POST", "/api/show", json!({"model": GEMMA})).await;
    assert_eq!(v["prompt_name"], Value::Null);
    assert_eq!(v["prompt_selectors"].as_array().unwrap().len(), 14);
}

#[tokio::test]
async fn server_default_prompt_precedence() {
    let app = app_with(Config { default_prompt_name: Some("STS".into()), ..Config::default() });
    let plain = app_with(Config::default());
    let texts = json!(TEXTS);
    let sts = ollama(&plain, json!({"model": GEMMA, "input": texts, "prompt_name": "STS"})).await;
    let query = ollama(&plain, json!({"model": GEMMA, "input": texts, "prompt_name": "query"})).await;
    let none = ollama(&plain, json!({"model": GEMMA, "input": texts})).await;
    // No prompt named: the server default.
    assert_eq!(ollama(&app, json!({"model": GEMMA, "input": texts})).await, sts);
    assert_eq!(ollama(&app, json!({"input": texts})).await, sts, "default model too");
    let v = ok(&app, "/v1/embeddings", json!({"model": GEMMA, "input": TEXTS[0]})).await;
    assert_eq!(v["data"][0]["embedding"], sts[0]);
    // The selector beats the server default; the body beats both.
    assert_eq!(ollama(&app, json!({"model": "embeddinggemma@query", "input": texts})).await, query);
    assert_eq!(ollama(&app, json!({"model": GEMMA, "input": texts, "prompt_name": "query"})).await, query);
    assert_eq!(ollama(&app, json!({"model": "embeddinggemma@query", "input": texts, "prompt_name": ""})).await, none);
    // A model without that prompt is served without one.
    let p_plain = ollama(&plain, json!({"model": POTION, "input": texts})).await;
    assert_eq!(ollama(&app, json!({"model": POTION, "input": texts})).await, p_plain);
    // /api/show says which prompt a request without one gets.
    let (_, v) = call(&app, "POST", "/api/show", json!({"model": GEMMA})).await;
    assert_eq!(v["prompt_name"], "STS");
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

#[tokio::test]
async fn default_prompt_name_no_model_defines_refuses_to_start() {
    let cli = Cli::parse_from([
        "serve",
        "--model",
        POTION,
        "--port",
        "0",
        "--host",
        "127.0.0.1",
        "--default-prompt-name",
        "query",
    ]);
    assert_eq!(cli.serve.default_prompt_name.as_deref(), Some("query"));
    let err = tokio::time::timeout(std::time::Duration::from_secs(30), deposium_server::run(cli.serve))
        .await
        .expect("refused at once, before serving")
        .expect_err("no served model defines `query`");
    let msg = format!("{err:#}");
    assert!(msg.contains("--default-prompt-name 'query'") && msg.contains("potion-base-8M: none"), "{msg}");
}
