//! `bootfarm-runner classify FILE`: the offline classifier (owned by the console work, issue 3).

use clap::Args;

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// A saved serial console log.
    pub file: std::path::PathBuf,
}

/// Returns the process exit status.
pub fn run(_args: ClassifyArgs) -> anyhow::Result<i32> {
    anyhow::bail!("classify: not implemented yet")
}
