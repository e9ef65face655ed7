//! Ships the live console to the operator without ever slowing the boot.
//!
//! `run_boot` pushes console bytes into a channel and would block the guest if nobody read it;
//! a collector drains the channel at once into a bounded buffer, and a poster sends the buffer
//! in batches. When the operator is slower than the guest (a flooding console, a congested
//! network) the buffer follows the one console-log policy ([`bootfarm_core::console_cap`]): it
//! keeps its oldest unsent bytes (they continue what was sent) and its newest (a panic's trace
//! comes last), drops the middle and sends a marker in its place. Why drop rather than push
//! back: backpressure would stall QEMU's serial output and change the boot under test
//! (timeouts, soft lockups). The buffer holds a whole log of the runner's limit, so the tail
//! the runner sends when the boot ends is never cut here while the operator keeps up.

use super::client::{Client, ClientError};
use bootfarm_core::console_cap::marker::{self, Layer};
use bootfarm_core::console_cap::{Cap, MarkerFilter, Tail};
use bytes::{Bytes, BytesMut};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// The smallest upload buffer, whatever the runner's console limit.
pub const MIN_BUFFER: u64 = 4 << 20;
/// Largest single POST.
const BATCH_MAX: usize = 256 << 10;
/// Batching window: small chunks are gathered for this long.
pub const BATCH_WINDOW: Duration = Duration::from_millis(250);
/// Attempts per batch before it is given up (and marked as lost).
const POST_ATTEMPTS: u32 = 3;

/// The upload buffer for a runner whose stored log is capped at `console_limit`.
pub fn buffer_for(console_limit: u64) -> u64 {
    console_limit.max(MIN_BUFFER) + marker::MAX_LINE as u64
}

/// What reached the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shipped {
    /// Part of the console is missing from the operator's copy (cut here, lost, or unsent).
    pub cut: bool,
    /// Bytes of batches given up.
    pub lost: u64,
}

struct Pending {
    cap: Cap,
    /// Unsent bytes, oldest first; they continue what was sent.
    front: BytesMut,
    /// Once the buffer overflowed: its newest bytes (the ones before them were dropped).
    gap: Option<Tail>,
    /// Console bytes left out and not yet marked; `mark_due` when a marker must go first.
    unmarked: u64,
    mark_due: bool,
    /// The last byte the operator has, so a marker starts a line.
    last_delivered: Option<u8>,
    /// A marker was sent.
    marked: bool,
    closed: bool,
}

impl Pending {
    fn new(buffer: u64) -> Pending {
        Pending {
            cap: Cap::new(buffer),
            front: BytesMut::new(),
            gap: None,
            unmarked: 0,
            mark_due: false,
            last_delivered: None,
            marked: false,
            closed: false,
        }
    }

    fn push(&mut self, data: &[u8]) {
        if let Some(tail) = self.gap.as_mut() {
            tail.push(data);
            return;
        }
        self.front.extend_from_slice(data);
        if self.front.len() as u64 > self.cap.limit() {
            let head = usize::try_from(self.cap.head).unwrap_or(usize::MAX);
            let newer = self.front.split_off(head);
            let mut tail = Tail::new(self.cap.tail);
            tail.push(&newer);
            self.gap = Some(tail);
        }
    }

    fn is_empty(&self) -> bool {
        self.front.is_empty() && self.gap.as_ref().is_none_or(Tail::is_empty) && !self.mark_due
    }

    fn take_batch(&mut self) -> Option<Bytes> {
        if self.front.is_empty() {
            if let Some(mut tail) = self.gap.take() {
                let kept = tail.take();
                if kept.cut {
                    self.unmarked += kept.omitted;
                    self.mark_due = true;
                }
                self.front.extend_from_slice(&kept.bytes);
            }
        }
        let mut batch = BytesMut::new();
        if self.mark_due {
            batch.extend_from_slice(&marker::render_after(
                self.last_delivered,
                self.unmarked,
                Layer::Upload,
            ));
            self.mark_due = false;
            self.unmarked = 0;
            self.marked = true;
        }
        let n = self.front.len().min(BATCH_MAX);
        batch.extend_from_slice(&self.front.split_to(n));
        (!batch.is_empty()).then(|| batch.freeze())
    }

    fn delivered(&mut self, batch: &[u8]) {
        if let Some(&b) = batch.last() {
            self.last_delivered = Some(b);
        }
    }

    /// A batch was given up: what it stood for is marked before the next one.
    fn lost(&mut self, batch: &[u8]) {
        let mut f = MarkerFilter::new();
        f.feed(batch, &mut |_| {});
        f.finish(&mut |_| {});
        self.unmarked += f.represented();
        self.mark_due = true;
    }

    fn cut(&self) -> bool {
        self.marked || self.mark_due || self.gap.is_some()
    }
}

/// The sending end handed to `BootHooks::console`, and the task shipping what it receives.
pub struct Shipper {
    task: tokio::task::JoinHandle<Shipped>,
}

