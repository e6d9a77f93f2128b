mod convert_cmd;
mod embed_cmd;

use clap::{Parser, Subcommand};

/// deposium-embed: fast, faithful text embeddings on CPU (EmbeddingGemma on ONNX Runtime, Model2Vec static models).
#[derive(Parser)]
#[command(name = "deposium-embed", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Embed texts (arguments, stdin, or a JSONL/text file) and print or write the vectors.
    Embed(embed_cmd::EmbedArgs),
    /// Serve the Ollama, OpenAI and TEI-style HTTP APIs.
    Serve(deposium_server::ServeArgs),
    /// Build an ONNX model directory from safetensors (fp32, int8 or int4).
    Convert(convert_cmd::ConvertArgs),
    /// MTEB-style STS evaluation (BIOSSES, STSBenchmark, STS17).
    Eval(deposium_eval::EvalArgs),
    /// Latency benchmark.
    Bench(deposium_eval::BenchArgs),
    /// Comparison report (Markdown + plots) from eval and bench results.
    Report(deposium_eval::ReportArgs),
    /// List the known models and whether they are on disk.
    Models,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DEPOSIUM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Embed(a) => embed_cmd::run(a),
        Cmd::Serve(a) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(deposium_server::run(a))),
        Cmd::Convert(a) => convert_cmd::run(a),
        Cmd::Eval(a) => deposium_eval::run_eval(a),
        Cmd::Bench(a) => deposium_eval::run_bench(a),
        Cmd::Report(a) => deposium_eval::run_report(a),
        Cmd::Models => {
            for (name, dir, scheme, aliases) in deposium_engine::registry::KNOWN {
                let path = deposium_engine::paths::models_dir().join(dir);
                let state = if path.is_dir() { "on disk" } else { "missing (make fetch)" };
                println!("{name:<20} {scheme:<5} {state:<22} aliases: {}", aliases.join(", "));
            }
            Ok(())
        }
    };
    if let Err(e) = res {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
