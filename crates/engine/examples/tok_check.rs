//! tokenizer.json vs tokenizer.json.zst: load time (median of 5) and token ids on every STS text.
//! `cargo run --release -p deposium-engine --example tok_check -- PLAIN_DIR ZST_DIR STS_DIR`
use std::path::Path;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let (plain, zst, sts) = (Path::new(&a[1]), Path::new(&a[2]), Path::new(&a[3]));
    let err = |e: tokenizers::Error| anyhow::anyhow!("{e}");
    let (mut tp, mut tz, mut tdec) = (vec![], vec![], vec![]);
    let (mut p, mut z) = (None, None);
    for _ in 0..5 {
        let t0 = Instant::now();
        p = Some(tokenizers::Tokenizer::from_file(plain.join("tokenizer.json")).map_err(err)?);
        tp.push(t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        let bytes = deposium_convert::read_tokenizer_json(zst)?.expect("tokenizer");
        tdec.push(t0.elapsed().as_secs_f64());
        z = Some(if std::env::var_os("STOCK_LOADER").is_some() {
            tokenizers::Tokenizer::from_bytes(&bytes).map_err(err)?
        } else {
            deposium_engine::tokenizer_load::from_json(&bytes, &zst.join("tokenizer.json"))?
        });
        tz.push(t0.elapsed().as_secs_f64());
    }
    let (p, z) = (p.unwrap(), z.unwrap());
    // Same tokenizer: the same serialization (vocab, merges, added tokens, every component and option).
    let same = p.to_string(false).map_err(err)? == z.to_string(false).map_err(err)?;
    println!("serialized forms identical: {same}");
    println!(
        "load: tokenizer.json {:.0} ms; tokenizer.json.zst {:.0} ms (of which zstd decode {:.0} ms)",
        median(tp) * 1e3,
        median(tz) * 1e3,
        median(tdec) * 1e3
    );
    let (mut texts, mut tokens, mut diff) = (0, 0, 0);
    for e in std::fs::read_dir(sts)? {
        let f = e?.path();
        if f.extension().is_none_or(|x| x != "tsv") {
            continue;
        }
        for line in std::fs::read_to_string(&f)?.lines().skip(1) {
            for t in line.split('\t').skip(1).take(2) {
                let (x, y) = (p.encode_fast(t, true).map_err(err)?, z.encode_fast(t, true).map_err(err)?);
                texts += 1;
                tokens += x.get_ids().len();
                diff += usize::from(x.get_ids() != y.get_ids() || x.get_offsets() != y.get_offsets());
            }
        }
    }
    println!("STS texts {texts}, tokens {tokens}, texts whose ids or offsets differ: {diff}");
    anyhow::ensure!(diff == 0 && same);
    Ok(())
}
