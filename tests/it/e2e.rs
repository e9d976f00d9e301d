//! End to end: the real `hostscan serve` binary, driven over gRPC, scanning
//! a real sshd, storing in a real PostgreSQL or the embedded SQLite (the
//! basics run on both: `both_backends!` at the bottom).

use std::time::Duration;

use hostscan::pb;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::both_backends;
use crate::support::db::{Backend, TestDb};
use crate::support::eventually;
use crate::support::pg::Cluster;
use crate::support::server::{Client, Server, watch};
use crate::support::sshd::{Keys, Options, Sshd, Userland};

/// A database, an sshd, and a server configured to scan it.
/// Fields drop in order: the server stops before its database goes.
pub(crate) struct Env {
    pub(crate) server: Server,
    pub(crate) sshd: Sshd,
    _userland: Option<Userland>,
    pub(crate) keys: Keys,
    pub(crate) db: TestDb,
}

impl Env {
    pub(crate) async fn start(fakes: &[(&str, &str)], extra: &[&str]) -> Self {
        Self::start_on(Backend::Postgres, fakes, extra).await
    }

    pub(crate) async fn start_on(backend: Backend, fakes: &[(&str, &str)], extra: &[&str]) -> Self {
        let db = TestDb::new(backend).await;
        let keys = Keys::generate();
        let userland = (!fakes.is_empty()).then(|| Userland::fakes(fakes));
        let sshd = Sshd::start(
            &keys,
            Options {
                path_first: userland.as_ref().map(Userland::path),
                ..Default::default()
            },
        )
        .await;
        let server = Server::start(db.url(), &server_args(&keys, &sshd, extra)).await;
        Self {
            db,
            keys,
            sshd,
            server,
            _userland: userland,
        }
    }

    pub(crate) fn start_request(&self, scan_type: pb::ScanType) -> pb::StartScanRequest {
        pb::StartScanRequest {
            hostname: "127.0.0.1".into(),
            port: 0,
            username: String::new(),
            scan_type: scan_type as i32,
            request_id: String::new(),
            proxy_jump: String::new(),
        }
    }
}

