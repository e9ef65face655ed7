//! Health, readiness, metrics and the OpenAPI document.

mod api_support;

use api_support::*;
use axum::body::Body;
use axum::http::{Method, StatusCode};
use bootfarm_core::result::Verdict;
use serde_json::json;

/// Every route the router serves, as (method, path template, a concrete path to call).
const ROUTES: &[(&str, &str, &str)] = &[
    ("get", "/healthz", "/healthz"),
    ("get", "/readyz", "/readyz"),
    ("get", "/metrics", "/metrics"),
    ("get", "/api/v1/openapi.json", "/api/v1/openapi.json"),
    ("post", "/api/v1/bootjobs", "/api/v1/bootjobs"),
    ("get", "/api/v1/bootjobs", "/api/v1/bootjobs"),
    ("get", "/api/v1/bootjobs/{name}", "/api/v1/bootjobs/x"),
    ("delete", "/api/v1/bootjobs/{name}", "/api/v1/bootjobs/x"),
    (
        "get",
        "/api/v1/bootjobs/{name}/log",
        "/api/v1/bootjobs/x/log",
    ),
    (
        "get",
        "/api/v1/bootjobs/{name}/result",
        "/api/v1/bootjobs/x/result",
    ),
    (
        "get",
        "/api/v1/bootjobs/{name}/junit",
        "/api/v1/bootjobs/x/junit",
    ),
    (
        "get",
        "/api/v1/bootjobs/{name}/reproducer",
        "/api/v1/bootjobs/x/reproducer",
    ),
    (
        "get",
        "/api/v1/bootjobs/{name}/results.json",
        "/api/v1/bootjobs/x/results.json",
    ),
    ("get", "/api/v1/pools", "/api/v1/pools"),
    ("post", "/api/v1/runner/claim", "/api/v1/runner/claim"),
    (
        "post",
        "/api/v1/runner/jobs/{name}/heartbeat",
        "/api/v1/runner/jobs/x/heartbeat",
    ),
    (
        "post",
        "/api/v1/runner/jobs/{name}/log",
        "/api/v1/runner/jobs/x/log",
    ),
    (
        "post",
        "/api/v1/runner/jobs/{name}/complete",
        "/api/v1/runner/jobs/x/complete",
    ),
    (
        "post",
        "/api/v1/runner/jobs/{name}/release",
        "/api/v1/runner/jobs/x/release",
    ),
    ("post", "/api/v1/plans", "/api/v1/plans"),
    ("get", "/api/v1/plans/{name}", "/api/v1/plans/x"),
    (
        "get",
        "/api/v1/compare",
        "/api/v1/compare?baseline=a&candidate=b",
    ),
];

#[tokio::test]
async fn openapi_describes_exactly_the_routes_the_router_serves() {
    let app = app();
    let doc = app.get("/api/v1/openapi.json").await.json();
    assert_eq!(
        doc["openapi"].as_str().map(|v| v.starts_with("3.")),
        Some(true)
    );
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                documented.push((method.to_string(), path.clone()));
            }
        }
    }
    let mut listed: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    listed.sort();
    assert_eq!(documented, listed);
    // And each listed route really is routed: not the fallback 404, not 405.
    for (method, _, concrete) in ROUTES {
        let m: Method = method.to_uppercase().parse().unwrap();
        let r = app.call(m, concrete, Some(USER), None, Body::empty()).await;
        assert_ne!(
            r.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {concrete}"
        );
        if r.status == StatusCode::NOT_FOUND {
            assert_ne!(
                r.message(),
                "no such route",
                "{method} {concrete} is not routed"
            );
        }
    }
}

#[tokio::test]
async fn healthz_and_readyz() {
    let app = app();
    let r = app
        .call(Method::GET, "/healthz", None, None, Body::empty())
        .await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "ok\n"));
    let r = app
        .call(Method::GET, "/readyz", None, None, Body::empty())
        .await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "ready\n"));
}

#[tokio::test]
async fn metrics_count_requests_by_matched_route_and_jobs_by_phase() {
    let app = app();
    app.submit_yaml(&job_yaml("m1")).await;
    app.submit_yaml(&job_yaml("m2")).await;
    app.get("/api/v1/bootjobs/m1").await;
    app.get("/api/v1/bootjobs/m2").await;
    app.get("/api/v1/bootjobs/absent").await;
    let (name, lease) = app.claim("r1").await.unwrap();
    app.runner_post(
        &format!("jobs/{name}/complete"),
        json!({"leaseId": lease, "result": result(Verdict::Pass)}),
    )
    .await;

    let r = app
        .call(Method::GET, "/metrics", None, None, Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text();
    let has = |needle: &str| assert!(text.contains(needle), "missing {needle}:\n{text}");
    has(
        r#"bootfarm_http_requests_total{method="GET",route="/api/v1/bootjobs/{name}",status="200"} 2"#,
    );
    has(
        r#"bootfarm_http_requests_total{method="GET",route="/api/v1/bootjobs/{name}",status="404"} 1"#,
    );
    has(r#"bootfarm_http_requests_total{method="POST",route="/api/v1/bootjobs",status="201"} 2"#);
    has(
        r#"bootfarm_http_request_duration_seconds_count{method="GET",route="/api/v1/bootjobs/{name}"} 3"#,
    );
    has(r#"bootfarm_jobs{phase="Queued"} 1"#);
    has(r#"bootfarm_jobs{phase="Succeeded"} 1"#);
    has(r#"bootfarm_jobs_finished_total{arch="x86_64",result="pass"} 1"#);
    has(r#"bootfarm_job_queue_wait_seconds_count{arch="x86_64"} 1"#);
    has(r#"bootfarm_time_to_verdict_seconds_count{arch="x86_64",result="pass"} 1"#);
    assert!(
        !text.contains("route=\"/api/v1/bootjobs/m1\""),
        "raw paths must not be labels"
    );
    // Unrouted paths share one label.
    app.get("/no/such/thing").await;
    let text = app.get("/metrics").await.text();
    assert!(text.contains(r#"route="unmatched""#), "{text}");
}

#[tokio::test]
async fn the_registry_handed_back_is_the_one_the_metrics_live_in() {
    // (The names themselves are checked against the chart's METRICS.md in the library's tests.)
    let (m, registry) = bootfarm_operator::metrics::Metrics::new();
    assert!(m.names().len() > 10);
    // The registry handed back is the one the metrics live in.
    m.runners_desired.with_label_values(&["default"]).set(2.0);
    assert!(registry
        .gather()
        .iter()
        .any(|f| f.name() == "bootfarm_runners_desired"));
}

#[tokio::test]
async fn a_first_claim_reports_runner_start_up_time() {
    let app = app();
    let created = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(20);
    let r = app
        .runner_post(
            "claim",
            json!({"runnerId": "r1", "pool": "tcg", "runnerCreatedAt": created.to_string(), "waitSeconds": 0}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let text = app.get("/metrics").await.text();
    assert!(
        text.contains(r#"bootfarm_runner_startup_seconds_bucket{pool="tcg",le="12.8"} 0"#)
            && text.contains(r#"bootfarm_runner_startup_seconds_bucket{pool="tcg",le="25.6"} 1"#),
        "{text}"
    );
}
