//! The periodic chores of the embedded store: watch that it can still keep what it is given,
//! and delete finished jobs, with their files, past `ttlSecondsAfterFinished`. (Lease expiry is part of the supervisor's loop: a runner whose
//! lease ran out is hung, and the same tick replaces it.)

use crate::api::AppState;
use crate::files::JobFiles;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TICK: Duration = Duration::from_secs(1);

pub async fn run(state: AppState, files: JobFiles, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_ready = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Noticed within a tick even without traffic: a lost database, a full disk.
        match state.store.ready().await {
            Ok(()) if !was_ready => {
                tracing::info!("The job store is ready again");
                was_ready = true;
            }
            Err(e) if was_ready => {
                tracing::error!(error = %e, "The job store is not ready; /readyz fails until it is");
                was_ready = false;
            }
            _ => {}
        }
        once(&state, &files).await;
    }
}

async fn once(state: &AppState, files: &JobFiles) {
    let now = jiff::Timestamp::now();
    match state.store.finished_before(now).await {
        Ok(names) => {
            for name in names {
                // Files first: a crash in between leaves a job without files (harmless), never
                // files without a job (a leak).
                if let Err(e) = files.remove(&name) {
                    tracing::warn!(job = %name, error = %e, "Removing job files failed");
                    continue;
                }
                match state.store.delete(&name).await {
                    Ok(_) => tracing::info!(job = %name, "Deleted finished job past its TTL"),
                    Err(e) => tracing::warn!(job = %name, error = %e, "Deleting job failed"),
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "Listing expired jobs failed"),
    }
}
