//! The stored console log under the one console-log policy, through the API: a job that prints
//! more than the limit keeps its head and its tail (the panic), says where it was cut, marks each
//! retried attempt, serves ranges and follows consistently, and its result says it was cut.

mod api_support;

use api_support::*;
use axum::body::Body;
use axum::http::{Method, StatusCode};
use bootfarm_core::console_cap::marker;
use bootfarm_core::result::Verdict;
use serde_json::json;

const LIMIT: u64 = 64 << 10;

async fn post_log(app: &App, name: &str, lease: &str, data: Vec<u8>) {
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/runner/jobs/{name}/log?leaseId={lease}"),
            Some(RUNNER),
            Some("application/octet-stream"),
            data,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
}

fn flood(from: u32, to: u32) -> Vec<u8> {
    (from..to)
        .flat_map(|i| format!("[   {i:>5}.000000] bootfarm: flood line {i}\n").into_bytes())
        .collect()
}

#[tokio::test]
async fn a_flooding_job_keeps_its_head_its_attempts_and_its_panic() {
    let app = app_with_console_limit(LIMIT);
    app.submit_yaml(&job_yaml("flood")).await;

    // Attempt 1 floods past the limit, in runner-sized batches, then its runner goes away.
    let (name, lease) = app.claim("r1").await.unwrap();
    let first = flood(0, 20_000);
    for batch in first.chunks(256 << 10) {
        post_log(&app, &name, &lease, batch.to_vec()).await;
    }
    let r = app.release(&name, &lease, "runner shutting down").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // Attempt 2 prints a little, then panics.
    let (again, lease) = app.claim("r2").await.unwrap();
    assert_eq!(again, name);
    let mut second = b"[    0.000000] Linux version 6.1.0 (x@y) #1\n".to_vec();
    second.extend(b"[    9.000000] Kernel panic - not syncing: sysrq triggered crash\n");
    post_log(&app, &name, &lease, second.clone()).await;

    let log = app.get("/api/v1/bootjobs/flood/log").await;
    assert_eq!(log.status, StatusCode::OK);
    let text = log.text();
    assert!(text.starts_with("[       0.000000] bootfarm: flood line 0\n"));
    assert!(text.ends_with("Kernel panic - not syncing: sysrq triggered crash\n"));
    assert!(text.contains("\n[bootfarm: attempt 2 on runner r2 at "));
    let cuts: Vec<&str> = text
        .lines()
        .filter(|l| marker::parse(l.as_bytes()).is_some())
        .collect();
    assert_eq!(cuts.len(), 1, "{cuts:?}");
    assert!(cuts[0].ends_with("by the operator]"), "{}", cuts[0]);
    assert!(
        log.body.len() as u64 <= LIMIT + LIMIT / 8 + 200,
        "{}",
        log.body.len()
    );

    // Ranges address the log as served: the head's bytes are fixed, the tail's end is there.
    let panic_line = "[    9.000000] Kernel panic - not syncing: sysrq triggered crash\n";
    let tail = range(&app, &format!("bytes=-{}", panic_line.len())).await;
    assert_eq!(tail.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(tail.text(), panic_line);
    let first_bytes = range(&app, "bytes=0-99").await;
    assert_eq!(&first_bytes.body[..], &first[..100]);

    // The result says the stored log was cut, though the runner's own log was not.
    let mut result = result(Verdict::Fail);
    result.reason = "panic".into();
    let r = app
        .runner_post(
            &format!("jobs/{name}/complete"),
            json!({"leaseId": lease, "result": result}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let stored = app.get("/api/v1/bootjobs/flood/result").await.json();
    assert_eq!(stored["console"]["truncated"], true, "{stored}");
    // A finished job's log reads the same as before.
    assert_eq!(app.get("/api/v1/bootjobs/flood/log").await.body, log.body);
}

#[tokio::test]
async fn a_job_within_the_limit_is_whole_and_not_truncated() {
    let app = app_with_console_limit(LIMIT);
    app.submit_yaml(&job_yaml("small")).await;
    let (name, lease) = app.claim("r1").await.unwrap();
    // Over the head's half, within the limit.
    let data = flood(0, 1500);
    assert!(data.len() as u64 > LIMIT / 2 && (data.len() as u64) < LIMIT);
    post_log(&app, &name, &lease, data.clone()).await;
    assert_eq!(app.get("/api/v1/bootjobs/small/log").await.body, data);
    let r = app
        .runner_post(
            &format!("jobs/{name}/complete"),
            json!({"leaseId": lease, "result": result(Verdict::Pass)}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let stored = app.get("/api/v1/bootjobs/small/result").await.json();
    assert_eq!(stored["console"]["truncated"], false, "{stored}");
}

async fn range(app: &App, spec: &str) -> Resp {
    let req = axum::http::Request::get("/api/v1/bootjobs/flood/log")
        .header("authorization", format!("Bearer {USER}"))
        .header("range", spec)
        .body(Body::empty())
        .expect("a valid request");
    let resp = tower::ServiceExt::oneshot(app.router.clone(), req)
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("the whole body")
        .to_bytes();
    Resp {
        status,
        headers,
        body,
    }
}
