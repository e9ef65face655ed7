//! The RunnerPool reconciler against a scripted API server: pod creation with owner and spec,
//! deletion with a uid precondition, eviction annotations, status by server-side apply.

mod kube_mock;

use bootfarm_core::spec::{BootJob, RunnerPool};
use bootfarm_core::Arch;
use bootfarm_operator::kube::pool;
use bootfarm_operator::queue;
use http::{Method, StatusCode};
use jiff::Timestamp;
use kube_mock::*;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

fn pod_list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items})
}

/// A runner pod of `pool`, Running since long ago.
fn runner_pod(pool: &RunnerPool, name: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": NS, "uid": format!("uid-{name}"),
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"bootfarm.dev/pool": pool.metadata.name, "app.kubernetes.io/component": "runner"},
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": "bootfarm.dev/v1alpha1", "kind": "RunnerPool",
                                 "name": pool.metadata.name, "uid": pool.metadata.uid, "controller": true}]
        },
        "spec": {"containers": [{"name": "runner", "image": "bootfarm/runner:test"}]},
        "status": {"phase": "Running"}
    })
}

fn queued(name: &str, arch: Arch) -> BootJob {
    let mut j = bootjob(name, arch);
    queue::enqueue(&mut j, Timestamp::now());
    j
}

fn list_pods(pool: &str, items: Vec<Value>) -> Exchange {
    Exchange::new(Method::GET, pods_path())
        .query(&format!("labelSelector=bootfarm.dev%2Fpool%3D{pool}"))
        .reply(StatusCode::OK, pod_list(items))
}

fn status_patch(pool: &RunnerPool, check: impl FnOnce(&Value) + Send + 'static) -> Exchange {
    let name = pool.metadata.name.clone().unwrap_or_default();
    Exchange::new(
        Method::PATCH,
        format!("/apis/bootfarm.dev/v1alpha1/namespaces/{NS}/runnerpools/{name}/status"),
    )
    .query("fieldManager=bootfarm-operator")
    .query("force=true")
    .body(check)
    .patched(serde_json::to_value(pool).expect("json"))
}

fn expect_runner_pod_creation(names: Arc<std::sync::Mutex<Vec<String>>>) -> Exchange {
    Exchange::new(Method::POST, pods_path())
        .body(move |p| {
            let name = p["metadata"]["name"].as_str().expect("a name").to_string();
            assert!(name.starts_with("tcg-x86-64-"), "{name}");
            assert_eq!(p["metadata"]["namespace"], NS);
            assert_eq!(p["metadata"]["labels"]["bootfarm.dev/pool"], "tcg-x86-64");
            assert_eq!(
                p["metadata"]["labels"]["app.kubernetes.io/component"],
                "runner"
            );
            let owner = &p["metadata"]["ownerReferences"][0];
            assert_eq!(owner["kind"], "RunnerPool");
            assert_eq!(owner["name"], "tcg-x86-64");
            assert_eq!(owner["uid"], "uid-tcg-x86-64");
            assert_eq!(owner["controller"], true);
            let c = &p["spec"]["containers"][0];
            let args: Vec<&str> = c["args"]
                .as_array()
                .expect("args")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let after = |flag: &str| {
                args.iter()
                    .position(|a| *a == flag)
                    .and_then(|i| args.get(i + 1))
                    .copied()
            };
            assert_eq!(args[0], "work");
            assert_eq!(after("--server"), Some("http://bootfarm.testns.svc:8080"));
            assert_eq!(after("--pool"), Some("tcg-x86-64"));
            assert_eq!(
                after("--runner-id"),
                Some(name.as_str()),
                "the runner id is the pod name"
            );
            assert_eq!(after("--arches"), Some("x86_64"));
            assert!(
                after("--token-file").is_none(),
                "no token file QEMU could read"
            );
            assert_eq!(c["securityContext"]["runAsNonRoot"], true);
            assert_eq!(c["securityContext"]["privileged"], false);
            assert_eq!(p["spec"]["restartPolicy"], "Never");
            let env = c["env"].as_array().expect("env");
            assert!(
                env.iter().any(|e| e["name"] == "BOOTFARM_TOKEN"
                    && e["valueFrom"]["secretKeyRef"]["key"] == "token"),
                "the runner token comes from its Secret in the environment: {env:?}"
            );
            assert!(
                env.iter().any(|e| e["name"] == "BOOTFARM_RUNNER_CREATED_AT"
                    && e["value"]
                        .as_str()
                        .is_some_and(|v| v.parse::<Timestamp>().is_ok())),
                "the runner reports its start-up time from this: {env:?}"
            );
            let no_kvm = p["spec"]["volumes"]
                .as_array()
                .is_none_or(|vs| vs.iter().all(|v| v.get("hostPath").is_none()));
            assert!(no_kvm, "a TCG pool mounts nothing from the host");
            names.lock().expect("lock").push(name);
        })
        .echo()
}

