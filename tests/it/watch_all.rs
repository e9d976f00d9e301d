//! WatchScans against the real server: a snapshot of what runs, then every
//! change of every matching scan, per-scan order without gaps, filters,
//! a subscriber that falls behind, another replica's scans, resume.

use std::collections::BTreeMap;
use std::time::Duration;

use hostscan::pb;
use tokio_stream::StreamExt;

use crate::e2e::{Env, server_args, wait_for_running};
use crate::support::is_terminal;
use crate::support::server::{Client, Server};

type Events = tonic::codec::Streaming<pb::ScanEvent>;

async fn subscribe(client: &mut Client, request: pb::WatchScansRequest) -> Events {
    client
        .watch_scans(request)
        .await
        .expect("WatchScans")
        .into_inner()
}

/// Reads `stream` until every scan in `ids` has had its terminal event;
/// the events of each scan, in the order received (heartbeats dropped).
async fn until_finished(stream: &mut Events, ids: &[i64]) -> BTreeMap<i64, Vec<pb::ScanEvent>> {
    let mut by_scan: BTreeMap<i64, Vec<pb::ScanEvent>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !ids.iter().all(|id| {
        by_scan
            .get(id)
            .and_then(|e| e.last())
            .is_some_and(|e| is_terminal(e.status))
    }) {
        let event = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("every scan to finish within the deadline")
            .expect("the stream stays open")
            .expect("no error");
        assert!(!event.resume_token.is_empty(), "every message can resume");
        if event.heartbeat {
            assert_eq!(event.scan_id, 0);
            continue;
        }
        by_scan.entry(event.scan_id).or_default().push(event);
    }
    by_scan
}

/// WatchScan's contract, per scan, for a subscriber that kept up:
/// consecutive sequences, progress never going back, a terminal event last
/// that carries the whole scan.
fn assert_per_scan_well_formed(events: &[pb::ScanEvent], hostname: &str) {
    assert!(events.iter().all(|e| e.hostname == hostname));
    for w in events.windows(2) {
        assert_eq!(w[1].sequence, w[0].sequence + 1, "a gap or a duplicate");
        assert!(w[1].progress >= w[0].progress, "progress went back");
    }
    let last = events.last().expect("events");
    assert!(is_terminal(last.status));
    let scan = last
        .scan
        .as_ref()
        .expect("the terminal event carries the scan");
    assert!(scan.results.is_some());
    assert_eq!(scan.sequence, last.sequence);
}

