//! The stored console log, capped: the first half of the cap is written live, then a cut marker,
//! then only the most recent bytes are kept (in a bounded ring) and written when the run ends.
//! So a guest printing forever costs at most the cap in memory and on disk, and the log still
//! shows both how the boot started and how it ended.
//!
//! `CappedLog` is pure (bytes in, bytes to emit out); `ConsoleSink` writes what it emits to the
//! live destination (stderr or `--log FILE`) and the caller's hook.

use bytes::Bytes;
use std::collections::VecDeque;
use std::io::Write;

pub const DEFAULT_LIMIT: u64 = 64 * 1024 * 1024;
/// How long one chunk may wait for the console hook's receiver.
#[cfg(not(test))]
const HOOK_STALL: std::time::Duration = std::time::Duration::from_secs(10);
#[cfg(test)]
const HOOK_STALL: std::time::Duration = std::time::Duration::from_millis(100);

pub struct CappedLog {
    head_limit: u64,
    tail_limit: usize,
    written: u64,
    cut: bool,
    tail: VecDeque<u8>,
    dropped: u64,
}

impl CappedLog {
    /// `limit` bytes in all (at least a few KiB are kept whatever the limit).
    pub fn new(limit: u64) -> CappedLog {
        let limit = limit.max(4096);
        let head_limit = limit / 2;
        CappedLog {
            head_limit,
            tail_limit: usize::try_from(limit - head_limit).unwrap_or(usize::MAX),
            written: 0,
            cut: false,
            tail: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Accept a chunk; returns what to emit now (possibly nothing).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Bytes> {
        let mut out = Vec::new();
        let room = self.head_limit.saturating_sub(self.written);
        let live = chunk.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        if live > 0 {
            out.push(Bytes::copy_from_slice(&chunk[..live]));
            self.written += live as u64;
        }
        let rest = &chunk[live..];
        if rest.is_empty() {
            return out;
        }
        if !self.cut {
            self.cut = true;
            out.push(Bytes::from(format!(
                "\n[bootfarm: console log limit reached after {} bytes; output is cut here and \
                 only the last {} bytes are kept]\n",
                self.written, self.tail_limit
            )));
        }
        // Only the last tail_limit bytes of `rest` can survive.
        let keep = &rest[rest.len().saturating_sub(self.tail_limit)..];
        self.dropped += (rest.len() - keep.len()) as u64;
        self.tail.extend(keep);
        let excess = self.tail.len().saturating_sub(self.tail_limit);
        if excess > 0 {
            self.tail.drain(..excess);
            self.dropped += excess as u64;
        }
        out
    }

    pub fn truncated(&self) -> bool {
        self.cut
    }

    /// The run ended: the omitted-bytes note and the kept tail.
    pub fn finish(&mut self) -> Vec<Bytes> {
        if !self.cut {
            return Vec::new();
        }
        let tail: Vec<u8> = self.tail.drain(..).collect();
        vec![
            Bytes::from(format!(
                "\n[bootfarm: {} bytes omitted; the last {} bytes follow]\n",
                self.dropped,
                tail.len()
            )),
            Bytes::from(tail),
        ]
    }
}

/// Where the stored log goes.
pub struct ConsoleSink {
    log: CappedLog,
    out: Option<Box<dyn Write + Send>>,
    hook: Option<tokio::sync::mpsc::Sender<Bytes>>,
}

impl ConsoleSink {
    pub fn new(
        limit: u64,
        out: Option<Box<dyn Write + Send>>,
        hook: Option<tokio::sync::mpsc::Sender<Bytes>>,
    ) -> ConsoleSink {
        ConsoleSink {
            log: CappedLog::new(limit),
            out,
            hook,
        }
    }

    pub async fn push(&mut self, chunk: &[u8]) {
        let parts = self.log.push(chunk);
        self.emit(parts).await;
    }

    pub async fn finish(&mut self) {
        let parts = self.log.finish();
        self.emit(parts).await;
        if let Some(out) = self.out.as_mut() {
            let _ = out.flush();
        }
    }

    pub fn truncated(&self) -> bool {
        self.log.truncated()
    }

    async fn emit(&mut self, parts: Vec<Bytes>) {
        for part in parts {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(parts: &[Bytes]) -> Vec<u8> {
        parts.iter().flat_map(|b| b.iter().copied()).collect()
    }

    #[test]
    fn small_logs_pass_through_untouched() {
        let mut log = CappedLog::new(8192);
        assert_eq!(joined(&log.push(b"hello ")), b"hello ");
        assert_eq!(joined(&log.push(b"world\n")), b"world\n");
        assert!(log.finish().is_empty());
        assert!(!log.truncated());
    }

    #[test]
    fn overflow_keeps_head_and_tail_with_a_cut_marker() {
        let mut log = CappedLog::new(8192);
        let mut emitted = Vec::new();
        let mut fed = Vec::new();
        for i in 0..10_000u32 {
            let line = format!("line {i}\n");
            fed.extend_from_slice(line.as_bytes());
            emitted.extend(joined(&log.push(line.as_bytes())));
        }
        emitted.extend(joined(&log.finish()));
        assert!(log.truncated());
        let text = String::from_utf8(emitted.clone()).unwrap();
        assert!(text.starts_with("line 0\nline 1\n"));
        assert!(text.ends_with("line 9998\nline 9999\n"));
        assert!(text.contains("[bootfarm: console log limit reached after 4096 bytes"));
        let omitted = fed.len() - 8192;
        assert!(
            text.contains(&format!("[bootfarm: {omitted} bytes omitted")),
            "{text}"
        );
        // Head + tail + two short markers: bounded by the cap.
        assert!(emitted.len() < 8192 + 300, "{}", emitted.len());
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

    #[test]
    fn one_huge_chunk_is_cut_the_same_way() {
        let mut log = CappedLog::new(4096);
        let big = vec![b'x'; 1 << 20];
        let mut out = joined(&log.push(&big));
        out.extend(joined(&log.finish()));
        let xs = out.iter().filter(|&&b| b == b'x').count();
        assert_eq!(xs, 4096);
    }
}
