//! Section 11: retention. A database of N completed scans finished 200 days
//! ago (over N/100 hosts, inserted by one SQL statement as the 100k-row
//! retention test does), a running server, and `hostscan prune
//! --older-than 90d` from the terminal while a light API load runs: how
//! long the prune takes (rows/s), and StartScan/GetScan latency during it
//! next to the same load just before it, on PostgreSQL and on SQLite.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hostscan::model::ScanType;
use hostscan::pb;

use super::backends::{backend_name, env_size, start_on};
use super::support::db::{Backend, TestDb};
use super::support::server::{BINARY, Client};
use super::{Plan, Stats, Targets, ms, request, stats, wait_idle};

/// Clients of the API load that runs with and without the prune (a light,
/// steady load, not a saturating one: the question is whether the prune
/// gets in the way of ordinary requests).
const CLIENTS: usize = 8;
const CONNECTIONS: usize = 2;

/// Expired scans: 100,000 (1,000 in --smoke); HOSTSCAN_BENCH_PRUNE_ROWS
/// overrides.
pub(super) fn rows(plan: &Plan) -> usize {
    env_size(
        "HOSTSCAN_BENCH_PRUNE_ROWS",
        if plan.smoke { 1000 } else { 100_000 },
    )
}

pub(super) struct Retention {
    rows: usize,
    hosts: usize,
    load_seconds: f64,
    results: Vec<Pruned>,
}

struct Pruned {
    backend: Backend,
    fill_seconds: f64,
    deleted: usize,
    prune_seconds: f64,
    /// StartScan and GetScan latencies, without and with the prune.
    without: (Stats, Stats),
    with: (Stats, Stats),
    requests: (usize, usize),
}

pub(super) async fn measure(plan: &Plan, rows: usize) -> Retention {
    let hosts = (rows / 100).max(1);
    let load_seconds = if plan.smoke { 1.0 } else { 5.0 };
    let targets = Targets::start(1).await;
    let mut results = Vec::new();
    for backend in [Backend::Postgres, Backend::Sqlite] {
        results.push(prune_one(backend, &targets, rows, hosts, load_seconds).await);
    }
    Retention {
        rows,
        hosts,
        load_seconds,
        results,
    }
}

async fn prune_one(
    backend: Backend,
    targets: &Targets,
    rows: usize,
    hosts: usize,
    load_seconds: f64,
) -> Pruned {
    let db = TestDb::new(backend).await;
    let started = Instant::now();
    db.execute(&fill_sql(backend, rows, hosts)).await;
    let fill_seconds = started.elapsed().as_secs_f64();

    let server = start_on(&db, targets, &[]).await;
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(server.client().await);
    }
    let refused = super::support::free_port();

    // Without: the same load for a fixed time, just before the prune.
    wait_idle(&clients[0]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load_until(clients.clone(), refused, stop.clone()));
    tokio::time::sleep(Duration::from_secs_f64(load_seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let (start0, get0) = load.await.expect("load");

    // With: the load runs from just before the prune starts until it exits.
    wait_idle(&clients[0]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load_until(clients.clone(), refused, stop.clone()));
    let started = Instant::now();
    let out = tokio::process::Command::new(BINARY)
        .args(["prune", "--older-than", "90d"])
        .env("DATABASE_URL", db.url())
        .env("HOSTSCAN_LOG", "warn")
        .output()
        .await
        .expect("hostscan prune");
    let prune_seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (start1, get1) = load.await.expect("load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hostscan prune: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "deleted N scans finished more than 90d ago"
    let deleted = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("deleted ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no count in the prune's output: {stdout}"));
    Pruned {
        backend,
        fill_seconds,
        deleted,
        prune_seconds,
        requests: (start1.len(), get1.len()),
        without: (stats(start0), stats(get0)),
        with: (stats(start1), stats(get1)),
    }
}

/// `rows` completed quick scans of `hosts` hosts that finished about 200
/// days ago, with a small result each, and their `hosts` rows: one
/// statement per table (as tests/it/e2e.rs' 100k-row retention test).
fn fill_sql(backend: Backend, rows: usize, hosts: usize) -> String {
    match backend {
        Backend::Postgres => format!(
            "INSERT INTO scans (hostname, port, username, scan_type, status, progress, created_at, \
               started_at, completed_at, results, sequence, attempts) \
             SELECT 'old-' || (g % {hosts}) || '.example', 22, 'scanner', 'quick', 'completed', 100, \
               now() - interval '200 days' + g * interval '1 second', \
               now() - interval '200 days' + g * interval '1 second', \
               now() - interval '200 days' + g * interval '1 second' + interval '150 ms', \
               jsonb_build_object('hostname', 'old-' || (g % {hosts}), 'os', jsonb_build_object( \
                 'id', 'debian', 'pretty_name', 'Debian GNU/Linux 12 (bookworm)', 'kernel', '6.1.0'), \
                 'disks', jsonb_build_array(jsonb_build_object('filesystem', '/dev/vda1', 'mount', '/', \
                   'total_bytes', 1e11, 'used_bytes', 5e10, 'available_bytes', 5e10, 'used_percent', 50))), \
               5, 1 \
             FROM generate_series(1, {rows}) g; \
             INSERT INTO hosts (hostname, port, last_scan_id, completed_scan_id, completed_at, \
               completed_type, os_id, os_pretty_name, kernel, step_error_count) \
             SELECT hostname, port, max(id), max(id), max(completed_at), 'quick', 'debian', \
               'Debian GNU/Linux 12 (bookworm)', '6.1.0', 0 FROM scans GROUP BY hostname, port; \
             ANALYZE scans; ANALYZE hosts;"
        ),
        // Timestamps are INTEGER microseconds; results JSON text.
        Backend::Sqlite => format!(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {rows}), \
               t(t0) AS (SELECT CAST(unixepoch('subsec') * 1000000 AS INTEGER) - 200 * 86400000000) \
             INSERT INTO scans (hostname, port, username, scan_type, status, progress, created_at, \
               started_at, completed_at, results, sequence, attempts) \
             SELECT 'old-' || (n % {hosts}) || '.example', 22, 'scanner', 'quick', 'completed', 100, \
               t0 + n * 1000000, t0 + n * 1000000, t0 + n * 1000000 + 150000, \
               json_object('hostname', 'old-' || (n % {hosts}), 'os', json_object( \
                 'id', 'debian', 'pretty_name', 'Debian GNU/Linux 12 (bookworm)', 'kernel', '6.1.0'), \
                 'disks', json_array(json_object('filesystem', '/dev/vda1', 'mount', '/', \
                   'total_bytes', 1e11, 'used_bytes', 5e10, 'available_bytes', 5e10, 'used_percent', 50))), \
               5, 1 \
             FROM g, t; \
             INSERT INTO hosts (hostname, port, last_scan_id, completed_scan_id, completed_at, \
               completed_type, os_id, os_pretty_name, kernel, step_error_count) \
             SELECT hostname, port, max(id), max(id), max(completed_at), 'quick', 'debian', \
               'Debian GNU/Linux 12 (bookworm)', '6.1.0', 0 FROM scans GROUP BY hostname, port; \
             ANALYZE;"
        ),
    }
}

