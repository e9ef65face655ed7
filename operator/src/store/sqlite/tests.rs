use super::*;
use crate::queue::tests::{job, t};
use bootfarm_core::result::ErrorKind;
use bootfarm_core::result::Verdict;
use std::collections::{BTreeMap, BTreeSet};

const TTL: Duration = Duration::from_secs(5);

fn req(runner: &str) -> ClaimRequest {
    ClaimRequest {
        runner_id: runner.into(),
        pool: "local".into(),
        arches: vec![],
    }
}

fn verdict(v: Verdict) -> BootResult {
    let mut r = BootResult::error(ErrorKind::QemuFailed, "qemu died");
    r.result = v;
    if v != Verdict::Error {
        r.error = None;
        r.reason = "poweroff".into();
    }
    r
}

fn phase_of(j: &BootJob) -> JobPhase {
    queue::phase(j)
}

async fn submit(store: &SqliteStore, name: &str, priority: i32, now: Timestamp) -> BootJob {
    let mut j = job(name);
    j.spec.priority = priority;
    store.create(j, now).await.expect("create")
}

#[tokio::test]
async fn create_assigns_identity_and_queues_and_refuses_a_taken_name() {
    let store = SqliteStore::open_in_memory().unwrap();
    let stored = submit(&store, "a", 0, t(0)).await;
    assert_eq!(phase_of(&stored), JobPhase::Queued);
    assert!(stored.metadata.uid.is_some());
    assert_eq!(stored.metadata.resource_version.as_deref(), Some("1"));
    assert_eq!(
        stored.metadata.creation_timestamp.as_ref().map(|t| t.0),
        Some(t(0))
    );
    let again = store.create(job("a"), t(1)).await;
    assert!(matches!(again, Err(StoreError::AlreadyExists(n)) if n == "a"));

    let mut g = job("");
    g.metadata.name = None;
    g.metadata.generate_name = Some("smoke-".into());
    let made = store.create(g, t(2)).await.unwrap();
    let name = made.metadata.name.unwrap();
    assert!(name.starts_with("smoke-") && name.len() == 11, "{name}");

    // A given name wins over generateName, so taking a generated one is a conflict.
    let mut given = job("smoke-");
    given.metadata.name = Some(name.clone());
    given.metadata.generate_name = Some("smoke-".into());
    assert!(matches!(
        store.create(given, t(2)).await,
        Err(StoreError::AlreadyExists(n)) if n == name
    ));

    let mut bad = job("Bad/Name");
    bad.metadata.generate_name = None;
    assert!(matches!(
        store.create(bad, t(3)).await,
        Err(StoreError::Invalid(_))
    ));
    let mut none = job("");
    none.metadata.name = None;
    assert!(matches!(
        store.create(none, t(3)).await,
        Err(StoreError::Invalid(_))
    ));
}

#[tokio::test]
async fn claims_take_the_highest_priority_then_the_oldest_and_respect_pool_and_arch() {
    let store = SqliteStore::open_in_memory().unwrap();
    submit(&store, "old", 0, t(0)).await;
    submit(&store, "new", 0, t(1)).await;
    submit(&store, "urgent", 5, t(2)).await;
    let mut arm = job("arm");
    arm.spec.arch = Arch::Arm64;
    arm.spec.priority = 100;
    store.create(arm, t(3)).await.unwrap();
    let mut elsewhere = job("elsewhere");
    elsewhere.spec.pool = Some("big".into());
    elsewhere.spec.priority = 100;
    store.create(elsewhere, t(3)).await.unwrap();

    let x86 = ClaimRequest {
        arches: vec![Arch::X86_64],
        ..req("r1")
    };
    let mut order = vec![];
    while let Some(c) = store.claim(&x86, TTL, t(10)).await.unwrap() {
        assert_eq!(c.attempt, 1);
        assert_eq!(c.expires_at, t(15));
        order.push(c.job.metadata.name.unwrap());
    }
    assert_eq!(order, ["urgent", "old", "new"]);
    let any = store.claim(&req("r2"), TTL, t(10)).await.unwrap().unwrap();
    assert_eq!(any.job.metadata.name.as_deref(), Some("arm"));
    assert!(store.claim(&req("r2"), TTL, t(10)).await.unwrap().is_none());
    let big = ClaimRequest {
        pool: "big".into(),
        ..req("r3")
    };
    let c = store.claim(&big, TTL, t(10)).await.unwrap().unwrap();
    assert_eq!(c.job.metadata.name.as_deref(), Some("elsewhere"));
    assert_eq!(c.job.status.unwrap().runner.as_deref(), Some("r3"));
}

