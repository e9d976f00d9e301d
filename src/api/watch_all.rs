//! WatchScans: every change of every scan that matches the filters, for
//! dashboards.
//!
//! Subscribe to the hub's all-scans channel first, then read the snapshot
//! (the matching scans that have not finished, and with a resume token the
//! ones that finished since), then forward live events. Per scan, the rules
//! of WatchScan hold: an event is sent only if its sequence is higher than
//! the last one sent for that scan, so nothing goes twice or backwards, and
//! a subscriber that falls behind the buffer (or whose replica's listener
//! reconnected) resyncs from the database instead of getting stale replays.
//!
//! The stream is the forwarder itself (no task, no channel), like
//! WatchScan's; it never ends by itself. A snapshot carries each scan
//! whole, live events only the change (terminal ones the whole scan). What it remembers is bounded: the
//! scans it has sent that have not finished, and for a minute the last
//! sequence of those that did (to drop a late duplicate).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::Status;

use super::watch::{Heartbeat, WatchStream};
use super::{ScanApi, status};
use crate::model::{ScanEvent, ScanStatus, ScanType};
use crate::pb;
use crate::store::{ListQuery, Store};

/// Which scans a subscriber wants.
#[derive(Debug, Clone, Default)]
pub(super) struct Filter {
    pub hostname: Option<String>,
    /// Scans with this status after a change, plus the change that takes a
    /// matching scan out of it.
    pub status: Option<ScanStatus>,
    pub scan_type: Option<ScanType>,
}

impl Filter {
    /// The immutable part: host and type.
    fn selects(&self, hostname: &str, scan_type: ScanType) -> bool {
        self.hostname.as_deref().is_none_or(|h| h == hostname)
            && self.scan_type.is_none_or(|t| t == scan_type)
    }

    fn matches_status(&self, status: ScanStatus) -> bool {
        self.status.is_none_or(|s| s == status)
    }
}

/// Scans read per query while taking a snapshot.
const PAGE: i64 = 500;
/// Resuming looks for scans that finished this long before the token:
/// writes can commit slightly out of order.
const RESUME_MARGIN: Duration = Duration::from_secs(5);
/// How long a finished scan's last sequence is remembered.
const FINISHED_MEMORY: Duration = Duration::from_secs(60);

const TOKEN_PREFIX: &str = "w1:";

/// The opaque resume token for "everything after `time`".
fn encode_token(time: DateTime<Utc>) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{TOKEN_PREFIX}{}", time.timestamp_micros()))
}

/// Reads a resume token; `Err` with the field's message when it is not one
/// this server issued.
pub(super) fn parse_token(value: &str) -> Result<Option<DateTime<Utc>>, super::Invalid> {
    use base64::Engine as _;
    if value.is_empty() {
        return Ok(None);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix(TOKEN_PREFIX)?.parse::<i64>().ok())
        .and_then(DateTime::from_timestamp_micros)
        .map(Some)
        .ok_or_else(|| super::Invalid {
            field: "resume_token",
            message: "is not a WatchScans token this server issued".into(),
        })
}

pub(super) async fn start(
    api: &ScanApi,
    filter: Filter,
    resume: Option<DateTime<Utc>>,
) -> Result<WatchStream, Status> {
    let events = api.hub.subscribe_all();
    let mut resyncs = api.hub.resyncs();
    resyncs.mark_unchanged();
    let now = Utc::now();
    let mut forwarder = Forwarder {
        store: api.store.clone(),
        filter,
        events,
        resyncs,
        heartbeat: Heartbeat::new(api.watch_heartbeat),
        shutdown: Box::pin(api.shutdown.clone().cancelled_owned()),
        open: HashMap::new(),
        finished: HashMap::new(),
        finished_order: VecDeque::new(),
        queue: VecDeque::new(),
        last_time: resume.unwrap_or(now),
        done: false,
        _open: crate::metrics::watch_stream_opened(),
    };
    forwarder.snapshot(resume).await.map_err(status)?;
    Ok(Box::pin(futures_util::stream::unfold(
        forwarder,
        |mut f| async move { f.next().await.map(|item| (item, f)) },
    )))
}

struct Forwarder {
    store: Store,
    filter: Filter,
    /// Every scan's events, from the hub. Dropped with the stream.
    events: tokio::sync::broadcast::Receiver<Arc<ScanEvent>>,
    /// Changes when events may have been missed (cross-replica listener
    /// reconnected): resync.
    resyncs: tokio::sync::watch::Receiver<u64>,
    heartbeat: Heartbeat,
    /// Resolves at shutdown: the stream ends with UNAVAILABLE (made once,
    /// as in WatchScan).
    shutdown: std::pin::Pin<Box<WaitForCancellationFutureOwned>>,
    /// Scans sent that have not finished: the last sequence sent, and
    /// whether the scan matched the status filter then.
    open: HashMap<i64, (i64, bool)>,
    /// Finished scans sent lately: their last sequence, and in order of
    /// finishing, when, for forgetting them after `FINISHED_MEMORY`.
    finished: HashMap<i64, i64>,
    finished_order: VecDeque<(Instant, i64)>,
    /// Snapshot events waiting to be sent.
    queue: VecDeque<pb::ScanEvent>,
    /// When the last event was sent: the resume point.
    last_time: DateTime<Utc>,
    done: bool,
    /// Counts this stream as open until it is dropped.
    _open: crate::metrics::GaugeGuard,
}

