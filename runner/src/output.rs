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

/// Writes `result` as JUnit XML to `path` (whole or not at all: a temporary file renamed).
pub fn write_junit(
    path: &std::path::Path,
    result: &bootfarm_core::BootResult,
    suite: &str,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let xml = bootfarm_core::result::junit::to_junit(result, suite)
        .context("rendering the JUnit report")?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("writing the JUnit report {}", path.display()))?;
    tmp.write_all(xml.as_bytes())
        .and_then(|()| tmp.flush())
        .with_context(|| format!("writing the JUnit report {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("writing the JUnit report {}", path.display()))?;
    Ok(())
}
