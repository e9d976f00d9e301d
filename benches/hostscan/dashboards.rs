//! Section 12: WatchScans dashboards. D dashboards, each a WatchScans
//! stream with no filter (everything) on its own connection, subscribed
//! before N real quick scans of the loopback sshd targets are submitted at
//! once. Each dashboard checks, per scan, that it got every sequence from
//! 1 to the terminal event in order; the delay is from the event's `time`
//! (the worker's publish) to the dashboard's receive. The same scans on a
//! server with no dashboard, in the same run, give the CPU the scans cost
//! by themselves, so the server CPU per delivered event is the difference.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hostscan::pb;

use super::backends::{env_size, start_on};
use super::support::db::{Backend, TestDb};
use super::support::is_terminal;
use super::support::server::Client;
use super::{Plan, Stats, Targets, process_cpu, stats};

/// The server's workers.
const WORKERS: usize = 32;

/// (dashboards, scans): 100 × 1,000, or 3 × 10 in --smoke;
/// HOSTSCAN_BENCH_DASHBOARDS and HOSTSCAN_BENCH_DASHBOARD_SCANS override.
pub(super) fn sizes(plan: &Plan) -> (usize, usize) {
    (
        env_size(
            "HOSTSCAN_BENCH_DASHBOARDS",
            if plan.smoke { 3 } else { 100 },
        ),
        env_size(
            "HOSTSCAN_BENCH_DASHBOARD_SCANS",
            if plan.smoke { 10 } else { 1000 },
        ),
    )
}

pub(super) struct Dashboards {
    dashboards: usize,
    scans: usize,
    targets: usize,
    /// The scans alone, then with the dashboards.
    alone: Run,
    watched: Run,
    /// Events (not heartbeats) received, all dashboards together.
    deliveries: usize,
    /// From the first StartScan to the last dashboard's last event.
    seconds: f64,
    delay: Stats,
    /// Dashboards that got every event of every scan.
    complete: usize,
    /// (dashboard, scan) pairs with a gap, a duplicate, or no end.
    incomplete_pairs: usize,
    /// CPU seconds this process spent (the dashboards' decoding).
    client_cpu: f64,
}

#[derive(Default)]
struct Run {
    scans_per_sec: f64,
    server_cpu: f64,
    failed: usize,
}

/// What one dashboard saw.
struct Seen {
    /// Per scan: the last sequence, whether every one so far followed the
    /// one before (from 1), and whether the terminal event came.
    scans: HashMap<i64, (i64, bool, bool)>,
    delays: Vec<f64>,
    events: usize,
    last: Option<Instant>,
}

pub(super) async fn measure(plan: &Plan, dashboards: usize, scans: usize) -> Dashboards {
    let targets = Targets::start(plan.targets).await;
    let (alone, _) = scan_all(&targets, 0, scans).await;
    let own0 = process_cpu(std::process::id());
    let (watched, seen) = scan_all(&targets, dashboards, scans).await;
    let client_cpu = process_cpu(std::process::id()) - own0;
    let (seen, t0) = seen.expect("dashboards");
    let mut delays = Vec::new();
    let (mut deliveries, mut complete, mut incomplete_pairs) = (0, 0, 0);
    let mut last = t0;
    for s in seen {
        deliveries += s.events;
        last = last.max(s.last.unwrap_or(t0));
        let whole = s
            .scans
            .values()
            .filter(|(_, in_order, ended)| *in_order && *ended)
            .count();
        // Scans never seen at all count as incomplete too.
        incomplete_pairs += scans.saturating_sub(whole);
        complete += usize::from(whole == scans && s.scans.len() == scans);
        delays.extend(s.delays);
    }
    Dashboards {
        dashboards,
        scans,
        targets: targets.sshds.len(),
        alone,
        watched,
        deliveries,
        seconds: (last - t0).as_secs_f64(),
        delay: stats(delays),
        complete,
        incomplete_pairs,
        client_cpu,
    }
}

