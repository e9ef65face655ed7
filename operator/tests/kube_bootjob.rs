//! The BootJob reconciler against a scripted API server: the requests it makes, in order.

mod kube_mock;

use bootfarm_core::spec::{BootJobStatus, JobPhase};
use bootfarm_core::Arch;
use bootfarm_operator::kube::bootjob::{self, FINALIZER};
use bootfarm_operator::queue;
use http::{Method, StatusCode};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube_mock::*;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

#[tokio::test]
async fn a_new_bootjob_first_gets_the_cleanup_finalizer() {
    let (client, handle) = mock_client();
    let job = bootjob("j1", Arch::X86_64);
    let stored = with_finalizer(job.clone());
    let server = ApiServer::run(
        handle,
        vec![Exchange::new(Method::PATCH, jobs_path("j1"))
            .body(|b| {
                assert_eq!(b[1]["op"], "add", "{b}");
                assert_eq!(b[1]["path"], "/metadata/finalizers");
                assert_eq!(b[1]["value"], json!([FINALIZER]));
            })
            .reply(StatusCode::OK, serde_json::to_value(&stored).expect("json"))],
    );
    let t = context(client, vec![], vec![]);
    let action = bootjob::reconcile(Arc::new(job), t.ctx.clone())
        .await
        .expect("reconciled");
    assert_eq!(action, Action::await_change());
    server.done().await;
}

#[tokio::test]
async fn a_new_valid_bootjob_is_queued_by_a_conditional_write_of_its_status() {
    let (client, handle) = mock_client();
    let job = with_finalizer(bootjob("j1", Arch::X86_64));
    let object = serde_json::to_value(&job).expect("json");
    let server = ApiServer::run(
        handle,
        vec![
            Exchange::new(Method::PUT, format!("{}/status", jobs_path("j1")))
                .query("fieldManager=bootfarm-operator")
                .body(|b| {
                    assert_eq!(b["apiVersion"], "bootfarm.dev/v1alpha1");
                    assert_eq!(b["kind"], "BootJob");
                    // Conditional: it must not undo a claim made since the job was read.
                    assert_eq!(b["metadata"]["resourceVersion"], "100");
                    let s = &b["status"];
                    assert_eq!(s["phase"], "Queued", "{b}");
                    assert!(s["queuedAt"].is_string());
                    assert_eq!(condition(s, "Valid")["status"], "True");
                    assert_eq!(condition(s, "Queued")["status"], "True");
                    assert_eq!(condition(s, "Queued")["observedGeneration"], 1);
                })
                .patched(object),
            event("Queued"),
        ],
    );
    let t = context(client, vec![], vec![]);
    bootjob::reconcile(Arc::new(job), t.ctx.clone())
        .await
        .expect("reconciled");
    server.done().await;
}

#[tokio::test]
async fn an_invalid_bootjob_ends_in_error_with_a_valid_false_condition_naming_the_field() {
    let (client, handle) = mock_client();
    let mut job = with_finalizer(bootjob("j1", Arch::X86_64));
    job.spec.smp = Some(1000);
    job.spec.timeouts = Some(bootfarm_core::spec::Timeouts {
        boot: Some(0),
        total: None,
    });
    let object = serde_json::to_value(&job).expect("json");
    let server = ApiServer::run(
        handle,
        vec![
            Exchange::new(Method::PUT, format!("{}/status", jobs_path("j1")))
                .query("fieldManager=bootfarm-operator")
                .body(|b| {
                    let s = &b["status"];
                    assert_eq!(s["phase"], "Error", "{b}");
                    let valid = condition(s, "Valid");
                    assert_eq!(valid["status"], "False");
                    assert_eq!(valid["reason"], "InvalidSpec");
                    let msg = valid["message"].as_str().expect("a message");
                    assert!(msg.contains("spec.smp"), "{msg}");
                    assert!(
                        msg.contains("spec.timeouts.boot"),
                        "every problem is named: {msg}"
                    );
                    assert_eq!(condition(s, "Error")["status"], "True");
                    assert!(s["completionTime"].is_string());
                })
                .patched(object),
            event("InvalidSpec"),
        ],
    );
    let t = context(client, vec![], vec![]);
    bootjob::reconcile(Arc::new(job), t.ctx.clone())
        .await
        .expect("an invalid job is not a reconcile error (no crash loop)");
    server.done().await;
}

