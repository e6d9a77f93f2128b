//! Hostile-input fuzzing of the in-process router with the real potion-base-8M model (proptest).
//!
//! Property, for every request: no panic, no 5xx (a 500 is documented only for NaN/Inf output, which this model
//! cannot produce), a 4xx always has a JSON body with an `error`, a 2xx from an embedding route is JSON whose
//! vectors are finite, one per input. Targets:
//!
//! - `fields`: every route's own field names with arbitrary JSON values (wrong types, huge numbers, nested junk);
//! - `bytes`: arbitrary bytes, invalid UTF-8, mutated valid bodies, random methods and paths;
//! - `text`: well-formed requests whose texts are hostile (`\u` escapes incl. lone surrogates, control chars, NUL,
//!   long unicode runs, combining marks, RTL and zero-width characters, prompts as long as the text);
//! - fixed extremes (plain tests): 10 MB bodies, 100k nested `[`, 1e6-element arrays, 1e6 token ids.
//!
//! `cargo test -p deposium-server --test fuzz` runs FUZZ_CASES (default 256) cases per target. With FUZZ_SECONDS
//! set, each target runs new seeds until that many seconds have passed (`make fuzz`: 600 per target).
//! A failing case is shrunk and printed; add it to `regressions` below.
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use deposium_server::{router, AppState, Config};
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use serde_json::Value;
use tower::ServiceExt;

const MODEL: &str = "potion-base-8M";
const GEMMA: &str = "embeddinggemma";

struct Harness {
    app: Router,
    rt: tokio::runtime::Runtime,
}

/// The router over one real model, in-process.
fn build_harness(name: &str) -> Harness {
    let spec = deposium_engine::registry::resolve(name).expect("known model");
    assert!(spec.dir.is_dir(), "model {} missing: run `make fetch` (scripts/fetch.sh) first", spec.dir.display());
    let model = deposium_engine::registry::load_spec(&spec).unwrap_or_else(|e| panic!("loading {name}: {e}"));
    // Token-id input allowed (--allow-token-ids), so the targets reach that path too.
    let config = Config { allow_token_ids: true, ..Config::default() };
    let state = AppState::with_models(config, vec![(spec, model)]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    Harness { app: router(state), rt }
}

/// The router over the real potion-base-8M, built once per test binary.
fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| build_harness(MODEL))
}

/// The router over EmbeddingGemma int8, for its tokenizer and limits (the target never runs its inference).
fn gemma_harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| build_harness(GEMMA))
}

/// Send one request in-process to the potion-base-8M router; `Err` for a violated property.
fn check(method: &str, path: &str, body: Vec<u8>) -> Result<(), String> {
    check_on(harness(), method, path, body)
}

/// Send one request in-process; `Err` for a violated property.
fn check_on(h: &Harness, method: &str, path: &str, body: Vec<u8>) -> Result<(), String> {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .map_err(|e| format!("test built a bad request: {e}"))?;
    let (status, bytes) = h.rt.block_on(async {
        let resp = tokio::time::timeout(Duration::from_secs(120), h.app.clone().oneshot(req))
            .await
            .map_err(|_| "no answer within 120 s".to_string())?
            .map_err(|e| format!("router error: {e}"))?;
        let status = resp.status();
        let bytes =
            axum::body::to_bytes(resp.into_body(), usize::MAX).await.map_err(|e| format!("response body: {e}"))?;
        Ok::<_, String>((status, bytes))
    })?;
    let text = || String::from_utf8_lossy(&bytes[..bytes.len().min(400)]).into_owned();
    let json: Option<Value> = serde_json::from_slice(&bytes).ok();
    let error_message = json.as_ref().and_then(|v| match &v["error"] {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("message").and_then(Value::as_str).map(String::from),
        _ => None,
    });
    if status.is_server_error() {
        let documented = status.as_u16() == 500
            && error_message.as_deref().is_some_and(|m| m.contains("NaN") || m.contains("non-finite"));
        if !documented {
            return Err(format!("{method} {path}: {status} {}", text()));
        }
    }
    // HEAD answers carry no body.
    if status.is_client_error() && error_message.is_none() && method != "HEAD" {
        return Err(format!("{method} {path}: {status} without a JSON error: {}", text()));
    }
    if status.is_success() && method == "POST" && EMBED_ROUTES.contains(&path) {
        let v = json.ok_or_else(|| format!("{method} {path}: {status} but not JSON: {}", text()))?;
        let nums = all_numbers(&v);
        if nums.iter().any(|x| !x.is_finite()) {
            return Err(format!("{method} {path}: non-finite number in a 2xx answer"));
        }
    }
    Ok(())
}

