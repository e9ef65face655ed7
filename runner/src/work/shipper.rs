//! Ships the live console to the operator without ever slowing the boot.
//!
//! `run_boot` pushes console bytes into a channel and would block the guest if nobody read it;
//! a collector drains the channel at once into a bounded buffer, and a poster sends the buffer
//! in batches. When the operator is slower than the guest (a flooding console, a congested
//! network), the buffer drops its OLDEST unsent bytes and leaves a marker in their place.
//! Why drop rather than push back: backpressure would stall QEMU's serial output and change
//! the boot under test (timeouts, soft lockups); and the newest output is what explains the
//! verdict (a panic's trace comes last). The complete verdict travels in the result document
//! anyway, and the operator caps stored logs too.

use super::client::{Client, ClientError};
use bytes::{Bytes, BytesMut};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// Unsent console kept in memory at most.
pub const BUFFER_CAP: usize = 4 << 20;
/// Largest single POST.
const BATCH_MAX: usize = 256 << 10;
/// Batching window: small chunks are gathered for this long.
const BATCH_WINDOW: Duration = Duration::from_millis(250);
/// Attempts per batch before it is given up (and marked as lost).
const POST_ATTEMPTS: u32 = 3;

#[derive(Default)]
struct Pending {
    buf: BytesMut,
    /// Bytes dropped since the last marker was written.
    dropped: u64,
    closed: bool,
}

impl Pending {
    fn push(&mut self, data: &[u8]) {
        self.flush_marker_if_room();
        self.buf.extend_from_slice(data);
        if self.buf.len() > BUFFER_CAP {
            let excess = self.buf.len() - BUFFER_CAP;
            let _ = self.buf.split_to(excess);
            self.dropped += excess as u64;
        }
    }

    fn flush_marker_if_room(&mut self) {
        if self.dropped > 0 {
            let marker = format!(
                "\n[bootfarm: {} bytes of console dropped: the operator was too slow]\n",
                self.dropped
            );
            let mut fresh = BytesMut::from(marker.as_bytes());
            fresh.extend_from_slice(&self.buf);
            self.buf = fresh;
            self.dropped = 0;
        }
    }

    fn take_batch(&mut self) -> Option<Bytes> {
        self.flush_marker_if_room();
        if self.buf.is_empty() {
            return None;
        }
        let n = self.buf.len().min(BATCH_MAX);
        Some(self.buf.split_to(n).freeze())
    }
}

/// The sending end handed to `BootHooks::console`, and the task shipping what it receives.
pub struct Shipper {
    task: tokio::task::JoinHandle<u64>,
}

impl Shipper {
    /// Starts shipping; returns the sender for `BootHooks::console`.
    pub fn start(client: Client, name: String, lease_id: String) -> (mpsc::Sender<Bytes>, Shipper) {
        let (tx, mut rx) = mpsc::channel::<Bytes>(256);
        let pending = Arc::new(Mutex::new(Pending::default()));
        let wake = Arc::new(Notify::new());
        let (p, w) = (pending.clone(), wake.clone());
        // Collector: never waits on the network.
        tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                lock(&p).push(&chunk);
                w.notify_one();
            }
            lock(&p).closed = true;
            w.notify_one();
        });
        let task = tokio::spawn(async move {
            let mut lost = 0u64;
            loop {
                let batch = lock(&pending).take_batch();
                let Some(batch) = batch else {
                    if lock(&pending).closed && lock(&pending).buf.is_empty() {
                        return lost;
                    }
                    wake.notified().await;
                    // Let small chunks gather into one request.
                    tokio::time::sleep(BATCH_WINDOW).await;
                    continue;
                };
                match post(&client, &name, &lease_id, batch.clone()).await {
                    Ok(()) => {}
                    Err(ClientError::Stale(_)) => {
                        // Not our job any more: nothing else will be accepted.
                        return lost + batch.len() as u64;
                    }
                    Err(e) => {
                        tracing::warn!(job = %name, error = %e, bytes = batch.len(), "Console batch lost");
                        lost += batch.len() as u64;
                        lock(&pending).dropped += batch.len() as u64;
                    }
                }
            }
        });
        (tx, Shipper { task })
    }

    /// Waits (at most `bound`) until everything received was sent; returns bytes lost.
    pub async fn finish(self, bound: Duration) -> u64 {
        match tokio::time::timeout(bound, self.task).await {
            Ok(Ok(lost)) => lost,
            Ok(Err(_)) => 0,
            Err(_) => {
                tracing::warn!("Console upload did not finish in time; the rest is dropped");
                0
            }
        }
    }
}

fn lock(p: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    // A poisoned buffer only means a panic elsewhere; its bytes are still fine to send.
    p.lock().unwrap_or_else(|e| e.into_inner())
}

async fn post(
    client: &Client,
    name: &str,
    lease_id: &str,
    batch: Bytes,
) -> Result<(), ClientError> {
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match client.append_log(name, lease_id, batch.clone()).await {
            Err(e) if e.is_retryable() && attempt < POST_ATTEMPTS => {
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_drops_the_oldest_and_marks_it() {
        let mut p = Pending::default();
        p.push(&vec![b'a'; BUFFER_CAP]);
        p.push(b"newest");
        assert_eq!(p.dropped, 6);
        let mut all = Vec::new();
        while let Some(b) = p.take_batch() {
            all.extend_from_slice(&b);
        }
        let text = String::from_utf8_lossy(&all);
        assert!(
            text.starts_with("\n[bootfarm: 6 bytes of console dropped"),
            "{}",
            &text[..80]
        );
        assert!(text.ends_with("newest"));
    }

    /// A console far faster than the operator: sending never stalls (the boot is never slowed),
    /// the newest bytes arrive, and the gap is marked.
    #[tokio::test]
    async fn a_slow_operator_never_blocks_the_console() {
        use axum::routing::post;
        let received = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = received.clone();
        let app = axum::Router::new().route(
            "/api/v1/runner/jobs/{name}/log",
            post(move |body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    // A slow operator: 256 KiB per 200 ms at best.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    sink.lock().unwrap().extend_from_slice(&body);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = Client::new(&format!("http://{addr}"), None).unwrap();
        let (tx, shipper) = Shipper::start(client, "job".into(), "lease".into());

        let started = std::time::Instant::now();
        let chunk = vec![b'.'; 64 << 10];
        for _ in 0..128 {
            tx.send(Bytes::from(chunk.clone())).await.unwrap();
        }
        tx.send(Bytes::from_static(b"THE END\n")).await.unwrap();
        let sending = started.elapsed();
        drop(tx);
        assert!(
            sending < Duration::from_secs(1),
            "8 MiB took {sending:?} to hand over"
        );

        shipper.finish(Duration::from_secs(30)).await;
        let got = received.lock().unwrap().clone();
        let text = String::from_utf8_lossy(&got);
        assert!(text.ends_with("THE END\n"), "the newest output must arrive");
        assert!(
            text.contains("bytes of console dropped"),
            "the gap must be marked"
        );
        assert!(
            got.len() < 8 << 20,
            "{} bytes: nothing was dropped?",
            got.len()
        );
    }

    #[test]
    fn batches_are_bounded() {
        let mut p = Pending::default();
        p.push(&vec![b'x'; BATCH_MAX + 10]);
        assert_eq!(p.take_batch().unwrap().len(), BATCH_MAX);
        assert_eq!(p.take_batch().unwrap().len(), 10);
        assert!(p.take_batch().is_none());
    }
}