#[tokio::test]
async fn a_pool_with_two_queued_jobs_and_no_runners_creates_two_runner_pods() {
    let (client, handle) = mock_client();
    let pool = runnerpool("tcg-x86-64", Arch::X86_64);
    let jobs = vec![
        queued("a", Arch::X86_64),
        queued("b", Arch::X86_64),
        // Another pool's demand is not this pool's.
        queued("c", Arch::Arm64),
    ];
    let pools = vec![pool.clone(), runnerpool("tcg-arm64", Arch::Arm64)];
    let names = Arc::new(std::sync::Mutex::new(Vec::new()));
    let server = ApiServer::run(
        handle,
        vec![
            list_pods("tcg-x86-64", vec![]),
            event("ScaledUp"),
            expect_runner_pod_creation(names.clone()),
            expect_runner_pod_creation(names.clone()),
            status_patch(&pool, |b| {
                assert_eq!(b["kind"], "RunnerPool");
                assert_eq!(b["status"]["desired"], 2, "{b}");
                assert_eq!(b["status"]["queued"], 2);
            }),
        ],
    );
    let t = context(client, jobs, pools);
    pool::reconcile(Arc::new(pool), t.ctx.clone())
        .await
        .expect("reconciled");
    server.done().await;
    let names = names.lock().expect("lock");
    assert_ne!(names[0], names[1], "each runner pod has its own name");
}

#[tokio::test]
async fn pods_still_starting_count_as_supply_so_nothing_more_is_created() {
    let (client, handle) = mock_client();
    let mut pool = runnerpool("tcg-x86-64", Arch::X86_64);
    pool.status = Some(bootfarm_core::spec::RunnerPoolStatus {
        desired: 1,
        pending: 1,
        idle: 0,
        busy: 0,
        queued: 1,
        conditions: vec![],
    });
    let mut pending = runner_pod(&pool, "tcg-x86-64-aaaaa", json!({}));
    pending["status"]["phase"] = json!("Pending");
    pending["metadata"]["creationTimestamp"] = json!(queue::fmt_time(Timestamp::now()));
    let server = ApiServer::run(handle, vec![list_pods("tcg-x86-64", vec![pending])]);
    let t = context(client, vec![queued("a", Arch::X86_64)], vec![pool.clone()]);
    pool::reconcile(Arc::new(pool), t.ctx.clone())
        .await
        .expect("reconciled");
    server.done().await;
}

#[tokio::test]
async fn an_idle_runner_past_its_idle_timeout_is_deleted_with_a_uid_precondition() {
    let (client, handle) = mock_client();
    let pool = runnerpool("tcg-x86-64", Arch::X86_64);
    let pod = runner_pod(
        &pool,
        "tcg-x86-64-aaaaa",
        json!({"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"}),
    );
    let server = ApiServer::run(
        handle,
        vec![
            list_pods("tcg-x86-64", vec![pod]),
            event("ScaledDown"),
            Exchange::new(Method::DELETE, format!("{}/tcg-x86-64-aaaaa", pods_path()))
                .body(|b| assert_eq!(b["preconditions"]["uid"], "uid-tcg-x86-64-aaaaa", "{b}"))
                .reply(
                    StatusCode::OK,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                ),
            status_patch(&pool, |b| assert_eq!(b["status"]["desired"], 0, "{b}")),
        ],
    );
    let t = context(client, vec![], vec![pool.clone()]);
    // It polled for work long ago and has had none since.
    let idle_since = Timestamp::now() - Duration::from_secs(120);
    t.ctx.activity.polled("tcg-x86-64-aaaaa", idle_since);
    pool::reconcile(Arc::new(pool), t.ctx.clone())
        .await
        .expect("reconciled");
    server.done().await;
}

