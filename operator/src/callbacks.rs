//! Callbacks: when a job ends (or the last job of a plan), its summary is POSTed to the URL it
//! names, signed with HMAC-SHA256 when it names a secret.
//!
//! The stores announce every job that ends ([`Callbacks::finished`], beside the metrics); the
//! announcement is a non-blocking send into a queue of its own, worked by [`run`] with a bounded
//! number of deliveries in flight. So a dead or slow endpoint costs its own retries and never
//! the job queue's time. Deliveries are at most once across an operator restart (the queue is in
//! memory); within one operator, each is tried a bounded number of times with backoff.
//!
//! The receiver never sees the farm's tokens (requests carry no credentials and follow no
//! redirects), and callbacks reach only public addresses unless `--allow-callback-net` says
//! otherwise: the same address policy as artifact downloads.

use crate::metrics::Metrics;
use crate::plans;
use crate::store::{JobFilter, JobStore};
use bootfarm_core::callback::{self, CallbackRef, JOB_EVENT, PLAN_EVENT};
use bootfarm_core::netpolicy::NetPolicy;
use bootfarm_core::plan::{CALLBACK_ANNOTATION, KEY_ANNOTATION, MAX_PLAN_JOBS, PLAN_LABEL};
use bootfarm_core::spec::BootJob;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};

/// Announcements waiting for the dispatcher; beyond this they are dropped (and counted).
const QUEUE: usize = 10_000;
/// Deliveries in flight at once.
const IN_FLIGHT: usize = 32;
/// How long a plan's delivery is remembered (its last jobs may end together).
const PLAN_MEMORY: Duration = Duration::from_secs(3600);

/// `--callback-secret-dir`, `--allow-callback-net` and the retry policy.
#[derive(Debug, Clone, clap::Args)]
pub struct CallbackArgs {
    /// Where the secrets that sign callbacks are: a job's `callback.secretName` is a file here
    /// (in Kubernetes, the mounted callback Secret). Without it, a callback naming a secret is
    /// not sent (never unsigned).
    #[arg(long, env = "BOOTFARM_CALLBACK_SECRET_DIR")]
    pub callback_secret_dir: Option<PathBuf>,
    /// Let callbacks reach this address range too (repeatable; e.g. an in-cluster CI service).
    /// Only public addresses are reached otherwise.
    #[arg(long = "allow-callback-net", value_name = "CIDR", value_parser = parse_cidr)]
    pub allow_callback_net: Vec<ipnet::IpNet>,
    /// Tries per delivery (the first and its retries).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub callback_attempts: u32,
    /// Seconds before the first retry; doubled each time, at most 5 minutes.
    #[arg(long, default_value_t = 2)]
    pub callback_backoff: u64,
    /// Seconds one attempt may take.
    #[arg(long, default_value_t = 10)]
    pub callback_timeout: u64,
}

fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    bootfarm_core::netpolicy::parse_cidr(s).map_err(|e| e.to_string())
}

/// The stores' handle: announce jobs that ended. Cheap to clone; a default one announces nothing.
#[derive(Debug, Clone, Default)]
pub struct Callbacks {
    tx: Option<mpsc::Sender<BootJob>>,
    metrics: Option<Arc<Metrics>>,
}

/// What [`run`] works from.
pub struct Queue(mpsc::Receiver<BootJob>);

impl Callbacks {
    /// A handle and the queue it feeds ([`run`] it once the store exists).
    pub fn channel(metrics: Arc<Metrics>) -> (Callbacks, Queue) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (
            Callbacks {
                tx: Some(tx),
                metrics: Some(metrics),
            },
            Queue(rx),
        )
    }

    /// `job` has just ended: queue its callbacks, if it has any. Never waits.
    pub fn finished(&self, job: &BootJob) {
        let Some(tx) = &self.tx else { return };
        let plan_callback = job
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(CALLBACK_ANNOTATION));
        if job.spec.callback.is_none() && !plan_callback {
            return;
        }
        if tx.try_send(job.clone()).is_err() {
            tracing::warn!(job = ?job.metadata.name, "callback queue full: dropping this job's callbacks");
            if let Some(m) = &self.metrics {
                m.callbacks_total
                    .with_label_values(&[JOB_EVENT, "dropped"])
                    .inc();
            }
        }
    }
}

