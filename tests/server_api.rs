//! The real binary, serving a real model on a loopback port: every route, the CLI's vectors through every API,
//! rerank sanity, and error cases that must each get the right status and JSON error while the server keeps serving.
mod server_support;

use serde_json::{json, Value};
use server_support::*;

const TEXTS: &[&str] =
    &["hello world", "The capital of France is Paris.", "Ünïcödé façade – 東京は日本の首都です 🚀", "a"];

fn long_text() -> String {
    (0..700).map(|i| format!("word{}", i % 50)).collect::<Vec<_>>().join(" ")
}

fn serve(model: &str) -> Server {
    require_model(model);
    // --allow-token-ids: the token-id round trip below sends this model's own ids.
    Server::start(&["--model", model, "--allow-token-ids"])
}

#[test]
fn every_api_returns_the_cli_vectors() {
    for &model in MODELS {
        let srv = serve(model);
        let long = long_text();
        let mut texts: Vec<&str> = TEXTS.to_vec();
        texts.push(&long);
        let want = cli_vectors(model, &texts, &[]);

        // Ollama /api/embed, with the model named and by default.
        for body in [json!({"model": model, "input": texts}), json!({"input": texts})] {
            let r = srv.post("/api/embed", &body);
            assert_eq!(r.status, 200, "{}", r.text());
            let v = r.json();
            assert_same_vectors("/api/embed", &matrix(&v["embeddings"]), &want);
            assert!(v["total_duration"].as_u64().unwrap() > 0);
            assert!(v["load_duration"].is_u64());
            assert!(v["prompt_eval_count"].as_u64().unwrap() > 0);
        }
        let v = srv.post("/api/embed", &json!({"model": model, "input": texts[1]})).json();
        assert_eq!(v["model"], model);
        assert_same_vectors("/api/embed one string", &matrix(&v["embeddings"]), &want[1..2]);

        // Legacy /api/embeddings: Ollama's prompt, the seed's input.
        for (i, t) in texts.iter().enumerate() {
            let v = srv.post("/api/embeddings", &json!({"model": model, "prompt": t})).json();
            assert_same_vectors("/api/embeddings prompt", &[vector(&v["embedding"])], &want[i..i + 1]);
        }
        let v = srv.post("/api/embeddings", &json!({"model": model, "input": texts})).json();
        assert_eq!(v["model"], model);
        assert_same_vectors("/api/embeddings input", &matrix(&v["embeddings"]), &want);

        // OpenAI, float and base64.
        let v = srv.post("/v1/embeddings", &json!({"model": model, "input": texts})).json();
        let got: Vec<Vec<f32>> = v["data"].as_array().unwrap().iter().map(|d| vector(&d["embedding"])).collect();
        assert_same_vectors("/v1/embeddings float", &got, &want);
        assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
        let v =
            srv.post("/v1/embeddings", &json!({"model": model, "input": texts, "encoding_format": "base64"})).json();
        let got: Vec<Vec<f32>> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| base64_floats(d["embedding"].as_str().unwrap()).unwrap())
            .collect();
        assert_same_vectors("/v1/embeddings base64", &got, &want);

        // TEI /embed.
        let v = srv.post("/embed", &json!({"model": model, "inputs": texts})).json();
        assert_same_vectors("/embed", &matrix(&v), &want);

        // Token ids from /tokenize, fed back through OpenAI's token-id input.
        let tokens = srv.post("/tokenize", &json!({"model": model, "inputs": texts})).json();
        let ids: Vec<Vec<u64>> = tokens
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_array().unwrap().iter().map(|tok| tok["id"].as_u64().unwrap()).collect())
            .collect();
        let v = srv.post("/v1/embeddings", &json!({"model": model, "input": ids})).json();
        let got: Vec<Vec<f32>> = v["data"].as_array().unwrap().iter().map(|d| vector(&d["embedding"])).collect();
        assert_same_vectors("/v1/embeddings token ids", &got, &want);

        // Matryoshka truncation equals the CLI's --dimensions.
        let want64 = cli_vectors(model, &texts[..2], &["--dimensions", "64"]);
        let v = srv.post("/api/embed", &json!({"model": model, "input": &texts[..2], "dimensions": 64})).json();
        assert_same_vectors("/api/embed dimensions", &matrix(&v["embeddings"]), &want64);
        let v = srv.post("/v1/embeddings", &json!({"model": model, "input": &texts[..2], "dimensions": 64})).json();
        let got: Vec<Vec<f32>> = v["data"].as_array().unwrap().iter().map(|d| vector(&d["embedding"])).collect();
        assert_same_vectors("/v1/embeddings dimensions", &got, &want64);
    }
}

