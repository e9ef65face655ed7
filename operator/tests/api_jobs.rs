//! User endpoints end to end through the router: submit, get, list, cancel, log, result.

mod api_support;

use api_support::*;
use axum::body::Body;
use axum::http::{Method, StatusCode};
use bootfarm_core::result::Verdict;
use serde_json::json;

#[tokio::test]
async fn submit_stores_a_queued_job_and_returns_it() {
    let app = app();
    let r = app.submit_yaml(&job_yaml("first")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.headers["location"], "/api/v1/bootjobs/first");
    let v = r.json();
    assert_eq!(v["apiVersion"], "bootfarm.dev/v1alpha1");
    assert_eq!(v["kind"], "BootJob");
    assert_eq!(v["metadata"]["name"], "first");
    assert_eq!(v["status"]["phase"], "Queued");
    assert_eq!(v["spec"]["bootArgs"], "console=ttyS0");

    let got = app.get("/api/v1/bootjobs/first").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json()["spec"], v["spec"]);
}

#[tokio::test]
async fn json_submission_and_generate_name_work() {
    let app = app();
    let doc = json!({
        "apiVersion": "bootfarm.dev/v1alpha1",
        "kind": "BootJob",
        "metadata": {"generateName": "smoke-"},
        "spec": {"arch": "arm64", "kernel": {"url": "https://artifacts.example/k"}}
    });
    let r = app
        .call(
            Method::POST,
            "/api/v1/bootjobs",
            Some(USER),
            Some("application/json"),
            doc.to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let name = r.json()["metadata"]["name"].as_str().unwrap().to_string();
    assert!(
        name.starts_with("smoke-") && name.len() > "smoke-".len(),
        "{name}"
    );
    assert_eq!(app.names().await, vec![name]);
}

#[tokio::test]
async fn list_filters_by_phase_and_label() {
    let app = app();
    app.submit_yaml(&job_yaml("a")).await;
    app.submit_yaml(&job_yaml("b").replace("team: kernel", "team: other"))
        .await;
    app.submit_yaml(&job_yaml("c")).await;
    let r = app
        .call(
            Method::DELETE,
            "/api/v1/bootjobs/c",
            Some(USER),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);

    let names = |r: Resp| -> Vec<String> {
        let mut v: Vec<String> = r.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(app.get("/api/v1/bootjobs?phase=Queued").await),
        ["a", "b"]
    );
    assert_eq!(
        names(app.get("/api/v1/bootjobs?phase=Canceled").await),
        ["c"]
    );
    assert_eq!(
        names(
            app.get("/api/v1/bootjobs?labelSelector=team%3Dkernel")
                .await
        ),
        ["a", "c"]
    );
    assert_eq!(
        names(
            app.get("/api/v1/bootjobs?phase=Queued&labelSelector=team=kernel")
                .await
        ),
        ["a"]
    );
    let bad = app.get("/api/v1/bootjobs?phase=Sleeping").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.field().as_deref(), Some("phase"));
    let bad = app.get("/api/v1/bootjobs?labelSelector=novalue").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.field().as_deref(), Some("labelSelector"));
}

#[tokio::test]
async fn lists_are_paged_newest_first_and_say_when_they_were_cut() {
    let app = app();
    for name in ["p1", "p2", "p3"] {
        app.submit_yaml(&job_yaml(name)).await;
    }
    let page = app.get("/api/v1/bootjobs?limit=2").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    let v = page.json();
    assert_eq!(v["items"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["metadata"]["truncated"], true, "{v}");
    assert_eq!(v["metadata"]["limit"], 2);
    // Without a limit: the default page, here everything.
    let all = app.get("/api/v1/bootjobs").await.json();
    assert_eq!(all["items"].as_array().unwrap().len(), 3, "{all}");
    assert_eq!(all["metadata"]["truncated"], false);
    assert_eq!(all["metadata"]["limit"], 500);
    for bad in ["0", "5001", "-1", "many"] {
        let r = app.get(&format!("/api/v1/bootjobs?limit={bad}")).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "limit={bad}: {}",
            r.text()
        );
    }
    let r = app.get("/api/v1/bootjobs?limit=5001").await;
    assert_eq!(r.field().as_deref(), Some("limit"));
}

