//! `cargo bench -p deposium-kernels --bench attention`: GMAC/s of `attend` for one head of EmbeddingGemma (head
//! dimension 256, keys and values packed as the engine packs them), one thread, query tasks of 16 rows, at ~251
//! and 2,043 tokens, full and sliding-window (reach 257). Multiply-adds counted: the scores and weighted sums of
//! the keys each query sees.
use std::time::Instant;

use deposium_kernels::attention::{attend, packed_key_index, packed_keys_len, packed_value_stride, KeyMask};

const D: usize = 256;
const TASK_ROWS: usize = 16;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("attention bench: run with `cargo bench -p deposium-kernels --bench attention`");
        return;
    }
    println!("f32 kernels: {}", deposium_kernels::cpu::caps().f32_path().name());
    let val = |i: usize, m: usize| ((i * m) % 1000) as f32 / 5000.0 - 0.1;
    for s in [251usize, 2043] {
        let rows = s.div_ceil(TASK_ROWS) * TASK_ROWS;
        let q: Vec<f32> = (0..rows * D).map(|i| val(i, 7919)).collect();
        let mut keys = vec![0f32; packed_keys_len(s, D)];
        for j in 0..s {
            for c in 0..D {
                keys[packed_key_index(j, c, D)] = val(j * D + c, 31);
            }
        }
        let v_stride = packed_value_stride(D);
        let v: Vec<f32> = (0..s * v_stride).map(|i| val(i, 17)).collect();
        let keep = vec![true; s];
        let mut out = vec![0f32; rows * D];
        let mut scores = Vec::new();
        for reach in [0usize, 257] {
            let mask = KeyMask { keep: &keep, reach };
            let seen: usize =
                (0..s).map(|i| if reach == 0 { s } else { (i + reach).min(s) - i.saturating_sub(reach - 1) }).sum();
            let macs = 2.0 * (seen * D) as f64;
            let iters = (4e9 / macs).clamp(3.0, 500.0) as usize;
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                for _ in 0..iters {
                    for r0 in (0..rows).step_by(TASK_ROWS) {
                        let task = r0..r0 + TASK_ROWS;
                        // SAFETY: `out` holds `rows` rows of D floats; one thread.
                        unsafe {
                            attend(
                                &q[r0 * D..task.end * D],
                                &keys,
                                &v,
                                v_stride,
                                s,
                                D,
                                mask,
                                task,
                                out.as_mut_ptr(),
                                D,
                                &mut scores,
                            )
                        };
                    }
                }
                best = best.min(t.elapsed().as_secs_f64() / iters as f64);
            }
            let kind = if reach == 0 { "full" } else { "window 257" };
            println!("s={s:5} {kind:10}: {:8.2} ms per head {:6.1} GMAC/s", best * 1e3, macs / best / 1e9);
        }
    }
}
