//! Section 9, what a scan costs the host it scans: the processes it starts
//! there, by kind, and the CPU time they and sshd spend, for `hostscan probe`
//! next to the OpenSSH client doing the same commands.
//!
//! The target is an sshd of its own, started as PID 1 of a new PID namespace
//! (`unshare --pid`) inside a new cgroup v2. Everything a connection costs
//! the host (the listener's fork, sshd's session processes, shells, `timeout`s
//! and the commands) runs in that cgroup, so its `cpu.stat` `usage_usec` is
//! the target's CPU time, and BSD process accounting switched on *inside the
//! namespace* (`nsenter --pid accton FILE`) writes one acct v3 record per
//! process of that namespace and nothing else: other work on the machine
//! (builds, other benchmarks, another `accton`) neither shows up nor is
//! disturbed. A process that outlives its scan is waited for (with a
//! deadline) before the next run, so each run's records and CPU are its own.
//!
//! Tools compared, interleaved run by run:
//! - `hostscan probe` (the engine as it is);
//! - ssh (a): `ssh host "$command_line" < script` from `combined_script`, the driver script
//!   the engine runs, as the other sections run it;
//! - ssh (b): `ssh host '<the step scripts>'`, one login shell running the
//!   steps' scripts one after the other with no per-step wrapper: each script
//!   becomes the engine's own shell function for it (`scan::as_function`: its
//!   `exit` a `return`, its variables unset before it runs), followed by an
//!   `echo` of its status, both builtins.
//!
//! Needs root (cgroups, namespaces, accounting) and `accton` (Debian `acct`).
//! Without them the section says why; under `CI=true` that is a failure.
//! Everything created (cgroup, namespace, files) is removed on every path:
//! the namespace dies with its PID 1, which takes its accounting with it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::support::{self, sshd::Keys};
use super::{Targets, bench_user, script_file, ssh_command};
use hostscan::model::ScanType;

/// How long a target may keep running processes after its client exited.
const SETTLE: Duration = Duration::from_secs(15);

// ------------------------------------------------------------ cgroup v2

/// Where the cgroup v2 hierarchy is mounted: `/sys/fs/cgroup` on a unified
/// machine, `/sys/fs/cgroup/unified` on a hybrid one.
fn cgroup2_root() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let point = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(point))
    })
}

/// A cgroup of our own; killed, emptied and removed on drop.
struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    fn create() -> Result<Self, String> {
        let root = cgroup2_root().ok_or("no cgroup v2 hierarchy is mounted")?;
        let path = root.join(format!(
            "hostscan-bench-target-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_micros()
        ));
        std::fs::create_dir(&path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        Ok(Self { path })
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path.join(file)).unwrap_or_default()
    }

    /// CPU time (user + system) of everything that ran in it, in µs.
    fn usage_usec(&self) -> u64 {
        self.read("cpu.stat")
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse().ok())
            .unwrap_or(0)
    }

    fn procs(&self) -> Vec<u32> {
        self.read("cgroup.procs")
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let procs = self.procs();
            if procs.is_empty() || Instant::now() > deadline {
                break;
            }
            // cgroup.kill (Linux 5.14+) ends them all at once; else one by one.
            if std::fs::write(self.path.join("cgroup.kill"), "1").is_err() {
                for pid in procs {
                    std::process::Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .stderr(Stdio::null())
                        .status()
                        .ok();
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Err(e) = std::fs::remove_dir(&self.path) {
            eprintln!("bench: could not remove {}: {e}", self.path.display());
        }
    }
}

// --------------------------------------------------- process accounting

/// One acct v3 record (`struct acct_v3`, <linux/acct.h>, 64 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    /// AFORK: forked and never exec'd (a subshell, sshd's privsep child).
    forked: bool,
    /// In the namespace of the accounting; 0 for a process entered from
    /// outside (`nsenter`'s `accton`).
    ppid: u32,
    comm: String,
}