#[tokio::test]
async fn concurrent_claims_never_hand_out_a_job_twice() {
    let store = SqliteStore::open_in_memory().unwrap();
    for i in 0..20 {
        submit(&store, &format!("j{i:02}"), 0, t(i)).await;
    }
    let mut tasks = vec![];
    for r in 0..40 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .claim(&req(&format!("r{r}")), TTL, t(100))
                .await
                .unwrap()
        }));
    }
    let mut names = BTreeSet::new();
    let mut claimed = 0;
    for task in tasks {
        if let Some(c) = task.await.unwrap() {
            claimed += 1;
            names.insert(c.job.metadata.name.unwrap());
        }
    }
    assert_eq!(claimed, 20);
    assert_eq!(names.len(), 20);
}

#[tokio::test]
async fn a_result_is_recorded_once_and_a_stale_lease_is_refused() {
    let store = SqliteStore::open_in_memory().unwrap();
    submit(&store, "a", 0, t(0)).await;
    let first = store.claim(&req("r1"), TTL, t(1)).await.unwrap().unwrap();
    // r1 goes silent: its lease expires and the job is requeued.
    assert!(store.expire_leases(t(5)).await.unwrap().is_empty());
    let expired = store.expire_leases(t(7)).await.unwrap();
    assert_eq!(
        expired,
        [Expired {
            name: "a".into(),
            runner: Some("r1".into()),
            attempts: 1,
            requeued: true
        }]
    );
    assert_eq!(
        store
            .heartbeat("a", &first.lease_id, TTL, t(8))
            .await
            .unwrap(),
        LeaseState::Lost
    );
    let second = store.claim(&req("r2"), TTL, t(8)).await.unwrap().unwrap();
    assert_eq!(second.attempt, 2);
    // The first runner wakes up and posts: refused.
    let stale = store
        .complete("a", &first.lease_id, &verdict(Verdict::Fail), t(9))
        .await
        .unwrap();
    assert!(matches!(stale, CompleteOutcome::Stale));
    let done = store
        .complete("a", &second.lease_id, &verdict(Verdict::Pass), t(10))
        .await
        .unwrap();
    let CompleteOutcome::Finished(job) = done else {
        panic!("expected Finished, got {done:?}");
    };
    assert_eq!(phase_of(&job), JobPhase::Succeeded);
    assert_eq!(job.status.as_ref().unwrap().attempts, 2);
    let again = store
        .complete("a", &second.lease_id, &verdict(Verdict::Pass), t(11))
        .await
        .unwrap();
    assert!(matches!(again, CompleteOutcome::Stale));
    let stored = store.get("a").await.unwrap().unwrap();
    assert_eq!(
        stored.metadata.resource_version,
        job.metadata.resource_version
    );
}

#[tokio::test]
async fn infrastructure_errors_retry_until_max_attempts() {
    let store = SqliteStore::open_in_memory().unwrap();
    let mut j = job("a");
    j.spec.max_attempts = Some(2);
    store.create(j, t(0)).await.unwrap();
    let c = store.claim(&req("r1"), TTL, t(1)).await.unwrap().unwrap();
    let out = store
        .complete("a", &c.lease_id, &verdict(Verdict::Error), t(2))
        .await
        .unwrap();
    assert!(matches!(out, CompleteOutcome::Retrying(_)));
    let c = store.claim(&req("r1"), TTL, t(3)).await.unwrap().unwrap();
    store
        .release("a", &c.lease_id, "runner shutting down", t(4))
        .await
        .unwrap();
    let job = store.get("a").await.unwrap().unwrap();
    assert_eq!(phase_of(&job), JobPhase::Error);
    assert!(store.claim(&req("r1"), TTL, t(5)).await.unwrap().is_none());
}