const EMBED_ROUTES: &[&str] = &[
    "/api/embed",
    "/api/embeddings",
    "/v1/embeddings",
    "/embed",
    "/rerank",
    "/api/rerank",
    "/similarity",
    "/tokenize",
];

fn all_numbers(v: &Value) -> Vec<f64> {
    let mut out = Vec::new();
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Number(n) => out.extend(n.as_f64()),
            Value::Array(a) => stack.extend(a),
            Value::Object(o) => stack.extend(o.values()),
            _ => {}
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// A JSON-ish value that can hold what serde_json::Value cannot: raw `\u` escapes (lone surrogates), raw bytes
// (invalid UTF-8, unescaped control characters), long runs, numbers JSON cannot represent.

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    /// `\uXXXX`, any code unit (lone surrogates included).
    Escape(u16),
    /// Bytes written as they are.
    Raw(Vec<u8>),
    /// One character repeated.
    Run(char, usize),
}

#[derive(Debug, Clone)]
struct S(Vec<Piece>);

#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    Int(i64),
    /// A number token as written: huge, tiny, `-0`, `1e400`, `NaN`...
    Num(String),
    Float(f64),
    Str(S),
    Arr(Vec<J>),
    Obj(Vec<(S, J)>),
}

fn write_str(s: &S, out: &mut Vec<u8>) {
    out.push(b'"');
    for p in &s.0 {
        match p {
            Piece::Text(t) => {
                let q = serde_json::to_string(t).unwrap();
                out.extend_from_slice(&q.as_bytes()[1..q.len() - 1]);
            }
            Piece::Escape(u) => out.extend_from_slice(format!("\\u{u:04x}").as_bytes()),
            Piece::Raw(b) => out.extend_from_slice(b),
            Piece::Run(c, n) => {
                let q = serde_json::to_string(&c.to_string()).unwrap();
                let one = &q.as_bytes()[1..q.len() - 1];
                for _ in 0..*n {
                    out.extend_from_slice(one);
                }
            }
        }
    }
    out.push(b'"');
}

fn write(j: &J, out: &mut Vec<u8>) {
    match j {
        J::Null => out.extend_from_slice(b"null"),
        J::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        J::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        J::Num(n) => out.extend_from_slice(n.as_bytes()),
        J::Float(f) if f.is_finite() => out.extend_from_slice(format!("{f:?}").as_bytes()),
        J::Float(_) => out.extend_from_slice(b"1e999"),
        J::Str(s) => write_str(s, out),
        J::Arr(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(x, out);
            }
            out.push(b']');
        }
        J::Obj(o) => {
            out.push(b'{');
            for (i, (k, v)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(k, out);
                out.push(b':');
                write(v, out);
            }
            out.push(b'}');
        }
    }
}

fn to_bytes(j: &J) -> Vec<u8> {
    let mut out = Vec::new();
    write(j, &mut out);
    out
}

/// Large sizes only when fuzzing for time (`FUZZ_SECONDS`); `make test` keeps cases small and quick.
fn long_fuzz() -> bool {
    std::env::var("FUZZ_SECONDS").is_ok_and(|s| s.parse::<u64>().is_ok_and(|n| n > 0))
}

fn run_len() -> usize {
    if long_fuzz() {
        200_000
    } else {
        20_000
    }
}

/// Characters that stress tokenizers and JSON: controls, NUL, surrogate neighbours, combining marks, RTL,
/// zero-width, emoji, CJK, the replacement character, BOM, private use, noncharacters.
fn nasty_char() -> impl Strategy<Value = char> {
    prop_oneof![
        (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap()),
        Just('\u{7f}'),
        Just('\u{0}'),
        Just('\u{301}'),
        Just('\u{200b}'),
        Just('\u{200d}'),
        Just('\u{202e}'),
        Just('\u{feff}'),
        Just('\u{fffd}'),
        Just('\u{fffe}'),
        Just('\u{ffff}'),
        Just('\u{d7ff}'),
        Just('\u{e000}'),
        Just('\u{10ffff}'),
        Just('é'),
        Just('ß'),
        Just('İ'),
        Just('字'),
        Just('😀'),
        Just('👩'),
        Just('ﷺ'),
        Just('\u{0635}'),
        Just(' '),
        Just('\n'),
        Just('"'),
        Just('\\'),
        any::<char>(),
    ]
}

