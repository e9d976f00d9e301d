//! OpenSSH's `ProxyCommand`: the first link of a connection made through a
//! local command's stdin and stdout (`ssh -W %h:%p bastion`, `aws ssm
//! start-session …`, `nc -X connect -x proxy:3128 %h %p`).
//!
//! The command comes only from an ssh_config file, which the operator
//! writes; a client can never set one. The values of its tokens do come
//! from the client (the host it asked for), so they are never pasted into
//! the command text: `%h`, `%p`, `%r` and `%n` become the shell's
//! positional parameters `${1}` … `${4}`, and the values are passed as
//! arguments of `/bin/sh -c`, which the shell expands without parsing them
//! again. (Inside single quotes they are not expanded: write `%h`
//! unquoted or in double quotes.) The command runs in a process group of
//! its own, which is killed when the connection ends, without hostscan's
//! own settings in its environment (`HOSTSCAN_*`, `DATABASE_URL`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::SshError;

/// Bytes of the command's stderr kept for an error message (its end).
const STDERR_TAIL: usize = 2048;

/// A ProxyCommand ready to run for one link: the script with its tokens
/// turned into positional parameters, and their values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyCommand {
    /// What `/bin/sh -c` runs (`exec` + the command, tokens as `${1}`…).
    pub script: String,
    /// `%h`: the host name to connect to (after `HostName`).
    pub host: String,
    /// `%p`.
    pub port: u16,
    /// `%r`: the remote user.
    pub user: String,
    /// `%n`: the host as originally given (an alias, before `HostName`).
    pub original: String,
}

/// Turns a ProxyCommand as written into the script `/bin/sh -c` runs:
/// `%h %p %r %n` → `${1} ${2} ${3} ${4}`, `%%` → `%`: the tokens
/// ssh_config(5) allows in ProxyCommand. Any other is an error naming it,
/// as in ssh.
pub fn script(command: &str) -> Result<String, String> {
    let mut out = String::from("exec ");
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str("${1}"),
            Some('p') => out.push_str("${2}"),
            Some('r') => out.push_str("${3}"),
            Some('n') => out.push_str("${4}"),
            Some('%') => out.push('%'),
            Some(other) => {
                return Err(format!(
                    "token %{other} is not supported in ProxyCommand (supported: %h %p %r %n %%)"
                ));
            }
            None => return Err("ends with a lone '%'".into()),
        }
    }
    Ok(out)
}

/// A running ProxyCommand: its process (group) and the end of its stderr.
/// Dropping it kills the group.
pub(super) struct Proxy {
    child: Child,
    stderr: Arc<Mutex<VecDeque<u8>>>,
}

/// The command's stdout and stdin as one stream, for the SSH transport.
pub(super) type Stream = tokio::io::Join<ChildStdout, ChildStdin>;

impl Proxy {
    /// Starts `pc` for `addr` (for messages).
    pub(super) fn spawn(pc: &ProxyCommand, addr: &str) -> Result<(Self, Stream), SshError> {
        let mut command = tokio::process::Command::new("/bin/sh");
        // The server's own secrets (API keys, a database URL with its
        // password) are not the command's business.
        for (name, _) in std::env::vars_os() {
            let name_text = name.to_string_lossy();
            if name_text.starts_with("HOSTSCAN_") || name_text == "DATABASE_URL" {
                command.env_remove(&name);
            }
        }
        let mut child = command
            .arg("-c")
            .arg(&pc.script)
            .arg("hostscan-proxy-command")
            .arg(&pc.host)
            .arg(pc.port.to_string())
            .arg(&pc.user)
            .arg(&pc.original)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| SshError::Unreachable {
                addr: addr.to_string(),
                detail: format!("cannot run the ProxyCommand (/bin/sh): {e}"),
            })?;
        let (Some(stdin), Some(stdout), Some(mut err)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(SshError::Unreachable {
                addr: addr.to_string(),
                detail: "the ProxyCommand has no stdin, stdout or stderr".into(),
            });
        };
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let tail = Arc::clone(&stderr);
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if let Ok(mut t) = tail.lock() {
                    t.extend(&buf[..n]);
                    let excess = t.len().saturating_sub(STDERR_TAIL);
                    t.drain(..excess);
                }
            }
        });
        Ok((Self { child, stderr }, tokio::io::join(stdout, stdin)))
    }

    /// When the command has exited: why the connection through it failed
    /// (its exit status and the last line of its stderr), else `None`.
    pub(super) async fn failure(&mut self, addr: &str) -> Option<SshError> {
        // The transport's end and the command's exit race: give the exit
        // a moment to be seen.
        let status = tokio::time::timeout(std::time::Duration::from_millis(500), self.child.wait())
            .await
            .ok()?
            .ok()?;
        // Let the reader take what the command wrote last.
        tokio::task::yield_now().await;
        let said = self
            .stderr
            .lock()
            .map(|t| {
                let bytes: Vec<u8> = t.iter().copied().collect();
                String::from_utf8_lossy(&bytes)
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(|l| l.trim().chars().take(300).collect::<String>())
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        let how = match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => "was killed by a signal".to_string(),
        };
        Some(SshError::Unreachable {
            addr: addr.to_string(),
            detail: if said.is_empty() {
                format!("the ProxyCommand {how}")
            } else {
                format!("the ProxyCommand {how}: {said}")
            },
        })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The command may have started others (a pipeline, a wrapper):
        // the whole group goes. `kill_on_drop` then reaps the leader.
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::script;

    #[test]
    fn tokens_become_positional_parameters() {
        assert_eq!(
            script("ssh -W %h:%p -l %r bastion # %n 100%%").as_deref(),
            Ok("exec ssh -W ${1}:${2} -l ${3} bastion # ${4} 100%")
        );
        assert!(
            script("nc %C")
                .expect_err("unsupported")
                .contains("token %C is not supported")
        );
        assert!(script("nc %").is_err());
        assert_eq!(script("").as_deref(), Ok("exec "));
    }
}