/// A fresh server and database; `dashboards` WatchScans streams opened
/// first, then `scans` quick scans submitted at once. Returns when every
/// scan is terminal (and every dashboard has seen every end, or the
/// deadline passed): the run, and what the dashboards saw with the instant
/// the first scan was submitted.
async fn scan_all(
    targets: &Targets,
    dashboards: usize,
    scans: usize,
) -> (Run, Option<(Vec<Seen>, Instant)>) {
    let db = TestDb::new(Backend::Postgres).await;
    let workers = WORKERS.to_string();
    let server = start_on(
        &db,
        targets,
        &["--workers", &workers, "--db-pool-size", "16"],
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(900);
    // Subscribed once the call returns: the server subscribes to the hub
    // before it answers with the (empty) snapshot.
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..dashboards {
        let mut client = server.client().await;
        let stream = client
            .watch_scans(pb::WatchScansRequest::default())
            .await
            .expect("WatchScans")
            .into_inner();
        readers.spawn(read_dashboard(stream, scans, deadline));
    }

    let client = server.client().await;
    let cpu0 = process_cpu(server.pid);
    let t0 = Instant::now();
    let started = chrono::Utc::now();
    let ports: Vec<u16> = targets.sshds.iter().map(|s| s.port).collect();
    let ids = super::submit_quick(&client, &ports, scans).await;
    let mut seen = Vec::new();
    while let Some(s) = readers.join_next().await {
        seen.push(s.expect("dashboard"));
    }
    // With no dashboard (or if one gave up), wait for the scans themselves.
    wait_terminal(&client, scans as i64, deadline).await;
    let server_cpu = process_cpu(server.pid) - cpu0;
    let run = finished(&client, &ids, started, server_cpu).await;
    drop(server);
    (run, (dashboards > 0).then_some((seen, t0)))
}

async fn read_dashboard(
    mut stream: tonic::codec::Streaming<pb::ScanEvent>,
    scans: usize,
    deadline: tokio::time::Instant,
) -> Seen {
    let mut seen = Seen {
        scans: HashMap::with_capacity(scans),
        delays: Vec::new(),
        events: 0,
        last: None,
    };
    let mut ended = 0;
    while ended < scans {
        let Ok(Ok(Some(e))) = tokio::time::timeout_at(deadline, stream.message()).await else {
            break;
        };
        let received = chrono::Utc::now();
        if e.heartbeat {
            continue;
        }
        seen.last = Some(Instant::now());
        seen.events += 1;
        if let Some(sent) = e.time.as_ref().and_then(pb::from_timestamp) {
            seen.delays
                .push((received - sent).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
        let entry = seen.scans.entry(e.scan_id).or_insert((0, true, false));
        entry.1 &= e.sequence == entry.0 + 1;
        entry.0 = e.sequence;
        if is_terminal(e.status) && !entry.2 {
            entry.2 = true;
            ended += 1;
        }
    }
    seen
}

/// Waits (polling ListScans' counts, with a deadline) until `expected`
/// scans are COMPLETED or FAILED.
async fn wait_terminal(client: &Client, expected: i64, deadline: tokio::time::Instant) {
    loop {
        let mut done = 0;
        for status in [pb::ScanStatus::Completed, pb::ScanStatus::Failed] {
            done += client
                .clone()
                .list_scans(pb::ListScansRequest {
                    status: status as i32,
                    page_size: 1,
                    ..Default::default()
                })
                .await
                .expect("list")
                .into_inner()
                .total_size;
        }
        if done >= expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dashboards' scans did not finish ({done} of {expected})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Scans/s from the first submit to the last completion the database
/// recorded, and how many did not complete.
async fn finished(
    client: &Client,
    ids: &[i64],
    started: chrono::DateTime<chrono::Utc>,
    server_cpu: f64,
) -> Run {
    let mut c = client.clone();
    let (mut last, mut failed) = (started, 0);
    for id in ids {
        let s = c
            .get_scan(pb::GetScanRequest { scan_id: *id })
            .await
            .expect("get")
            .into_inner();
        failed += usize::from(s.status != pb::ScanStatus::Completed as i32);
        if let Some(done) = s.completed_at.as_ref().and_then(pb::from_timestamp) {
            last = last.max(done);
        }
    }
    let makespan = (last - started).to_std().unwrap_or_default().as_secs_f64();
    Run {
        scans_per_sec: ids.len() as f64 / makespan.max(1e-9),
        server_cpu,
        failed,
    }
}

pub(super) fn section(d: &Dashboards) -> String {
    let deliveries = d.deliveries.max(1) as f64;
    let marginal = (d.watched.server_cpu - d.alone.server_cpu) * 1e6 / deliveries;
    let mut md = format!(
        "## 12. WatchScans dashboards\n\n\
         {} dashboards, each a WatchScans stream with no filter (every scan) on its own connection, subscribed before {} real quick scans of {} loopback sshd targets are submitted at once (server `--workers {WORKERS}`, PostgreSQL). Each dashboard checks every scan's sequence numbers: 1, 2, … up to the terminal event, none missing or repeated. Delay: from the event's `time` (the worker's publish) to the dashboard's receive. The same scans with no dashboard, on a fresh server in the same run, give the CPU the scans cost by themselves; the server CPU per delivered event is the difference divided by the deliveries.\n\n\
         | | |\n|---|---|\n",
        d.dashboards, d.scans, d.targets,
    );
    let rows = [
        (
            "events delivered (all dashboards)",
            format!(
                "{} ({:.1} per scan per dashboard)",
                d.deliveries,
                d.deliveries as f64 / (d.dashboards * d.scans).max(1) as f64
            ),
        ),
        (
            "events delivered per second",
            format!("**{:.0}**", d.deliveries as f64 / d.seconds.max(1e-9)),
        ),
        (
            "delay p50 / p99",
            format!("{:.1} / **{:.1}** ms", d.delay.median, d.delay.p99),
        ),
        (
            "every dashboard got every event of every scan",
            if d.complete == d.dashboards && d.incomplete_pairs == 0 {
                format!("yes ({} of {} dashboards)", d.complete, d.dashboards)
            } else {
                format!(
                    "**no**: {} of {} dashboards whole; {} (dashboard, scan) pairs with a gap or no end",
                    d.complete, d.dashboards, d.incomplete_pairs
                )
            },
        ),
        (
            "server CPU per delivered event (with − without dashboards)",
            format!("**{marginal:.1} µs**"),
        ),
        (
            "server CPU, scans alone → with dashboards",
            format!(
                "{:.2} s → {:.2} s",
                d.alone.server_cpu, d.watched.server_cpu
            ),
        ),
        (
            "dashboards' own CPU per delivered event (this process: decoding)",
            format!("{:.1} µs", d.client_cpu * 1e6 / deliveries),
        ),
        (
            "scans/s, alone → with dashboards",
            format!(
                "{:.1} → {:.1} (**{:.2}×**)",
                d.alone.scans_per_sec,
                d.watched.scans_per_sec,
                d.watched.scans_per_sec / d.alone.scans_per_sec.max(1e-9)
            ),
        ),
    ];
    for (k, v) in rows {
        md.push_str(&format!("| {k} | {v} |\n"));
    }
    if d.alone.failed + d.watched.failed > 0 {
        md.push_str(&format!(
            "\n{} scans alone and {} with dashboards did not complete.\n",
            d.alone.failed, d.watched.failed
        ));
    }
    md
}