/// The body of a job's callback.
pub fn job_payload(job: &BootJob) -> Value {
    let name = job.metadata.name.clone().unwrap_or_default();
    let status = job.status.as_ref();
    let labels = job.metadata.labels.as_ref();
    json!({
        "event": JOB_EVENT,
        "name": name,
        "namespace": job.metadata.namespace,
        "arch": job.spec.arch,
        "phase": crate::queue::phase(job).as_str(),
        "attempts": status.map_or(0, |s| s.attempts),
        "completionTime": status.and_then(|s| s.completion_time).map(crate::queue::fmt_time),
        "result": status.and_then(|s| s.result.clone()),
        "plan": labels.and_then(|l| l.get(PLAN_LABEL)),
        "planKey": job.metadata.annotations.as_ref().and_then(|a| a.get(KEY_ANNOTATION)),
        "links": {
            "job": format!("/api/v1/bootjobs/{name}"),
            "result": format!("/api/v1/bootjobs/{name}/result"),
            "log": format!("/api/v1/bootjobs/{name}/log"),
        },
    })
}

/// One POST to make, with its retries.
struct Delivery {
    event: &'static str,
    callback: CallbackRef,
    body: Vec<u8>,
    id: String,
    what: String,
}

struct Inner {
    http: reqwest::Client,
    net: Arc<NetPolicy>,
    settings: CallbackArgs,
    metrics: Arc<Metrics>,
    store: Arc<dyn JobStore>,
    plans_sent: Mutex<HashMap<String, Instant>>,
    slots: Semaphore,
}

/// The deliverer of callbacks: its HTTP client (the address policy in its resolver, no
/// redirects, no proxy, no credentials) and what it reads plans from.
pub struct Dispatcher(Arc<Inner>);

/// Builds the dispatcher ([`run`] it with the queue).
pub fn dispatcher(
    store: Arc<dyn JobStore>,
    settings: CallbackArgs,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Dispatcher> {
    let net = Arc::new(NetPolicy::new(
        settings.allow_callback_net.clone(),
        Vec::new(),
    ));
    let timeout = Duration::from_secs(settings.callback_timeout.max(1));
    let http = reqwest::Client::builder()
        .dns_resolver(Arc::new(bootfarm_runner::artifacts::PolicyResolver {
            net: net.clone(),
        }))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(timeout)
        .timeout(timeout)
        .user_agent(concat!("bootfarm/", env!("CARGO_PKG_VERSION")))
        .build()?;
    Ok(Dispatcher(Arc::new(Inner {
        http,
        net,
        settings,
        metrics,
        store,
        plans_sent: Mutex::new(HashMap::new()),
        slots: Semaphore::new(IN_FLIGHT),
    })))
}

/// Works the queue until every handle is gone (the operator stopping).
pub async fn run(queue: Queue, dispatcher: Dispatcher) {
    let d = dispatcher.0;
    let Queue(mut rx) = queue;
    while let Some(job) = rx.recv().await {
        let name = job.metadata.name.clone().unwrap_or_default();
        if let Some(cb) = job.spec.callback.clone() {
            let Ok(body) = serde_json::to_vec(&job_payload(&job)) else {
                continue;
            };
            let delivery = Delivery {
                event: JOB_EVENT,
                callback: cb,
                body,
                id: uuid::Uuid::new_v4().to_string(),
                what: format!("bootjob {name}"),
            };
            tokio::spawn(d.clone().deliver(delivery));
        }
        let plan_cb = job
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CALLBACK_ANNOTATION))
            .and_then(|cb| serde_json::from_str::<CallbackRef>(cb).ok());
        let plan = job
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(PLAN_LABEL))
            .cloned();
        if let (Some(cb), Some(plan)) = (plan_cb, plan) {
            tokio::spawn(d.clone().plan_ended(plan, cb));
        }
    }
}

