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
