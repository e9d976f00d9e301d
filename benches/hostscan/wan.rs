//! Emulated WAN (report section 7) and a thousand quick scans at once
//! (section 8).
//!
//! `DelayProxy` is a TCP relay on 127.0.0.1 in front of one sshd target that
//! holds each direction's bytes for D ms: every chunk read is stamped and
//! written on at its read time + D, so latency is added and bandwidth is not
//! cut. It also emulates TCP's own round trip: a client's first bytes leave
//! no earlier than 2D after its connect (SYN, SYN-ACK) and the target
//! accepts at 3D (the ACK). It acknowledges every read at once
//! (TCP_QUICKACK), so neither peer's Nagle wait meets a local delayed ACK
//! that a real path would not have. With `trace`, it records every chunk
//! (direction, size, when the sender sent it, when the receiver got it) for
//! the round-trip analysis.
//!
//! The proxy owns its tasks: the accept task owns a `JoinSet` of the
//! connections it relays, and dropping the proxy aborts the accept task and
//! with it every relay.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use hostscan::model::ScanType;
use hostscan::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::support::pg::TestDb;
use super::{
    Stats, Targets, machine_cpu, ms, process_cpu, request, scan_to_end, script_file, ssh_command,
    stats, status_kib,
};

/// Sizes of sections 7 and 8.
pub struct Sizes {
    /// One-way delays D of section 7, in ms.
    pub delays: Vec<u64>,
    /// Measured runs per tool, scan type and delay.
    pub runs: usize,
    /// Section 8: quick scans in flight at once, over `targets` sshds
    /// behind proxies of `delay` ms.
    pub at_once: usize,
    pub targets: usize,
    pub delay: u64,
    /// Inventory size for Ansible `-f 50` (0: not run).
    pub ansible_hosts: usize,
}

impl Sizes {
    /// Smoke or full sizes, then any of these environment variables:
    /// HOSTSCAN_BENCH_WAN_DELAYS (e.g. "0,10,50"), HOSTSCAN_BENCH_WAN_RUNS,
    /// HOSTSCAN_BENCH_AT_ONCE, HOSTSCAN_BENCH_AT_ONCE_TARGETS,
    /// HOSTSCAN_BENCH_AT_ONCE_DELAY, HOSTSCAN_BENCH_ANSIBLE_HOSTS.
    pub fn new(smoke: bool) -> Self {
        let mut s = Self::preset(smoke);
        let var = |name: &str| std::env::var(name).ok();
        let num = |name: &str| var(name).and_then(|v| v.parse::<usize>().ok());
        if let Some(v) = var("HOSTSCAN_BENCH_WAN_DELAYS") {
            s.delays = v.split(',').filter_map(|d| d.trim().parse().ok()).collect();
        }
        s.runs = num("HOSTSCAN_BENCH_WAN_RUNS").unwrap_or(s.runs);
        s.at_once = num("HOSTSCAN_BENCH_AT_ONCE").unwrap_or(s.at_once);
        s.targets = num("HOSTSCAN_BENCH_AT_ONCE_TARGETS").unwrap_or(s.targets);
        s.delay = num("HOSTSCAN_BENCH_AT_ONCE_DELAY").map_or(s.delay, |d| d as u64);
        s.ansible_hosts = num("HOSTSCAN_BENCH_ANSIBLE_HOSTS").unwrap_or(s.ansible_hosts);
        s
    }

    fn preset(smoke: bool) -> Self {
        if smoke {
            Self {
                delays: vec![0, 10],
                runs: 3,
                at_once: 20,
                targets: 2,
                delay: 10,
                ansible_hosts: 0,
            }
        } else {
            Self {
                delays: vec![0, 10, 50],
                runs: 10,
                at_once: 1000,
                targets: 10,
                delay: 50,
                ansible_hosts: 100,
            }
        }
    }
}

// -------------------------------------------------------------- the proxy

/// Which way a chunk went.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dir {
    /// Client to target.
    Up,
    /// Target to client.
    Down,
}

