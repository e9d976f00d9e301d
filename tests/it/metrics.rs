//! Prometheus metrics of the real server: scrape `/metrics` before and
//! after real scans and calls, and check each counter moved by exactly what
//! happened; every metric the server exports is documented in the README.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use hostscan::pb;

use crate::e2e::server_args;
use crate::support::pg::TestDb;
use crate::support::server::{Server, scrape, watch};
use crate::support::sshd::{Keys, Options, Sshd};
use crate::support::{eventually, free_port};

fn request(port: u16, scan_type: pb::ScanType) -> pb::StartScanRequest {
    pb::StartScanRequest {
        hostname: "127.0.0.1".into(),
        port: u32::from(port),
        scan_type: scan_type as i32,
        ..Default::default()
    }
}

fn get(m: &HashMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn counters_move_by_what_happened() {
    let db = TestDb::new().await;
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    // A host whose df fails: its scan completes with a step error.
    let (broken, _userland) = Sshd::with_fakes(&keys, &[("df", "exit 1")]).await;
    let server = Server::start(
        &db.url,
        &server_args(&keys, &sshd, &["--metrics-listen", &metrics.to_string()]),
    )
    .await;
    assert!(
        server
            .logs()
            .contains(&format!("metrics on http://{metrics}/metrics"))
    );
    let before = scrape(metrics).await;
    assert_eq!(get(&before, "hostscan_database_up"), 1.0);
    assert_eq!(get(&before, r#"hostscan_build_info{version="0.1.0"}"#), 1.0);

    // Two quick scans and a full one that complete, one that completes with
    // a step error, a quick one refused, an idempotent repeat, a rejected
    // request, an unknown id; each scan watched.
    let mut client = server.client().await;
    let refused = free_port();
    let mut ids = Vec::new();
    for r in [
        request(sshd.port, pb::ScanType::Quick),
        request(sshd.port, pb::ScanType::Quick),
        request(sshd.port, pb::ScanType::Full),
        request(broken.port, pb::ScanType::Quick),
        pb::StartScanRequest {
            request_id: "once".into(),
            ..request(refused, pb::ScanType::Quick)
        },
        pb::StartScanRequest {
            request_id: "once".into(),
            ..request(refused, pb::ScanType::Quick)
        },
    ] {
        ids.push(client.start_scan(r).await.expect("start").into_inner().id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 5);
    client
        .start_scan(pb::StartScanRequest {
            hostname: "bad host".into(),
            ..request(sshd.port, pb::ScanType::Quick)
        })
        .await
        .expect_err("invalid");
    client
        .get_scan(pb::GetScanRequest { scan_id: 999_999 })
        .await
        .expect_err("unknown");
    let mut seen_events = 0;
    for id in &ids {
        let mut stream = watch(&mut client, *id, 0).await;
        while let Some(e) = stream.message().await.expect("stream") {
            seen_events += usize::from(!e.heartbeat);
        }
    }

    let expected: &[(&str, f64)] = &[
        (r#"hostscan_scans_created_total{scan_type="quick"}"#, 4.0),
        (r#"hostscan_scans_created_total{scan_type="full"}"#, 1.0),
        (r#"hostscan_scans_started_total{scan_type="quick"}"#, 4.0),
        (r#"hostscan_scans_started_total{scan_type="full"}"#, 1.0),
        (
            r#"hostscan_scans_finished_total{scan_type="quick",status="completed",error_kind="none"}"#,
            3.0,
        ),
        (
            r#"hostscan_scans_finished_total{scan_type="full",status="completed",error_kind="none"}"#,
            1.0,
        ),
        (
            r#"hostscan_scans_finished_total{scan_type="quick",status="failed",error_kind="connection_refused"}"#,
            1.0,
        ),
        (
            r#"hostscan_scan_duration_seconds_count{scan_type="quick",status="completed"}"#,
            3.0,
        ),
        (
            r#"hostscan_scan_step_duration_seconds_count{scan_type="quick",step="connect"}"#,
            4.0,
        ),
        (
            r#"hostscan_scan_step_duration_seconds_count{scan_type="full",step="packages"}"#,
            1.0,
        ),
        (
            r#"hostscan_scan_step_duration_seconds_count{scan_type="quick",step="disks"}"#,
            3.0,
        ),
        (r#"hostscan_scan_step_errors_total{step="disks"}"#, 1.0),
        (
            r#"hostscan_grpc_requests_total{service="hostscan.v1.ScanService",method="StartScan",code="OK"}"#,
            6.0,
        ),
        (
            r#"hostscan_grpc_requests_total{service="hostscan.v1.ScanService",method="StartScan",code="INVALID_ARGUMENT"}"#,
            1.0,
        ),
        (
            r#"hostscan_grpc_requests_total{service="hostscan.v1.ScanService",method="GetScan",code="NOT_FOUND"}"#,
            1.0,
        ),
        (
            r#"hostscan_grpc_requests_total{service="hostscan.v1.ScanService",method="WatchScan",code="OK"}"#,
            5.0,
        ),
        (
            r#"hostscan_grpc_request_duration_seconds_count{service="hostscan.v1.ScanService",method="StartScan"}"#,
            7.0,
        ),
    ];
    // Workers record a scan's end just after publishing it: wait for the
    // counters, never for a time.
    let settle_by = tokio::time::Instant::now() + Duration::from_secs(30);
    let after = loop {
        let now = scrape(metrics).await;
        let settled = expected
            .iter()
            .all(|(series, delta)| get(&now, series) - get(&before, series) == *delta);
        if settled || tokio::time::Instant::now() > settle_by {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (series, delta) in expected {
        assert_eq!(
            get(&after, series) - get(&before, series),
            *delta,
            "{series}; scraped:\n{}",
            after
                .iter()
                .filter(|(k, _)| k.starts_with(series.split('{').next().unwrap_or("")))
                .map(|(k, v)| format!("{k} {v}\n"))
                .collect::<String>()
        );
    }
    let published = get(&after, "hostscan_events_published_total")
        - get(&before, "hostscan_events_published_total");
    assert!(
        published >= seen_events as f64,
        "{published} events published, {seen_events} seen by watchers"
    );
    assert!(
        get(&after, "hostscan_db_pool_wait_seconds_count")
            > get(&before, "hostscan_db_pool_wait_seconds_count")
    );
    assert!(get(&after, "hostscan_grpc_connections") >= 1.0);
    assert_eq!(
        get(&after, "hostscan_grpc_connections_accepted_total")
            - get(&before, "hostscan_grpc_connections_accepted_total"),
        1.0,
        "one client connection"
    );

    // Gauges come back down; the sampled ones follow the queue and the pool.
    eventually("the gauges to settle", Duration::from_secs(30), || async {
        let now = scrape(metrics).await;
        (get(&now, "hostscan_scans_running") == 0.0
            && get(&now, "hostscan_watch_streams") == 0.0
            && get(&now, "hostscan_scans_pending") == 0.0
            && get(&now, "hostscan_oldest_pending_scan_age_seconds") == 0.0
            && get(&now, "hostscan_db_pool_max_connections") == 6.0)
            .then_some(())
    })
    .await;

    // Every metric the server exports is in the README's list.
    let readme = include_str!("../../README.md");
    for series in after.keys() {
        let name = series.split(['{', ' ']).next().expect("name");
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            readme.contains(&format!("`{base}`")),
            "{base} is not documented in README.md"
        );
    }
}
