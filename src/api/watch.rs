//! WatchScan: the scan's state now, then every later change, in order.
//!
//! Subscribe first, read the row second, then forward only live events with
//! a higher sequence: nothing is missed between the read and the first live
//! event, nothing is sent twice. A watcher that lags behind the broadcast
//! buffer re-reads the row and sends it as a fresh snapshot. Heartbeats
//! repeat the last state during long steps.
//!
//! The client's `after_sequence` is a hint, not a fact: one beyond the
//! scan's sequence (stale, from another database, or made up) is ignored
//! and the stream starts with a fresh snapshot. Every stream ends right
//! after the scan's terminal event, whatever mark the client sent.
//!
//! The stream is the forwarder itself (no task, no channel): tonic polls it
//! when the client can take more, and drops it, with its subscription, the
//! moment the client goes away.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::Status;

use super::{ScanApi, not_found, status};
use crate::events::{RecvError, Subscription};
use crate::model::{Scan, ScanEvent};
use crate::pb;
use crate::store::Store;

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::ScanEvent, Status>> + Send>>;

pub(super) async fn start(api: &ScanApi, id: i64, after: i64) -> Result<WatchStream, Status> {
    let subscription = api.hub.subscribe(id);
    let scan = api
        .store
        .get(id)
        .await
        .map_err(status)?
        .ok_or_else(|| not_found(id))?;
    let last = if after > scan.sequence { 0 } else { after };
    let forwarder = Forwarder {
        scan_id: id,
        store: api.store.clone(),
        subscription,
        heartbeat: Heartbeat::new(api.watch_heartbeat),
        shutdown: Box::pin(api.shutdown.clone().cancelled_owned()),
        last,
        state: None,
        initial: Some(scan),
        done: false,
        _open: crate::metrics::watch_stream_opened(),
    };
    Ok(Box::pin(futures_util::stream::unfold(
        forwarder,
        |mut f| async move { f.next().await.map(|item| (item, f)) },
    )))
}

struct Forwarder {
    scan_id: i64,
    store: Store,
    /// Dropped with the stream, freeing the hub channel if it was the last.
    subscription: Subscription,
    heartbeat: Heartbeat,
    /// Resolves at shutdown: the stream ends with UNAVAILABLE. Made once and
    /// kept: a fresh one per poll would take the token's lock each time.
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Highest sequence sent (or the client's `after_sequence`).
    last: i64,
    /// The last state sent, repeated (without `scan`) as heartbeat.
    state: Option<Arc<ScanEvent>>,
    /// The row read at subscription, sent first if newer than `last`.
    initial: Option<Scan>,
    /// Set after the terminal event: the next poll ends the stream.
    done: bool,
    /// Counts this stream as open until it is dropped.
    _open: crate::metrics::GaugeGuard,
}

impl Forwarder {
    /// The next message for the client; `None` ends the stream with OK.
    async fn next(&mut self) -> Option<Result<pb::ScanEvent, Status>> {
        if self.done {
            return None;
        }
        if let Some(scan) = self.initial.take() {
            match self.snapshot(&scan) {
                Some(event) => return Some(Ok(event)),
                None if self.done => return None,
                None => {}
            }
        }
        loop {
            tokio::select! {
                _ = &mut self.shutdown => {
                    // Events published before the shutdown still go out (a
                    // scan drained during the grace period ends with its
                    // terminal event); then the stream ends.
                    while let Some(event) = self.subscription.try_recv() {
                        if let Some(event) = self.live(&event) {
                            return Some(Ok(event));
                        }
                        if self.done {
                            return None;
                        }
                    }
                    self.done = true;
                    return Some(Err(Status::unavailable(format!(
                        "the server is shutting down; resume with after_sequence={}",
                        self.last
                    ))));
                }
                due = self.heartbeat.tick() => {
                    if due && let Some(state) = &self.state {
                        let mut beat = pb::ScanEvent::from(state.as_ref());
                        beat.scan = None;
                        beat.heartbeat = true;
                        beat.time = Some(pb::timestamp(chrono::Utc::now()));
                        self.heartbeat.sent();
                        return Some(Ok(beat));
                    }
                }
                received = self.subscription.recv() => match received {
                    Ok(event) => {
                        if let Some(event) = self.live(&event) {
                            return Some(Ok(event));
                        }
                        if self.done {
                            return None;
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        crate::metrics::watch_resynced();
                        tracing::debug!(scan_id = self.scan_id, missed, "watcher lagged; sending a fresh snapshot");
                        match self.store.get(self.scan_id).await {
                            Ok(Some(scan)) => {
                                if let Some(event) = self.snapshot(&scan) {
                                    return Some(Ok(event));
                                }
                                if self.done {
                                    return None;
                                }
                            }
                            Ok(None) => return None,
                            Err(e) => {
                                self.done = true;
                                return Some(Err(status(e)));
                            }
                        }
                    }
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    }

    /// Records `event` as sent: the new high-water mark, the heartbeat
    /// state, the idle timer, and whether the stream is over.
    fn sent(&mut self, event: Arc<ScanEvent>) -> pb::ScanEvent {
        self.last = self.last.max(event.sequence);
        self.done = event.status.is_terminal();
        self.heartbeat.sent();
        let out = pb::ScanEvent::shared_from(&event);
        self.state = Some(event);
        out
    }

    /// `scan` as a snapshot event if it is newer than what the client has.
    /// Otherwise `None`, and the stream is over if `scan` is terminal.
    fn snapshot(&mut self, scan: &Scan) -> Option<pb::ScanEvent> {
        if scan.sequence > self.last {
            return Some(self.sent(Arc::new(ScanEvent::snapshot(scan))));
        }
        if scan.status.is_terminal() {
            self.done = true;
        } else if self.state.is_none() {
            let mut event = ScanEvent::snapshot(scan);
            event.scan = None;
            self.state = Some(Arc::new(event));
        }
        None
    }

    /// `event` if the client does not have it yet. Otherwise `None`, and
    /// the stream is over if `event` is terminal.
    fn live(&mut self, event: &Arc<ScanEvent>) -> Option<pb::ScanEvent> {
        if event.sequence > self.last {
            return Some(self.sent(Arc::clone(event)));
        }
        if event.status.is_terminal() {
            self.done = true;
        }
        None
    }
}

/// When a quiet stream is due a heartbeat. Sending only notes the time; the
/// timer is re-armed when it fires, so a busy stream costs no timer work per
/// event.
pub(super) struct Heartbeat {
    every: Duration,
    last_sent: Instant,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Heartbeat {
    pub(super) fn new(every: Duration) -> Self {
        let now = Instant::now();
        Self {
            every,
            last_sent: now,
            timer: Box::pin(tokio::time::sleep_until(now + every)),
        }
    }

    /// Something was sent now.
    pub(super) fn sent(&mut self) {
        self.last_sent = Instant::now();
    }

    /// Resolves when the timer fires: `true` if the stream has been quiet
    /// for the whole interval (send a heartbeat), `false` if something was
    /// sent meanwhile (the timer is re-armed for the rest).
    pub(super) async fn tick(&mut self) -> bool {
        (&mut self.timer).await;
        let due = self.last_sent + self.every;
        if Instant::now() >= due {
            self.timer.as_mut().reset(Instant::now() + self.every);
            true
        } else {
            self.timer.as_mut().reset(due);
            false
        }
    }
}
