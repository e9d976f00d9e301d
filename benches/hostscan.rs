//! hostscan's benchmark runner: `cargo bench --bench hostscan -- [--smoke] [--out FILE]`
//! (or `scripts/bench`). It sets up its own loopback sshd targets, its own
//! PostgreSQL database and the real `hostscan serve` process, measures, and
//! writes a Markdown report whose key numbers are ratios taken in the same
//! run. It never asserts a timing; `--smoke` only proves the runner works.

#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code, clippy::all)]
mod support;
#[path = "hostscan/wan.rs"]
mod wan;

// Sections 10-12: SQLite next to PostgreSQL, retention, WatchScans dashboards.
// (This file is the crate root: a plain `mod x;` would be benches/x.rs.)
#[path = "hostscan/backends.rs"]
mod backends;
#[path = "hostscan/dashboards.rs"]
mod dashboards;
#[path = "hostscan/retention.rs"]
mod retention;

#[path = "hostscan/target.rs"]
mod target;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hostscan::model::ScanType;
use hostscan::pb;
use support::pg::TestDb;
use support::server::{BINARY, Client, Server, watch};
use support::sshd::{Keys, Options, Sshd};
use tokio::sync::Semaphore;

/// Sizes of one run.
struct Plan {
    smoke: bool,
    latency_runs: usize,
    targets: usize,
    scans: usize,
    concurrency: usize,
    fanouts: Vec<usize>,
    api_seconds: u64,
    api_clients: usize,
    /// Sections 7 (emulated WAN) and 8 (a thousand at once).
    wan: wan::Sizes,
    /// Runs of each tool per scan type in the target-cost section
    /// (HOSTSCAN_BENCH_TARGET_RUNS overrides).
    target_runs: usize,
}

impl Plan {
    fn new(smoke: bool) -> Self {
        if smoke {
            Self {
                smoke,
                latency_runs: 3,
                targets: 3,
                scans: 30,
                concurrency: 8,
                fanouts: vec![50],
                api_seconds: 1,
                api_clients: 8,
                wan: wan::Sizes::new(true),
                target_runs: 3,
            }
        } else {
            Self {
                smoke,
                latency_runs: 30,
                targets: 20,
                scans: 1000,
                concurrency: 32,
                fanouts: vec![1000, 10_000],
                api_seconds: 5,
                api_clients: 64,
                wan: wan::Sizes::new(false),
                target_runs: 20,
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let mut smoke = false;
    let mut out = PathBuf::from("BENCHMARKS.md");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--smoke" => smoke = true,
            "--out" => {
                out = PathBuf::from(
                    args.next()
                        .ok_or_else(|| anyhow::anyhow!("--out needs a path"))?,
                )
            }
            "--bench" => {}
            other => anyhow::bail!("unknown argument {other:?} (expected --smoke, --out FILE)"),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(Plan::new(smoke)))?;
    std::fs::write(&out, &report)?;
    eprintln!("bench: wrote {}", out.display());
    println!("{report}");
    Ok(())
}

// ---------------------------------------------------------------- measuring

fn clock_ticks() -> f64 {
    support::run("getconf", &["CLK_TCK"])
        .trim()
        .parse()
        .unwrap_or(100.0)
}

/// CPU seconds used by a process so far (user + system).
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" of the command name: state is field 3; utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11usize, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
        .sum();
    ticks / clock_ticks()
}

/// CPU seconds the whole machine spent busy so far.
fn machine_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: f64 = [0usize, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|i| cpu.get(*i))
        .sum();
    busy / clock_ticks()
}