impl Inner {
    /// One of `plan`'s jobs ended: when all have, send the plan's summary (once).
    async fn plan_ended(self: Arc<Self>, plan: String, cb: CallbackRef) {
        let filter = JobFilter {
            phase: None,
            labels: vec![(PLAN_LABEL.to_string(), plan.clone())],
            limit: Some(MAX_PLAN_JOBS + 1),
        };
        let jobs = match self.store.list(&filter).await {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(plan = %plan, error = %e, "listing a plan's jobs for its callback");
                return;
            }
        };
        let view = plans::view(&plan, &jobs);
        if !view.status.phase.is_finished() {
            return;
        }
        {
            let Ok(mut sent) = self.plans_sent.lock() else {
                return;
            };
            sent.retain(|_, at| at.elapsed() < PLAN_MEMORY);
            if sent.insert(plan.clone(), Instant::now()).is_some() {
                return;
            }
        }
        let body = match serde_json::to_vec(&json!({"event": PLAN_EVENT, "plan": view})) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(plan = %plan, error = %e, "serializing a plan's callback");
                return;
            }
        };
        let delivery = Delivery {
            event: PLAN_EVENT,
            callback: cb,
            body,
            id: uuid::Uuid::new_v4().to_string(),
            what: format!("bootplan {plan}"),
        };
        self.deliver(delivery).await;
    }

    fn count(&self, event: &str, outcome: &str) {
        self.metrics
            .callbacks_total
            .with_label_values(&[event, outcome])
            .inc();
    }

    #[tracing::instrument(skip_all, fields(callback = %d.what, delivery = %d.id))]
    async fn deliver(self: Arc<Self>, d: Delivery) {
        let Ok(_slot) = self.slots.acquire().await else {
            return;
        };
        let signature = match &d.callback.secret_name {
            None => None,
            Some(secret) => match self.secret(secret) {
                Ok(key) => Some(callback::signature(&key, &d.body)),
                Err(why) => {
                    tracing::warn!(secret = %secret, "callback not sent: {why}");
                    self.count(d.event, "no_secret");
                    return;
                }
            },
        };
        let url = match reqwest::Url::parse(&d.callback.url) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "callback not sent: a bad URL");
                self.count(d.event, "failed");
                return;
            }
        };
        if let Err(r) = bootfarm_runner::artifacts::check_url(&self.net, &url) {
            tracing::warn!(url = %url, "callback refused: {r}");
            self.count(d.event, "refused");
            return;
        }
        let mut backoff = Duration::from_secs(self.settings.callback_backoff);
        for attempt in 1..=self.settings.callback_attempts {
            let mut req = self
                .http
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(callback::EVENT_HEADER, d.event)
                .header(callback::DELIVERY_HEADER, &d.id)
                .body(d.body.clone());
            if let Some(sig) = &signature {
                req = req.header(callback::SIGNATURE_HEADER, sig);
            }
            let retry = match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    tracing::info!(
                        attempt,
                        status = resp.status().as_u16(),
                        "callback delivered"
                    );
                    self.count(d.event, "delivered");
                    return;
                }
                Ok(resp) => {
                    let status = resp.status();
                    tracing::warn!(
                        attempt,
                        status = status.as_u16(),
                        "callback answered with an error"
                    );
                    status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                }
                Err(e) => {
                    if let Some(r) = bootfarm_runner::artifacts::refusal_in(&e) {
                        tracing::warn!(url = %url, "callback refused: {r}");
                        self.count(d.event, "refused");
                        return;
                    }
                    tracing::warn!(attempt, error = %e, "callback failed");
                    true
                }
            };
            if !retry || attempt == self.settings.callback_attempts {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(300));
        }
        self.count(d.event, "failed");
    }

    /// The key of secret `name`: its file under the secret directory, trailing newline dropped.
    fn secret(&self, name: &str) -> Result<Vec<u8>, String> {
        let Some(dir) = &self.settings.callback_secret_dir else {
            return Err("no --callback-secret-dir is configured".into());
        };
        // The name was checked at submission (no '/', no leading '.'); check again here, where
        // it becomes a path.
        if name.contains('/') || name.starts_with('.') || name.is_empty() {
            return Err(format!("{name:?} is not a secret name"));
        }
        let mut key = std::fs::read(dir.join(name))
            .map_err(|e| format!("secret {name:?} in {}: {e}", dir.display()))?;
        while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            key.pop();
        }
        if key.is_empty() {
            return Err(format!("secret {name:?} is empty"));
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootfarm_core::spec::{BootJobSpec, BootJobStatus, JobPhase};
    use bootfarm_core::Arch;

    #[test]
    fn a_job_payload_names_the_job_its_phase_and_where_its_result_is() {
        let mut job = BootJob::new("j1", BootJobSpec::new(Arch::X86_64, "file:///k"));
        job.status = Some(BootJobStatus {
            phase: JobPhase::Failed,
            attempts: 1,
            ..BootJobStatus::default()
        });
        let p = job_payload(&job);
        assert_eq!(p["event"], "bootjob.finished");
        assert_eq!(p["name"], "j1");
        assert_eq!(p["phase"], "Failed");
        assert_eq!(p["arch"], "x86_64");
        assert_eq!(p["links"]["result"], "/api/v1/bootjobs/j1/result");
        assert!(p["plan"].is_null());
    }

    #[tokio::test]
    async fn only_jobs_with_a_callback_are_queued_and_a_default_handle_queues_nothing() {
        let (metrics, _) = Metrics::new();
        let (cb, Queue(mut rx)) = Callbacks::channel(Arc::new(metrics));
        let mut job = BootJob::new("j1", BootJobSpec::new(Arch::X86_64, "file:///k"));
        cb.finished(&job);
        assert!(rx.try_recv().is_err());
        job.spec.callback = Some(CallbackRef {
            url: "https://ci.example/".into(),
            secret_name: None,
        });
        cb.finished(&job);
        assert_eq!(rx.try_recv().unwrap().metadata.name.as_deref(), Some("j1"));
        Callbacks::default().finished(&job);
    }
}
