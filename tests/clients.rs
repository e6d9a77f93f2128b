//! The Python clients people use, unchanged, against the real binary: huggingface_hub's InferenceClient,
//! LangChain's OllamaEmbeddings and OpenAIEmbeddings, LlamaIndex's TEI embedding and rerank classes, the openai,
//! ollama and cohere SDKs (tests/clients/run_clients.py, in the pinned venv of scripts/clients-venv.sh). Each one's
//! vectors must equal /api/embed's (cosine >= 0.99999), on EmbeddingGemma int8 and potion-base-8M; where a client
//! would get wrong vectors (LangChain's default tiktoken ids), it must fail loudly instead.
mod server_support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use server_support::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const API_KEY: &str = "client-test-key";

/// Checks every run must report: (client, models). Clients that cannot name a model run once per server.
const EXPECTED: &[(&str, &[&str])] = &[
    ("huggingface_hub InferenceClient.feature_extraction", MODELS),
    ("huggingface_hub InferenceClient.sentence_similarity", MODELS),
    ("llama-index TextEmbeddingsInference", MODELS),
    ("llama-index TextEmbeddingInference (TEI rerank)", MODELS),
    ("langchain-ollama OllamaEmbeddings", MODELS),
    ("langchain-ollama OllamaEmbeddings @query/@document", &["embeddinggemma"]),
    ("langchain-openai OpenAIEmbeddings (default settings)", MODELS),
    ("langchain-openai OpenAIEmbeddings check_embedding_ctx_length=False", MODELS),
    ("openai embeddings.create (encoding_format=default)", MODELS),
    ("openai embeddings.create (encoding_format=float)", MODELS),
    ("openai embeddings.create (encoding_format=base64)", MODELS),
    ("openai embeddings.create (token-id input)", MODELS),
    ("openai embeddings.create (dimensions=256)", &["embeddinggemma"]),
    ("openai and ollama SDKs with NAME@query/@document", &["embeddinggemma"]),
    ("ollama Client.embed/embeddings/list", MODELS),
    ("ollama Client.show/ps, embeddings() with no prompt, dimensions=0", MODELS),
    ("cohere Client.rerank (/v1/rerank)", MODELS),
];

/// The venv's python; `scripts/clients-venv.sh` is a no-op when the venv is current (`make test` runs it first).
fn venv_python() -> PathBuf {
    let script = Path::new(ROOT).join("scripts/clients-venv.sh");
    let st = Command::new(&script).status().unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(st.success(), "{} failed (its message is above)", script.display());
    deposium_engine::paths::home().join("venv-clients/bin/python")
}

#[test]
fn python_clients_get_the_same_vectors_as_api_embed() {
    for m in MODELS {
        require_model(m);
    }
    let python = venv_python();
    // The default model (no model name: TEI-style clients) is the first --model. Every client sends the API key
    // its own way (Bearer header, api_key, token, auth_token); the potion-only server has none.
    let main = Server::spawn(&["--model", "embeddinggemma", "--model", "potion-base-8M", "--api-key", API_KEY]);
    // The first load of EmbeddingGemma int8 on a fresh machine builds its graph: give it minutes.
    main.wait_healthy(Duration::from_secs(600));
    let potion = Server::start(&["--model", "potion-base-8M"]);

    let mut child = Command::new(&python)
        .arg(Path::new(ROOT).join("tests/clients/run_clients.py"))
        .arg(format!("http://{}", main.addr))
        .args(["--models", "embeddinggemma,potion-base-8M"])
        .arg(format!("--single=potion-base-8M=http://{}", potion.addr))
        .arg(format!("--api-key={API_KEY}"))
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).ok();
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).ok();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > Duration::from_secs(300) {
            child.kill().ok();
            child.wait().ok();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (stdout, stderr) = (out_t.join().unwrap(), err_t.join().unwrap());
    let context = || format!("run_clients.py stderr:\n{stderr}\nserver log (tail):\n{}", tail(&main.log(), 30));
    assert!(status.is_some(), "run_clients.py ran over 300 s\n{stdout}\n{}", context());

    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\n{}", context())))
        .collect();
    for l in &lines {
        eprintln!(
            "{} {} ({} {}): {}",
            if l["ok"] == true { "ok  " } else { "FAIL" },
            l["client"].as_str().unwrap_or("?"),
            l["model"].as_str().unwrap_or("?"),
            l["version"].as_str().unwrap_or("?"),
            l["detail"].as_str().unwrap_or("?")
        );
    }
    let mut problems = Vec::new();
    for (client, models) in EXPECTED {
        for m in *models {
            if !lines.iter().any(|l| l["client"] == *client && l["model"] == *m) {
                problems.push(format!("{client} on {m}: no result line"));
            }
        }
    }
    for l in lines.iter().filter(|l| l["ok"] != true) {
        let reqs = l["requests"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .map(|r| {
                        format!(
                            "\n    {} {} -> {} {}",
                            r["request"].as_str().unwrap_or("?"),
                            r["body"].as_str().unwrap_or(""),
                            r["status"],
                            r["response"].as_str().unwrap_or("")
                        )
                    })
                    .collect::<String>()
            })
            .unwrap_or_default();
        problems.push(format!(
            "{} ({} {}) on {}: {}{reqs}",
            l["client"].as_str().unwrap_or("?"),
            l["package"].as_str().unwrap_or("?"),
            l["version"].as_str().unwrap_or("?"),
            l["model"].as_str().unwrap_or("?"),
            l["detail"].as_str().unwrap_or("?")
        ));
    }
    assert!(
        problems.is_empty() && status.unwrap().success(),
        "{} client check(s) failed:\n{}\n{}",
        problems.len(),
        problems.join("\n"),
        context()
    );
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `/docs` in Debian's headless chromium (installed by scripts/clients-venv.sh): the page lists every route of
/// /openapi.json, and its "Try it out" on POST /api/embed answers 200 with a vector (tests/clients/docs_page.py).
#[test]
fn docs_page_lists_the_routes_and_try_it_returns_vectors_in_chromium() {
    require_model("potion-base-8M");
    let python = venv_python();
    let srv = Server::start(&["--model", "potion-base-8M"]);
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("docs-page.png");
    let out = Command::new(&python)
        .arg(Path::new(ROOT).join("tests/clients/docs_page.py"))
        .arg(format!("http://{}", srv.addr))
        .arg("--screenshot")
        .arg(&shot)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .output()
        .expect("running docs_page.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("docs_page.py printed no JSON ({e}):\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr))
    });
    assert!(
        v["ok"] == true && out.status.success(),
        "the /docs page check failed: {v:#}\nscreenshot: {}",
        shot.display()
    );
    assert_eq!(v["routes_missing"], serde_json::json!([]), "{v}");
    assert_eq!(v["dims"], serde_json::json!([256]), "{v}");
}
