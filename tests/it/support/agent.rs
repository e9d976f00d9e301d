//! A real OpenSSH `ssh-agent` on a socket in a temp dir, and `ssh-add` to
//! load it. Stopped (and its socket removed) on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{Tied, eventually, temp_dir};

pub struct SshAgent {
    pub socket: PathBuf,
    _process: Tied,
    _dir: tempfile::TempDir,
}

impl SshAgent {
    pub async fn start() -> Self {
        let found = Command::new("sh")
            .args(["-c", "command -v ssh-agent && command -v ssh-add"])
            .output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "ssh-agent/ssh-add not found: install openssh-client (see .ci/run)"
        );
        let dir = temp_dir("hostscan-agent-");
        let socket = dir.path().join("agent.sock");
        let process = Tied::spawn(
            "ssh-agent",
            &format!("ssh-agent -D -a {}", socket.display()),
            "TERM",
            "",
        );
        let probe = socket.clone();
        eventually("ssh-agent to listen", Duration::from_secs(10), || {
            let probe = probe.clone();
            async move { probe.exists().then_some(()) }
        })
        .await;
        Self {
            socket,
            _process: process,
            _dir: dir,
        }
    }

    /// `ssh-add KEY` (and `KEY-cert.pub` with it, if present, as ssh-add
    /// does). The key must be unencrypted.
    pub fn add(&self, key: &Path) {
        let out = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &self.socket)
            .output()
            .expect("run ssh-add");
        assert!(
            out.status.success(),
            "ssh-add {}: {}",
            key.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ssh-add -l`: one line per identity.
    pub fn list(&self) -> String {
        let out = Command::new("ssh-add")
            .arg("-l")
            .env("SSH_AUTH_SOCK", &self.socket)
            .output()
            .expect("run ssh-add -l");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
