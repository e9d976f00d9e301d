//! Sections 10-12 of the report, and section 10 itself: the embedded
//! SQLite database next to PostgreSQL. One sshd target, one server on each
//! backend, measured alternately in the same run: quick-scan latency
//! through the service, and the API-path rates of section 4 (StartScan of
//! a refused port, GetScan) in alternating slices, each started with both
//! servers idle.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hostscan::model::ScanType;

use super::support::db::{Backend, TestDb};
use super::support::server::Server;
use super::{
    API_CONNECTIONS, Load, Plan, Rpc, Stats, Targets, api_load, ms, request, scan_to_end, stats,
    wait_idle,
};

/// The section names `HOSTSCAN_BENCH_ONLY` (comma-separated) accepts here.
const SECTIONS: [&str; 3] = ["backends", "retention", "dashboards"];

/// Runs sections 10-12 and returns their Markdown.
pub(super) async fn sections(plan: &Plan) -> String {
    run_some(plan, &SECTIONS).await
}

/// `HOSTSCAN_BENCH_ONLY=backends,retention,dashboards` (any of them): the
/// Markdown of just those sections, or `None` when `only` names none of
/// them (another section's switch).
pub(super) async fn only(plan: &Plan, only: &str) -> Option<String> {
    let wanted: Vec<&str> = only
        .split(',')
        .map(str::trim)
        .filter(|s| SECTIONS.contains(s))
        .collect();
    if wanted.is_empty() {
        return None;
    }
    Some(run_some(plan, &wanted).await)
}

async fn run_some(plan: &Plan, wanted: &[&str]) -> String {
    let mut md = String::new();
    if wanted.contains(&"backends") {
        eprintln!("bench: SQLite next to PostgreSQL");
        md.push_str(&section(&measure(plan).await, plan));
        md.push('\n');
    }
    if wanted.contains(&"retention") {
        let rows = super::retention::rows(plan);
        eprintln!("bench: retention ({rows} expired scans)");
        md.push_str(&super::retention::section(
            &super::retention::measure(plan, rows).await,
        ));
        md.push('\n');
    }
    if wanted.contains(&"dashboards") {
        let (dashboards, scans) = super::dashboards::sizes(plan);
        eprintln!("bench: WatchScans ({dashboards} dashboards, {scans} scans)");
        md.push_str(&super::dashboards::section(
            &super::dashboards::measure(plan, dashboards, scans).await,
        ));
        md.push('\n');
    }
    md
}

/// A size from the environment (for medium runs), else `default`.
pub(super) fn env_size(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// `hostscan serve` on `db` (either backend) for `targets`.
pub(super) async fn start_on(db: &TestDb, targets: &Targets, extra: &[&str]) -> Server {
    Server::start_env(
        db.url(),
        &targets.server_args(extra),
        &[("HOSTSCAN_LOG", "warn,hostscan::serve=info")],
    )
    .await
}

pub(super) fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "PostgreSQL",
        Backend::Sqlite => "SQLite",
    }
}

/// PostgreSQL against SQLite: each pair is (PostgreSQL, SQLite).
pub(super) struct Backends {
    runs: usize,
    quick: (Stats, Stats),
    start: ((f64, Stats), (f64, Stats)),
    get: ((f64, Stats), (f64, Stats)),
}