/// A job claimed ten minutes ago under a 10 s lease nobody renewed.
fn running_since_long_ago() -> bootfarm_core::spec::BootJob {
    let mut job = with_finalizer(bootjob("j1", Arch::X86_64));
    let long_ago = Timestamp::now() - Duration::from_secs(600);
    queue::enqueue(&mut job, long_ago);
    queue::start_attempt(
        &mut job,
        "tcg-x86-64-aaaaa",
        "tcg-x86-64",
        "lease-1",
        Duration::from_secs(10),
        long_ago,
    );
    job
}

#[tokio::test]
async fn a_running_job_whose_lease_expired_is_requeued_by_a_conditional_status_replace() {
    let (client, handle) = mock_client();
    let job = running_since_long_ago();
    let as_read = serde_json::to_value(&job).expect("json");
    let server = ApiServer::run(
        handle,
        vec![
            Exchange::new(Method::GET, jobs_path("j1")).reply(StatusCode::OK, as_read),
            Exchange::new(Method::PUT, format!("{}/status", jobs_path("j1")))
                .query("fieldManager=bootfarm-operator")
                .body(|b| {
                    assert_eq!(b["metadata"]["resourceVersion"], "100", "a precondition");
                    let s = &b["status"];
                    assert_eq!(s["phase"], "Queued", "{b}");
                    assert_eq!(s["attempts"], 1, "the lost attempt stays counted");
                    assert!(s.get("leaseId").is_none() && s.get("runner").is_none());
                    assert_eq!(condition(s, "Running")["reason"], "LeaseExpired");
                })
                .echo(),
            event("LeaseExpired"),
        ],
    );
    let t = context(client, vec![], vec![]);
    bootjob::reconcile(Arc::new(job), t.ctx.clone())
        .await
        .expect("reconciled");
    server.done().await;
    let expired = t
        .registry
        .gather()
        .iter()
        .find(|m| m.name() == "bootfarm_lease_expirations_total")
        .map(|m| m.get_metric()[0].get_counter().get_value());
    assert_eq!(expired, Some(1.0));
}

#[tokio::test]
async fn a_lease_that_ran_out_while_no_operator_ran_gets_a_full_ttl_after_the_restart() {
    let (client, handle) = mock_client();
    let job = running_since_long_ago();
    // No request at all: the runner may still be booting and renew with this operator.
    let server = ApiServer::run(handle, vec![]);
    let ttl = Duration::from_secs(60);
    let t = context_started(client, vec![], vec![], Some((Timestamp::now(), ttl)));
    let action = bootjob::reconcile(Arc::new(job), t.ctx.clone())
        .await
        .expect("reconciled");
    server.done().await;
    assert_ne!(
        action,
        Action::requeue(Duration::from_secs(1)),
        "not expired"
    );
    assert_ne!(
        action,
        Action::await_change(),
        "it comes back when the grace ends"
    );
}

#[tokio::test]
async fn a_finished_job_past_its_ttl_is_deleted_with_a_uid_precondition() {
    let (client, handle) = mock_client();
    let mut job = with_finalizer(bootjob("j1", Arch::X86_64));
    job.spec.ttl_seconds_after_finished = Some(5);
    job.status = Some(BootJobStatus {
        phase: JobPhase::Succeeded,
        completion_time: Some(queue::round_time(
            Timestamp::now() - Duration::from_secs(60),
        )),
        ..BootJobStatus::default()
    });
    let server = ApiServer::run(
        handle,
        vec![Exchange::new(Method::DELETE, jobs_path("j1"))
            .body(|b| assert_eq!(b["preconditions"]["uid"], "uid-j1", "{b}"))
            .reply(
                StatusCode::OK,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            )],
    );
    let t = context(client, vec![], vec![]);
    bootjob::reconcile(Arc::new(job), t.ctx.clone())
        .await
        .expect("reconciled");
    server.done().await;
}

#[tokio::test]
async fn a_finished_job_inside_its_ttl_waits_without_any_request() {
    let (client, handle) = mock_client();
    let mut job = with_finalizer(bootjob("j1", Arch::X86_64));
    job.spec.ttl_seconds_after_finished = Some(3600);
    job.status = Some(BootJobStatus {
        phase: JobPhase::Failed,
        completion_time: Some(queue::round_time(Timestamp::now())),
        ..BootJobStatus::default()
    });
    let server = ApiServer::run(handle, vec![]);
    let t = context(client, vec![], vec![]);
    let action = bootjob::reconcile(Arc::new(job), t.ctx.clone())
        .await
        .expect("reconciled");
    assert_ne!(
        action,
        Action::await_change(),
        "it comes back when the TTL ends"
    );
    server.done().await;
}

