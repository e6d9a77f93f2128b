//! Faults on the real binary that tests/server_lifecycle.rs does not cover: SIGTERM under concurrent load (with
//! long EmbeddingGemma requests in flight), a client hanging up during a large EmbeddingGemma batch while other
//! requests share its steps, clients that time out (reading or sending), and models whose files are corrupt.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deposium_soak::http::{self, Client, Conn, Resp};
use deposium_soak::server::Server;
use deposium_test_support::{cosine, floats};
use serde_json::{json, Value};

const SOAK: &str = env!("CARGO_BIN_EXE_deposium-soak");
const GEMMA: &str = "embeddinggemma";
const POTION: &str = "potion-base-8M";

fn bin() -> PathBuf {
    deposium_soak::find_server_binary(Some(Path::new(SOAK))).unwrap_or_else(|| {
        panic!("deposium-embed not found next to {SOAK}: `cargo build -p deposium-embed` (or cargo test --workspace)")
    })
}

fn models_dir() -> PathBuf {
    std::env::var("DEPOSIUM_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/deposium"))
        .join("models")
}

fn require(dir: &str) -> PathBuf {
    let p = models_dir().join(dir);
    assert!(p.is_dir(), "model {} missing: run `make fetch` first", p.display());
    p
}

fn start(args: &[&str]) -> Server {
    Server::start(&bin(), args, Duration::from_secs(300)).unwrap()
}

fn client(srv: &Server) -> Client {
    Client::new(&srv.addr, Duration::from_secs(120)).unwrap()
}

/// Vectors of an `/api/embed` answer.
fn embeddings(r: &Resp) -> Vec<Vec<f32>> {
    let v = r.json().unwrap_or_else(|| panic!("not JSON: {}", r.text()));
    v["embeddings"]
        .as_array()
        .unwrap_or_else(|| panic!("no embeddings: {v}"))
        .iter()
        .map(|e| floats(e).unwrap())
        .collect()
}

/// Single-request reference vectors, one text at a time.
fn references(srv: &Server, model: &str, texts: &[String]) -> Vec<Vec<f32>> {
    let mut c = client(srv);
    texts
        .iter()
        .map(|t| {
            let r = c.post_json("/api/embed", &json!({"model": model, "input": t})).unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            embeddings(&r).remove(0)
        })
        .collect()
}

fn assert_vectors(what: &str, got: &[Vec<f32>], want: &[&Vec<f32>]) {
    assert_eq!(got.len(), want.len(), "{what}: count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let c = cosine(g, w);
        assert!(c >= 0.99999, "{what}[{i}]: cosine {c} to the single-request reference");
    }
}

fn metric(srv: &Server, name: &str) -> f64 {
    let text = http::once(&srv.addr, "GET", "/metrics", b"", Duration::from_secs(30)).unwrap().text();
    http::metric(&text, name).unwrap_or(0.0)
}

/// Texts of about `words` words from a fixed vocabulary, each distinct.
/// `n` connections that POST the head and half of `body` to `path`, then stall.
fn stalled_senders(addr: SocketAddr, n: usize, path: &str, body: &str, close: bool, timeout: Duration) -> Vec<Conn> {
    (0..n)
        .map(|_| {
            let mut c = Conn::open(addr, timeout).unwrap();
            c.send_head("POST", path, &[], body.len(), close).unwrap();
            c.write(&body.as_bytes()[..body.len() / 2]).unwrap();
            c
        })
        .collect()
}

fn texts(n: usize, words: usize, tag: &str) -> Vec<String> {
    const W: &[&str] = &[
        "the", "river", "crossed", "a", "quiet", "valley", "where", "farmers", "grew", "wheat", "and", "barley",
        "under", "wide", "skies", "while", "children", "played", "near", "old", "stone", "bridges",
    ];
    (0..n)
        .map(|i| {
            let body: Vec<&str> = (0..words).map(|j| W[(i * 7 + j * 3 + j / 5) % W.len()]).collect();
            format!("{tag} {i}: {}", body.join(" "))
        })
        .collect()
}

