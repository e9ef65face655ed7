//! bootfarm-operator: the elastic boot farm.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "bootfarm-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the BootJob and RunnerPool CustomResourceDefinitions as YAML.
    Crdgen(bootfarm_operator::kube::crd::CrdgenArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crdgen(args) => bootfarm_operator::kube::crd::crdgen(&args)?,
    }
    Ok(())
}
