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
    /// Run the whole farm on this machine: SQLite store, HTTP API, local runner processes.
    Standalone(bootfarm_operator::standalone::StandaloneArgs),
    /// Run in Kubernetes: BootJob and RunnerPool controllers, runner pods, and the HTTP API.
    Run(bootfarm_operator::kube::run::RunArgs),
    /// Client commands for people: submit, list, get, log, wait, cancel.
    #[command(flatten)]
    Client(bootfarm_operator::client::ClientCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crdgen(args) => bootfarm_operator::kube::crd::crdgen(&args)?,
        Command::Standalone(args) => {
            init_tracing();
            tokio::runtime::Runtime::new()?.block_on(bootfarm_operator::standalone::run(args))?
        }
        Command::Run(args) => {
            init_tracing();
            tokio::runtime::Runtime::new()?
                .block_on(bootfarm_operator::kube::run::run(args))
                .map_err(|e| anyhow::anyhow!(e))?
        }
        Command::Client(cmd) => {
            let code = match tokio::runtime::Runtime::new()?
                .block_on(bootfarm_operator::client::run(cmd))
            {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("bootfarm-operator: {e:#}");
                    3
                }
            };
            std::process::exit(code);
        }
    }
    Ok(())
}

/// Logs to stderr; `RUST_LOG` filters (default `info`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // On a full disk (stderr is a log file) its own eprintln! would panic the process.
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .try_init();
}
