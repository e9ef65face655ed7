//! The web UI's shell and its session: served without a token, a login that checks the token and
//! sets an HttpOnly cookie, and that cookie accepted by user routes only, changes only with the
//! UI's header (a cross-site form cannot add it).

mod api_support;

use api_support::*;
use axum::body::Body;
use axum::http::{Method, StatusCode};

fn login_body(token: &str) -> Body {
    Body::from(serde_json::json!({ "token": token }).to_string())
}

fn json_ui() -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".into()),
        ("x-bootfarm-ui", "1".into()),
    ]
}

#[tokio::test]
async fn the_shell_and_assets_need_no_token_and_forbid_inline_script() {
    let app = app_with_tokens();
    for (path, kind) in [
        ("/", "text/html"),
        ("/jobs/some-job", "text/html"),
        ("/pools", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ] {
        let r = app.call(Method::GET, path, None, None, Body::empty()).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        let ct = r.headers["content-type"].to_str().unwrap();
        assert!(ct.starts_with(kind), "{path}: {ct}");
        let csp = r.headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe"),
            "{csp}"
        );
    }
    let page = app.call(Method::GET, "/", None, None, Body::empty()).await;
    let html = String::from_utf8_lossy(&page.body);
    // Everything from this server: no outside script, style or font.
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    assert!(html.contains(r#"src="/ui/app.js""#));
}

#[tokio::test]
async fn login_checks_the_token_and_sets_an_http_only_cookie() {
    let app = app_with_tokens();
    let state = app
        .call(Method::GET, "/ui/session", None, None, Body::empty())
        .await
        .json();
    assert_eq!(state["authRequired"], true);
    assert_eq!(state["authenticated"], false);
    // Without the UI's header: refused (a cross-site form cannot log a victim in).
    let r = app
        .call_with(
            Method::POST,
            "/ui/session",
            &[("content-type", "application/json".into())],
            login_body(USER),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .call_with(Method::POST, "/ui/session", &json_ui(), login_body("wrong"))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app
        .call_with(Method::POST, "/ui/session", &json_ui(), login_body(RUNNER))
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "a runner token is no login"
    );
    let r = app
        .call_with(Method::POST, "/ui/session", &json_ui(), login_body(USER))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let set = r.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(
        !set.contains(USER),
        "the token is not in the cookie as is: {set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();

    let with_cookie = |extra: Option<(&'static str, String)>| {
        let mut h = vec![("cookie", cookie.clone())];
        h.extend(extra);
        h
    };
    let state = app
        .call_with(
            Method::GET,
            "/ui/session",
            &with_cookie(None),
            Body::empty(),
        )
        .await
        .json();
    assert_eq!(state["authenticated"], true);
    for path in ["/api/v1/bootjobs", "/api/v1/pools"] {
        let r = app
            .call_with(Method::GET, path, &with_cookie(None), Body::empty())
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
    app.finish("done", bootfarm_core::result::Verdict::Pass)
        .await;
    // A change through the cookie alone is refused; with the UI's header it is made.
    let r = app
        .call_with(
            Method::DELETE,
            "/api/v1/bootjobs/done",
            &with_cookie(None),
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .call_with(
            Method::DELETE,
            "/api/v1/bootjobs/done",
            &with_cookie(Some(("x-bootfarm-ui", "1".into()))),
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Never a runner's credential.
    let r = app
        .call_with(
            Method::POST,
            "/api/v1/runner/claim",
            &with_cookie(Some(("x-bootfarm-ui", "1".into()))),
            Body::from(r#"{"runnerId":"r"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Logging out clears it.
    let r = app
        .call_with(
            Method::DELETE,
            "/ui/session",
            &with_cookie(None),
            Body::empty(),
        )
        .await;
    assert!(r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
}

#[tokio::test]
async fn without_tokens_the_page_needs_no_login() {
    let app = app();
    let state = app.get("/ui/session").await.json();
    assert_eq!(state["authRequired"], false);
}