#[tokio::test]
async fn a_dashboard_sees_every_change_of_every_scan() {
    // A slow df: scans run long enough to be in the snapshot.
    let env = Env::start(&[("df", "sleep 1; exec /usr/bin/df \"$@\"")], &[]).await;
    let mut client = env.server.client().await;
    let running = client
        .start_scan(env.start_request(pb::ScanType::Quick))
        .await
        .expect("start")
        .into_inner();
    wait_for_running(&client, running.id).await;

    let mut everything = subscribe(&mut client, pb::WatchScansRequest::default()).await;
    let mut full_only = subscribe(
        &mut client,
        pb::WatchScansRequest {
            scan_type: pb::ScanType::Full as i32,
            ..Default::default()
        },
    )
    .await;
    let mut running_only = subscribe(
        &mut client,
        pb::WatchScansRequest {
            status: pb::ScanStatus::Running as i32,
            ..Default::default()
        },
    )
    .await;
    let mut other_host = subscribe(
        &mut client,
        pb::WatchScansRequest {
            hostname: "other.example".into(),
            ..Default::default()
        },
    )
    .await;
    let quick = client
        .start_scan(env.start_request(pb::ScanType::Quick))
        .await
        .expect("start")
        .into_inner();
    let full = client
        .start_scan(env.start_request(pb::ScanType::Full))
        .await
        .expect("start")
        .into_inner();
    let ids = [running.id, quick.id, full.id];

    let all = until_finished(&mut everything, &ids).await;
    // The one already running came first, as a snapshot with the scan.
    let first = &all[&running.id][0];
    assert_eq!(first.status, pb::ScanStatus::Running as i32);
    assert!(first.scan.is_some());
    for id in [quick.id, full.id] {
        // New scans from their first state on: every sequence, in order.
        assert_eq!(all[&id][0].sequence, 1, "scan {id} from its creation");
        assert_per_scan_well_formed(&all[&id], "127.0.0.1");
        let last = all[&id]
            .last()
            .and_then(|e| e.scan.as_ref())
            .expect("final");
        assert_eq!(last.status, pb::ScanStatus::Completed as i32);
    }
    assert_per_scan_well_formed(&all[&running.id], "127.0.0.1");

    let full_events = until_finished(&mut full_only, &[full.id]).await;
    assert_eq!(
        full_events.keys().copied().collect::<Vec<_>>(),
        vec![full.id]
    );
    let changes = |events: &[pb::ScanEvent]| {
        events
            .iter()
            .map(|e| (e.sequence, e.status, e.progress, e.current_step.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(changes(&full_events[&full.id]), changes(&all[&full.id]));
    assert!(
        full_events[&full.id]
            .iter()
            .all(|e| e.scan_type == pb::ScanType::Full as i32)
    );

    // RUNNING only: each scan's running changes, then the one that ends it.
    let runs = until_finished(&mut running_only, &ids).await;
    for (id, events) in &runs {
        let (last, before) = events.split_last().expect("events");
        assert!(
            before
                .iter()
                .all(|e| e.status == pb::ScanStatus::Running as i32),
            "scan {id}: {before:?}"
        );
        assert_eq!(last.status, pb::ScanStatus::Completed as i32);
    }

    // Nothing for a host nobody scanned: heartbeats only.
    let quiet = tokio::time::timeout(Duration::from_millis(300), other_host.next()).await;
    assert!(quiet.is_err(), "{quiet:?}");
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_resyncs_and_misses_no_ending() {
    // One worker, busy with a scan whose df hangs: every other scan stays
    // PENDING until cancelled. 2,500 created and 2,500 cancelled make 5,000
    // events, more than a subscriber's buffer (4,096).
    let env = Env::start(&[("df", "exec sleep 600")], &["--workers", "1"]).await;
    let mut client = env.server.client().await;
    let blocker = client
        .start_scan(env.start_request(pb::ScanType::Quick))
        .await
        .expect("start")
        .into_inner();
    wait_for_running(&client, blocker.id).await;
    // A client that takes little at a time (16 KiB HTTP/2 windows), so
    // that the server cannot hand it everything at once.
    let channel = tonic::transport::Channel::from_shared(env.server.url())
        .expect("url")
        .initial_stream_window_size(Some(16 * 1024))
        .initial_connection_window_size(Some(16 * 1024))
        .connect()
        .await
        .expect("connect");
    let mut narrow = hostscan::pb::scan_service_client::ScanServiceClient::new(channel);
    let mut slow = narrow
        .watch_scans(pb::WatchScansRequest::default())
        .await
        .expect("WatchScans")
        .into_inner();
    // The snapshot: the blocker.
    let first = slow.next().await.expect("snapshot").expect("ok");
    assert_eq!(first.scan_id, blocker.id);

    let mut ids = Vec::new();
    let mut producers = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let mut client = client.clone();
        let request = env.start_request(pb::ScanType::Quick);
        producers.spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..(2500 / 8 + usize::from(worker < 2500 % 8)) {
                let scan = client
                    .start_scan(request.clone())
                    .await
                    .expect("start")
                    .into_inner();
                client
                    .cancel_scan(pb::CancelScanRequest { scan_id: scan.id })
                    .await
                    .expect("cancel");
                mine.push(scan.id);
            }
            mine
        });
    }
    while let Some(mine) = producers.join_next().await {
        ids.extend(mine.expect("producer"));
    }
    assert_eq!(ids.len(), 2500);
    // Only now does the subscriber read: it fell behind, and must still
    // learn how every scan ended, never seeing a sequence go back.
    let seen = until_finished(&mut slow, &ids).await;
    let mut gaps = 0;
    for id in &ids {
        let events = &seen[id];
        let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "scan {id}: {sequences:?}"
        );
        let last = events.last().expect("last");
        assert_eq!(last.status, pb::ScanStatus::Cancelled as i32);
        assert!(last.scan.is_some(), "the terminal event carries the scan");
        if events.len() < 2 {
            gaps += 1;
        }
    }
    assert!(
        gaps > 0,
        "the subscriber never fell behind: the test proves nothing"
    );
    client
        .cancel_scan(pb::CancelScanRequest {
            scan_id: blocker.id,
        })
        .await
        .expect("cancel blocker");
}

