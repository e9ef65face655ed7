//! The operator's Prometheus metrics. The names are a contract with the Helm chart's dashboard
//! (`charts/bootfarm/dashboards/METRICS.md` lists them; a test keeps both in step).
//!
//! Labels are low-cardinality on purpose: pools, arches, phases, results, routes — never job or
//! runner names, which would make one series per job.

use prometheus::{
    exponential_buckets, CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, Opts,
    Registry, TextEncoder,
};

/// Boot-scale buckets: 1 s … about 1 h (1, 2, 4, … 2048, 4096 s).
fn boot_buckets() -> Vec<f64> {
    exponential_buckets(1.0, 2.0, 13).expect("static bucket parameters are valid")
}

/// HTTP latency buckets: 1 ms … about 30 s (long-polls of the claim endpoint land in the top one).
fn http_buckets() -> Vec<f64> {
    exponential_buckets(0.001, 2.0, 16).expect("static bucket parameters are valid")
}

/// Runner start-up (process spawn or pod scheduling + image pull): 0.1 s … about 14 min.
fn startup_buckets() -> Vec<f64> {
    exponential_buckets(0.1, 2.0, 14).expect("static bucket parameters are valid")
}

#[derive(Clone)]
pub struct Metrics {
    pub queue_depth: GaugeVec,
    pub jobs: GaugeVec,
    pub runners: GaugeVec,
    pub runners_desired: GaugeVec,
    pub job_queue_wait_seconds: HistogramVec,
    pub job_duration_seconds: HistogramVec,
    pub time_to_verdict_seconds: HistogramVec,
    pub jobs_finished_total: CounterVec,
    pub infra_retries_total: CounterVec,
    pub lease_expirations_total: CounterVec,
    pub scale_decisions_total: CounterVec,
    pub http_requests_total: CounterVec,
    pub http_request_duration_seconds: HistogramVec,
    pub runner_startup_seconds: HistogramVec,
    pub status_writes_total: CounterVec,
    pub reconcile_duration_seconds: HistogramVec,
    pub reconcile_errors_total: CounterVec,
    pub callbacks_total: CounterVec,
    registry: Registry,
}

impl Metrics {
    /// A job just became finished: its count, its run's duration and its time to verdict, by
    /// arch and outcome (`pass`, `fail`, `error`, `canceled`). Called by the state transitions
    /// themselves, so every way a job ends is counted (a lease that expired into Error too).
    pub fn job_finished(&self, job: &bootfarm_core::spec::BootJob, now: jiff::Timestamp) {
        use bootfarm_core::spec::JobPhase;
        let status = job.status.as_ref();
        let result = match status.map(|s| s.phase) {
            Some(JobPhase::Succeeded) => "pass",
            Some(JobPhase::Failed) => "fail",
            Some(JobPhase::Error) => "error",
            Some(JobPhase::Canceled) => "canceled",
            _ => return,
        };
        let arch = job.spec.arch.as_str();
        self.jobs_finished_total
            .with_label_values(&[arch, result])
            .inc();
        let since =
            |t: Option<jiff::Timestamp>| t.map(|t| now.duration_since(t).as_secs_f64().max(0.0));
        if let Some(d) = since(status.and_then(|s| s.start_time)) {
            if result != "canceled" {
                self.job_duration_seconds
                    .with_label_values(&[arch, result])
                    .observe(d);
            }
        }
        let created = job
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| now.duration_since(t.0).as_secs_f64().max(0.0))
            .or_else(|| since(status.and_then(|s| s.queued_at)));
        if let (Some(d), false) = (created, result == "canceled") {
            self.time_to_verdict_seconds
                .with_label_values(&[arch, result])
                .observe(d);
        }
    }
}

/// The states `bootfarm_runners` has series for.
pub const RUNNER_STATES: [&str; 6] = [
    "pending",
    "starting",
    "idle",
    "busy",
    "failed",
    "terminating",
];

/// The outcomes `jobs_finished_total` counts, in `job_finished`'s words (canceled jobs have no
/// duration or time to verdict).
const RESULTS: [&str; 4] = ["pass", "fail", "error", "canceled"];

