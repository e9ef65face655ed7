//! The embedded store (standalone mode): SQLite in `DATA_DIR/bootfarm.db`.
//!
//! Each job is its JSON document plus the columns the queue needs indexed (phase, priority,
//! queuedAt, pool, arch, lease expiry, TTL deadline). One connection behind a mutex, used on
//! blocking threads: SQLite serialises writers anyway, and one connection makes every
//! read-modify-write (claim, complete, expire) a plain transaction with no busy retries.
//! WAL with `synchronous=NORMAL` keeps a commit to a WAL append (thousands per second) and
//! loses at most the last transactions on power loss, never consistency.

use super::transitions::{self, Backend, Swap};
use super::valid_name;
use super::{
    Claim, ClaimRequest, CompleteOutcome, Expired, JobCounts, JobFilter, JobStore, LeaseState,
    QueuedCount, StoreError,
};
use crate::metrics::Metrics;
use crate::queue;
use async_trait::async_trait;
use bootfarm_core::result::BootResult;
use bootfarm_core::spec::{BootJob, JobPhase};
use bootfarm_core::Arch;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Transaction};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Schema migrations, applied in order once each (recorded in `schema_migrations`).
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE jobs (
    name          TEXT PRIMARY KEY,
    phase         TEXT NOT NULL,
    priority      INTEGER NOT NULL,
    queued_at     INTEGER,
    created_at    INTEGER NOT NULL,
    pool          TEXT,
    arch          TEXT NOT NULL,
    runner        TEXT,
    lease_expires INTEGER,
    ttl_deadline  INTEGER,
    doc           TEXT NOT NULL
);
CREATE INDEX jobs_queue ON jobs (phase, priority DESC, queued_at, name);
CREATE INDEX jobs_lease ON jobs (phase, lease_expires);
CREATE INDEX jobs_ttl ON jobs (ttl_deadline) WHERE ttl_deadline IS NOT NULL;
CREATE INDEX jobs_created ON jobs (created_at);
"#];

/// How many names `generateName` tries before giving up (collisions are ~1 in 28 million).
const NAME_TRIES: usize = 8;
const GENERATED_SUFFIX: usize = 5;

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    callbacks: crate::callbacks::Callbacks,
}

/// What the store knows of its own ability to keep what it is given.
#[derive(Default)]
struct Health {
    /// The database file as opened: path, device and inode (None in memory).
    file: Option<(PathBuf, u64, u64)>,
    /// Latched once the file was deleted or replaced under us: from then on nothing is
    /// accepted, since nothing written could be found again after a restart.
    broken: Mutex<Option<String>>,
    /// Jobs whose newest state is decided (a lease expired, a timeout passed) but could not be
    /// written (a full disk): served from here, written with the next write that succeeds.
    unsaved: Mutex<BTreeMap<String, BootJob>>,
    /// Why the last write failed, until one succeeds.
    write_error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the data is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Free space below which the data disk counts as full for readiness.
const MIN_FREE_BYTES: u64 = 16 << 20;

fn db_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                C::DiskFull
                    | C::SystemIoFailure
                    | C::ReadOnly
                    | C::CannotOpen
                    | C::DatabaseCorrupt
                    | C::NotADatabase
            ) =>
        {
            StoreError::Storage(format!("sqlite: {e}"))
        }
        _ => StoreError::Backend(format!("sqlite: {e}")),
    }
}

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("stored document: {e}"))
}

fn micros(ts: Timestamp) -> i64 {
    ts.as_microsecond()
}

impl SqliteStore {
    /// Opens (creating if needed) `data_dir/bootfarm.db` and applies pending migrations.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", data_dir.display())))?;
        let path = data_dir.join("bootfarm.db");
        let conn = Connection::open(&path).map_err(db_err)?;
        let mut store = Self::setup(conn, true)?;
        let md = std::fs::metadata(&path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        use std::os::unix::fs::MetadataExt;
        store.health = Arc::new(Health {
            file: Some((path, md.dev(), md.ino())),
            ..Health::default()
        });
        Ok(store)
    }