#[tokio::test]
async fn cancel_stops_queued_and_running_jobs_and_leaves_finished_ones() {
    let store = SqliteStore::open_in_memory().unwrap();
    submit(&store, "queued", 0, t(0)).await;
    submit(&store, "running", 1, t(0)).await;
    let c = store.claim(&req("r1"), TTL, t(1)).await.unwrap().unwrap();
    assert_eq!(c.job.metadata.name.as_deref(), Some("running"));
    let q = store.cancel("queued", t(2)).await.unwrap().unwrap();
    assert_eq!(phase_of(&q), JobPhase::Canceled);
    let r = store.cancel("running", t(2)).await.unwrap().unwrap();
    assert_eq!(phase_of(&r), JobPhase::Canceled);
    assert_eq!(
        store
            .heartbeat("running", &c.lease_id, TTL, t(3))
            .await
            .unwrap(),
        LeaseState::Canceled
    );
    let late = store
        .complete("running", &c.lease_id, &verdict(Verdict::Pass), t(4))
        .await
        .unwrap();
    assert!(matches!(late, CompleteOutcome::Stale));
    assert!(store.claim(&req("r2"), TTL, t(5)).await.unwrap().is_none());
    assert!(store.cancel("nope", t(5)).await.unwrap().is_none());
    assert!(
        store.expire_leases(t(100)).await.unwrap().is_empty(),
        "canceled jobs hold no lease"
    );
}

#[tokio::test]
async fn list_filters_by_phase_and_labels_newest_first_with_a_limit() {
    let store = SqliteStore::open_in_memory().unwrap();
    for i in 0..5 {
        let mut j = job(&format!("j{i}"));
        let mut labels = BTreeMap::new();
        labels.insert(
            "suite".to_string(),
            if i % 2 == 0 { "smoke" } else { "full" }.to_string(),
        );
        j.metadata.labels = Some(labels);
        store.create(j, t(i)).await.unwrap();
    }
    store.claim(&req("r"), TTL, t(10)).await.unwrap();
    let names = |jobs: Vec<BootJob>| -> Vec<String> {
        jobs.into_iter().map(|j| j.metadata.name.unwrap()).collect()
    };
    let all = store.list(&JobFilter::default()).await.unwrap();
    assert_eq!(names(all), ["j4", "j3", "j2", "j1", "j0"]);
    let smoke = JobFilter {
        labels: JobFilter::parse_selector("suite=smoke").unwrap(),
        ..Default::default()
    };
    assert_eq!(names(store.list(&smoke).await.unwrap()), ["j4", "j2", "j0"]);
    let queued_smoke = JobFilter {
        phase: Some(JobPhase::Queued),
        limit: Some(1),
        ..smoke
    };
    assert_eq!(names(store.list(&queued_smoke).await.unwrap()), ["j4"]);
    let running = JobFilter {
        phase: Some(JobPhase::Running),
        ..Default::default()
    };
    assert_eq!(names(store.list(&running).await.unwrap()), ["j0"]);
    assert!(JobFilter::parse_selector("novalue").is_err());
}

#[tokio::test]
async fn finished_jobs_expire_after_their_ttl_and_delete_removes_them() {
    let store = SqliteStore::open_in_memory().unwrap();
    let mut j = job("a");
    j.spec.ttl_seconds_after_finished = Some(30);
    store.create(j, t(0)).await.unwrap();
    submit(&store, "keep", 0, t(0)).await;
    store.cancel("a", t(10)).await.unwrap();
    store.cancel("keep", t(10)).await.unwrap();
    assert!(store.finished_before(t(39)).await.unwrap().is_empty());
    assert_eq!(store.finished_before(t(40)).await.unwrap(), ["a"]);
    assert!(store.delete("a").await.unwrap());
    assert!(!store.delete("a").await.unwrap());
    assert!(store.get("a").await.unwrap().is_none());
}

