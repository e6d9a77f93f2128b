//! Fidelity of a converted EmbeddingGemma directory beyond the summary in deposium.json:
//! - per-text cosine to the fp32 fixtures (worst texts listed),
//! - cosine to an fp32 graph on texts from every STS file (STS prompt); the fp32 vectors are cached in
//!   `$STS_REF_CACHE` (default: a temporary directory), so FP32_DIR is only read the first time.
//!
//! `cargo run --release -p deposium-engine --example fidelity_sts -- CANDIDATE_DIR FP32_DIR FIXTURES_DIR STS_DIR [N_PER_FILE]`
use std::path::{Path, PathBuf};

use deposium_engine::{cosine, fidelity::Reference, registry, EmbedRequest, Model, Prompt};

fn load(dir: &Path) -> anyhow::Result<Model> {
    Ok(registry::load_spec(&registry::ModelSpec {
        name: "m".into(),
        dir: dir.to_path_buf(),
        scheme: "int8".into(),
        aliases: vec![],
    })?)
}

fn embed(model: &Model, texts: &[String], prompt: &str) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut out = Vec::new();
    for chunk in texts.chunks(16) {
        let mut req = EmbedRequest::new(chunk.to_vec());
        req.prompt = Prompt::Raw(prompt.to_string());
        out.extend(model.embed(&req)?.embeddings);
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let (cand, fp32, fix, sts) =
        (PathBuf::from(&a[1]), PathBuf::from(&a[2]), PathBuf::from(&a[3]), PathBuf::from(&a[4]));
    let n: usize = a.get(5).map(|s| s.parse()).transpose()?.unwrap_or(100);
    let t0 = std::time::Instant::now();
    let model = load(&cand)?;
    eprintln!("loaded in {:.2}s", t0.elapsed().as_secs_f32());
    // Fixtures, each text alone.
    let r = Reference::load(&fix)?;
    let mut rows = Vec::new();
    for (name, prompt) in &r.prompts {
        for (i, s) in r.sentences.iter().enumerate() {
            let got = embed(&model, std::slice::from_ref(s), prompt)?.remove(0);
            rows.push((cosine(&got, &r.vectors[name][i]), name.clone(), s.chars().take(40).collect::<String>()));
        }
    }
    let mean = rows.iter().map(|r| r.0 as f64).sum::<f64>() / rows.len() as f64;
    rows.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    println!("fixtures: mean {mean:.5} min {:.5}", rows[0].0);
    for r in rows.iter().take(5) {
        println!("  {:.5} {:<10} {:?}", r.0, r.1, r.2);
    }
    // STS texts vs the fp32 graph.
    let sts_prompt = r.prompts.get("STS").cloned().unwrap_or_default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&sts)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tsv"))
        .collect();
    files.sort();
    let cache_dir = std::env::var_os("STS_REF_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("deposium-sts-ref"));
    std::fs::create_dir_all(&cache_dir)?;
    let mut ref_model: Option<Model> = None;
    let mut all = Vec::new();
    let mut worst_texts = Vec::new();
    for f in &files {
        let stem = f.file_stem().unwrap().to_string_lossy().to_string();
        let texts: Vec<String> = std::fs::read_to_string(f)?
            .lines()
            .skip(1)
            .filter_map(|l| {
                let c: Vec<&str> = l.split('\t').collect();
                (c.len() >= 3).then(|| [c[1].to_string(), c[2].to_string()])
            })
            .flatten()
            .step_by(2)
            .take(n)
            .collect();
        let cache = cache_dir.join(format!("{stem}-{n}.json"));
        let want: Vec<Vec<f32>> = if cache.exists() {
            serde_json::from_slice(&std::fs::read(&cache)?)?
        } else {
            if ref_model.is_none() {
                ref_model = Some(load(&fp32)?);
            }
            let v = embed(ref_model.as_ref().unwrap(), &texts, &sts_prompt)?;
            std::fs::write(&cache, serde_json::to_vec(&v)?)?;
            v
        };
        let got = embed(&model, &texts, &sts_prompt)?;
        let c: Vec<f32> = got.iter().zip(&want).map(|(x, y)| cosine(x, y)).collect();
        let m = c.iter().map(|&x| x as f64).sum::<f64>() / c.len() as f64;
        let mn = c.iter().cloned().fold(1.0f32, f32::min);
        let worst = c.iter().position(|&x| x == mn).unwrap_or(0);
        println!(
            "{stem:<22} n={:<4} mean {m:.5} min {mn:.5} ({:?})",
            c.len(),
            texts[worst].chars().take(60).collect::<String>()
        );
        worst_texts.extend(c.iter().zip(&texts).map(|(&x, t)| (x, t.chars().take(50).collect::<String>())));
        all.extend(c);
    }
    worst_texts.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    for (x, t) in worst_texts.iter().take(8) {
        println!("  {x:.5} {t:?}");
    }
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = all.iter().map(|&x| x as f64).sum::<f64>() / all.len() as f64;
    let q = |f: f64| all[(all.len() as f64 * f) as usize];
    println!(
        "STS all n={} mean {m:.5} p5 {:.5} p2 {:.5} p1 {:.5} p0.5 {:.5} min {:.5}",
        all.len(),
        q(0.05),
        q(0.02),
        q(0.01),
        q(0.005),
        all[0]
    );
    Ok(())
}
