//! A scripted Kubernetes API server for reconcile tests: each expected request (method, path,
//! body) is asserted in order and answered; a missing or an extra request fails the test.

#![allow(dead_code)] // each test file uses a different part

use bootfarm_core::spec::{BootJob, BootJobSpec, RunnerPool, RunnerPoolSpec};
use bootfarm_core::Arch;
use bootfarm_operator::files::JobFiles;
use bootfarm_operator::kube::context::Context;
use bootfarm_operator::kube::runners::{PodSettings, RunnerActivity};
use bootfarm_operator::kube::store::KubeJobStore;
use bootfarm_operator::metrics::Metrics;
use http::{Request, Response, StatusCode};
use jiff::Timestamp;
use kube::api::Api;
use kube::client::Body;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::Client;
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::Notify;
use tower_test::mock;

pub const NS: &str = "testns";

/// One expected request and the answer to it.
pub struct Exchange {
    pub method: http::Method,
    /// The request path without the query string.
    pub path: String,
    /// Substrings the query string must contain (e.g. `fieldManager=bootfarm-operator`).
    pub query: Vec<String>,
    /// Checks the JSON body (panics to fail).
    pub check: Box<dyn FnOnce(&Value) + Send>,
    pub status: StatusCode,
    pub response: Value,
    /// Answer with this object carrying the request's `status` (a status patch's result).
    pub status_of: Option<Value>,
}

impl Exchange {
    pub fn new(method: http::Method, path: impl Into<String>) -> Self {
        Exchange {
            method,
            path: path.into(),
            query: vec![],
            check: Box::new(|_| {}),
            status: StatusCode::OK,
            response: json!({}),
            status_of: None,
        }
    }
    pub fn query(mut self, q: &str) -> Self {
        self.query.push(q.to_string());
        self
    }
    pub fn body(mut self, f: impl FnOnce(&Value) + Send + 'static) -> Self {
        self.check = Box::new(f);
        self
    }
    pub fn reply(mut self, status: StatusCode, body: Value) -> Self {
        self.status = status;
        self.response = body;
        self
    }
    /// Answers with the request body itself (what the server would store).
    pub fn echo(mut self) -> Self {
        self.response = Value::Null;
        self
    }
    /// Answers with `object` carrying the requested status (what a status patch returns).
    pub fn patched(mut self, object: Value) -> Self {
        self.status_of = Some(object);
        self
    }
}

pub fn conflict(name: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
           "message": format!("Operation cannot be fulfilled on bootjobs.bootfarm.dev \"{name}\": the object has been modified")})
}

pub fn not_found(name: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
           "message": format!("\"{name}\" not found")})
}

pub struct ApiServer {
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl ApiServer {
    /// Serves `script` in order; after it, any further request fails the test.
    pub fn run(
        handle: mock::Handle<Request<Body>, Response<Body>>,
        script: Vec<Exchange>,
    ) -> ApiServer {
        let task = tokio::spawn(async move {
            let mut handle = Box::pin(handle);
            let mut seen = Vec::new();
            for (i, ex) in script.into_iter().enumerate() {
                let (req, send) =
                    tokio::time::timeout(Duration::from_secs(5), handle.next_request())
                        .await
                        .unwrap_or_else(|_| {
                            panic!(
                                "request {i} ({} {}) never came; saw {seen:?}",
                                ex.method, ex.path
                            )
                        })
                        .expect("the client went away");
                let uri = req.uri().clone();
                let line = format!("{} {}", req.method(), uri);
                seen.push(line.clone());
                assert_eq!(req.method(), ex.method, "request {i}: {line}");
                assert_eq!(uri.path(), ex.path, "request {i}: {line}");
                let query = uri.query().unwrap_or("");
                for q in &ex.query {
                    assert!(query.contains(q.as_str()), "request {i}: {line} lacks {q}");
                }
                let bytes = req.into_body().collect_bytes().await.expect("a body");
                let body: Value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).expect("a JSON body")
                };
                (ex.check)(&body);
                let answer = match ex.status_of {
                    Some(mut object) => {
                        object["status"] = body["status"].clone();
                        object
                    }
                    None if ex.response.is_null() => body,
                    None => ex.response,
                };
                send.send_response(
                    Response::builder()
                        .status(ex.status)
                        .body(Body::from(serde_json::to_vec(&answer).expect("json")))
                        .expect("a response"),
                );
            }
            // Nothing more may come.
            if let Ok(Some((req, _))) =
                tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await
            {
                panic!(
                    "unexpected extra request {} {} after {seen:?}",
                    req.method(),
                    req.uri()
                );
            }
            seen
        });
        ApiServer { task }
    }

    /// Waits for the script to finish and re-raises its assertion failures.
    pub async fn done(self) -> Vec<String> {
        match self.task.await {
            Ok(seen) => seen,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("mock server task failed: {e}"),
        }
    }
}

