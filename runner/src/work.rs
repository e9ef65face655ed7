//! `bootfarm-runner work --server URL`: the farm's worker loop (owned by the operator work, issue 4).

use clap::Args;

#[derive(Debug, Args)]
pub struct WorkArgs {
    /// The operator's base URL.
    #[arg(long)]
    pub server: String,
}

/// Returns the process exit status.
pub async fn run(_args: WorkArgs) -> anyhow::Result<i32> {
    anyhow::bail!("work: not implemented yet")
}
