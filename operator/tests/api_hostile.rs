//! What a hostile submitter or runner tries through the API, and what holds: local artifacts
//! outside the allowed directories, forged results, oversized summaries, and logs read in
//! pieces. Each of these went through before the farm's rules existed.

mod api_support;

use api_support::*;
use axum::http::{Method, StatusCode};
use bootfarm_core::result::Verdict;
use bootfarm_operator::admission::LocalArtifacts;
use serde_json::json;

fn job_with_kernel(name: &str, url: &str) -> String {
    job_yaml(name).replace(
        "url: https://artifacts.example/vmlinuz",
        &format!("url: {url}"),
    )
}

#[tokio::test]
async fn local_artifacts_outside_the_allowed_directories_are_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("kernels");
    std::fs::create_dir(&allowed).unwrap();
    std::fs::write(allowed.join("bzImage"), b"kernel").unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, b"host secret").unwrap();
    std::os::unix::fs::symlink(&secret, allowed.join("evil")).unwrap();

    let mut app = app();
    app.state.local_artifacts = LocalArtifacts::new(std::slice::from_ref(&allowed)).unwrap();
    app.router = bootfarm_operator::api::router(app.state.clone());

    for (i, url) in [
        "file:///etc/shadow".to_string(),
        "/etc/shadow".to_string(),
        format!("file://{}/../secret", allowed.display()),
        format!("file://{}", allowed.join("evil").display()),
        format!("{}", secret.display()),
    ]
    .iter()
    .enumerate()
    {
        let r = app
            .submit_yaml(&job_with_kernel(&format!("bad{i}"), url))
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{url}: {}",
            r.text()
        );
        assert_eq!(r.field().as_deref(), Some("spec.kernel.url"), "{url}");
        assert!(r.message().contains("refused"), "{url}: {}", r.message());
        assert!(!r.text().contains("host secret"));
    }
    assert!(app.names().await.is_empty(), "nothing was stored");
    let ok = format!("file://{}", allowed.join("bzImage").display());
    assert_eq!(
        app.submit_yaml(&job_with_kernel("good", &ok)).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn without_allowed_directories_no_local_artifact_is_accepted() {
    let app = app();
    let r = app
        .submit_yaml(&job_with_kernel("local", "file:///boot/vmlinuz"))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert!(
        r.message().contains("--allow-local-artifacts"),
        "{}",
        r.message()
    );
}

#[tokio::test]
async fn qemu_property_injection_is_refused_at_submission() {
    let app = app();
    for (field, value) in [
        ("machine", "q35,dumpdtb=x"),
        ("machine", "\"virt,dumpdtb=/tmp/x\""),
        ("cpu", "Nehalem,model-id=x"),
        ("memory", "1T"),
    ] {
        let doc = job_yaml("inject").replace(
            "bootArgs: console=ttyS0",
            &format!("bootArgs: console=ttyS0\n  {field}: {value}"),
        );
        let r = app.submit_yaml(&doc).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}={value}: {}",
            r.text()
        );
        assert_eq!(r.field().as_deref(), Some(&*format!("spec.{field}")));
    }
    assert!(app.names().await.is_empty());
}

