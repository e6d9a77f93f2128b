//! deposium-eval: STS evaluation, latency benchmark and comparison report (being written).

#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    #[arg(long = "model", required = true)]
    pub models: Vec<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    #[arg(long = "model", required = true)]
    pub models: Vec<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ReportArgs {
    #[arg(long)]
    pub results: std::path::PathBuf,
}

pub fn run_eval(args: EvalArgs) -> anyhow::Result<()> {
    anyhow::bail!("eval not written yet: {args:?}")
}
pub fn run_bench(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("bench not written yet: {args:?}")
}
pub fn run_report(args: ReportArgs) -> anyhow::Result<()> {
    anyhow::bail!("report not written yet: {args:?}")
}