/// A "Field: value" number from a /proc file (VmRSS and VmHWM in
/// `/proc/PID/status` are KiB, as is MemTotal in `/proc/meminfo`).
fn proc_field(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn status_kib(pid: u32, field: &str) -> u64 {
    proc_field(&format!("/proc/{pid}/status"), field)
}

#[derive(Clone, Copy, Default)]
struct Stats {
    median: f64,
    p95: f64,
    p99: f64,
}

fn stats(mut values: Vec<f64>) -> Stats {
    if values.is_empty() {
        return Stats::default();
    }
    values.sort_by(f64::total_cmp);
    let at = |p: f64| values[((values.len() - 1) as f64 * p).round() as usize];
    Stats {
        median: at(0.5),
        p95: at(0.95),
        p99: at(0.99),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ------------------------------------------------------------------ targets

/// The login user of the benchmark targets: a user with a plain /bin/sh and
/// no start-up files when we are root (so neither side pays for a heavy
/// interactive shell set-up), else ourselves.
fn bench_user() -> String {
    if !support::is_root() {
        return support::current_user();
    }
    const USER: &str = "hostscan-bench";
    let exists = std::process::Command::new("id")
        .arg(USER)
        .output()
        .is_ok_and(|o| o.status.success());
    if !exists {
        support::run(
            "useradd",
            &[
                "--system",
                "--shell",
                "/bin/sh",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--password",
                "*",
                USER,
            ],
        );
    }
    USER.into()
}

struct Targets {
    keys: Keys,
    user: String,
    sshds: Vec<Sshd>,
    /// Host keys of every target, for ssh's UserKnownHostsFile.
    known_hosts: PathBuf,
    _dir: tempfile::TempDir,
}

impl Targets {
    async fn start(count: usize) -> Self {
        let keys = Keys::generate();
        let mut sshds = Vec::new();
        for _ in 0..count {
            sshds.push(Sshd::start(&keys, Options::default()).await);
        }
        let dir = support::temp_dir("hostscan-bench-");
        let known_hosts = dir.path().join("known_hosts");
        let lines: String = sshds.iter().map(Sshd::known_hosts_line).collect();
        std::fs::write(&known_hosts, lines).expect("known_hosts");
        Self {
            keys,
            user: bench_user(),
            sshds,
            known_hosts,
            _dir: dir,
        }
    }

    fn server_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--ssh-key".into(),
            self.keys.client.display().to_string(),
            "--ssh-user".into(),
            self.user.clone(),
            "--ssh-port".into(),
            self.sshds[0].port.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }
}

async fn start_server(db: &TestDb, targets: &Targets, extra: &[&str]) -> Server {
    Server::start_env(
        &db.url,
        &targets.server_args(extra),
        &[("HOSTSCAN_LOG", "warn,hostscan::serve=info")],
    )
    .await
}

fn request(port: u16, scan_type: ScanType) -> pb::StartScanRequest {
    pb::StartScanRequest {
        hostname: "127.0.0.1".into(),
        port: u32::from(port),
        username: String::new(),
        scan_type: pb::ScanType::from(scan_type) as i32,
        request_id: String::new(),
        proxy_jump: String::new(),
    }
}

/// StartScan, then WatchScan to the end; the final scan.
async fn scan_to_end(client: &mut Client, req: pb::StartScanRequest) -> pb::Scan {
    let scan = client.start_scan(req).await.expect("start").into_inner();
    let mut stream = watch(client, scan.id, 0).await;
    let mut last = None;
    while let Some(e) = stream.message().await.expect("stream") {
        if e.scan.is_some() {
            last = e.into_fields().scan;
        }
    }
    last.expect("terminal scan")
}

/// The OpenSSH client running the same driver script over one fresh
/// connection, with the key exchange russh negotiates with OpenSSH.
fn ssh_command(targets: &Targets, port: u16, script: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("ssh");
    c.args([
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "KexAlgorithms=curve25519-sha256",
    ])
    .arg("-o")
    .arg(format!(
        "UserKnownHostsFile={}",
        targets.known_hosts.display()
    ))
    .args([
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "LogLevel=ERROR",
        "-i",
    ])
    .arg(&targets.keys.client)
    .args(["-p", &port.to_string()])
    .arg(format!("{}@127.0.0.1", targets.user))
    .arg(
        std::fs::read_to_string(script.with_extension("cmd"))
            .expect("command line beside the script"),
    )
    .stdin(Stdio::from(std::fs::File::open(script).expect("script")))
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

/// `hostscan probe` of the target on `port`, verifying host keys from
/// `known`, its output dropped.
fn probe_command(
    targets: &Targets,
    port: u16,
    known: &Path,
    scan_type: ScanType,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BINARY);
    cmd.args([
        "probe",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--user",
        &targets.user,
        "-i",
    ])
    .arg(&targets.keys.client)
    .arg("--known-hosts")
    .arg(known)
    .args(if scan_type == ScanType::Full {
        &["--full"][..]
    } else {
        &[][..]
    })
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    cmd
}

/// Writes the plan's driver script to `<dir>/<type>.sh` and its remote
/// command line beside it (`<type>.cmd`, read by `ssh_command`).
fn script_file(dir: &Path, scan_type: ScanType) -> PathBuf {
    let path = dir.join(format!("{scan_type}.sh"));
    let (command, script) = hostscan::scan::combined_script(scan_type, Duration::from_secs(30));
    std::fs::write(&path, script).expect("script");
    std::fs::write(path.with_extension("cmd"), command).expect("command line");
    path
}

// ------------------------------------------------------------------- phases

struct Latency {
    scan_type: ScanType,
    service: Stats,
    probe: Stats,
    ssh: Stats,
}

async fn latency(plan: &Plan, db: &TestDb) -> Vec<Latency> {
    let targets = Targets::start(1).await;
    let server = start_server(db, &targets, &[]).await;
    let mut client = server.client().await;
    let port = targets.sshds[0].port;
    let dir = support::temp_dir("hostscan-bench-");
    let probe_known = dir.path().join("probe_known_hosts");
    std::fs::copy(&targets.known_hosts, &probe_known).expect("copy known_hosts");
    let mut out = Vec::new();
    for scan_type in [ScanType::Quick, ScanType::Full] {
        let script = script_file(dir.path(), scan_type);
        // Warm up each path once (pins the host key, fills caches).
        scan_to_end(&mut client, request(port, scan_type)).await;
        let (mut service, mut probe, mut ssh) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..plan.latency_runs + 1 {
            // Interleaved, so drift hits all three alike.
            let t = Instant::now();
            let scan = scan_to_end(&mut client, request(port, scan_type)).await;
            service.push(ms(t.elapsed()));
            assert_eq!(
                scan.status,
                pb::ScanStatus::Completed as i32,
                "{:?}",
                scan.error
            );

            let t = Instant::now();
            let status = probe_command(&targets, port, &probe_known, scan_type)
                .status()
                .await
                .expect("probe");
            probe.push(ms(t.elapsed()));
            assert!(status.success(), "probe failed");

            let t = Instant::now();
            let status = ssh_command(&targets, port, &script)
                .status()
                .await
                .expect("ssh");
            ssh.push(ms(t.elapsed()));
            assert!(status.success(), "ssh failed");
        }
        // The first round still warms the probe's and ssh's page caches.
        for v in [&mut service, &mut probe, &mut ssh] {
            v.remove(0);
        }
        out.push(Latency {
            scan_type,
            service: stats(service),
            probe: stats(probe),
            ssh: stats(ssh),
        });
    }
    out
}

struct Throughput {
    scans: usize,
    targets: usize,
    concurrency: usize,
    hostscan_per_sec: f64,
    hostscan_cpu_per_scan: f64,
    hostscan_machine_cpu_per_scan: f64,
    hostscan_peak_rss_kib: u64,
    failed: usize,
    ssh_per_sec: f64,
    ssh_machine_cpu_per_scan: f64,
    ansible: Result<(f64, usize), String>,
}

async fn throughput(plan: &Plan, db: &TestDb) -> Throughput {
    let targets = Targets::start(plan.targets).await;
    let workers = plan.concurrency.to_string();
    let server = start_server(
        db,
        &targets,
        &["--workers", &workers, "--db-pool-size", "16"],
    )
    .await;
    let ports: Vec<u16> = targets.sshds.iter().map(|s| s.port).collect();
    // Pin every host key first: the measured runs all verify.
    {
        let mut client = server.client().await;
        for port in &ports {
            scan_to_end(&mut client, request(*port, ScanType::Quick)).await;
        }
    }
    let client = server.client().await;
    let cpu0 = process_cpu(server.pid);
    let machine0 = machine_cpu();
    std::fs::write(format!("/proc/{}/clear_refs", server.pid), "5").ok();
    let t0 = chrono::Utc::now();
    let ids = submit_quick(&client, &ports, plan.scans).await;
    // Done when every submitted scan is terminal.
    let mut c = client.clone();
    let terminal = |status: pb::ScanStatus| {
        let mut c = c.clone();
        async move {
            c.list_scans(pb::ListScansRequest {
                status: status as i32,
                page_size: 1,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .total_size
        }
    };
    let expected = (plan.scans + ports.len()) as i64;
    loop {
        let done =
            terminal(pb::ScanStatus::Completed).await + terminal(pb::ScanStatus::Failed).await;
        if done >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu = process_cpu(server.pid) - cpu0;
    let machine = machine_cpu() - machine0;
    let peak = status_kib(server.pid, "VmHWM");
    // Makespan: first submit to the last completion the database recorded.
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
    drop(server);

    // The same work by parallel OpenSSH clients, as many at once as workers.
    let dir = support::temp_dir("hostscan-bench-");
    let script = script_file(dir.path(), ScanType::Quick);
    let machine0 = machine_cpu();
    let t = Instant::now();
    let limit = Arc::new(Semaphore::new(plan.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..plan.scans {
        let permit = limit.clone().acquire_owned().await.expect("semaphore");
        let mut cmd = ssh_command(&targets, ports[i % ports.len()], &script);
        tasks.spawn(async move {
            let ok = cmd.status().await.is_ok_and(|s| s.success());
            drop(permit);
            ok
        });
    }
    let mut ssh_failed = 0;
    while let Some(ok) = tasks.join_next().await {
        ssh_failed += usize::from(!ok.unwrap_or(false));
    }
    let ssh_secs = t.elapsed().as_secs_f64();
    let ssh_machine = machine_cpu() - machine0;
    assert_eq!(ssh_failed, 0, "ssh runs failed");

    let ansible = if plan.smoke {
        Err("not run in --smoke".to_string())
    } else {
        ansible_setup(&targets).await
    };
    Throughput {
        scans: plan.scans,
        targets: ports.len(),
        concurrency: plan.concurrency,
        hostscan_per_sec: plan.scans as f64 / makespan.max(1e-9),
        hostscan_cpu_per_scan: cpu / plan.scans as f64,
        hostscan_machine_cpu_per_scan: machine / plan.scans as f64,
        hostscan_peak_rss_kib: peak,
        failed,
        ssh_per_sec: plan.scans as f64 / ssh_secs,
        ssh_machine_cpu_per_scan: ssh_machine / plan.scans as f64,
        ansible,
    }
}

/// StartScan of `scans` quick scans, 64 in flight, round-robin over
/// `ports`: their ids.
async fn submit_quick(client: &Client, ports: &[u16], scans: usize) -> Vec<i64> {
    let limit = Arc::new(Semaphore::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..scans {
        let mut c = client.clone();
        let permit = limit.clone().acquire_owned().await.expect("semaphore");
        let port = ports[i % ports.len()];
        tasks.spawn(async move {
            let id = c
                .start_scan(request(port, ScanType::Quick))
                .await
                .expect("start")
                .into_inner()
                .id;
            drop(permit);
            id
        });
    }
    let mut ids = Vec::new();
    while let Some(id) = tasks.join_next().await {
        ids.push(id.expect("submit"));
    }
    ids
}

/// The venv's `ansible`, installing ansible-core from PyPI into a venv
/// under target/ on first use.
fn ansible_binary() -> Result<PathBuf, String> {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-venv");
    let ansible = venv.join("bin/ansible");
    if ansible.exists() {
        return Ok(ansible);
    }
    let run = |args: &[&str]| {
        std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .map_err(|e| e.to_string())
            .and_then(|o| {
                if o.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&o.stderr)
                        .chars()
                        .take(300)
                        .collect())
                }
            })
    };
    let venv_s = venv.display().to_string();
    run(&["python3", "-m", "venv", &venv_s]).map_err(|e| format!("venv: {e}"))?;
    run(&[
        &format!("{venv_s}/bin/pip"),
        "install",
        "--quiet",
        "ansible-core",
    ])
    .map_err(|e| format!("pip install ansible-core: {e}"))?;
    Ok(ansible)
}

/// One `ansible all -f FORKS -m setup` over one inventory host per entry
/// of `ports` (all on 127.0.0.1, logging in as the targets' user): its
/// wall time.
async fn ansible_run(targets: &Targets, ports: &[u16], forks: usize) -> Result<Duration, String> {
    let ansible = ansible_binary()?;
    let dir = support::temp_dir("hostscan-ansible-");
    let mut inventory = String::from("[targets]\n");
    for (i, port) in ports.iter().enumerate() {
        let _ = writeln!(
            inventory,
            "h{i} ansible_host=127.0.0.1 ansible_port={port} ansible_user={} ansible_ssh_private_key_file={} ansible_python_interpreter=/usr/bin/python3",
            targets.user,
            targets.keys.client.display()
        );
    }
    let inv = dir.path().join("inventory");
    std::fs::write(&inv, inventory).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let out = tokio::process::Command::new(&ansible)
        .args(["all", "-i", inv.to_str().unwrap_or(""), "-f"])
        .arg(forks.to_string())
        .args(["-m", "setup"])
        .env("ANSIBLE_HOST_KEY_CHECKING", "False")
        .env(
            "ANSIBLE_SSH_ARGS",
            format!(
                "-o UserKnownHostsFile={} -o ControlMaster=no",
                targets.known_hosts.display()
            ),
        )
        .env("ANSIBLE_LOCAL_TEMP", dir.path())
        .env("ANSIBLE_REMOTE_TEMP", "/tmp/.ansible-bench")
        .env("HOME", dir.path())
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "ansible failed: {}",
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
                .join(" | ")
        ));
    }
    Ok(t.elapsed())
}

/// `ansible all -f N -m setup` over the targets (N = their number), if
/// ansible-core installs from PyPI: hosts per second, median of 3 runs.
async fn ansible_setup(targets: &Targets) -> Result<(f64, usize), String> {
    let ports: Vec<u16> = targets.sshds.iter().map(|s| s.port).collect();
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(
            ansible_run(targets, &ports, ports.len())
                .await?
                .as_secs_f64(),
        );
    }
    let median = stats(runs).median;
    Ok((ports.len() as f64 / median, ports.len()))
}

struct Fanout {
    watchers: usize,
    events: usize,
    delay: Stats,
    complete: bool,
    kib_per_watcher: f64,
    peak_rss_kib: u64,
    /// CPU per event delivered to one watcher, server and watcher side.
    server_us_per_delivery: f64,
    client_us_per_delivery: f64,
}

async fn fanout(watchers: usize, db: &TestDb) -> Fanout {
    let targets = Targets::start(1).await;
    let (hang, _hanging) = Sshd::with_fakes(&targets.keys, &[("df", "exec sleep 600")]).await;
    let server = start_server(db, &targets, &["--workers", "1", "--watch-heartbeat", "15"]).await;
    let mut client = server.client().await;
    // The only worker is busy, so the watched scan waits while watchers attach.
    let blocker = client
        .start_scan(request(hang.port, ScanType::Quick))
        .await
        .expect("start")
        .into_inner();
    loop {
        let s = client
            .get_scan(pb::GetScanRequest {
                scan_id: blocker.id,
            })
            .await
            .expect("get")
            .into_inner();
        if s.status == pb::ScanStatus::Running as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let watched = client
        .start_scan(request(targets.sshds[0].port, ScanType::Quick))
        .await
        .expect("start")
        .into_inner();
    let rss0 = status_kib(server.pid, "VmRSS");
    std::fs::write(format!("/proc/{}/clear_refs", server.pid), "5").ok();
    let per_connection = 100;
    let mut channels = Vec::new();
    for _ in 0..watchers.div_ceil(per_connection) {
        channels.push(server.client().await);
    }
    let attached = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..watchers {
        let mut c = channels[i / per_connection].clone();
        let attached = attached.clone();
        let id = watched.id;
        tasks.spawn(async move {
            let mut stream = watch(&mut c, id, 0).await;
            let mut seen = Vec::new();
            let mut delays = Vec::new();
            let mut first = true;
            while let Some(e) = stream.message().await.expect("stream") {
                let received = chrono::Utc::now();
                if first {
                    attached.fetch_add(1, Ordering::Relaxed);
                    first = false;
                } else if !e.heartbeat
                    && let Some(sent) = e.time.as_ref().and_then(pb::from_timestamp)
                {
                    delays.push((received - sent).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                }
                if !e.heartbeat {
                    seen.push(e.sequence);
                }
            }
            (seen, delays)
        });
    }
    while attached.load(Ordering::Relaxed) < watchers {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss1 = status_kib(server.pid, "VmRSS");
    let (server_cpu0, own_cpu0) = (process_cpu(server.pid), process_cpu(std::process::id()));
    client
        .cancel_scan(pb::CancelScanRequest {
            scan_id: blocker.id,
        })
        .await
        .expect("cancel");
    let mut reference: Option<Vec<i64>> = None;
    let mut complete = true;
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (seen, delays) = r.expect("watcher");
        match &reference {
            None => reference = Some(seen),
            Some(r) => complete &= *r == seen,
        }
        all.extend(delays);
    }
    let server_cpu = process_cpu(server.pid) - server_cpu0;
    let client_cpu = process_cpu(std::process::id()) - own_cpu0;
    let reference = reference.unwrap_or_default();
    complete &= reference.windows(2).all(|w| w[1] == w[0] + 1);
    let deliveries = (watchers * reference.len()).max(1) as f64;
    Fanout {
        watchers,
        events: reference.len(),
        delay: stats(all),
        complete,
        kib_per_watcher: rss1.saturating_sub(rss0) as f64 / watchers as f64,
        server_us_per_delivery: server_cpu * 1e6 / deliveries,
        client_us_per_delivery: client_cpu * 1e6 / deliveries,
        peak_rss_kib: status_kib(server.pid, "VmHWM"),
    }
}

struct ApiPath {
    clients: usize,
    start: (f64, Stats),
    get: (f64, Stats),
}

async fn api_path(plan: &Plan, db: &TestDb) -> ApiPath {
    let targets = Targets::start(1).await;
    let server = start_server(db, &targets, &[]).await;
    let refused = support::free_port();
    let mut clients = Vec::new();
    for _ in 0..API_CONNECTIONS {
        clients.push(server.client().await);
    }
    let mut ids = Vec::new();
    let seconds = Duration::from_secs(plan.api_seconds);
    let start = api_load(plan, &clients, Rpc::Start, refused, &mut ids, seconds)
        .await
        .summary();
    let get = api_load(plan, &clients, Rpc::Get, refused, &mut ids, seconds)
        .await
        .summary();
    ApiPath {
        clients: plan.api_clients,
        start,
        get,
    }
}

/// Latencies (ms) of the calls made during `seconds` of load.
#[derive(Default)]
struct Load {
    latencies: Vec<f64>,
    seconds: f64,
}

impl Load {
    fn add(&mut self, other: Load) {
        self.latencies.extend(other.latencies);
        self.seconds += other.seconds;
    }

    /// Requests per second and latency statistics.
    fn summary(self) -> (f64, Stats) {
        let rate = self.latencies.len() as f64 / self.seconds.max(f64::EPSILON);
        (rate, stats(self.latencies))
    }
}

/// Connections the API-path clients share.
const API_CONNECTIONS: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rpc {
    /// StartScan of a refused port (workers fail it quickly).
    Start,
    /// GetScan of the scans in `ids`.
    Get,
}

/// `plan.api_clients` clients over `clients` calling `rpc` for `seconds`.
/// StartScan adds the ids it created to `ids`.
async fn api_load(
    plan: &Plan,
    clients: &[Client],
    rpc: Rpc,
    refused: u16,
    ids: &mut Vec<i64>,
    seconds: Duration,
) -> Load {
    let deadline = Instant::now() + seconds;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..plan.api_clients {
        let mut c = clients[i % clients.len()].clone();
        let known = ids.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut created = Vec::new();
            let mut n = 0usize;
            while Instant::now() < deadline {
                let t = Instant::now();
                match rpc {
                    Rpc::Start => {
                        let s = c
                            .start_scan(request(refused, ScanType::Quick))
                            .await
                            .expect("start")
                            .into_inner();
                        created.push(s.id);
                    }
                    Rpc::Get => {
                        let id = known[(i + n * 7) % known.len()];
                        c.get_scan(pb::GetScanRequest { scan_id: id })
                            .await
                            .expect("get");
                    }
                }
                latencies.push(ms(t.elapsed()));
                n += 1;
            }
            (latencies, created)
        });
    }
    let t = Instant::now();
    let mut latencies = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (l, c) = r.expect("client");
        latencies.extend(l);
        ids.extend(c);
    }
    Load {
        latencies,
        seconds: t.elapsed().as_secs_f64(),
    }
}

