//! A hostile submitter against a real standalone farm booting real kernels: host files through
//! local artifacts (a path outside the allowed directories, a symlink re-pointed after
//! submission), internal URLs (the operator's own /metrics), and what the runner and QEMU may
//! see of the machine. Before the farm's rules, each of these printed host data into a log.

mod farm_support;

use farm_support::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// A directory the unprivileged runner user may read (tempdirs are 0700).
fn open_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("bootfarm-hostile-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

fn secret_file(dir: &Path) -> (std::path::PathBuf, String) {
    let marker = format!("HOST-SECRET-{}", std::process::id());
    let path = dir.join("secret.img");
    let mut bytes = marker.clone().into_bytes();
    bytes.resize(1 << 20, b'\n');
    std::fs::write(&path, bytes).expect("write secret");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    (path, marker)
}

/// Everything the farm tells about a job: its object, log and result.
fn everything(farm: &Farm, name: &str) -> String {
    let (_, log) = farm.http("GET", &format!("/api/v1/bootjobs/{name}/log"), None, None);
    let (_, result) = farm.http(
        "GET",
        &format!("/api/v1/bootjobs/{name}/result"),
        None,
        None,
    );
    format!(
        "{}\n{}\n{}",
        farm.job(name),
        String::from_utf8_lossy(&log),
        String::from_utf8_lossy(&result)
    )
}

fn submit_json(farm: &Farm, doc: serde_json::Value) -> (u16, String) {
    let body = doc.to_string();
    let (status, out) = farm.http(
        "POST",
        "/api/v1/bootjobs",
        None,
        Some(("application/json", body.as_bytes())),
    );
    (status, String::from_utf8_lossy(&out).into_owned())
}

fn disk_job(fx: &Path, name: &str, kernel: &str, rootfs: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "bootfarm.dev/v1alpha1",
        "kind": "BootJob",
        "metadata": {"name": name},
        "spec": {
            "arch": "x86_64",
            "kernel": {"url": kernel},
            "initrd": {"url": url(fx, "x86_64/initrd-disk.cpio.gz")},
            "rootfs": {"url": rootfs},
            "accel": "tcg",
            "expect": "poweroff",
            "maxAttempts": 1,
            "timeouts": {"boot": 120, "total": 180}
        }
    })
}

/// The disk-reading guest really prints its disk: what the farm must never let it read.
#[test]
fn the_disk_reading_guest_prints_its_disk_when_booted_by_hand() {
    let fx = fixtures();
    let dir = open_dir();
    let (secret, marker) = secret_file(dir.path());
    let out = std::process::Command::new(bin_dir().join("bootfarm-runner"))
        .args([
            "boot", "--arch", "x86_64", "--accel", "tcg", "--expect", "poweroff",
        ])
        .arg("--kernel")
        .arg(fx.join("x86_64/kernel"))
        .arg("--initrd")
        .arg(fx.join("x86_64/initrd-disk.cpio.gz"))
        .arg("--rootfs")
        .arg(&secret)
        .args(["--output", "json"])
        .output()
        .expect("run the runner");
    let console = String::from_utf8_lossy(&out.stderr);
    assert!(
        console.contains(&marker),
        "a person's own boot reads the disk it was given:\n{console}"
    );
}

#[test]
fn host_files_are_refused_at_submission_and_never_reach_a_guest() {
    let fx = fixtures();
    let dir = open_dir();
    let (secret, marker) = secret_file(dir.path());
    let allowed = dir.path().join("allowed");
    std::fs::create_dir(&allowed).unwrap();
    std::fs::set_permissions(&allowed, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(&secret, allowed.join("link.img")).unwrap();
    let farm = Farm::start(Options {
        allow_local: vec![allowed.clone()],
        ..Options::default()
    });
    let kernel = url(&fx, "x86_64/kernel");
    for (i, rootfs) in [
        "file:///etc/shadow".to_string(),
        format!("file://{}", secret.display()),
        format!("file://{}", allowed.join("link.img").display()),
        format!("file://{}/../secret.img", allowed.display()),
    ]
    .iter()
    .enumerate()
    {
        let (status, body) =
            submit_json(&farm, disk_job(&fx, &format!("exfil-{i}"), &kernel, rootfs));
        assert_eq!(status, 422, "{rootfs}: {body}");
        assert!(body.contains("spec.rootfs.url"), "{body}");
        assert!(!body.contains(&marker));
    }
    // A kernel named by a host path is refused too, and no digest of it is given away.
    let (status, body) = submit_json(
        &farm,
        disk_job(
            &fx,
            "exfil-kernel",
            "file:///etc/shadow",
            &url(&fx, "x86_64/kernel"),
        ),
    );
    assert_eq!(status, 422, "{body}");
    assert!(!body.contains("sha256"), "{body}");
    let (_, list) = farm.http("GET", "/api/v1/bootjobs", None, None);
    let list: serde_json::Value = serde_json::from_slice(&list).unwrap();
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(0),
        "nothing stored"
    );
}