const RECORD: usize = 64;
const AFORK: u8 = 0x01;
const ACCT_VERSION: u8 = 3;

/// Parses whole records: ac_flag u8, ac_version u8, ac_tty u16,
/// ac_exitcode u32, ac_uid u32, ac_gid u32, ac_pid u32, ac_ppid u32,
/// ac_btime u32, ac_etime f32, 8 × comp_t, ac_comm [u8; 16].
fn parse_records(bytes: &[u8]) -> Result<Vec<Record>, String> {
    let u32_at = |r: &[u8], at: usize| {
        u32::from_ne_bytes(r[at..at + 4].try_into().expect("4 bytes in a record"))
    };
    bytes
        .chunks_exact(RECORD)
        .map(|r| {
            // Big-endian kernels set the top bit (ACCT_BYTEORDER).
            if r[1] & 0x7f != ACCT_VERSION {
                return Err(format!(
                    "process accounting writes version {} records, not v3 (CONFIG_BSD_PROCESS_ACCT_V3)",
                    r[1] & 0x7f
                ));
            }
            let comm = &r[48..64];
            let end = comm.iter().position(|b| *b == 0).unwrap_or(comm.len());
            Ok(Record {
                forked: r[0] & AFORK != 0,
                ppid: u32_at(r, 20),
                comm: String::from_utf8_lossy(&comm[..end]).into_owned(),
            })
        })
        .collect()
}

/// Accounting of one PID namespace into a file; read run by run.
struct Accounting {
    file: PathBuf,
    ns_pid: u32,
    /// Bytes of `file` already taken.
    offset: usize,
}

