//! `deposium-embed convert`: safetensors → portable ONNX model directory, quantized in Rust, with measured fidelity.
use std::path::PathBuf;

use anyhow::Context;
use deposium_convert::QuantConfig;
use deposium_engine::{fidelity, registry};

#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// Source model: NAME (e.g. embeddinggemma) or NAME=PATH to a sentence-transformers/transformers directory.
    #[arg(long)]
    pub model: String,
    /// fp32, int8, w8a16 (int8 weights, 16-bit activations) or int4.
    #[arg(long, default_value = "int8")]
    pub scheme: String,
    /// Output directory (default: ./<name>-<scheme>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Keep weights whose name contains this in fp32 (repeatable), e.g. `mlp.down_proj`, `embed_tokens`.
    #[arg(long = "keep-fp32")]
    pub keep_fp32: Vec<String>,
    /// In a 4-bit scheme, keep weights whose name contains this at 8 bits (repeatable), e.g. `down_proj`.
    #[arg(long = "keep-int8")]
    pub keep_int8: Vec<String>,
    /// 4-bit: symmetric blocks (no zero points) instead of asymmetric with scale search.
    #[arg(long)]
    pub symmetric: bool,
    /// Plain ONNX ops only (no fused contrib ops): the reference graph, for comparison.
    #[arg(long)]
    pub plain_ops: bool,
    /// Stock ONNX Runtime operators only (MatMulNBits instead of our faster `ai.deposium:QMatMul8`), so that any
    /// ONNX Runtime ≥ 1.31 can run the graph without deposium-embed.
    #[arg(long)]
    pub portable: bool,
    /// Token table bits: 4 or 8 (GatherBlockQuantized), 5 to 7 (bit-packed, our GatherQ op; 8 with --portable),
    /// 32 = fp32. The width of the fixed-width table where the scheme entropy-codes it (`--embed-step`): int8 6, int4 4.
    #[arg(long)]
    pub embed_bits: Option<u8>,
    /// Token table entropy-coded (our GatherCoded op) on a grid of this step, relative to each row's spread (int8:
    /// 0.125, about 5.2 bits per value; int4: 0.3, about 4). 0 = fixed-width codes (`--embed-bits`), as does
    /// `--embed-bits` given alone and, always, `--portable`.
    #[arg(long)]
    pub embed_step: Option<f32>,
    /// Quantization block for linear layers.
    #[arg(long)]
    pub block: Option<usize>,
    /// Quantization block for the token table.
    #[arg(long)]
    pub embed_block: Option<usize>,
    /// 4-bit token table: per-block zero points with a scale search (asymmetric) instead of symmetric blocks.
    #[arg(long)]
    pub embed_asym: Option<bool>,
    /// Token table scales in fp16.
    #[arg(long)]
    pub embed_f16_scales: Option<bool>,
    /// In a 4-bit token table, ids kept at 8 bits: `START-END,...` (END excluded); `none` for no such rows.
    #[arg(long)]
    pub embed_int8_ids: Option<String>,
    /// Entropy-coded tables: id ranges `START-END,...` coded at `--embed-fine-step` instead of `--embed-step`.
    #[arg(long)]
    pub embed_fine_ids: Option<String>,
    /// The grid step of the `--embed-fine-ids` rows.
    #[arg(long)]
    pub embed_fine_step: Option<f32>,
    /// Entropy-coded tables: also code the tokens made of one character repeated (`----`, `xxxxxxxx`, whitespace
    /// runs) at `--embed-fine-step` (w8a16 default: true).
    #[arg(long)]
    pub embed_fine_runs: Option<bool>,
    /// Entropy-coded tables: the same absolute error in every column (true) or an error proportional to each
    /// column's spread (false) (w8a16 default: true; int8, int4: false).
    #[arg(long)]
    pub embed_uniform_columns: Option<bool>,
    /// Quantize weights the scheme keeps in fp32 (or, in a 4-bit scheme, at 8 bits) whose name is this default
    /// pattern (repeatable), e.g. `dense`, `self_attn`.
    #[arg(long = "quantize")]
    pub quantize: Vec<String>,
    /// Activation-aware scaling of 4-bit layers from calibration statistics (int4 default: true).
    #[arg(long)]
    pub awq: Option<bool>,
    /// GPTQ rounding of the scheme's own width (int4: its 4-bit layers; int8: every 8-bit layer, on the grid of
    /// round-to-nearest) from calibration statistics (int4 default: true; int8: false).
    #[arg(long)]
    pub gptq: Option<bool>,
    /// int8: SmoothQuant-style input scales with this α (0..1) for the QKV, gate/up and down projections, folded into
    /// the norms and up-projection rows in front of them (calibrated; default: none).
    #[arg(long)]
    pub smooth: Option<f32>,
    /// MatMulNBits accuracy_level of quantized Dense heads (default: the scheme's).
    #[arg(long)]
    pub heads_accuracy_level: Option<i64>,
    /// MatMulNBits accuracy_level (4 = int8 activations per block; 0 = fp32 compute).
    #[arg(long)]
    pub accuracy_level: Option<i64>,
    /// Reference fixtures directory to measure fidelity against (EmbeddingGemma fixtures); default ../shared/fixtures
    /// when present. The result goes into deposium.json.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Skip the fidelity measurement.
    #[arg(long)]
    pub no_fidelity: bool,
}