pub(super) async fn measure(plan: &Plan) -> Backends {
    let targets = Targets::start(1).await;
    let port = targets.sshds[0].port;
    let pg_db = TestDb::new(Backend::Postgres).await;
    let lite_db = TestDb::new(Backend::Sqlite).await;
    let pg = start_on(&pg_db, &targets, &[]).await;
    let lite = start_on(&lite_db, &targets, &[]).await;
    let (mut pg_clients, mut lite_clients) = (Vec::new(), Vec::new());
    for _ in 0..API_CONNECTIONS {
        pg_clients.push(pg.client().await);
        lite_clients.push(lite.client().await);
    }

    // Quick scans, alternating (and which goes first alternating too),
    // after one warm-up each (host key pins).
    let (mut p, mut l) = (pg_clients[0].clone(), lite_clients[0].clone());
    scan_to_end(&mut p, request(port, ScanType::Quick)).await;
    scan_to_end(&mut l, request(port, ScanType::Quick)).await;
    let (mut quick_pg, mut quick_lite) = (Vec::new(), Vec::new());
    for run in 0..plan.latency_runs {
        for on_pg in [run % 2 == 0, run % 2 == 1] {
            let (client, into) = if on_pg {
                (&mut p, &mut quick_pg)
            } else {
                (&mut l, &mut quick_lite)
            };
            let started = Instant::now();
            let scan = scan_to_end(client, request(port, ScanType::Quick)).await;
            into.push(ms(started.elapsed()));
            assert_eq!(
                scan.status,
                hostscan::pb::ScanStatus::Completed as i32,
                "{:?}",
                scan.error
            );
        }
    }

    // The API path as in section 4, in 4 alternating slices per backend.
    let refused = super::support::free_port();
    let slice = Duration::from_secs(plan.api_seconds).div_f64(4.0);
    let (mut ids_pg, mut ids_lite) = (Vec::new(), Vec::new());
    let mut results = Vec::new();
    for rpc in [Rpc::Start, Rpc::Get] {
        let (mut on_pg, mut on_lite) = (Load::default(), Load::default());
        for _ in 0..4 {
            wait_idle(&pg_clients[0]).await;
            wait_idle(&lite_clients[0]).await;
            on_pg.add(api_load(plan, &pg_clients, rpc, refused, &mut ids_pg, slice).await);
            wait_idle(&pg_clients[0]).await;
            wait_idle(&lite_clients[0]).await;
            on_lite.add(api_load(plan, &lite_clients, rpc, refused, &mut ids_lite, slice).await);
        }
        results.push((on_pg.summary(), on_lite.summary()));
    }
    Backends {
        runs: plan.latency_runs,
        quick: (stats(quick_pg), stats(quick_lite)),
        start: results[0],
        get: results[1],
    }
}

pub(super) fn section(b: &Backends, plan: &Plan) -> String {
    let mut md = format!(
        "## 10. Embedded SQLite next to PostgreSQL\n\n\
         The same sshd target, one server on the throwaway PostgreSQL cluster (fsync off) and one on the embedded SQLite database (`--database-url sqlite:///<tmp>/hostscan.db`: WAL, `synchronous = NORMAL`, so neither waits for the disk on commit), measured alternately in this run. Latency: {} quick scans through the service on each (StartScan to the terminal WatchScan event, over an open connection). API path as in section 4: {} clients over {} connections, {} s per RPC and backend in 4 alternating slices, each started with both servers idle.\n\n\
         | | PostgreSQL | SQLite | SQLite / PostgreSQL |\n|---|---|---|---|\n",
        b.runs, plan.api_clients, API_CONNECTIONS, plan.api_seconds,
    );
    let (p, l) = b.quick;
    let _ = writeln!(
        md,
        "| quick scan through the service (median / p95 ms) | {:.1} / {:.1} | {:.1} / {:.1} | **{:.2}×** |",
        p.median,
        p.p95,
        l.median,
        l.p95,
        l.median / p.median
    );
    for (what, (p, l)) in [("StartScan", b.start), ("GetScan", b.get)] {
        let _ = writeln!(
            md,
            "| {what} (requests/s; p50 / p99 ms) | {:.0}; {:.2} / {:.2} | {:.0}; {:.2} / {:.2} | **{:.2}×** rate, {:.2}× p99 |",
            p.0,
            p.1.median,
            p.1.p99,
            l.0,
            l.1.median,
            l.1.p99,
            l.0 / p.0,
            l.1.p99 / p.1.p99
        );
    }
    md
}
