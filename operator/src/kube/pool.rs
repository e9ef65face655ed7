//! The RunnerPool reconciler: count the pool's queue and runner pods, ask the pure scaler what
//! to do, then create and delete pods, keep busy runners safe from autoscalers, and report the
//! counts in the pool's status.

use super::context::{Context, ReconcileError};
use super::runners::{self, RunnerView, POOL_LABEL};
use super::store::FIELD_MANAGER;
use crate::queue;
use crate::scaler::{self, PoolDecision, PoolInput, RunnerState};
use bootfarm_core::spec::{
    BootJob, Condition, JobPhase, RunnerPool, RunnerPoolSpec, RunnerPoolStatus,
};
use bootfarm_core::Arch;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Re-check cadence: fast while the pool is changing, slow when it is at rest.
const BUSY_RECHECK: Duration = Duration::from_secs(2);
const RUNNING_RECHECK: Duration = Duration::from_secs(5);
const IDLE_RECHECK: Duration = Duration::from_secs(30);

/// The pool a queued job counts against: its `spec.pool`, else the first pool (by name) that
/// serves its arch. Shared with the scaler's rule so demand lands in exactly one pool.
pub fn assigned_pool<'a>(job: &BootJob, pools: &'a [Arc<RunnerPool>]) -> Option<&'a str> {
    let mut named: Vec<(&str, &RunnerPoolSpec)> = pools
        .iter()
        .filter_map(|p| Some((p.metadata.name.as_deref()?, &p.spec)))
        .collect();
    named.sort_by_key(|(n, _)| *n);
    scaler::choose_pool(job.spec.pool.as_deref(), job.spec.arch, &named)
}

/// What the pool reconciler computes before touching anything (pure).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolPlan {
    pub views: Vec<RunnerView>,
    pub decision: PoolDecision,
    pub queued: u64,
    /// This pool's queue by arch (for the queue-depth gauge).
    pub queued_by_arch: BTreeMap<Arch, u64>,
}

pub fn plan(
    pool: &RunnerPool,
    pools: &[Arc<RunnerPool>],
    jobs: &[Arc<BootJob>],
    pods: &[Pod],
    ctx_seen: impl Fn(&str) -> Option<runners::Seen>,
    started: Timestamp,
    now: Timestamp,
) -> PoolPlan {
    let name = pool.name_any();
    let mut queued = 0;
    let mut queued_by_arch = BTreeMap::new();
    let mut busy: HashSet<&str> = HashSet::new();
    for job in jobs {
        match queue::phase(job) {
            JobPhase::Queued
                if job.metadata.deletion_timestamp.is_none()
                    && assigned_pool(job, pools) == Some(name.as_str()) =>
            {
                queued += 1;
                *queued_by_arch.entry(job.spec.arch).or_insert(0) += 1;
            }
            JobPhase::Running => {
                if let Some(r) = job.status.as_ref().and_then(|s| s.runner.as_deref()) {
                    busy.insert(r);
                }
            }
            _ => {}
        }
    }
    let views: Vec<RunnerView> = pods
        .iter()
        .map(|p| {
            let n = p.name_any();
            runners::classify(p, busy.contains(n.as_str()), ctx_seen(&n), started, now)
        })
        .collect();
    let runners: Vec<scaler::Runner> = views.iter().map(|v| v.runner.clone()).collect();
    let decision = scaler::decide(
        &PoolInput {
            name: &name,
            policy: &pool.spec,
            queued,
            runners: &runners,
        },
        now,
    );
    PoolPlan {
        views,
        decision,
        queued,
        queued_by_arch,
    }
}

/// Condition type on RunnerPools: whether the pool's runner pods can start.
pub const RUNNERS_CAN_START: &str = "RunnersCanStart";

/// The pool's conditions from what its pods show (pure): `RunnersCanStart` False with the
/// kubelet's reason while a runner container is stuck, True once one runs, else as it was.
pub fn conditions_of(
    previous: &[Condition],
    evidence: Option<runners::StartEvidence>,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let mut conditions = previous.to_vec();
    let (value, reason, message) = match evidence {
        None => return conditions,
        Some(runners::StartEvidence::Started) => (
            true,
            "RunnerStarted".to_string(),
            "runner pods start".to_string(),
        ),
        Some(runners::StartEvidence::Failing {
            pod,
            reason,
            message,
        }) => (
            false,
            reason.clone(),
            format!("runner pod {pod} cannot start: {reason}: {message}"),
        ),
    };
    queue::upsert_condition(
        &mut conditions,
        RUNNERS_CAN_START,
        value,
        &reason,
        &message,
        generation,
        now,
    );
    conditions
}