#[test]
fn sigterm_under_concurrent_load_finishes_in_flight_refuses_new_exits_zero() {
    require("potion-base-8M");
    require("embeddinggemma-300m");
    // Steps of 2 sequences, so a long request spans several steps and is still running after SIGTERM.
    let mut srv = start(&["--model", POTION, "--model", GEMMA, "--max-batch-size", "2"]);
    let long_texts = texts(4, 300, "long");
    let long_refs = references(&srv, GEMMA, &long_texts);
    let short_texts = texts(32, 12, "short");
    let short_refs = Arc::new(references(&srv, POTION, &short_texts));
    let short_texts = Arc::new(short_texts);
    let gemma_ran = "deposium_backend_inputs_total{model=\"embeddinggemma\"}";
    let ran_before = metric(&srv, gemma_ran);

    // Long EmbeddingGemma requests (4 texts of ~400 tokens each, in rotated order) in flight when SIGTERM comes.
    let long: Vec<_> = (0..3)
        .map(|k| {
            let addr = srv.addr.clone();
            let batch: Vec<String> = (0..4).map(|j| long_texts[(k + j) % 4].clone()).collect();
            std::thread::spawn(move || {
                let body = json!({"model": GEMMA, "input": batch}).to_string();
                let t0 = Instant::now();
                let r = http::once(&addr, "POST", "/api/embed", body.as_bytes(), Duration::from_secs(300));
                (r, t0.elapsed())
            })
        })
        .collect();

    // Sixteen keep-alive clients on potion-base-8M, mixed routes and batch sizes, until the server is gone.
    let stop = Arc::new(AtomicBool::new(false));
    let signalled: Arc<Mutex<Option<Instant>>> = Arc::default();
    let load: Vec<_> = (0..16)
        .map(|i| {
            let (addr, stop, signalled) = (srv.addr.clone(), stop.clone(), signalled.clone());
            let (texts, refs) = (short_texts.clone(), short_refs.clone());
            std::thread::spawn(move || {
                let mut c = Client::new(&addr, Duration::from_secs(60)).unwrap();
                let (mut answered, mut refused_after, mut late_answers) = (0u32, 0u32, 0u32);
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let size = 1 + (i * 5 + n) % 16;
                    let idx: Vec<usize> = (0..size).map(|j| (i + n * 3 + j) % texts.len()).collect();
                    let batch: Vec<&str> = idx.iter().map(|&j| texts[j].as_str()).collect();
                    let (path, body) = if n.is_multiple_of(2) {
                        ("/api/embed", json!({"model": POTION, "input": batch}))
                    } else {
                        ("/embed", json!({"model": POTION, "inputs": batch}))
                    };
                    let sent_at = Instant::now();
                    match c.post_json(path, &body) {
                        Ok(r) => {
                            assert_eq!(r.status, 200, "{path} during shutdown: {}", r.text());
                            let v = r.json().unwrap();
                            let got: Vec<Vec<f32>> = if path == "/embed" {
                                v.as_array().unwrap().clone()
                            } else {
                                v["embeddings"].as_array().unwrap().clone()
                            }
                            .iter()
                            .map(|e| floats(e).unwrap())
                            .collect();
                            let want: Vec<&Vec<f32>> = idx.iter().map(|&j| &refs[j]).collect();
                            assert_vectors(path, &got, &want);
                            answered += 1;
                            if signalled.lock().unwrap().is_some_and(|t| sent_at > t) {
                                late_answers += 1;
                            }
                        }
                        Err(e) => {
                            // Only around or after SIGTERM: the server closes idle keep-alive connections (a
                            // request racing that close is unread, as in any HTTP/1.1 server) and stops accepting.
                            // A request sent a second before the signal was in flight and must have been answered.
                            let sig =
                                signalled.lock().unwrap().unwrap_or_else(|| panic!("client {i}: {e} before SIGTERM"));
                            assert!(
                                sent_at + Duration::from_secs(1) > sig,
                                "client {i}: a request sent {:?} before SIGTERM was not answered: {e}",
                                sig - sent_at
                            );
                            refused_after += 1;
                            if refused_after > 3 {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
                (answered, refused_after, late_answers)
            })
        })
        .collect();

    // Let the load get going and the long requests through their first steps, then SIGTERM.
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    while metric(&srv, gemma_ran) < ran_before + 2.0 {
        assert!(t0.elapsed() < Duration::from_secs(120), "the long requests never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let in_flight = metric(&srv, "deposium_requests_in_flight");
    *signalled.lock().unwrap() = Some(Instant::now());
    srv.signal("TERM").unwrap();
    let t_sig = Instant::now();
    std::thread::sleep(Duration::from_millis(400));
    // New connections are refused while the long requests are still running.
    let fresh = http::once(&srv.addr, "GET", "/health", b"", Duration::from_secs(5));
    assert!(fresh.is_err(), "a new connection was served 400 ms after SIGTERM: {:?}", fresh.map(|r| r.status));
    let long_still_running = long.iter().filter(|h| !h.is_finished()).count();

    for (k, h) in long.into_iter().enumerate() {
        let (r, took) = h.join().unwrap();
        let r =
            r.unwrap_or_else(|e| panic!("long request {k} in flight at SIGTERM was not answered: {e}\n{}", srv.log()));
        assert_eq!(r.status, 200, "{}", r.text());
        let want: Vec<&Vec<f32>> = (0..4).map(|j| &long_refs[(k + j) % 4]).collect();
        assert_vectors("in-flight EmbeddingGemma batch", &embeddings(&r), &want);
        eprintln!("long request {k}: answered after {took:?}");
    }
    let status = srv.wait_exit(Duration::from_secs(60)).expect("server exited after SIGTERM");
    stop.store(true, Ordering::Relaxed);
    let mut total = (0, 0, 0);
    for h in load {
        let (a, r, l) = h.join().expect("a load client failed");
        total = (total.0 + a, total.1 + r, total.2 + l);
    }
    eprintln!(
        "in flight at SIGTERM: {in_flight}; long requests still running 400 ms later: {long_still_running}; \
         load answered {} (of which sent after SIGTERM: {}), refused after SIGTERM {}; exit after {:?}",
        total.0,
        total.2,
        total.1,
        t_sig.elapsed()
    );
    assert!(long_still_running >= 1, "the long requests finished before the test could check refusal");
    // The short requests share the compute gate with the long EmbeddingGemma steps (a turn per step): ~30 answered
    // in the second before SIGTERM.
    assert!(total.0 > 10, "the load clients barely ran");
    assert!(status.success(), "exit status {status:?}:\n{}", srv.log());
    let log = srv.log();
    assert!(log.contains("shutdown signal"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn client_hangs_up_during_a_large_gemma_batch_others_sharing_its_steps_are_answered() {
    require("embeddinggemma-300m");
    let srv = start(&["--model", GEMMA, "--max-batch-size", "4"]);
    let by = texts(8, 20, "bystander");
    let by_refs = Arc::new(references(&srv, GEMMA, &by));
    let by = Arc::new(by);
    let big = texts(64, 60, "big");
    let depth = "deposium_queue_depth{model=\"embeddinggemma\"}";
    let ran = "deposium_backend_inputs_total{model=\"embeddinggemma\"}";
    let cancelled = "deposium_cancelled_inputs_total{model=\"embeddinggemma\"}";
    let ran_before = metric(&srv, ran);

    // The big request, sent whole; hang up once its first steps have run.
    let body = json!({"model": GEMMA, "input": big}).to_string();
    let mut conn = Conn::open(http::loopback(&srv.addr).unwrap(), Duration::from_secs(60)).unwrap();
    conn.send_head("POST", "/api/embed", &[], body.len(), true).unwrap();
    conn.write(body.as_bytes()).unwrap();
    let t0 = Instant::now();
    while metric(&srv, ran) < ran_before + 4.0 {
        assert!(t0.elapsed() < Duration::from_secs(120), "the big batch never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Bystanders join the queue while the big batch is running, then the big client goes away.
    let bystanders: Vec<_> = (0..4)
        .map(|i| {
            let (addr, by, refs) = (srv.addr.clone(), by.clone(), by_refs.clone());
            std::thread::spawn(move || {
                let mut c = Client::new(&addr, Duration::from_secs(120)).unwrap();
                for round in 0..3 {
                    let idx: Vec<usize> = (0..1 + (i + round) % 3).map(|j| (i * 2 + round + j) % by.len()).collect();
                    let batch: Vec<&str> = idx.iter().map(|&j| by[j].as_str()).collect();
                    let r = c.post_json("/api/embed", &json!({"model": GEMMA, "input": batch})).unwrap();
                    assert_eq!(r.status, 200, "{}", r.text());
                    let want: Vec<&Vec<f32>> = idx.iter().map(|&j| &refs[j]).collect();
                    assert_vectors("bystander", &embeddings(&r), &want);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    drop(conn);
    for b in bystanders {
        b.join().expect("a bystander got a wrong answer");
    }
    let t0 = Instant::now();
    while metric(&srv, depth) != 0.0 {
        assert!(t0.elapsed() < Duration::from_secs(120), "queue never drained");
        std::thread::sleep(Duration::from_millis(50));
    }
    // No leaked work: once the queue is empty the backend stops, and every queued input either ran or was dropped.
    let settled = metric(&srv, ran);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(metric(&srv, ran), settled, "the backend kept working after the queue drained");
    let n_cancelled = metric(&srv, cancelled);
    let bystander_inputs: f64 = (0..4).map(|i| (0..3).map(|round| (1 + (i + round) % 3) as f64).sum::<f64>()).sum();
    assert!(n_cancelled > 0.0, "the hung-up batch was not dropped");
    assert_eq!(
        settled - ran_before + n_cancelled,
        big.len() as f64 + bystander_inputs,
        "every queued input either ran or was dropped"
    );
    let text = http::once(&srv.addr, "GET", "/metrics", b"", Duration::from_secs(10)).unwrap().text();
    assert!(text.contains("route=\"/api/embed\",status=\"499\""), "the hang-up is counted as 499");
    eprintln!("big batch: {} of {} inputs ran before the hang-up dropped the rest", 64.0 - n_cancelled, big.len());
}

#[test]
fn clients_that_time_out_reading_or_sending_free_the_server() {
    require("potion-base-8M");
    require("embeddinggemma-300m");
    let srv = start(&["--model", GEMMA, "--model", POTION, "--max-concurrent-requests", "8"]);
    let want = references(&srv, POTION, &["after the timeouts".to_string()]);
    let addr = http::loopback(&srv.addr).unwrap();

    // Readers that give up: long EmbeddingGemma requests with a 300 ms client-side timeout.
    let slow = texts(8, 400, "timeout");
    for k in 0..4 {
        let mut c = Client::new(&srv.addr, Duration::from_millis(300)).unwrap();
        let r = c.post_json("/api/embed", &json!({"model": GEMMA, "input": &slow[k * 2..k * 2 + 2]}));
        let e = r.expect_err("a long EmbeddingGemma request answered within 300 ms");
        assert!(matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{e:?}");
        // Dropping the client closes the connection, as a timed-out HTTP client does.
    }
    // Senders that give up: head and half a body, then silence, then close (4 of the 8 permits held meanwhile).
    let body = json!({"model": POTION, "input": ["never finished"]}).to_string();
    let mut stalled = stalled_senders(addr, 4, "/api/embed", &body, true, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    // While they stall, other clients are served (4 permits left).
    let mut c = client(&srv);
    for _ in 0..8 {
        let r = c.post_json("/api/embed", &json!({"model": POTION, "input": "after the timeouts"})).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_vectors("while others stall", &embeddings(&r), &[&want[0]]);
    }
    stalled.clear();

    // Everything is released: nothing in flight but this scrape, the EmbeddingGemma queue drained, work dropped.
    let t0 = Instant::now();
    loop {
        let in_flight = metric(&srv, "deposium_requests_in_flight");
        let depth = metric(&srv, "deposium_queue_depth{model=\"embeddinggemma\"}");
        if in_flight <= 1.0 && depth == 0.0 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "not released: in flight {in_flight}, queue {depth}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The readers' work was dropped, not run: in the queue (deposium_cancelled_inputs_total) or before it, while the
    // request waited for its model's turn to tokenize (batcher::Scheduler).
    let ran = metric(&srv, "deposium_backend_inputs_total{model=\"embeddinggemma\"}");
    let cancelled = metric(&srv, "deposium_cancelled_inputs_total{model=\"embeddinggemma\"}");
    assert!(
        ran < slow.len() as f64,
        "all {} inputs of clients that had left ran ({ran} ran, {cancelled} cancelled)",
        slow.len()
    );
    // All 8 permits are free again: 8 concurrent requests are all answered (no 429).
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let addr = srv.addr.clone();
            std::thread::spawn(move || {
                http::once(
                    &addr,
                    "POST",
                    "/api/embed",
                    br#"{"model": "potion-base-8M", "input": "after the timeouts"}"#,
                    Duration::from_secs(30),
                )
                .unwrap()
            })
        })
        .collect();
    for h in handles {
        let r = h.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_vectors("after", &embeddings(&r), &[&want[0]]);
    }
}

/// A copy of a model directory with one file replaced.
fn corrupt_copy(src: &Path, name: &str, file: &str, contents: &[u8]) -> PathBuf {
    let dir = deposium_soak::workspace_root().join("target/tmp").join(format!("faults-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
    }
    std::fs::write(dir.join(file), contents).unwrap();
    dir
}

#[test]
fn corrupt_model_files_fail_that_model_with_a_reason_and_the_others_serve_under_load() {
    let potion = require("potion-base-8M");
    let truncated = {
        let bytes = std::fs::read(potion.join("model.safetensors")).unwrap();
        bytes[..bytes.len() / 3].to_vec()
    };
    let bad_weights = corrupt_copy(&potion, "weights", "model.safetensors", &truncated);
    let bad_tokenizer = corrupt_copy(&potion, "tokenizer", "tokenizer.json", b"{\"not\": \"a tokenizer\"");
    let onnx_dir = corrupt_copy(&potion, "onnx", "model.onnx", b"this is not an ONNX protobuf");
    for f in ["model.safetensors", "config.json", "modules.json"] {
        let _ = std::fs::remove_file(onnx_dir.join(f));
    }
    let specs = [
        format!("truncated-weights={}", bad_weights.display()),
        format!("bad-tokenizer={}", bad_tokenizer.display()),
        format!("garbage-onnx={}", onnx_dir.display()),
    ];
    let srv = start(&["--model", POTION, "--model", &specs[0], "--model", &specs[1], "--model", &specs[2]]);
    let health = http::once(&srv.addr, "GET", "/health", b"", Duration::from_secs(10)).unwrap();
    assert_eq!(health.status, 200, "degraded is still healthy: {}", health.text());
    let h = health.json().unwrap();
    assert_eq!(h["status"], "degraded", "{h}");
    let log = srv.log();
    for (name, dir) in
        [("truncated-weights", &bad_weights), ("bad-tokenizer", &bad_tokenizer), ("garbage-onnx", &onnx_dir)]
    {
        let m = h["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in /health: {h}"));
        assert_eq!(m["status"], "failed", "{m}");
        let reason = m["error"].as_str().unwrap_or("");
        assert!(!reason.is_empty(), "{name}: no reason in /health: {m}");
        // The log says which model and why.
        let line = log
            .lines()
            .find(|l| l.contains("failed to load") && l.contains(name))
            .unwrap_or_else(|| panic!("no log line for {name}:\n{log}"));
        assert!(line.len() > 40, "{line}");
        eprintln!("{name} ({}): {reason}", dir.display());
        // Asking for it: 503 with a JSON error naming it and the reason.
        let r = http::once(
            &srv.addr,
            "POST",
            "/api/embed",
            json!({"model": name, "input": "x"}).to_string().as_bytes(),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(r.status, 503, "{}", r.text());
        let msg = r.json().unwrap()["error"].as_str().unwrap_or("").to_string();
        assert!(msg.contains(name) && msg.contains("failed to load"), "{msg}");
        let r = http::once(
            &srv.addr,
            "POST",
            "/v1/embeddings",
            json!({"model": name, "input": "x"}).to_string().as_bytes(),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.is_json_error(), "{}", r.text());
    }
    // The good model serves concurrent load with the right vectors.
    let tx = texts(16, 10, "good");
    let refs = Arc::new(references(&srv, POTION, &tx));
    let tx = Arc::new(tx);
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let (addr, tx, refs) = (srv.addr.clone(), tx.clone(), refs.clone());
            std::thread::spawn(move || {
                let mut c = Client::new(&addr, Duration::from_secs(30)).unwrap();
                for n in 0..50 {
                    let idx: Vec<usize> = (0..1 + (i + n) % 8).map(|j| (i + n + j) % tx.len()).collect();
                    let batch: Vec<&str> = idx.iter().map(|&j| tx[j].as_str()).collect();
                    // No model named: the first --model (the good one) answers.
                    let body: Value =
                        if n % 2 == 0 { json!({"input": batch}) } else { json!({"model": POTION, "input": batch}) };
                    let r = c.post_json("/api/embed", &body).unwrap();
                    assert_eq!(r.status, 200, "{}", r.text());
                    let want: Vec<&Vec<f32>> = idx.iter().map(|&j| &refs[j]).collect();
                    assert_vectors("good model", &embeddings(&r), &want);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("the good model failed under load");
    }
    for d in [bad_weights, bad_tokenizer, onnx_dir] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn stalled_request_bodies_time_out_with_408_and_free_their_slots() {
    require("potion-base-8M");
    let srv = start(&["--model", POTION, "--max-concurrent-requests", "2", "--body-timeout-secs", "2"]);
    let addr = http::loopback(&srv.addr).unwrap();
    let body = json!({"model": POTION, "input": ["never finished"]}).to_string();
    // Two clients send half a body and stall (hostile, or a client whose own timeout never fires).
    let t0 = Instant::now();
    let stalled = stalled_senders(addr, 2, "/v1/embeddings", &body, false, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    // Both slots are held: others get 429 meanwhile...
    let r = http::once(&srv.addr, "POST", "/api/embed", br#"{"input": "x"}"#, Duration::from_secs(10)).unwrap();
    assert_eq!(r.status, 429, "{}", r.text());
    // ...until the body timeout answers the stalled ones 408 (a JSON error in their family's shape).
    for mut c in stalled {
        let r = c.read_response().unwrap();
        assert_eq!(r.status, 408, "{}", r.text());
        let v = r.json().unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains("--body-timeout-secs"), "{v}");
    }
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(20), "{waited:?}");
    // Slots are free again.
    for _ in 0..2 {
        let r = http::once(&srv.addr, "POST", "/api/embed", br#"{"input": "x"}"#, Duration::from_secs(10)).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

/// Found while fuzzing tokenizers with special-token literals: the text `<image_soft_token>` tokenizes to id
/// 262144, past EmbeddingGemma's embedding table (262144 rows; the tokenizer counts 262145 with that added
/// token). The engine now maps such ids from text to `<unk>` and refuses them as OpenAI token ids (400).
#[test]
fn special_token_text_is_not_a_server_error_on_embeddinggemma_fp32() {
    require("embeddinggemma-300m");
    let srv = start(&["--model", "embeddinggemma:fp32"]);
    let r = http::once(
        &srv.addr,
        "POST",
        "/api/embed",
        br#"{"input": "hello <image_soft_token> world"}"#,
        Duration::from_secs(120),
    )
    .unwrap();
    assert!(r.status < 500, "{} {}", r.status, r.text());
}