/// One relayed chunk: times since the client's connect.
#[derive(Clone, Debug)]
pub struct Chunk {
    pub dir: Dir,
    pub bytes: usize,
    /// When the sender sent it (for Up, no earlier than the emulated
    /// connect at 2D).
    pub sent: Duration,
    /// When the receiver got it: `sent` + D.
    pub received: Duration,
}

type Trace = Arc<Mutex<Vec<Chunk>>>;

/// A delaying TCP relay on 127.0.0.1 in front of `127.0.0.1:upstream`.
pub struct DelayProxy {
    pub port: u16,
    trace: Option<Trace>,
    /// The accept loop; it owns every relay task (a `JoinSet`), so
    /// aborting it on drop ends them all.
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// What a relay's reading side hands its writing side.
enum Item {
    Data(Instant, Bytes),
    /// The sender shut its side: shut ours at this time.
    Eof(Instant),
}

impl DelayProxy {
    pub async fn start(upstream: u16, delay: Duration, trace: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy bind");
        let port = listener.local_addr().expect("proxy addr").port();
        let trace: Option<Trace> = trace.then(Default::default);
        let t = trace.clone();
        let accept = tokio::spawn(async move {
            let mut relays = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { continue };
                        relays.spawn(relay(client, upstream, delay, t.clone()));
                    }
                    // Reap finished relays so the set does not grow.
                    Some(_) = relays.join_next(), if !relays.is_empty() => {}
                }
            }
        });
        Self {
            port,
            trace,
            accept,
        }
    }

    /// The chunks relayed so far (empty without `trace`), and forgets them.
    pub fn take_trace(&self) -> Vec<Chunk> {
        self.trace.as_ref().map_or_else(Vec::new, |t| {
            std::mem::take(&mut *t.lock().unwrap_or_else(PoisonError::into_inner))
        })
    }
}

async fn relay(client: TcpStream, upstream: u16, delay: Duration, trace: Option<Trace>) {
    let accepted = Instant::now();
    client.set_nodelay(true).ok();
    let (client_read, client_write) = client.into_split();
    let (up_tx, up_rx) = mpsc::unbounded_channel();
    let (down_tx, down_rx) = mpsc::unbounded_channel();
    // The client's bytes are taken (and stamped) from the start; the target
    // is connected when the emulated handshake's ACK would reach it.
    let up_in = pump_in(
        client_read,
        up_tx,
        accepted + delay * 2,
        delay,
        Dir::Up,
        (trace.clone(), accepted),
    );
    let rest = async move {
        tokio::time::sleep_until(accepted + delay * 3).await;
        let Ok(target) = TcpStream::connect(("127.0.0.1", upstream)).await else {
            return;
        };
        target.set_nodelay(true).ok();
        let (target_read, target_write) = target.into_split();
        tokio::join!(
            pump_out(target_write, up_rx),
            pump_in(
                target_read,
                down_tx,
                accepted,
                delay,
                Dir::Down,
                (trace, accepted)
            ),
            pump_out(client_write, down_rx),
        );
    };
    tokio::join!(up_in, rest);
}

/// Reads `from` and stamps each chunk with its release time: its read time
/// (no earlier than `not_before`) + `delay`.
async fn pump_in(
    mut from: OwnedReadHalf,
    to: mpsc::UnboundedSender<Item>,
    not_before: Instant,
    delay: Duration,
    dir: Dir,
    (trace, origin): (Option<Trace>, Instant),
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let read = from.read(&mut buf).await;
        let sent = Instant::now().max(not_before);
        let release = sent + delay;
        let n = match read {
            Ok(0) | Err(_) => {
                to.send(Item::Eof(release)).ok();
                return;
            }
            Ok(n) => n,
        };
        // Acknowledge at once: the peer's Nagle wait should see a real
        // path's ACK timing, not Linux's 40 ms delayed ACK on loopback.
        socket2::SockRef::from(from.as_ref())
            .set_tcp_quickack(true)
            .ok();
        if let Some(t) = &trace {
            t.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Chunk {
                    dir,
                    bytes: n,
                    sent: sent - origin,
                    received: release - origin,
                });
        }
        if to
            .send(Item::Data(release, Bytes::copy_from_slice(&buf[..n])))
            .is_err()
        {
            return;
        }
    }
}

