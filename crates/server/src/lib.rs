//! deposium-server: Ollama, OpenAI and TEI-style HTTP APIs over one batched embed path (being written).

/// `deposium-embed serve` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Models to serve: NAME or NAME=PATH (repeatable).
    #[arg(long = "model", env = "DEPOSIUM_MODELS", value_delimiter = ',', default_value = "embeddinggemma")]
    pub models: Vec<String>,
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, env = "PORT", default_value_t = 11435)]
    pub port: u16,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("server not written yet: {args:?}")
}