    /// A private in-memory database (tests, benchmarks).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::setup(Connection::open_in_memory().map_err(db_err)?, false)
    }

    fn setup(mut conn: Connection, wal: bool) -> Result<Self, StoreError> {
        if wal {
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(db_err)?;
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db_err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(db_err)?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            health: Arc::default(),
            metrics: Arc::new(Metrics::new().0),
            callbacks: crate::callbacks::Callbacks::default(),
        })
    }

    /// Counts finished jobs in these metrics (the farm's, served at /metrics).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Where jobs that end are announced for their callbacks.
    pub fn with_callbacks(mut self, callbacks: crate::callbacks::Callbacks) -> Self {
        self.callbacks = callbacks;
        self
    }

    /// A job ended outside [`transitions::transition`]: count it and announce it.
    fn ended(&self, job: &BootJob, now: Timestamp) {
        self.metrics.job_finished(job, now);
        self.callbacks.finished(job);
    }

    /// The database file is still the one we opened; else the store is broken for good.
    fn check_file(&self) -> Result<(), StoreError> {
        if let Some(why) = lock(&self.health.broken).clone() {
            return Err(StoreError::Storage(why));
        }
        let Some((path, dev, ino)) = &self.health.file else {
            return Ok(());
        };
        use std::os::unix::fs::MetadataExt;
        let why = match std::fs::metadata(path) {
            Ok(md) if md.dev() == *dev && md.ino() == *ino => return Ok(()),
            Ok(_) => format!(
                "the database {} was replaced while the operator ran; restart it",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!(
                "the database {} was deleted while the operator ran; restart it",
                path.display()
            ),
            // Cannot tell (a transient stat error): not a verdict.
            Err(_) => return Ok(()),
        };
        tracing::error!(error = %why, "Job store lost: refusing every change from now on");
        *lock(&self.health.broken) = Some(why.clone());
        Err(StoreError::Storage(why))
    }

    /// Runs `f` on the connection in a blocking thread.
    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.check_file()?;
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::Backend("store lock poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store task: {e}")))?
    }

    /// Runs `f` in one transaction, committed when it returns Ok. Changes decided while the
    /// disk was full are written first, in the same transaction.
    async fn tx<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let health = self.health.clone();
        let result = self
            .with(move |conn| {
                let pending: Vec<BootJob> = lock(&health.unsaved).values().cloned().collect();
                let tx = conn.transaction().map_err(db_err)?;
                for job in &pending {
                    write(&tx, job, "INSERT OR REPLACE")?;
                }
                let out = f(&tx)?;
                tx.commit().map_err(db_err)?;
                if !pending.is_empty() {
                    let mut unsaved = lock(&health.unsaved);
                    for job in &pending {
                        let name = job.metadata.name.clone().unwrap_or_default();
                        // Only what was written: a newer decision since stays pending.
                        let same = unsaved.get(&name).is_some_and(|u| {
                            u.metadata.resource_version == job.metadata.resource_version
                                && u.status == job.status
                        });
                        if same {
                            unsaved.remove(&name);
                        }
                    }
                    tracing::info!(
                        jobs = pending.len(),
                        "Wrote the job changes kept in memory while the store could not write"
                    );
                }
                Ok(out)
            })
            .await;
        let mut last = lock(&self.health.write_error);
        match &result {
            Ok(_) => {
                if last.take().is_some() {
                    tracing::info!("The job store can write again");
                }
            }
            Err(StoreError::Storage(why)) => {
                if last.is_none() {
                    tracing::error!(error = %why, "The job store cannot write");
                }
                *last = Some(why.clone());
            }
            Err(_) => {}
        }
        result
    }

    /// Jobs as written, newest first.
    async fn list_stored(&self, filter: &JobFilter) -> Result<Vec<BootJob>, StoreError> {
        let filter = filter.clone();
        self.with(move |conn| {
            let (sql, phase) = match filter.phase {
                Some(p) => (
                    "SELECT doc FROM jobs WHERE phase = ?1 ORDER BY created_at DESC, name DESC",
                    Some(p.as_str()),
                ),
                None => (
                    "SELECT doc FROM jobs WHERE ?1 IS NULL ORDER BY created_at DESC, name DESC",
                    None,
                ),
            };
            let mut stmt = conn.prepare_cached(sql).map_err(db_err)?;
            let mut rows = stmt.query([phase]).map_err(db_err)?;
            let limit = filter.limit.unwrap_or(usize::MAX);
            let mut out = Vec::new();
            while out.len() < limit {
                let Some(row) = rows.next().map_err(db_err)? else {
                    break;
                };
                let doc: String = row.get(0).map_err(db_err)?;
                let job: BootJob = serde_json::from_str(&doc).map_err(json_err)?;
                if filter.matches(&job) {
                    out.push(job);
                }
            }
            Ok(out)
        })
        .await
    }

    /// [`JobStore::expire_leases`] when nothing can be written: the same decisions, kept in
    /// memory (and so served by reads) until a write succeeds.
    async fn end_stale_in_memory(
        &self,
        now: Timestamp,
        why: &str,
    ) -> Result<Vec<Expired>, StoreError> {
        let unsaved = self.unsaved_all();
        let stored = self
            .with(|conn| select_docs(conn, "SELECT doc FROM jobs WHERE phase = 'Running'", []))
            .await?;
        let mut candidates: BTreeMap<String, BootJob> = stored
            .into_iter()
            .map(|j| (j.metadata.name.clone().unwrap_or_default(), j))
            .collect();
        // What memory already decided wins over what the disk still says.
        for (name, job) in unsaved {
            candidates.insert(name, job);
        }
        let mut out = Vec::new();
        let mut decided = lock(&self.health.unsaved);
        for (name, mut job) in candidates {
            let runner = job.status.as_ref().and_then(|s| s.runner.clone());
            let Some(requeued) = queue::end_stale_attempt(&mut job, now) else {
                continue;
            };
            bump_resource_version(&mut job);
            tracing::warn!(job = %name, requeued, error = %why, "Ended a stale attempt in memory: the store cannot write");
            out.push(expired(&job, runner, requeued));
            decided.insert(name, job);
        }
        Ok(out)
    }

    /// Counts from the indexed columns with the jobs changed in memory overlaid (degraded mode).
    async fn counts_with(
        &self,
        unsaved: BTreeMap<String, BootJob>,
    ) -> Result<JobCounts, StoreError> {
        let rows = self
            .with(|conn| {
                let mut stmt = conn
                    .prepare_cached("SELECT name, phase, pool, arch, runner FROM jobs")
                    .map_err(db_err)?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, Option<String>>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, Option<String>>(4)?,
                        ))
                    })
                    .map_err(db_err)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db_err)?;
                Ok(rows)
            })
            .await?;
        let mut counts = JobCounts::default();
        let mut queued: BTreeMap<(Option<String>, Arch), u64> = BTreeMap::new();
        for (name, phase, pool, arch, runner) in rows {
            let (phase, pool, arch, runner) = match unsaved.get(&name) {
                Some(j) => (
                    queue::phase(j),
                    j.spec.pool.clone(),
                    j.spec.arch,
                    j.status.as_ref().and_then(|s| s.runner.clone()),
                ),
                None => {
                    let (Ok(phase), Ok(arch)) = (phase.parse::<JobPhase>(), arch.parse::<Arch>())
                    else {
                        continue;
                    };
                    (phase, pool, arch, runner)
                }
            };
            *counts.by_phase.entry(phase).or_default() += 1;
            match phase {
                JobPhase::Queued => *queued.entry((pool, arch)).or_default() += 1,
                JobPhase::Running => {
                    counts.running.insert(name, runner.unwrap_or_default());
                }
                _ => {}
            }
        }
        counts.queued = queued
            .into_iter()
            .map(|((pool, arch), count)| QueuedCount { pool, arch, count })
            .collect();
        Ok(counts)
    }

    /// A job as decided in memory but not yet written, if any.
    fn unsaved(&self, name: &str) -> Option<BootJob> {
        lock(&self.health.unsaved).get(name).cloned()
    }

    fn unsaved_all(&self) -> BTreeMap<String, BootJob> {
        lock(&self.health.unsaved).clone()
    }

    /// Standalone start-up: every Running job is requeued (or ends in Error after maxAttempts).
    /// Local runners are children of the operator and die with it, so no lease held before a
    /// restart can still be honoured; waiting for those leases to expire would only delay them.
    /// A runner that somehow survived posts with a stale lease and is refused.
    pub async fn requeue_running(&self, now: Timestamp) -> Result<Vec<Expired>, StoreError> {
        let (out, ended) = self
            .tx(move |tx| {
                let jobs = select_docs(tx, "SELECT doc FROM jobs WHERE phase = 'Running'", [])?;
                let (mut out, mut ended) = (Vec::with_capacity(jobs.len()), vec![]);
                for mut job in jobs {
                    let runner = job.status.as_ref().and_then(|s| s.runner.clone());
                    let requeued = queue::release(&mut job, "the operator restarted", now);
                    put(tx, &job)?;
                    out.push(expired(&job, runner, requeued));
                    if !requeued {
                        ended.push(job);
                    }
                }
                Ok((out, ended))
            })
            .await?;
        for job in &ended {
            self.ended(job, now);
        }
        Ok(out)
    }
}