impl Metrics {
    /// Makes a pool's counters exist at zero. A counter series born at its first increment loses
    /// that increment to `increase()` (there is no earlier sample), and an alert on "expirations
    /// rising" sees no series at all until the first one; so every pool's series start at 0.
    pub fn pool_seen(&self, pool: &str) {
        self.infra_retries_total
            .with_label_values(&[pool])
            .inc_by(0.0);
        self.lease_expirations_total
            .with_label_values(&[pool])
            .inc_by(0.0);
        for direction in ["up", "down"] {
            self.scale_decisions_total
                .with_label_values(&[pool, direction])
                .inc_by(0.0);
        }
        self.runner_startup_seconds.with_label_values(&[pool]);
    }

    /// Drops the gauges of pools that no longer exist (their counters stay: they only grow, and
    /// nothing alerts on a counter that stopped).
    pub fn forget_pools_except(&self, live: &std::collections::BTreeSet<String>) {
        use prometheus::core::Collector;
        let exported: std::collections::BTreeSet<String> = self
            .runners_desired
            .collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .flat_map(|m| m.get_label())
            .filter(|l| l.name() == "pool")
            .map(|l| l.value().to_string())
            .collect();
        for pool in exported.difference(live) {
            let _ = self.runners_desired.remove_label_values(&[pool]);
            for state in RUNNER_STATES {
                let _ = self.runners.remove_label_values(&[pool, state]);
            }
            for arch in bootfarm_core::arch::Arch::ALL {
                let _ = self.queue_depth.remove_label_values(&[pool, arch.as_str()]);
            }
        }
    }

