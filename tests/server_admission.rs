//! `--max-inflight-bytes` on the real binary with potion-base-8M: requests are admitted by the body bytes in flight
//! (counted from Content-Length before the body is read), a request that can never fit gets 413 naming the limit,
//! one that does not fit now 429, and small requests keep flowing while large ones hold most of the budget.
mod server_support;

use std::time::{Duration, Instant};

use serde_json::json;
use server_support::*;

const BUDGET: usize = 200_000;
const LARGE: usize = 60_000;

/// `deposium_admission_inflight_bytes` from /metrics.
fn inflight(srv: &Server) -> u64 {
    let text = srv.get("/metrics").text();
    let line = text.lines().find(|l| l.starts_with("deposium_admission_inflight_bytes ")).expect("gauge in /metrics");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn wait_inflight(srv: &Server, want: u64) {
    let t0 = Instant::now();
    while inflight(srv) != want {
        assert!(t0.elapsed() < Duration::from_secs(60), "in-flight bytes {} never reached {want}", inflight(srv));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A JSON body of exactly `len` bytes embedding `text` (padded with spaces, which JSON ignores).
fn body_of(text: &str, len: usize) -> String {
    let mut b = json!({"model": "potion-base-8M", "input": [text]}).to_string();
    assert!(b.len() <= len);
    b.push_str(&" ".repeat(len - b.len()));
    b
}

#[test]
fn inflight_byte_budget_admits_by_size() {
    require_model("potion-base-8M");
    let budget = BUDGET.to_string();
    let srv = Server::start(&["--model", "potion-base-8M", "--max-inflight-bytes", &budget]);
    let want = |text: &str| cli_vectors("potion-base-8M", &[text], &[]);

    // Over the budget: 413 naming the limit before the body is read, in each family's error shape.
    let never = body_of("too big", BUDGET + 1);
    for path in ["/api/embed", "/v1/embeddings", "/embed"] {
        let r = srv.request("POST", path, &[], never.as_bytes());
        if path == "/v1/embeddings" {
            assert_openai_error(&r, 413);
        } else {
            assert_plain_error(&r, 413);
        }
        assert!(r.text().contains("--max-inflight-bytes"), "{}", r.text());
    }

    // Three large requests whose bodies have not arrived yet hold 3 x 60,000 bytes of the budget.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = Conn::open(&srv.addr).unwrap();
        c.send_head("POST", "/api/embed", &[], LARGE).unwrap();
        held.push(c);
    }
    wait_inflight(&srv, 3 * LARGE as u64);
    // A fourth does not fit now: 429 naming the limit.
    let r = srv.request("POST", "/v1/embeddings", &[], body_of("a fourth", LARGE).as_bytes());
    assert_openai_error(&r, 429);
    assert!(r.text().contains("--max-inflight-bytes"), "{}", r.text());
    // Small requests still fit in what is left, one after another and at once.
    std::thread::scope(|s| {
        for i in 0..8 {
            let srv = &srv;
            s.spawn(move || {
                let text = format!("small request {i}");
                let r = srv.post("/api/embed", &json!({"model": "potion-base-8M", "input": [text]}));
                assert_eq!(r.status, 200, "{}", r.text());
                assert_same_vectors("small", &matrix(&r.json()["embeddings"]), &want(&text));
            });
        }
    });
    // The held bodies arrive: each answered with its vector, and the budget is free again.
    for (i, mut c) in held.into_iter().enumerate() {
        let text = format!("large request {i}");
        c.write(body_of(&text, LARGE).as_bytes()).unwrap();
        let r = c.read_response().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_same_vectors("large", &matrix(&r.json()["embeddings"]), &want(&text));
    }
    wait_inflight(&srv, 0);
    let r = srv.request("POST", "/v1/embeddings", &[], body_of("a fourth", LARGE).as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(srv.get("/health").status, 200);
}