#[test]
fn aliases_and_tags_name_the_model() {
    let srv = serve("potion-base-8M");
    let want = cli_vectors("potion-base-8M", &["alias check"], &[]);
    for name in ["potion-base-8M", "potion-base-8M:latest", "potion", "minishlab/potion-base-8M", "model2vec", "POTION"]
    {
        let r = srv.post("/api/embed", &json!({"model": name, "input": ["alias check"]}));
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert_same_vectors(name, &matrix(&r.json()["embeddings"]), &want);
    }
}

/// The model's own prompt by that name when it defines it (EmbeddingGemma does), else none.
fn prompt_for(srv: &Server, model: &str, name: &str) -> Option<String> {
    let show = srv.post("/api/show", &json!({"model": model})).json();
    show["prompts"].get(name).map(|_| name.to_string())
}

fn embed_with(srv: &Server, model: &str, texts: &[&str], prompt_name: &Option<String>) -> Vec<Vec<f32>> {
    let mut body = json!({"model": model, "input": texts});
    if let Some(p) = prompt_name {
        body["prompt_name"] = json!(p);
    }
    let r = srv.post("/api/embed", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    matrix(&r.json()["embeddings"])
}

#[test]
fn rerank_ranks_sensibly_and_scores_are_embedding_cosines() {
    for &model in MODELS {
        let srv = serve(model);
        let query = "What is the capital of France?";
        let docs = [
            "Berlin is the largest city in Germany.",
            "Bananas are rich in potassium.",
            "Paris is the capital of France.",
            "The stock market fell sharply today.",
            "Paris is the capital of France.",
            "東京は日本の首都です。",
            "Ünïcödé façade naïve café",
        ];
        let r = srv.post("/api/rerank", &json!({"model": model, "query": query, "documents": docs}));
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["model"], model);
        let results = v["results"].as_array().unwrap();
        assert_eq!(results.len(), docs.len());
        // The matching sentence first; its duplicate ties with it and follows it (input order).
        assert_eq!(results[0]["index"], 2, "{v}");
        assert_eq!(results[1]["index"], 4, "{v}");
        assert_eq!(results[0]["relevance_score"], results[1]["relevance_score"]);
        assert_eq!(results[0]["document"], docs[2]);
        let scores: Vec<f64> = results.iter().map(|r| r["relevance_score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");

        // Scores are cosines of /api/embed vectors with the same prompts.
        let qp = prompt_for(&srv, model, "query");
        let dp = prompt_for(&srv, model, "document");
        let qv = embed_with(&srv, model, &[query], &qp);
        let dv = embed_with(&srv, model, &docs, &dp);
        for r in results {
            let i = r["index"].as_u64().unwrap() as usize;
            let want = cosine(&qv[0], &dv[i]);
            let got = r["relevance_score"].as_f64().unwrap();
            assert!((got - want).abs() < 1e-5, "doc {i}: {got} vs {want}");
            assert_eq!(r["document"], docs[i]);
        }

        // texts/top_n spellings; top_k after sorting; top_k larger than the list.
        let v = srv.post("/api/rerank", &json!({"model": model, "query": query, "texts": docs, "top_n": 2})).json();
        let top: Vec<&Value> = v["results"].as_array().unwrap().iter().map(|r| &r["index"]).collect();
        assert_eq!(top, vec![&json!(2), &json!(4)]);
        let v =
            srv.post("/api/rerank", &json!({"model": model, "query": query, "documents": docs, "top_k": 100})).json();
        assert_eq!(v["results"].as_array().unwrap().len(), docs.len());

        // TEI /rerank: the same order and scores.
        let v =
            srv.post("/rerank", &json!({"model": model, "query": query, "texts": docs, "return_text": true})).json();
        for (a, b) in v.as_array().unwrap().iter().zip(results) {
            assert_eq!(a["index"], b["index"]);
            assert!((a["score"].as_f64().unwrap() - b["relevance_score"].as_f64().unwrap()).abs() < 1e-6);
            assert_eq!(a["text"], b["document"]);
        }

        // /similarity agrees with the same cosines (no prompt).
        let v = srv
            .post("/similarity", &json!({"model": model, "inputs": {"source_sentence": query, "sentences": docs}}))
            .json();
        let plain_q = embed_with(&srv, model, &[query], &None);
        let plain_d = embed_with(&srv, model, &docs, &None);
        for (i, s) in vector(&v).iter().enumerate() {
            assert!((*s as f64 - cosine(&plain_q[0], &plain_d[i])).abs() < 1e-5);
        }

        // 1,000 documents in one request: answered, not refused.
        let many: Vec<String> = (0..1000).map(|i| format!("Document {i} about city number {}", i % 37)).collect();
        let r = srv.post("/api/rerank", &json!({"model": model, "query": "city number 7", "documents": many}));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["results"].as_array().unwrap().len(), 1000);
    }
}