    /// Makes an arch's histograms exist, empty, before its first job is claimed: `rate()` of a
    /// series born with its first observation never sees that observation. Called at start for
    /// the arches served (every one in standalone, the pools' in Kubernetes) and on submission, so
    /// only arches in use carry series.
    pub fn arch_seen(&self, arch: bootfarm_core::arch::Arch) {
        let arch = arch.as_str();
        self.job_queue_wait_seconds.with_label_values(&[arch]);
        for result in ["pass", "fail", "error"] {
            self.job_duration_seconds.with_label_values(&[arch, result]);
            self.time_to_verdict_seconds
                .with_label_values(&[arch, result]);
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("each metric is registered once in a fresh registry");
    g
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> CounterVec {
    let c = CounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("each metric is registered once in a fresh registry");
    c
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("static metric definition");
    registry
        .register(Box::new(h.clone()))
        .expect("each metric is registered once in a fresh registry");
    h
}

impl Metrics {
    /// A fresh registry holding exactly bootfarm's metrics (a fresh one per call keeps tests
    /// independent of each other).
    pub fn new() -> (Metrics, Registry) {
        let r = Registry::new();
        let m = Metrics {
            queue_depth: gauge(
                &r,
                "bootfarm_queue_depth",
                "Jobs waiting in the queue, by pool and arch.",
                &["pool", "arch"],
            ),
            jobs: gauge(&r, "bootfarm_jobs", "BootJobs by phase.", &["phase"]),
            runners: gauge(
                &r,
                "bootfarm_runners",
                "Runners by pool and state (pending, starting, idle, busy, failed, terminating).",
                &["pool", "state"],
            ),
            runners_desired: gauge(
                &r,
                "bootfarm_runners_desired",
                "Runners the scaler wants, by pool.",
                &["pool"],
            ),
            job_queue_wait_seconds: histogram(
                &r,
                "bootfarm_job_queue_wait_seconds",
                "Seconds from queued to claimed by a runner.",
                &["arch"],
                boot_buckets(),
            ),
            job_duration_seconds: histogram(
                &r,
                "bootfarm_job_duration_seconds",
                "Seconds a runner spent on a job, claim to result.",
                &["arch", "result"],
                boot_buckets(),
            ),
            time_to_verdict_seconds: histogram(
                &r,
                "bootfarm_time_to_verdict_seconds",
                "Seconds from submission to the final verdict.",
                &["arch", "result"],
                boot_buckets(),
            ),
            jobs_finished_total: counter(
                &r,
                "bootfarm_jobs_finished_total",
                "Jobs that reached a final phase, by arch and result.",
                &["arch", "result"],
            ),
            infra_retries_total: counter(
                &r,
                "bootfarm_infra_retries_total",
                "Jobs requeued after an infrastructure failure, by pool.",
                &["pool"],
            ),
            lease_expirations_total: counter(
                &r,
                "bootfarm_lease_expirations_total",
                "Work leases that expired without a heartbeat, by pool.",
                &["pool"],
            ),
            scale_decisions_total: counter(
                &r,
                "bootfarm_scale_decisions_total",
                "Scaling actions taken, by pool and direction (up, down).",
                &["pool", "direction"],
            ),
            http_requests_total: counter(
                &r,
                "bootfarm_http_requests_total",
                "HTTP requests by matched route, method and status.",
                &["route", "method", "status"],
            ),
            http_request_duration_seconds: histogram(
                &r,
                "bootfarm_http_request_duration_seconds",
                "HTTP request latency by matched route and method.",
                &["route", "method"],
                http_buckets(),
            ),
            runner_startup_seconds: histogram(
                &r,
                "bootfarm_runner_startup_seconds",
                "Seconds from asking for a runner to its first claim, by pool.",
                &["pool"],
                startup_buckets(),
            ),
            status_writes_total: counter(
                &r,
                "bootfarm_status_writes_total",
                "BootJob status writes to the API server (Kubernetes mode), by result: success, conflict, failure, timeout.",
                &["result"],
            ),
            reconcile_duration_seconds: histogram(
                &r,
                "bootfarm_reconcile_duration_seconds",
                "Seconds per reconcile (Kubernetes mode), by controller (bootjob, runnerpool) and outcome (ok, error).",
                &["controller", "outcome"],
                http_buckets(),
            ),
            reconcile_errors_total: counter(
                &r,
                "bootfarm_reconcile_errors_total",
                "Failed reconciles (Kubernetes mode), by controller and error kind (kube, store, status, finalizer, cleanup, ...).",
                &["controller", "kind"],
            ),
            callbacks_total: counter(
                &r,
                "bootfarm_callbacks_total",
                "Callback deliveries by event and outcome.",
                &["event", "outcome"],
            ),
            registry: r.clone(),
        };
        // Seven arches by four outcomes: few enough to exist from the start (see `pool_seen`).
        for arch in bootfarm_core::arch::Arch::ALL {
            for result in RESULTS {
                m.jobs_finished_total
                    .with_label_values(&[arch.as_str(), result])
                    .inc_by(0.0);
            }
        }
        (m, r)
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail on I/O; a malformed family is our bug, so render what we can.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "Encoding metrics failed");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// The names of every registered metric family, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        // Vec metrics with no series yet are not gathered; the descriptors always are.
        for c in self.registry_descs() {
            if !names.contains(&c) {
                names.push(c);
            }
        }
        names.sort();
        names.dedup();
        names
    }

    fn registry_descs(&self) -> Vec<String> {
        use prometheus::core::Collector;
        let collectors: [&dyn Collector; 18] = [
            &self.queue_depth,
            &self.jobs,
            &self.runners,
            &self.runners_desired,
            &self.job_queue_wait_seconds,
            &self.job_duration_seconds,
            &self.time_to_verdict_seconds,
            &self.jobs_finished_total,
            &self.infra_retries_total,
            &self.lease_expirations_total,
            &self.scale_decisions_total,
            &self.http_requests_total,
            &self.http_request_duration_seconds,
            &self.runner_startup_seconds,
            &self.status_writes_total,
            &self.reconcile_duration_seconds,
            &self.reconcile_errors_total,
            &self.callbacks_total,
        ];
        collectors
            .iter()
            .flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPECTED: [&str; 18] = [
        "bootfarm_callbacks_total",
        "bootfarm_http_request_duration_seconds",
        "bootfarm_http_requests_total",
        "bootfarm_infra_retries_total",
        "bootfarm_job_duration_seconds",
        "bootfarm_job_queue_wait_seconds",
        "bootfarm_jobs",
        "bootfarm_jobs_finished_total",
        "bootfarm_lease_expirations_total",
        "bootfarm_queue_depth",
        "bootfarm_reconcile_duration_seconds",
        "bootfarm_reconcile_errors_total",
        "bootfarm_runner_startup_seconds",
        "bootfarm_runners",
        "bootfarm_runners_desired",
        "bootfarm_scale_decisions_total",
        "bootfarm_status_writes_total",
        "bootfarm_time_to_verdict_seconds",
    ];

    #[test]
    fn registers_exactly_the_contract_names() {
        let (m, _) = Metrics::new();
        assert_eq!(m.names(), EXPECTED.map(String::from).to_vec());
    }

    /// The dashboard documents the metric names it queries; both lists must agree.
    #[test]
    fn registered_names_match_the_chart_metrics_list() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../charts/bootfarm/dashboards/METRICS.md"
        );
        let Ok(text) = std::fs::read_to_string(path) else {
            eprintln!("SKIP: {path} does not exist yet");
            return;
        };
        let re = regex::Regex::new(r"\bbootfarm_[a-z_]+\b").expect("static regex");
        let mut documented: Vec<String> = re
            .find_iter(&text)
            .map(|m| m.as_str().to_string())
            // Histogram series suffixes name the same family.
            .map(|n| {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| n.strip_suffix(s).map(str::to_string))
                    .unwrap_or(n)
            })
            .collect();
        documented.sort();
        documented.dedup();
        let (m, _) = Metrics::new();
        assert_eq!(
            documented,
            m.names(),
            "METRICS.md and the registry disagree"
        );
    }

