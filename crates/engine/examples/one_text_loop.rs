//! Embeds one short text in a loop (for `perf record` of the single-text path).
//! `cargo run --release -p deposium-engine --example one_text_loop -- MODEL ITERS`
use deposium_engine::{registry, EmbedRequest};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = registry::load(args.get(1).map(String::as_str).unwrap_or("embeddinggemma")).unwrap();
    let iters: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let texts = ["A man is playing a guitar.", "Two zebras play in an open field.", "The cougar is chasing the bear."];
    let t = std::time::Instant::now();
    for i in 0..iters {
        model.embed(&EmbedRequest::new(vec![texts[i % 3].to_string()])).unwrap();
    }
    println!("{:.3} ms per text", t.elapsed().as_secs_f64() * 1000.0 / iters as f64);
}