impl Shipper {
    /// Starts shipping through a buffer of `buffer` bytes ([`buffer_for`]); returns the sender
    /// for `BootHooks::console`.
    pub fn start(
        client: Client,
        name: String,
        lease_id: String,
        buffer: u64,
    ) -> (mpsc::Sender<Bytes>, Shipper) {
        let (tx, mut rx) = mpsc::channel::<Bytes>(256);
        let pending = Arc::new(Mutex::new(Pending::new(buffer)));
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
        let task = tokio::spawn(tracing::Instrument::in_current_span(async move {
            let mut lost = 0u64;
            loop {
                let batch = lock(&pending).take_batch();
                let Some(batch) = batch else {
                    let done = {
                        let p = lock(&pending);
                        (p.closed && p.is_empty()).then(|| Shipped { cut: p.cut(), lost })
                    };
                    if let Some(shipped) = done {
                        return shipped;
                    }
                    wake.notified().await;
                    // Let small chunks gather into one request.
                    tokio::time::sleep(BATCH_WINDOW).await;
                    continue;
                };
                match post(&client, &name, &lease_id, batch.clone()).await {
                    Ok(()) => lock(&pending).delivered(&batch),
                    Err(ClientError::Stale(_)) => {
                        // Not our job any more: nothing else will be accepted.
                        return Shipped {
                            cut: true,
                            lost: lost + batch.len() as u64,
                        };
                    }
                    Err(e) => {
                        tracing::warn!(job = %name, error = %e, bytes = batch.len(), "Console batch lost");
                        lost += batch.len() as u64;
                        lock(&pending).lost(&batch);
                    }
                }
            }
        }));
        (tx, Shipper { task })
    }

    /// Waits (at most `bound`) until everything received was sent.
    pub async fn finish(self, bound: Duration) -> Shipped {
        match tokio::time::timeout(bound, self.task).await {
            Ok(Ok(shipped)) => shipped,
            Ok(Err(_)) => Shipped { cut: true, lost: 0 },
            Err(_) => {
                tracing::warn!("Console upload did not finish in time; the rest is dropped");
                Shipped { cut: true, lost: 0 }
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

    fn drain(p: &mut Pending) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(b) = p.take_batch() {
            p.delivered(&b);
            all.extend_from_slice(&b);
        }
        all
    }

    #[test]
    fn overflow_keeps_the_oldest_and_the_newest_and_marks_the_middle() {
        let mut p = Pending::new(8192);
        let mut fed = 0u64;
        for i in 0..2000 {
            let line = format!("line {i}\n");
            fed += line.len() as u64;
            p.push(line.as_bytes());
        }
        assert!(p.cut());
        let all = drain(&mut p);
        let text = String::from_utf8_lossy(&all);
        assert!(text.starts_with("line 0\nline 1\n"), "{}", &text[..80]);
        assert!(text.ends_with("line 1998\nline 1999\n"));
        assert_eq!(text.matches("bytes omitted by the upload]").count(), 1);
        let mut f = MarkerFilter::new();
        let mut shown = 0u64;
        f.feed(&all, &mut |b| shown += b.len() as u64);
        f.finish(&mut |b| shown += b.len() as u64);
        assert!((fed..=fed + 1).contains(&(shown + f.omitted())), "{text}");
        assert!(all.len() < 8192 + 100);
    }

    #[test]
    fn a_lost_batch_is_marked_before_the_next_one() {
        let mut p = Pending::new(1 << 20);
        p.push(b"sent\n");
        let first = p.take_batch().unwrap();
        p.delivered(&first);
        p.push(b"lost part");
        let lost = p.take_batch().unwrap();
        p.lost(&lost);
        p.push(b"\nnext\n");
        let next = p.take_batch().unwrap();
        assert_eq!(
            &next[..],
            b"[bootfarm: console cut: 9 bytes omitted by the upload]\n\nnext\n"
        );
        assert!(p.cut());
    }

    /// A console far faster than the operator: sending never stalls (the boot is never slowed),
    /// the oldest and the newest bytes arrive, and the gap is marked.
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
        let (tx, shipper) = Shipper::start(client, "job".into(), "lease".into(), MIN_BUFFER);

        let started = std::time::Instant::now();
        tx.send(Bytes::from_static(b"THE START\n")).await.unwrap();
        let chunk = vec![b'.'; 64 << 10];
        for _ in 0..128 {
            tx.send(Bytes::from(chunk.clone())).await.unwrap();
        }
        tx.send(Bytes::from_static(b"\nTHE END\n")).await.unwrap();
        let sending = started.elapsed();
        drop(tx);
        assert!(
            sending < Duration::from_secs(1),
            "8 MiB took {sending:?} to hand over"
        );

        let shipped = shipper.finish(Duration::from_secs(30)).await;
        assert!(shipped.cut);
        let got = received.lock().unwrap().clone();
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("THE START\n"),
            "the oldest output must arrive"
        );
        assert!(text.ends_with("THE END\n"), "the newest output must arrive");
        assert!(
            text.contains("bytes omitted by the upload]"),
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
        let mut p = Pending::new(1 << 20);
        p.push(&vec![b'x'; BATCH_MAX + 10]);
        assert_eq!(p.take_batch().unwrap().len(), BATCH_MAX);
        assert_eq!(p.take_batch().unwrap().len(), 10);
        assert!(p.take_batch().is_none());
        assert!(!p.cut());
    }
}