impl SqliteStore {
    /// Ends in Error every queued job naming a pool other than `served`: in standalone mode no
    /// runner would ever claim it, and a job must never wait silently forever.
    pub async fn reject_other_pools(
        &self,
        served: &str,
        now: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        let served = served.to_string();
        let ended = self
            .tx(move |tx| {
                let jobs = select_docs(
                    tx,
                    "SELECT doc FROM jobs WHERE phase = 'Queued' AND pool IS NOT NULL AND pool != ?1",
                    [&served],
                )?;
                let mut ended = Vec::with_capacity(jobs.len());
                for mut job in jobs {
                    let pool = job.spec.pool.clone().unwrap_or_default();
                    let message = format!(
                        "spec.pool: no runner pool {pool:?} here (this farm has one pool, {served:?}; leave spec.pool unset)"
                    );
                    queue::reject_invalid(&mut job, &message, now);
                    put(tx, &job)?;
                    ended.push(job);
                }
                Ok(ended)
            })
            .await?;
        for job in &ended {
            self.ended(job, now);
        }
        Ok(ended
            .into_iter()
            .map(|j| j.metadata.name.unwrap_or_default())
            .collect())
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction().map_err(db_err)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
    )
    .map_err(db_err)?;
    let done: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(db_err)?;
    let done = usize::try_from(done).map_err(|_| {
        StoreError::Backend(format!("database schema version {done} is not a version"))
    })?;
    if done > MIGRATIONS.len() {
        return Err(StoreError::Backend(format!(
            "database schema version {done} is newer than this operator ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        tx.execute_batch(sql).map_err(db_err)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![
                i64::try_from(i + 1).unwrap_or(i64::MAX),
                Timestamp::now().to_string()
            ],
        )
        .map_err(db_err)?;
    }
    tx.commit().map_err(db_err)
}

fn select_docs<P: rusqlite::Params>(
    tx: &Connection,
    sql: &str,
    params: P,
) -> Result<Vec<BootJob>, StoreError> {
    let mut stmt = tx.prepare_cached(sql).map_err(db_err)?;
    let docs = stmt
        .query_map(params, |r| r.get::<_, String>(0))
        .map_err(db_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err)?;
    docs.iter()
        .map(|d| serde_json::from_str(d).map_err(json_err))
        .collect()
}

fn get_doc(tx: &Connection, name: &str) -> Result<Option<BootJob>, StoreError> {
    let doc: Option<String> = tx
        .prepare_cached("SELECT doc FROM jobs WHERE name = ?1")
        .map_err(db_err)?
        .query_row([name], |r| r.get(0))
        .optional()
        .map_err(db_err)?;
    doc.map(|d| serde_json::from_str(&d).map_err(json_err))
        .transpose()
}

fn col_time(t: Option<&Timestamp>) -> Option<i64> {
    t.copied().map(micros)
}

fn bump_resource_version(job: &mut BootJob) {
    let rv = job
        .metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    job.metadata.resource_version = Some((rv + 1).to_string());
}

/// Writes the job (insert or replace), its indexed columns derived from the document.
fn put(tx: &Connection, job: &BootJob) -> Result<(), StoreError> {
    let mut job = job.clone();
    bump_resource_version(&mut job);
    write(tx, &job, "INSERT OR REPLACE")
}

fn write(tx: &Connection, job: &BootJob, verb: &str) -> Result<(), StoreError> {
    let status = job.status.clone().unwrap_or_default();
    let ttl_deadline = match (
        job.spec.ttl_seconds_after_finished,
        status.phase.is_finished(),
    ) {
        (Some(ttl), true) => col_time(status.completion_time.as_ref()).map(|done| {
            done.saturating_add(
                i64::try_from(ttl)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1_000_000),
            )
        }),
        _ => None,
    };
    let created = job
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| micros(t.0))
        .unwrap_or(0);
    let doc = serde_json::to_string(job).map_err(json_err)?;
    let sql = format!(
        "{verb} INTO jobs (name, phase, priority, queued_at, created_at, pool, arch, runner, lease_expires, ttl_deadline, doc)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    );
    tx.prepare_cached(&sql)
        .map_err(db_err)?
        .execute(params![
            job.metadata.name.as_deref().unwrap_or_default(),
            status.phase.as_str(),
            job.spec.priority,
            col_time(status.queued_at.as_ref()),
            created,
            job.spec.pool,
            job.spec.arch.as_str(),
            status.runner,
            col_time(status.lease_expires_at.as_ref()),
            ttl_deadline,
            doc,
        ])
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                StoreError::AlreadyExists(job.metadata.name.clone().unwrap_or_default())
            }
            e => db_err(e),
        })?;
    Ok(())
}

