//! libFuzzer target: the first byte picks a method and a route, the rest is the request body, sent to the
//! in-process router over the real potion-base-8M. Crashes on a panic, a 5xx (none is documented for this model:
//! its output cannot be NaN) or a 4xx without a JSON `error`.
#![no_main]
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use deposium_server::{router, AppState, Config};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/embed"),
    ("POST", "/api/embeddings"),
    ("POST", "/v1/embeddings"),
    ("POST", "/embed"),
    ("POST", "/rerank"),
    ("POST", "/api/rerank"),
    ("POST", "/similarity"),
    ("POST", "/tokenize"),
    ("POST", "/api/show"),
    ("GET", "/api/tags"),
    ("GET", "/v1/models"),
    ("GET", "/info"),
    ("PUT", "/api/embed"),
    ("POST", "/nothing"),
];

struct Harness {
    app: Router,
    rt: tokio::runtime::Runtime,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let spec = deposium_engine::registry::resolve("potion-base-8M").expect("known model");
        let model = deposium_engine::registry::load_spec(&spec)
            .expect("potion-base-8M: run `make fetch` first");
        let state = AppState::with_models(Config::default(), vec![(spec, model)]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Harness {
            app: router(state),
            rt,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let (method, path) = ROUTES[pick as usize % ROUTES.len()];
    let h = harness();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::from(body.to_vec()))
        .unwrap();
    let (status, bytes) = h.rt.block_on(async {
        let resp = h.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, bytes)
    });
    assert!(
        !status.is_server_error(),
        "{method} {path}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    if status.is_client_error() {
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{method} {path}: {status} not JSON: {}", String::from_utf8_lossy(&bytes)));
        assert!(
            v["error"].is_string() || v["error"]["message"].is_string(),
            "{method} {path}: {status} without an error: {v}"
        );
    }
});