/// Why the pool cannot start runners, when its status says so.
pub fn cannot_start(pool: &RunnerPool) -> Option<&Condition> {
    pool.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == RUNNERS_CAN_START && c.status == "False")
}

/// The pool's runners in a state.
fn count_runners(plan: &PoolPlan, f: impl Fn(&RunnerState) -> bool) -> u32 {
    u32::try_from(plan.views.iter().filter(|v| f(&v.runner.state)).count()).unwrap_or(u32::MAX)
}

pub fn status_of(plan: &PoolPlan) -> RunnerPoolStatus {
    let count = |f: fn(&RunnerState) -> bool| count_runners(plan, f);
    RunnerPoolStatus {
        desired: plan.decision.desired,
        pending: count(|s| matches!(s, RunnerState::Pending | RunnerState::Starting)),
        idle: count(|s| matches!(s, RunnerState::Idle { .. })),
        busy: count(|s| matches!(s, RunnerState::Busy)),
        queued: u32::try_from(plan.queued).unwrap_or(u32::MAX),
        conditions: Vec::new(),
    }
}

/// Runner pods this operator created that the pod watch may not have shown yet.
#[derive(Debug, Default)]
pub struct CreatedPods(std::sync::Mutex<Vec<(String, Pod, std::time::Instant)>>);

/// Far beyond any watch delay.
const CREATED_KEEP: Duration = Duration::from_secs(30);

impl CreatedPods {
    pub fn created(&self, pool: &str, pod: Pod) {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.push((pool.to_string(), pod, std::time::Instant::now()));
    }

    /// `cached` (the pool's pods as watched) plus the pool's created pods it lacks; a created
    /// pod the watch has shown is forgotten.
    pub fn merge(&self, mut cached: Vec<Pod>, pool: &str) -> Vec<Pod> {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.retain(|(_, pod, at)| {
            at.elapsed() < CREATED_KEEP
                && !cached.iter().any(|c| c.metadata.name == pod.metadata.name)
        });
        cached.extend(
            v.iter()
                .filter(|(p, _, _)| p == pool)
                .map(|(_, pod, _)| pod.clone()),
        );
        cached
    }
}

#[tracing::instrument(name = "reconcile_runnerpool", skip_all, fields(pool = %pool.name_any()))]
pub async fn reconcile(pool: Arc<RunnerPool>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let started = std::time::Instant::now();
    let result = reconcile_pool(pool, &ctx).await;
    ReconcileError::observe(&ctx.metrics, "runnerpool", started, &result);
    result
}

