//! The BootJob-backed job store against a scripted API server: claims are conditional status
//! writes, and a lost race moves on to the next candidate.

mod kube_mock;

use bootfarm_core::result::ErrorKind;
use bootfarm_core::result::{BootResult, Verdict};
use bootfarm_core::Arch;
use bootfarm_operator::queue;
use bootfarm_operator::store::{ClaimRequest, CompleteOutcome, JobStore, LeaseState};
use http::{Method, StatusCode};
use jiff::Timestamp;
use kube_mock::*;
use serde_json::{json, Value};
use std::time::Duration;

const TTL: Duration = Duration::from_secs(30);

fn queued(name: &str, priority: i32, at: i64) -> Value {
    let mut j = bootjob(name, Arch::X86_64);
    j.spec.priority = priority;
    queue::enqueue(&mut j, t(at));
    serde_json::to_value(j).expect("json")
}

fn request(runner: &str) -> ClaimRequest {
    ClaimRequest {
        runner_id: runner.into(),
        pool: "tcg-x86-64".into(),
        arches: vec![Arch::X86_64],
    }
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS}})
}

#[tokio::test]
async fn a_claim_that_loses_a_race_moves_on_to_the_next_candidate() {
    let (client, handle) = mock_client();
    let server = ApiServer::run(
        handle,
        vec![
            // No LIST: the candidates come from the watch cache.
            Exchange::new(Method::PUT, format!("{}/status", jobs_path("high")))
                .body(|b| {
                    assert_eq!(b["metadata"]["resourceVersion"], "100", "conditional: {b}");
                    assert_eq!(b["status"]["phase"], "Running");
                    assert_eq!(b["status"]["runner"], "tcg-x86-64-aaaaa");
                })
                .reply(StatusCode::CONFLICT, conflict("high")),
            Exchange::new(Method::PUT, format!("{}/status", jobs_path("low")))
                .body(|b| {
                    assert_eq!(b["metadata"]["resourceVersion"], "100");
                    let s = &b["status"];
                    assert_eq!(s["phase"], "Running", "{b}");
                    assert_eq!(s["attempts"], 1);
                    assert_eq!(s["pool"], "tcg-x86-64");
                    assert!(s["leaseId"].is_string() && s["leaseExpiresAt"].is_string());
                })
                .echo(),
            // The winner's pod is protected from autoscalers while it boots.
            Exchange::new(Method::PATCH, format!("{}/tcg-x86-64-aaaaa", pods_path()))
                .body(|b| {
                    let a = &b["metadata"]["annotations"];
                    assert_eq!(a["cluster-autoscaler.kubernetes.io/safe-to-evict"], "false");
                    assert_eq!(a["karpenter.sh/do-not-disrupt"], "true");
                })
                .reply(StatusCode::OK, pod("tcg-x86-64-aaaaa")),
        ],
    );
    // "low" is older but "high" has the higher priority: it is tried first.
    let cached = [queued("low", 0, 0), queued("high", 5, 10)]
        .map(|j| serde_json::from_value(j).expect("a BootJob"))
        .to_vec();
    let t = context(client, cached, vec![]);
    let claim = t
        .ctx
        .store
        .claim(&request("tcg-x86-64-aaaaa"), TTL, Timestamp::now())
        .await
        .expect("no backend error")
        .expect("the second candidate is won");
    assert_eq!(claim.job.metadata.name.as_deref(), Some("low"));
    assert_eq!(claim.attempt, 1);
    assert!(queue::lease_is_current(&claim.job, &claim.lease_id));
    server.done().await;
}

#[tokio::test]
async fn a_claim_with_no_queued_job_it_serves_writes_nothing() {
    let (client, handle) = mock_client();
    let mut arm = bootjob("arm", Arch::Arm64);
    queue::enqueue(&mut arm, t(0));
    // Nothing at all: the cache has no x86_64 job.
    let server = ApiServer::run(handle, vec![]);
    let t = context(client, vec![arm], vec![]);
    let claim = t
        .ctx
        .store
        .claim(&request("tcg-x86-64-aaaaa"), TTL, Timestamp::now())
        .await
        .expect("no backend error");
    assert!(claim.is_none());
    server.done().await;
}

#[tokio::test]
async fn a_heartbeat_for_a_deleted_job_tells_the_runner_to_stop() {
    let (client, handle) = mock_client();
    let server = ApiServer::run(
        handle,
        vec![Exchange::new(Method::GET, jobs_path("gone"))
            .reply(StatusCode::NOT_FOUND, not_found("gone"))],
    );
    let t = context(client, vec![], vec![]);
    let state = t
        .ctx
        .store
        .heartbeat("gone", "lease-1", TTL, Timestamp::now())
        .await
        .expect("no backend error");
    assert_eq!(state, LeaseState::Canceled);
    server.done().await;
}