pub(crate) fn server_args(keys: &Keys, sshd: &Sshd, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--ssh-key",
        keys.client.to_str().expect("utf-8"),
        "--ssh-user",
        &sshd.user,
        "--ssh-port",
        &sshd.port.to_string(),
        "--workers",
        "4",
        "--db-pool-size",
        "6",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Waits until scan `id` is RUNNING (a worker claimed it).
pub(crate) async fn wait_for_running(client: &Client, id: i64) {
    eventually("the scan to run", Duration::from_secs(30), || {
        let mut client = client.clone();
        async move {
            let s = client
                .get_scan(pb::GetScanRequest { scan_id: id })
                .await
                .ok()?
                .into_inner();
            (s.status == pb::ScanStatus::Running as i32).then_some(())
        }
    })
    .await;
}

/// Reads a watch stream to its end: every event, in order.
pub(crate) async fn collect(client: &mut Client, scan_id: i64, after: i64) -> Vec<pb::ScanEvent> {
    let mut stream = watch(client, scan_id, after).await;
    let mut events = Vec::new();
    while let Some(e) = stream.message().await.expect("stream") {
        events.push(e);
    }
    events
}

fn status_of(e: &pb::ScanEvent) -> pb::ScanStatus {
    pb::ScanStatus::try_from(e.status).expect("status")
}

/// The watch contract, for one stream: snapshot first, then strictly
/// consecutive sequences (heartbeats repeat the last), progress never
/// going back, ending with a terminal event that carries the whole scan.
pub(crate) fn assert_well_formed(events: &[pb::ScanEvent]) {
    let first = events.first().expect("at least one event");
    assert!(first.scan.is_some(), "the first event carries the scan");
    let changes: Vec<&pb::ScanEvent> = events.iter().filter(|e| !e.heartbeat).collect();
    for w in changes.windows(2) {
        assert_eq!(
            w[1].sequence,
            w[0].sequence + 1,
            "a gap or a duplicate: {:?}",
            changes.iter().map(|e| e.sequence).collect::<Vec<_>>()
        );
        assert!(w[1].progress >= w[0].progress, "progress went back");
    }
    let last = events.last().expect("last");
    assert!(!last.heartbeat);
    let status = status_of(last);
    assert!(
        matches!(
            status,
            pb::ScanStatus::Completed | pb::ScanStatus::Failed | pb::ScanStatus::Cancelled
        ),
        "stream ended on {status:?}"
    );
    let scan = last
        .scan
        .as_ref()
        .expect("the terminal event carries the scan");
    assert!(scan.results.is_some(), "terminal scans carry results");
    assert_eq!(scan.sequence, last.sequence);
}

async fn every_rpc_against_a_real_host(backend: Backend) {
    let env = Env::start_on(backend, &[], &[]).await;
    let mut client = env.server.client().await;
    let started = client
        .start_scan(env.start_request(pb::ScanType::Full))
        .await
        .expect("start")
        .into_inner();
    assert!(started.id > 0);
    assert_eq!(
        started.port,
        u32::from(env.sshd.port),
        "port 0 means the configured default"
    );
    assert_eq!(
        started.username, env.sshd.user,
        "empty user means the configured default"
    );
    assert!(started.created_at.is_some());

    let events = collect(&mut client, started.id, 0).await;
    assert_well_formed(&events);
    let done = events
        .last()
        .and_then(|e| e.scan.clone())
        .expect("final scan");
    assert_eq!(
        done.status,
        pb::ScanStatus::Completed as i32,
        "{:?}",
        done.error
    );
    assert_eq!(done.progress, 100);
    let results = done.results.as_ref().expect("results");
    assert!(results.step_errors.is_empty(), "{:?}", results.step_errors);
    assert!(results.os.is_some() && results.memory.is_some());
    crate::support::assert_disks_of_this_machine(results.disks.iter().map(|d| d.mount.as_str()));
    assert_eq!(results.packages.as_ref().expect("packages").manager, "dpkg");
    assert!(!results.processes.is_empty() && !results.network_interfaces.is_empty());
    assert!(done.started_at.is_some() && done.completed_at.is_some());

    let got = client
        .get_scan(pb::GetScanRequest {
            scan_id: started.id,
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got, done);

    let list = client
        .list_scans(pb::ListScansRequest {
            hostname: "127.0.0.1".into(),
            status: pb::ScanStatus::Completed as i32,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.total_size, 1);
    assert_eq!(list.scans[0].id, started.id);
    assert!(list.next_page_token.is_empty());

    // Cancelling a finished scan changes nothing.
    let cancelled = client
        .cancel_scan(pb::CancelScanRequest {
            scan_id: started.id,
        })
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(cancelled, done);

    // A watcher arriving after the end gets one terminal event.
    let late = collect(&mut client, started.id, 0).await;
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].scan.as_ref(), Some(&done));
    // ...and nothing if it already has that sequence.
    assert!(
        collect(&mut client, started.id, done.sequence)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn five_hundred_watchers_see_the_same_complete_sequence() {
    // One worker, busy with a blocker scan on a host whose df hangs, so the
    // watched scan stays PENDING until every watcher is subscribed.
    let env = Env::start(&[], &["--workers", "1"]).await;
    let (hang, _hanging) = Sshd::with_fakes(&env.keys, &[("df", "exec sleep 600")]).await;
    let mut client = env.server.client().await;
    let blocker = client
        .start_scan(pb::StartScanRequest {
            port: u32::from(hang.port),
            ..env.start_request(pb::ScanType::Quick)
        })
        .await
        .expect("start")
        .into_inner();
    wait_for_running(&client, blocker.id).await;
    let watched = client
        .start_scan(env.start_request(pb::ScanType::Quick))
        .await
        .expect("start")
        .into_inner();

    // 500 streams over 5 connections.
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(env.server.client().await);
    }
    let mut streams = Vec::new();
    for i in 0..500 {
        let mut c = clients[i % clients.len()].clone();
        let stream = watch(&mut c, watched.id, 0).await;
        streams.push(stream);
    }
    let mut readers = tokio::task::JoinSet::new();
    for mut stream in streams {
        readers.spawn(async move {
            let mut events = Vec::new();
            while let Some(e) = stream.message().await.expect("stream") {
                events.push(e);
            }
            events
        });
    }
    // Let the watched scan run.
    client
        .cancel_scan(pb::CancelScanRequest {
            scan_id: blocker.id,
        })
        .await
        .expect("cancel blocker");

    let mut reference: Option<Vec<(i64, i32, i32)>> = None;
    let mut count = 0;
    while let Some(events) = readers.join_next().await {
        let events = events.expect("reader");
        assert_well_formed(&events);
        assert_eq!(
            events[0].sequence, 1,
            "every watcher attached while PENDING"
        );
        let seen: Vec<(i64, i32, i32)> = events
            .iter()
            .filter(|e| !e.heartbeat)
            .map(|e| (e.sequence, e.status, e.progress))
            .collect();
        match &reference {
            None => reference = Some(seen),
            Some(r) => assert_eq!(&seen, r, "watchers disagree"),
        }
        count += 1;
    }
    assert_eq!(count, 500);
    let reference = reference.expect("events");
    assert_eq!(
        reference.last().map(|e| e.1),
        Some(pb::ScanStatus::Completed as i32)
    );
}

async fn cancel_stops_a_running_scan(backend: Backend) {
    let env = Env::start_on(backend, &[("df", "exec sleep 600")], &[]).await;
    let mut client = env.server.client().await;
    let scan = client
        .start_scan(env.start_request(pb::ScanType::Quick))
        .await
        .expect("start")
        .into_inner();
    let mut stream = watch(&mut client, scan.id, 0).await;
    let mut events = Vec::new();
    // Wait until every quick fact but the hanging df is in, then cancel.
    let all_but_df = crate::support::percent_before_df(hostscan::model::ScanType::Quick);
    while let Some(e) = stream.message().await.expect("stream") {
        let ready = e.progress >= all_but_df;
        events.push(e);
        if ready {
            break;
        }
    }
    let answer = client
        .cancel_scan(pb::CancelScanRequest { scan_id: scan.id })
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(answer.status, pb::ScanStatus::Running as i32);
    while let Some(e) = stream.message().await.expect("stream") {
        events.push(e);
    }
    assert_well_formed(&events);
    let last = events.last().and_then(|e| e.scan.clone()).expect("final");
    assert_eq!(last.status, pb::ScanStatus::Cancelled as i32);
    assert_eq!(
        last.error.as_ref().map(|e| e.kind),
        Some(pb::ScanErrorKind::Cancelled as i32)
    );
    assert!(
        last.results.as_ref().is_some_and(|r| r.os.is_some()),
        "partial results are kept"
    );
}

async fn cancel_of_a_pending_scan_is_immediate(backend: Backend) {
    // The only worker is busy with a scan whose df hangs.
    let env = Env::start_on(backend, &[("df", "exec sleep 600")], &["--workers", "1"]).await;
    let mut client = env.server.client().await;
    let busy = client
        .start_scan(env.start_request(pb::ScanType::Quick))
        .await
        .expect("start")
        .into_inner();
    wait_for_running(&client, busy.id).await;
    let pending = client
        .start_scan(env.start_request(pb::ScanType::Quick))
        .await
        .expect("start")
        .into_inner();
    assert_eq!(pending.status, pb::ScanStatus::Pending as i32);
    let cancelled = client
        .cancel_scan(pb::CancelScanRequest {
            scan_id: pending.id,
        })
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(cancelled.status, pb::ScanStatus::Cancelled as i32);
    assert!(cancelled.completed_at.is_some());
    let events = collect(&mut client, pending.id, 0).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].scan.as_ref(), Some(&cancelled));
    client
        .cancel_scan(pb::CancelScanRequest { scan_id: busy.id })
        .await
        .expect("cancel the busy scan");
}

