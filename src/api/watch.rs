//! WatchScan: the scan's state now, then every later change, in order.
//!
//! Subscribe first, read the row second, then forward only live events with
//! a higher sequence: nothing is missed between the read and the first live
//! event, nothing is sent twice. A watcher that lags behind the broadcast
//! buffer re-reads the row and sends it as a fresh snapshot. A client that
//! leaves closes the channel and its task ends at once, dropping its
//! subscription. Heartbeats repeat the last state during long steps.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::{ScanApi, not_found, status};
use crate::events::{RecvError, Subscription};
use crate::model::{Scan, ScanEvent};
use crate::pb;
use crate::store::Store;

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::ScanEvent, Status>> + Send>>;

/// Messages buffered per stream before the forwarder waits for the client.
const STREAM_BUFFER: usize = 8;

pub(super) async fn start(api: &ScanApi, id: i64, after: i64) -> Result<WatchStream, Status> {
    let subscription = api.hub.subscribe(id);
    let scan = api
        .store
        .get(id)
        .await
        .map_err(status)?
        .ok_or_else(|| not_found(id))?;
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let forwarder = Forwarder {
        scan_id: id,
        tx,
        store: api.store.clone(),
        subscription,
        heartbeat: api.watch_heartbeat,
        shutdown: api.shutdown.clone(),
        last: after,
        state: None,
    };
    api.tracker.spawn(forwarder.run(scan));
    Ok(Box::pin(ReceiverStream::new(rx)))
}

struct Forwarder {
    scan_id: i64,
    /// To the client's stream; closed when the client goes away.
    tx: mpsc::Sender<Result<pb::ScanEvent, Status>>,
    store: Store,
    /// Dropped with the forwarder, freeing the hub channel if last.
    subscription: Subscription,
    heartbeat: Duration,
    shutdown: CancellationToken,
    /// Highest sequence sent (or the client's `after_sequence`).
    last: i64,
    /// The last event sent, repeated as heartbeat.
    state: Option<pb::ScanEvent>,
}

enum Flow {
    Continue,
    Done,
}

impl Forwarder {
    async fn run(mut self, scan: Scan) {
        if let Flow::Done = self.snapshot(&scan).await {
            return;
        }
        let mut idle_until = Instant::now() + self.heartbeat;
        loop {
            let flow = tokio::select! {
                _ = self.tx.closed() => Flow::Done,
                _ = self.shutdown.cancelled() => {
                    let resume = self.last;
                    self.tx
                        .send(Err(Status::unavailable(format!(
                            "the server is shutting down; resume with after_sequence={resume}"
                        ))))
                        .await
                        .ok();
                    Flow::Done
                }
                _ = tokio::time::sleep_until(idle_until) => self.send_heartbeat().await,
                received = self.subscription.recv() => match received {
                    Ok(event) => self.forward(&event).await,
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "watcher lagged; sending a fresh snapshot");
                        self.resync().await
                    }
                    Err(RecvError::Closed) => Flow::Done,
                },
            };
            if let Flow::Done = flow {
                return;
            }
            idle_until = Instant::now() + self.heartbeat;
        }
    }

    async fn send(&mut self, event: pb::ScanEvent) -> Flow {
        let terminal = pb::ScanStatus::try_from(event.status)
            .ok()
            .and_then(pb::ScanStatus::to_model)
            .is_some_and(|s| s.is_terminal());
        self.last = self.last.max(event.sequence);
        let mut remembered = event.clone();
        remembered.scan = None;
        self.state = Some(remembered);
        if self.tx.send(Ok(event)).await.is_err() || terminal {
            Flow::Done
        } else {
            Flow::Continue
        }
    }

    /// Sends `scan` as a snapshot if it is newer than what the client has;
    /// ends the stream if it is terminal.
    async fn snapshot(&mut self, scan: &Scan) -> Flow {
        if scan.sequence > self.last {
            let event = ScanEvent::snapshot(scan);
            return self.send(pb::ScanEvent::from(&event)).await;
        }
        if scan.status.is_terminal() {
            return Flow::Done;
        }
        if self.state.is_none() {
            let mut event = pb::ScanEvent::from(&ScanEvent::snapshot(scan));
            event.scan = None;
            self.state = Some(event);
        }
        Flow::Continue
    }

    async fn forward(&mut self, event: &Arc<ScanEvent>) -> Flow {
        if event.sequence <= self.last {
            return Flow::Continue;
        }
        self.send(pb::ScanEvent::from(event.as_ref())).await
    }

    async fn resync(&mut self) -> Flow {
        match self.store.get(self.scan_id).await {
            Ok(Some(scan)) => self.snapshot(&scan).await,
            Ok(None) => Flow::Done,
            Err(e) => {
                self.tx.send(Err(status(e))).await.ok();
                Flow::Done
            }
        }
    }

    async fn send_heartbeat(&mut self) -> Flow {
        let Some(mut event) = self.state.clone() else {
            return Flow::Continue;
        };
        event.heartbeat = true;
        event.time = Some(pb::timestamp(chrono::Utc::now()));
        if self.tx.send(Ok(event)).await.is_err() {
            Flow::Done
        } else {
            Flow::Continue
        }
    }
}
