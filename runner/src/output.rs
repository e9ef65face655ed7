//! Writing to stdout and stderr without ever panicking: on a full disk (a log file as stderr)
//! or a closed pipe, `print!` panics and the runner would die mid-job with exit 101.

use std::io::Write;

/// Writes `text` to stdout and flushes; the error is the caller's to report.
pub fn write_stdout(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Writes `text` to stderr; a failure is dropped (there is nowhere left to say it).
pub fn write_stderr(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// The result's other formats, written beside the one printed: the same flags for `boot` and
/// `classify`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReportArgs {
    /// Also write the result as JUnit XML to FILE (a testsuite named after the kernel or the
    /// log, with the boot, one case per kernel issue and one per test).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<std::path::PathBuf>,
    /// Also write the result in the shape of TuxRun's results.json to FILE.
    #[arg(long, value_name = "FILE")]
    pub tuxrun_results: Option<std::path::PathBuf>,
}

impl ReportArgs {
    /// Writes every report asked for; `suite` names the JUnit testsuite.
    pub fn write(&self, result: &bootfarm_core::BootResult, suite: &str) -> anyhow::Result<()> {
        if let Some(path) = &self.junit {
            write_junit(path, result, suite)?;
        }
        if let Some(path) = &self.tuxrun_results {
            write_tuxrun(path, result)?;
        }
        Ok(())
    }
}

/// Writes `result` as JUnit XML to `path`.
fn write_junit(
    path: &std::path::Path,
    result: &bootfarm_core::BootResult,
    suite: &str,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let xml = bootfarm_core::result::junit::to_junit(result, suite)
        .context("rendering the JUnit report")?;
    write_whole(path, xml.as_bytes(), "the JUnit report")
}

/// Writes `result` in TuxRun's `results.json` shape to `path`.
fn write_tuxrun(path: &std::path::Path, result: &bootfarm_core::BootResult) -> anyhow::Result<()> {
    let doc = bootfarm_core::result::tuxrun::to_tuxrun(result);
    let text = format!("{}\n", serde_json::to_string_pretty(&doc)?);
    write_whole(path, text.as_bytes(), "the TuxRun results")
}

/// Writes the shell script that reproduces `result`'s boot to `path` (executable).
pub fn write_reproducer(
    path: &std::path::Path,
    result: &bootfarm_core::BootResult,
    title: &str,
) -> anyhow::Result<()> {
    let script = bootfarm_core::result::reproducer::reproducer(result, title)?;
    write_file(path, script.as_bytes(), "the reproducer", 0o777)
}

/// Writes `data` to `path` whole or not at all (a temporary file beside it, renamed).
fn write_whole(path: &std::path::Path, data: &[u8], what: &str) -> anyhow::Result<()> {
    write_file(path, data, what, 0o666)
}

/// [`write_whole`] with the file's mode before the umask (as any file a user asks for gets).
fn write_file(path: &std::path::Path, data: &[u8], what: &str, mode: u32) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::PermissionsExt;
    let context = || format!("writing {what} {}", path.display());
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    // The mode is given to open(2), so the umask applies (a NamedTempFile alone is 0600).
    let mut tmp = tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .with_context(context)?;
    tmp.write_all(data)
        .and_then(|()| tmp.flush())
        .with_context(context)?;
    tmp.persist(path).with_context(context)?;
    Ok(())
}