#[tokio::test]
async fn a_forged_result_with_negative_durations_is_refused() {
    let app = app();
    app.submit_yaml(&job_yaml("forged")).await;
    let (name, lease) = app.claim("r1").await.unwrap();
    let mut result = result(Verdict::Pass);
    result.durations.total = Some(-5.0);
    let r = app
        .runner_post(
            &format!("jobs/{name}/complete"),
            json!({"leaseId": lease, "result": result}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert_eq!(r.field().as_deref(), Some("result.durations.total"));
    assert_eq!(app.phase(&name).await, "Running", "nothing was recorded");
}

#[tokio::test]
async fn a_seven_megabyte_summary_leaves_a_small_status() {
    let app = app();
    app.submit_yaml(&job_yaml("huge")).await;
    let (name, lease) = app.claim("r1").await.unwrap();
    let mut result = result(Verdict::Fail);
    result.reason = "panic".into();
    result.summary = "x".repeat(7 << 20);
    let r = app
        .runner_post(
            &format!("jobs/{name}/complete"),
            json!({"leaseId": lease, "result": result}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        &r.text()[..200.min(r.text().len())]
    );
    let job = app.get(&format!("/api/v1/bootjobs/{name}")).await;
    assert!(
        job.body.len() < 16 << 10,
        "status is {} bytes",
        job.body.len()
    );
    let stored = app.get(&format!("/api/v1/bootjobs/{name}/result")).await;
    assert!(
        stored.body.len() < 64 << 10,
        "result is {} bytes",
        stored.body.len()
    );
    for c in job.json()["status"]["conditions"].as_array().unwrap() {
        assert!(c["message"].as_str().unwrap().len() <= 1024, "{c}");
    }
}

#[tokio::test]
async fn a_retried_jobs_consoles_are_separated_by_a_marker_naming_attempt_and_runner() {
    let app = app();
    app.submit_yaml(&job_yaml("twice")).await;
    let (name, lease) = app.claim("runner-one").await.unwrap();
    let log = |lease: String, body: &'static str| {
        let uri = format!("/api/v1/runner/jobs/{name}/log?leaseId={lease}");
        let app = &app;
        async move {
            app.call(
                Method::POST,
                &uri,
                Some(RUNNER),
                Some("application/octet-stream"),
                body,
            )
            .await
        }
    };
    assert_eq!(
        log(lease.clone(), "first attempt, no newline").await.status,
        StatusCode::NO_CONTENT
    );
    let r = app.release(&name, &lease, "test").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let (again, lease2) = app.claim("runner-two").await.unwrap();
    assert_eq!(again, name);
    assert_eq!(
        log(lease2.clone(), "second attempt\n").await.status,
        StatusCode::NO_CONTENT
    );
    let text = app
        .get(&format!("/api/v1/bootjobs/{name}/log"))
        .await
        .text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "first attempt, no newline");
    assert!(
        lines[1].starts_with("[bootfarm: attempt 2 on runner runner-two at "),
        "{text}"
    );
    assert_eq!(lines[2], "second attempt");
}

#[tokio::test]
async fn logs_are_served_in_ranges() {
    let app = app();
    app.submit_yaml(&job_yaml("ranged")).await;
    let (name, lease) = app.claim("r1").await.unwrap();
    let body: String = (0..1000).map(|i| format!("line {i:04}\n")).collect();
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/runner/jobs/{name}/log?leaseId={lease}"),
            Some(RUNNER),
            Some("application/octet-stream"),
            body.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let uri = format!("/api/v1/bootjobs/{name}/log");
    let ranged = |range: &'static str| {
        let uri = uri.clone();
        let app = &app;
        async move {
            let req = axum::http::Request::builder()
                .uri(uri)
                .header("authorization", format!("Bearer {USER}"))
                .header("range", range)
                .body(axum::body::Body::empty())
                .unwrap();
            let resp = tower::ServiceExt::oneshot(app.router.clone(), req)
                .await
                .unwrap();
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            (
                status,
                headers,
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        }
    };
    let whole = app.get(&uri).await;
    assert_eq!(whole.text(), body);
    assert_eq!(whole.headers["accept-ranges"], "bytes");
    let (status, headers, text) = ranged("bytes=10-19").await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(text, &body[10..20]);
    assert_eq!(
        headers["content-range"],
        format!("bytes 10-19/{}", body.len())
    );
    let (_, _, tail) = ranged("bytes=-10").await;
    assert_eq!(tail, "line 0999\n");
    let (status, headers, _) = ranged("bytes=999999-").await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(headers["content-range"], format!("bytes */{}", body.len()));
}
