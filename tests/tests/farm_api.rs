//! The farm's HTTP contract from outside: tokens, bad submissions, health and metrics.

mod farm_support;

use farm_support::*;

const USER_TOKEN: &str = "blackbox-user-token";

#[test]
fn tokens_guard_the_api_and_the_farm_still_boots() {
    let fx = fixtures();
    let farm = Farm::start(Options {
        tokens: Some(format!("# people\n{USER_TOKEN}\n")),
        ..Options::default()
    });
    // Public endpoints need no token.
    assert_eq!(farm.http("GET", "/healthz", None, None).0, 200);
    assert_eq!(farm.http("GET", "/metrics", None, None).0, 200);
    // The API does.
    assert_eq!(farm.http("GET", "/api/v1/bootjobs", None, None).0, 401);
    assert_eq!(
        farm.http("GET", "/api/v1/bootjobs", Some("nope"), None).0,
        401
    );
    assert_eq!(
        farm.http("GET", "/api/v1/bootjobs", Some(USER_TOKEN), None)
            .0,
        200
    );
    // A user token cannot act as a runner.
    let claim = ("application/json", br#"{"runnerId":"intruder"}"#.as_slice());
    assert_eq!(
        farm.http(
            "POST",
            "/api/v1/runner/claim",
            Some(USER_TOKEN),
            Some(claim)
        )
        .0,
        403
    );
    let out = farm.cli(&["list"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));

    // With the token, a job runs to its verdict: the operator's own runners got their token too.
    let farm = farm.with_token(USER_TOKEN);
    let kernel = url(&fx, "x86_64/kernel");
    let initrd = url(&fx, "x86_64/initrd-poweroff.cpio.gz");
    let out = farm.cli(&[
        "submit",
        "--name",
        "authed",
        "--arch",
        "x86_64",
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--wait",
        "--wait-timeout",
        "240",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", farm.operator_log());
}

#[test]
fn bad_submissions_are_refused_over_the_wire_and_nothing_is_stored() {
    // No boots here: this needs only the binaries.
    let farm = Farm::start(Options::default());
    let good = "apiVersion: bootfarm.dev/v1alpha1\nkind: BootJob\nmetadata:\n  name: ok\nspec:\n  arch: x86_64\n  kernel:\n    url: file:///nonexistent\n";
    let cases: Vec<(String, &str, u16, &str)> = vec![
        (
            good.replace("arch: x86_64", "arch: mips"),
            "application/yaml",
            422,
            "spec.arch",
        ),
        (
            good.replace("  kernel:\n    url: file:///nonexistent\n", ""),
            "application/yaml",
            422,
            "kernel",
        ),
        (
            format!("{good}  timeouts:\n    boot: -1\n"),
            "application/yaml",
            422,
            "spec.timeouts.boot",
        ),
        (
            format!("{good}  bootArgs: {}\n", "x".repeat(1_000_000)),
            "application/yaml",
            422,
            "spec.bootArgs",
        ),
        (good.to_string(), "text/plain", 415, "Content-Type"),
        (
            format!("{good}  bootArgs: {}\n", "x".repeat(2 << 20)),
            "application/yaml",
            413,
            "larger than",
        ),
    ];
    for (body, ct, status, needle) in &cases {
        let (got, resp) = farm.http(
            "POST",
            "/api/v1/bootjobs",
            None,
            Some((ct, body.as_bytes())),
        );
        let text = String::from_utf8_lossy(&resp);
        assert_eq!(got, *status, "{ct} {needle}: {text}");
        assert!(text.contains(needle), "{needle} not in {text}");
    }
    let (status, body) = farm.http("GET", "/api/v1/bootjobs", None, None);
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
    // Metrics count the refusals by route.
    let (_, metrics) = farm.http("GET", "/metrics", None, None);
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains(
            r#"bootfarm_http_requests_total{method="POST",route="/api/v1/bootjobs",status="422"} 4"#
        ),
        "{metrics}"
    );
}
