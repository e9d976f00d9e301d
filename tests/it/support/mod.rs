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
