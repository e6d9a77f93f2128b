//! The real binary's life: API key, a model that fails to load, back-pressure, client disconnects, and a graceful
//! SIGTERM that answers in-flight requests and exits 0.
mod server_support;

use std::time::Duration;

use serde_json::json;
use server_support::*;

const MODEL: &str = "potion-base-8M";

#[test]
fn api_key_is_required_except_on_health_and_root() {
    require_model(MODEL);
    let srv = Server::start(&["--model", MODEL, "--api-key", "k3y"]);
    let body = json!({"input": "a"}).to_string();
    let r = srv.request("POST", "/api/embed", &[], body.as_bytes());
    assert_plain_error(&r, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_openai_error(
        &srv.request("POST", "/v1/embeddings", &[("authorization", "Bearer nope")], body.as_bytes()),
        401,
    );
    assert_plain_error(&srv.request("POST", "/embed", &[], b"{\"inputs\": \"a\"}"), 401);
    assert_plain_error(&srv.get("/api/tags"), 401);
    assert_plain_error(&srv.get("/metrics"), 401);
    assert_eq!(srv.get("/health").status, 200);
    assert_eq!(srv.get("/").status, 200);
    let r = srv.request("POST", "/v1/embeddings", &[("authorization", "Bearer k3y")], body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let r = srv.request("POST", "/api/embed", &[("authorization", "Bearer k3y")], body.as_bytes());
    assert_eq!(r.status, 200);
}

#[test]
fn a_model_that_fails_to_load_is_reported_and_the_others_are_served() {
    require_model(MODEL);
    let srv = Server::start(&["--model", MODEL, "--model", "broken=/nonexistent/model/dir"]);
    let r = srv.get("/health");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["status"], "degraded");
    assert_eq!(v["models"][1]["name"], "broken");
    assert_eq!(v["models"][1]["status"], "failed");
    assert!(v["models"][1]["error"].as_str().unwrap().contains("/nonexistent/model/dir"), "{v}");
    assert!(srv.log().contains("broken"), "the failure is logged:\n{}", srv.log());
    let r = srv.post("/api/embed", &json!({"model": "broken", "input": "a"}));
    assert_plain_error(&r, 503);
    assert!(r.json()["error"].as_str().unwrap().contains("failed to load"));
    assert_eq!(srv.post("/api/embed", &json!({"model": MODEL, "input": "a"})).status, 200);
    assert_eq!(srv.get("/api/status").json()["models"][1]["status"], "failed");
}

#[test]
fn no_loadable_model_means_unhealthy() {
    let srv = Server::spawn(&["--model", "broken=/nonexistent/model/dir"]);
    let t0 = std::time::Instant::now();
    loop {
        let r = srv.get("/health");
        assert_eq!(r.status, 503);
        if r.json()["status"] == "failed" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_plain_error(&srv.post("/api/embed", &json!({"input": "a"})), 503);
}

/// Send a request's head and half its body; the request is then in flight until the rest is sent.
fn half_sent(srv: &Server, path: &str, body: &str) -> (Conn, String) {
    let mut c = Conn::open(&srv.addr).unwrap();
    c.send_head("POST", path, &[("content-type", "application/json")], body.len()).unwrap();
    let (a, b) = body.split_at(body.len() / 2);
    c.write(a.as_bytes()).unwrap();
    (c, b.to_string())
}

#[test]
fn concurrency_limit_answers_429() {
    require_model(MODEL);
    let srv = Server::start(&["--model", MODEL, "--max-concurrent-requests", "1"]);
    let body = json!({"input": ["held open"]}).to_string();
    let (mut held, rest) = half_sent(&srv, "/api/embed", &body);
    std::thread::sleep(Duration::from_millis(200));
    assert_plain_error(&srv.post("/api/embed", &json!({"input": "x"})), 429);
    assert_openai_error(&srv.post("/v1/embeddings", &json!({"input": "x"})), 429);
    assert_eq!(srv.get("/health").status, 200, "health is outside the limit");
    held.write(rest.as_bytes()).unwrap();
    assert_eq!(held.read_response().unwrap().status, 200);
    assert_eq!(srv.post("/api/embed", &json!({"input": "x"})).status, 200);
}

#[test]
fn client_disconnects_do_not_hurt_other_requests() {
    require_model(MODEL);
    let srv = Server::start(&["--model", MODEL, "--max-batch-size", "4"]);
    let big: Vec<String> = (0..2000).map(|i| format!("document {i} {}", "filler text ".repeat(30))).collect();
    let body = json!({"input": big}).to_string();
    let want = srv.post("/api/embed", &json!({"input": ["bystander"]})).json()["embeddings"].clone();
    for _ in 0..10 {
        // Send a whole big request, then hang up without reading the answer.
        let mut c = Conn::open(&srv.addr).unwrap();
        c.send_head("POST", "/api/embed", &[], body.len()).unwrap();
        c.write(body.as_bytes()).unwrap();
        drop(c);
        let r = srv.post("/api/embed", &json!({"input": ["bystander"]}));
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["embeddings"], want);
    }
    // Queues drain to empty.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(metric(&srv, "deposium_queue_depth{model=\"potion-base-8M\"}"), 0.0);
}

/// A value from `/metrics`.
fn metric(srv: &Server, name: &str) -> f64 {
    let text = srv.get("/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

#[test]
fn a_dropped_request_stops_using_the_backend() {
    require_model(MODEL);
    let srv = Server::start(&["--model", MODEL, "--max-batch-size", "1", "--max-inputs", "1000000"]);
    let n = 200_000;
    let texts: Vec<String> = (0..n).map(|i| format!("doc {i}")).collect();
    let body = json!({ "input": texts }).to_string();
    let mut c = Conn::open(&srv.addr).unwrap();
    c.send_head("POST", "/api/embed", &[], body.len()).unwrap();
    c.write(body.as_bytes()).unwrap();
    // Hang up once the request is queued in the batcher.
    let depth = "deposium_queue_depth{model=\"potion-base-8M\"}";
    let t0 = std::time::Instant::now();
    while metric(&srv, depth) == 0.0 {
        assert!(t0.elapsed() < Duration::from_secs(60), "never queued");
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(c);
    let t0 = std::time::Instant::now();
    while metric(&srv, depth) != 0.0 {
        assert!(t0.elapsed() < Duration::from_secs(60), "queue never drained");
        std::thread::sleep(Duration::from_millis(10));
    }
    let cancelled = metric(&srv, "deposium_cancelled_inputs_total{model=\"potion-base-8M\"}");
    let ran = metric(&srv, "deposium_backend_inputs_total{model=\"potion-base-8M\"}");
    assert!(cancelled > 0.0 && ran < n as f64, "ran {ran}, cancelled {cancelled}");
    assert_eq!(ran + cancelled, n as f64, "every queued input either ran or was dropped");
    assert!(srv.get("/metrics").text().contains("route=\"/api/embed\",status=\"499\""));
    assert_eq!(srv.post("/api/embed", &json!({"input": "after"})).status, 200);
}

#[test]
fn sigterm_answers_in_flight_requests_then_exits_zero() {
    require_model(MODEL);
    let mut srv = Server::start(&["--model", MODEL]);
    let want = cli_vectors(MODEL, &["in flight during shutdown"], &[]);
    let body = json!({"input": ["in flight during shutdown"]}).to_string();
    let (mut held, rest) = half_sent(&srv, "/api/embed", &body);
    std::thread::sleep(Duration::from_millis(200));
    srv.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    // New connections are refused while the in-flight request is still open.
    assert!(srv.try_request("GET", "/health", &[], b"").is_err(), "accepting after SIGTERM");
    held.write(rest.as_bytes()).unwrap();
    let r = held.read_response().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_same_vectors("in-flight answer", &matrix(&r.json()["embeddings"]), &want);
    let status = srv.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "exit status {status:?}:\n{}", srv.log());
}