/// Grid steps `--embed-step` and `--embed-fine-step` accept.
const TABLE_STEPS: std::ops::RangeInclusive<f32> = 0.01..=4.0;

pub fn run(a: ConvertArgs) -> anyhow::Result<()> {
    let spec = registry::resolve(&a.model)?;
    let mut q = QuantConfig::from_scheme(&a.scheme)?;
    q.keep_fp32.extend(a.keep_fp32.iter().cloned());
    q.keep_int8.extend(a.keep_int8.iter().cloned());
    if a.plain_ops {
        q.fused_ops = false;
        q.custom_kernel = false;
    }
    if a.portable || a.accuracy_level.is_some() {
        q.custom_kernel = false;
    }
    if a.symmetric {
        q.asymmetric = false;
    }
    if let Some(b) = a.embed_bits {
        q.embed_bits = if b >= 32 { None } else { Some(b) };
        q.embed_step = None;
    }
    match a.embed_step {
        Some(0.0) => q.embed_step = None,
        Some(s) if TABLE_STEPS.contains(&s) => q.embed_step = Some(s),
        Some(s) => anyhow::bail!("--embed-step {s}: use 0 (fixed-width codes) or a step from 0.01 to 4"),
        None => {}
    }
    if let Some(b) = a.block {
        q.block = b;
    }
    if let Some(b) = a.embed_block {
        q.embed_block = b;
    }
    if let Some(v) = a.embed_asym {
        q.embed_asymmetric = v;
    }
    if let Some(v) = a.embed_f16_scales {
        q.embed_scales_f16 = v;
    }
    if let Some(spec) = &a.embed_int8_ids {
        q.embed_int8_ids = parse_id_ranges(spec)?;
    }
    if let Some(spec) = &a.embed_fine_ids {
        q.embed_fine_ids = parse_id_ranges(spec)?;
    }
    if let Some(s) = a.embed_fine_step {
        anyhow::ensure!(TABLE_STEPS.contains(&s), "--embed-fine-step {s}: use a step from 0.01 to 4");
        q.embed_fine_step = Some(s);
    }
    if let Some(v) = a.embed_fine_runs {
        q.embed_fine_runs = v;
    }
    if let Some(v) = a.embed_uniform_columns {
        q.embed_uniform_columns = v;
    }
    q.keep_fp32.retain(|p| !a.quantize.contains(p));
    q.keep_int8.retain(|p| !a.quantize.contains(p));
    if let Some(l) = a.heads_accuracy_level {
        q.heads_accuracy_level = Some(l);
    }
    if let Some(l) = a.accuracy_level {
        q.accuracy_level = l;
    }
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from(format!("{}-{}", spec.name.replace(':', "-"), a.scheme)));
    let t0 = std::time::Instant::now();
    if let Some(v) = a.gptq {
        q.gptq = v;
    }
    if let Some(v) = a.awq {
        q.awq = v;
    }
    if let Some(alpha) = a.smooth {
        anyhow::ensure!((0.0..=1.0).contains(&alpha), "--smooth {alpha}: α must be within 0..1");
        q.smooth = Some(alpha);
    }
    let mut manifest = deposium_engine::conversion::convert(&spec.dir, &out, &q)?;
    eprintln!(
        "converted in {:.1}s → {} ({:.1} MB)",
        t0.elapsed().as_secs_f32(),
        out.display(),
        manifest.sizes.total_on_disk as f64 / 1e6
    );
    let reference = a.reference.clone().or_else(|| {
        let d = PathBuf::from("../shared/fixtures");
        d.join("sentences.json").exists().then_some(d)
    });
    if let (Some(rdir), false, "gemma3") = (&reference, a.no_fidelity, manifest.family.as_str()) {
        let r = fidelity::Reference::load(rdir)?;
        let model = registry::load_spec(&registry::ModelSpec {
            name: spec.name.clone(),
            dir: out.clone(),
            scheme: a.scheme.clone(),
            aliases: vec![],
        })?;
        let f = fidelity::measure(&model, &r)?;
        eprintln!(
            "fidelity to {}: mean {:.5} min {:.5} (batched vs alone min {:.6})",
            rdir.display(),
            f.all.mean,
            f.all.min,
            f.batch_vs_alone.min
        );
        manifest.fidelity = Some(serde_json::to_value(&f)?);
        std::fs::write(out.join("deposium.json"), serde_json::to_vec_pretty(&manifest)?)?;
    }
    println!("{}", serde_json::to_string_pretty(&manifest)?);
    Ok(())
}

/// `START-END,...` → `[[START, END], ...]`; `none` or empty → no ranges.
fn parse_id_ranges(spec: &str) -> anyhow::Result<Vec<[u32; 2]>> {
    if spec.trim().is_empty() || spec.trim() == "none" {
        return Ok(vec![]);
    }
    spec.split(',')
        .map(|r| {
            let (a, b) = r.trim().split_once('-').with_context(|| format!("id range '{r}' is not START-END"))?;
            let (a, b): (u32, u32) = (a.trim().parse()?, b.trim().parse()?);
            anyhow::ensure!(a < b, "id range '{r}' is empty");
            Ok([a, b])
        })
        .collect()
}
