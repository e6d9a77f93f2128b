//! A small HTTP load client for a running server (loopback only): N keep-alive clients POST one body to one route
//! for a bounded time, then print throughput and latency percentiles.
//!
//! cargo run --release -p deposium-server --example load -- --addr 127.0.0.1:11435 --route /api/embed \
//!     --clients 16 --seconds 10 --body '{"model":"potion-base-8M","input":["hello world"]}'
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

struct Args {
    addr: String,
    route: String,
    clients: usize,
    seconds: f64,
    body: String,
}

fn parse_args() -> Args {
    let mut a = Args {
        addr: "127.0.0.1:11435".into(),
        route: "/api/embed".into(),
        clients: 16,
        seconds: 10.0,
        body: r#"{"input":["The quick brown fox jumps over the lazy dog."]}"#.into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => a.addr = value,
            "--route" => a.route = value,
            "--clients" => a.clients = value.parse().expect("--clients N"),
            "--seconds" => a.seconds = value.parse().expect("--seconds S"),
            "--body" => a.body = value,
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        a.addr.starts_with("127.") || a.addr.starts_with("localhost") || a.addr.starts_with("[::1]"),
        "loopback addresses only"
    );
    a
}

/// One request on a keep-alive connection; returns the status.
fn request(r: &mut BufReader<TcpStream>, head: &[u8], body: &[u8]) -> std::io::Result<u16> {
    let mut req = Vec::with_capacity(head.len() + body.len());
    req.extend_from_slice(head);
    req.extend_from_slice(body);
    r.get_mut().write_all(&req)?;
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut len = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut sink = vec![0u8; len];
    r.read_exact(&mut sink)?;
    Ok(status)
}

fn main() {
    let a = parse_args();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        a.route,
        a.body.len()
    );
    let deadline = Instant::now() + Duration::from_secs_f64(a.seconds);
    let t0 = Instant::now();
    let workers: Vec<_> = (0..a.clients)
        .map(|_| {
            let (addr, head, body) = (a.addr.clone(), head.clone(), a.body.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut failed = 0usize;
                let mut conn = None;
                while Instant::now() < deadline {
                    if conn.is_none() {
                        conn =
                            TcpStream::connect(&addr).ok().filter(|s| s.set_nodelay(true).is_ok()).map(BufReader::new);
                    }
                    let Some(r) = conn.as_mut() else {
                        failed += 1;
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let t = Instant::now();
                    match request(r, head.as_bytes(), body.as_bytes()) {
                        Ok(200) => lat.push(t.elapsed().as_secs_f64() * 1e3),
                        Ok(_) => failed += 1,
                        Err(_) => {
                            failed += 1;
                            conn = None;
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
        let (l, f) = w.join().unwrap();
        lat.extend(l);
        failed += f;
    }
    let secs = t0.elapsed().as_secs_f64();
    lat.sort_by(|x, y| x.total_cmp(y));
    let pct = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN);
    println!(
        "{} clients, {:.1} s: {} ok, {} failed, {:.0} req/s; latency ms p50 {:.2} p95 {:.2} p99 {:.2} max {:.2}",
        a.clients,
        secs,
        lat.len(),
        failed,
        lat.len() as f64 / secs,
        pct(0.5),
        pct(0.95),
        pct(0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
}
