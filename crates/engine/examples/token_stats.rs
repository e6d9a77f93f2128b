//! Token id distribution of the STS texts and the fixture sentences under a tokenizer.json: what fraction of token
//! occurrences fall below each id threshold (is the vocabulary ordered by frequency?).
//! `cargo run --release -p deposium-engine --example token_stats -- TOKENIZER.json STS_DIR FIXTURES_DIR`
use std::collections::HashSet;

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let tok = tokenizers::Tokenizer::from_file(&a[1]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut texts: Vec<(String, String)> = Vec::new(); // (source, text)
    for e in std::fs::read_dir(&a[2])? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "tsv") {
            let name = p.file_stem().unwrap().to_string_lossy().to_string();
            for line in std::fs::read_to_string(&p)?.lines().skip(1) {
                let cols: Vec<&str> = line.split('\t').collect();
                if cols.len() >= 3 {
                    texts.push((name.clone(), cols[1].to_string()));
                    texts.push((name.clone(), cols[2].to_string()));
                }
            }
        }
    }
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(format!("{}/sentences.json", a[3]))?)?;
    for s in meta["sentences"].as_array().unwrap() {
        texts.push(("fixtures".into(), s.as_str().unwrap().to_string()));
    }
    let thresholds = [4096u32, 8192, 16384, 24576, 32768, 49152, 65536, 98304, 131072, 196608, 262144];
    let mut per_src: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
    let mut texts_ids: Vec<Vec<u32>> = Vec::new();
    for (src, t) in &texts {
        let enc = tok.encode_fast(t.as_str(), true).map_err(|e| anyhow::anyhow!("{e}"))?;
        per_src.entry(src.clone()).or_default().extend(enc.get_ids());
        per_src.entry("ALL".into()).or_default().extend(enc.get_ids());
        texts_ids.push(enc.get_ids().to_vec());
    }
    print!("{:<24} {:>8} {:>7}", "source", "tokens", "distinct");
    for t in thresholds {
        print!(" {:>6}", format!("<{}k", t / 1024));
    }
    println!("  max_id");
    for (src, ids) in &per_src {
        let distinct: HashSet<u32> = ids.iter().copied().collect();
        print!("{:<24} {:>8} {:>7}", src, ids.len(), distinct.len());
        for t in thresholds {
            let n = ids.iter().filter(|&&i| i < t).count();
            print!(" {:>6.2}", 100.0 * n as f64 / ids.len() as f64);
        }
        println!("  {}", ids.iter().max().unwrap());
    }
    // Distinct ids below each threshold (ALL).
    let all: HashSet<u32> = per_src["ALL"].iter().copied().collect();
    print!("{:<24} {:>8} {:>7}", "distinct ids, ALL", "", all.len());
    for t in thresholds {
        print!(" {:>6.2}", 100.0 * all.iter().filter(|&&i| i < t).count() as f64 / all.len() as f64);
    }
    println!();
    // Gemma3: single characters (the BPE alphabet, most frequent first) follow the merges at CHAR0.
    const CHAR0: u32 = 236743;
    const CHAR_END: u32 = 255969;
    let ids = &per_src["ALL"];
    let n = ids.len() as f64;
    let in_chars = ids.iter().filter(|&&i| (CHAR0..CHAR_END).contains(&i)).count();
    println!("occurrences in the character region [{CHAR0}, {CHAR_END}): {:.2}%", 100.0 * in_chars as f64 / n);
    for (tm, tc) in [
        (8192u32, 1024u32),
        (16384, 1024),
        (16384, 2048),
        (16384, 4096),
        (32768, 2048),
        (32768, 4096),
        (32768, 8192),
        (49152, 4096),
        (65536, 4096),
        (65536, 8192),
        (98304, 8192),
        (131072, 8192),
        (131072, 19226),
        (196608, 19226),
        (236743, 19226),
    ] {
        let covered = |i: u32| i < tm || (CHAR0..CHAR0 + tc).contains(&i);
        let occ = ids.iter().filter(|&&i| covered(i)).count();
        let mut line = format!(
            "merges < {tm:>6} + chars < {tc:>5} ({:>6} rows): {:>6.2}% of occurrences",
            tm + tc,
            100.0 * occ as f64 / n
        );
        for (src, v) in &per_src {
            if src != "ALL" {
                line += &format!(
                    " {}={:.1}",
                    &src[..src.len().min(12)],
                    100.0 * v.iter().filter(|&&i| covered(i)).count() as f64 / v.len() as f64
                );
            }
        }
        let texts_hot = texts_ids.iter().filter(|v| v.iter().all(|&i| covered(i))).count();
        line += &format!(" | texts all-hot {:.1}%", 100.0 * texts_hot as f64 / texts_ids.len() as f64);
        println!("{line}");
    }
    Ok(())
}