#[test]
fn listing_and_operations_routes() {
    let srv = serve("potion-base-8M");
    let r = srv.get("/");
    assert_eq!((r.status, r.text().as_str()), (200, "Ollama is running"));
    let r = srv.request("HEAD", "/", &[], b"");
    assert_eq!(r.status, 200);

    let v = srv.get("/api/tags").json();
    let m = &v["models"][0];
    assert_eq!(m["name"], "potion-base-8M:latest");
    assert!(m["size"].as_u64().unwrap() > 1_000_000);
    assert_eq!(m["digest"].as_str().unwrap().len(), 64);
    assert!(m["modified_at"].as_str().unwrap().contains('T'));
    assert_eq!(m["details"]["family"], "model2vec");
    for k in ["format", "families", "parameter_size", "quantization_level"] {
        assert!(m["details"].get(k).is_some(), "details.{k}: {v}");
    }
    assert!(m["aliases"].as_array().unwrap().contains(&json!("potion")));

    let v = srv.post("/api/show", &json!({"model": "potion"})).json();
    assert_eq!(v["model_info"]["model2vec.embedding_length"], 256);
    assert_eq!(v["capabilities"], json!(["embedding"]));
    assert_eq!(srv.get("/api/ps").json()["models"][0]["name"], "potion-base-8M:latest");
    assert!(srv.get("/api/version").json()["version"].is_string());

    let v = srv.get("/v1/models").json();
    assert_eq!((v["object"].clone(), v["data"][0]["id"].clone()), (json!("list"), json!("potion-base-8M")));
    assert_eq!(srv.get("/v1/models/potion").json()["id"], "potion-base-8M");

    let v = srv.get("/info").json();
    assert_eq!(v["model_id"], "potion-base-8M");
    assert_eq!(v["max_input_length"], 512);

    let v = srv.post("/tokenize", &json!({"inputs": "hello world"})).json();
    assert!(!v[0].as_array().unwrap().is_empty());

    let v = srv.get("/health").json();
    assert_eq!(v["status"], "ok");
    let v = srv.get("/api/status").json();
    assert_eq!(v["models"][0]["name"], "potion-base-8M");
    assert!(v["models"][0]["memory_bytes"].as_u64().unwrap() > 0);
    assert!(v["uptime_seconds"].as_f64().unwrap() > 0.0);
    assert!(v["requests"]["total"].as_u64().unwrap() > 5);

    let r = srv.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let text = r.text();
    for needle in [
        "deposium_requests_total{route=\"/api/show\",status=\"200\"} 1",
        "deposium_queue_depth{model=\"potion-base-8M\"}",
        "deposium_tokenize_seconds_bucket{model=\"potion-base-8M\"",
        "deposium_inference_seconds_count{model=\"potion-base-8M\"}",
        "deposium_batch_size_bucket{model=\"potion-base-8M\"",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle}:\n{text}");
    }
    let v = srv.get("/openapi.json").json();
    assert!(v["paths"]["/v1/embeddings"]["post"].is_object());
    assert!(v["openapi"].as_str().unwrap().starts_with('3'));
}