/// Special-token literals of the served tokenizers (WordPiece, SentencePiece/Gemma), injected into texts.
fn special_token() -> impl Strategy<Value = Piece> {
    prop::sample::select(vec![
        "[CLS]",
        "[SEP]",
        "[PAD]",
        "[UNK]",
        "[MASK]",
        "<bos>",
        "<eos>",
        "<pad>",
        "<unk>",
        "<mask>",
        "<start_of_turn>",
        "<end_of_turn>",
        "<start_of_image>",
        "<end_of_image>",
        "<image_soft_token>",
        "<unused0>",
        "<s>",
        "</s>",
        "<|endoftext|>",
        "▁",
        "<0x00>",
        "<0xFF>",
    ])
    .prop_map(|t| Piece::Text(t.to_string()))
}

fn piece() -> impl Strategy<Value = Piece> {
    let n = run_len();
    prop_oneof![
        4 => ".{0,40}".prop_map(Piece::Text),
        2 => proptest::collection::vec(nasty_char(), 0..40).prop_map(|c| Piece::Text(c.into_iter().collect())),
        2 => any::<u16>().prop_map(Piece::Escape),
        1 => (0xd800u16..0xe000).prop_map(Piece::Escape),
        1 => proptest::collection::vec(any::<u8>(), 1..8).prop_map(Piece::Raw),
        1 => prop_oneof![Just(vec![0xc3u8]), Just(vec![0xffu8]), Just(vec![0xed, 0xa0, 0x80]), Just(vec![0xf4, 0x90, 0x80, 0x80]), Just(vec![0u8])].prop_map(Piece::Raw),
        1 => (nasty_char(), 1..n).prop_map(|(c, k)| Piece::Run(c, k)),
        1 => special_token(),
    ]
}

/// A string that stays valid JSON and valid UTF-8 (no raw bytes, no lone surrogates) — it must embed (200).
fn clean_piece() -> impl Strategy<Value = Piece> {
    let n = run_len();
    prop_oneof![
        4 => ".{0,60}".prop_map(Piece::Text),
        3 => proptest::collection::vec(nasty_char(), 0..60).prop_map(|c| Piece::Text(c.into_iter().collect())),
        1 => prop_oneof![0u16..0xd800, 0xe000u16..=0xffff].prop_map(Piece::Escape),
        1 => (nasty_char(), 1..n).prop_map(|(c, k)| Piece::Run(c, k)),
        1 => special_token(),
    ]
}

fn hostile_string() -> impl Strategy<Value = S> {
    proptest::collection::vec(piece(), 0..4).prop_map(S)
}

fn clean_string() -> impl Strategy<Value = S> {
    proptest::collection::vec(clean_piece(), 1..4).prop_map(S)
}

fn number() -> impl Strategy<Value = J> {
    prop_oneof![
        any::<i64>().prop_map(J::Int),
        (-3i64..2100).prop_map(J::Int),
        any::<f64>().prop_map(J::Float),
        prop_oneof![
            Just("18446744073709551615"),
            Just("18446744073709551616"),
            Just("99999999999999999999999999999999"),
            Just("-0"),
            Just("1e400"),
            Just("-1e400"),
            Just("1e-400"),
            Just("0.5"),
            Just("1E2"),
            Just("4294967295"),
            Just("4294967296"),
            Just("NaN"),
            Just("Infinity"),
            Just("01"),
            Just("+1"),
            Just(".5"),
        ]
        .prop_map(|s| J::Num(s.to_string())),
    ]
}

fn any_json() -> impl Strategy<Value = J> {
    let leaf =
        prop_oneof![Just(J::Null), any::<bool>().prop_map(J::Bool), number(), hostile_string().prop_map(J::Str),];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(J::Arr),
            proptest::collection::vec((hostile_string(), inner), 0..6).prop_map(J::Obj),
        ]
    })
}

fn text(s: &str) -> J {
    J::Str(S(vec![Piece::Text(s.to_string())]))
}