#[tokio::test]
async fn counts_group_queued_jobs_by_pool_and_arch_and_running_by_runner() {
    let store = SqliteStore::open_in_memory().unwrap();
    submit(&store, "a", 0, t(0)).await;
    submit(&store, "b", 0, t(1)).await;
    let mut arm = job("c");
    arm.spec.arch = Arch::Arm64;
    arm.spec.pool = Some("arm".into());
    store.create(arm, t(2)).await.unwrap();
    store.claim(&req("r1"), TTL, t(3)).await.unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.by_phase.get(&JobPhase::Queued), Some(&2));
    assert_eq!(counts.by_phase.get(&JobPhase::Running), Some(&1));
    assert_eq!(
        counts.queued,
        [
            QueuedCount {
                pool: None,
                arch: Arch::X86_64,
                count: 1
            },
            QueuedCount {
                pool: Some("arm".into()),
                arch: Arch::Arm64,
                count: 1
            },
        ]
    );
    assert_eq!(counts.running.get("a").map(String::as_str), Some("r1"));
}

#[tokio::test]
async fn a_reopened_database_keeps_every_job_and_requeues_running_ones() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        submit(&store, "queued", 0, t(0)).await;
        submit(&store, "running", 1, t(0)).await;
        submit(&store, "done", 2, t(0)).await;
        let c = store.claim(&req("r1"), TTL, t(1)).await.unwrap().unwrap();
        store
            .complete("done", &c.lease_id, &verdict(Verdict::Pass), t(2))
            .await
            .unwrap();
        store.claim(&req("r2"), TTL, t(3)).await.unwrap().unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    let requeued = store.requeue_running(t(4)).await.unwrap();
    assert_eq!(requeued.len(), 1);
    assert_eq!(requeued[0].name, "running");
    assert!(requeued[0].requeued);
    let phases: BTreeMap<String, JobPhase> = store
        .list(&JobFilter::default())
        .await
        .unwrap()
        .iter()
        .map(|j| (j.metadata.name.clone().unwrap(), phase_of(j)))
        .collect();
    assert_eq!(phases["queued"], JobPhase::Queued);
    assert_eq!(phases["running"], JobPhase::Queued);
    assert_eq!(phases["done"], JobPhase::Succeeded);
    // The running job keeps its place: priority 1 beats the older priority-0 job.
    let c = store.claim(&req("r3"), TTL, t(5)).await.unwrap().unwrap();
    assert_eq!(c.job.metadata.name.as_deref(), Some("running"));
    assert_eq!(c.attempt, 2);
}

#[tokio::test]
async fn jobs_for_a_pool_nobody_serves_end_in_error_with_the_reason() {
    let store = SqliteStore::open_in_memory().unwrap();
    submit(&store, "mine", 0, t(0)).await;
    let mut other = job("other");
    other.spec.pool = Some("gpu".into());
    store.create(other, t(0)).await.unwrap();
    let mut local = job("local");
    local.spec.pool = Some("local".into());
    store.create(local, t(0)).await.unwrap();
    assert_eq!(
        store.reject_other_pools("local", t(1)).await.unwrap(),
        ["other"]
    );
    let other = store.get("other").await.unwrap().unwrap();
    assert_eq!(phase_of(&other), JobPhase::Error);
    let valid = queue::condition(&other, queue::condition::VALID).unwrap();
    assert!(valid.message.contains("\"gpu\""), "{}", valid.message);
    assert_eq!(
        phase_of(&store.get("local").await.unwrap().unwrap()),
        JobPhase::Queued
    );
    assert_eq!(
        phase_of(&store.get("mine").await.unwrap().unwrap()),
        JobPhase::Queued
    );
}
