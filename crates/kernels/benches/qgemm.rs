//! `cargo bench -p deposium-kernels`: GMAC/s of the per-block matmul (8-bit weights with 8- or 16-bit activations,
//! 4-bit weights) on EmbeddingGemma's layer shapes.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use deposium_kernels::{matmul, matmul_a16, pack, pack4, sequential, Packed4, Packed8, QuantizedRows, BLOCK};

/// Two threads taking tasks from a shared counter, as ONNX Runtime's pool does (a fixed half each would time the
/// slower half: row blocks differ in size).
fn two_threads(total: usize, f: &(dyn Fn(usize) + Sync)) {
    let next = AtomicUsize::new(0);
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= total {
            break;
        }
        f(i);
    };
    std::thread::scope(|s| {
        s.spawn(work);
        work();
    });
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: skip the measurement there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("qgemm bench: run with `cargo bench -p deposium-kernels`");
        return;
    }
    let shapes = [("qkv", 1280, 768), ("o", 768, 768), ("gate_up", 2304, 768), ("down", 768, 1152)];
    println!("int8 kernels: {}", deposium_kernels::cpu::caps().int8_path().name());
    for m in [16usize, 80, 251, 1004] {
        let mut total_macs = 0f64;
        let mut total_s = 0f64;
        for (name, n, k) in shapes {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
            let codes: Vec<u8> = (0..n * k).map(|i| ((i * 31) % 251) as u8).collect();
            let scales = vec![0.01f32; n * k / BLOCK];
            let (pc, ps) = pack(&codes, &scales, n, k);
            let w = Packed8::new(n, k, &pc, &ps).unwrap();
            let c4: Vec<u8> = codes.iter().map(|c| c & 15).collect();
            let (pc4, ps4) = pack4(&c4, &scales, &vec![8u8; n * k / BLOCK], n, k);
            let w4 = Packed4::new(n, k, &pc4, &ps4).unwrap();
            let mut y = vec![0f32; m * n];
            let mut scratch = QuantizedRows::default();
            for (label, par) in
                [("1 thread", &sequential as &dyn Fn(usize, &(dyn Fn(usize) + Sync))), ("2 threads", &two_threads)]
            {
                let iters = (2e9 / (m * n * k) as f64).clamp(3.0, 2000.0) as usize;
                matmul(&x, m, w, &mut y, &mut scratch, par);
                let t = Instant::now();
                for _ in 0..iters {
                    matmul(&x, m, w, &mut y, &mut scratch, par);
                }
                let s = t.elapsed().as_secs_f64() / iters as f64;
                let macs = (m * n * k) as f64;
                let t4 = Instant::now();
                for _ in 0..iters {
                    matmul(&x, m, w4, &mut y, &mut scratch, par);
                }
                let s4 = t4.elapsed().as_secs_f64() / iters as f64;
                let t16 = Instant::now();
                for _ in 0..iters {
                    matmul_a16(&x, m, w, &mut y, &mut scratch, par);
                }
                let s16 = t16.elapsed().as_secs_f64() / iters as f64;
                println!(
                    "m={m:5} {name:8} {label:9}: int8 {:8.1} us {:6.0} GMAC/s | int4 {:8.1} us {:6.0} GMAC/s | \
                     w8a16 {:8.1} us {:6.0} GMAC/s",
                    s * 1e6,
                    macs / s / 1e9,
                    s4 * 1e6,
                    macs / s4 / 1e9,
                    s16 * 1e6,
                    macs / s16 / 1e9
                );
                if label == "1 thread" {
                    total_macs += macs;
                    total_s += s;
                }
            }
        }
        println!("m={m:5} all shapes, 1 thread: {:.0} GMAC/s", total_macs / total_s / 1e9);
    }
}