/// A plausible value for a field (so requests get past type checks into the embed path), or anything at all.
fn field_value(field: &'static str) -> BoxedStrategy<J> {
    let plausible: BoxedStrategy<J> = match field {
        "model" | "name" => prop_oneof![
            Just(text(MODEL)),
            Just(text("potion")),
            Just(text("potion-base-8M:latest")),
            Just(text("POTION-BASE-8M")),
            Just(text("")),
            Just(text("embeddinggemma")),
            hostile_string().prop_map(J::Str),
        ]
        .boxed(),
        "input" | "inputs" | "texts" | "documents" | "sentences" => prop_oneof![
            clean_string().prop_map(J::Str),
            hostile_string().prop_map(J::Str),
            proptest::collection::vec(clean_string().prop_map(J::Str), 0..70).prop_map(J::Arr),
            proptest::collection::vec(hostile_string().prop_map(J::Str), 0..8).prop_map(J::Arr),
            // Token ids (OpenAI), flat or nested.
            proptest::collection::vec(number(), 0..40).prop_map(J::Arr),
            proptest::collection::vec(
                proptest::collection::vec((0i64..40000).prop_map(J::Int), 0..20).prop_map(J::Arr),
                0..8
            )
            .prop_map(J::Arr),
            // Rerank documents as objects.
            proptest::collection::vec(
                clean_string().prop_map(|s| J::Obj(vec![(S(vec![Piece::Text("text".into())]), J::Str(s))])),
                0..8
            )
            .prop_map(J::Arr),
        ]
        .boxed(),
        "query" | "prompt" | "source_sentence" | "user" => {
            prop_oneof![clean_string().prop_map(J::Str), hostile_string().prop_map(J::Str)].boxed()
        }
        "prompt_name" => {
            prop_oneof![Just(text("query")), Just(text("")), Just(text("document")), hostile_string().prop_map(J::Str)]
                .boxed()
        }
        "encoding_format" => {
            prop_oneof![Just(text("float")), Just(text("base64")), hostile_string().prop_map(J::Str)].boxed()
        }
        "truncation_direction" => {
            prop_oneof![Just(text("right")), Just(text("Left")), hostile_string().prop_map(J::Str)].boxed()
        }
        "dimensions" | "top_k" | "top_n" => number().boxed(),
        _ => prop_oneof![any::<bool>().prop_map(J::Bool), Just(J::Null)].boxed(),
    };
    prop_oneof![3 => plausible, 1 => any_json()].boxed()
}

/// Every POST route with its field names.
const ROUTES: &[(&str, &[&str])] = &[
    ("/api/embed", &["model", "input", "truncate", "dimensions", "prompt_name", "prompt", "keep_alive", "options"]),
    ("/api/embeddings", &["model", "prompt", "input", "prompt_name", "truncate", "dimensions", "keep_alive"]),
    (
        "/v1/embeddings",
        &["input", "model", "encoding_format", "dimensions", "user", "prompt_name", "prompt", "truncate"],
    ),
    (
        "/embed",
        &["inputs", "normalize", "truncate", "truncation_direction", "prompt_name", "prompt", "dimensions", "model"],
    ),
    (
        "/rerank",
        &[
            "query",
            "texts",
            "documents",
            "top_n",
            "top_k",
            "return_text",
            "return_documents",
            "truncate",
            "truncation_direction",
            "prompt_name",
            "prompt",
            "model",
            "raw_scores",
        ],
    ),
    ("/api/rerank", &["model", "query", "documents", "texts", "top_k", "top_n", "prompt_name", "prompt", "truncate"]),
    ("/similarity", &["inputs", "truncate", "prompt_name", "prompt", "model"]),
    ("/tokenize", &["inputs", "prompt_name", "prompt", "model", "add_special_tokens"]),
    ("/api/show", &["model", "name", "verbose"]),
];

/// A request to one route: a random subset of its fields with plausible or arbitrary values.
fn field_request() -> impl Strategy<Value = (&'static str, J)> {
    (0..ROUTES.len()).prop_flat_map(|r| {
        let (path, fields) = ROUTES[r];
        let entries: Vec<BoxedStrategy<Option<(S, J)>>> = fields
            .iter()
            .map(|&f| {
                let key = S(vec![Piece::Text(f.to_string())]);
                if f == "inputs" && path == "/similarity" {
                    // {"inputs": {"source_sentence", "sentences"}}
                    let obj = (field_value("source_sentence"), field_value("sentences")).prop_map(|(a, b)| {
                        J::Obj(vec![
                            (S(vec![Piece::Text("source_sentence".into())]), a),
                            (S(vec![Piece::Text("sentences".into())]), b),
                        ])
                    });
                    proptest::option::weighted(
                        0.8,
                        prop_oneof![3 => obj, 1 => any_json()].prop_map(move |v| (key.clone(), v)),
                    )
                    .boxed()
                } else {
                    proptest::option::weighted(0.6, field_value(f).prop_map(move |v| (key.clone(), v))).boxed()
                }
            })
            .collect();
        (entries, proptest::option::weighted(0.2, (hostile_string(), any_json()))).prop_map(move |(fs, extra)| {
            let mut obj: Vec<(S, J)> = fs.into_iter().flatten().collect();
            obj.extend(extra);
            (path, J::Obj(obj))
        })
    })
}