impl Forwarder {
    async fn next(&mut self) -> Option<Result<pb::ScanEvent, Status>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(Ok(self.sent(event)));
            }
            tokio::select! {
                _ = &mut self.shutdown => {
                    // Events published before the shutdown still go out;
                    // then the stream ends.
                    while let Ok(event) = self.events.try_recv() {
                        if let Some(event) = self.offer(&event) {
                            return Some(Ok(self.sent(event)));
                        }
                    }
                    self.done = true;
                    return Some(Err(Status::unavailable(format!(
                        "the server is shutting down; resume with resume_token={}",
                        encode_token(self.last_time)
                    ))));
                }
                due = self.heartbeat.tick() => {
                    if due {
                        return Some(Ok(self.sent(
                            pb::ScanEventFields {
                                heartbeat: true,
                                ..Default::default()
                            }
                            .into(),
                        )));
                    }
                }
                changed = self.resyncs.changed() => {
                    if changed.is_ok()
                        && let Err(e) = self.snapshot(Some(self.last_time)).await
                    {
                        self.done = true;
                        return Some(Err(status(e)));
                    }
                }
                received = self.events.recv() => match received {
                    Ok(event) => {
                        if let Some(event) = self.offer(&event) {
                            return Some(Ok(self.sent(event)));
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        crate::metrics::watch_resynced();
                        tracing::debug!(missed, "WatchScans subscriber lagged; resyncing from the database");
                        if let Err(e) = self.snapshot(Some(self.last_time)).await {
                            self.done = true;
                            return Some(Err(status(e)));
                        }
                    }
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    }

    /// Queues the current state of the matching scans that have not
    /// finished, and with `since` the ones that finished after it (less the
    /// margin), newest first, as the database has them now.
    async fn snapshot(
        &mut self,
        since: Option<DateTime<Utc>>,
    ) -> Result<(), crate::store::StoreError> {
        let base = ListQuery {
            hostname: self.filter.hostname.clone(),
            scan_type: self.filter.scan_type,
            limit: PAGE,
            ..Default::default()
        };
        let mut queries = Vec::new();
        for active in [ScanStatus::Running, ScanStatus::Pending] {
            if self.filter.matches_status(active) {
                queries.push(ListQuery {
                    status: Some(active),
                    ..base.clone()
                });
            }
        }
        if let Some(since) = since {
            let margin = chrono::Duration::from_std(RESUME_MARGIN).unwrap_or_default();
            queries.push(ListQuery {
                status: self.filter.status.filter(|s| s.is_terminal()),
                finished_since: Some(since - margin),
                ..base.clone()
            });
        }
        let mut scans = Vec::new();
        for mut query in queries {
            loop {
                let page = self.store.list(query.clone()).await?;
                scans.extend(page.scans);
                match page.next_before_id {
                    Some(before) => query.before_id = Some(before),
                    None => break,
                }
            }
        }
        scans.sort_by_key(|s| std::cmp::Reverse(s.id));
        for scan in &scans {
            // A snapshot row goes out like a live event, with the whole scan.
            if let Some(queued) = self.offer(&ScanEvent::snapshot(scan)) {
                self.queue.push_back(queued);
            }
        }
        Ok(())
    }

    /// `event` as the client should get it, or `None` if it is not for
    /// this subscriber or the client already has it.
    fn offer(&mut self, event: &ScanEvent) -> Option<pb::ScanEvent> {
        if !self.filter.selects(&event.hostname, event.scan_type) {
            return None;
        }
        let id = event.scan_id;
        let (seen, was_matching) = match self.open.get(&id) {
            Some(&(seq, matching)) => (Some(seq), matching),
            None => (self.finished.get(&id).copied(), false),
        };
        if seen.is_some_and(|seq| seq >= event.sequence) {
            return None;
        }
        let matches = self.filter.matches_status(event.status);
        if !matches && !was_matching {
            return None;
        }
        if event.status.is_terminal() {
            self.open.remove(&id);
            self.finished.insert(id, event.sequence);
            self.finished_order.push_back((Instant::now(), id));
        } else {
            self.open.insert(id, (event.sequence, matches));
        }
        self.forget_old_finished();
        Some(pb::ScanEvent::from(event))
    }

    fn forget_old_finished(&mut self) {
        while let Some(&(at, id)) = self.finished_order.front() {
            if at.elapsed() < FINISHED_MEMORY {
                break;
            }
            self.finished_order.pop_front();
            self.finished.remove(&id);
        }
    }

    /// Stamps an outgoing message with the time and resume token.
    fn sent(&mut self, mut event: pb::ScanEvent) -> pb::ScanEvent {
        let now = Utc::now();
        self.last_time = now;
        self.heartbeat.sent();
        if event.heartbeat {
            event.time = Some(pb::timestamp(now));
        }
        event.resume_token = encode_token(now);
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_others() {
        let t = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time");
        assert_eq!(parse_token(&encode_token(t)), Ok(Some(t)));
        assert_eq!(parse_token(""), Ok(None));
        assert_eq!(
            parse_token("bm9wZQ").expect_err("not ours").field,
            "resume_token"
        );
    }
}