#[tokio::test]
async fn an_idle_runner_inside_its_idle_timeout_is_kept() {
    let (client, handle) = mock_client();
    let pool = runnerpool("tcg-x86-64", Arch::X86_64);
    let pod = runner_pod(
        &pool,
        "tcg-x86-64-aaaaa",
        json!({"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"}),
    );
    let server = ApiServer::run(
        handle,
        vec![
            list_pods("tcg-x86-64", vec![pod]),
            status_patch(&pool, |b| assert_eq!(b["status"]["idle"], 1, "{b}")),
        ],
    );
    let t = context(client, vec![], vec![pool.clone()]);
    t.ctx.activity.polled(
        "tcg-x86-64-aaaaa",
        Timestamp::now() - Duration::from_secs(10),
    );
    pool::reconcile(Arc::new(pool), t.ctx.clone())
        .await
        .expect("reconciled");
    server.done().await;
}

#[tokio::test]
async fn a_busy_runner_is_never_deleted_and_is_marked_not_evictable() {
    let (client, handle) = mock_client();
    let pool = runnerpool("tcg-x86-64", Arch::X86_64);
    let pod = runner_pod(&pool, "tcg-x86-64-aaaaa", json!({}));
    let mut running = queued("a", Arch::X86_64);
    let long_ago = Timestamp::now() - Duration::from_secs(3600);
    queue::start_attempt(
        &mut running,
        "tcg-x86-64-aaaaa",
        "tcg-x86-64",
        "lease-1",
        Duration::from_secs(3600 * 2),
        long_ago,
    );
    let server = ApiServer::run(
        handle,
        vec![
            list_pods("tcg-x86-64", vec![pod]),
            Exchange::new(Method::PATCH, format!("{}/tcg-x86-64-aaaaa", pods_path()))
                .body(|b| {
                    let a = &b["metadata"]["annotations"];
                    assert_eq!(
                        a["cluster-autoscaler.kubernetes.io/safe-to-evict"], "false",
                        "{b}"
                    );
                    assert_eq!(a["karpenter.sh/do-not-disrupt"], "true");
                })
                .reply(
                    StatusCode::OK,
                    runner_pod(&pool, "tcg-x86-64-aaaaa", json!({})),
                ),
            status_patch(&pool, |b| {
                assert_eq!(b["status"]["busy"], 1, "{b}");
                assert_eq!(b["status"]["desired"], 1);
            }),
        ],
    );
    let t = context(client, vec![running], vec![pool.clone()]);
    t.ctx.activity.polled("tcg-x86-64-aaaaa", long_ago);
    pool::reconcile(Arc::new(pool), t.ctx.clone())
        .await
        .expect("reconciled");
    server.done().await;
}

#[tokio::test]
async fn a_failed_runner_pod_is_deleted_and_replaced() {
    let (client, handle) = mock_client();
    let pool = runnerpool("tcg-x86-64", Arch::X86_64);
    let mut failed = runner_pod(&pool, "tcg-x86-64-aaaaa", json!({}));
    failed["status"]["phase"] = json!("Failed");
    let names = Arc::new(std::sync::Mutex::new(Vec::new()));
    let server = ApiServer::run(
        handle,
        vec![
            list_pods("tcg-x86-64", vec![failed]),
            event("ScaledUp"),
            event("ScaledDown"),
            expect_runner_pod_creation(names.clone()),
            Exchange::new(Method::DELETE, format!("{}/tcg-x86-64-aaaaa", pods_path()))
                .body(|b| assert_eq!(b["preconditions"]["uid"], "uid-tcg-x86-64-aaaaa"))
                .reply(
                    StatusCode::OK,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                ),
            status_patch(&pool, |_| {}),
        ],
    );
    let t = context(client, vec![queued("a", Arch::X86_64)], vec![pool.clone()]);
    pool::reconcile(Arc::new(pool), t.ctx.clone())
        .await
        .expect("reconciled");
    server.done().await;
}

#[test]
fn queued_jobs_count_against_their_named_pool_or_the_first_pool_serving_their_arch() {
    let pools: Vec<Arc<RunnerPool>> = vec![
        Arc::new(runnerpool("tcg-x86-64", Arch::X86_64)),
        Arc::new(runnerpool("tcg-arm64", Arch::Arm64)),
        Arc::new(runnerpool("big-x86-64", Arch::X86_64)),
    ];
    let job = queued("a", Arch::X86_64);
    assert_eq!(pool::assigned_pool(&job, &pools), Some("big-x86-64"));
    let mut pinned = queued("b", Arch::X86_64);
    pinned.spec.pool = Some("tcg-x86-64".into());
    assert_eq!(pool::assigned_pool(&pinned, &pools), Some("tcg-x86-64"));
    let riscv = queued("c", Arch::Riscv64);
    assert_eq!(pool::assigned_pool(&riscv, &pools), None);
}