fn expired(job: &BootJob, runner: Option<String>, requeued: bool) -> Expired {
    Expired {
        name: job.metadata.name.clone().unwrap_or_default(),
        runner,
        attempts: job.status.as_ref().map(|s| s.attempts).unwrap_or(0),
        requeued,
    }
}

/// `generateName` + five random characters from Kubernetes' alphabet (no vowels, no 0/1/3).
fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let random = uuid::Uuid::new_v4();
    let suffix: String = random.as_bytes()[..GENERATED_SUFFIX]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    format!("{prefix}{suffix}")
}

fn prepare_new(job: &mut BootJob, name: String, now: Timestamp) {
    job.metadata.name = Some(name);
    job.metadata.uid = Some(uuid::Uuid::new_v4().to_string());
    job.metadata.creation_timestamp = Some(Time(now));
    job.metadata.resource_version = Some("1".into());
    job.metadata.generation = Some(1);
    job.metadata.deletion_timestamp = None;
    job.status = None;
    queue::enqueue(job, now);
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn create(&self, mut job: BootJob, now: Timestamp) -> Result<BootJob, StoreError> {
        // A given name wins over generateName, as in Kubernetes.
        let given = job.metadata.name.clone().filter(|n| !n.is_empty());
        let prefix = job.metadata.generate_name.clone().filter(|n| !n.is_empty());
        match (&given, &prefix) {
            (Some(n), _) if !valid_name(n) => {
                return Err(StoreError::Invalid(format!(
                    "metadata.name {n:?} must be a lowercase DNS subdomain (a-z, 0-9, '-', '.'), at most 253 characters"
                )))
            }
            (None, Some(p))
                if !bootfarm_core::names::is_generate_name_prefix(p, GENERATED_SUFFIX) =>
            {
                return Err(StoreError::Invalid(format!(
                    "metadata.generateName {p:?} must be a lowercase DNS subdomain prefix"
                )))
            }
            (None, None) => {
                return Err(StoreError::Invalid(
                    "metadata.name or metadata.generateName is required".into(),
                ))
            }
            _ => {}
        }
        self.tx(move |tx| {
            let tries = if given.is_some() { 1 } else { NAME_TRIES };
            for _ in 0..tries {
                let name = match (&given, &prefix) {
                    (Some(n), _) => n.clone(),
                    (None, Some(p)) => generated_name(p),
                    (None, None) => unreachable_name(),
                };
                prepare_new(&mut job, name, now);
                match write(tx, &job, "INSERT") {
                    Ok(()) => return Ok(job),
                    Err(StoreError::AlreadyExists(n)) if given.is_some() => {
                        return Err(StoreError::AlreadyExists(n))
                    }
                    Err(StoreError::AlreadyExists(_)) => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(StoreError::Conflict(
                "could not generate a free name; try again".into(),
            ))
        })
        .await
    }

    async fn get(&self, name: &str) -> Result<Option<BootJob>, StoreError> {
        self.load(name).await
    }

    async fn list(&self, filter: &JobFilter) -> Result<Vec<BootJob>, StoreError> {
        let unsaved = self.unsaved_all();
        if unsaved.is_empty() {
            return self.list_stored(filter).await;
        }
        // Degraded (changes kept in memory): read everything and overlay them.
        let all = self
            .list_stored(&JobFilter {
                limit: None,
                ..JobFilter::default()
            })
            .await?;
        let mut out: Vec<BootJob> = all
            .into_iter()
            .map(|j| {
                let name = j.metadata.name.clone().unwrap_or_default();
                unsaved.get(&name).cloned().unwrap_or(j)
            })
            .filter(|j| filter.matches(j))
            .collect();
        out.truncate(filter.limit.unwrap_or(usize::MAX));
        Ok(out)
    }

    async fn cancel(&self, name: &str, now: Timestamp) -> Result<Option<BootJob>, StoreError> {
        transitions::cancel(self, name, now).await
    }

    async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.with(move |conn| {
            let n = conn
                .execute("DELETE FROM jobs WHERE name = ?1", [name])
                .map_err(db_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn claim(
        &self,
        req: &ClaimRequest,
        lease_ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<Claim>, StoreError> {
        Ok(transitions::claim(self, req, lease_ttl, now)
            .await?
            .map(|won| won.claim))
    }

    async fn heartbeat(
        &self,
        name: &str,
        lease_id: &str,
        lease_ttl: Duration,
        now: Timestamp,
    ) -> Result<LeaseState, StoreError> {
        match transitions::heartbeat(self, name, lease_id, lease_ttl, now).await {
            Ok((state, _)) => Ok(state),
            // A full disk must not stop boots that are going well: renew in memory.
            Err(StoreError::Storage(_)) if lock(&self.health.broken).is_none() => {
                let Some(mut job) = self.load(name).await? else {
                    return Ok(LeaseState::Canceled);
                };
                let state = queue::heartbeat(&mut job, lease_id, lease_ttl, now);
                if matches!(state, LeaseState::Active { .. }) {
                    bump_resource_version(&mut job);
                    lock(&self.health.unsaved).insert(name.to_string(), job);
                }
                Ok(state)
            }
            Err(e) => Err(e),
        }
    }

    async fn complete(
        &self,
        name: &str,
        lease_id: &str,
        result: &BootResult,
        now: Timestamp,
    ) -> Result<CompleteOutcome, StoreError> {
        Ok(transitions::complete(self, name, lease_id, result, now)
            .await?
            .0)
    }

    async fn release(
        &self,
        name: &str,
        lease_id: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        transitions::release(self, name, lease_id, reason, now)
            .await
            .map(drop)
    }

    async fn expire_leases(&self, now: Timestamp) -> Result<Vec<Expired>, StoreError> {
        match transitions::expire_leases(self, now).await {
            Err(StoreError::Storage(why)) if lock(&self.health.broken).is_none() => {
                // The disk is full: leases and timeouts must end jobs all the same. Decide in
                // memory (reads still work), serve the decisions, write them when possible.
                self.end_stale_in_memory(now, &why).await
            }
            other => other,
        }
    }

    async fn finished_before(&self, now: Timestamp) -> Result<Vec<String>, StoreError> {
        let unsaved = self.unsaved_all();
        let names = self
            .with(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT name FROM jobs WHERE ttl_deadline <= ?1 ORDER BY ttl_deadline",
                    )
                    .map_err(db_err)?;
                let names = stmt
                    .query_map([micros(now)], |r| r.get(0))
                    .map_err(db_err)?
                    .collect::<Result<Vec<String>, _>>()
                    .map_err(db_err)?;
                Ok(names)
            })
            .await?;
        // A job changed in memory is not deleted before that change is written.
        Ok(names
            .into_iter()
            .filter(|n| !unsaved.contains_key(n))
            .collect())
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.check_file()?;
        let stuck =
            !lock(&self.health.unsaved).is_empty() || lock(&self.health.write_error).is_some();
        if stuck {
            // Space may be back: write what was kept in memory (a transaction does that first)
            // rather than wait for the next change, which may never come.
            let _ = self.tx(|_| Ok(())).await;
        }
        let pending = lock(&self.health.unsaved).len();
        if let Some(why) = lock(&self.health.write_error).clone() {
            return Err(StoreError::Storage(if pending > 0 {
                format!("{why}; {pending} job change(s) kept in memory until it can write")
            } else {
                why
            }));
        }
        if pending > 0 {
            return Err(StoreError::Storage(format!(
                "{pending} job change(s) kept in memory until they are written"
            )));
        }
        if let Some((path, _, _)) = &self.health.file {
            if let Some(dir) = path.parent() {
                if let Ok(st) = nix::sys::statvfs::statvfs(dir) {
                    let free = st.blocks_available().saturating_mul(st.fragment_size());
                    if free < MIN_FREE_BYTES {
                        return Err(StoreError::Storage(format!(
                            "only {free} bytes free on the data disk {}",
                            dir.display()
                        )));
                    }
                }
            }
        }
        self.get("readyz.probe.invalid-").await.map(drop)
    }

    async fn counts(&self) -> Result<JobCounts, StoreError> {
        let unsaved = self.unsaved_all();
        if !unsaved.is_empty() {
            return self.counts_with(unsaved).await;
        }
        self.with(move |conn| {
            let mut counts = JobCounts::default();
            let mut stmt = conn
                .prepare_cached("SELECT phase, COUNT(*) FROM jobs GROUP BY phase")
                .map_err(db_err)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(db_err)?;
            for row in rows {
                let (phase, n) = row.map_err(db_err)?;
                if let Ok(phase) = phase.parse::<JobPhase>() {
                    counts.by_phase.insert(phase, u64::try_from(n).unwrap_or(0));
                }
            }
            let mut stmt = conn
                .prepare_cached(
                    "SELECT pool, arch, COUNT(*) FROM jobs WHERE phase = 'Queued' GROUP BY pool, arch",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(db_err)?;
            for row in rows {
                let (pool, arch, n) = row.map_err(db_err)?;
                if let Ok(arch) = arch.parse::<Arch>() {
                    counts.queued.push(QueuedCount {
                        pool,
                        arch,
                        count: u64::try_from(n).unwrap_or(0),
                    });
                }
            }
            let mut stmt = conn
                .prepare_cached("SELECT name, runner FROM jobs WHERE phase = 'Running'")
                .map_err(db_err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
                })
                .map_err(db_err)?;
            for row in rows {
                let (name, runner) = row.map_err(db_err)?;
                counts.running.insert(name, runner.unwrap_or_default());
            }
            Ok(counts)
        })
        .await
    }
}

#[async_trait]
impl Backend for SqliteStore {
    async fn load(&self, name: &str) -> Result<Option<BootJob>, StoreError> {
        if let Some(job) = self.unsaved(name) {
            return Ok(Some(job));
        }
        let name = name.to_string();
        self.with(move |conn| get_doc(conn, &name)).await
    }

    async fn compare_and_swap(&self, job: &BootJob) -> Result<Swap, StoreError> {
        let mut job = job.clone();
        self.tx(move |tx| {
            let name = job.metadata.name.clone().unwrap_or_default();
            let Some(current) = get_doc(tx, &name)? else {
                return Ok(Swap::Gone);
            };
            if current.metadata.resource_version != job.metadata.resource_version {
                return Ok(Swap::Conflict);
            }
            bump_resource_version(&mut job);
            write(tx, &job, "INSERT OR REPLACE")?;
            Ok(Swap::Written(Box::new(job)))
        })
        .await
    }

    async fn claim_candidates(
        &self,
        req: &ClaimRequest,
        limit: usize,
    ) -> Result<Vec<BootJob>, StoreError> {
        let req = req.clone();
        self.with(move |conn| {
            // The index narrows by pool and arch; `transitions::claimable_by` decides.
            let mut sql = String::from(
                "SELECT doc FROM jobs WHERE phase = 'Queued' AND (pool IS NULL OR pool = ?1)",
            );
            if !req.arches.is_empty() {
                let marks: Vec<String> = (0..req.arches.len())
                    .map(|i| format!("?{}", i + 2))
                    .collect();
                sql.push_str(&format!(" AND arch IN ({})", marks.join(", ")));
            }
            sql.push_str(&format!(
                " ORDER BY priority DESC, queued_at, name LIMIT {}",
                limit.max(1)
            ));
            let mut values: Vec<String> = vec![req.pool.clone()];
            values.extend(req.arches.iter().map(|a| Arch::as_str(*a).to_string()));
            select_docs(conn, &sql, params_from_iter(values))
        })
        .await
    }

    async fn running(&self) -> Result<Vec<BootJob>, StoreError> {
        let unsaved = self.unsaved_all();
        let stored = self
            .with(|conn| select_docs(conn, "SELECT doc FROM jobs WHERE phase = 'Running'", []))
            .await?;
        let mut jobs: BTreeMap<String, BootJob> = stored
            .into_iter()
            .map(|j| (j.metadata.name.clone().unwrap_or_default(), j))
            .collect();
        for (name, job) in unsaved {
            jobs.insert(name, job);
        }
        Ok(jobs
            .into_values()
            .filter(|j| queue::phase(j) == JobPhase::Running)
            .collect())
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn callbacks(&self) -> &crate::callbacks::Callbacks {
        &self.callbacks
    }
}

/// Only reached if the match in `create` is wrong; a visible name beats a panic.
fn unreachable_name() -> String {
    generated_name("bootjob-")
}

#[cfg(test)]
mod tests;
