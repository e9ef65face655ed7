//! Callbacks on the standalone farm, with real boots and a real HTTP receiver on loopback: a
//! job's summary arrives signed (checked with openssl, not with the farm's own code), after a
//! 500 it is retried with the same delivery id, the farm's tokens never reach it, a plan's
//! summary arrives once when its last job ends, an endpoint that never answers does not hold up
//! anyone else's, and a callback to an address the policy denies is never attempted.

mod farm_support;

use farm_support::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    at: Instant,
}

/// A receiver on 127.0.0.1: `/hang` never answers, `/flaky` answers 500 to its first request,
/// anything else 200. Every request is recorded as it arrives.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("its address").port();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let seen = got.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || serve(conn, &seen));
            }
        });
        Receiver { port, got }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn to(&self, path: &str) -> Vec<Received> {
        let all = self.got.lock().expect("the receiver's log");
        all.iter().filter(|r| r.path == path).cloned().collect()
    }

    fn wait_for(&self, path: &str, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.to(path);
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn serve(conn: TcpStream, seen: &Mutex<Vec<Received>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    let _ = reader.read_exact(&mut body);
    let first = {
        let Ok(mut all) = seen.lock() else {
            return;
        };
        let first = !all.iter().any(|r| r.path == path);
        all.push(Received {
            path: path.clone(),
            headers,
            body,
            at: Instant::now(),
        });
        first
    };
    let mut conn = conn;
    match path.as_str() {
        "/hang" => std::thread::sleep(Duration::from_secs(600)),
        "/flaky" if first => {
            let _ = conn.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
        _ => {
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    }
}

/// The HMAC-SHA256 of `body` under `key` as openssl computes it.
fn openssl_hmac(key: &str, body: &[u8]) -> String {
    let mut child = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", key, "-r"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl (scripts/setup-host installs it)");
    child
        .stdin
        .take()
        .expect("openssl's stdin")
        .write_all(body)
        .expect("writing to openssl");
    let out = child.wait_with_output().expect("openssl ran");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    format!(
        "sha256={}",
        text.split_whitespace().next().unwrap_or_default()
    )
}

fn job(fx: &std::path::Path, name: &str, initrd: &str, callback: Value) -> String {
    json!({
        "apiVersion": "bootfarm.dev/v1alpha1", "kind": "BootJob",
        "metadata": {"name": name},
        "spec": {"arch": "x86_64", "kernel": {"url": url(fx, "x86_64/kernel")},
                 "initrd": {"url": url(fx, initrd)}, "timeouts": {"total": 240},
                 "callback": callback}
    })
    .to_string()
}

#[test]
fn callbacks_arrive_signed_retried_once_per_plan_and_never_hold_up_the_queue() {
    let fx = fixtures();
    let rx = Receiver::start();
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("ci"), "s3cret-key\n").unwrap();
    let farm = Farm::start(Options {
        tokens: Some("user: user-token-0123456789abcdef\n".into()),
        extra: vec![
            "--callback-secret-dir".into(),
            secrets.path().display().to_string(),
            "--allow-callback-net".into(),
            "127.0.0.0/8".into(),
            "--callback-backoff".into(),
            "1".into(),
            "--callback-timeout".into(),
            "300".into(),
        ],
        ..Options::default()
    })
    .with_token("user-token-0123456789abcdef");
    let token = Some("user-token-0123456789abcdef");
    let submit = |doc: String| {
        let (code, body) = farm.http(
            "POST",
            "/api/v1/bootjobs",
            token,
            Some(("application/json", doc.as_bytes())),
        );
        assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    };
    // A dead endpoint first, so the others' deliveries happen while it holds its connection.
    submit(job(
        &fx,
        "to-hang",
        "x86_64/initrd-poweroff.cpio.gz",
        json!({"url": rx.url("/hang")}),
    ));
    submit(job(
        &fx,
        "signed",
        "x86_64/initrd-poweroff.cpio.gz",
        json!({"url": rx.url("/flaky"), "secretName": "ci"}),
    ));
    // Refused by the policy (a private address not allowed): never connected to.
    submit(job(
        &fx,
        "refused",
        "x86_64/initrd-poweroff.cpio.gz",
        json!({"url": "http://10.255.255.1:9/hook"}),
    ));
    let plan = json!({
        "apiVersion": "bootfarm.dev/v1alpha1", "kind": "BootPlan", "metadata": {"name": "cbplan"},
        "spec": {"arches": ["x86_64"],
                 "defaults": {"initrd": {"url": url(&fx, "{arch}/initrd-poweroff.cpio.gz")}, "timeouts": {"total": 240}},
                 "kernels": [{"name": "a", "url": url(&fx, "{arch}/kernel")},
                             {"name": "b", "url": url(&fx, "{arch}/kernel"),
                              "spec": {"initrd": {"url": url(&fx, "x86_64/initrd-panic.cpio.gz")}}}],
                 "callback": {"url": rx.url("/plan"), "secretName": "ci"}}
    })
    .to_string();
    let (code, body) = farm.http(
        "POST",
        "/api/v1/plans",
        token,
        Some(("application/json", plan.as_bytes())),
    );
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));

    // Bad callbacks are refused at submission, naming the field.
    let (code, body) = farm.http(
        "POST",
        "/api/v1/bootjobs",
        token,
        Some((
            "application/json",
            job(
                &fx,
                "bad",
                "x86_64/initrd-poweroff.cpio.gz",
                json!({"url": "ftp://127.0.0.1/x"}),
            )
            .as_bytes(),
        )),
    );
    assert_eq!(code, 422);
    let err: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["error"]["field"], "spec.callback.url", "{err}");

    for name in ["to-hang", "signed", "refused"] {
        farm.wait_phase(name, "Succeeded", Duration::from_secs(300));
    }
    let out = farm.cli(&["wait", "--plan", "cbplan", "--timeout", "300"]);
    assert_eq!(out.status.code(), Some(1), "{}", farm.operator_log());

    // The signed job: a 500 first, then the same delivery again, which succeeds.
    let signed = rx.wait_for("/flaky", 2, Duration::from_secs(20));
    assert_eq!(signed.len(), 2, "{signed:?}\n{}", farm.operator_log());
    let (first, second) = (&signed[0], &signed[1]);
    assert_eq!(
        first.headers["x-bootfarm-delivery"],
        second.headers["x-bootfarm-delivery"]
    );
    assert_eq!(second.headers["x-bootfarm-event"], "bootjob.finished");
    assert_eq!(
        second.headers["x-bootfarm-signature-256"],
        openssl_hmac("s3cret-key", &second.body)
    );
    assert!(
        !second.headers.contains_key("authorization"),
        "the farm's token reached the callback"
    );
    let payload: Value = serde_json::from_slice(&second.body).unwrap();
    assert_eq!(payload["name"], "signed");
    assert_eq!(payload["phase"], "Succeeded");
    assert_eq!(payload["result"]["result"], "pass");

    // The plan: one delivery, once both jobs ended, with the plan's summary.
    let plan_calls = rx.wait_for("/plan", 1, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));
    let plan_calls_later = rx.to("/plan");
    assert_eq!(plan_calls.len(), 1);
    assert_eq!(
        plan_calls_later.len(),
        1,
        "the plan's callback was sent more than once"
    );
    let p = &plan_calls[0];
    assert_eq!(p.headers["x-bootfarm-event"], "bootplan.finished");
    assert_eq!(
        p.headers["x-bootfarm-signature-256"],
        openssl_hmac("s3cret-key", &p.body)
    );
    let payload: Value = serde_json::from_slice(&p.body).unwrap();
    assert_eq!(payload["plan"]["status"]["phase"], "Failed", "{payload}");
    assert_eq!(payload["plan"]["status"]["jobs"], 2);
    assert_eq!(payload["plan"]["status"]["failing"][0]["key"], "b/x86_64");
    // Jobs of the plan carry no callback of their own.
    assert!(rx
        .to("/plan")
        .iter()
        .all(|r| r.headers["x-bootfarm-event"] == "bootplan.finished"));

    // The dead endpoint was called and is still held; the others went on regardless: the
    // signed job's retry and the plan's delivery both happened while it hung.
    let hung = rx.to("/hang");
    assert_eq!(hung.len(), 1, "{hung:?}");
    assert!(second.at > hung[0].at && p.at > hung[0].at);

    // The refused callback never connected anywhere; the metrics say so.
    let (_, metrics) = farm.http("GET", "/metrics", None, None);
    let metrics = String::from_utf8_lossy(&metrics);
    let count = |outcome: &str, event: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "bootfarm_callbacks_total{{event=\"{event}\",outcome=\"{outcome}\"}}"
                ))
            })
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(count("refused", "bootjob.finished"), 1.0, "{metrics}");
    assert_eq!(count("delivered", "bootjob.finished"), 1.0, "{metrics}");
    assert_eq!(count("delivered", "bootplan.finished"), 1.0, "{metrics}");
}