#[tokio::test]
async fn heartbeats_renew_in_memory_without_any_request() {
    let (client, handle) = mock_client();
    let mut job = bootjob("j", Arch::X86_64);
    queue::enqueue(&mut job, t(0));
    let claimed_at = Timestamp::now() - Duration::from_secs(20);
    queue::start_attempt(&mut job, "r1", "tcg-x86-64", "lease-1", TTL, claimed_at);
    let stored_expiry = job.status.as_ref().and_then(|s| s.lease_expires_at);
    let server = ApiServer::run(handle, vec![]);
    let t = context(client, vec![job.clone()], vec![]);
    let mut last = None;
    for _ in 0..3 {
        let state = t
            .ctx
            .store
            .heartbeat("j", "lease-1", TTL, Timestamp::now())
            .await
            .expect("no backend error");
        let LeaseState::Active { expires_at } = state else {
            panic!("not active: {state:?}");
        };
        last = Some(expires_at);
    }
    let last = last.expect("three heartbeats");
    assert!(
        Some(last) > stored_expiry,
        "renewed beyond the claim's expiry"
    );
    // What the reconciler and any later write see: the live lease, not the stored one.
    let live = t.ctx.store.view().with_live_lease(&job);
    assert_eq!(
        live.status.as_ref().and_then(|s| s.lease_expires_at),
        Some(queue::round_time(last))
    );
    // Another lease's heartbeat is refused and renews nothing.
    let state = t
        .ctx
        .store
        .heartbeat("j", "lease-2", TTL, Timestamp::now())
        .await
        .expect("no backend error");
    assert_eq!(state, LeaseState::Lost);
    server.done().await;
}

#[tokio::test]
async fn a_result_that_races_another_write_is_recorded_on_a_fresh_read() {
    let (client, handle) = mock_client();
    let mut job = bootjob("j", Arch::X86_64);
    queue::enqueue(&mut job, t(0));
    queue::start_attempt(
        &mut job,
        "tcg-x86-64-aaaaa",
        "tcg-x86-64",
        "lease-1",
        TTL,
        Timestamp::now(),
    );
    let first = serde_json::to_value(&job).expect("json");
    let mut newer = first.clone();
    newer["metadata"]["resourceVersion"] = json!("101"); // a heartbeat landed in between
    let server = ApiServer::run(
        handle,
        vec![
            Exchange::new(Method::GET, jobs_path("j")).reply(StatusCode::OK, first),
            Exchange::new(Method::PUT, format!("{}/status", jobs_path("j")))
                .body(|b| assert_eq!(b["metadata"]["resourceVersion"], "100"))
                .reply(StatusCode::CONFLICT, conflict("j")),
            Exchange::new(Method::GET, jobs_path("j")).reply(StatusCode::OK, newer),
            Exchange::new(Method::PUT, format!("{}/status", jobs_path("j")))
                .body(|b| {
                    assert_eq!(b["metadata"]["resourceVersion"], "101");
                    assert_eq!(b["status"]["phase"], "Succeeded", "{b}");
                    assert_eq!(b["status"]["result"]["result"], "pass");
                })
                .echo(),
            // The runner is idle again: evictable.
            Exchange::new(Method::PATCH, format!("{}/tcg-x86-64-aaaaa", pods_path()))
                .body(|b| {
                    let a = &b["metadata"]["annotations"];
                    assert_eq!(a["cluster-autoscaler.kubernetes.io/safe-to-evict"], "true");
                    assert!(a["karpenter.sh/do-not-disrupt"].is_null(), "removed: {b}");
                })
                .reply(StatusCode::OK, pod("tcg-x86-64-aaaaa")),
        ],
    );
    let t = context(client, vec![], vec![]);
    let mut result = BootResult::error(ErrorKind::Internal, "y");
    result.result = Verdict::Pass;
    result.error = None;
    result.reason = "poweroff".into();
    result.summary = "powered off".into();
    let outcome = t
        .ctx
        .store
        .complete("j", "lease-1", &result, Timestamp::now())
        .await
        .expect("no backend error");
    assert!(
        matches!(outcome, CompleteOutcome::Finished(_)),
        "{outcome:?}"
    );
    server.done().await;
}

#[tokio::test]
async fn a_result_for_a_lease_that_is_not_current_changes_nothing() {
    let (client, handle) = mock_client();
    let mut job = bootjob("j", Arch::X86_64);
    queue::enqueue(&mut job, t(0));
    queue::start_attempt(
        &mut job,
        "tcg-x86-64-bbbbb",
        "tcg-x86-64",
        "lease-2",
        TTL,
        Timestamp::now(),
    );
    let server = ApiServer::run(
        handle,
        vec![Exchange::new(Method::GET, jobs_path("j"))
            .reply(StatusCode::OK, serde_json::to_value(&job).expect("json"))],
    );
    let t = context(client, vec![], vec![]);
    let outcome = t
        .ctx
        .store
        .complete(
            "j",
            "lease-1",
            &BootResult::error(ErrorKind::Internal, "y"),
            Timestamp::now(),
        )
        .await
        .expect("no backend error");
    assert!(matches!(outcome, CompleteOutcome::Stale), "{outcome:?}");
    server.done().await;
}

#[tokio::test]
async fn a_runner_being_scaled_down_gets_no_new_work() {
    let (client, handle) = mock_client();
    // Not a single request: the draining runner is answered "no work" at once.
    let server = ApiServer::run(handle, vec![]);
    let t = context(client, vec![], vec![]);
    t.ctx.activity.drain("tcg-x86-64-aaaaa");
    let claim = t
        .ctx
        .store
        .claim(&request("tcg-x86-64-aaaaa"), TTL, Timestamp::now())
        .await
        .expect("no backend error");
    assert!(claim.is_none());
    server.done().await;
}
