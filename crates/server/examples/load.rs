//! A small HTTP load client for a running server (loopback only): N keep-alive clients POST one body to one route
//! for a bounded time, then print throughput and latency percentiles. Requests go through the soak harness's client
//! (`deposium_soak::http`); `deposium-soak` itself drives every route with checked answers.
//!
//! cargo run --release -p deposium-server --example load -- --addr 127.0.0.1:11435 --route /api/embed \
//!     --clients 16 --seconds 10 --body '{"model":"potion-base-8M","input":["hello world"]}'
use std::time::{Duration, Instant};

use deposium_soak::http::Client;
use deposium_soak::percentile;

struct Args {
    addr: String,
    route: String,
    clients: usize,
    seconds: f64,
    body: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        addr: "127.0.0.1:11435".into(),
        route: "/api/embed".into(),
        clients: 16,
        seconds: 10.0,
        body: r#"{"input":["The quick brown fox jumps over the lazy dog."]}"#.into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |what: &str| format!("{flag} takes {what}, got '{value}'");
        match flag.as_str() {
            "--addr" => a.addr = value,
            "--route" => a.route = value,
            "--clients" => a.clients = value.parse().map_err(|_| number("a whole number"))?,
            "--seconds" => a.seconds = value.parse().map_err(|_| number("a number of seconds"))?,
            "--body" => a.body = value,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if !(a.seconds.is_finite() && a.seconds > 0.0) || a.clients == 0 {
        return Err("--seconds and --clients must be positive".into());
    }
    Ok(a)
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    // Refuses addresses other than loopback.
    if let Err(e) = Client::new(&a.addr, Duration::from_secs(1)) {
        eprintln!("error: {}: {e}", a.addr);
        std::process::exit(2);
    }
    let deadline = Instant::now() + Duration::from_secs_f64(a.seconds);
    let t0 = Instant::now();
    let workers: Vec<_> = (0..a.clients)
        .map(|_| {
            let (addr, route, body) = (a.addr.clone(), a.route.clone(), a.body.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut failed = 0usize;
                let mut client = Client::new(&addr, Duration::from_secs(60)).expect("checked above");
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match client.request("POST", &route, body.as_bytes(), false) {
                        Ok(r) if r.status == 200 => lat.push(t.elapsed().as_secs_f64() * 1e3),
                        Ok(_) => failed += 1,
                        Err(_) => {
                            failed += 1;
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                (lat, failed)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut failed = 0;
    for w in workers {
        let (l, f) = w.join().unwrap_or_default();
        lat.extend(l);
        failed += f;
    }
    let secs = t0.elapsed().as_secs_f64();
    lat.sort_by(|x, y| x.total_cmp(y));
    println!(
        "{} clients, {:.1} s: {} ok, {} failed, {:.0} req/s; latency ms p50 {:.2} p95 {:.2} p99 {:.2} max {:.2}",
        a.clients,
        secs,
        lat.len(),
        failed,
        lat.len() as f64 / secs,
        percentile(&lat, 50.0),
        percentile(&lat, 95.0),
        percentile(&lat, 99.0),
        lat.last().copied().unwrap_or(f64::NAN)
    );
}
