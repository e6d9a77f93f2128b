//! `deposium-embed embed`: texts from arguments, stdin or a file; vectors to stdout (JSON) or a file (.npy/.jsonl).
use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use deposium_engine::{registry, EmbedRequest, Prompt};

#[derive(clap::Args, Debug)]
pub struct EmbedArgs {
    /// Model: NAME (embeddinggemma, embeddinggemma:fp32, potion-base-8M...) or NAME=PATH; NAME@PROMPT
    /// (embeddinggemma@query, embeddinggemma:int4@document) picks one of the model's prompts (--prompt-name wins).
    #[arg(long, default_value = "embeddinggemma")]
    pub model: String,
    /// A prompt from the model's config (STS, query, document...).
    #[arg(long, conflicts_with = "prompt")]
    pub prompt_name: Option<String>,
    /// A raw prompt prefix.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Matryoshka truncation (e.g. 512, 256, 128), re-normalised.
    #[arg(long)]
    pub dimensions: Option<usize>,
    /// Refuse inputs over the model's token limit instead of cutting them.
    #[arg(long)]
    pub no_truncate: bool,
    /// Read texts from this file (one per line: a JSON string, a JSON object with "text"/"input", or plain text).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Write vectors here: .npy (float32 matrix) or .jsonl. Default: JSON lines on stdout.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Texts per backend call.
    #[arg(long, default_value_t = 256)]
    pub chunk: usize,
    /// Texts to embed; when none, read stdin.
    pub texts: Vec<String>,
}

/// One line of input: a JSON string, an object with "text"/"input"/"prompt", or the line itself.
fn parse_line(line: &str, lineno: usize) -> anyhow::Result<String> {
    let t = line.trim_end_matches(['\r', '\n']);
    if t.starts_with('"') || t.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(t).with_context(|| format!("line {lineno}: invalid JSON"))?;
        return match v {
            serde_json::Value::String(s) => Ok(s),
            serde_json::Value::Object(o) => {
                for k in ["text", "input", "prompt", "sentence"] {
                    if let Some(serde_json::Value::String(s)) = o.get(k) {
                        return Ok(s.clone());
                    }
                }
                bail!("line {lineno}: JSON object has no string field text/input/prompt")
            }
            _ => bail!("line {lineno}: expected a JSON string or object"),
        };
    }
    Ok(t.to_string())
}

fn read_texts(r: impl Read, what: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(r).split(b'\n').enumerate() {
        let line = line.with_context(|| format!("reading {what}"))?;
        let s = String::from_utf8(line).map_err(|e| {
            anyhow::anyhow!("{what}: line {} is not valid UTF-8 (byte {})", i + 1, e.utf8_error().valid_up_to())
        })?;
        if s.trim().is_empty() && !s.starts_with('"') {
            continue;
        }
        out.push(parse_line(&s, i + 1)?);
    }
    Ok(out)
}

fn write_npy(path: &PathBuf, rows: &[Vec<f32>]) -> anyhow::Result<()> {
    let cols = rows.first().map(|r| r.len()).unwrap_or(0);
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}", rows.len(), cols);
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?);
    f.write_all(b"\x93NUMPY\x01\x00")?;
    f.write_all(&(header.len() as u16).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    for r in rows {
        for x in r {
            f.write_all(&x.to_le_bytes())?;
        }
    }
    f.flush()?;
    Ok(())
}

pub fn run(a: EmbedArgs) -> anyhow::Result<()> {
    let texts = if !a.texts.is_empty() {
        a.texts.clone()
    } else if let Some(p) = &a.input {
        let f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
        read_texts(f, &p.display().to_string())?
    } else {
        read_texts(std::io::stdin().lock(), "stdin")?
    };
    let t0 = std::time::Instant::now();
    // NAME@PROMPT: a model name with one of its prompts (unless NAME=PATH, where '@' may be part of the path).
    let (name, selector) = match registry::split_prompt_selector(&a.model) {
        Some((base, sel)) if !a.model.contains('=') && registry::resolve(&a.model).is_err() => (base, Some(sel)),
        _ => (a.model.as_str(), None),
    };
    let model = registry::load(name)?;
    tracing::info!(model = %model.info().name, secs = t0.elapsed().as_secs_f32(), "loaded");
    let selector = selector
        .map(|s| registry::prompt_selector(model.info(), s))
        .transpose()
        .with_context(|| format!("--model {}", a.model))?;
    let prompt = match (&a.prompt_name, &a.prompt, selector) {
        (Some(n), _, _) => Prompt::Named(n.clone()),
        (None, Some(p), _) => Prompt::Raw(p.clone()),
        (None, None, Some(s)) => Prompt::Named(s),
        _ => Prompt::Default,
    };
    model.check_dimensions(a.dimensions)?;
    model.resolve_prompt(&prompt)?;
    let bar = if a.output.is_some() {
        let b = indicatif::ProgressBar::new(texts.len() as u64);
        b.set_style(indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} texts {per_sec} eta {eta}").unwrap());
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let chunks: Vec<&[String]> = texts.chunks(a.chunk.max(1)).collect();
    let embed_chunk = |c: &&[String]| -> anyhow::Result<Vec<Vec<f32>>> {
        let mut req = EmbedRequest::new(c.to_vec());
        req.prompt = prompt.clone();
        req.dimensions = a.dimensions;
        req.truncate = !a.no_truncate;
        let r = model.embed(&req)?;
        bar.inc(c.len() as u64);
        Ok(r.embeddings)
    };
    let parts: Vec<Vec<Vec<f32>>> = if model.info().family == "model2vec" {
        use rayon::prelude::*;
        chunks.par_iter().map(embed_chunk).collect::<anyhow::Result<_>>()?
    } else {
        chunks.iter().map(embed_chunk).collect::<anyhow::Result<_>>()?
    };
    bar.finish_and_clear();
    let rows: Vec<Vec<f32>> = parts.into_iter().flatten().collect();
    tracing::info!(texts = rows.len(), secs = t0.elapsed().as_secs_f32(), "embedded");
    match &a.output {
        Some(p) if p.extension().is_some_and(|e| e == "npy") => write_npy(p, &rows)?,
        Some(p) => {
            let mut f =
                std::io::BufWriter::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?);
            for r in &rows {
                serde_json::to_writer(&mut f, r)?;
                f.write_all(b"\n")?;
            }
            f.flush()?;
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            for r in &rows {
                serde_json::to_writer(&mut w, r)?;
                w.write_all(b"\n")?;
            }
            w.flush()?;
        }
    }
    Ok(())
}