#[tokio::test]
async fn invalid_requests_name_the_field() {
    let env = Env::start(&[], &[]).await;
    let mut client = env.server.client().await;
    let base = env.start_request(pb::ScanType::Quick);
    let cases = [
        (
            pb::StartScanRequest {
                hostname: "bad host;rm -rf /".into(),
                ..base.clone()
            },
            "hostname",
        ),
        (
            pb::StartScanRequest {
                hostname: "a".repeat(254),
                ..base.clone()
            },
            "hostname",
        ),
        (
            pb::StartScanRequest {
                hostname: String::new(),
                ..base.clone()
            },
            "hostname",
        ),
        (
            pb::StartScanRequest {
                port: 70_000,
                ..base.clone()
            },
            "port",
        ),
        (
            pb::StartScanRequest {
                username: "-oProxyCommand=x".into(),
                ..base.clone()
            },
            "username",
        ),
        (
            pb::StartScanRequest {
                scan_type: 0,
                ..base.clone()
            },
            "scan_type",
        ),
        (
            pb::StartScanRequest {
                scan_type: 9,
                ..base.clone()
            },
            "scan_type",
        ),
        (
            pb::StartScanRequest {
                request_id: "has space".into(),
                ..base.clone()
            },
            "request_id",
        ),
    ];
    for (request, field) in cases {
        let status = client.start_scan(request).await.expect_err("invalid");
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().starts_with(&format!("{field}: ")),
            "{}",
            status.message()
        );
    }
    let status = client
        .get_scan(pb::GetScanRequest { scan_id: 0 })
        .await
        .expect_err("zero id");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("scan_id: "));
    let status = client
        .get_scan(pb::GetScanRequest { scan_id: 424_242 })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .watch_scan(pb::WatchScanRequest {
            scan_id: 424_242,
            after_sequence: 0,
        })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .cancel_scan(pb::CancelScanRequest { scan_id: 424_242 })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .list_scans(pb::ListScansRequest {
            page_token: "forged".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad token");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("page_token: "));
    let status = client
        .list_scans(pb::ListScansRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .expect_err("negative");
    assert!(status.message().starts_with("page_size: "));
    // Nothing was stored by the rejected requests.
    let list = client
        .list_scans(pb::ListScansRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.total_size, 0);
}

#[tokio::test]
async fn start_scan_is_idempotent_and_list_pages() {
    let env = Env::start(&[], &["--workers", "1"]).await;
    let mut client = env.server.client().await;
    let with_id = pb::StartScanRequest {
        request_id: "deploy-42".into(),
        ..env.start_request(pb::ScanType::Quick)
    };
    let first = client
        .start_scan(with_id.clone())
        .await
        .expect("start")
        .into_inner();
    let again = client
        .start_scan(with_id)
        .await
        .expect("start")
        .into_inner();
    assert_eq!(first.id, again.id);
    assert_eq!(again.request_id, "deploy-42");
    for _ in 0..6 {
        client
            .start_scan(env.start_request(pb::ScanType::Full))
            .await
            .expect("start");
    }
    let mut token = String::new();
    let mut ids = Vec::new();
    loop {
        let page = client
            .list_scans(pb::ListScansRequest {
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        assert_eq!(page.total_size, 7);
        ids.extend(page.scans.iter().map(|s| s.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(ids.len(), 7);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let full = client
        .list_scans(pb::ListScansRequest {
            scan_type: pb::ScanType::Full as i32,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(full.total_size, 6);
}

#[tokio::test]
async fn resume_and_heartbeats() {
    // df takes a while: a long step, during which heartbeats flow.
    let env = Env::start(
        &[("df", "sleep 4; exec /usr/bin/df \"$@\"")],
        &["--watch-heartbeat", "1"],
    )
    .await;
    let mut client = env.server.client().await;
    let scan = client
        .start_scan(env.start_request(pb::ScanType::Quick))
        .await
        .expect("start")
        .into_inner();
    let events = collect(&mut client, scan.id, 0).await;
    assert_well_formed(&events);
    let beats: Vec<&pb::ScanEvent> = events.iter().filter(|e| e.heartbeat).collect();
    assert!(
        !beats.is_empty(),
        "a 4s step with a 1s heartbeat sends heartbeats"
    );
    for beat in beats {
        let before = events
            .iter()
            .take_while(|e| !std::ptr::eq(*e, beat))
            .filter(|e| !e.heartbeat)
            .last()
            .expect("a change before the heartbeat");
        assert_eq!(
            (beat.sequence, beat.status, beat.progress),
            (before.sequence, before.status, before.progress)
        );
    }
    // Resuming from the middle yields exactly the rest.
    let changes: Vec<&pb::ScanEvent> = events.iter().filter(|e| !e.heartbeat).collect();
    let middle = changes[changes.len() / 2].sequence;
    let rest = collect(&mut client, scan.id, middle).await;
    // The scan is over: the resumed stream is one snapshot of the end.
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].sequence, changes.last().expect("last").sequence);
}

#[tokio::test]
async fn api_keys_guard_the_scan_service_only() {
    let key = "k3y-0123456789abcdef";
    let env = Env::start(&[], &["--api-key", key]).await;
    let mut anonymous = env.server.client().await;
    let status = anonymous
        .list_scans(pb::ListScansRequest::default())
        .await
        .expect_err("no key");
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut wrong = env
        .server
        .client_with_key(Some("k3y-0123456789abcdeX"))
        .await;
    let status = wrong
        .list_scans(pb::ListScansRequest::default())
        .await
        .expect_err("wrong key");
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut right = env.server.client_with_key(Some(key)).await;
    right
        .list_scans(pb::ListScansRequest::default())
        .await
        .expect("right key");
    // Health stays open.
    let mut health = HealthClient::new(env.server.channel().await);
    let answer = health
        .check(HealthCheckRequest {
            service: "hostscan.v1.ScanService".into(),
        })
        .await
        .expect("health without a key")
        .into_inner();
    assert_eq!(answer.status(), ServingStatus::Serving);
    // The key never reaches the log.
    assert!(!env.server.logs().contains(key));
}

#[tokio::test]
async fn refuses_to_listen_openly_without_keys() {
    let out = std::process::Command::new(crate::support::server::BINARY)
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--database-url",
            "postgres://127.0.0.1:1/x",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--listen/HOSTSCAN_LISTEN") && stderr.contains("--insecure-no-auth"),
        "{stderr}"
    );
}

#[tokio::test]
async fn health_follows_the_database() {
    let mut cluster = Cluster::start().await;
    let url = cluster.migrated_database("hostscan").await;
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let server = Server::start(&url, &server_args(&keys, &sshd, &[])).await;
    let mut health = HealthClient::new(server.channel().await);
    let status = |mut h: HealthClient<tonic::transport::Channel>| async move {
        h.check(HealthCheckRequest {
            service: "hostscan.v1.ScanService".into(),
        })
        .await
        .ok()
        .map(|r| r.into_inner().status())
    };
    assert_eq!(status(health.clone()).await, Some(ServingStatus::Serving));

    cluster.stop();
    eventually("NOT_SERVING", Duration::from_secs(30), || {
        let h = health.clone();
        async move { (status(h).await == Some(ServingStatus::NotServing)).then_some(()) }
    })
    .await;
    // Requests fail fast with UNAVAILABLE, not a hang.
    let mut client = server.client().await;
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        client.get_scan(pb::GetScanRequest { scan_id: 1 }),
    )
    .await
    .expect("an answer, not a hang");
    assert_eq!(answer.expect_err("database down").code(), Code::Unavailable);

    cluster.restart().await;
    eventually("SERVING again", Duration::from_secs(30), || {
        let h = health.clone();
        async move { (status(h).await == Some(ServingStatus::Serving)).then_some(()) }
    })
    .await;
    health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("overall health");
    eventually("queries to work again", Duration::from_secs(30), || {
        let mut c = client.clone();
        async move {
            match c.list_scans(pb::ListScansRequest::default()).await {
                Ok(_) => Some(()),
                Err(_) => None,
            }
        }
    })
    .await;
}

#[tokio::test]
async fn sigterm_drains_running_scans_and_exits_zero() {
    // df takes 3s; the grace period is long enough to finish.
    let mut env = Env::start(
        &[("df", "sleep 3; exec /usr/bin/df \"$@\"")],
        &["--shutdown-grace", "30"],
    )
    .await;
    let mut client = env.server.client().await;
    let scan = client
        .start_scan(env.start_request(pb::ScanType::Quick))
        .await
        .expect("start")
        .into_inner();
    let mut stream = watch(&mut client, scan.id, 0).await;
    // Signal once it runs.
    while let Some(e) = stream.message().await.expect("stream") {
        if e.status == pb::ScanStatus::Running as i32 {
            break;
        }
    }
    env.server.signal("TERM");
    let mut last = None;
    while let Ok(Some(e)) = stream.message().await {
        last = Some(e);
    }
    let status = env.server.wait(Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        env.server.logs()
    );
    let last = last.expect("events after SIGTERM");
    assert_eq!(
        last.status,
        pb::ScanStatus::Completed as i32,
        "the running scan finished during the grace period"
    );
    assert!(env.server.logs().contains("shutting down"));
    drop(env.db);
}

#[tokio::test]
async fn sigterm_past_the_grace_period_requeues() {
    let mut env = Env::start(&[("df", "exec sleep 600")], &["--shutdown-grace", "1"]).await;
    let mut client = env.server.client().await;
    let scan = client
        .start_scan(env.start_request(pb::ScanType::Quick))
        .await
        .expect("start")
        .into_inner();
    wait_for_running(&client, scan.id).await;
    let mut stream = watch(&mut client, scan.id, 0).await;
    stream.message().await.expect("snapshot");
    env.server.signal("TERM");
    // The open watch stream ends with UNAVAILABLE, telling where to resume.
    let end = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream should end with UNAVAILABLE"),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), Code::Unavailable);
    assert!(
        end.message().contains("after_sequence="),
        "{}",
        end.message()
    );
    let status = env.server.wait(Duration::from_secs(60)).await;
    assert!(status.success(), "exit {status:?}");
    // Requeued for another replica, not left RUNNING.
    let server = Server::start(env.db.url(), &server_args(&env.keys, &env.sshd, &[])).await;
    let mut client = server.client().await;
    let now = client
        .get_scan(pb::GetScanRequest { scan_id: scan.id })
        .await
        .expect("get")
        .into_inner();
    assert_ne!(now.status, pb::ScanStatus::Failed as i32);
    assert!(
        now.current_step.contains("requeued") || now.status == pb::ScanStatus::Running as i32,
        "{now:?}"
    );
}

async fn a_killed_server_leaves_no_scan_running_forever(backend: Backend) {
    // df is slow but finishes: the requeued run completes.
    let mut env = Env::start_on(
        backend,
        &[("df", "sleep 3; exec /usr/bin/df \"$@\"")],
        &["--lease-timeout", "2"],
    )
    .await;
    let mut client = env.server.client().await;
    let scan = client
        .start_scan(env.start_request(pb::ScanType::Quick))
        .await
        .expect("start")
        .into_inner();
    wait_for_running(&client, scan.id).await;
    env.server.signal("KILL");
    // Gone, and with it its hold on the embedded database's lock.
    env.server.wait(Duration::from_secs(10)).await;
    let server = Server::start(
        env.db.url(),
        &server_args(&env.keys, &env.sshd, &["--lease-timeout", "2"]),
    )
    .await;
    let mut client = server.client().await;
    let events = collect(&mut client, scan.id, 0).await;
    assert_well_formed(&events);
    let last = events.last().and_then(|e| e.scan.clone()).expect("final");
    assert_eq!(last.status, pb::ScanStatus::Completed as i32, "{last:?}");
}

#[tokio::test]
async fn a_watcher_on_another_replica_sees_every_event() {
    let env = Env::start(&[("df", "sleep 1; exec /usr/bin/df \"$@\"")], &[]).await;
    let other = Server::start(env.db.url(), &server_args(&env.keys, &env.sshd, &[])).await;
    let mut here = env.server.client().await;
    let mut there = other.client().await;
    let scan = here
        .start_scan(env.start_request(pb::ScanType::Quick))
        .await
        .expect("start")
        .into_inner();
    let (a, b) = tokio::join!(
        collect(&mut here, scan.id, 0),
        collect(&mut there, scan.id, 0)
    );
    assert_well_formed(&a);
    assert_well_formed(&b);
    let last_a = a.last().and_then(|e| e.scan.clone()).expect("a");
    let last_b = b.last().and_then(|e| e.scan.clone()).expect("b");
    assert_eq!(last_a, last_b);
    assert_eq!(last_a.status, pb::ScanStatus::Completed as i32);
}

/// No --database-url: the embedded database in $XDG_DATA_HOME/hostscan,
/// announced at start-up; scans work; a second server on the same file is
/// refused with a message saying why.
#[tokio::test]
async fn serves_on_the_embedded_database_by_default() {
    let data = crate::support::temp_dir("hostscan-xdg-");
    let xdg = data.path().to_str().expect("utf-8").to_string();
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let args = server_args(&keys, &sshd, &[]);
    let server = Server::start_env("", &args, &[("XDG_DATA_HOME", &xdg)]).await;
    let file = data.path().join("hostscan").join("hostscan.db");
    assert!(file.is_file(), "{} was not created", file.display());
    assert!(
        server
            .logs()
            .contains(&format!("embedded database at {}", file.display())),
        "{}",
        server.logs()
    );
    let mut client = server.client().await;
    let scan = client
        .start_scan(pb::StartScanRequest {
            hostname: "127.0.0.1".into(),
            scan_type: pb::ScanType::Quick as i32,
            ..Default::default()
        })
        .await
        .expect("start")
        .into_inner();
    let events = collect(&mut client, scan.id, 0).await;
    assert_well_formed(&events);
    assert_eq!(
        status_of(events.last().expect("last")),
        pb::ScanStatus::Completed
    );

    let second = std::process::Command::new("timeout")
        .arg("60")
        .arg(crate::support::server::BINARY)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(&args)
        .env("XDG_DATA_HOME", &xdg)
        .env_remove("DATABASE_URL")
        .output()
        .expect("run a second server");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("in use by another hostscan process")
            && stderr.contains(&format!("pid {}", server.pid)),
        "{stderr}"
    );
}

/// Retention on a database of 100,000 old scans of 1,000 hosts: the server
/// deletes them in batches at start-up while a scan runs and a watcher
/// follows it (the stream stays whole), keeps each host's newest completed
/// scan, and ListHosts is served by indexes (EXPLAIN) in either order,
/// not a scan of `scans`.
#[tokio::test]
async fn retention_prunes_a_large_history_while_scans_run() {
    let db = TestDb::new(Backend::Postgres).await;
    let TestDb::Postgres(pg) = &db else {
        unreachable!("a PostgreSQL database")
    };
    db.execute(
        "INSERT INTO scans (hostname, port, username, scan_type, status, progress, created_at, \
           started_at, completed_at, results, sequence, attempts) \
         SELECT 'old-' || (g % 1000) || '.example', 22, 'scanner', 'quick', 'completed', 100, \
           now() - interval '200 days' + g * interval '1 second', \
           now() - interval '200 days' + g * interval '1 second', \
           now() - interval '200 days' + g * interval '1 second' + interval '150 ms', \
           jsonb_build_object('hostname', 'old-' || (g % 1000), 'os', jsonb_build_object( \
             'id', 'debian', 'pretty_name', 'Debian GNU/Linux 12 (bookworm)', 'kernel', '6.1.0'), \
             'disks', jsonb_build_array(jsonb_build_object('filesystem', '/dev/vda1', 'mount', '/', \
               'total_bytes', 1e11, 'used_bytes', 5e10, 'available_bytes', 5e10, 'used_percent', 50))), \
           5, 1 \
         FROM generate_series(1, 100000) g; \
         INSERT INTO hosts (hostname, port, last_scan_id, completed_scan_id, completed_at, \
           completed_type, os_id, os_pretty_name, kernel, step_error_count) \
         SELECT hostname, port, max(id), max(id), max(completed_at), 'quick', 'debian', \
           'Debian GNU/Linux 12 (bookworm)', '6.1.0', 0 FROM scans GROUP BY hostname, port; \
         ANALYZE scans; ANALYZE hosts;",
    )
    .await;
    let plan = pg
        .explain(
            "SELECT * FROM hosts INNER JOIN scans ON scans.id = hosts.last_scan_id \
             ORDER BY hosts.last_scan_id DESC LIMIT 51",
        )
        .await;
    assert!(
        plan.contains("Index Scan") && !plan.contains("Seq Scan on scans"),
        "{plan}"
    );
    // order_by "hostname", a later page: the primary key's index.
    let plan = pg
        .explain(
            "SELECT * FROM hosts INNER JOIN scans ON scans.id = hosts.last_scan_id \
             WHERE hosts.hostname > 'old-500.example' \
               OR (hosts.hostname = 'old-500.example' AND hosts.port > 22) \
             ORDER BY hosts.hostname, hosts.port LIMIT 51",
        )
        .await;
    assert!(
        plan.contains("Index Scan using hosts_pkey") && !plan.contains("Seq Scan on scans"),
        "{plan}"
    );

    let keys = Keys::generate();
    let (sshd, _slow) =
        Sshd::with_fakes(&keys, &[("df", "sleep 2; exec /usr/bin/df \"$@\"")]).await;
    let server = Server::start(
        db.url(),
        &server_args(&keys, &sshd, &["--retention", "90d"]),
    )
    .await;
    let mut client = server.client().await;
    let scan = client
        .start_scan(pb::StartScanRequest {
            hostname: "127.0.0.1".into(),
            scan_type: pb::ScanType::Quick as i32,
            ..Default::default()
        })
        .await
        .expect("start")
        .into_inner();
    let events = collect(&mut client, scan.id, 0).await;
    assert_well_formed(&events);
    assert_eq!(
        status_of(events.last().expect("last")),
        pb::ScanStatus::Completed
    );

    eventually("retention to finish", Duration::from_secs(300), || {
        let logs = server.logs();
        async move { logs.contains("retention deleted 99000 scans").then_some(()) }
    })
    .await;
    let kept = pg
        .query_text("SELECT count(*)::text AS line FROM scans WHERE hostname LIKE 'old-%'")
        .await;
    assert_eq!(
        kept.trim(),
        "1000",
        "each host keeps its newest completed scan"
    );
    let hosts = client
        .list_hosts(pb::ListHostsRequest {
            hostname_prefix: "old-".into(),
            ..Default::default()
        })
        .await
        .expect("hosts")
        .into_inner();
    assert_eq!(hosts.total_size, 1000);
    assert!(hosts.hosts.iter().all(|h| h.latest_completed.is_some()));
}

/// Starts a quick scan of `hostname` and follows it to its end: the scan
/// as the terminal event carries it.
async fn quick_scan_to_end(client: &mut Client, hostname: &str) -> pb::Scan {
    let scan = client
        .start_scan(pb::StartScanRequest {
            hostname: hostname.into(),
            scan_type: pb::ScanType::Quick as i32,
            ..Default::default()
        })
        .await
        .expect("start")
        .into_inner();
    collect(client, scan.id, 0)
        .await
        .pop()
        .and_then(|e| e.into_fields().scan)
        .expect("final")
}

/// A first start on a machine with no SSH key yet: the server serves, says
/// why scans will fail, and each scan fails AUTH_FAILED saying no key is
/// configured.
#[tokio::test]
async fn serves_without_a_key_and_scans_say_why_they_fail() {
    let db = TestDb::new(Backend::Sqlite).await;
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let home = crate::support::temp_dir("hostscan-home-");
    let args: Vec<String> = [
        "--ssh-user",
        &sshd.user,
        "--ssh-port",
        &sshd.port.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let home_dir = home.path().to_str().expect("utf-8").to_string();
    let server = Server::start_env(db.url(), &args, &[("HOME", &home_dir)]).await;
    assert!(server.logs().contains("no SSH key"), "{}", server.logs());
    let mut client = server.client().await;
    let last = quick_scan_to_end(&mut client, "127.0.0.1").await;
    let error = last.error.expect("an error");
    assert_eq!(error.kind, pb::ScanErrorKind::AuthFailed as i32);
    assert!(
        error.message.contains("none configured"),
        "{}",
        error.message
    );

    // A key appears where ssh keeps it; a SIGHUP makes the server use it.
    let ssh_dir = home.path().join(".ssh");
    std::fs::create_dir_all(&ssh_dir).expect("~/.ssh");
    std::fs::copy(&keys.client, ssh_dir.join("id_ed25519")).expect("key");
    server.signal("HUP");
    eventually("the SSH reload", Duration::from_secs(20), || {
        let logs = server.logs();
        async move {
            logs.contains("reloaded the SSH keys and configuration")
                .then_some(())
        }
    })
    .await;
    let last = quick_scan_to_end(&mut client, "127.0.0.1").await;
    assert_eq!(last.status, pb::ScanStatus::Completed as i32, "{last:?}");
}

/// SIGHUP reads `--ssh-config` again: an alias fixed in the file works
/// for the next scan; a file broken afterwards is refused with a logged
/// reason, and the previous one stays in force.
#[tokio::test]
async fn sighup_reloads_the_ssh_config_and_keeps_it_when_broken() {
    let db = TestDb::new(Backend::Sqlite).await;
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let dir = crate::support::temp_dir("hostscan-config-");
    let config = dir.path().join("ssh_config");
    let write = |port: u16| {
        std::fs::write(
            &config,
            format!(
                "Host the-target\n    HostName 127.0.0.1\n    Port {port}\n    User {}\n",
                sshd.user
            ),
        )
        .expect("ssh_config")
    };
    // First a port where nothing listens.
    let closed = crate::support::free_port();
    write(closed);
    let mut args = server_args(&keys, &sshd, &[]);
    args.extend(["--ssh-config".to_string(), config.display().to_string()]);
    let server = Server::start(db.url(), &args).await;
    let mut client = server.client().await;
    let mut scan_alias = async || quick_scan_to_end(&mut client, "the-target").await;
    let reloads = |n: usize| {
        let server = &server;
        async move {
            eventually("the SSH reload", Duration::from_secs(20), || {
                let logs = server.logs();
                async move {
                    (logs
                        .matches("reloaded the SSH keys and configuration")
                        .count()
                        + logs.matches("SSH reload failed").count()
                        >= n)
                        .then_some(())
                }
            })
            .await
        }
    };
    let failed = scan_alias().await;
    assert_eq!(failed.status, pb::ScanStatus::Failed as i32, "{failed:?}");
    assert_eq!(failed.port, u32::from(closed), "the file's Port");

    write(sshd.port);
    server.signal("HUP");
    reloads(1).await;
    let fixed = scan_alias().await;
    assert_eq!(fixed.status, pb::ScanStatus::Completed as i32, "{fixed:?}");

    std::fs::write(&config, "Host the-target\n    Port 99999\n").expect("broken");
    server.signal("HUP");
    reloads(2).await;
    assert!(
        server
            .logs()
            .contains("SSH reload failed; keeping the previous"),
        "{}",
        server.logs()
    );
    let still = scan_alias().await;
    assert_eq!(still.status, pb::ScanStatus::Completed as i32, "{still:?}");
    assert_eq!(still.port, u32::from(sshd.port));
}

both_backends!(
    every_rpc_against_a_real_host,
    cancel_stops_a_running_scan,
    cancel_of_a_pending_scan_is_immediate,
    a_killed_server_leaves_no_scan_running_forever,
);
