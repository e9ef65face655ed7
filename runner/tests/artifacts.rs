//! Black-box tests of the artifact cache across real processes: several runner-like processes
//! sharing one cache directory must download a URL once (the per-key file lock).
//!
//! The child processes are this test binary re-run with `--ignored --exact child_fetch`.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bootfarm_runner::artifacts::{ArtifactCache, Limits};

const CHILD_URL: &str = "BOOTFARM_TEST_ARTIFACT_URL";
const CHILD_CACHE: &str = "BOOTFARM_TEST_ARTIFACT_CACHE";

#[test]
#[ignore = "helper process for several_processes_share_one_download"]
fn child_fetch() {
    let url = std::env::var(CHILD_URL).expect("run by several_processes_share_one_download");
    let dir = std::env::var(CHILD_CACHE).expect("run by several_processes_share_one_download");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fetched = runtime
        .block_on(async {
            let cache = ArtifactCache::new(dir.into(), Limits::default())?;
            cache.fetch("kernel", &url, None).await
        })
        .unwrap();
    println!("FETCHED {} {}", fetched.info.sha256, fetched.path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_processes_share_one_download() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let app = axum::Router::new().route(
        "/kernel",
        axum::routing::get(move || {
            let (counter, body) = (counter.clone(), body.clone());
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                // Long enough for every child to be waiting on the lock.
                tokio::time::sleep(Duration::from_millis(800)).await;
                body
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/kernel", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let cache = tempfile::tempdir().unwrap();

    let children: Vec<_> = (0..4)
        .map(|_| {
            tokio::process::Command::new(std::env::current_exe().unwrap())
                .args(["--ignored", "--exact", "child_fetch", "--nocapture"])
                .env(CHILD_URL, &url)
                .env(CHILD_CACHE, cache.path())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap()
        })
        .collect();
    let mut lines = Vec::new();
    for child in children {
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("child finished in time")
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "child failed: {stdout}");
        let line = stdout
            .lines()
            .find(|l| l.starts_with("FETCHED "))
            .unwrap_or_else(|| panic!("no result line in {stdout}"))
            .to_string();
        lines.push(line);
    }
    server.abort();

    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "one download for 4 processes"
    );
    assert!(lines.iter().all(|l| l == &lines[0]), "{lines:?}");
}