pub fn mock_client() -> (Client, mock::Handle<Request<Body>, Response<Body>>) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, NS), handle)
}

pub fn spec(arch: Arch) -> BootJobSpec {
    BootJobSpec::new(arch, "https://artifacts.example/kernel")
}

pub fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).expect("in range")
}

/// A stored BootJob: namespace, uid, resourceVersion, generation, creation time.
pub fn bootjob(name: &str, arch: Arch) -> BootJob {
    let mut job = BootJob::new(name, spec(arch));
    job.metadata.namespace = Some(NS.into());
    job.metadata.uid = Some(format!("uid-{name}"));
    job.metadata.resource_version = Some("100".into());
    job.metadata.generation = Some(1);
    job.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::now(),
    ));
    job
}

pub fn with_finalizer(mut job: BootJob) -> BootJob {
    job.metadata.finalizers = Some(vec![bootfarm_operator::kube::bootjob::FINALIZER.into()]);
    job
}

pub fn runnerpool(name: &str, arch: Arch) -> RunnerPool {
    let mut pool = RunnerPool::new(
        name,
        RunnerPoolSpec {
            arches: vec![arch],
            min_idle: 0,
            max_runners: 5,
            idle_timeout_seconds: 60,
            startup_timeout_seconds: 600,
            scale_up_burst: 10,
            kvm: false,
            template: Default::default(),
        },
    );
    pool.metadata.namespace = Some(NS.into());
    pool.metadata.uid = Some(format!("uid-{name}"));
    pool.metadata.resource_version = Some("7".into());
    pool
}

/// A synced reflector store holding `objects`.
pub fn synced_store<K>(objects: Vec<K>) -> Store<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(o));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    reader
}

pub struct TestCtx {
    pub ctx: Arc<Context>,
    pub data: tempfile::TempDir,
    pub registry: prometheus::Registry,
}

/// A reconcile context over the mock client, with synced caches of `jobs` and `pools`.
pub fn context(client: Client, jobs: Vec<BootJob>, pools: Vec<RunnerPool>) -> TestCtx {
    context_started(client, jobs, pools, None)
}

/// [`context`] of an operator that started at `started` with this lease TTL (its restart grace).
pub fn context_started(
    client: Client,
    jobs: Vec<BootJob>,
    pools: Vec<RunnerPool>,
    started: Option<(Timestamp, Duration)>,
) -> TestCtx {
    let data = tempfile::tempdir().expect("a temp dir");
    let (metrics, registry) = Metrics::new();
    let metrics = Arc::new(metrics);
    let activity = Arc::new(RunnerActivity::default());
    let store = KubeJobStore::new(
        Api::namespaced(client.clone(), NS),
        Api::namespaced(client.clone(), NS),
        activity.clone(),
        metrics.clone(),
    );
    let store = match started {
        Some((at, ttl)) => store.with_lease_grace(at, ttl),
        None => store,
    };
    // As in the operator: the store reads the synced watch caches, never a LIST.
    store.use_job_cache(synced_store(jobs.clone()));
    store.use_pool_cache(synced_store(pools.clone()));
    let job_cache = Arc::new(OnceLock::new());
    let _ = job_cache.set(synced_store(jobs));
    let pool_cache = Arc::new(OnceLock::new());
    let _ = pool_cache.set(synced_store(pools));
    let client_for_events = client.clone();
    let ctx = Context {
        client,
        store,
        files: JobFiles::new(data.path()),
        metrics,
        pods: PodSettings::builtin(
            "http://bootfarm.testns.svc:8080",
            "bootfarm/runner:test",
            "bootfarm-runner-token",
        ),
        activity,
        work: Arc::new(Notify::new()),
        jobs: job_cache,
        pools: pool_cache,
        runner_pods: Default::default(),
        created_pods: Default::default(),
        started: t(0),
        recorder: bootfarm_operator::kube::context::recorder(client_for_events),
        local_artifacts: Default::default(),
        board: Default::default(),
    };
    TestCtx {
        ctx: Arc::new(ctx),
        data,
        registry,
    }
}

pub fn jobs_path(name: &str) -> String {
    format!("/apis/bootfarm.dev/v1alpha1/namespaces/{NS}/bootjobs/{name}")
}

/// The Event recorded after a transition (`reason` checked).
pub fn event(reason: &'static str) -> Exchange {
    Exchange::new(
        http::Method::POST,
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
    )
    .body(move |b| assert_eq!(b["reason"], reason, "{b}"))
    .echo()
}

pub fn pods_path() -> String {
    format!("/api/v1/namespaces/{NS}/pods")
}
