//! End-to-end tests of the artifact API against a real HTTP server on 127.0.0.1 and real files.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::decompress::tests::{gzip, sample, xz, zstd};
use super::test_server::{silent_server, Reply, TestServer};
use super::verify::hash_reader;
use super::*;

fn limits() -> Limits {
    Limits {
        max_size: 64 << 20,
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_millis(500),
        total_timeout: Duration::from_secs(20),
        retries: 2,
    }
}

fn sha(data: &[u8]) -> String {
    hash_reader(data, u64::MAX).unwrap().1
}

fn cache_with(limits: Limits) -> (tempfile::TempDir, ArtifactCache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::new(dir.path().join("cache"), limits).unwrap();
    (dir, cache)
}

/// Names of files in a cache subdirectory.
fn files_in(cache: &ArtifactCache, sub: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(cache.dir().join(sub))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn assert_nothing_stored(cache: &ArtifactCache) {
    assert_eq!(files_in(cache, "objects"), Vec::<String>::new());
    assert_eq!(files_in(cache, "tmp"), Vec::<String>::new());
}

#[tokio::test]
async fn a_download_is_stored_read_only_and_served_from_the_cache_afterwards() {
    let server = TestServer::start().await;
    let data = sample(200_000);
    let url = server.route("/bzImage", Reply::Bytes(data.clone()));
    let (_dir, cache) = cache_with(limits());

    let first = cache.fetch("kernel", &url, None).await.unwrap();
    let second = cache.fetch("kernel", &url, None).await.unwrap();

    assert_eq!(server.hits("/bzImage"), 1);
    assert_eq!(first, second);
    assert_eq!(fs::read(&first.path).unwrap(), data);
    assert_eq!(first.info.source, url);
    assert_eq!(first.info.sha256, sha(&data));
    assert_eq!(first.info.size, data.len() as u64);
    assert!(!first.decompressed);
    assert!(first.path.starts_with(cache.dir()));
    let mode = fs::metadata(&first.path).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o222,
        0,
        "cached file must be read-only, mode {mode:o}"
    );
}

#[tokio::test]
async fn http_404_fails_at_once_naming_the_url() {
    let server = TestServer::start().await;
    let url = server.route("/missing", Reply::Status(404));
    let (_dir, cache) = cache_with(limits());

    let err = cache.fetch("kernel", &url, None).await.unwrap_err();

    assert_eq!(err.kind().as_str(), "download_failed");
    assert_eq!(err.to_string(), format!("HTTP 404 Not Found for {url}"));
    assert_eq!(server.hits("/missing"), 1, "a 4xx must not be retried");
    assert_nothing_stored(&cache);
}

#[tokio::test]
async fn a_server_error_is_retried_until_it_succeeds() {
    let server = TestServer::start().await;
    let data = sample(5000);
    let url = server.route("/flaky", Reply::FailThen(2, data.clone()));
    let (_dir, cache) = cache_with(limits());

    let fetched = cache.fetch("kernel", &url, None).await.unwrap();

    assert_eq!(server.hits("/flaky"), 3);
    assert_eq!(fs::read(&fetched.path).unwrap(), data);
}

#[tokio::test]
async fn a_server_error_forever_gives_up_after_the_retries() {
    let server = TestServer::start().await;
    let url = server.route("/broken", Reply::Status(500));
    let (_dir, cache) = cache_with(limits());
    let started = Instant::now();

    let err = cache.fetch("kernel", &url, None).await.unwrap_err();

    assert_eq!(server.hits("/broken"), 3, "1 attempt + 2 retries");
    assert_eq!(err.kind().as_str(), "download_failed");
    let msg = err.to_string();
    assert!(msg.contains(&url) && msg.contains("HTTP 500"), "{msg}");
    assert!(msg.contains("3 attempt"), "{msg}");
    // Backoff 0.2 s + 0.4 s: bounded, not a hang.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_nothing_stored(&cache);
}