fn is_empty(s: &S) -> bool {
    s.0.iter().all(|p| match p {
        Piece::Text(t) => t.is_empty(),
        Piece::Run(_, n) => *n == 0,
        _ => false,
    })
}

/// A request body shown as text in failure reports.
#[derive(Clone)]
struct Shown(Vec<u8>);

impl std::fmt::Debug for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// Clean texts into a well-formed request for each embedding route: these must all succeed (200), except the
/// documented refusals of empty strings (OpenAI `input`, a rerank `query`).
fn text_request() -> impl Strategy<Value = (&'static str, Shown, usize, bool)> {
    (0usize..7, proptest::collection::vec(clean_string(), 1..12), clean_string(), proptest::option::of(clean_string()))
        .prop_map(|(route, texts, query, prompt)| {
            let empty_query = is_empty(&query);
            let any_empty = texts.iter().any(is_empty);
            let arr = J::Arr(texts.iter().cloned().map(J::Str).collect());
            let k = |s: &str| S(vec![Piece::Text(s.into())]);
            let mut fields = vec![(k("model"), text(MODEL))];
            let (path, n, may_refuse) = match route {
                0 => {
                    fields.push((k("input"), arr));
                    ("/api/embed", texts.len(), false)
                }
                1 => {
                    fields.push((k("input"), arr));
                    ("/api/embeddings", texts.len(), false)
                }
                2 => {
                    fields.push((k("input"), arr));
                    fields.push((k("encoding_format"), text("base64")));
                    ("/v1/embeddings", texts.len(), any_empty)
                }
                3 => {
                    fields.push((k("inputs"), arr));
                    ("/embed", texts.len(), false)
                }
                4 => {
                    fields.push((k("query"), J::Str(query)));
                    fields.push((k("texts"), arr));
                    ("/rerank", texts.len(), empty_query)
                }
                5 => {
                    fields.push((k("query"), J::Str(query)));
                    fields.push((k("documents"), arr));
                    ("/api/rerank", texts.len(), empty_query)
                }
                _ => {
                    fields.push((k("inputs"), arr));
                    ("/tokenize", texts.len(), false)
                }
            };
            if let Some(p) = prompt {
                // A raw prompt prefix, as hostile as the texts (not on /api/embeddings, where `prompt` is the text).
                if path != "/api/embeddings" {
                    fields.push((k("prompt"), J::Str(p)));
                }
            }
            (path, Shown(to_bytes(&J::Obj(fields))), n, may_refuse)
        })
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
const PATHS: &[&str] = &[
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
    "/v1/models/potion-base-8M",
    "/v1/models/%00%ff",
    "/v1/models/..%2F..%2Fetc",
    "/embed",
    "/rerank",
    "/similarity",
    "/tokenize",
    "/info",
    "/health",
    "/metrics",
    "/openapi.json",
    "/nothing",
    "/api/embed/",
    "//api/embed",
    "/v1",
    "/v1/",
    "/API/EMBED",
    "/api/embed?x=1",
];

/// Arbitrary bytes, or a valid body with bytes flipped, inserted or cut, to any route with any method.
fn bytes_request() -> impl Strategy<Value = (&'static str, &'static str, Shown)> {
    let valid = prop_oneof![
        Just(br#"{"model":"potion-base-8M","input":["hello world","second text"]}"#.to_vec()),
        Just(br#"{"input":"hello","encoding_format":"base64"}"#.to_vec()),
        Just(br#"{"inputs":["a b c"],"normalize":false}"#.to_vec()),
        Just(br#"{"query":"q","texts":["a","b"],"return_text":true}"#.to_vec()),
        Just(br#"{"inputs":{"source_sentence":"a","sentences":["b"]}}"#.to_vec()),
    ];
    let mutated = (valid, proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6))
        .prop_map(|(mut b, edits)| {
            for (at, byte, op) in edits {
                let i = at.index(b.len().max(1));
                match op {
                    0 if !b.is_empty() => {
                        let last = b.len() - 1;
                        b[i.min(last)] = byte
                    }
                    1 => b.insert(i.min(b.len()), byte),
                    _ => b.truncate(i),
                }
            }
            b
        });
    let body = prop_oneof![
        3 => mutated,
        2 => proptest::collection::vec(any::<u8>(), 0..200),
        1 => any_json().prop_map(|j| to_bytes(&j)),
        1 => Just(Vec::new()),
        1 => Just(b"\xef\xbb\xbf{\"input\":\"bom first\"}".to_vec()),
    ];
    (prop::sample::select(METHODS), prop::sample::select(PATHS), body.prop_map(Shown))
}

/// Run a target: FUZZ_CASES cases (default 256), or new seeds until FUZZ_SECONDS have passed.
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), String>)
where
    S::Value: std::fmt::Debug,
{
    let seconds: u64 = std::env::var("FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let cases: u32 = std::env::var("FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256);
    let t0 = Instant::now();
    let mut total = 0u64;
    let mut round = 0u64;
    loop {
        let seed = std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0x5eed) + round;
        let mut seed_bytes = [0u8; 32];
        seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let config = PtConfig { cases, failure_persistence: None, max_shrink_iters: 2000, ..PtConfig::default() };
        let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
        let result = runner.run(&strategy, |v| test(v).map_err(TestCaseError::fail));
        total += cases as u64;
        if let Err(e) = result {
            match e {
                TestError::Fail(why, value) => {
                    panic!("fuzz target {name} (seed {seed}) failed: {why}\nminimal input: {value:#?}")
                }
                TestError::Abort(why) => panic!("fuzz target {name} aborted: {why}"),
            }
        }
        round += 1;
        if t0.elapsed().as_secs() >= seconds {
            break;
        }
    }
    eprintln!("fuzz target {name}: {total} cases in {:.1} s, no failure", t0.elapsed().as_secs_f64());
}

#[test]
fn fuzz_fields_every_route_arbitrary_json_values() {
    fuzz("fields", field_request(), |(path, j)| check("POST", path, to_bytes(&j)));
}

#[test]
fn fuzz_bytes_methods_and_paths() {
    fuzz("bytes", bytes_request(), |(method, path, Shown(body))| check(method, path, body));
}

#[test]
fn fuzz_text_hostile_but_valid_texts_embed() {
    let h = harness();
    fuzz("text", text_request(), |(path, Shown(body), n, may_refuse)| {
        check("POST", path, body.clone())?;
        // Valid UTF-8 texts must embed: 200, one finite vector (or score, or token list) per input.
        let req = Request::builder().method("POST").uri(path).body(Body::from(body.clone())).unwrap();
        let (status, bytes) = h.rt.block_on(async {
            let resp = h.app.clone().oneshot(req).await.unwrap();
            let s = resp.status();
            (s, axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap())
        });
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{path}: not JSON ({e})"))?;
        // OpenAI refuses empty strings and rerank an empty query (400, documented); the rest embed "" (zero vector).
        if status != 200 && !(may_refuse && status == 400) {
            return Err(format!("{path}: {status} for valid texts: {v}"));
        }
        if status != 200 {
            return Ok(());
        }
        let count = match path {
            "/v1/embeddings" => v["data"].as_array().map(Vec::len),
            "/api/embed" | "/api/embeddings" => v["embeddings"].as_array().map(Vec::len),
            "/api/rerank" => v["results"].as_array().map(Vec::len),
            _ => v.as_array().map(Vec::len),
        };
        // Ollama's `/api/embed` answers `[]` for a single empty string.
        let single_empty_ollama = path == "/api/embed" && n == 1 && count == Some(0);
        if count != Some(n) && !single_empty_ollama {
            return Err(format!("{path}: {count:?} results for {n} inputs"));
        }
        Ok(())
    });
}

/// EmbeddingGemma's tokenizer (SentencePiece with byte fallback, special tokens) on hostile texts, through
/// `/tokenize` and through embed routes with `truncate: false` and over-long texts (refused before inference).
fn gemma_request() -> impl Strategy<Value = (&'static str, Shown, usize, bool)> {
    (
        any::<bool>(),
        proptest::collection::vec(prop_oneof![3 => clean_string(), 1 => hostile_string()], 1..10),
        proptest::option::of(prop_oneof![Just("query"), Just("document"), Just("STS"), Just("nope"), Just("")]),
        0usize..3,
    )
        .prop_map(|(tokenize, texts, prompt_name, route)| {
            let clean = texts.iter().all(|t| {
                t.0.iter().all(|p| match p {
                    Piece::Text(_) | Piece::Run(..) => true,
                    Piece::Escape(u) => !(0xd800..0xe000).contains(u),
                    Piece::Raw(_) => false,
                })
            }) && prompt_name != Some("nope");
            let k = |s: &str| S(vec![Piece::Text(s.into())]);
            let n = texts.len();
            let mut fields = vec![(k("model"), text(GEMMA))];
            if let Some(p) = prompt_name {
                fields.push((k("prompt_name"), text(p)));
            }
            if tokenize {
                fields.push((k("inputs"), J::Arr(texts.into_iter().map(J::Str).collect())));
            } else {
                // Over 2048 tokens whatever the text: must be refused (400; TEI 422), never embedded.
                let long: Vec<J> = texts
                    .into_iter()
                    .map(|mut t| {
                        t.0.insert(0, Piece::Text("word ".repeat(2100)));
                        J::Str(t)
                    })
                    .collect();
                let field = if route == 2 { "inputs" } else { "input" };
                fields.push((k(field), J::Arr(long)));
                fields.push((k("truncate"), J::Bool(false)));
            }
            let path = if tokenize { "/tokenize" } else { ["/api/embed", "/v1/embeddings", "/embed"][route] };
            (path, Shown(to_bytes(&J::Obj(fields))), n, clean)
        })
}

#[test]
fn fuzz_gemma_tokenizer_hostile_texts() {
    let h = gemma_harness();
    fuzz("gemma", gemma_request(), |(path, Shown(body), n, clean)| {
        let tokenize = path == "/tokenize";
        check_on(h, "POST", path, body.clone())?;
        let req = Request::builder().method("POST").uri(path).body(Body::from(body)).unwrap();
        let (status, bytes) = h.rt.block_on(async {
            let resp = h.app.clone().oneshot(req).await.unwrap();
            let s = resp.status();
            (s, axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap())
        });
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !tokenize {
            // Too long with truncate=false (or invalid JSON/prompt): refused before any inference (TEI's /embed: 422).
            return if status == 400 || (path == "/embed" && status == 422) {
                Ok(())
            } else {
                Err(format!("{path}: {status} for an over-long text: {v}"))
            };
        }
        if !clean {
            return Ok(());
        }
        if status != 200 {
            return Err(format!("/tokenize: {status} for valid texts: {v}"));
        }
        let lists = v.as_array().ok_or("not a list")?;
        if lists.len() != n {
            return Err(format!("{} token lists for {n} texts", lists.len()));
        }
        // TEI's /tokenize does not cut: every list holds at least the special tokens.
        for l in lists {
            let len = l.as_array().map_or(0, Vec::len);
            if len < 2 {
                return Err(format!("a token list of {len} tokens (<bos> and <eos> at least expected)"));
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------------------------
// Fixed extremes.

fn status_of(method: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
    check(method, path, body.clone()).unwrap_or_else(|e| panic!("{e}"));
    let h = harness();
    let req = Request::builder().method(method).uri(path).body(Body::from(body)).unwrap();
    h.rt.block_on(async {
        let resp = h.app.clone().oneshot(req).await.unwrap();
        let s = resp.status().as_u16();
        let b = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    })
}

#[test]
fn ten_megabyte_bodies_get_413_with_a_json_error() {
    let text = "x".repeat(10 << 20);
    for path in ["/api/embed", "/v1/embeddings", "/embed", "/api/rerank"] {
        let body = format!(r#"{{"input": "{text}", "inputs": "{text}"}}"#).into_bytes();
        let (s, v) = status_of("POST", path, body);
        assert_eq!(s, 413, "{path}: {v}");
    }
    // 10 MB of garbage, too.
    let (s, _) = status_of("POST", "/api/embed", vec![0xff; 10 << 20]);
    assert_eq!(s, 413);
}

#[test]
fn deeply_nested_json_is_a_400_not_a_stack_overflow() {
    for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
        for depth in [129usize, 10_000, 100_000] {
            let raw = open.repeat(depth) + &close.repeat(depth);
            let (s, v) = status_of("POST", "/api/embed", raw.clone().into_bytes());
            assert_eq!(s, 400, "{v}");
            // Inside a field, too.
            let body = format!(r#"{{"input": {raw}}}"#);
            let (s, v) = status_of("POST", "/v1/embeddings", body.into_bytes());
            assert_eq!(s, 400, "{v}");
            // Unclosed.
            let (s, _) = status_of("POST", "/embed", open.repeat(depth).into_bytes());
            assert_eq!(s, 400);
        }
    }
}

#[test]
fn million_element_arrays_are_refused_or_cut_never_a_crash() {
    // 1e6 texts: over --max-inputs (2048) on every route that takes a list.
    let many = format!("[{}]", vec!["\"a\""; 1_000_000].join(","));
    for (path, field) in [
        ("/api/embed", "input"),
        ("/v1/embeddings", "input"),
        ("/embed", "inputs"),
        ("/tokenize", "inputs"),
        ("/api/embeddings", "input"),
    ] {
        let (s, v) = status_of("POST", path, format!(r#"{{"{field}": {many}}}"#).into_bytes());
        assert_eq!(s, 413, "{path}: {v}");
    }
    let (s, _) = status_of("POST", "/api/rerank", format!(r#"{{"query": "q", "documents": {many}}}"#).into_bytes());
    assert_eq!(s, 413);
    let (s, _) = status_of(
        "POST",
        "/similarity",
        format!(r#"{{"inputs": {{"source_sentence": "q", "sentences": {many}}}}}"#).into_bytes(),
    );
    assert_eq!(s, 413);
    // 1e6 token ids in one sequence: cut to the model's limit (truncate defaults to true), refused without it.
    let ids = format!("[{}]", vec!["7"; 1_000_000].join(","));
    let (s, v) = status_of("POST", "/v1/embeddings", format!(r#"{{"input": {ids}}}"#).into_bytes());
    assert_eq!(s, 200, "{v}");
    let (s, _) = status_of("POST", "/v1/embeddings", format!(r#"{{"input": {ids}, "truncate": false}}"#).into_bytes());
    assert_eq!(s, 400);
    // 1e6 one-id sequences: too many inputs.
    let seqs = format!("[{}]", vec!["[7]"; 1_000_000].join(","));
    let (s, _) = status_of("POST", "/v1/embeddings", format!(r#"{{"input": {seqs}}}"#).into_bytes());
    assert_eq!(s, 413);
    // 1e6 numbers where a string is expected; 1e6 nulls; 1e6-key object.
    let nums = format!("[{}]", vec!["1.5"; 1_000_000].join(","));
    let (s, _) = status_of("POST", "/api/embed", format!(r#"{{"input": {nums}}}"#).into_bytes());
    assert!(s == 400 || s == 413, "{s}");
    let keys: Vec<String> = (0..1_000_000).map(|i| format!("\"k{i}\":0")).collect();
    let (s, _) = status_of("POST", "/api/embed", format!("{{{}}}", keys.join(",")).into_bytes());
    assert!(s < 500);
}

#[test]
fn huge_unicode_runs_and_control_characters_embed() {
    for (c, n) in [
        ('😀', 500_000usize),
        ('\u{301}', 1_000_000),
        ('\0', 1_000_000),
        ('字', 1_000_000),
        ('\u{200b}', 1_000_000),
        ('\u{7}', 100_000),
    ] {
        let t: String = std::iter::repeat_n(c, n).collect();
        let body = serde_json::json!({"model": MODEL, "input": [t, "plain"]}).to_string();
        assert!(body.len() < 8 << 20);
        let (s, v) = status_of("POST", "/api/embed", body.into_bytes());
        assert_eq!(s, 200, "{c:?}×{n}: {v}");
        assert_eq!(v["embeddings"].as_array().unwrap().len(), 2);
    }
    // Lone surrogates: not valid in JSON text → 400 with a message, on every family.
    for path in ["/api/embed", "/v1/embeddings", "/embed"] {
        for esc in [r"\ud800", r"\udfff", r"\ud800\u0041", r"\udc00\ud800"] {
            let body = format!(r#"{{"input": "a{esc}b", "inputs": "a{esc}b"}}"#);
            let (s, v) = status_of("POST", path, body.into_bytes());
            assert_eq!(s, 400, "{path} {esc}: {v}");
        }
    }
    // A valid surrogate pair is an ordinary character.
    let (s, v) = status_of("POST", "/api/embed", br#"{"input": "\ud83d\ude00 ok"}"#.to_vec());
    assert_eq!(s, 200, "{v}");
}

/// Inputs that once failed a property, kept as regression tests.
#[test]
fn regressions() {
    let cases: &[(&str, &str, &[u8])] = &[
        // Found by `bytes`: a model id that is not UTF-8 once percent-decoded got axum's plain-text 400.
        ("GET", "/v1/models/%00%ff", b""),
        ("GET", "/v1/models/%ff", b""),
    ];
    for (method, path, body) in cases {
        check(method, path, body.to_vec()).unwrap_or_else(|e| panic!("{e}"));
    }
}
