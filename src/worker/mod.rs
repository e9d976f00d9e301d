//! The worker pool: claims PENDING scans, runs the engine, writes progress,
//! publishes events, finishes scans, recovers dead workers' leases.
//!
//! Every write goes through the store with this instance as lease owner;
//! every event is published to the hub only after its write committed, in
//! sequence order (one task drives one scan). The pool owns all its tasks
//! through a `TaskTracker` and stops them through `CancellationToken`s.

mod pins;
pub mod retention;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::SharedSsh;
use crate::events::Hub;
use crate::model::{Scan, ScanErrorKind, ScanEvent, ScanStatus};
use crate::scan::{self, Limits, Progress, StepState};
use crate::ssh::config::Local;
use crate::ssh::hostkey::PinStore;
use crate::ssh::route::{Destination, PolicyRule, Router};
use crate::ssh::{HostKeyPolicy, HostKeyVerifier};
use crate::store::{Lease, Store};

pub use pins::DatabasePins;

/// What the workers need to know, from `Config`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub workers: usize,
    /// Key files, keyring, `--ssh-config` and agent in force; a SIGHUP
    /// swaps them, and each scan routes with the set current when it starts.
    pub ssh: SharedSsh,
    pub known_hosts: Option<std::path::PathBuf>,
    pub host_key_policy: HostKeyPolicy,
    pub connect_timeout: Duration,
    pub max_channels: usize,
    pub limits: Limits,
    /// A claimed scan not heartbeated for this long is presumed dead.
    pub lease: Duration,
    /// How often the pool looks for work it was not told about (one query
    /// per period, however many workers are idle).
    pub idle_poll: Duration,
}

impl Inner {
    /// Plans routes with the SSH setup in force now (ssh_config, jump
    /// hosts, keys, host keys).
    fn router(&self) -> Router {
        let ssh = self.settings.ssh.load();
        Router {
            config: ssh.ssh_config.clone(),
            local: Local::from_env(),
            keyring: ssh.keyring.clone(),
            identities: ssh.ssh_keys.clone(),
            default_identities: Vec::new(),
            agent: ssh.agent.clone(),
            verifier: HostKeyVerifier {
                policy: self.settings.host_key_policy,
                known_hosts: self.settings.known_hosts.clone(),
                pins: Some(Arc::clone(&self.pins)),
                host_key_alias: None,
            },
            policy_rule: PolicyRule::Stricter,
            known_hosts_explicit: false,
            pins_follow_known_hosts: false,
            connect_timeout: self.settings.connect_timeout,
            connect_timeout_explicit: false,
            max_channels: self.settings.max_channels,
            default_port: 22,
        }
    }
}

/// Handle to the running pool. Cheap to clone.
#[derive(Clone)]
pub struct Workers {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    hub: Arc<Hub>,
    settings: Settings,
    /// Where TOFU pins live (the database).
    pins: Arc<dyn PinStore>,
    /// Wakes an idle worker: notified by StartScan and by other replicas.
    wake: Notify,
    /// Cancelled to stop claiming (drain).
    stop_claiming: CancellationToken,
    /// Cancelled when the drain grace is over: running scans stop and are
    /// requeued by `drain`.
    abort: CancellationToken,
    /// Cancel tokens of scans running here, by scan id. Inserted and
    /// removed by the task running the scan; cancelled by `cancel_local`.
    running: Mutex<HashMap<i64, CancellationToken>>,
    tracker: TaskTracker,
}

impl Workers {
    /// Starts `settings.workers` workers and the lease-recovery loop.
    pub fn start(store: Store, hub: Arc<Hub>, settings: Settings) -> Self {
        let pins: Arc<dyn PinStore> = Arc::new(DatabasePins::new(store.clone()));
        let inner = Arc::new(Inner {
            store,
            hub,
            pins,
            wake: Notify::new(),
            stop_claiming: CancellationToken::new(),
            abort: CancellationToken::new(),
            running: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
            settings,
        });
        for n in 0..inner.settings.workers.max(1) {
            let inner2 = Arc::clone(&inner);
            inner
                .tracker
                .spawn(worker_loop(inner2).instrument(tracing::info_span!("worker", n)));
        }
        let inner2 = Arc::clone(&inner);
        inner.tracker.spawn(recovery_loop(inner2));
        let inner2 = Arc::clone(&inner);
        inner.tracker.spawn(poll_loop(inner2));
        Self { inner }
    }