impl Accounting {
    fn accton(ns_pid: u32, arg: &Path) -> Result<(), String> {
        let out = std::process::Command::new("nsenter")
            .args(["--target", &ns_pid.to_string(), "--pid", "--", "accton"])
            .arg(arg)
            .output()
            .map_err(|e| format!("nsenter … accton: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "accton {} in the target's PID namespace: {}",
                arg.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn start(ns_pid: u32, file: PathBuf) -> Result<Self, String> {
        std::fs::write(&file, b"").map_err(|e| format!("{}: {e}", file.display()))?;
        Self::accton(ns_pid, &file)?;
        Ok(Self {
            file,
            ns_pid,
            offset: 0,
        })
    }

    /// The records written since the last call, less `accton`'s own.
    fn take(&mut self) -> Vec<Record> {
        let bytes = std::fs::read(&self.file).expect("read the accounting file");
        let whole = bytes.len() / RECORD * RECORD;
        let new = &bytes[self.offset.min(whole)..whole];
        self.offset = whole;
        parse_records(new)
            .expect("acct v3 records")
            .into_iter()
            .filter(|r| r.ppid != 0)
            .collect()
    }
}

impl Drop for Accounting {
    fn drop(&mut self) {
        // The namespace's end stops it too; this is the orderly way.
        Self::accton(self.ns_pid, Path::new("off")).ok();
    }
}

// ------------------------------------------------------------- the target

/// An sshd as PID 1 of its own PID namespace, in its own cgroup.
struct Target {
    port: u16,
    /// The sshd's PID outside its namespace.
    pid: u32,
    process: Option<support::Tied>,
    cgroup: Cgroup,
    dir: tempfile::TempDir,
}

impl Target {
    async fn start(keys: &Keys) -> Result<Self, String> {
        let cgroup = Cgroup::create()?;
        let dir = support::temp_dir("hostscan-bench-target-");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let port = support::free_port();
        let authorized = dir.path().join("authorized_keys");
        std::fs::copy(keys.client.with_extension("pub"), &authorized).map_err(|e| e.to_string())?;
        let home = dir.path().join("home");
        std::fs::create_dir(&home).map_err(|e| e.to_string())?;
        // The same server settings as the other sections' targets
        // (tests/it/support/sshd.rs).
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {auth}\n\
             PidFile none\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nMaxSessions 10\nMaxStartups 200:30:400\n\
             LogLevel FATAL\nSetEnv HOME={home}\n",
            host = keys.host.display(),
            auth = authorized.display(),
            home = home.display(),
        );
        let config_path = dir.path().join("sshd_config");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        std::fs::create_dir_all("/run/sshd").map_err(|e| e.to_string())?;
        // PID 1 of the namespace joins the cgroup, then becomes sshd; it gets
        // a TERM when `unshare` dies (--kill-child), and the namespace dies
        // with it. `unshare --fork` blocks TERM while it waits for its child,
        // so it is stopped with KILL.
        let command = format!(
            "unshare --pid --fork --kill-child=TERM /bin/sh -c \
             'echo 0 > {procs} && exec /usr/sbin/sshd -D -e -f {config} 2>>{log}'",
            procs = cgroup.path.join("cgroup.procs").display(),
            config = config_path.display(),
            log = dir.path().join("sshd.log").display(),
        );
        let mut target = Self {
            port,
            pid: 0,
            process: Some(support::Tied::spawn("target sshd", &command, "KILL", "")),
            cgroup,
            dir,
        };
        let started = Instant::now();
        loop {
            let procs = target.cgroup.procs();
            let comm = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm"));
            if let [pid] = procs[..]
                && comm(pid).is_ok_and(|c| c.trim() == "sshd")
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            {
                target.pid = pid;
                return Ok(target);
            }
            if started.elapsed() > Duration::from_secs(20) {
                return Err(format!(
                    "the namespaced target sshd did not start: {}",
                    std::fs::read_to_string(target.dir.path().join("sshd.log"))
                        .unwrap_or_default()
                        .trim()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until only the listening sshd is left in the cgroup.
    async fn settle(&self) {
        let started = Instant::now();
        loop {
            let procs = self.cgroup.procs();
            if procs == [self.pid] {
                return;
            }
            assert!(
                started.elapsed() < SETTLE,
                "target processes still running {SETTLE:?} after their client exited: {:?}",
                procs
                    .iter()
                    .map(|p| std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                        .unwrap_or_default()
                        .replace('\0', " "))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // sshd first (its namespace goes with it): TERM, and wait for it, so
        // that `unshare` ends on its own (KILLing it is the fall-back, and
        // the wrapper then reports "Killed"). Then the cgroup's drop kills
        // whatever is left and removes it.
        if self.pid != 0 {
            std::process::Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .stderr(Stdio::null())
                .status()
                .ok();
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.cgroup.procs().contains(&self.pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        drop(self.process.take());
    }
}

// ------------------------------------------------ ssh (b): one plain shell

/// The marker ssh (b) echoes after each step, with its status.
const DONE: &str = "@@hostscan-bench-step";

/// ssh (b)'s remote command: the steps of `scan_type` in one shell.
fn single_shell_script(scan_type: ScanType) -> String {
    let mut s = String::from("LC_ALL=C LANG=C; export LC_ALL LANG\n");
    for step in hostscan::scan::plan(scan_type) {
        // The engine's own function for the step (`hs_<name>`), unmarked.
        s.push_str(&hostscan::scan::as_function(step));
        let _ = writeln!(s, "hs_{0} </dev/null; echo \"{DONE} {0} $?\"", step.name);
    }
    s
}

/// Each step's status as ssh (b) printed it.
fn step_statuses(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| {
            let (name, status) = l.strip_prefix(DONE)?.trim().split_once(' ')?;
            Some((name.to_string(), status.to_string()))
        })
        .collect()
}

/// The status of each step's script run alone (`sh -c`), here: ssh (b)
/// must end every step the same way, or its rewriting changed what it does.
fn statuses_alone(scan_type: ScanType) -> BTreeMap<String, String> {
    hostscan::scan::plan(scan_type)
        .map(|step| {
            let status = std::process::Command::new("/bin/sh")
                .args(["-c", step.script])
                .env("LC_ALL", "C")
                .env("LANG", "C")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("sh");
            (
                step.name.to_string(),
                status.code().map_or("signal".into(), |c| c.to_string()),
            )
        })
        .collect()
}

/// ssh (b): the same client options as `ssh_command`, the script as the
/// remote command, no stdin.
fn ssh_plain(targets: &Targets, port: u16, script: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("ssh");
    c.args(["-F", "/dev/null", "-o", "BatchMode=yes"])
        .args(["-o", "KexAlgorithms=curve25519-sha256", "-o"])
        .arg(format!(
            "UserKnownHostsFile={}",
            targets.known_hosts.display()
        ))
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR"])
        .arg("-i")
        .arg(&targets.keys.client)
        .args(["-p", &port.to_string()])
        .arg(format!("{}@127.0.0.1", targets.user))
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    c
}

// ------------------------------------------------------------- counting

/// What kind of process a record is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Sshd,
    Shell,
    Timeout,
    Command,
}

fn kind(comm: &str) -> Kind {
    match comm {
        c if c.starts_with("sshd") => Kind::Sshd,
        "sh" | "dash" | "bash" => Kind::Shell,
        "timeout" => Kind::Timeout,
        _ => Kind::Command,
    }
}

/// Sums over the runs of one tool and scan type.
#[derive(Default, Clone)]
pub struct Cost {
    runs: usize,
    kinds: BTreeMap<Kind, usize>,
    /// Shells that forked and never exec'd: subshells.
    subshells: usize,
    /// Processes by command name.
    comms: BTreeMap<String, usize>,
    cpu_usec: u64,
}

impl Cost {
    fn add(&mut self, records: &[Record], cpu_usec: u64) {
        self.runs += 1;
        self.cpu_usec += cpu_usec;
        for r in records {
            let k = kind(&r.comm);
            *self.kinds.entry(k).or_default() += 1;
            self.subshells += usize::from(k == Kind::Shell && r.forked);
            *self.comms.entry(r.comm.clone()).or_default() += 1;
        }
    }

    fn per_run(&self, n: usize) -> f64 {
        n as f64 / self.runs.max(1) as f64
    }

    fn of(&self, k: Kind) -> f64 {
        self.per_run(self.kinds.get(&k).copied().unwrap_or(0))
    }

    pub fn total(&self) -> f64 {
        self.per_run(self.kinds.values().sum())
    }

    pub fn cpu_ms(&self) -> f64 {
        self.cpu_usec as f64 / 1000.0 / self.runs.max(1) as f64
    }
}

/// One scan type's costs, per tool.
pub struct PerScan {
    pub scan_type: ScanType,
    pub hostscan: Cost,
    pub ssh_driver: Cost,
    pub ssh_plain: Cost,
}

pub struct TargetCost {
    pub runs: usize,
    pub user: String,
    pub scans: Vec<PerScan>,
}

/// Measures, or says why it could not (root, tools); under `CI=true` a
/// reason not to measure is a failure.
pub async fn target_cost(runs: usize) -> Result<TargetCost, String> {
    let outcome = measure(runs).await;
    if let Err(why) = &outcome
        && std::env::var("CI").is_ok_and(|v| v == "true")
    {
        panic!("target cost: {why}");
    }
    outcome
}

fn on_path(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

async fn measure(runs: usize) -> Result<TargetCost, String> {
    if !support::is_root() {
        return Err("needs root: a cgroup, a PID namespace and process accounting".into());
    }
    for (tool, package) in [
        ("accton", "acct"),
        ("nsenter", "util-linux"),
        ("unshare", "util-linux"),
    ] {
        if !on_path(tool) {
            return Err(format!(
                "`{tool}` is missing: install {package} (scripts/setup-debian --test)"
            ));
        }
    }
    let keys = Keys::generate();
    let target = Target::start(&keys).await?;
    let port = target.port;
    let dir = support::temp_dir("hostscan-bench-");
    let known_hosts = dir.path().join("known_hosts");
    let public = std::fs::read_to_string(keys.host.with_extension("pub")).expect("host pub");
    let mut fields = public.split_whitespace();
    std::fs::write(
        &known_hosts,
        format!(
            "{} {} {}\n",
            hostscan::ssh::known_hosts::host_port_name("127.0.0.1", port),
            fields.next().unwrap_or_default(),
            fields.next().unwrap_or_default()
        ),
    )
    .expect("known_hosts");
    let probe_known = dir.path().join("probe_known_hosts");
    std::fs::copy(&known_hosts, &probe_known).expect("copy known_hosts");
    let targets = Targets {
        keys,
        user: bench_user(),
        sshds: Vec::new(),
        known_hosts,
        _dir: dir,
    };
    let mut accounting = Accounting::start(target.pid, target.dir.path().join("pacct"))?;

    let mut scans = Vec::new();
    for scan_type in [ScanType::Quick, ScanType::Full] {
        let driver = script_file(targets._dir.path(), scan_type);
        let plain = single_shell_script(scan_type);
        let alone = statuses_alone(scan_type);
        let mut costs = [Cost::default(), Cost::default(), Cost::default()];
        // One warm-up round (page caches), then `runs` measured, interleaved.
        for round in 0..=runs {
            for (tool, cost) in costs.iter_mut().enumerate() {
                let cpu0 = target.cgroup.usage_usec();
                match tool {
                    0 => {
                        let status = super::probe_command(&targets, port, &probe_known, scan_type)
                            .status()
                            .await
                            .expect("probe");
                        assert!(status.success(), "hostscan probe failed: {status}");
                    }
                    1 => {
                        let status = ssh_command(&targets, port, &driver)
                            .status()
                            .await
                            .expect("ssh");
                        assert!(status.success(), "ssh (a) failed: {status}");
                    }
                    _ => {
                        let out = ssh_plain(&targets, port, &plain)
                            .output()
                            .await
                            .expect("ssh");
                        assert!(out.status.success(), "ssh (b) failed: {}", out.status);
                        let statuses = step_statuses(&String::from_utf8_lossy(&out.stdout));
                        assert_eq!(
                            statuses, alone,
                            "ssh (b) must end each step as the step's script alone does"
                        );
                    }
                }
                target.settle().await;
                let cpu = target.cgroup.usage_usec().saturating_sub(cpu0);
                let records = accounting.take();
                assert!(
                    records.iter().any(|r| kind(&r.comm) == Kind::Sshd),
                    "no sshd process was accounted for a scan: is process accounting working? {records:?}"
                );
                if round > 0 {
                    cost.add(&records, cpu);
                }
            }
        }
        let [hostscan, ssh_driver, ssh_plain] = costs;
        scans.push(PerScan {
            scan_type,
            hostscan,
            ssh_driver,
            ssh_plain,
        });
    }
    drop(accounting);
    drop(target);
    Ok(TargetCost {
        runs,
        user: targets.user.clone(),
        scans,
    })
}

// ---------------------------------------------------------------- report

fn ratio(a: f64, b: f64) -> f64 {
    a / b.max(f64::EPSILON)
}

/// The commands whose counts differ between `a` and `b`, per run.
fn differences(a: &Cost, b: &Cost) -> String {
    let mut names: Vec<&String> = a.comms.keys().chain(b.comms.keys()).collect();
    names.sort();
    names.dedup();
    let mut out: Vec<String> = names
        .into_iter()
        .filter_map(|n| {
            let d = a.per_run(a.comms.get(n).copied().unwrap_or(0))
                - b.per_run(b.comms.get(n).copied().unwrap_or(0));
            (d.abs() >= 0.05).then(|| format!("`{n}` {d:+.1}"))
        })
        .collect();
    if out.is_empty() {
        out.push("none".into());
    }
    out.join(", ")
}

pub fn section(cost: &Result<TargetCost, String>) -> String {
    let mut md = String::from("## 9. Cost on the target\n\n");
    let c = match cost {
        Ok(c) => c,
        Err(why) => {
            let _ = writeln!(md, "Not measured: {why}.\n");
            return md;
        }
    };
    let _ = writeln!(
        md,
        "What one scan costs the host it scans, averaged over {} runs of each tool after a warm-up round, interleaved. The target is an sshd of its own, PID 1 of a new PID namespace inside a new cgroup v2, logging in `{}`. **Processes**: BSD process accounting switched on inside that namespace only (acct v3 records, one per process that ran: forks and execs alike), by command name: sshd's own (listener fork, privilege separation, session), shells (`sh`/`dash`/`bash`, in brackets those that forked and never exec'd: subshells), `timeout`, and everything else (the commands). **CPU**: the cgroup's `cpu.stat` `usage_usec` (user + system of sshd and all it started), each run waited out until only the listener is left.\n\n\
         Tools: `hostscan probe`; ssh (a) `ssh host \"$command_line\" < driver script` (`hostscan::scan::combined_script`), the engine's own driver script as the other sections run it; ssh (b) `ssh host '<the step scripts>'`, one login shell running each step's script as a shell function with no per-step wrapper (the plain single-shell form; its per-step status is checked against each script run alone). Goals (issue 12): a quick scan starts no more processes than ssh (b) (ratio ≤ 1.00×) and costs ≤ 1.10× its target CPU.\n",
        c.runs, c.user
    );
    let _ = writeln!(
        md,
        "| scan | tool | sshd | shells (subshells) | `timeout` | commands | **total processes** | target CPU ms |\n|---|---|---|---|---|---|---|---|"
    );
    for s in &c.scans {
        for (name, k) in [
            ("hostscan probe", &s.hostscan),
            ("ssh (a), driver script", &s.ssh_driver),
            ("ssh (b), one plain shell", &s.ssh_plain),
        ] {
            let _ = writeln!(
                md,
                "| {} | {name} | {:.1} | {:.1} ({:.1}) | {:.1} | {:.1} | **{:.1}** | {:.2} |",
                s.scan_type,
                k.of(Kind::Sshd),
                k.of(Kind::Shell),
                k.per_run(k.subshells),
                k.of(Kind::Timeout),
                k.of(Kind::Command),
                k.total(),
                k.cpu_ms()
            );
        }
    }
    let _ = writeln!(
        md,
        "\n| scan | processes hostscan / ssh (b) | target CPU hostscan / ssh (b) | processes hostscan / ssh (a) | target CPU hostscan / ssh (a) |\n|---|---|---|---|---|"
    );
    for s in &c.scans {
        let goal = |v: f64, limit: f64| {
            if s.scan_type != ScanType::Quick {
                String::new()
            } else if v <= limit + 1e-9 {
                format!(" (goal ≤ {limit:.2}×: met)")
            } else {
                format!(" (goal ≤ {limit:.2}×: **not met**)")
            }
        };
        let procs = ratio(s.hostscan.total(), s.ssh_plain.total());
        let cpu = ratio(s.hostscan.cpu_ms(), s.ssh_plain.cpu_ms());
        let _ = writeln!(
            md,
            "| {} | **{procs:.2}×**{} | **{cpu:.2}×**{} | {:.2}× | {:.2}× |",
            s.scan_type,
            goal(procs, 1.0),
            goal(cpu, 1.1),
            ratio(s.hostscan.total(), s.ssh_driver.total()),
            ratio(s.hostscan.cpu_ms(), s.ssh_driver.cpu_ms()),
        );
    }
    let _ = writeln!(
        md,
        "\nProcesses per run that hostscan starts beyond ssh (b), by command name:\n"
    );
    for s in &c.scans {
        let _ = writeln!(
            md,
            "- {}: {}",
            s.scan_type,
            differences(&s.hostscan, &s.ssh_plain)
        );
    }
    md.push('\n');
    md
}