#[test]
fn error_cases_get_the_right_status_and_the_server_keeps_serving() {
    let model = "potion-base-8M";
    let srv = serve(model);
    let baseline = srv.post("/api/embed", &json!({"input": ["still here"]})).json()["embeddings"].clone();

    // Malformed JSON, on every POST route, in its family's error shape.
    for path in
        ["/api/embed", "/api/embeddings", "/api/show", "/api/rerank", "/embed", "/rerank", "/similarity", "/tokenize"]
    {
        assert_plain_error(&srv.post_raw(path, "{\"input\": [\"a\""), 400);
        assert_plain_error(&srv.post_raw(path, ""), 400);
    }
    assert_openai_error(&srv.post_raw("/v1/embeddings", "{\"input\": "), 400);
    assert_openai_error(&srv.post_raw("/v1/embeddings", "not json at all"), 400);

    // Wrong types.
    assert_plain_error(&srv.post("/api/embed", &json!({"input": 42})), 400);
    assert_plain_error(&srv.post("/api/embed", &json!({"input": ["a", {"b": 1}]})), 400);
    assert_plain_error(&srv.post("/api/embed", &json!({"input": "a", "truncate": "no"})), 400);
    assert_plain_error(&srv.post("/api/embed", &json!({"input": "a", "dimensions": "64"})), 400);
    assert_plain_error(&srv.post("/api/embeddings", &json!({"prompt": 7})), 400);
    assert_openai_error(&srv.post("/v1/embeddings", &json!({"input": [1.5, 2]})), 400);
    assert_openai_error(&srv.post("/v1/embeddings", &json!({"input": true})), 400);
    assert_openai_error(&srv.post("/v1/embeddings", &json!({"input": [[1, 2], "a"]})), 400);
    assert_openai_error(&srv.post("/v1/embeddings", &json!({"input": [[999999999]]})), 400);
    // TEI answers validation errors with 422.
    assert_plain_error(&srv.post("/embed", &json!({"inputs": {"a": 1}})), 422);
    assert_plain_error(&srv.post("/api/rerank", &json!({"query": 5, "documents": ["a"]})), 400);
    assert_plain_error(&srv.post("/api/embed", &json!({"input": "a", "dimensions": 100000})), 400);
    assert_plain_error(&srv.post("/api/embed", &json!({"input": "a", "prompt_name": "no-such-prompt"})), 400);

    // Unknown model: 404 naming the available ones.
    let r = srv.post("/api/embed", &json!({"model": "gpt-4", "input": "a"}));
    assert_plain_error(&r, 404);
    assert!(r.json()["error"].as_str().unwrap().contains(model), "{}", r.text());
    let r = srv.post("/api/rerank", &json!({"model": "gpt-4", "query": "q", "documents": ["a"]}));
    assert_plain_error(&r, 404);
    assert!(r.json()["error"].as_str().unwrap().contains(model));
    let r = srv.post("/v1/embeddings", &json!({"model": "gpt-4", "input": "a"}));
    assert_openai_error(&r, 404);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    assert_plain_error(&srv.post("/embed", &json!({"model": "gpt-4", "inputs": "a"})), 404);
    assert_plain_error(&srv.post("/api/show", &json!({"model": "gpt-4"})), 404);

    // Empty input.
    let r = srv.post("/api/embed", &json!({"input": []}));
    assert_eq!((r.status, r.json()["embeddings"].clone()), (200, json!([])));
    assert_openai_error(&srv.post("/v1/embeddings", &json!({"input": []})), 400);
    assert_openai_error(&srv.post("/v1/embeddings", &json!({"input": ""})), 400);
    assert_plain_error(&srv.post("/embed", &json!({"inputs": []})), 400);
    assert_plain_error(&srv.post("/api/rerank", &json!({"query": "q", "documents": []})), 400);
    assert_plain_error(&srv.post("/rerank", &json!({"query": "q", "texts": []})), 400);
    // Ollama answers a body with no text 200 {"embedding": []} (clients use it to load the model).
    let r = srv.post("/api/embeddings", &json!({"model": model}));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["embedding"], json!([]));

    // 10k inputs: over --max-inputs (2048 by default), refused with a message naming the limit.
    let many: Vec<String> = (0..10_000).map(|i| format!("t{i}")).collect();
    let r = srv.post("/api/embed", &json!({"input": many}));
    assert_plain_error(&r, 413);
    assert!(r.json()["error"].as_str().unwrap().contains("--max-inputs"));
    assert_openai_error(&srv.post("/v1/embeddings", &json!({"input": many})), 413);
    // 2,000 inputs are fine (split into backend steps, not refused).
    let r = srv.post("/api/embed", &json!({"input": &many[..2000]}));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["embeddings"].as_array().unwrap().len(), 2000);

    // 100 KB of text: cut to the model's limit by default, refused with truncate=false.
    let big = "lorem ipsum dolor sit amet ".repeat(4000);
    assert!(big.len() > 100_000);
    let r = srv.post("/api/embed", &json!({"input": big}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["prompt_eval_count"], 512);
    let r = srv.post("/api/embed", &json!({"input": big, "truncate": false}));
    assert_plain_error(&r, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("truncate"), "{}", r.text());
    assert_openai_error(&srv.post("/v1/embeddings", &json!({"input": big, "truncate": false})), 400);

    // A body over --max-body-bytes (8 MiB by default): 413 with a JSON error, on each family.
    let huge = json!({ "input": vec!["x".repeat(1000); 9000] }).to_string();
    for path in ["/api/embed", "/v1/embeddings", "/embed"] {
        let mut c = Conn::open(&srv.addr).unwrap();
        c.send_head("POST", path, &[], huge.len()).unwrap();
        let _ = c.write(huge.as_bytes()); // the server may answer before reading it all
        let r = c.read_response().unwrap();
        if path == "/v1/embeddings" {
            assert_openai_error(&r, 413);
        } else {
            assert_plain_error(&r, 413);
        }
        assert!(r.text().contains("--max-body-bytes"), "{}", r.text());
    }

    // Bad encoding_format.
    let r = srv.post("/v1/embeddings", &json!({"input": "a", "encoding_format": "base65"}));
    assert_openai_error(&r, 400);
    assert_eq!(r.json()["error"]["param"], "encoding_format");

    // Unknown routes and methods.
    assert_plain_error(&srv.get("/api/nothing"), 404);
    assert_openai_error(&srv.get("/v1/nothing"), 404);
    assert_plain_error(&srv.get("/api/embed"), 405);

    // Still serving, same answers.
    assert_eq!(srv.get("/health").status, 200);
    let again = srv.post("/api/embed", &json!({"input": ["still here"]})).json()["embeddings"].clone();
    assert_eq!(again, baseline);
}