async fn reconcile_pool(pool: Arc<RunnerPool>, ctx: &Context) -> Result<Action, ReconcileError> {
    if pool.metadata.deletion_timestamp.is_some() {
        // Its pods go with it (owner references).
        return Ok(Action::await_change());
    }
    let (Some(jobs), Some(pools)) = (ctx.jobs.get(), ctx.pools.get()) else {
        return Err(ReconcileError::NotSynced);
    };
    // A deleted pool is never reconciled again: its gauges go here, or its alerts would fire on.
    let live: std::collections::BTreeSet<String> =
        pools.state().iter().map(|p| p.name_any()).collect();
    ctx.metrics.forget_pools_except(&live);
    ctx.board.retain(&live);
    let ns = pool
        .namespace()
        .ok_or_else(|| ReconcileError::NoNamespace(pool.name_any()))?;
    let name = pool.name_any();
    let now = Timestamp::now();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let labelled: Vec<Pod> = match ctx.runner_pods.get() {
        Some(cache) => ctx.created_pods.merge(
            cache
                .state()
                .iter()
                .filter(|p| p.labels().get(POOL_LABEL) == Some(&name))
                .map(|p| (**p).clone())
                .collect(),
            &name,
        ),
        // Only until the pod watch has synced.
        None => {
            pods_api
                .list(&ListParams::default().labels(&format!("{POOL_LABEL}={name}")))
                .await?
                .items
        }
    };
    let pods: Vec<Pod> = labelled
        .into_iter()
        .filter(|p| runners::owned_by(p, &pool))
        .collect();
    let plan = plan(
        &pool,
        &ctx.pool_snapshot(),
        &jobs.state(),
        &pods,
        |n| ctx.activity.get(n),
        ctx.started,
        now,
    );
    let d = &plan.decision;
    if d.create > 0 || !d.delete.is_empty() {
        tracing::info!(pool = %name, queued = plan.queued, desired = d.desired, supply = d.supply, create = d.create, delete = d.delete.len(), "Scaling runner pool");
    }
    if d.create > 0 {
        let note = format!(
            "{} queued, {} runners wanted, {} present: creating {}",
            plan.queued, d.desired, d.supply, d.create
        );
        ctx.event(&*pool, EventType::Normal, "ScaledUp", "Scale", note)
            .await;
    }
    if !d.delete.is_empty() {
        let why: Vec<String> = d
            .delete
            .iter()
            .map(|(id, r)| format!("{id} ({})", r.as_str()))
            .collect();
        let note = format!("deleting {}", why.join(", "));
        ctx.event(&*pool, EventType::Normal, "ScaledDown", "Scale", note)
            .await;
    }

    for _ in 0..d.create {
        let pod = runners::build_pod(&pool, &runners::runner_name(&name), &ctx.pods, now);
        let created = pods_api.create(&PostParams::default(), &pod).await?;
        ctx.created_pods.created(&name, created);
        ctx.metrics
            .scale_decisions_total
            .with_label_values(&[name.as_str(), "up"])
            .inc();
    }
    for (victim, reason) in &d.delete {
        let uid = plan
            .views
            .iter()
            .find(|v| &v.runner.id == victim)
            .and_then(|v| v.uid.clone());
        // No new work for it from here on; a claim that slipped in before is undone by the store.
        ctx.activity.drain(victim);
        tracing::info!(pool = %name, pod = %victim, reason = reason.as_str(), "Deleting runner pod");
        delete_pod(&pods_api, victim, uid).await?;
        ctx.metrics
            .scale_decisions_total
            .with_label_values(&[name.as_str(), "down"])
            .inc();
    }

    // Busy runners must not be evicted by node autoscalers; idle ones may be.
    for (view, pod) in plan.views.iter().zip(&pods) {
        if d.delete.iter().any(|(id, _)| id == &view.runner.id) {
            continue;
        }
        let busy = match view.runner.state {
            RunnerState::Busy => {
                ctx.activity.busy(&view.runner.id, now);
                true
            }
            RunnerState::Idle { .. } => false,
            _ => continue,
        };
        if !runners::eviction_annotations_match(pod, busy) {
            let patch = runners::eviction_patch(busy, now);
            pods_api
                .patch(
                    &view.runner.id,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
    }

    let mut status = status_of(&plan);
    let previous = pool.status.as_ref().map_or(&[][..], |s| &s.conditions[..]);
    status.conditions = conditions_of(
        previous,
        runners::start_evidence(&pods),
        pool.metadata.generation,
        now,
    );
    if let Some(c) = status
        .conditions
        .iter()
        .find(|c| c.type_ == RUNNERS_CAN_START)
    {
        if c.status == "False" && previous.iter().all(|p| p != c) {
            tracing::warn!(pool = %name, reason = %c.reason, message = %c.message, "Runner pods cannot start");
            ctx.event(
                &*pool,
                EventType::Warning,
                &c.reason,
                "Scale",
                c.message.clone(),
            )
            .await;
        }
    }
    record_metrics(ctx, &name, &pool.spec, &plan);
    let runners: Vec<scaler::Runner> = plan.views.iter().map(|v| v.runner.clone()).collect();
    ctx.board.record(&crate::pools::Observation {
        pool: &name,
        policy: &pool.spec,
        runners: &runners,
        queued_by_arch: plan.queued_by_arch.clone(),
        decision: &plan.decision,
        now,
    });
    if pool.status.as_ref() != Some(&status) {
        let patch = json!({
            "apiVersion": bootfarm_core::spec::API_VERSION,
            "kind": "RunnerPool",
            "status": status,
        });
        Api::<RunnerPool>::namespaced(ctx.client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
    }
    ctx.activity
        .retain(|n| !n.starts_with(&name) || pods.iter().any(|p| p.name_any() == n));

    let changing = plan.queued > 0
        || d.create > 0
        || !d.delete.is_empty()
        || plan.views.iter().any(|v| {
            matches!(
                v.runner.state,
                RunnerState::Pending | RunnerState::Starting | RunnerState::Terminating
            )
        });
    Ok(Action::requeue(if changing {
        BUSY_RECHECK
    } else if plan.views.is_empty() {
        IDLE_RECHECK
    } else {
        RUNNING_RECHECK
    }))
}

fn record_metrics(ctx: &Context, pool: &str, pool_spec: &RunnerPoolSpec, plan: &PoolPlan) {
    let s = status_of(plan);
    let m = &ctx.metrics;
    m.pool_seen(pool);
    m.runners_desired
        .with_label_values(&[pool])
        .set(f64::from(s.desired));
    // A pool with no arches serves every arch; arches it stopped serving lose their series.
    for arch in bootfarm_core::arch::Arch::ALL {
        if pool_spec.serves(arch) {
            m.arch_seen(arch);
            let n = plan.queued_by_arch.get(&arch).copied().unwrap_or(0);
            m.queue_depth
                .with_label_values(&[pool, arch.as_str()])
                .set(n as f64);
        } else {
            let _ = m.queue_depth.remove_label_values(&[pool, arch.as_str()]);
        }
    }
    let in_state = |state: RunnerState| count_runners(plan, |s| *s == state);
    for (state, n) in [
        ("pending", s.pending),
        ("idle", s.idle),
        ("busy", s.busy),
        ("failed", in_state(RunnerState::Failed)),
        ("terminating", in_state(RunnerState::Terminating)),
    ] {
        m.runners
            .with_label_values(&[pool, state])
            .set(f64::from(n));
    }
}

/// Deletes a runner pod only if it is still the pod we decided about (same uid).
async fn delete_pod(api: &Api<Pod>, name: &str, uid: Option<String>) -> Result<(), kube::Error> {
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

pub fn error_policy(pool: Arc<RunnerPool>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    if matches!(error, ReconcileError::NotSynced) || error.is_conflict() {
        return Action::requeue(Duration::from_millis(500));
    }
    tracing::warn!(pool = %pool.name_any(), kind = error.kind(), error = %error, "RunnerPool reconcile failed");
    Action::requeue(Duration::from_secs(3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use runners::StartEvidence;

    #[test]
    fn the_pool_says_why_its_runners_cannot_start_and_when_they_can_again() {
        let t = |s: i64| Timestamp::from_second(1_800_000_000 + s).expect("in range");
        assert!(conditions_of(&[], None, Some(1), t(0)).is_empty());
        let failing = StartEvidence::Failing {
            pod: "tcg-x86-64-abcde".into(),
            reason: "ErrImageNeverPull".into(),
            message: "Container image \"bootfarm/nope:1\" is not present with pull policy of Never"
                .into(),
        };
        let down = conditions_of(&[], Some(failing.clone()), Some(1), t(0));
        assert_eq!(down.len(), 1);
        assert_eq!(
            (
                down[0].type_.as_str(),
                down[0].status.as_str(),
                down[0].reason.as_str()
            ),
            (RUNNERS_CAN_START, "False", "ErrImageNeverPull")
        );
        assert!(
            down[0].message.starts_with(
                "runner pod tcg-x86-64-abcde cannot start: ErrImageNeverPull: Container image"
            ),
            "{}",
            down[0].message
        );
        // No news keeps the condition; the same news keeps its transition time.
        assert_eq!(conditions_of(&down, None, Some(1), t(5)), down);
        assert_eq!(conditions_of(&down, Some(failing), Some(1), t(9)), down);
        let up = conditions_of(&down, Some(StartEvidence::Started), Some(2), t(10));
        assert_eq!(
            (up[0].status.as_str(), up[0].reason.as_str()),
            ("True", "RunnerStarted")
        );
        assert_ne!(up[0].last_transition_time, down[0].last_transition_time);
        let mut pool = RunnerPool::new("p", RunnerPoolSpec::default());
        pool.status = Some(RunnerPoolStatus {
            conditions: down,
            ..RunnerPoolStatus::default()
        });
        assert_eq!(
            cannot_start(&pool).map(|c| c.reason.as_str()),
            Some("ErrImageNeverPull")
        );
        pool.status = Some(RunnerPoolStatus {
            conditions: up,
            ..RunnerPoolStatus::default()
        });
        assert_eq!(cannot_start(&pool), None);
    }
}
