//! `KubeJobStore`: the [`JobStore`] contract over BootJob objects. All queue state lives in
//! the BootJobs' `status`; there is no other database.
//!
//! Every transition is one of the pure functions in [`crate::queue`], written with a
//! `replace_status` that carries the object's `metadata.resourceVersion`: the API server refuses
//! it with 409 Conflict when anyone else wrote first. A claim that loses moves on to the next
//! candidate, so a job is never handed out twice; other writers re-read and retry.

use super::runners::{self, RunnerActivity};
use super::status::{StatusWriter, WriteError};
use super::view::JobView;
use crate::metrics::Metrics;
use crate::queue;
use crate::store::transitions::{self, Backend, Swap};
use crate::store::valid_name;
use crate::store::{
    Claim, ClaimRequest, CompleteOutcome, Expired, JobCounts, JobFilter, JobStore, LeaseState,
    QueuedCount, StoreError,
};
use async_trait::async_trait;
use bootfarm_core::result::BootResult;
use bootfarm_core::spec::{BootJob, JobPhase, RunnerPool};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The field manager of every status write by the operator.
pub const FIELD_MANAGER: &str = "bootfarm-operator";

#[derive(Clone)]
pub struct KubeJobStore {
    jobs: Api<BootJob>,
    pods: Api<Pod>,
    /// The controller's BootJob cache, once synced: reads, claim candidates and counts come
    /// from here, never from the API server. Stale entries are harmless (their
    /// resourceVersion makes a write fail, and the retry reads fresh).
    cache: Arc<OnceLock<Store<BootJob>>>,
    /// Own writes the watch has not delivered, leases renewed in memory, claims in flight.
    view: Arc<JobView>,
    /// The runner pods, once synced: only real pods get the autoscaler annotations.
    runner_pods: Arc<OnceLock<Store<Pod>>>,
    /// The RunnerPools, once synced: a runner that names no arches serves its pool's arches.
    pools: Arc<OnceLock<Store<RunnerPool>>>,
    activity: Arc<RunnerActivity>,
    /// The one writer of status (conditional, bounded, counted) and where finished jobs count.
    writer: StatusWriter,
    metrics: Arc<Metrics>,
    /// No lease expires before this: runners could not renew while no operator was up, so a
    /// restarted operator gives every lease one full TTL to be renewed with it.
    lease_floor: Timestamp,
    callbacks: crate::callbacks::Callbacks,
}

