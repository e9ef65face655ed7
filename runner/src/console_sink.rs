//! Where a boot's console goes: the stored log (stderr or `--log FILE`) and the caller's hook,
//! both capped by the one console-log policy ([`bootfarm_core::console_cap`]): the head is
//! written as it comes, the tail when the run ends, after one marker when bytes were left out.
//! So a guest printing forever costs at most the limit in memory and on disk, and the log still
//! shows both how the boot started and how it ended.

use bootfarm_core::console_cap::HeadTail;
use bytes::Bytes;
use std::io::Write;

/// How long one chunk may wait for the console hook's receiver.
#[cfg(not(test))]
const HOOK_STALL: std::time::Duration = std::time::Duration::from_secs(10);
#[cfg(test)]
const HOOK_STALL: std::time::Duration = std::time::Duration::from_millis(100);

pub struct ConsoleSink {
    log: HeadTail,
    limit: u64,
    out: Option<Box<dyn Write + Send>>,
    hook: Option<tokio::sync::mpsc::Sender<Bytes>>,
    /// The head filled: said once in the runner's own log, since the console goes quiet.
    noted: bool,
}

impl ConsoleSink {
    pub fn new(
        limit: u64,
        out: Option<Box<dyn Write + Send>>,
        hook: Option<tokio::sync::mpsc::Sender<Bytes>>,
    ) -> ConsoleSink {
        ConsoleSink {
            log: HeadTail::new(limit),
            limit,
            out,
            hook,
            noted: false,
        }
    }

    pub async fn push(&mut self, chunk: &[u8]) {
        let now = self.log.push(chunk);
        if !now.is_empty() {
            self.emit(Bytes::copy_from_slice(now)).await;
        }
        if self.log.head_full() && !self.noted {
            self.noted = true;
            tracing::info!(
                limit = self.limit,
                "Console log limit: its head is written; the tail follows when the boot ends"
            );
        }
    }

    pub async fn finish(&mut self) {
        let rest = self.log.finish();
        if !rest.is_empty() {
            self.emit(Bytes::from(rest)).await;
        }
        if let Some(out) = self.out.as_mut() {
            let _ = out.flush();
        }
    }

    /// Whether the stored log left bytes out.
    pub fn truncated(&self) -> bool {
        self.log.truncated()
    }

    async fn emit(&mut self, part: Bytes) {
        if let Some(out) = self.out.as_mut() {
            if let Err(e) = out.write_all(&part) {
                // A closed stderr or a full disk must not stop the boot: stop writing.
                tracing::warn!(error = %e, "Console log write failed; no longer writing it");
                self.out = None;
            }
        }
        if let Some(hook) = &self.hook {
            // Backpressure is fine (it slows the guest), a receiver stuck for good is not:
            // the boot's deadlines must keep running.
            match tokio::time::timeout(HOOK_STALL, hook.send(part)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => self.hook = None,
                Err(_) => {
                    tracing::warn!(
                        stall = ?HOOK_STALL,
                        "Console hook stopped taking bytes; no longer sending to it"
                    );
                    self.hook = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` the test can read back.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_file_and_the_hook_get_the_same_capped_stream() {
        let file = Shared::default();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let mut sink = ConsoleSink::new(4096, Some(Box::new(file.clone())), Some(tx));
        for i in 0..2000 {
            sink.push(format!("line {i}\n").as_bytes()).await;
        }
        sink.finish().await;
        assert!(sink.truncated());
        drop(sink);
        let mut hooked = Vec::new();
        while let Some(b) = rx.recv().await {
            hooked.extend_from_slice(&b);
        }
        let stored = file.0.lock().unwrap().clone();
        assert_eq!(stored, hooked);
        let text = String::from_utf8(stored).unwrap();
        assert!(text.starts_with("line 0\n"));
        assert!(text.ends_with("line 1999\n"));
        assert_eq!(text.matches("bytes omitted by the runner]").count(), 1);
    }

    #[tokio::test]
    async fn a_stuck_hook_is_dropped_instead_of_stalling_the_boot() {
        let (tx, _rx_never_read) = tokio::sync::mpsc::channel(1);
        let mut sink = ConsoleSink::new(1 << 20, None, Some(tx));
        sink.push(b"first").await;
        // The channel is full and nobody reads: the push gives up after HOOK_STALL.
        sink.push(b"second").await;
        assert!(sink.hook.is_none());
        sink.push(b"third").await;
    }
}