#[tokio::test]
async fn unknown_jobs_and_routes_are_json_404s() {
    let app = app();
    for uri in [
        "/api/v1/bootjobs/nope",
        "/api/v1/bootjobs/nope/log",
        "/api/v1/bootjobs/nope/result",
        "/api/v1/nothing-here",
    ] {
        let r = app.get(uri).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
        assert!(!r.message().is_empty(), "{uri}: {}", r.text());
    }
    let r = app
        .call(
            Method::DELETE,
            "/api/v1/bootjobs/nope",
            Some(USER),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405() {
    let app = app();
    let r = app
        .call(
            Method::PUT,
            "/api/v1/bootjobs",
            Some(USER),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.message().contains("method not allowed"), "{}", r.text());
}

#[tokio::test]
async fn cancel_returns_the_canceled_job_and_stops_a_running_one() {
    let app = app();
    app.submit_yaml(&job_yaml("busy")).await;
    let (name, lease) = app.claim("r1").await.unwrap();
    let r = app
        .call(
            Method::DELETE,
            "/api/v1/bootjobs/busy",
            Some(USER),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"]["phase"], "Canceled");
    let hb = app
        .runner_post(&format!("jobs/{name}/heartbeat"), json!({"leaseId": lease}))
        .await;
    assert_eq!(hb.json()["state"], "canceled");
    // Canceling again is harmless and answers the same object.
    let again = app
        .call(
            Method::DELETE,
            "/api/v1/bootjobs/busy",
            Some(USER),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["status"]["phase"], "Canceled");
    // Counted once as a finished job with result "canceled".
    let metrics = app.get("/metrics").await.text();
    assert!(
        metrics.contains(r#"bootfarm_jobs_finished_total{arch="x86_64",result="canceled"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn log_and_result_appear_as_the_runner_posts_them() {
    let app = app();
    app.submit_yaml(&job_yaml("logged")).await;
    let (name, lease) = app.claim("r1").await.unwrap();
    let empty = app.get("/api/v1/bootjobs/logged/log").await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.text(), "");
    assert!(empty.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let no_result = app.get("/api/v1/bootjobs/logged/result").await;
    assert_eq!(no_result.status, StatusCode::NOT_FOUND);
    assert!(
        no_result.message().contains("no result yet"),
        "{}",
        no_result.text()
    );

    for chunk in ["Linux version 6.1\n", "bootfarm: userspace up\n"] {
        let r = app
            .call(
                Method::POST,
                &format!("/api/v1/runner/jobs/{name}/log?leaseId={lease}"),
                Some(RUNNER),
                Some("application/octet-stream"),
                chunk.to_string(),
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    }
    assert_eq!(
        app.get("/api/v1/bootjobs/logged/log").await.text(),
        "Linux version 6.1\nbootfarm: userspace up\n"
    );
    let done = app
        .runner_post(
            &format!("jobs/{name}/complete"),
            json!({"leaseId": lease, "result": result(Verdict::Pass)}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    assert_eq!(app.phase("logged").await, "Succeeded");
    let res = app.get("/api/v1/bootjobs/logged/result").await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.json()["result"], "pass");
    assert_eq!(res.json()["schema"], "bootfarm.result/v1");
    let job = app.get("/api/v1/bootjobs/logged").await.json();
    assert_eq!(job["status"]["result"]["result"], "pass");
}

#[tokio::test]
async fn follow_streams_new_bytes_until_the_job_finishes() {
    let app = app();
    app.submit_yaml(&job_yaml("followed")).await;
    let (name, lease) = app.claim("r1").await.unwrap();
    let append = |text: &'static str| {
        let (app_router, name, lease) = (app.router.clone(), name.clone(), lease.clone());
        async move {
            use tower::ServiceExt;
            let req = axum::http::Request::post(format!(
                "/api/v1/runner/jobs/{name}/log?leaseId={lease}"
            ))
            .body(Body::from(text))
            .unwrap();
            let r = app_router.oneshot(req).await.unwrap();
            assert_eq!(r.status(), StatusCode::NO_CONTENT);
        }
    };
    append("early\n").await;
    let follower = {
        let router = app.router.clone();
        tokio::spawn(async move {
            use http_body_util::BodyExt;
            use tower::ServiceExt;
            let req = axum::http::Request::get("/api/v1/bootjobs/followed/log?follow=true")
                .body(Body::empty())
                .unwrap();
            let resp = router.oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            resp.into_body().collect().await.unwrap().to_bytes()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!follower.is_finished(), "follow ended while the job runs");
    append("late\n").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let done = app
        .runner_post(
            &format!("jobs/{name}/complete"),
            json!({"leaseId": lease, "result": result(Verdict::Fail)}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK);
    let body = tokio::time::timeout(std::time::Duration::from_secs(5), follower)
        .await
        .expect("follow ends once the job is finished")
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&body), "early\nlate\n");
    assert_eq!(app.phase("followed").await, "Failed");
}

/// The web UI's console resumes a follow where it stopped (`Range: bytes=LEN-`): while the job
/// runs that waits for the next bytes (not a 416); once the job has ended it is a 204, nothing more.
#[tokio::test]
async fn a_follow_resumes_at_the_end_of_the_log() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let app = app();
    app.submit_yaml(&job_yaml("resumed")).await;
    let (name, lease) = app.claim("r1").await.unwrap();
    let append = |text: &'static str| {
        let (router, name, lease) = (app.router.clone(), name.clone(), lease.clone());
        async move {
            let req = axum::http::Request::post(format!(
                "/api/v1/runner/jobs/{name}/log?leaseId={lease}"
            ))
            .body(Body::from(text))
            .unwrap();
            assert_eq!(
                router.oneshot(req).await.unwrap().status(),
                StatusCode::NO_CONTENT
            );
        }
    };
    let follow_from = |at: usize| {
        axum::http::Request::get("/api/v1/bootjobs/resumed/log?follow=true")
            .header("range", format!("bytes={at}-"))
            .body(Body::empty())
            .unwrap()
    };
    append("first\n").await;
    let follower = {
        let (router, req) = (app.router.clone(), follow_from(6));
        tokio::spawn(async move {
            let resp = router.oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            resp.into_body().collect().await.unwrap().to_bytes()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    append("second\n").await;
    let done = app
        .runner_post(
            &format!("jobs/{name}/complete"),
            json!({"leaseId": lease, "result": result(Verdict::Pass)}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK);
    let body = tokio::time::timeout(std::time::Duration::from_secs(5), follower)
        .await
        .expect("the follow ends with the job")
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&body), "second\n");
    let at_end = app.router.clone().oneshot(follow_from(13)).await.unwrap();
    assert_eq!(at_end.status(), StatusCode::NO_CONTENT);
    // Past the end too: a follower's count may include markers the stored log does not hold.
    let past_end = app.router.clone().oneshot(follow_from(14)).await.unwrap();
    assert_eq!(past_end.status(), StatusCode::NO_CONTENT);
}

/// A client that saw the verdict in the status and asks for the document at once gets it, even
/// while the document is still being put in place (the status is written first).
#[tokio::test]
async fn a_recorded_verdict_waits_for_its_document_instead_of_a_404() {
    let app = app();
    app.finish("racy", Verdict::Pass).await;
    // Take the document away, as if its rename had not happened yet; put it back a little later.
    let doc = app
        .state
        .files
        .read_result("racy")
        .unwrap()
        .expect("stored");
    std::fs::remove_file(app.state.files.result_path("racy").unwrap()).unwrap();
    let files = app.state.files.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        files.write_result("racy", &doc).unwrap();
    });
    let res = app.get("/api/v1/bootjobs/racy/result").await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(res.json()["result"], "pass");
    writer.await.unwrap();
}

#[tokio::test]
async fn the_result_is_served_as_junit_once_there_is_one() {
    let app = app();
    app.finish("junit-job", Verdict::Fail).await;
    app.submit_yaml(&job_yaml("junit-waiting")).await;
    let none = app.get("/api/v1/bootjobs/junit-waiting/junit").await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    assert!(none.message().contains("no result yet"), "{}", none.text());
    let r = app.get("/api/v1/bootjobs/junit-job/junit").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/xml"));
    let report = quick_junit::Report::deserialize_from_str(&r.text()).expect("JUnit XML");
    let suite = &report.test_suites[0];
    assert_eq!(suite.name.as_str(), "junit-job");
    assert_eq!(suite.test_cases[0].name.as_str(), "boot");
    assert!(suite.failures >= 1, "a failed boot is a failed case");
}

#[tokio::test]
async fn a_finished_boot_is_served_as_a_reproducer_script() {
    let app = app();
    let mut r = api_support::result(Verdict::Fail);
    r.qemu = Some(bootfarm_core::result::QemuInfo {
        version: None,
        argv: [
            "/usr/bin/qemu-system-x86_64",
            "-S",
            "-kernel",
            "/cache/k",
            "-append",
            "console=ttyS0",
        ]
        .map(String::from)
        .to_vec(),
        kernel: None,
        early_initramfs: None,
    });
    r.artifacts.insert(
        "kernel".into(),
        bootfarm_core::result::ArtifactInfo {
            source: "https://example.org/bzImage".into(),
            sha256: "b".repeat(64),
            size: 1,
            path: None,
        },
    );
    app.finish_with("repro", r).await;
    let script = app.get("/api/v1/bootjobs/repro/reproducer").await;
    assert_eq!(script.status, StatusCode::OK, "{}", script.text());
    assert!(script.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/x-shellscript"));
    let text = script.text();
    assert!(
        text.starts_with("#!/bin/sh\n# Reproduces bootfarm boot repro\n"),
        "{text}"
    );
    assert!(text.contains(&format!(
        "fetch kernel https://example.org/bzImage {}",
        "b".repeat(64)
    )));
    assert!(text.contains("-kernel \"$WORK/kernel.boot\""), "{text}");
    // A boot that never started QEMU has nothing to reproduce.
    app.finish("no-qemu", Verdict::Fail).await;
    let none = app.get("/api/v1/bootjobs/no-qemu/reproducer").await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    assert!(
        none.message().contains("before QEMU started"),
        "{}",
        none.text()
    );
}

#[tokio::test]
async fn the_result_is_served_in_tuxruns_shape_on_request() {
    let app = app();
    app.finish("tux", Verdict::Pass).await;
    let ours = app.get("/api/v1/bootjobs/tux/results.json").await;
    assert_eq!(ours.status, StatusCode::OK);
    assert_eq!(ours.json()["schema"], "bootfarm.result/v1");
    let tux = app
        .get("/api/v1/bootjobs/tux/results.json?format=tuxrun")
        .await;
    assert_eq!(tux.status, StatusCode::OK, "{}", tux.text());
    let doc = tux.json();
    assert_eq!(doc["lava"]["job"]["result"], "pass");
    assert_eq!(doc["lava"]["login-action"]["result"], "pass");
    let bad = app
        .get("/api/v1/bootjobs/tux/results.json?format=squad")
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.field().as_deref(), Some("format"));
}