#[tokio::test]
async fn an_unreachable_server_fails_after_bounded_retries() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/kernel");
    let (_dir, cache) = cache_with(limits());
    let started = Instant::now();

    let err = cache.fetch("kernel", &url, None).await.unwrap_err();

    assert_eq!(err.kind().as_str(), "download_failed");
    let msg = err.to_string();
    assert!(msg.contains(&url) && msg.contains("3 attempt"), "{msg}");
    assert!(msg.to_lowercase().contains("connect"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_body_that_stalls_times_out_and_leaves_nothing() {
    let server = TestServer::start().await;
    let url = server.route("/stall", Reply::StallAfter(sample(1000)));
    let (_dir, cache) = cache_with(Limits {
        retries: 1,
        ..limits()
    });
    let started = Instant::now();

    let err = cache.fetch("kernel", &url, None).await.unwrap_err();

    assert_eq!(err.kind().as_str(), "download_failed");
    assert!(err.to_string().contains("stalled"), "{err}");
    assert_eq!(server.hits("/stall"), 2);
    // Two reads of 0.5 s plus 0.2 s backoff.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_nothing_stored(&cache);
}

#[tokio::test]
async fn a_server_that_accepts_and_never_answers_times_out() {
    let (url, _task) = silent_server().await;
    let (_dir, cache) = cache_with(Limits {
        retries: 0,
        ..limits()
    });
    let started = Instant::now();

    let err = cache.fetch("kernel", &url, None).await.unwrap_err();

    assert_eq!(err.kind().as_str(), "download_failed", "{err}");
    assert!(err.to_string().contains(&url), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_total_timeout_bounds_all_retries() {
    let server = TestServer::start().await;
    let url = server.route("/stall", Reply::StallAfter(sample(10)));
    let (_dir, cache) = cache_with(Limits {
        retries: 1000,
        total_timeout: Duration::from_millis(1500),
        ..limits()
    });
    let started = Instant::now();

    let err = cache.fetch("kernel", &url, None).await.unwrap_err();

    assert_eq!(err.kind().as_str(), "download_failed");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_nothing_stored(&cache);
}

#[tokio::test]
async fn a_truncated_transfer_never_enters_the_cache() {
    let server = TestServer::start().await;
    let url = server.route("/short", Reply::Truncated(sample(4000)));
    let (_dir, cache) = cache_with(limits());

    let err = cache.fetch("kernel", &url, None).await.unwrap_err();

    assert_eq!(err.kind().as_str(), "download_failed", "{err}");
    assert_eq!(server.hits("/short"), 3, "a broken transfer is retried");
    assert_nothing_stored(&cache);
}

#[tokio::test]
async fn a_checksum_mismatch_names_both_digests_and_stores_nothing() {
    let server = TestServer::start().await;
    let data = sample(3000);
    let url = server.route("/k", Reply::Bytes(data.clone()));
    let (_dir, cache) = cache_with(limits());
    let wrong = sha(b"something else");

    let err = cache.fetch("kernel", &url, Some(&wrong)).await.unwrap_err();

    assert_eq!(err.kind().as_str(), "checksum_mismatch");
    let msg = err.to_string();
    assert!(
        msg.contains(&url) && msg.contains(&wrong) && msg.contains(&sha(&data)),
        "{msg}"
    );
    assert_nothing_stored(&cache);

    let ok = cache
        .fetch("kernel", &url, Some(&sha(&data).to_uppercase()))
        .await
        .unwrap();
    assert_eq!(fs::read(ok.path).unwrap(), data);
}

#[tokio::test]
async fn gzip_xz_and_zstd_downloads_are_decompressed_by_magic() {
    let server = TestServer::start().await;
    let data = sample(500_000);
    let (_dir, cache) = cache_with(limits());
    // Names deliberately lie about the format: only the magic bytes count.
    for (path, packed) in [
        ("/a.img", gzip(&data)),
        ("/b.gz", xz(&data)),
        ("/c", zstd(&data)),
    ] {
        let url = server.route(path, Reply::Bytes(packed.clone()));
        let fetched = cache
            .fetch("initrd", &url, Some(&sha(&packed)))
            .await
            .unwrap();
        assert!(fetched.decompressed, "{path}");
        assert_eq!(fs::read(&fetched.path).unwrap(), data, "{path}");
        assert_eq!(fetched.info.sha256, sha(&packed), "{path}");
        assert_eq!(fetched.info.size, packed.len() as u64, "{path}");
        // A second fetch is a cache hit that still knows it was decompressed.
        let again = cache
            .fetch("initrd", &url, Some(&sha(&packed)))
            .await
            .unwrap();
        assert_eq!(again, fetched);
        assert_eq!(server.hits(path), 1);
    }
    assert_eq!(files_in(&cache, "tmp"), Vec::<String>::new());
}

#[tokio::test]
async fn the_digest_of_the_decompressed_bytes_is_accepted_too() {
    let server = TestServer::start().await;
    let data = sample(10_000);
    let packed = gzip(&data);
    let url = server.route("/initrd.gz", Reply::Bytes(packed.clone()));
    let (_dir, cache) = cache_with(limits());

    let fetched = cache
        .fetch("initrd", &url, Some(&sha(&data)))
        .await
        .unwrap();

    assert_eq!(
        fetched.info.sha256,
        sha(&packed),
        "info reports the fetched bytes"
    );
}

#[tokio::test]
async fn a_decompression_bomb_stops_at_the_size_limit() {
    let server = TestServer::start().await;
    let bomb = zstd(&vec![0u8; 32 << 20]);
    let url = server.route("/bomb", Reply::Bytes(bomb.clone()));
    let (_dir, cache) = cache_with(Limits {
        max_size: 1 << 20,
        ..limits()
    });
    assert!(bomb.len() < 1 << 20);

    let err = cache.fetch("kernel", &url, None).await.unwrap_err();

    assert_eq!(err.kind().as_str(), "artifact_too_large");
    assert!(err.to_string().contains("decompressed"), "{err}");
    assert_nothing_stored(&cache);

    // The same bomb as a local file.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("bomb.gz");
    fs::write(&local, gzip(&vec![0u8; 32 << 20])).unwrap();
    let err = cache
        .fetch("kernel", local.to_str().unwrap(), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind().as_str(), "artifact_too_large");
    assert_nothing_stored(&cache);
}

#[tokio::test]
async fn a_download_over_the_limit_is_refused_with_or_without_content_length() {
    let server = TestServer::start().await;
    let big = sample(3 << 20);
    let announced = server.route("/big", Reply::Bytes(big.clone()));
    let chunked = server.route("/big-chunked", Reply::Chunked(big));
    let (_dir, cache) = cache_with(Limits {
        max_size: 1 << 20,
        ..limits()
    });
    for url in [announced, chunked] {
        let err = cache.fetch("rootfs", &url, None).await.unwrap_err();
        assert_eq!(err.kind().as_str(), "artifact_too_large", "{url}: {err}");
        assert!(err.to_string().contains(&url), "{err}");
    }
    assert_eq!(server.hits("/big"), 1, "too large is not retried");
    assert_nothing_stored(&cache);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_fetches_of_one_url_download_it_once() {
    let server = TestServer::start().await;
    let data = gzip(&sample(100_000));
    let url = server.route(
        "/shared",
        Reply::Slow(Duration::from_millis(300), data.clone()),
    );
    let (_dir, cache) = cache_with(limits());
    let cache = Arc::new(cache);

    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (cache, url) = (cache.clone(), url.clone());
            tokio::spawn(async move { cache.fetch("kernel", &url, None).await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap().unwrap());
    }

    assert_eq!(server.hits("/shared"), 1);
    assert!(results.iter().all(|r| r == &results[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_caches_on_one_directory_share_a_download_through_the_file_lock() {
    // Two ArtifactCache values do not share in-process locks: only the flock serialises them,
    // exactly as between two runner processes.
    let server = TestServer::start().await;
    let url = server.route(
        "/shared",
        Reply::Slow(Duration::from_millis(300), sample(50_000)),
    );
    let dir = tempfile::tempdir().unwrap();
    let caches: Vec<_> = (0..2)
        .map(|_| Arc::new(ArtifactCache::new(dir.path().to_path_buf(), limits()).unwrap()))
        .collect();

    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let (cache, url) = (caches[i % 2].clone(), url.clone());
            tokio::spawn(async move { cache.fetch("kernel", &url, None).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }

    assert_eq!(server.hits("/shared"), 1);
}

/// Make a cached file writable again (it is 0444) and apply `damage` to it.
fn damage(path: &Path, damage: impl FnOnce(&Path)) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    damage(path);
}

#[tokio::test]
async fn a_damaged_cache_entry_is_fetched_again() {
    let server = TestServer::start().await;
    let data = sample(100_000);
    let url = server.route("/k", Reply::Bytes(data.clone()));
    let (_dir, cache) = cache_with(limits());
    let first = cache
        .fetch("kernel", &url, Some(&sha(&data)))
        .await
        .unwrap();

    // Truncated: the size no longer matches.
    damage(&first.path, |p| {
        fs::OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap()
            .set_len(10)
            .unwrap()
    });
    let again = cache
        .fetch("kernel", &url, Some(&sha(&data)))
        .await
        .unwrap();
    assert_eq!(server.hits("/k"), 2);
    assert_eq!(fs::read(&again.path).unwrap(), data);

    // Same size, different bytes: the mtime moved, so it is rehashed and found bad.
    let mut flipped = data.clone();
    flipped[500] ^= 0xff;
    std::thread::sleep(Duration::from_millis(20));
    damage(&again.path, |p| fs::write(p, &flipped).unwrap());
    let third = cache
        .fetch("kernel", &url, Some(&sha(&data)))
        .await
        .unwrap();
    assert_eq!(server.hits("/k"), 3);
    assert_eq!(fs::read(&third.path).unwrap(), data);

    // Only touched: rehashed, found intact, kept.
    std::thread::sleep(Duration::from_millis(20));
    damage(&third.path, |p| fs::write(p, &data).unwrap());
    cache
        .fetch("kernel", &url, Some(&sha(&data)))
        .await
        .unwrap();
    assert_eq!(server.hits("/k"), 3);

    // Metadata lost (a writer died between the two renames): refetched.
    fs::remove_file(third.path.with_extension("json")).unwrap();
    cache
        .fetch("kernel", &url, Some(&sha(&data)))
        .await
        .unwrap();
    assert_eq!(server.hits("/k"), 4);
}

#[tokio::test]
async fn a_local_file_is_used_in_place_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample(4096);
    let path = dir.path().join("Image");
    fs::write(&path, &data).unwrap();
    let (_cdir, cache) = cache_with(limits());

    let fetched = cache
        .fetch("kernel", path.to_str().unwrap(), Some(&sha(&data)))
        .await
        .unwrap();
    assert_eq!(fetched.path, fs::canonicalize(&path).unwrap());
    assert_eq!(fetched.info.sha256, sha(&data));
    assert_eq!(fetched.info.size, 4096);
    assert!(!fetched.decompressed);
    assert_nothing_stored(&cache);

    let url = format!("file://{}", path.display());
    assert_eq!(
        cache.fetch("kernel", &url, None).await.unwrap().path,
        fetched.path
    );

    let err = cache
        .fetch("kernel", path.to_str().unwrap(), Some(&sha(b"x")))
        .await
        .unwrap_err();
    assert_eq!(err.kind().as_str(), "checksum_mismatch");
    assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
}

#[tokio::test]
async fn a_compressed_local_file_is_decompressed_once_into_the_cache_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample(50_000);
    let packed = xz(&data);
    let (a, b) = (dir.path().join("a.cpio.xz"), dir.path().join("copy"));
    fs::write(&a, &packed).unwrap();
    fs::write(&b, &packed).unwrap();
    let (_cdir, cache) = cache_with(limits());

    let first = cache
        .fetch("initrd", a.to_str().unwrap(), None)
        .await
        .unwrap();
    let url_b = format!("file://{}", b.display());
    let second = cache
        .fetch("initrd", &url_b, Some(&sha(&data)))
        .await
        .unwrap();

    assert!(first.decompressed && second.decompressed);
    assert_eq!(first.path, second.path, "keyed by content, not by path");
    assert!(first.path.starts_with(cache.dir()));
    assert_eq!(fs::read(&first.path).unwrap(), data);
    assert_eq!(second.info.source, url_b);
    assert_eq!(second.info.sha256, sha(&packed));
    assert_eq!(
        files_in(&cache, "objects").len(),
        2,
        "one data file and its metadata"
    );
}

#[tokio::test]
async fn a_corrupt_compressed_file_is_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let packed = gzip(&sample(100_000));
    let path = dir.path().join("initrd.gz");
    fs::write(&path, &packed[..packed.len() / 2]).unwrap();
    let (_cdir, cache) = cache_with(limits());

    let err = cache
        .fetch("initrd", path.to_str().unwrap(), None)
        .await
        .unwrap_err();

    assert_eq!(err.kind().as_str(), "artifact_unreadable");
    assert!(err.to_string().contains("gzip"), "{err}");
    assert_nothing_stored(&cache);
}

#[tokio::test]
async fn a_path_that_does_not_exist_is_missing() {
    let (dir, cache) = cache_with(limits());
    let path = dir.path().join("no/such/bzImage");
    for source in [
        path.display().to_string(),
        format!("file://{}", path.display()),
    ] {
        let err = cache.fetch("kernel", &source, None).await.unwrap_err();
        assert_eq!(err.kind().as_str(), "artifact_missing");
        assert_eq!(err.to_string(), format!("artifact not found: {source}"));
    }
}

#[tokio::test]
async fn a_directory_or_special_file_is_unreadable_without_hanging() {
    let (dir, cache) = cache_with(limits());
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let socket = dir.path().join("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();

    for (path, why) in [
        (dir.path().to_path_buf(), "directory"),
        (fifo, "not a regular file"),
        (socket, "not a regular file"),
    ] {
        let source = path.display().to_string();
        let err =
            tokio::time::timeout(Duration::from_secs(5), cache.fetch("kernel", &source, None))
                .await
                .expect("a special file must not block")
                .unwrap_err();
        assert_eq!(err.kind().as_str(), "artifact_unreadable", "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&source) && msg.contains(why), "{msg}");
    }
}

#[tokio::test]
async fn a_file_without_read_permission_is_unreadable() {
    let (dir, cache) = cache_with(limits());
    let path = dir.path().join("secret");
    fs::write(&path, b"kernel").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
    if fs::File::open(&path).is_ok() {
        // Root (CAP_DAC_OVERRIDE) reads it anyway; the socket and FIFO cases above still run.
        eprintln!("SKIP: running with privileges that bypass file permissions");
        return;
    }
    let err = cache
        .fetch("kernel", path.to_str().unwrap(), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind().as_str(), "artifact_unreadable");
    assert!(err.to_string().contains("ermission denied"), "{err}");
}

#[tokio::test]
async fn a_per_boot_copy_protects_the_cached_original() {
    let server = TestServer::start().await;
    let data = sample(20_000);
    let url = server.route("/rootfs.img", Reply::Bytes(gzip(&data)));
    let (dir, cache) = cache_with(limits());
    let fetched = cache.fetch("rootfs", &url, None).await.unwrap();

    let copy = per_boot_copy(&fetched, &dir.path().join("boot-1")).unwrap();
    fs::write(&copy, b"the guest wrote its disk").unwrap();

    assert_eq!(fs::read(&fetched.path).unwrap(), data);
    assert_eq!(cache.fetch("rootfs", &url, None).await.unwrap(), fetched);
    assert_eq!(server.hits("/rootfs.img"), 1);
}

#[tokio::test]
async fn unsupported_sources_and_bad_digests_are_refused_before_any_io() {
    let (_dir, cache) = cache_with(limits());
    let err = cache.fetch("kernel", "ftp://h/k", None).await.unwrap_err();
    assert_eq!(err.kind().as_str(), "artifact_missing");
    let err = cache
        .fetch("kernel", "/boot/vmlinuz", Some("not-a-digest"))
        .await
        .unwrap_err();
    assert_eq!(err.kind().as_str(), "checksum_mismatch");
    assert!(err.to_string().contains("not-a-digest"), "{err}");
}

/// Pretend every cached download was last confirmed long ago.
fn age_downloads(cache: &ArtifactCache) {
    for name in files_in(cache, "objects") {
        if name.ends_with(".json") {
            let path = cache.dir().join("objects").join(name);
            let mut meta: serde_json::Value =
                serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
            meta["validated_at"] = 0.into();
            fs::write(&path, serde_json::to_vec(&meta).unwrap()).unwrap();
        }
    }
}

#[tokio::test]
async fn a_cached_download_is_revalidated_with_its_etag_once_it_is_old() {
    let server = TestServer::start().await;
    let (v1, v2) = (sample(1000), sample(2000));
    let url = server.route(
        "/latest/bzImage",
        Reply::Tagged("\"v1\"".into(), v1.clone()),
    );
    let (_dir, cache) = cache_with(limits());
    let fetch = || cache.fetch("kernel", &url, None);

    assert_eq!(fs::read(fetch().await.unwrap().path).unwrap(), v1);
    fetch().await.unwrap();
    assert_eq!(
        server.hits("/latest/bzImage"),
        1,
        "recently confirmed: no request"
    );

    age_downloads(&cache);
    assert_eq!(fs::read(fetch().await.unwrap().path).unwrap(), v1);
    assert_eq!(
        server.hits("/latest/bzImage"),
        2,
        "one conditional request, answered 304"
    );

    server.route(
        "/latest/bzImage",
        Reply::Tagged("\"v2\"".into(), v2.clone()),
    );
    fetch().await.unwrap();
    assert_eq!(
        server.hits("/latest/bzImage"),
        2,
        "confirmed by the 304 just now"
    );
    age_downloads(&cache);
    let fetched = fetch().await.unwrap();
    assert_eq!(server.hits("/latest/bzImage"), 3);
    assert_eq!(
        fs::read(&fetched.path).unwrap(),
        v2,
        "the new content replaced the old"
    );
    assert_eq!(fetched.info.sha256, sha(&v2));

    // The server breaks: the cached copy is still used, after a single attempt (no retries).
    server.route("/latest/bzImage", Reply::Status(503));
    age_downloads(&cache);
    assert_eq!(fs::read(fetch().await.unwrap().path).unwrap(), v2);
    assert_eq!(server.hits("/latest/bzImage"), 4);
}

#[tokio::test]
async fn a_download_pinned_by_sha256_is_never_revalidated() {
    let server = TestServer::start().await;
    let data = sample(1000);
    let url = server.route("/k", Reply::Tagged("\"v1\"".into(), data.clone()));
    let (_dir, cache) = cache_with(limits());

    cache
        .fetch("kernel", &url, Some(&sha(&data)))
        .await
        .unwrap();
    age_downloads(&cache);
    cache
        .fetch("kernel", &url, Some(&sha(&data)))
        .await
        .unwrap();

    assert_eq!(server.hits("/k"), 1);
}

#[tokio::test]
async fn decompressed_bytes_that_do_not_match_the_recorded_digest_are_not_cached() {
    // Simulate a file that changed between hashing and decompressing: a remembered digest
    // (see local.rs) that no longer describes the bytes on disk.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("initrd.gz");
    fs::write(&path, gzip(&sample(10_000))).unwrap();
    std::thread::sleep(Duration::from_millis(150)); // past the racy margin of the memo
    let (_cdir, cache) = cache_with(limits());
    let source = path.to_str().unwrap();
    let first = cache.fetch("initrd", source, None).await.unwrap();
    fs::remove_file(&first.path).unwrap();
    fs::remove_file(first.path.with_extension("json")).unwrap();
    for memo in files_in(&cache, "hashes") {
        let memo = cache.dir().join("hashes").join(memo);
        let text = fs::read_to_string(&memo).unwrap();
        fs::write(&memo, text.replace(&first.info.sha256, &"0".repeat(64))).unwrap();
    }

    let err = cache.fetch("initrd", source, None).await.unwrap_err();

    assert_eq!(err.kind().as_str(), "artifact_unreadable");
    assert!(err.to_string().contains("changed"), "{err}");
    assert_nothing_stored(&cache);
}

#[tokio::test]
async fn prune_removes_least_recently_used_entries_but_not_ones_in_use() {
    let server = TestServer::start().await;
    let (_dir, cache) = cache_with(limits());
    let mut fetched = Vec::new();
    for path in ["/a", "/b", "/c", "/d"] {
        let url = server.route(path, Reply::Bytes(sample(100_000)));
        let f = cache.fetch("kernel", &url, None).await.unwrap();
        fetched.push((url, f.path.clone(), f));
        std::thread::sleep(Duration::from_millis(20)); // distinct last-use times
    }
    // Use /a again: now /b is the least recently used.
    let again = cache.fetch("kernel", &fetched[0].0, None).await.unwrap();
    drop(again);
    // /c is being fetched by "another process": its fetch lock is held.
    let lock_name = format!(
        "{}.lock",
        fetched[2].1.file_name().unwrap().to_string_lossy()
    );
    let held = fs::File::open(cache.dir().join("locks").join(lock_name)).unwrap();
    // /d is in use by a boot: its `Fetched` lives.
    let in_use = fetched.pop().unwrap().2;
    for f in &mut fetched {
        f.2 = Fetched {
            in_use: InUse::none(),
            ..f.2.clone()
        };
    }
    assert!(fs4::fs_std::FileExt::try_lock_exclusive(&held).unwrap());

    let report = cache.prune(350_000).unwrap();
    assert_eq!(report.removed, 1);
    assert!(!fetched[1].1.exists(), "/b was least recently used");
    assert!(fetched[0].1.exists() && fetched[2].1.exists() && in_use.path.exists());

    let report = cache.prune(0).unwrap();
    assert_eq!(
        report.removed, 1,
        "/a goes, /c is being fetched, /d is in use"
    );
    assert!(fetched[2].1.exists() && in_use.path.exists());
    assert!(report.kept_bytes > 200_000);

    drop(held);
    assert_eq!(cache.prune(0).unwrap().removed, 1, "/c goes, /d is in use");
    drop(in_use);
    assert_eq!(cache.prune(0).unwrap().kept_bytes, 0);
    assert_eq!(files_in(&cache, "objects"), Vec::<String>::new());
    // A pruned entry is simply fetched again.
    cache.fetch("kernel", &fetched[1].0, None).await.unwrap();
    assert_eq!(server.hits("/b"), 2);
}

#[tokio::test]
async fn a_password_in_a_url_never_reaches_messages_or_the_result() {
    let server = TestServer::start().await;
    let data = sample(100);
    let url = server
        .route("/k", Reply::Bytes(data.clone()))
        .replace("http://", "http://ci:hunter2@");
    let missing = url.replace("/k", "/missing");
    let (_dir, cache) = cache_with(limits());

    let fetched = cache.fetch("kernel", &url, None).await.unwrap();
    assert_eq!(fetched.info.source, url.replace("hunter2", "***"));
    let err = cache.fetch("kernel", &missing, None).await.unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(err.to_string().contains("ci:***@"), "{err}");
    let err = cache
        .fetch("kernel", &url, Some(&sha(b"x")))
        .await
        .unwrap_err();
    assert_eq!(err.kind().as_str(), "checksum_mismatch");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

fn farm_cache(allow: &[&str]) -> (tempfile::TempDir, ArtifactCache) {
    let dir = tempfile::tempdir().unwrap();
    let net = bootfarm_core::netpolicy::NetPolicy::new(
        allow
            .iter()
            .map(|c| bootfarm_core::netpolicy::parse_cidr(c).unwrap())
            .collect(),
        Vec::new(),
    );
    let policy = FetchPolicy::farm(&[], net).unwrap();
    let cache = ArtifactCache::with_policy(dir.path().join("cache"), limits(), policy).unwrap();
    (dir, cache)
}

#[tokio::test]
async fn the_farm_refuses_loopback_urls_without_sending_a_request() {
    let server = TestServer::start().await;
    let url = server.route("/metrics", Reply::Bytes(b"secret metrics".to_vec()));
    let (_dir, cache) = farm_cache(&[]);
    let err = cache.fetch("kernel", &url, None).await.unwrap_err();
    assert_eq!(err.kind().as_str(), "artifact_refused", "{err}");
    assert!(err.to_string().contains("loopback"), "{err}");
    assert_eq!(server.hits("/metrics"), 0, "no packet reached the server");
    assert_nothing_stored(&cache);
    // By name too: the address is checked after DNS resolution.
    let by_name = url.replace("127.0.0.1", "localhost");
    let err = cache.fetch("kernel", &by_name, None).await.unwrap_err();
    assert_eq!(err.kind().as_str(), "artifact_refused", "{err}");
    assert_eq!(server.hits("/metrics"), 0);
}

#[tokio::test]
async fn an_allowed_range_is_fetched_but_a_redirect_out_of_it_is_refused() {
    let allowed = TestServer::start().await;
    let other = TestServer::start_on("127.0.0.2").await;
    let secret = other.route("/secret", Reply::Bytes(b"internal".to_vec()));
    let ok = allowed.route("/bzImage", Reply::Bytes(b"a kernel".to_vec()));
    let hop = allowed.route("/hop", Reply::Redirect(secret.clone()));
    let (_dir, cache) = farm_cache(&["127.0.0.1/32"]);
    let got = cache.fetch("kernel", &ok, None).await.unwrap();
    assert_eq!(fs::read(&got.path).unwrap(), b"a kernel");
    let err = cache.fetch("initrd", &hop, None).await.unwrap_err();
    assert_eq!(err.kind().as_str(), "artifact_refused", "{err}");
    assert!(err.to_string().contains("127.0.0.2"), "{err}");
    assert_eq!(allowed.hits("/hop"), 1);
    assert_eq!(other.hits("/secret"), 0, "the redirect was not followed");
    // The same address spelled in decimal is the same address.
    let decimal = secret.replace("127.0.0.2", "2130706434");
    let err = cache.fetch("initrd", &decimal, None).await.unwrap_err();
    assert_eq!(err.kind().as_str(), "artifact_refused", "{err}");
    assert_eq!(other.hits("/secret"), 0);
}