/// Serves `kernel` slowly (so the test can act between admission and fetch), on loopback.
fn slow_server(kernel: Vec<u8>, delay: Duration) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let port = listener.local_addr().expect("bound").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf);
                    std::thread::sleep(delay);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        kernel.len()
                    );
                    let _ = s.write_all(head.as_bytes());
                    let _ = s.write_all(&kernel);
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (port, handle)
}

#[test]
fn a_symlink_re_pointed_after_admission_is_refused_by_the_runner() {
    let fx = fixtures();
    let dir = open_dir();
    let (secret, marker) = secret_file(dir.path());
    let allowed = dir.path().join("allowed");
    std::fs::create_dir(&allowed).unwrap();
    std::fs::set_permissions(&allowed, std::fs::Permissions::from_mode(0o755)).unwrap();
    let harmless = allowed.join("empty.img");
    std::fs::write(&harmless, vec![0u8; 1 << 20]).unwrap();
    std::fs::set_permissions(&harmless, std::fs::Permissions::from_mode(0o644)).unwrap();
    let link = allowed.join("rootfs.img");
    std::os::unix::fs::symlink(&harmless, &link).unwrap();

    let kernel = std::fs::read(fx.join("x86_64/kernel")).unwrap();
    let (port, server) = slow_server(kernel, Duration::from_secs(3));
    let farm = Farm::start(Options {
        allow_local: vec![allowed.clone()],
        extra: vec!["--allow-artifact-net".into(), "127.0.0.1/32".into()],
        ..Options::default()
    });
    let (status, body) = submit_json(
        &farm,
        disk_job(
            &fx,
            "swapped",
            &format!("http://127.0.0.1:{port}/bzImage"),
            &format!("file://{}", link.display()),
        ),
    );
    assert_eq!(status, 201, "{body}");
    // While the runner waits for the kernel, the link is pointed at the host's secret.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    farm.wait_phase("swapped", "Error", Duration::from_secs(120));
    server.join().unwrap();
    let job = farm.job("swapped");
    let seen = everything(&farm, "swapped");
    assert!(seen.contains("artifact_refused"), "{job:#}");
    assert!(
        !seen.contains(&marker),
        "the host file reached the farm's output:\n{seen}"
    );
}

#[test]
fn internal_urls_are_not_fetched_and_nothing_of_them_is_shown() {
    let fx = fixtures();
    let farm = Farm::start(Options::default());
    let (status, body) = submit_json(
        &farm,
        serde_json::json!({
            "apiVersion": "bootfarm.dev/v1alpha1",
            "kind": "BootJob",
            "metadata": {"name": "ssrf"},
            "spec": {
                "arch": "x86_64",
                "kernel": {"url": url(&fx, "x86_64/kernel")},
                "rootfs": {"url": format!("http://127.0.0.1:{}/metrics", farm.port)},
                "accel": "tcg",
                "maxAttempts": 1
            }
        }),
    );
    assert_eq!(status, 201, "{body}");
    farm.wait_phase("ssrf", "Error", Duration::from_secs(120));
    let seen = everything(&farm, "ssrf");
    assert!(seen.contains("artifact_refused"), "{seen}");
    assert!(seen.contains("loopback"), "{seen}");
    assert!(
        !seen.contains("bootfarm_jobs"),
        "the metrics page leaked:\n{seen}"
    );
}

/// The runner and its QEMU run as the unprivileged user, and the runner token is in neither
/// QEMU's environment nor any file.
#[test]
fn runners_and_qemu_run_unprivileged_without_the_runner_token() {
    let fx = fixtures();
    let farm = Farm::start(Options {
        tokens: Some("user-token-for-the-test\n".into()),
        ..Options::default()
    })
    .with_token("user-token-for-the-test");
    farm.start_endless_boot(&fx, "unprivileged");
    let root = nix_uid(farm.pid());
    assert_eq!(root, Some(0), "the test runs the operator as root");
    let qemu = qemu_descendants(farm.pid());
    assert!(!qemu.is_empty());
    for pid in &qemu {
        let uid = nix_uid(*pid).expect("QEMU's uid");
        assert_ne!(uid, 0, "QEMU runs as root");
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&env).contains("BOOTFARM_TOKEN"),
            "QEMU sees the runner token"
        );
    }
    let runners = descendants_named(farm.pid(), "bootfarm-runner");
    assert!(!runners.is_empty());
    for pid in runners {
        assert_ne!(nix_uid(pid), Some(0), "the runner runs as root");
    }
    assert!(
        !farm.dir.path().join("data/runner.token").exists(),
        "no token file for QEMU to read"
    );
    let (status, _) = farm.http(
        "DELETE",
        "/api/v1/bootjobs/unprivileged",
        Some("user-token-for-the-test"),
        None,
    );
    assert_eq!(status, 200);
}

fn nix_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))?
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}
