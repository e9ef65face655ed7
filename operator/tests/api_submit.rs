//! Bad submissions get a 4xx with a clear message naming the field, and nothing is stored.

mod api_support;

use api_support::*;
use axum::http::{Method, StatusCode};

async fn refused(app: &App, content_type: &str, body: String) -> Resp {
    let r = app
        .call(
            Method::POST,
            "/api/v1/bootjobs",
            Some(USER),
            Some(content_type),
            body,
        )
        .await;
    assert!(r.status.is_client_error(), "{}: {}", r.status, r.text());
    assert!(!r.message().is_empty(), "no message: {}", r.text());
    assert!(
        app.names().await.is_empty(),
        "something was stored after: {}",
        r.text()
    );
    r
}

#[tokio::test]
async fn missing_kernel() {
    let app = app();
    let doc = job_yaml("nokernel").replace(
        "  kernel:\n    url: https://artifacts.example/vmlinuz\n",
        "",
    );
    let r = refused(&app, "application/yaml", doc).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.message().contains("kernel"), "{}", r.message());
}

#[tokio::test]
async fn empty_kernel_url() {
    let app = app();
    let doc =
        job_yaml("emptykernel").replace("url: https://artifacts.example/vmlinuz", "url: \"\"");
    let r = refused(&app, "application/yaml", doc).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.field().as_deref(),
        Some("spec.kernel.url"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn unknown_arch() {
    let app = app();
    let r = refused(
        &app,
        "application/yaml",
        job_yaml("mips").replace("arch: x86_64", "arch: mips"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.field().as_deref(), Some("spec.arch"));
    assert!(
        r.message().contains("unknown variant `mips`"),
        "{}",
        r.message()
    );
}

#[tokio::test]
async fn negative_timeout() {
    let app = app();
    let doc = job_yaml("neg").replace("bootArgs: console=ttyS0", "timeouts:\n    boot: -5");
    let r = refused(&app, "application/yaml", doc).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.field().as_deref(), Some("spec.timeouts.boot"));
    assert!(r.message().contains("-5"), "{}", r.message());
}

#[tokio::test]
async fn a_megabyte_of_boot_args() {
    let app = app();
    let doc = job_yaml("huge").replace("console=ttyS0", &"a".repeat(1_000_000));
    let r = refused(&app, "application/yaml", doc).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.field().as_deref(), Some("spec.bootArgs"));
    assert!(r.message().contains("limit"), "{}", r.message());
}

#[tokio::test]
async fn yaml_bomb() {
    let app = app();
    let mut bomb =
        String::from("apiVersion: bootfarm.dev/v1alpha1\nkind: BootJob\nmetadata: {name: bomb}\n");
    bomb.push_str(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let levels = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in levels.windows(2) {
        bomb.push_str(&format!(
            "{}: &{} [{}]\n",
            w[1],
            w[1],
            vec![format!("*{}", w[0]); 9].join(",")
        ));
    }
    bomb.push_str("spec: {arch: x86_64, kernel: {url: x}, commands: *i}\n");
    let started = std::time::Instant::now();
    let r = refused(&app, "application/yaml", bomb).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.message().contains("too large"), "{}", r.message());
}

#[tokio::test]
async fn wrong_content_type() {
    let app = app();
    let r = refused(&app, "text/plain", job_yaml("plain")).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(r.message().contains("application/yaml"), "{}", r.message());
    let r = app
        .call(
            Method::POST,
            "/api/v1/bootjobs",
            Some(USER),
            None,
            job_yaml("none"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn oversized_body() {
    let app = app();
    let doc = job_yaml("big").replace("console=ttyS0", &"a".repeat(2 << 20));
    let r = refused(&app, "application/yaml", doc).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.message().contains("larger than"), "{}", r.message());
}

#[tokio::test]
async fn syntax_errors_unknown_fields_and_wrong_kind() {
    let app = app();
    let r = refused(&app, "application/json", "{\"apiVersion\": ".into()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = refused(
        &app,
        "application/yaml",
        job_yaml("typo").replace("bootArgs", "bootArg"),
    )
    .await;
    assert_eq!(r.field().as_deref(), Some("spec.bootArg"));
    let r = refused(
        &app,
        "application/yaml",
        job_yaml("pod").replace("kind: BootJob", "kind: Pod"),
    )
    .await;
    assert_eq!(r.field().as_deref(), Some("kind"));
    let r = refused(
        &app,
        "application/yaml",
        job_yaml("v").replace("bootfarm.dev/v1alpha1", "bootfarm.dev/v2"),
    )
    .await;
    assert_eq!(r.field().as_deref(), Some("apiVersion"));
    let r = refused(
        &app,
        "application/yaml",
        job_yaml("x").replace("  name: x\n", ""),
    )
    .await;
    assert_eq!(r.field().as_deref(), Some("metadata.name"));
    let r = refused(&app, "application/yaml", job_yaml("Bad_Name")).await;
    assert_eq!(r.field().as_deref(), Some("metadata.name"));
}

#[tokio::test]
async fn duplicate_name_is_a_conflict_and_keeps_the_first() {
    let app = app();
    assert_eq!(
        app.submit_yaml(&job_yaml("dup")).await.status,
        StatusCode::CREATED
    );
    let second = job_yaml("dup").replace("console=ttyS0", "console=ttyS1");
    let r = app.submit_yaml(&second).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.message().contains("dup"), "{}", r.message());
    assert_eq!(app.names().await, ["dup"]);
    let kept = app.get("/api/v1/bootjobs/dup").await.json();
    assert_eq!(kept["spec"]["bootArgs"], "console=ttyS0");
}

#[tokio::test]
async fn submitted_status_is_ignored() {
    let app = app();
    let doc = format!("{}status:\n  phase: Succeeded\n", job_yaml("sneaky"));
    let r = app.submit_yaml(&doc).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["status"]["phase"], "Queued");
}