    #[test]
    fn render_shows_observed_series_with_labels() {
        let (m, _) = Metrics::new();
        m.jobs.with_label_values(&["Queued"]).set(3.0);
        m.job_duration_seconds
            .with_label_values(&["x86_64", "pass"])
            .observe(7.5);
        let text = m.render();
        assert!(
            text.contains(r#"bootfarm_jobs{phase="Queued"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"bootfarm_job_duration_seconds_bucket{arch="x86_64",result="pass",le="8"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"le="4096""#),
            "boot buckets reach an hour: {text}"
        );
    }

    #[test]
    fn counters_and_histograms_exist_at_zero_before_their_first_event() {
        let (m, _) = Metrics::new();
        let text = m.render();
        // Every arch and outcome is counted from the start; no pool or arch histogram yet.
        for arch in bootfarm_core::arch::Arch::ALL {
            for result in RESULTS {
                let line = format!(
                    "bootfarm_jobs_finished_total{{arch=\"{}\",result=\"{result}\"}} 0",
                    arch.as_str()
                );
                assert!(text.contains(&line), "{line} missing");
            }
        }
        assert!(
            !text.contains("bootfarm_lease_expirations_total{"),
            "{text}"
        );
        assert!(
            !text.contains("bootfarm_job_queue_wait_seconds_count"),
            "{text}"
        );

        m.pool_seen("tcg");
        m.arch_seen(bootfarm_core::arch::Arch::Riscv64);
        let text = m.render();
        for line in [
            r#"bootfarm_lease_expirations_total{pool="tcg"} 0"#,
            r#"bootfarm_infra_retries_total{pool="tcg"} 0"#,
            r#"bootfarm_scale_decisions_total{direction="up",pool="tcg"} 0"#,
            r#"bootfarm_scale_decisions_total{direction="down",pool="tcg"} 0"#,
            r#"bootfarm_runner_startup_seconds_count{pool="tcg"} 0"#,
            r#"bootfarm_job_queue_wait_seconds_count{arch="riscv64"} 0"#,
            r#"bootfarm_job_duration_seconds_count{arch="riscv64",result="fail"} 0"#,
            r#"bootfarm_time_to_verdict_seconds_count{arch="riscv64",result="error"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        // Seen twice is still zero: marking a series never counts anything.
        m.pool_seen("tcg");
        assert!(m
            .render()
            .contains(r#"bootfarm_lease_expirations_total{pool="tcg"} 0"#));
    }

    #[test]
    fn a_gone_pool_loses_its_gauges_and_keeps_its_counters() {
        let (m, _) = Metrics::new();
        for pool in ["keep", "gone"] {
            m.pool_seen(pool);
            m.runners_desired.with_label_values(&[pool]).set(2.0);
            m.runners.with_label_values(&[pool, "busy"]).set(1.0);
            m.queue_depth.with_label_values(&[pool, "arm64"]).set(3.0);
        }
        m.forget_pools_except(&["keep".to_string()].into_iter().collect());
        let text = m.render();
        assert!(
            text.contains(r#"bootfarm_runners_desired{pool="keep"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"bootfarm_queue_depth{arch="arm64",pool="keep"} 3"#),
            "{text}"
        );
        for gone in [
            r#"bootfarm_runners_desired{pool="gone"}"#,
            r#"bootfarm_runners{pool="gone",state="busy"}"#,
            r#"bootfarm_queue_depth{arch="arm64",pool="gone"}"#,
        ] {
            assert!(!text.contains(gone), "{gone} still exported:\n{text}");
        }
        assert!(
            text.contains(r#"bootfarm_lease_expirations_total{pool="gone"} 0"#),
            "{text}"
        );
    }
}