/// Writes each chunk to `to` at its release time.
async fn pump_out(mut to: OwnedWriteHalf, mut from: mpsc::UnboundedReceiver<Item>) {
    while let Some(item) = from.recv().await {
        match item {
            Item::Data(at, bytes) => {
                tokio::time::sleep_until(at).await;
                if to.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Item::Eof(at) => {
                tokio::time::sleep_until(at).await;
                to.shutdown().await.ok();
                return;
            }
        }
    }
}

/// Round trips in `chunks` (one scan's connection), excluding the
/// commands' own run time: TCP's (1), each client flight sent after it heard
/// from the server up to the one carrying the commands (the first chunk of
/// at least 4 KiB, the driver script; the whole trace if there is none),
/// and the output's way back (1). A flight is the client's chunks less than
/// D/2 apart.
pub fn round_trips(chunks: &[Chunk], delay: Duration) -> usize {
    let mut events: Vec<(Duration, Dir, usize)> = chunks
        .iter()
        .map(|c| match c.dir {
            Dir::Up => (c.sent, Dir::Up, c.bytes),
            Dir::Down => (c.received, Dir::Down, c.bytes),
        })
        .collect();
    events.sort_by_key(|e| e.0);
    let mut flights = 0;
    let mut last_up: Option<Duration> = None;
    let mut heard = false;
    for (t, dir, bytes) in events {
        match dir {
            Dir::Down => heard = true,
            Dir::Up => {
                let new_flight = last_up.is_none_or(|l| t.saturating_sub(l) >= delay / 2);
                if new_flight && heard && last_up.is_some() {
                    flights += 1;
                }
                if new_flight {
                    heard = false;
                }
                last_up = Some(t);
                if bytes >= 4096 {
                    break;
                }
            }
        }
    }
    flights + 2
}

/// The chunks as the client saw them: "t ms → n B" (sent) and
/// "t ms ← n B" (received), time-ordered.
pub fn timeline(chunks: &[Chunk]) -> String {
    let mut events: Vec<(Duration, &str, usize)> = chunks
        .iter()
        .map(|c| match c.dir {
            Dir::Up => (c.sent, "→", c.bytes),
            Dir::Down => (c.received, "←", c.bytes),
        })
        .collect();
    events.sort_by_key(|e| e.0);
    let mut out = String::new();
    for (t, arrow, n) in events {
        let _ = writeln!(out, "{:8.1} ms {arrow} {n} B", ms(t));
    }
    out
}

// ------------------------------------------------------- section 7: latency

pub struct WanRow {
    pub delay_ms: u64,
    pub scan_type: ScanType,
    pub probe: Stats,
    pub service: Stats,
    pub ssh: Stats,
}

pub struct Wan {
    pub runs: usize,
    pub rows: Vec<WanRow>,
    /// At the largest delay, one quick scan of each tool as the client saw
    /// it: (tool, round trips counted in the trace, timeline).
    pub traces: Vec<(&'static str, usize, String)>,
    pub trace_delay_ms: u64,
}

/// Adds known_hosts lines for `ports` (proxies) with the targets' shared
/// host key, to the targets' file (ssh) and to `probe_known`.
fn add_known(targets: &Targets, ports: &[u16], probe_known: &Path) {
    let public =
        std::fs::read_to_string(targets.keys.host.with_extension("pub")).expect("host pub");
    let mut fields = public.split_whitespace();
    let (kind, key) = (
        fields.next().unwrap_or_default(),
        fields.next().unwrap_or_default(),
    );
    let lines: String = ports
        .iter()
        .map(|p| {
            format!(
                "{} {kind} {key}\n",
                hostscan::ssh::known_hosts::host_port_name("127.0.0.1", *p)
            )
        })
        .collect();
    for file in [&targets.known_hosts, &probe_known.to_path_buf()] {
        let mut text = std::fs::read_to_string(file).unwrap_or_default();
        text.push_str(&lines);
        std::fs::write(file, text).expect("known_hosts");
    }
}

pub async fn emulated_wan(sizes: &Sizes, db: &TestDb) -> Wan {
    let targets = Targets::start(1).await;
    let server = super::start_server(db, &targets, &[]).await;
    let mut client = server.client().await;
    let dir = super::support::temp_dir("hostscan-bench-wan-");
    let probe_known = dir.path().join("probe_known_hosts");
    std::fs::write(&probe_known, "").expect("known_hosts");
    let upstream = targets.sshds[0].port;
    let max_delay = sizes.delays.iter().copied().max().unwrap_or(0);
    let mut rows = Vec::new();
    let mut traces = Vec::new();
    for &delay_ms in &sizes.delays {
        let delay = Duration::from_millis(delay_ms);
        let proxy = DelayProxy::start(upstream, delay, delay_ms == max_delay).await;
        add_known(&targets, &[proxy.port], &probe_known);
        for scan_type in [ScanType::Quick, ScanType::Full] {
            let script = script_file(dir.path(), scan_type);
            // Warm-up: pins the host key for the proxy's port, fills caches.
            scan_to_end(&mut client, request(proxy.port, scan_type)).await;
            let probe_ok = super::probe_command(&targets, proxy.port, &probe_known, scan_type)
                .status()
                .await
                .is_ok_and(|s| s.success());
            assert!(probe_ok, "probe failed through the delay proxy");
            proxy.take_trace();
            let (mut service, mut probe, mut ssh) = (Vec::new(), Vec::new(), Vec::new());
            for run in 0..sizes.runs {
                // Interleaved, so drift hits all three alike.
                let t = Instant::now();
                let scan = scan_to_end(&mut client, request(proxy.port, scan_type)).await;
                service.push(ms(t.elapsed()));
                assert_eq!(
                    scan.status,
                    pb::ScanStatus::Completed as i32,
                    "{:?}",
                    scan.error
                );
                let service_trace = proxy.take_trace();

                let t = Instant::now();
                let status = super::probe_command(&targets, proxy.port, &probe_known, scan_type)
                    .status()
                    .await
                    .expect("probe");
                probe.push(ms(t.elapsed()));
                assert!(status.success(), "probe failed");
                let probe_trace = proxy.take_trace();

                let t = Instant::now();
                let status = ssh_command(&targets, proxy.port, &script)
                    .status()
                    .await
                    .expect("ssh");
                ssh.push(ms(t.elapsed()));
                assert!(status.success(), "ssh failed");
                let ssh_trace = proxy.take_trace();

                if run == 0 && delay_ms == max_delay && scan_type == ScanType::Quick {
                    for (tool, chunks) in [
                        ("hostscan probe", probe_trace),
                        ("service", service_trace),
                        ("ssh", ssh_trace),
                    ] {
                        traces.push((tool, round_trips(&chunks, delay), timeline(&chunks)));
                    }
                }
            }
            rows.push(WanRow {
                delay_ms,
                scan_type,
                probe: stats(probe),
                service: stats(service),
                ssh: stats(ssh),
            });
        }
    }
    Wan {
        runs: sizes.runs,
        rows,
        traces,
        trace_delay_ms: max_delay,
    }
}

pub fn wan_section(w: &Wan) -> String {
    let mut md = format!(
        "## 7. Emulated WAN\n\nOne sshd target behind a delay proxy on 127.0.0.1 (a TCP relay that releases each direction's bytes D ms after it read them, so bandwidth is not cut; the client's first bytes leave no earlier than 2D after its connect and the target accepts at 3D, emulating TCP's own round trip; every read acknowledged at once). RTT = 2D. Median and p95 of {} runs per tool, interleaved; \"RT\" is latency ÷ RTT. The service is StartScan until the terminal WatchScan event through `hostscan serve`; ssh is OpenSSH running the same driver script over one connection.\n\n\
         | D one way | scan | `hostscan probe` ms (RT) | service ms (RT) | OpenSSH ms (RT) | probe / ssh |\n|---|---|---|---|---|---|\n",
        w.runs
    );
    for r in &w.rows {
        let rtt = 2.0 * r.delay_ms as f64;
        let cell = |s: &Stats| {
            if r.delay_ms == 0 {
                format!("{:.1} / {:.1}", s.median, s.p95)
            } else {
                format!("{:.1} / {:.1} ({:.1})", s.median, s.p95, s.median / rtt)
            }
        };
        let _ = writeln!(
            md,
            "| {} ms | {} | {} | {} | {} | **{:.2}×** |",
            r.delay_ms,
            r.scan_type,
            cell(&r.probe),
            cell(&r.service),
            cell(&r.ssh),
            r.probe.median / r.ssh.median
        );
    }
    let _ = writeln!(
        md,
        "\nThe physical limit for one quick scan over a fresh connection is **6 round trips** plus the commands' own time: TCP (1), the server's banner and KEXINIT (1: the server speaks first, after it accepts), curve25519 ECDH (1), NEWKEYS + ssh-userauth service request + a signed publickey request sent together (1; sshd reads them in order), channel open (1: the exec request must name the server's channel number), exec + script + EOF → output, exit status, close (1). Sending the service request alone and waiting for its accept makes it 7.\n"
    );
    if !w.traces.is_empty() {
        let _ = writeln!(
            md,
            "Round trips of one quick scan at D = {} ms, counted in the proxy's trace (TCP's, then each client flight sent after hearing from the server up to the one carrying the driver script, then the output's way back; the commands' run time is not a round trip): {}.\n",
            w.trace_delay_ms,
            w.traces
                .iter()
                .map(|(tool, n, _)| format!("{tool} **{n}**"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (tool, _, timeline) in &w.traces {
            let _ = writeln!(
                md,
                "<details><summary>{tool}: what the client sent (→) and got (←)</summary>\n\n```\n{timeline}```\n</details>\n"
            );
        }
    }
    md
}

// ------------------------------------------------- section 8: a thousand

pub struct Thousand {
    pub scans: usize,
    pub targets: usize,
    pub delay_ms: u64,
    pub per_sec: f64,
    pub failed: usize,
    pub cpu_per_scan: f64,
    pub machine_cpu_per_scan: f64,
    pub rss_before_kib: u64,
    pub peak_rss_kib: u64,
    pub max_running: u64,
    pub pool_in_use_max: u64,
    pub pool_max: u64,
    pub pool_waits: (f64, f64),
    /// StartScan calls turned away as UNAVAILABLE (made again).
    pub unavailable: usize,
    pub submit_secs: f64,
    pub ssh_per_sec: f64,
    pub ssh_failed: usize,
    pub ssh_cpu_per_scan: f64,
    pub ssh_machine_cpu_per_scan: f64,
    pub ssh_peak_summed_rss_kib: u64,
    pub ssh_max_alive: usize,
    pub ansible: Result<(f64, usize), String>,
}

/// Raises this process's open-file limit to its hard limit; children (the
/// server, sshd, ssh) inherit it.
fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((_, hard)) => {
            setrlimit(Resource::RLIMIT_NOFILE, hard, hard).ok();
            hard
        }
        Err(_) => 0,
    }
}

/// CPU seconds of this process's children that have been waited for.
fn children_cpu() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

fn metric(m: &std::collections::HashMap<String, f64>, prefix: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| *v)
        .sum()
}

pub async fn thousand(sizes: &Sizes, db: &TestDb) -> Thousand {
    let limit = raise_nofile();
    eprintln!("bench: open files limit {limit}");
    let delay = Duration::from_millis(sizes.delay);
    let targets = Targets::start(sizes.targets).await;
    let mut proxies = Vec::new();
    for s in &targets.sshds {
        proxies.push(DelayProxy::start(s.port, delay, false).await);
    }
    let ports: Vec<u16> = proxies.iter().map(|p| p.port).collect();
    let dir = super::support::temp_dir("hostscan-bench-thousand-");
    add_known(&targets, &ports, &dir.path().join("unused_known_hosts"));
    let metrics_port = super::support::free_port();
    let metrics_addr: std::net::SocketAddr = ([127, 0, 0, 1], metrics_port).into();
    let workers = sizes.at_once.to_string();
    let listen = metrics_addr.to_string();
    let server = super::start_server(
        db,
        &targets,
        &[
            "--workers",
            &workers,
            "--connect-timeout",
            "120",
            "--metrics-listen",
            &listen,
        ],
    )
    .await;
    {
        // Pin every host key first: the measured scans all verify.
        let mut client = server.client().await;
        for port in &ports {
            scan_to_end(&mut client, request(*port, ScanType::Quick)).await;
        }
    }
    let client = server.client().await;
    let rss_before = status_kib(server.pid, "VmRSS");
    std::fs::write(format!("/proc/{}/clear_refs", server.pid), "5").ok();
    let metrics0 = super::support::server::scrape(metrics_addr).await;
    let cpu0 = process_cpu(server.pid);
    let machine0 = machine_cpu();
    let t0 = chrono::Utc::now();
    // StartScan from 64 callers at a time (as section 2); a call the server
    // turns away as UNAVAILABLE (its database pool busy) is counted and
    // made again.
    let submit = Arc::new(tokio::sync::Semaphore::new(64));
    let unavailable = Arc::new(AtomicUsize::new(0));
    let mut submits = tokio::task::JoinSet::new();
    for i in 0..sizes.at_once {
        let mut c = client.clone();
        let port = ports[i % ports.len()];
        let permit = submit.clone().acquire_owned().await.expect("semaphore");
        let unavailable = unavailable.clone();
        submits.spawn(async move {
            let _permit = permit;
            loop {
                match c.start_scan(request(port, ScanType::Quick)).await {
                    Ok(r) => return r.into_inner().id,
                    Err(e) if e.code() == tonic::Code::Unavailable => {
                        unavailable.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("start: {e}"),
                }
            }
        });
    }
    let mut ids = Vec::new();
    while let Some(id) = submits.join_next().await {
        ids.push(id.expect("submit"));
    }
    let submitted_in = chrono::Utc::now() - t0;
    // Sample running scans and the pool until every scan is terminal.
    let expected = (sizes.at_once + ports.len()) as f64;
    let (mut max_running, mut pool_in_use_max) = (0f64, 0f64);
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let m = super::support::server::scrape(metrics_addr).await;
        max_running = max_running.max(metric(&m, "hostscan_scans_running"));
        pool_in_use_max =
            pool_in_use_max.max(metric(&m, "hostscan_db_pool_connections{state=\"in_use\"}"));
        if metric(&m, "hostscan_scans_finished_total") >= expected || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu = process_cpu(server.pid) - cpu0;
    let machine = machine_cpu() - machine0;
    let peak = status_kib(server.pid, "VmHWM");
    let m = super::support::server::scrape(metrics_addr).await;
    let waits = |m: &std::collections::HashMap<String, f64>| {
        (
            metric(m, "hostscan_db_pool_wait_seconds_count"),
            metric(m, "hostscan_db_pool_wait_seconds_sum"),
        )
    };
    let (c1, s1) = waits(&m);
    let (c0, s0) = waits(&metrics0);
    let pool_max = metric(&m, "hostscan_db_pool_max_connections");
    let mut c = client.clone();
    let mut last = t0;
    let mut failed = 0;
    for id in &ids {
        let s = c
            .get_scan(pb::GetScanRequest { scan_id: *id })
            .await
            .expect("get")
            .into_inner();
        if s.status != pb::ScanStatus::Completed as i32 {
            failed += 1;
        }
        if let Some(done) = s.completed_at.as_ref().and_then(pb::from_timestamp) {
            last = last.max(done);
        }
    }
    let makespan = (last - t0).to_std().unwrap_or_default().as_secs_f64();
    drop(c);
    drop(client);
    drop(server);

    // The same scans by as many OpenSSH clients at once.
    let script = script_file(dir.path(), ScanType::Quick);
    let children0 = children_cpu();
    let machine0 = machine_cpu();
    let t = Instant::now();
    let mut children = Vec::new();
    for i in 0..sizes.at_once {
        let mut cmd = ssh_command(&targets, ports[i % ports.len()], &script);
        cmd.kill_on_drop(true);
        children.push(cmd.spawn().expect("ssh"));
    }
    let pids: Vec<u32> = children.iter().filter_map(|c| c.id()).collect();
    let sampler_stop = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let stop = sampler_stop.clone();
        tokio::spawn(async move {
            let (mut peak, mut max_alive) = (0u64, 0usize);
            while !stop.is_cancelled() {
                let (mut sum, mut alive) = (0u64, 0usize);
                for pid in &pids {
                    let kib = status_kib(*pid, "VmRSS");
                    if kib > 0 {
                        sum += kib;
                        alive += 1;
                    }
                }
                peak = peak.max(sum);
                max_alive = max_alive.max(alive);
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
            (peak, max_alive)
        })
    };
    let mut ssh_failed = 0;
    for mut child in children {
        ssh_failed += usize::from(!child.wait().await.is_ok_and(|s| s.success()));
    }
    let ssh_secs = t.elapsed().as_secs_f64();
    sampler_stop.cancel();
    let (ssh_peak, ssh_max_alive) = sampler.await.unwrap_or((0, 0));
    let ssh_cpu = children_cpu() - children0;
    let ssh_machine = machine_cpu() - machine0;

    let ansible = if sizes.ansible_hosts == 0 {
        Err("not run in --smoke (HOSTSCAN_BENCH_ANSIBLE_HOSTS=N runs it)".to_string())
    } else {
        ansible_forks(&targets, &ports, sizes.ansible_hosts, 50).await
    };
    drop(proxies);
    let n = sizes.at_once as f64;
    Thousand {
        scans: sizes.at_once,
        targets: ports.len(),
        delay_ms: sizes.delay,
        per_sec: n / makespan.max(1e-9),
        failed,
        cpu_per_scan: cpu / n,
        machine_cpu_per_scan: machine / n,
        rss_before_kib: rss_before,
        peak_rss_kib: peak,
        max_running: max_running as u64,
        pool_in_use_max: pool_in_use_max as u64,
        pool_max: pool_max as u64,
        pool_waits: (c1 - c0, s1 - s0),
        unavailable: unavailable.load(Ordering::Relaxed),
        submit_secs: submitted_in.to_std().unwrap_or_default().as_secs_f64(),
        ssh_per_sec: n / ssh_secs,
        ssh_failed,
        ssh_cpu_per_scan: ssh_cpu / n,
        ssh_machine_cpu_per_scan: ssh_machine / n,
        ssh_peak_summed_rss_kib: ssh_peak,
        ssh_max_alive,
        ansible,
    }
}

/// `ansible all -f FORKS -m setup` over `hosts` inventory entries spread
/// over the proxied targets: hosts per second (one run).
async fn ansible_forks(
    targets: &Targets,
    ports: &[u16],
    hosts: usize,
    forks: usize,
) -> Result<(f64, usize), String> {
    let spread: Vec<u16> = (0..hosts).map(|i| ports[i % ports.len()]).collect();
    let took = super::ansible_run(targets, &spread, forks).await?;
    Ok((hosts as f64 / took.as_secs_f64(), hosts))
}

pub fn thousand_section(t: &Thousand) -> String {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let grown = t.peak_rss_kib.saturating_sub(t.rss_before_kib);
    let mut md = format!(
        "## 8. A thousand at once\n\n{} quick scans submitted by 64 concurrent StartScan callers over {} sshd targets, each behind a {} ms delay proxy (RTT {} ms); hostscan with `--workers {}` (database pool as configured, 16 by default), next to {} OpenSSH clients started at once running the same driver script. Open-file limit raised to the hard limit for the runner and its children.\n\n\
         | | scans/s | CPU s per scan (own) | CPU s per scan (machine) | peak memory |\n|---|---|---|---|---|\n\
         | hostscan serve | {:.1} | {:.4} | {:.4} | {:.1} MiB peak RSS ({:.1} MiB before) |\n\
         | OpenSSH clients | {:.1} | {:.4} | {:.4} | {:.1} MiB summed RSS ({} alive at once at most) |\n\
         | **hostscan / OpenSSH** | **{:.2}×** | **{:.2}×** | **{:.2}×** | **{:.3}×** |\n\n",
        t.scans,
        t.targets,
        t.delay_ms,
        2 * t.delay_ms,
        t.scans,
        t.scans,
        t.per_sec,
        t.cpu_per_scan,
        t.machine_cpu_per_scan,
        mib(t.peak_rss_kib),
        mib(t.rss_before_kib),
        t.ssh_per_sec,
        t.ssh_cpu_per_scan,
        t.ssh_machine_cpu_per_scan,
        mib(t.ssh_peak_summed_rss_kib),
        t.ssh_max_alive,
        t.per_sec / t.ssh_per_sec,
        t.cpu_per_scan / t.ssh_cpu_per_scan.max(1e-9),
        t.machine_cpu_per_scan / t.ssh_machine_cpu_per_scan.max(1e-9),
        t.peak_rss_kib as f64 / t.ssh_peak_summed_rss_kib.max(1) as f64,
    );
    let _ = writeln!(
        md,
        "Per in-flight scan (at most {} running at once, from the server's live `hostscan_scans_running` gauge, sampled every 50 ms): the server's RSS grew {:.1} KiB per running scan ((peak − before) ÷ most running); CPU {:.2} ms per scan.\n\n\
         Database pool: {} scans were in flight at once on a pool of {} connections, so no scan holds a connection while it waits on SSH (each store call takes one inside `Store::run`'s `spawn_blocking` and gives it back). The pool is busy in bursts, though: {} checkouts waited {:.1} ms on average ({:.1} s in all; the server's own `in_use` gauge, sampled every 5 s, saw at most {}). StartScan was turned away as UNAVAILABLE {} times (made again after 100 ms); all {} were accepted within {:.1} s.\n",
        t.max_running,
        grown as f64 / t.max_running.max(1) as f64,
        t.cpu_per_scan * 1000.0,
        t.max_running,
        t.pool_max,
        t.pool_waits.0,
        t.pool_waits.1 * 1000.0 / t.pool_waits.0.max(1.0),
        t.pool_waits.1,
        t.pool_in_use_max,
        t.unavailable,
        t.scans,
        t.submit_secs,
    );
    if t.failed > 0 || t.ssh_failed > 0 {
        let _ = writeln!(
            md,
            "Did not complete: {} hostscan scans, {} OpenSSH clients.\n",
            t.failed, t.ssh_failed
        );
    }
    match &t.ansible {
        Ok((per_sec, hosts)) => {
            let _ = writeln!(
                md,
                "Ansible (`ansible all -f 50 -m setup` over {hosts} inventory hosts spread over the same proxied targets, one run): **{per_sec:.1} hosts/s** ({:.1}× fewer than hostscan's quick scans/s; `setup` gathers more facts than a quick scan).\n",
                t.per_sec / per_sec
            );
        }
        Err(why) => {
            let _ = writeln!(md, "Ansible `-f 50`: not measured ({why}).\n");
        }
    }
    md
}
