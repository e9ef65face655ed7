//! bootfarm-runner: boots one kernel under QEMU and reports a verdict.
//!
//! Exit status: 0 pass, 1 fail, 3 error (infrastructure), 2 usage error.
#![deny(clippy::print_stdout, clippy::print_stderr)]

use bootfarm_core::BootResult;
use bootfarm_runner::boot::{run_boot, BootHooks};
use bootfarm_runner::cli::{BootArgs, Cli, Command, Output};
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

fn main() {
    let cli = Cli::try_parse().unwrap_or_else(|e| e.exit());
    // A farm runner's log is its pod's log: claims, boots and results at info. A boot by hand
    // shares stderr with the console, so only warnings there.
    let default_level = match cli.command {
        Command::Work(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // On a full disk (stderr is a log file) its own eprintln! would panic the process.
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
    let code = match cli.command {
        // One boot on the main thread: QEMU's parent-death signal is tied to the thread that
        // forked it, and the main thread lives as long as the process.
        Command::Boot(args) => runtime(false).and_then(|rt| rt.block_on(boot(*args))),
        Command::Classify(args) => bootfarm_runner::classify::run(args),
        Command::Work(args) => {
            runtime(true).and_then(|rt| rt.block_on(bootfarm_runner::work::run(args)))
        }
    };
    match code {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            bootfarm_runner::output::write_stderr(&format!("bootfarm-runner: {e:#}\n"));
            std::process::exit(3);
        }
    }
}

fn runtime(multi_thread: bool) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    Ok(b.enable_all().build()?)
}

async fn boot(args: BootArgs) -> anyhow::Result<i32> {
    let req = match args.to_request() {
        Ok(r) => r,
        Err(usage) => {
            bootfarm_runner::output::write_stderr(&format!("bootfarm-runner boot: {usage}\n"));
            return Ok(2);
        }
    };
    let hooks = BootHooks::default();
    let cancel = hooks.cancel.clone();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::warn!("SIGTERM: stopping the boot"),
            _ = int.recv() => tracing::warn!("SIGINT: stopping the boot"),
        }
        cancel.cancel();
    });
    let result = run_boot(req, hooks).await;
    let text = match args.output {
        Output::Json => format!("{}\n", serde_json::to_string_pretty(&result)?),
        Output::Text => text_report(&result),
    };
    if let Err(e) = bootfarm_runner::output::write_stdout(&text) {
        bootfarm_runner::output::write_stderr(&format!(
            "bootfarm-runner: writing the result: {e}\n"
        ));
        return Ok(3);
    }
    // The JUnit suite is named after the kernel, as a job is in the farm.
    let suite = args
        .job
        .kernel
        .as_deref()
        .and_then(|k| k.rsplit('/').next())
        .filter(|k| !k.is_empty())
        .unwrap_or("boot");
    if let Err(e) = args.reports.write(&result, suite) {
        bootfarm_runner::output::write_stderr(&format!("bootfarm-runner: {e:#}\n"));
        return Ok(3);
    }
    if let Some(path) = &args.reproducer {
        if let Err(e) = bootfarm_runner::output::write_reproducer(path, &result, suite) {
            bootfarm_runner::output::write_stderr(&format!(
                "bootfarm-runner: no reproducer: {e:#}\n"
            ));
            // A boot that never reached QEMU has nothing to reproduce; its verdict stands.
            if result.qemu.is_some() {
                return Ok(3);
            }
        }
    }
    Ok(result.result.exit_code())
}

fn text_report(r: &BootResult) -> String {
    let mut s = format!(
        "{}: {} ({})\n",
        r.result.as_str().to_uppercase(),
        r.summary,
        r.reason
    );
    let arch = r.arch.map(|a| a.as_str()).unwrap_or("?");
    s.push_str(&format!(
        "  arch {arch}, stage {}, kernel {}, accel {}\n",
        r.stage.as_str(),
        r.kernel_version.as_deref().unwrap_or("unknown"),
        r.accel.as_deref().unwrap_or("none"),
    ));
    if let Some(why) = &r.accel_reason {
        s.push_str(&format!("  accel: {why}\n"));
    }
    let secs = |d: Option<f64>| d.map(|v| format!("{v:.2}s")).unwrap_or_else(|| "-".into());
    s.push_str(&format!(
        "  time: total {}, kernel {}, userspace {}, prompt {}\n",
        secs(r.durations.total),
        secs(r.durations.to_kernel),
        secs(r.durations.to_userspace),
        secs(r.durations.to_prompt),
    ));
    for i in &r.issues {
        s.push_str(&format!(
            "  issue {} line {}: {}{}\n",
            i.kind.as_str(),
            i.line,
            i.summary,
            if i.fatal { " (fatal)" } else { "" }
        ));
    }
    for t in &r.tests {
        s.push_str(&format!("  test {} {}: {:?}\n", t.suite, t.name, t.result));
    }
    if let Some(e) = &r.error {
        s.push_str(&format!("  error {}: {}\n", e.kind, e.message));
    }
    s
}
