//! Retention: deletes terminal scans older than the configured age, in
//! small batches, at start-up and then every `INTERVAL`, keeping each host's
//! newest scan and newest completed scan (ListHosts and diffs need them).
//!
//! With several replicas on PostgreSQL, an advisory lock lets one replica
//! at a time delete (the others skip their turn). Each batch is its own
//! short transaction, so workers and watchers are never held up.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// How often retention looks for old scans.
pub const INTERVAL: Duration = Duration::from_secs(600);
/// Scans deleted per transaction.
pub const BATCH: i64 = 200;

/// Runs until `stop` is cancelled.
pub async fn run(store: Store, keep_for: Duration, stop: CancellationToken) {
    loop {
        let started = std::time::Instant::now();
        match store.prune(keep_for, BATCH).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                deleted = n,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "retention deleted {n} scans older than {}",
                crate::config::format_age(keep_for)
            ),
            Err(e) => tracing::warn!(error = %e, "retention failed; retrying later"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(INTERVAL) => {}
        }
    }
}