/// Waits until `client`'s server has no PENDING or RUNNING scan, so that
/// one measurement's StartScans are not failed by workers during the next.
async fn wait_idle(client: &Client) {
    loop {
        let mut busy = 0;
        for status in [pb::ScanStatus::Pending, pb::ScanStatus::Running] {
            busy += client
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
        if busy == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Plaintext against TLS, in the same run: the same sshd target, one
/// server of each kind (each on its own database), interleaved.
struct TlsOverhead {
    runs: usize,
    /// Quick scan through the service: StartScan to the terminal event.
    quick: (Stats, Stats),
    /// A new connection and one Health/Check on it.
    connect: (Stats, Stats),
    start: ((f64, Stats), (f64, Stats)),
    get: ((f64, Stats), (f64, Stats)),
}

async fn tls_overhead(plan: &Plan) -> TlsOverhead {
    let targets = Targets::start(1).await;
    let port = targets.sshds[0].port;
    let pki = support::tls::Pki::new("bench");
    let (plain_db, tls_db) = (TestDb::new().await, TestDb::new().await);
    let plain = start_server(&plain_db, &targets, &[]).await;
    let tls_args = pki.server_args(false);
    let tls_args: Vec<&str> = tls_args.iter().map(String::as_str).collect();
    let tls = start_server(&tls_db, &targets, &tls_args).await;
    let tls_channel = || async {
        support::tls::channel(tls.addr, &pki.ca, None)
            .await
            .expect("TLS connection")
    };
    let mut clients: (Vec<Client>, Vec<Client>) = (Vec::new(), Vec::new());
    for _ in 0..API_CONNECTIONS {
        clients.0.push(plain.client().await);
        clients.1.push(
            pb::scan_service_client::ScanServiceClient::with_interceptor(
                tls_channel().await,
                hostscan::cli::Auth::new(None),
            ),
        );
    }

    // Quick scans, alternating, after one warm-up each (host key pins).
    let (mut p, mut t) = (clients.0[0].clone(), clients.1[0].clone());
    scan_to_end(&mut p, request(port, ScanType::Quick)).await;
    scan_to_end(&mut t, request(port, ScanType::Quick)).await;
    let (mut quick_plain, mut quick_tls) = (Vec::new(), Vec::new());
    for _ in 0..plan.latency_runs {
        let started = Instant::now();
        scan_to_end(&mut p, request(port, ScanType::Quick)).await;
        quick_plain.push(ms(started.elapsed()));
        let started = Instant::now();
        scan_to_end(&mut t, request(port, ScanType::Quick)).await;
        quick_tls.push(ms(started.elapsed()));
    }

    // Connection set-up (TCP, TLS handshake, HTTP/2) plus one call.
    let health = |channel: tonic::transport::Channel| async move {
        tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health");
    };
    let (mut connect_plain, mut connect_tls) = (Vec::new(), Vec::new());
    for _ in 0..plan.latency_runs * 3 {
        let started = Instant::now();
        health(plain.channel().await).await;
        connect_plain.push(ms(started.elapsed()));
        let started = Instant::now();
        health(tls_channel().await).await;
        connect_tls.push(ms(started.elapsed()));
    }

    // The API path: each RPC in 4 slices per transport, alternating, and
    // both servers idle (no scan left to fail) before each slice.
    let refused = support::free_port();
    let slice = Duration::from_secs(plan.api_seconds).div_f64(4.0);
    let (mut ids_plain, mut ids_tls) = (Vec::new(), Vec::new());
    let mut results = Vec::new();
    for rpc in [Rpc::Start, Rpc::Get] {
        let (mut on_plain, mut on_tls) = (Load::default(), Load::default());
        for _ in 0..4 {
            wait_idle(&clients.0[0]).await;
            wait_idle(&clients.1[0]).await;
            on_plain.add(api_load(plan, &clients.0, rpc, refused, &mut ids_plain, slice).await);
            wait_idle(&clients.0[0]).await;
            wait_idle(&clients.1[0]).await;
            on_tls.add(api_load(plan, &clients.1, rpc, refused, &mut ids_tls, slice).await);
        }
        results.push((on_plain.summary(), on_tls.summary()));
    }
    let (start, get) = (results[0], results[1]);
    TlsOverhead {
        runs: plan.latency_runs,
        quick: (stats(quick_plain), stats(quick_tls)),
        connect: (stats(connect_plain), stats(connect_tls)),
        start,
        get,
    }
}

fn tls_section(o: &TlsOverhead, plan: &Plan) -> String {
    let row = |what: &str, (p, t): &(Stats, Stats)| {
        format!(
            "| {what} | {:.2} / {:.2} | {:.2} / {:.2} | **{:.2}×** |\n",
            p.median,
            p.p95,
            t.median,
            t.p95,
            t.median / p.median
        )
    };
    let rate = |what: &str, (p, t): &((f64, Stats), (f64, Stats))| {
        format!(
            "| {what} | {:.0} req/s, p50 {:.2} ms | {:.0} req/s, p50 {:.2} ms | **{:.2}×** |\n",
            p.0,
            p.1.median,
            t.0,
            t.1.median,
            t.0 / p.0
        )
    };
    format!(
        "## 6. TLS overhead\n\nThe same sshd target, one plaintext and one TLS server (rustls, ring, TLS 1.3, ECDSA P-256 certificate), measured alternately in this run. Latency: {} quick scans through the service each (StartScan to the terminal WatchScan event, over an open connection), and {} new connections each with one Health/Check. API path: {} clients over {} connections, {} s per RPC and transport in 4 alternating slices, each started with both servers idle (no scan left for workers to fail).\n\n\
         | | plaintext (median / p95 ms) | TLS | TLS / plaintext |\n|---|---|---|---|\n{}{}\n\
         | API path | plaintext | TLS | TLS / plaintext (rate) |\n|---|---|---|---|\n{}{}",
        o.runs,
        o.runs * 3,
        plan.api_clients,
        API_CONNECTIONS,
        plan.api_seconds,
        row("quick scan through the service", &o.quick),
        row("new connection + Health/Check", &o.connect),
        rate("StartScan", &o.start),
        rate("GetScan", &o.get),
    )
}

async fn idle_rss(db: &TestDb) -> u64 {
    let targets = Targets::start(1).await;
    let server = start_server(db, &targets, &[]).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health");
    status_kib(server.pid, "VmRSS")
}

// ------------------------------------------------------------------- report

fn machine() -> BTreeMap<&'static str, String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let first = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .map(|o| {
                let s = if o.stdout.is_empty() {
                    o.stderr
                } else {
                    o.stdout
                };
                String::from_utf8_lossy(&s)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default()
    };
    let mut m = BTreeMap::new();
    m.insert("cpu", format!("{} × {model}", first("nproc", &[])));
    m.insert(
        "memory",
        format!("{} MiB", proc_field("/proc/meminfo", "MemTotal") / 1024),
    );
    m.insert("kernel", first("uname", &["-sr"]));
    m.insert("openssh", first("ssh", &["-V"]));
    m.insert(
        "postgresql",
        first(
            "sh",
            &["-c", "ls /usr/lib/postgresql | sort -V | tail -n 1"],
        ),
    );
    m.insert(
        "hostscan",
        format!(
            "{} ({} build)",
            env!("CARGO_PKG_VERSION"),
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        ),
    );
    m
}

async fn run(mut plan: Plan) -> anyhow::Result<String> {
    if let Some(n) = std::env::var("HOSTSCAN_BENCH_TARGET_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        plan.target_runs = n;
    }
    // HOSTSCAN_BENCH_ONLY=target runs only the cost on the target.
    if std::env::var("HOSTSCAN_BENCH_ONLY").is_ok_and(|v| v == "target") {
        eprintln!("bench: cost on the target ({} runs)", plan.target_runs);
        return Ok(target::section(
            &target::target_cost(plan.target_runs).await,
        ));
    }
    // For profiling one phase: HOSTSCAN_BENCH_FANOUT=N runs only the fan-out.
    if let Some(n) = std::env::var("HOSTSCAN_BENCH_FANOUT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        let f = fanout(n, &TestDb::new().await).await;
        return Ok(format!(
            "fan-out {} watchers: {} events, complete {}, delay p50 {:.1} / p99 {:.1} ms, {:.1} KiB per watcher, peak {:.1} MiB, CPU us per delivery: server {:.1}, watchers {:.1}\n",
            f.watchers,
            f.events,
            f.complete,
            f.delay.median,
            f.delay.p99,
            f.kib_per_watcher,
            f.peak_rss_kib as f64 / 1024.0,
            f.server_us_per_delivery,
            f.client_us_per_delivery
        ));
    }
    // HOSTSCAN_BENCH_TLS=1 runs only the TLS comparison.
    if std::env::var("HOSTSCAN_BENCH_TLS").is_ok_and(|v| v == "1") {
        eprintln!("bench: TLS overhead");
        return Ok(tls_section(&tls_overhead(&plan).await, &plan));
    }
    // HOSTSCAN_BENCH_ONLY=backends,retention,dashboards runs only those.
    if let Ok(only) = std::env::var("HOSTSCAN_BENCH_ONLY")
        && let Some(md) = backends::only(&plan, &only).await
    {
        return Ok(md);
    }
    // HOSTSCAN_BENCH_ONLY=wan runs only sections 7 and 8.
    let only_wan = std::env::var("HOSTSCAN_BENCH_ONLY").is_ok_and(|v| v == "wan");
    let wan_sections = async {
        eprintln!("bench: emulated WAN (D = {:?} ms)", plan.wan.delays);
        let w = wan::emulated_wan(&plan.wan, &TestDb::new().await).await;
        eprintln!("bench: {} quick scans at once", plan.wan.at_once);
        let t = wan::thousand(&plan.wan, &TestDb::new().await).await;
        format!("{}\n{}", wan::wan_section(&w), wan::thousand_section(&t))
    };
    if only_wan {
        return Ok(wan_sections.await);
    }
    let db = TestDb::new().await;
    eprintln!("bench: single-scan latency ({} runs)", plan.latency_runs);
    let latency = latency(&plan, &db).await;
    eprintln!(
        "bench: throughput ({} scans over {} targets)",
        plan.scans, plan.targets
    );
    let throughput = throughput(&plan, &TestDb::new().await).await;
    eprintln!(
        "bench: throughput hostscan / parallel OpenSSH clients: {:.2}× (goal ≥ 0.95×)",
        throughput.hostscan_per_sec / throughput.ssh_per_sec
    );
    let mut fanouts = Vec::new();
    for n in &plan.fanouts {
        eprintln!("bench: fan-out to {n} watchers");
        fanouts.push(fanout(*n, &TestDb::new().await).await);
    }
    eprintln!("bench: API path ({} clients)", plan.api_clients);
    let api = api_path(&plan, &TestDb::new().await).await;
    eprintln!("bench: TLS overhead");
    let tls = tls_overhead(&plan).await;
    let idle = idle_rss(&TestDb::new().await).await;
    eprintln!("bench: cost on the target ({} runs)", plan.target_runs);
    let target_cost = target::target_cost(plan.target_runs).await;
    let binary_size = std::fs::metadata(BINARY).map(|m| m.len()).unwrap_or(0);

    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    if plan.smoke {
        let _ = writeln!(
            md,
            "**Smoke run** (`--smoke`): tiny sizes, to prove the runner works. Numbers mean nothing.\n"
        );
    }
    let _ = writeln!(
        md,
        "Produced by `scripts/bench` (`cargo bench --bench hostscan`) on {}. Every ratio compares numbers taken in the same run, interleaved where possible, because absolute times on a shared machine drift.\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    let _ = writeln!(md, "## Machine\n\n| | |\n|---|---|");
    for (k, v) in machine() {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    let _ = writeln!(
        md,
        "\n## Method\n\n\
         - Targets: real OpenSSH `sshd` processes on 127.0.0.1, logging in a user whose shell is `/bin/sh` with no start-up files (`hostscan-bench` when run as root), so both sides pay the same, small shell start-up.\n\
         - Database: a throwaway PostgreSQL cluster (fsync off) started by the runner; one database per phase.\n\
         - hostscan: the real `hostscan serve` binary, driven over gRPC from this process; `hostscan probe` as a separate process.\n\
         - OpenSSH baseline: `ssh -o KexAlgorithms=curve25519-sha256` (the exchange russh negotiates with OpenSSH 9.2) over one fresh connection, running the **same** driver script hostscan runs (`hostscan::scan::combined_script`) with the same remote command line, and verifying host keys from a known_hosts file.\n\
         - Latency: StartScan until the terminal WatchScan event; medians and p95 over {} runs after a warm-up, the three tools interleaved.\n",
        plan.latency_runs
    );

    let _ = writeln!(
        md,
        "## 1. Single-scan latency\n\n| scan | hostscan service (median / p95 ms) | `hostscan probe` | OpenSSH one connection | service / ssh | probe / ssh |\n|---|---|---|---|---|---|"
    );
    for l in &latency {
        let _ = writeln!(
            md,
            "| {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | **{:.2}×** | **{:.2}×** |",
            l.scan_type,
            l.service.median,
            l.service.p95,
            l.probe.median,
            l.probe.p95,
            l.ssh.median,
            l.ssh.p95,
            l.service.median / l.ssh.median,
            l.probe.median / l.ssh.median
        );
    }

    let t = &throughput;
    let _ = writeln!(
        md,
        "\n## 2. Throughput\n\n{} quick scans submitted at once over {} targets; hostscan with `--workers {}`, OpenSSH with {} clients at a time.\n\n\
         | | scans/s | CPU s per scan (own) | CPU s per scan (machine) | peak RSS |\n|---|---|---|---|---|\n\
         | hostscan | {:.1} | {:.4} | {:.4} | {:.1} MiB |\n\
         | parallel OpenSSH clients | {:.1} | – | {:.4} | – |\n\
         | **hostscan / OpenSSH** | **{:.2}×** | | **{:.2}×** | |\n",
        t.scans,
        t.targets,
        t.concurrency,
        t.concurrency,
        t.hostscan_per_sec,
        t.hostscan_cpu_per_scan,
        t.hostscan_machine_cpu_per_scan,
        t.hostscan_peak_rss_kib as f64 / 1024.0,
        t.ssh_per_sec,
        t.ssh_machine_cpu_per_scan,
        t.hostscan_per_sec / t.ssh_per_sec,
        t.hostscan_machine_cpu_per_scan / t.ssh_machine_cpu_per_scan,
    );
    let _ = writeln!(
        md,
        "**Throughput, hostscan / parallel OpenSSH clients: {:.2}×** (issue 12's goal: ≥ 0.95×).\n",
        t.hostscan_per_sec / t.ssh_per_sec
    );
    if t.failed > 0 {
        let _ = writeln!(md, "{} hostscan scans did not complete.\n", t.failed);
    }
    match &t.ansible {
        Ok((hosts_per_sec, hosts)) => {
            let _ = writeln!(
                md,
                "Ansible (`ansible all -f {hosts} -m setup`, ansible-core from PyPI, median of 3 runs): **{hosts_per_sec:.1} hosts/s**, against hostscan's {:.1} quick scans/s ({:.1}×; `setup` gathers more facts than a quick scan).\n",
                t.hostscan_per_sec,
                t.hostscan_per_sec / hosts_per_sec
            );
        }
        Err(why) => {
            let _ = writeln!(md, "Ansible: not measured ({why}).\n");
        }
    }

    let _ = writeln!(
        md,
        "## 3. Fan-out\n\nOne quick scan watched by N concurrent WatchScan streams (100 per HTTP/2 connection), all subscribed before the scan starts. Delay: from the worker's publish (the event's `time`) to the watcher's receive, over every event of every watcher.\n\n| watchers | events each | every watcher got every event | delay p50 / p99 ms | server memory per watcher | server peak RSS | CPU µs per delivery: server / watchers |\n|---|---|---|---|---|---|---|"
    );
    for f in &fanouts {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.1} / {:.1} | {:.1} KiB | {:.1} MiB | {:.1} / {:.1} |",
            f.watchers,
            f.events,
            if f.complete { "yes" } else { "**no**" },
            f.delay.median,
            f.delay.p99,
            f.kib_per_watcher,
            f.peak_rss_kib as f64 / 1024.0,
            f.server_us_per_delivery,
            f.client_us_per_delivery
        );
    }

    let _ = writeln!(
        md,
        "\n## 4. API path\n\n{} concurrent clients over 4 connections for {} s each; StartScan targets a refused port, so workers fail those scans quickly while the load runs.\n\n| RPC | requests/s | p50 ms | p99 ms |\n|---|---|---|---|\n| StartScan | {:.0} | {:.2} | {:.2} |\n| GetScan | {:.0} | {:.2} | {:.2} |\n",
        api.clients,
        plan.api_seconds,
        api.start.0,
        api.start.1.median,
        api.start.1.p99,
        api.get.0,
        api.get.1.median,
        api.get.1.p99
    );
    let _ = writeln!(
        md,
        "## 5. Footprint\n\n| | |\n|---|---|\n| server RSS, idle | {:.1} MiB |\n| server peak RSS, throughput | {:.1} MiB |\n{}| binary size | {:.1} MiB |\n",
        idle as f64 / 1024.0,
        t.hostscan_peak_rss_kib as f64 / 1024.0,
        fanouts
            .iter()
            .map(|f| format!(
                "| server peak RSS, {} watchers | {:.1} MiB |\n",
                f.watchers,
                f.peak_rss_kib as f64 / 1024.0
            ))
            .collect::<String>(),
        binary_size as f64 / 1024.0 / 1024.0
    );
    md.push_str(&tls_section(&tls, &plan));
    md.push('\n');
    md.push_str(&wan_sections.await);
    md.push('\n');
    md.push_str(&target::section(&target_cost));
    md.push('\n');
    md.push_str(&backends::sections(&plan).await);
    if !plan.smoke {
        // The hand-written reading of the numbers (benches/ANALYSIS.md).
        md.push_str(include_str!("ANALYSIS.md"));
    }
    Ok(md)
}