/// `CLIENTS` clients, each in a loop: StartScan (of a refused port, so a
/// worker fails it at once), then GetScan of that scan, until `stop`.
/// The latencies (ms) of each RPC.
async fn load_until(
    clients: Vec<Client>,
    refused: u16,
    stop: Arc<AtomicBool>,
) -> (Vec<f64>, Vec<f64>) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let mut c = clients[i % clients.len()].clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let (mut start, mut get) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let id = c
                    .start_scan(request(refused, ScanType::Quick))
                    .await
                    .expect("start")
                    .into_inner()
                    .id;
                start.push(ms(t.elapsed()));
                let t = Instant::now();
                c.get_scan(pb::GetScanRequest { scan_id: id })
                    .await
                    .expect("get");
                get.push(ms(t.elapsed()));
            }
            (start, get)
        });
    }
    let (mut start, mut get) = (Vec::new(), Vec::new());
    while let Some(r) = tasks.join_next().await {
        let (s, g) = r.expect("client");
        start.extend(s);
        get.extend(g);
    }
    (start, get)
}

pub(super) fn section(r: &Retention) -> String {
    let mut md = format!(
        "## 11. Retention\n\n\
         {} completed scans that finished 200 days ago, over {} hosts, then `hostscan prune --older-than 90d` from the terminal against the database of a running server (batches of {} per transaction; each host's newest completed scan is kept, so {} should go). While it runs, {CLIENTS} clients over {CONNECTIONS} connections each loop StartScan (of a refused port, failed at once by a worker) then GetScan of that scan; \"without\" is the same load for {:.0} s just before the prune, on the same server and rows.\n\n\
         | | expired rows deleted | prune time | rows/s | StartScan p50 / p99 ms, without → with | GetScan p50 / p99 ms, without → with | p99 with / without (Start, Get) |\n|---|---|---|---|---|---|---|\n",
        r.rows,
        r.hosts,
        hostscan::worker::retention::BATCH,
        r.rows.saturating_sub(r.hosts),
        r.load_seconds,
    );
    for p in &r.results {
        let (s0, g0) = p.without;
        let (s1, g1) = p.with;
        md.push_str(&format!(
            "| {} | {}{} | {:.2} s | {:.0} | {:.2} / {:.2} → {:.2} / {:.2} | {:.2} / {:.2} → {:.2} / {:.2} | **{:.2}×**, **{:.2}×** |\n",
            backend_name(p.backend),
            p.deleted,
            if p.deleted == r.rows.saturating_sub(r.hosts) {
                ""
            } else {
                " (**not the expected count**)"
            },
            p.prune_seconds,
            p.deleted as f64 / p.prune_seconds.max(1e-9),
            s0.median,
            s0.p99,
            s1.median,
            s1.p99,
            g0.median,
            g0.p99,
            g1.median,
            g1.p99,
            s1.p99 / s0.p99,
            g1.p99 / g0.p99,
        ));
    }
    let ratio = match (r.results.first(), r.results.get(1)) {
        (Some(p), Some(l)) => format!(
            "SQLite / PostgreSQL prune time: **{:.2}×**. ",
            l.prune_seconds / p.prune_seconds.max(1e-9)
        ),
        _ => String::new(),
    };
    md.push_str(&format!(
        "\n{ratio}Prune time is the `hostscan prune` process from start to exit (it opens the database and checks migrations first). Requests during the prune: {}. Filling the rows (one INSERT … SELECT each, not part of the measurement) took {}.\n",
        r.results
            .iter()
            .map(|p| format!(
                "{} StartScan + {} GetScan on {}",
                p.requests.0,
                p.requests.1,
                backend_name(p.backend)
            ))
            .collect::<Vec<_>>()
            .join(", "),
        r.results
            .iter()
            .map(|p| format!("{:.1} s on {}", p.fill_seconds, backend_name(p.backend)))
            .collect::<Vec<_>>()
            .join(", "),
    ));
    md
}
