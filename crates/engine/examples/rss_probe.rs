//! Where a loaded model's memory goes: /proc/self/status (RssAnon, RssFile) and smaps grouped by mapping, after
//! load and after embedding batches.
//! `cargo run --release -p deposium-engine --example rss_probe -- MODEL_DIR STS_TSV [tokenizer-only]`
use std::collections::BTreeMap;
use std::time::Instant;

use deposium_engine::{registry, EmbedRequest, Prompt};

fn status() -> String {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    format!(
        "VmRSS {} MB (RssAnon {} MB, RssFile {} MB), VmHWM {} MB",
        get("VmRSS:"),
        get("RssAnon:"),
        get("RssFile:"),
        get("VmHWM:")
    )
}

/// Rss per mapping name (file path, [heap], or anonymous), largest first.
fn smaps_top(n: usize) -> String {
    let s = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    let mut cur = String::new();
    for l in s.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.first().is_some_and(|x| x.contains('-') && x.chars().all(|c| c.is_ascii_hexdigit() || c == '-')) {
            cur = f.get(5).map(|p| p.rsplit('/').next().unwrap_or(p).to_string()).unwrap_or_else(|| "[anon]".into());
        } else if f.first() == Some(&"Rss:") {
            *by.entry(cur.clone()).or_default() += f[1].parse::<u64>().unwrap_or(0);
        }
    }
    let mut v: Vec<_> = by.into_iter().collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v.iter().take(n).map(|(k, kb)| format!("    {:>6} MB {k}", kb / 1024)).collect::<Vec<_>>().join("\n")
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(&a[1]);
    println!("start: {}", status());
    if a.get(3).is_some_and(|m| m == "tokenizer-only") {
        let t0 = Instant::now();
        let bytes = deposium_convert::read_tokenizer_json(&dir)?.expect("tokenizer");
        let tok = if std::env::var_os("STOCK_LOADER").is_some() {
            tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?
        } else {
            deposium_engine::tokenizer_load::from_json(&bytes, &dir.join("tokenizer.json"))?
        };
        drop(bytes);
        #[cfg(target_env = "gnu")]
        unsafe {
            libc_trim();
        }
        println!("tokenizer loaded in {:.2}s: {}", t0.elapsed().as_secs_f32(), status());
        println!("{}", smaps_top(6));
        std::hint::black_box(&tok);
        return Ok(());
    }
    let t0 = Instant::now();
    let model = registry::load_spec(&registry::ModelSpec {
        name: "m".into(),
        dir: dir.clone(),
        scheme: "int8".into(),
        aliases: vec![],
    })?;
    println!("loaded in {:.2}s: {}", t0.elapsed().as_secs_f32(), status());
    println!("{}", smaps_top(8));
    if std::env::var("PROBE_MADV").is_ok_and(|v| !v.is_empty()) {
        println!("madvise(MADV_RANDOM) on model.onnx_data mappings: {}", madvise_data(libc_madv_random()));
    }
    let texts: Vec<String> = std::fs::read_to_string(&a[2])?
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').nth(1).map(|s| s.to_string()))
        .take(256)
        .collect();
    for bs in [1usize, 32, 256] {
        let mut req = EmbedRequest::new(texts[..bs].to_vec());
        req.prompt = Prompt::Named("STS".into());
        let t0 = Instant::now();
        let r = model.embed(&req)?;
        println!("after a batch of {bs} ({:.2}s): {}", t0.elapsed().as_secs_f32(), status());
        std::hint::black_box(r);
    }
    println!("{}", smaps_top(8));
    Ok(())
}

#[cfg(target_env = "gnu")]
unsafe fn libc_trim() {
    extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    malloc_trim(0);
}

fn libc_madv_random() -> i32 {
    std::env::var("PROBE_MADV").ok().and_then(|v| v.parse().ok()).unwrap_or(1) // MADV_RANDOM = 1
}

/// madvise every mapping of model.onnx_data; returns how many.
fn madvise_data(advice: i32) -> usize {
    extern "C" {
        fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
    }
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut n = 0;
    for l in maps.lines().filter(|l| l.ends_with("model.onnx_data")) {
        let range = l.split_whitespace().next().unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (usize::from_str_radix(a, 16).unwrap(), usize::from_str_radix(b, 16).unwrap());
        if unsafe { madvise(a as *mut _, b - a, advice) } == 0 {
            n += 1;
        }
    }
    n
}
