//! `hostscan copy-db`: moves every scan and host key pin from one database
//! to another (SQLite → PostgreSQL when a user outgrows one machine, and
//! back), keeping ids, so scan ids, request ids and history survive.
//!
//! Idempotent: a scan already copied is skipped, one that changed since the
//! last copy (it was still running) is replaced, and a *different* scan
//! under the same id stops the copy with an error rather than mixing two
//! histories. Rows move in batches in id order; each batch is one
//! transaction on the destination.

use std::collections::HashMap;

use super::{HostRecord, PinRecord, ScanRecord, Store, StoreError};

/// Scans per batch (one transaction each on the destination).
const BATCH: i64 = 500;

/// What `copy` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Scans the destination did not have.
    pub scans_inserted: usize,
    /// Scans the destination had in an older state (replaced).
    pub scans_updated: usize,
    /// Scans the destination already had as they are.
    pub scans_unchanged: usize,
    pub pins_inserted: usize,
    pub pins_unchanged: usize,
}

impl std::fmt::Display for CopyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "scans: {} copied, {} updated, {} already there; host key pins: {} copied, {} already there",
            self.scans_inserted,
            self.scans_updated,
            self.scans_unchanged,
            self.pins_inserted,
            self.pins_unchanged
        )
    }
}

/// Same scan (it may have moved on since): id, host and creation time.
fn same_identity(a: &ScanRecord, b: &ScanRecord) -> bool {
    a.id == b.id
        && a.hostname == b.hostname
        && a.port == b.port
        && a.username == b.username
        && a.created_at == b.created_at
}

/// Copies everything from `from` into `to`, migrating both first.
pub async fn copy(from: &Store, to: &Store) -> Result<CopyReport, StoreError> {
    from.migrate().await?;
    to.migrate().await?;
    let mut report = CopyReport::default();
    // The hosts rows the copied scans make, merged as they go by.
    let mut hosts: HashMap<(String, i32), HostRecord> = HashMap::new();
    let mut after = 0;
    loop {
        let batch = from.run(move |b| b.export_scans(after, BATCH)).await?;
        let Some(last) = batch.last() else { break };
        after = last.id;
        let ids: Vec<i64> = batch.iter().map(|r| r.id).collect();
        let existing = to.run(move |b| b.get_many(&ids)).await?;
        let mut put = Vec::new();
        for row in batch {
            let host = HostRecord::of(&row)?;
            hosts
                .entry((host.hostname.clone(), host.port))
                .and_modify(|h| h.merge(&host))
                .or_insert(host);
            match existing.iter().find(|e| e.id == row.id) {
                None => {
                    report.scans_inserted += 1;
                    put.push(row);
                }
                Some(e) if !same_identity(e, &row) => {
                    return Err(StoreError::Internal(format!(
                        "the destination already has a different scan {} ({}:{} created {}, \
                         the source's is {}:{} created {}); copy into an empty database",
                        row.id,
                        e.hostname,
                        e.port,
                        e.created_at,
                        row.hostname,
                        row.port,
                        row.created_at
                    )));
                }
                Some(e) if *e == row => report.scans_unchanged += 1,
                Some(_) => {
                    report.scans_updated += 1;
                    put.push(row);
                }
            }
        }
        if !put.is_empty() {
            to.run(move |b| b.put_scans(&put)).await?;
        }
    }
    let hosts: Vec<HostRecord> = hosts.into_values().collect();
    to.run(move |b| b.put_hosts(&hosts)).await?;

    let pins = from.run(|b| b.export_pins()).await?;
    let existing = to.run(|b| b.export_pins()).await?;
    let mut new_pins: Vec<PinRecord> = Vec::new();
    for pin in pins {
        match existing
            .iter()
            .find(|e| e.hostname == pin.hostname && e.port == pin.port)
        {
            None => new_pins.push(pin),
            Some(e) if e.public_key == pin.public_key => report.pins_unchanged += 1,
            Some(e) => {
                return Err(StoreError::Internal(format!(
                    "the host key pinned for {}:{} differs: the source has {}, the destination \
                     {}; remove the wrong pin (table ssh_host_keys) and copy again",
                    pin.hostname, pin.port, pin.fingerprint, e.fingerprint
                )));
            }
        }
    }
    report.pins_inserted = new_pins.len();
    if !new_pins.is_empty() {
        to.run(move |b| b.import_pins(&new_pins)).await?;
    }
    Ok(report)
}
