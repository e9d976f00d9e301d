//! Test infrastructure: real PostgreSQL, real OpenSSH sshd, the real
//! `hostscan serve` process, and fault servers. Everything listens on
//! 127.0.0.1 only. Background processes die with the test process: each is
//! started under `sh` reading its stdin, which the OS closes when we exit.

#![allow(dead_code)]

pub mod agent;
pub mod db;
pub mod faults;
pub mod netns;
pub mod pg;
pub mod server;
pub mod sshd;
pub mod tls;

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Polls `check` until it returns `Some`, failing the test after `within`.
/// For waiting on state we cannot subscribe to (a port opening, a row
/// changing); the deadline is the failure condition, not a delay.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Runs `program args` and returns stdout; panics with stderr on failure.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (is it installed? see .ci/run)"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A background process tied to this test process: it runs under `sh`,
/// which kills it with `signal` as soon as its stdin pipe closes, that is
/// when `stop` is called, when this value is dropped, or when the test
/// process exits for any reason. `cleanup` runs after it has exited.
pub struct Tied {
    child: Child,
    name: String,
}

impl Tied {
    pub fn spawn(name: &str, command: &str, signal: &str, cleanup: &str) -> Self {
        let wrapper = format!(
            "exec 3<&0\n\
             {command} &\n\
             child=$!\n\
             ( read _unused <&3; kill -{signal} $child 2>/dev/null ) &\n\
             wait $child\n\
             status=$?\n\
             {cleanup}\n\
             exit $status"
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(wrapper)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            child,
            name: name.to_string(),
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the process and waits for it (and its cleanup) to finish.
    pub fn stop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Tied {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh directory under the system temp dir, removed on drop.
/// True for a terminal status (COMPLETED, FAILED, CANCELLED) as it comes
/// over the wire.
pub fn is_terminal(status: i32) -> bool {
    use hostscan::pb::ScanStatus;
    [
        ScanStatus::Completed,
        ScanStatus::Failed,
        ScanStatus::Cancelled,
    ]
    .iter()
    .any(|s| *s as i32 == status)
}

pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir")
}

pub fn is_root() -> bool {
    run("id", &["-u"]).trim() == "0"
}

pub fn current_user() -> String {
    run("id", &["-un"]).trim().to_string()
}

/// First existing path of `candidates`.
pub fn find(candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates.iter().find(|p| p.exists()).cloned()
}

pub fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// The progress a quick or full scan reaches when every step but `df` is
/// done: what a test waits for while its fake `df` hangs.
pub fn percent_before_df(scan_type: hostscan::model::ScanType) -> i32 {
    let weights = hostscan::scan::plan(scan_type).map(|s| (s.name, s.weight));
    let (total, disks) = weights.fold((hostscan::scan::CONNECT_WEIGHT, 0), |(t, d), (n, w)| {
        (t + w, if n == "disks" { w } else { d })
    });
    i32::try_from((total - disks) * 100 / total.max(1)).unwrap_or(100)
}

/// Mount points of the file systems this machine's own `df` reports, read
/// with the disks step's script and parser, sorted. On a machine this is
/// `/` and its other disks; in a bare chroot or some containers `df` lists
/// only pseudo file systems, and this is empty: the scan must agree.
pub fn local_disk_mounts() -> Vec<String> {
    use std::io::Write;
    let mut child = Command::new("/bin/sh")
        .arg("-s")
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(hostscan::scan::parse::disks::SCRIPT.as_bytes())
        .expect("write the disks script");
    let out = child.wait_with_output().expect("the disks script ran");
    let mut mounts: Vec<String> =
        hostscan::scan::parse::disks::parse(&String::from_utf8_lossy(&out.stdout))
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.mount)
            .collect();
    mounts.sort();
    mounts
}

/// Checks a scan's disks against this machine: every file system this
/// machine's `df` reports (`local_disk_mounts`) is there, and every one
/// reported is mounted here (`/proc/self/mounts`). Another userland's `df`
/// may list more (busybox's shows no types, so it cannot leave tmpfs out).
pub fn assert_disks_of_this_machine<'a>(mounts: impl Iterator<Item = &'a str>) {
    let reported: Vec<String> = mounts.map(String::from).collect();
    let mounted = std::fs::read_to_string("/proc/self/mounts").expect("/proc/self/mounts");
    let mounted: Vec<&str> = mounted
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    for local in local_disk_mounts() {
        assert!(
            reported.contains(&local),
            "{local} missing from {reported:?}"
        );
    }
    for m in &reported {
        assert!(
            mounted.contains(&m.as_str()),
            "{m} is not mounted here: {reported:?}"
        );
    }
}