#[tokio::test]
async fn a_deleted_bootjob_loses_its_logs_and_then_its_finalizer() {
    let (client, handle) = mock_client();
    let mut job = with_finalizer(bootjob("j1", Arch::X86_64));
    job.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let mut released = job.clone();
    released.metadata.finalizers = None;
    let t = context(client, vec![], vec![]);
    t.ctx.files.append_log("j1", b"console\n").expect("a log");
    let log = t.ctx.files.log_path("j1").expect("a path");
    assert!(log.exists());
    let server = ApiServer::run(
        handle,
        vec![Exchange::new(Method::PATCH, jobs_path("j1"))
            .body(|b| {
                assert_eq!(b[0]["op"], "test", "{b}");
                assert_eq!(b[0]["value"], FINALIZER);
                assert_eq!(b[1]["op"], "remove");
            })
            .reply(
                StatusCode::OK,
                serde_json::to_value(&released).expect("json"),
            )],
    );
    bootjob::reconcile(Arc::new(job), t.ctx.clone())
        .await
        .expect("cleaned up");
    server.done().await;
    assert!(!log.exists(), "the console log is removed with the job");
}

#[tokio::test]
async fn an_admission_that_lost_a_race_is_looked_at_again_at_once() {
    let (client, handle) = mock_client();
    let job = with_finalizer(bootjob("j1", Arch::X86_64));
    let server = ApiServer::run(
        handle,
        vec![
            Exchange::new(Method::PUT, format!("{}/status", jobs_path("j1")))
                .reply(StatusCode::CONFLICT, conflict("j1")),
        ],
    );
    let t = context(client, vec![], vec![]);
    let job = Arc::new(job);
    let err = bootjob::reconcile(job.clone(), t.ctx.clone())
        .await
        .expect_err("the stale write is refused");
    assert!(err.is_conflict(), "{err}");
    let action = bootjob::error_policy(job, &err, t.ctx.clone());
    assert_eq!(action, Action::requeue(Duration::from_secs(1)));
    server.done().await;
}

#[tokio::test]
async fn an_invalid_bootjob_whose_spec_is_fixed_is_admitted_again() {
    let (client, handle) = mock_client();
    let mut job = with_finalizer(bootjob("j1", Arch::X86_64));
    queue::reject_invalid(
        &mut job,
        "spec.smp: 1000 is outside 1..=64",
        Timestamp::now(),
    );
    // `kubectl apply` of the fixed spec: a new generation, the old verdict still in status.
    job.metadata.generation = Some(2);
    let object = serde_json::to_value(&job).expect("json");
    let server = ApiServer::run(
        handle,
        vec![
            Exchange::new(Method::PUT, format!("{}/status", jobs_path("j1")))
                .body(|b| {
                    let s = &b["status"];
                    assert_eq!(s["phase"], "Queued", "{b}");
                    assert_eq!(condition(s, "Valid")["status"], "True");
                    assert_eq!(condition(s, "Valid")["observedGeneration"], 2);
                    assert!(s.get("completionTime").is_none(), "a fresh status: {b}");
                })
                .patched(object),
            event("Queued"),
        ],
    );
    let t = context(client, vec![], vec![]);
    bootjob::reconcile(Arc::new(job), t.ctx.clone())
        .await
        .expect("reconciled");
    server.done().await;
}

#[tokio::test]
async fn an_invalid_bootjob_left_unchanged_is_not_judged_again() {
    let (client, handle) = mock_client();
    let mut job = with_finalizer(bootjob("j1", Arch::X86_64));
    job.spec.smp = Some(1000);
    queue::reject_invalid(
        &mut job,
        "spec.smp: 1000 is outside 1..=64",
        Timestamp::now(),
    );
    let server = ApiServer::run(handle, vec![]);
    let t = context(client, vec![], vec![]);
    bootjob::reconcile(Arc::new(job), t.ctx.clone())
        .await
        .expect("reconciled");
    server.done().await;
}