    /// A scan became PENDING: wake an idle worker.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Cancels `scan_id` if it runs here; true if it did.
    pub fn cancel_local(&self, scan_id: i64) -> bool {
        let running = self
            .inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match running.get(&scan_id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Scans running in this process.
    pub fn running_count(&self) -> usize {
        self.inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Stops claiming, lets running scans finish for up to `grace`, then
    /// stops the rest and puts them back to PENDING for another replica.
    pub async fn drain(&self, grace: Duration) {
        let inner = &self.inner;
        inner.stop_claiming.cancel();
        inner.tracker.close();
        if tokio::time::timeout(grace, inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = self.running_count(),
                "shutdown grace over; requeueing running scans"
            );
            inner.abort.cancel();
            inner.tracker.wait().await;
        }
        match inner.store.requeue_owned(inner.store.instance()).await {
            Ok(scans) => {
                for s in &scans {
                    inner.hub.publish(ScanEvent::snapshot(s));
                }
                if !scans.is_empty() {
                    tracing::info!(count = scans.len(), "requeued scans at shutdown");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not requeue scans at shutdown; their leases will expire")
            }
        }
    }
}

/// One worker: waits for a wake-up, then claims and runs scans until none
/// is left. A worker that claims one passes the wake-up on, so a queue of
/// scans is taken up by as many workers as it needs, and idle workers cost
/// nothing: only `poll_loop` looks at the database while all is quiet.
async fn worker_loop(inner: Arc<Inner>) {
    loop {
        tokio::select! {
            _ = inner.stop_claiming.cancelled() => return,
            _ = inner.wake.notified() => {}
        }
        loop {
            if inner.stop_claiming.is_cancelled() {
                return;
            }
            match inner
                .store
                .claim_next(inner.store.instance(), inner.settings.lease)
                .await
            {
                Ok(Some(scan)) => {
                    // There may be more: another idle worker looks.
                    inner.wake.notify_one();
                    let span = tracing::info_span!("scan", scan_id = scan.id, target = %format!("{}@{}:{}", scan.username, scan.hostname, scan.port));
                    run_one(&inner, scan).instrument(span).await;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "could not claim a scan");
                    break;
                }
            }
        }
    }
}

/// Wakes one idle worker at start and then every `idle_poll`, for scans no
/// wake-up announced (inserted by a replica whose notification was lost,
/// requeued by recovery, or left over after a claim error): one query per
/// period for the whole pool, however many workers it has.
async fn poll_loop(inner: Arc<Inner>) {
    loop {
        inner.wake.notify_one();
        tokio::select! {
            _ = inner.stop_claiming.cancelled() => return,
            _ = tokio::time::sleep(inner.settings.idle_poll) => {}
        }
    }
}

/// Requeues or fails scans whose worker died, at start and then every
/// lease period, while the pool claims.
async fn recovery_loop(inner: Arc<Inner>) {
    loop {
        match inner.store.recover_expired().await {
            Ok(scans) => {
                for s in &scans {
                    tracing::warn!(scan_id = s.id, status = %s.status, "recovered a scan whose worker stopped");
                    publish(&inner.hub, s);
                }
                if scans.iter().any(|s| s.status == ScanStatus::Pending) {
                    inner.wake.notify_one();
                }
            }
            Err(e) => tracing::warn!(error = %e, "lease recovery failed"),
        }
        tokio::select! {
            _ = inner.stop_claiming.cancelled() => return,
            _ = tokio::time::sleep(inner.settings.lease) => {}
        }
    }
}

/// Publishes a scan's current state; terminal events carry the whole scan.
fn publish(hub: &Hub, scan: &Scan) {
    let mut event = ScanEvent::snapshot(scan);
    if !scan.status.is_terminal() {
        event.scan = None;
    }
    hub.publish(event);
}

/// Drives one claimed scan to its end.
async fn run_one(inner: &Inner, scan: Scan) {
    let started = std::time::Instant::now();
    crate::metrics::scan_started(scan.scan_type);
    let _running = crate::metrics::scan_running();
    publish(&inner.hub, &scan);
    let user_cancel = CancellationToken::new();
    inner
        .running
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(scan.id, user_cancel.clone());
    let finished = drive(inner, &scan, &user_cancel).await;
    inner
        .running
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&scan.id);
    match finished {
        Some(s) => {
            crate::metrics::scan_finished(&s, started.elapsed());
            tracing::info!(status = %s.status, elapsed_ms = started.elapsed().as_millis() as u64, step_errors = s.results.as_ref().map_or(0, |r| r.step_errors.len()), error = ?s.error.as_ref().map(|e| e.to_string()), "scan finished")
        }
        None => tracing::info!("scan left unfinished (lease lost or shutting down)"),
    }
}

async fn drive(inner: &Inner, scan: &Scan, user_cancel: &CancellationToken) -> Option<Scan> {
    let settings = &inner.settings;
    let store = &inner.store;
    let owner = store.instance();
    let destination = Destination {
        host: scan.hostname.clone(),
        port: Some(scan.port),
        user: Some(scan.username.clone()),
        proxy_jump: (!scan.proxy_jump.is_empty()).then(|| scan.proxy_jump.clone()),
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Progress>();
    let engine_stop = CancellationToken::new();
    let engine = async {
        match inner.router().route(&destination).await {
            Ok(route) => {
                scan::run(
                    &route.target,
                    scan.scan_type,
                    &route.options,
                    &settings.limits,
                    &tx,
                    &engine_stop,
                )
                .await
            }
            Err(e) => {
                let e = crate::ssh::SshError::from(e);
                scan::Outcome {
                    results: Default::default(),
                    error: Some(crate::model::ScanError {
                        kind: e.kind(),
                        message: e.to_string(),
                    }),
                }
            }
        }
    };
    tokio::pin!(engine);
    let mut heartbeat = tokio::time::interval(settings.lease / 3);
    heartbeat.tick().await;
    // Set when this worker must stop without finishing the scan.
    let mut abandoned = false;
    let mut steps = StepClock::default();
    let outcome = loop {
        tokio::select! {
            outcome = &mut engine => break outcome,
            Some(mut p) = rx.recv() => {
                steps.observe(scan.scan_type, &p);
                // Coalesce what queued up while we wrote: the newest wins.
                while let Ok(next) = rx.try_recv() {
                    steps.observe(scan.scan_type, &next);
                    p = next;
                }
                match store.record_step(scan.id, owner, p.percent, &step_label(&p), settings.lease).await {
                    Ok(Some(s)) => publish(&inner.hub, &s),
                    Ok(None) => { abandoned = true; engine_stop.cancel(); }
                    Err(e) => tracing::warn!(error = %e, "could not record progress"),
                }
            }
            _ = heartbeat.tick() => match store.heartbeat(scan.id, owner, settings.lease).await {
                Ok(Lease::Held { cancel_requested: true }) => user_cancel.cancel(),
                Ok(Lease::Held { .. }) => {}
                Ok(Lease::Lost) => { abandoned = true; engine_stop.cancel(); }
                Err(e) => tracing::warn!(error = %e, "lease heartbeat failed"),
            },
            _ = user_cancel.cancelled(), if !engine_stop.is_cancelled() => engine_stop.cancel(),
            _ = inner.abort.cancelled(), if !abandoned => { abandoned = true; engine_stop.cancel(); }
        }
    };
    // Reports the engine sent just before it returned still time steps.
    while let Ok(p) = rx.try_recv() {
        steps.observe(scan.scan_type, &p);
    }
    if abandoned {
        return None;
    }
    let (status, error) = match outcome.error {
        None => (ScanStatus::Completed, None),
        Some(e) if e.kind == ScanErrorKind::Cancelled => (ScanStatus::Cancelled, Some(e)),
        Some(e) => (ScanStatus::Failed, Some(e)),
    };
    // The finish write must land even if the database blips: retry briefly.
    for attempt in 0..5u32 {
        match store
            .finish(scan.id, owner, status, &outcome.results, error.as_ref())
            .await
        {
            Ok(Some(s)) => {
                publish(&inner.hub, &s);
                return Some(s);
            }
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, attempt, "could not record the scan's end; retrying");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
    None
}

/// Times each step from its start report to its end report, for the
/// step duration histogram.
#[derive(Debug, Default)]
struct StepClock {
    started: HashMap<&'static str, std::time::Instant>,
}

impl StepClock {
    fn observe(&mut self, scan_type: crate::model::ScanType, p: &Progress) {
        match p.state {
            StepState::Started => {
                self.started.insert(p.step, std::time::Instant::now());
            }
            StepState::Finished | StepState::Failed => {
                if let Some(t) = self.started.remove(p.step) {
                    crate::metrics::step_finished(scan_type, p.step, t.elapsed());
                }
            }
        }
    }
}

fn step_label(p: &Progress) -> String {
    match p.state {
        StepState::Started => p.step.to_string(),
        StepState::Finished => format!("{} done", p.step),
        StepState::Failed => format!("{} failed", p.step),
    }
}
