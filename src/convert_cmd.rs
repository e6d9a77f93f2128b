//! `deposium-embed convert` (being written).

#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// Source model: NAME or NAME=PATH.
    #[arg(long)]
    pub model: String,
}

pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    anyhow::bail!("convert not written yet: {args:?}")
}
