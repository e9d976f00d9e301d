//! The event hub: one tokio broadcast channel per watched scan, and one for
//! every event of every scan (WatchScans).
//!
//! Per-scan channels are created when the first watcher subscribes and
//! removed when the last one leaves. Publishers (the worker, the API's cancel, the
//! cross-replica bridge) never block: `publish` is a map lookup and a
//! broadcast send of an `Arc`, and a slow watcher only lags itself. The hub
//! knows nothing of storage or gRPC; ordering comes from publishers, who
//! publish each scan's events in sequence order after they are committed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::broadcast;

use crate::model::ScanEvent;

pub use broadcast::error::RecvError;

/// Per-scan broadcast channels.
#[derive(Debug)]
pub struct Hub {
    /// scan id → sender. Entries are created by `subscribe` and removed by
    /// the last `Subscription`'s drop. Never locked across an await.
    channels: Mutex<HashMap<i64, broadcast::Sender<Arc<ScanEvent>>>>,
    /// Events a watcher may fall behind before it lags (and resyncs).
    capacity: usize,
    /// Every published event, for WatchScans subscribers (`subscribe_all`).
    /// Sent to by `publish` only while someone listens; never closed.
    all: broadcast::Sender<Arc<ScanEvent>>,
    /// Bumped when events may have been missed (the cross-replica listener
    /// reconnected): WatchScans subscribers resync. Sent by `resync_all`.
    generation: tokio::sync::watch::Sender<u64>,
}

/// Events a WatchScans subscriber may fall behind before it resyncs: it
/// sees every scan, so it gets a deeper buffer than one scan's watcher.
const ALL_CAPACITY: usize = 4096;

impl Hub {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            channels: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            all: broadcast::channel(ALL_CAPACITY).0,
            generation: tokio::sync::watch::channel(0).0,
        })
    }

    fn channels(&self) -> MutexGuard<'_, HashMap<i64, broadcast::Sender<Arc<ScanEvent>>>> {
        // The map stays consistent even if a holder panicked.
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts receiving `scan_id`'s events published from now on.
    pub fn subscribe(self: &Arc<Self>, scan_id: i64) -> Subscription {
        let rx = self
            .channels()
            .entry(scan_id)
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe();
        Subscription {
            rx: Some(rx),
            hub: Arc::clone(self),
            scan_id,
        }
    }

    /// Sends `event` to the scan's watchers and to WatchScans subscribers,
    /// if there are any.
    pub fn publish(&self, event: ScanEvent) {
        crate::metrics::event_published();
        let tx = self.channels().get(&event.scan_id).cloned();
        let everyone = self.all.receiver_count() > 0;
        if tx.is_none() && !everyone {
            return;
        }
        let event = Arc::new(event);
        // Err only means every watcher just left.
        if let Some(tx) = tx {
            tx.send(Arc::clone(&event)).ok();
        }
        if everyone {
            self.all.send(event).ok();
        }
    }

    /// Starts receiving every scan's events published from now on. A
    /// receiver that falls `ALL_CAPACITY` events behind gets `Lagged`.
    pub fn subscribe_all(&self) -> broadcast::Receiver<Arc<ScanEvent>> {
        self.all.subscribe()
    }

    /// Tells WatchScans subscribers that events may have been missed.
    pub fn resync_all(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Changes when WatchScans subscribers must resync (see `resync_all`).
    pub fn resyncs(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// True while a WatchScans subscriber listens here.
    pub fn has_subscribers_to_all(&self) -> bool {
        self.all.receiver_count() > 0
    }

    /// True if someone watches `scan_id` here.
    pub fn is_watched(&self, scan_id: i64) -> bool {
        self.channels().contains_key(&scan_id)
    }

    /// Scans watched here.
    pub fn watched(&self) -> Vec<i64> {
        self.channels().keys().copied().collect()
    }

    /// Watchers across all scans.
    pub fn watcher_count(&self) -> usize {
        self.channels().values().map(|tx| tx.receiver_count()).sum()
    }
}

/// A watcher's receiver. Dropping it frees the channel if it was the last.
#[derive(Debug)]
pub struct Subscription {
    /// Always `Some` until drop.
    rx: Option<broadcast::Receiver<Arc<ScanEvent>>>,
    hub: Arc<Hub>,
    scan_id: i64,
}

impl Subscription {
    /// The next event; `Err(Lagged)` when this watcher fell behind and
    /// missed events (it should resync from the store).
    pub async fn recv(&mut self) -> Result<Arc<ScanEvent>, RecvError> {
        match self.rx.as_mut() {
            Some(rx) => rx.recv().await,
            None => Err(RecvError::Closed),
        }
    }

    /// An event already published and not yet received, without waiting;
    /// `None` when there is none (or the watcher lagged: it resyncs).
    pub fn try_recv(&mut self) -> Option<Arc<ScanEvent>> {
        self.rx.as_mut()?.try_recv().ok()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut channels = self.hub.channels();
        if channels
            .get(&self.scan_id)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            channels.remove(&self.scan_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::model::ScanStatus;

    fn event(scan_id: i64, sequence: i64) -> ScanEvent {
        ScanEvent {
            scan_id,
            sequence,
            status: ScanStatus::Running,
            progress: 0,
            current_step: String::new(),
            time: Utc::now(),
            hostname: "h".into(),
            scan_type: crate::model::ScanType::Quick,
            scan: None,
            wire: Default::default(),
        }
    }

    #[tokio::test]
    async fn delivers_in_order_and_frees_channels() {
        let hub = Hub::new(4);
        let mut a = hub.subscribe(1);
        let mut b = hub.subscribe(1);
        hub.publish(event(1, 2));
        hub.publish(event(2, 9));
        hub.publish(event(1, 3));
        for sub in [&mut a, &mut b] {
            assert_eq!(sub.recv().await.map(|e| e.sequence).ok(), Some(2));
            assert_eq!(sub.recv().await.map(|e| e.sequence).ok(), Some(3));
        }
        assert_eq!(hub.watcher_count(), 2);
        drop(a);
        assert!(hub.is_watched(1));
        drop(b);
        assert!(!hub.is_watched(1));
        assert!(hub.watched().is_empty());
    }

    #[tokio::test]
    async fn everyone_hears_every_scan() {
        let hub = Hub::new(4);
        assert!(!hub.has_subscribers_to_all());
        hub.publish(event(1, 1)); // nobody listens: dropped
        let mut all = hub.subscribe_all();
        let mut one = hub.subscribe(2);
        hub.publish(event(1, 2));
        hub.publish(event(2, 3));
        assert_eq!(
            all.recv().await.map(|e| (e.scan_id, e.sequence)).ok(),
            Some((1, 2))
        );
        assert_eq!(
            all.recv().await.map(|e| (e.scan_id, e.sequence)).ok(),
            Some((2, 3))
        );
        assert_eq!(one.recv().await.map(|e| e.sequence).ok(), Some(3));
        assert!(hub.has_subscribers_to_all());
        drop(all);
        assert!(!hub.has_subscribers_to_all());
    }

    #[tokio::test]
    async fn a_slow_watcher_lags_alone() {
        let hub = Hub::new(2);
        let mut slow = hub.subscribe(1);
        let mut fast = hub.subscribe(1);
        for seq in 1..=5 {
            hub.publish(event(1, seq));
            assert_eq!(fast.recv().await.map(|e| e.sequence).ok(), Some(seq));
        }
        assert!(matches!(slow.recv().await, Err(RecvError::Lagged(3))));
        assert_eq!(slow.recv().await.map(|e| e.sequence).ok(), Some(4));
    }
}