#[tokio::test]
async fn scans_on_another_replica_and_a_resumed_stream() {
    let env = Env::start(&[("df", "sleep 1; exec /usr/bin/df \"$@\"")], &[]).await;
    let other = Server::start(env.db.url(), &server_args(&env.keys, &env.sshd, &[])).await;
    let mut here = env.server.client().await;
    let mut there = other.client().await;
    let mut stream = subscribe(&mut here, pb::WatchScansRequest::default()).await;
    // Created and run by the other replica (its workers are as fast as
    // ours; either may run it: all that matters is where it was created).
    let scan = there
        .start_scan(env.start_request(pb::ScanType::Quick))
        .await
        .expect("start")
        .into_inner();
    let events = until_finished(&mut stream, &[scan.id]).await;
    assert_eq!(
        events[&scan.id][0].sequence, 1,
        "a new scan from its first state"
    );
    assert_per_scan_well_formed(&events[&scan.id], "127.0.0.1");
    let token = events[&scan.id].last().expect("last").resume_token.clone();
    drop(stream);

    // While nobody watches, a scan runs to its end; a resumed stream gets
    // its final state.
    let missed = there
        .start_scan(env.start_request(pb::ScanType::Quick))
        .await
        .expect("start")
        .into_inner();
    let finished = crate::e2e::collect(&mut there, missed.id, 0)
        .await
        .pop()
        .and_then(|e| e.into_fields().scan)
        .expect("the final scan");
    assert!(is_terminal(finished.status));
    let mut resumed = subscribe(
        &mut here,
        pb::WatchScansRequest {
            resume_token: token,
            ..Default::default()
        },
    )
    .await;
    let caught = until_finished(&mut resumed, &[missed.id]).await;
    let last = caught[&missed.id].last().expect("caught up");
    assert_eq!(last.scan.as_ref(), Some(&finished));

    // A token this server did not issue is named.
    let bad = here
        .watch_scans(pb::WatchScansRequest {
            resume_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad token");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(
        bad.message().starts_with("resume_token:"),
        "{}",
        bad.message()
    );
    let bad = here
        .watch_scans(pb::WatchScansRequest {
            hostname: "a b".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad host");
    assert!(bad.message().starts_with("hostname:"), "{}", bad.message());
}

/// Subscribers that go away free their subscription at once: the server's
/// open-streams gauge follows 50 dashboards arriving and leaving.
#[tokio::test]
async fn dashboards_that_leave_are_let_go() {
    use crate::support::server::scrape;
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", crate::support::free_port())
        .parse()
        .expect("addr");
    let env = Env::start(&[], &["--metrics-listen", &metrics.to_string()]).await;
    let open = || async move {
        scrape(metrics)
            .await
            .get("hostscan_watch_streams")
            .copied()
            .unwrap_or(0.0)
    };
    let mut client = env.server.client().await;
    let mut streams = Vec::new();
    for _ in 0..50 {
        streams.push(subscribe(&mut client, pb::WatchScansRequest::default()).await);
    }
    crate::support::eventually("50 open streams", Duration::from_secs(30), || async {
        (open().await == 50.0).then_some(())
    })
    .await;
    drop(streams);
    crate::support::eventually("every stream let go", Duration::from_secs(30), || async {
        (open().await == 0.0).then_some(())
    })
    .await;
}