fn backend(e: kube::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

impl KubeJobStore {
    pub fn new(
        jobs: Api<BootJob>,
        pods: Api<Pod>,
        activity: Arc<RunnerActivity>,
        metrics: Arc<Metrics>,
    ) -> Self {
        KubeJobStore {
            jobs,
            pods,
            cache: Arc::default(),
            view: Arc::default(),
            runner_pods: Arc::default(),
            pools: Arc::default(),
            activity,
            writer: StatusWriter::new(metrics.clone()),
            metrics,
            lease_floor: Timestamp::UNIX_EPOCH,
            callbacks: crate::callbacks::Callbacks::default(),
        }
    }

    /// Where jobs that end are announced for their callbacks.
    pub fn with_callbacks(mut self, callbacks: crate::callbacks::Callbacks) -> Self {
        self.callbacks = callbacks;
        self
    }

    /// Leases do not expire before `started + lease_ttl` (the operator's start).
    pub fn with_lease_grace(mut self, started: Timestamp, lease_ttl: Duration) -> Self {
        self.lease_floor = queue::add(started, lease_ttl);
        self
    }

    /// Whether a Running job's lease has run out, counting the restart grace.
    pub fn lease_expired(&self, job: &BootJob, now: Timestamp) -> bool {
        now >= self.lease_floor && queue::lease_expired(job, now)
    }

    /// When a Running job's lease runs out, counting the restart grace.
    pub fn lease_deadline(&self, job: &BootJob) -> Option<Timestamp> {
        let expires = job.status.as_ref().and_then(|s| s.lease_expires_at)?;
        Some(expires.max(self.lease_floor))
    }

    /// The status writer (the controllers write through it too).
    pub fn writer(&self) -> &StatusWriter {
        &self.writer
    }

    pub fn view(&self) -> &JobView {
        &self.view
    }

    /// From now on serve reads, claim candidates and counts from this synced reflector store.
    pub fn use_job_cache(&self, cache: Store<BootJob>) {
        let _ = self.cache.set(cache);
    }

    /// From now on annotate only runners that are pods in this synced store.
    pub fn use_pod_cache(&self, pods: Store<Pod>) {
        let _ = self.runner_pods.set(pods);
    }

    /// From now on complete runners' arches from this synced RunnerPool store.
    pub fn use_pool_cache(&self, pools: Store<RunnerPool>) {
        let _ = self.pools.set(pools);
    }

    fn cached_jobs(&self) -> Option<Vec<Arc<BootJob>>> {
        self.cache.get().map(|c| self.view.resolve_all(&c.state()))
    }

    pub fn activity(&self) -> &Arc<RunnerActivity> {
        &self.activity
    }

    /// Every job as this operator knows it; none before the watch cache has synced (a LIST per
    /// claim poll of every runner would cost far more than the moment's wait).
    fn known_jobs(&self) -> Vec<Arc<BootJob>> {
        self.cached_jobs().unwrap_or_default()
    }

    /// Writes `job.status` with its resourceVersion as the precondition.
    async fn write_status(&self, job: &BootJob) -> Result<BootJob, WriteError> {
        self.write_job_status(&self.jobs, job).await
    }

    /// Writes `job.status` through `api` (the controllers' writes too), remembering the stored
    /// version so the next read does not wait for the watch to deliver it.
    pub async fn write_job_status(
        &self,
        api: &Api<BootJob>,
        job: &BootJob,
    ) -> Result<BootJob, WriteError> {
        let stored = self.writer.write(api, job).await?;
        self.view.wrote(&stored);
        Ok(stored)
    }

    /// A GET from the API server, with the live lease.
    async fn fetch(&self, name: &str) -> Result<Option<BootJob>, StoreError> {
        let got = self.jobs.get_opt(name).await.map_err(backend)?;
        Ok(got.map(|j| self.view.with_live_lease(&j)))
    }

    /// Creates `job` and writes it Queued (the 201 answer then says Queued).
    async fn create_queued(&self, job: BootJob, now: Timestamp) -> Result<BootJob, StoreError> {
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        let mut stored = match self.jobs.create(&pp, &job).await {
            Ok(j) => j,
            Err(e) if is_status(&e, 409) => {
                return Err(StoreError::AlreadyExists(job.name_any()));
            }
            Err(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => {
                return Err(StoreError::Invalid(s.message));
            }
            Err(e) => return Err(backend(e)),
        };
        // The controller would enqueue it too; doing it here makes the 201 answer say Queued.
        queue::enqueue(&mut stored, now);
        match self.write_status(&stored).await {
            Ok(j) => Ok(j),
            // The controller got there first: answer with what is stored.
            Err(e) if e.code() == Some(409) => {
                self.jobs.get(&stored.name_any()).await.map_err(backend)
            }
            Err(e) => Err(written(e)),
        }
    }

    /// Marks a runner pod busy or idle for cluster autoscalers (best effort: a runner that is
    /// not a pod, or a pod already gone, is fine).
    async fn annotate_runner(&self, runner: &str, busy: bool, now: Timestamp) {
        if let Some(pods) = self.runner_pods.get() {
            let ns = self.jobs.namespace().unwrap_or_default();
            if pods.get(&ObjectRef::new(runner).within(ns)).is_none() {
                // A runner outside the cluster (or a load generator): no pod to mark.
                return;
            }
        }
        let patch = runners::eviction_patch(busy, now);
        let pp = kube::api::PatchParams::default();
        match self
            .pods
            .patch(runner, &pp, &kube::api::Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => tracing::warn!(runner, error = %e, "Annotating runner pod failed"),
        }
    }
}

#[async_trait]
impl JobStore for KubeJobStore {
    async fn create(&self, mut job: BootJob, now: Timestamp) -> Result<BootJob, StoreError> {
        job.status = None;
        // With the finalizer from the start, the controller has no patch to make to add it.
        let finalizers = job.metadata.finalizers.get_or_insert_with(Vec::new);
        if !finalizers.iter().any(|f| f == super::bootjob::FINALIZER) {
            finalizers.push(super::bootjob::FINALIZER.to_string());
        }
        // Held while this request creates and queues it, so the controller, seeing the new
        // object, does not race the same admission into a conflict.
        let name = job.name_any();
        self.view.reserve(&name);
        let created = self.create_queued(job, now).await;
        self.view.unreserve(&name);
        created
    }

    async fn get(&self, name: &str) -> Result<Option<BootJob>, StoreError> {
        if !valid_name(name) {
            return Ok(None);
        }
        self.load(name).await
    }

    async fn list(&self, filter: &JobFilter) -> Result<Vec<BootJob>, StoreError> {
        let selector = filter
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let items: Vec<BootJob> = match self.cached_jobs() {
            Some(jobs) => jobs.iter().map(|j| (**j).clone()).collect(),
            None => {
                let lp = if selector.is_empty() {
                    ListParams::default()
                } else {
                    ListParams::default().labels(&selector)
                };
                let list = self.jobs.list(&lp).await.map_err(|e| match e {
                    kube::Error::Api(s) if s.code == 400 => StoreError::Invalid(s.message),
                    e => backend(e),
                })?;
                list.items
                    .iter()
                    .map(|j| self.view.with_live_lease(j))
                    .collect()
            }
        };
        let mut jobs: Vec<BootJob> = items.into_iter().filter(|j| filter.matches(j)).collect();
        jobs.sort_by(|a, b| {
            b.metadata
                .creation_timestamp
                .cmp(&a.metadata.creation_timestamp)
                .then_with(|| b.name_any().cmp(&a.name_any()))
        });
        if let Some(limit) = filter.limit {
            jobs.truncate(limit);
        }
        Ok(jobs)
    }

    async fn cancel(&self, name: &str, now: Timestamp) -> Result<Option<BootJob>, StoreError> {
        transitions::cancel(self, name, now).await
    }

    async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        if !valid_name(name) {
            return Ok(false);
        }
        self.view.forget(name);
        match self.jobs.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 404) => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }

    async fn claim(
        &self,
        req: &ClaimRequest,
        lease_ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Claim>, StoreError> {
        if self.activity.is_draining(&req.runner_id) {
            return Ok(None);
        }
        self.activity.polled(&req.runner_id, now);
        let req = &self.complete_arches(req);
        let Some(won) = transitions::claim(self, req, lease_ttl, now).await? else {
            return Ok(None);
        };
        if self.activity.is_draining(&req.runner_id) {
            // Scale-down chose this runner while we were claiming: put the job back as it was
            // (no attempt used) rather than lose it with the pod.
            self.unclaim(won.claim.job, won.before).await;
            return Ok(None);
        }
        self.activity.busy(&req.runner_id, now);
        self.annotate_runner(&req.runner_id, true, now).await;
        tracing::debug!(job = %won.claim.job.name_any(), runner = %req.runner_id, "Claim won");
        Ok(Some(won.claim))
    }

    async fn heartbeat(
        &self,
        name: &str,
        lease_id: &str,
        lease_ttl: Duration,
        now: Timestamp,
    ) -> Result<LeaseState, StoreError> {
        // Renewed in memory, never written: a status write per runner every few seconds is
        // what a hundred runners must not cost (see `view`). A job being deleted is canceled.
        if !valid_name(name) {
            return Ok(LeaseState::Canceled);
        }
        let Some(mut job) = self.load(name).await? else {
            return Ok(LeaseState::Canceled);
        };
        if job.metadata.deletion_timestamp.is_some() && queue::lease_is_current(&job, lease_id) {
            return Ok(LeaseState::Canceled);
        }
        let state = queue::heartbeat(&mut job, lease_id, lease_ttl, now);
        if let LeaseState::Active { expires_at } = state {
            self.view.renew(name, lease_id, expires_at);
            if let Some(runner) = job.status.as_ref().and_then(|s| s.runner.as_deref()) {
                self.activity.busy(runner, now);
            }
        }
        Ok(state)
    }

    async fn complete(
        &self,
        name: &str,
        lease_id: &str,
        result: &BootResult,
        now: Timestamp,
    ) -> Result<CompleteOutcome, StoreError> {
        let (outcome, runner) = transitions::complete(self, name, lease_id, result, now).await?;
        if let Some(runner) = runner {
            self.activity.idle(&runner, now);
            self.annotate_runner(&runner, false, now).await;
        }
        Ok(outcome)
    }

    async fn release(
        &self,
        name: &str,
        lease_id: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        if let Some(runner) = transitions::release(self, name, lease_id, reason, now).await? {
            self.activity.idle(&runner, now);
            self.annotate_runner(&runner, false, now).await;
        }
        Ok(())
    }

    async fn expire_leases(&self, now: Timestamp) -> Result<Vec<Expired>, StoreError> {
        if now < self.lease_floor {
            return Ok(Vec::new());
        }
        let expired = transitions::expire_leases(self, now).await?;
        for e in &expired {
            tracing::info!(job = %e.name, runner = ?e.runner, requeued = e.requeued, "Lease expired");
            if let Some(r) = &e.runner {
                self.activity.idle(r, now);
            }
        }
        Ok(expired)
    }

    async fn finished_before(&self, now: Timestamp) -> Result<Vec<String>, StoreError> {
        Ok(self
            .known_jobs()
            .iter()
            .filter(|j| queue::ttl_expired(j, now))
            .map(|j| j.name_any())
            .collect())
    }

    async fn counts(&self) -> Result<JobCounts, StoreError> {
        Ok(count_jobs(self.known_jobs().iter().map(|j| &**j)))
    }
}

impl KubeJobStore {
    /// Restores a job's pre-claim status (conditional on the claim's own write). If anything
    /// changed since, the lease simply runs out and the job is retried.
    async fn unclaim(
        &self,
        mut claimed: BootJob,
        before: Option<bootfarm_core::spec::BootJobStatus>,
    ) {
        let name = claimed.name_any();
        claimed.status = before;
        match self.write_status(&claimed).await {
            Ok(_) => tracing::info!(job = %name, "Claim undone: its runner is being scaled down"),
            Err(e) => {
                tracing::warn!(job = %name, error = %e, "Undoing a claim failed; the lease will expire")
            }
        }
    }

    /// A runner that names no arches serves those of its pool (when the pool is known), so it
    /// does not take work another pool was scaled up for.
    fn complete_arches(&self, req: &ClaimRequest) -> ClaimRequest {
        let mut req = req.clone();
        if req.arches.is_empty() {
            if let Some(pool) = self
                .pools
                .get()
                .and_then(|p| p.find(|p| p.metadata.name.as_deref() == Some(req.pool.as_str())))
            {
                req.arches = pool.spec.arches.clone();
            }
        }
        req
    }

    /// Requeues (or ends in Error) one job whose attempt is stale, re-checked on a fresh read.
    pub async fn expire_one(
        &self,
        name: &str,
        now: Timestamp,
    ) -> Result<Option<Expired>, StoreError> {
        if now < self.lease_floor {
            return Ok(None);
        }
        let expired = transitions::expire_one(self, name, now).await?;
        if let Some(e) = &expired {
            tracing::info!(job = name, runner = ?e.runner, requeued = e.requeued, "Lease expired");
            if let Some(r) = &e.runner {
                self.activity.idle(r, now);
            }
        }
        Ok(expired)
    }
}

#[async_trait]
impl Backend for KubeJobStore {
    async fn load(&self, name: &str) -> Result<Option<BootJob>, StoreError> {
        let Some(cache) = self.cache.get() else {
            return self.fetch(name).await;
        };
        let ns = self.jobs.namespace().unwrap_or_default();
        let cached = cache.get(&ObjectRef::new(name).within(ns));
        match self.view.resolve(name, cached.as_deref()) {
            Some(job) => Ok(Some(job)),
            // Not seen yet (just applied with kubectl), or no such job: ask once.
            None => self.fetch(name).await,
        }
    }

    async fn load_fresh(&self, name: &str) -> Result<Option<BootJob>, StoreError> {
        self.fetch(name).await
    }

    async fn compare_and_swap(&self, job: &BootJob) -> Result<Swap, StoreError> {
        let outcome = self.write_status(job).await;
        let name = job.name_any();
        match outcome {
            // A claim's hold on its job ends with its write: the view now shows the outcome.
            Ok(stored) => {
                self.view.unreserve(&name);
                Ok(Swap::Written(Box::new(stored)))
            }
            // The cache is behind on this job: a claim keeps holding it (until the hold ends,
            // long after the watch caught up) so that its next round tries another job.
            Err(e) if e.code() == Some(409) => Ok(Swap::Conflict),
            Err(e) => {
                self.view.unreserve(&name);
                if e.code() == Some(404) {
                    Ok(Swap::Gone)
                } else {
                    Err(written(e))
                }
            }
        }
    }

    async fn claim_candidates(
        &self,
        req: &ClaimRequest,
        limit: usize,
    ) -> Result<Vec<BootJob>, StoreError> {
        // Claims run side by side; each holds the job it writes, so concurrent claims write
        // different jobs instead of conflicting over the same first one.
        if limit == 0 {
            return Ok(Vec::new());
        }
        let jobs = self.known_jobs();
        let mut candidates: Vec<&BootJob> = jobs
            .iter()
            .map(|j| &**j)
            .filter(|j| transitions::claimable_by(j, req))
            .collect();
        // The best first without a key per comparison: thousands may be queued.
        candidates.sort_by_cached_key(|j| queue::claim_order(j));
        Ok(candidates
            .into_iter()
            .find(|j| {
                self.view
                    .reserve(j.metadata.name.as_deref().unwrap_or_default())
            })
            .map(|j| vec![j.clone()])
            .unwrap_or_default())
    }

    async fn running(&self) -> Result<Vec<BootJob>, StoreError> {
        Ok(self
            .known_jobs()
            .into_iter()
            .filter(|j| queue::phase(j) == JobPhase::Running)
            .map(|j| (*j).clone())
            .collect())
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn callbacks(&self) -> &crate::callbacks::Callbacks {
        &self.callbacks
    }
}

fn written(e: WriteError) -> StoreError {
    match e {
        WriteError::Kube(e) => backend(e),
        e @ WriteError::Timeout(_) => StoreError::Backend(e.to_string()),
    }
}

/// Jobs by phase, queued by (pool, arch), running by runner.
pub fn count_jobs<'a>(jobs: impl IntoIterator<Item = &'a BootJob>) -> JobCounts {
    let mut by_phase = BTreeMap::new();
    let mut queued: BTreeMap<(Option<String>, bootfarm_core::Arch), u64> = BTreeMap::new();
    let mut running = BTreeMap::new();
    for job in jobs {
        let phase = queue::phase(job);
        *by_phase.entry(phase).or_insert(0) += 1;
        match phase {
            JobPhase::Queued => {
                *queued
                    .entry((job.spec.pool.clone(), job.spec.arch))
                    .or_insert(0) += 1;
            }
            JobPhase::Running => {
                if let Some(r) = job.status.as_ref().and_then(|s| s.runner.clone()) {
                    running.insert(job.name_any(), r);
                }
            }
            _ => {}
        }
    }
    JobCounts {
        by_phase,
        queued: queued
            .into_iter()
            .map(|((pool, arch), count)| QueuedCount { pool, arch, count })
            .collect(),
        running,
    }
}

/// Deletes `name` only if it is still the object with `uid` (a re-created job of the same
/// name is not ours to delete).
pub async fn delete_job_with_uid(
    jobs: &Api<BootJob>,
    name: &str,
    uid: Option<String>,
) -> Result<(), kube::Error> {
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match jobs.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
        Err(e) => Err(e),
    }
}
