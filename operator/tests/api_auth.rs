//! The token matrix: user routes need a user token, runner routes a runner token; health,
//! readiness, metrics and the OpenAPI document need none.

mod api_support;

use api_support::*;
use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::json;

fn user_routes() -> Vec<(Method, &'static str)> {
    vec![
        (Method::GET, "/api/v1/bootjobs"),
        (Method::POST, "/api/v1/bootjobs"),
        (Method::GET, "/api/v1/bootjobs/x"),
        (Method::DELETE, "/api/v1/bootjobs/x"),
        (Method::GET, "/api/v1/bootjobs/x/log"),
        (Method::GET, "/api/v1/bootjobs/x/result"),
    ]
}

fn runner_routes() -> Vec<(Method, &'static str)> {
    vec![
        (Method::POST, "/api/v1/runner/claim"),
        (Method::POST, "/api/v1/runner/jobs/x/heartbeat"),
        (Method::POST, "/api/v1/runner/jobs/x/log"),
        (Method::POST, "/api/v1/runner/jobs/x/complete"),
        (Method::POST, "/api/v1/runner/jobs/x/release"),
    ]
}

#[tokio::test]
async fn missing_or_wrong_tokens_are_401_with_json() {
    let app = app_with_tokens();
    for (method, uri) in user_routes().into_iter().chain(runner_routes()) {
        for token in [None, Some("wrong-token")] {
            let r = app
                .call(method.clone(), uri, token, None, Body::empty())
                .await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{method} {uri} {token:?}"
            );
            assert!(!r.message().is_empty());
            assert_eq!(r.headers["www-authenticate"], "Bearer");
        }
    }
}

#[tokio::test]
async fn a_token_of_the_other_role_is_forbidden() {
    let app = app_with_tokens();
    for (method, uri) in user_routes() {
        let r = app
            .call(method.clone(), uri, Some(RUNNER), None, Body::empty())
            .await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "runner token on {method} {uri}"
        );
        assert!(r.message().contains("runner token"), "{}", r.message());
    }
    for (method, uri) in runner_routes() {
        let r = app
            .call(method.clone(), uri, Some(USER), None, Body::empty())
            .await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "user token on {method} {uri}"
        );
    }
}

#[tokio::test]
async fn the_right_token_gets_through() {
    let app = app_with_tokens();
    let r = app.get("/api/v1/bootjobs").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        app.submit_yaml(&job_yaml("authed")).await.status,
        StatusCode::CREATED
    );
    let r = app.runner_post("claim", json!({"runnerId": "r1"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn health_metrics_and_openapi_need_no_token() {
    let app = app_with_tokens();
    for uri in ["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"] {
        let r = app.call(Method::GET, uri, None, None, Body::empty()).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text());
    }
}

#[tokio::test]
async fn without_tokens_auth_is_off() {
    let app = app();
    let r = app
        .call(Method::GET, "/api/v1/bootjobs", None, None, Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .call(
            Method::POST,
            "/api/v1/runner/claim",
            None,
            Some("application/json"),
            json!({"runnerId": "r"}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}
