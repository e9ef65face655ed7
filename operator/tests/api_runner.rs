//! Runner endpoints: long-poll claims, atomic hand-out, leases, exactly-once completion.

mod api_support;

use api_support::*;
use axum::http::{Method, StatusCode};
use bootfarm_core::result::Verdict;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn claim_waits_then_answers_204_when_there_is_no_work() {
    let app = app();
    let started = Instant::now();
    assert!(app.claim("r1").await.is_none());
    // claim_wait is 300 ms in the test app: it did wait, and not much longer.
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}

#[tokio::test]
async fn a_submission_wakes_a_waiting_claim() {
    let mut app = app();
    app.state.claim_wait = Duration::from_secs(20);
    app.router = bootfarm_operator::api::router(app.state.clone());
    let app = std::sync::Arc::new(app);
    let waiter = {
        let app = app.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            (app.claim("r1").await, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.submit_yaml(&job_yaml("wake")).await.status,
        StatusCode::CREATED
    );
    let (claimed, waited) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the claim returns soon after the submission")
        .unwrap();
    assert_eq!(claimed.unwrap().0, "wake");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}

#[tokio::test]
async fn claim_response_carries_job_lease_attempt_and_ttl() {
    let app = app();
    app.submit_yaml(&job_yaml("shape")).await;
    let r = app
        .runner_post(
            "claim",
            json!({"runnerId": "r1", "pool": "default", "arches": ["x86_64"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["job"]["metadata"]["name"], "shape");
    assert_eq!(v["job"]["spec"]["arch"], "x86_64");
    assert_eq!(v["attempt"], 1);
    assert_eq!(v["leaseTtlSeconds"], 30);
    assert!(!v["leaseId"].as_str().unwrap().is_empty());
    let job = app.get("/api/v1/bootjobs/shape").await.json();
    assert_eq!(job["status"]["phase"], "Running");
    assert_eq!(job["status"]["runner"], "r1");
}

#[tokio::test]
async fn a_runner_only_gets_its_arches() {
    let app = app();
    app.submit_yaml(&job_yaml("x86")).await;
    let r = app
        .runner_post("claim", json!({"runnerId": "r1", "arches": ["arm64"]}))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app
        .runner_post("claim", json!({"runnerId": "r1", "arches": ["mips"]}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.field().as_deref(), Some("arches[0]"), "{}", r.text());
}

#[tokio::test]
async fn two_concurrent_claims_for_one_job_have_one_winner() {
    for round in 0..5 {
        let app = std::sync::Arc::new(app());
        app.submit_yaml(&job_yaml(&format!("only-{round}"))).await;
        let claims: Vec<_> = (0..2)
            .map(|i| {
                let app = app.clone();
                tokio::spawn(async move { app.claim(&format!("r{i}")).await })
            })
            .collect();
        let mut winners = 0;
        for c in claims {
            if c.await.unwrap().is_some() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "round {round}");
        let job = app
            .get(&format!("/api/v1/bootjobs/only-{round}"))
            .await
            .json();
        assert_eq!(job["status"]["attempts"], 1);
    }
}

#[tokio::test]
async fn complete_is_accepted_exactly_once() {
    let app = app();
    app.submit_yaml(&job_yaml("once")).await;
    let (name, lease) = app.claim("r1").await.unwrap();
    let body = json!({"leaseId": lease, "result": result(Verdict::Pass)});
    let first = app
        .runner_post(&format!("jobs/{name}/complete"), body.clone())
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(first.json()["state"], "finished");
    let second = app
        .runner_post(&format!("jobs/{name}/complete"), body)
        .await;
    assert_eq!(second.status, StatusCode::CONFLICT);
    assert!(
        second.message().contains("not current"),
        "{}",
        second.message()
    );
    assert_eq!(app.phase("once").await, "Succeeded");
}

#[tokio::test]
async fn a_stale_lease_cannot_complete_log_or_release() {
    let app = app();
    app.submit_yaml(&job_yaml("stale")).await;
    let (name, old) = app.claim("r1").await.unwrap();
    // The first runner vanishes: its lease expires and the job is requeued for another runner.
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600);
    let expired = app.state.store.expire_leases(later).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert!(expired[0].requeued);
    let (again, new) = app.claim("r2").await.unwrap();
    assert_eq!(again, name);
    assert_ne!(old, new);

    let hb = app
        .runner_post(&format!("jobs/{name}/heartbeat"), json!({"leaseId": old}))
        .await;
    assert_eq!(hb.json()["state"], "lost");
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/runner/jobs/{name}/log?leaseId={old}"),
            Some(RUNNER),
            Some("application/octet-stream"),
            "ghost output\n",
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = app
        .runner_post(
            &format!("jobs/{name}/complete"),
            json!({"leaseId": old, "result": result(Verdict::Fail)}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = app.release(&name, &old, "late").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(app.phase("stale").await, "Running");
    // Only the marker of the new attempt: nothing of the stale runner's.
    let log = app.get("/api/v1/bootjobs/stale/log").await.text();
    assert!(
        log.starts_with("[bootfarm: attempt 2 on runner r2 at ") && log.lines().count() == 1,
        "{log:?}"
    );

    let r = app
        .runner_post(
            &format!("jobs/{name}/complete"),
            json!({"leaseId": new, "result": result(Verdict::Pass)}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let job = app.get("/api/v1/bootjobs/stale").await.json();
    assert_eq!(job["status"]["phase"], "Succeeded");
    assert_eq!(job["status"]["attempts"], 2);
}

#[tokio::test]
async fn heartbeat_extends_an_active_lease() {
    let app = app();
    app.submit_yaml(&job_yaml("beat")).await;
    let (name, lease) = app.claim("r1").await.unwrap();
    let r = app
        .runner_post(&format!("jobs/{name}/heartbeat"), json!({"leaseId": lease}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["state"], "active");
    assert!(r.json()["leaseExpiresAt"].as_str().is_some());
    let r = app
        .runner_post(&format!("jobs/{name}/heartbeat"), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.message().contains("leaseId"), "{}", r.message());
}

#[tokio::test]
async fn release_requeues_then_errors_after_max_attempts() {
    let app = app();
    app.submit_yaml(&job_yaml("flaky").replace("bootArgs: console=ttyS0", "maxAttempts: 2"))
        .await;
    let (name, lease) = app.claim("r1").await.unwrap();
    let r = app.release(&name, &lease, "runner shutting down").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["phase"], "Queued");
    let (_, lease) = app.claim("r2").await.unwrap();
    let r = app.release(&name, &lease, "qemu vanished").await;
    assert_eq!(r.json()["phase"], "Error");
    assert!(app.claim("r3").await.is_none());
    let metrics = app.get("/metrics").await.text();
    assert!(
        metrics.contains(r#"bootfarm_infra_retries_total{pool="default"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_infrastructure_error_result_is_retried_but_a_kernel_failure_is_not() {
    let app = app();
    app.submit_yaml(&job_yaml("infra")).await;
    let (name, lease) = app.claim("r1").await.unwrap();
    let r = app
        .runner_post(
            &format!("jobs/{name}/complete"),
            json!({"leaseId": lease, "result": result(Verdict::Error)}),
        )
        .await;
    assert_eq!(r.json()["state"], "retrying");
    assert_eq!(app.phase("infra").await, "Queued");
    let (_, lease) = app.claim("r1").await.unwrap();
    let r = app
        .runner_post(
            &format!("jobs/{name}/complete"),
            json!({"leaseId": lease, "result": result(Verdict::Fail)}),
        )
        .await;
    assert_eq!(r.json()["state"], "finished");
    assert_eq!(app.phase("infra").await, "Failed");
    assert!(app.claim("r1").await.is_none());
}

#[tokio::test]
async fn a_malformed_result_names_the_field() {
    let app = app();
    app.submit_yaml(&job_yaml("malformed")).await;
    let (name, lease) = app.claim("r1").await.unwrap();
    let mut doc = serde_json::to_value(result(Verdict::Pass)).unwrap();
    doc["result"] = json!("maybe");
    let r = app
        .runner_post(
            &format!("jobs/{name}/complete"),
            json!({"leaseId": lease, "result": doc}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.field().as_deref(), Some("result.result"), "{}", r.text());
    assert_eq!(app.phase("malformed").await, "Running");
}

#[tokio::test]
async fn shutdown_ends_a_waiting_claim_at_once() {
    let mut app = app();
    app.state.claim_wait = Duration::from_secs(20);
    app.router = bootfarm_operator::api::router(app.state.clone());
    let app = std::sync::Arc::new(app);
    let waiter = {
        let app = app.clone();
        tokio::spawn(async move { app.claim("r1").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.state.shutdown.cancel();
    let claimed = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("the long-poll ends with the server")
        .unwrap();
    assert!(claimed.is_none());
}

#[tokio::test]
async fn eight_runners_racing_for_three_jobs_get_three_distinct_ones() {
    let app = std::sync::Arc::new(app());
    for i in 0..3 {
        app.submit_yaml(&job_yaml(&format!("race-{i}"))).await;
    }
    let claims: Vec<_> = (0..8)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move { app.claim(&format!("r{i}")).await })
        })
        .collect();
    let mut won = Vec::new();
    for c in claims {
        if let Some((name, _)) = c.await.unwrap() {
            won.push(name);
        }
    }
    won.sort();
    assert_eq!(won, ["race-0", "race-1", "race-2"]);
}
