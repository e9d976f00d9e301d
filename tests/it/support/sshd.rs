//! A real OpenSSH `sshd` on a free 127.0.0.1 port, with a generated host key
//! and an authorized client key, logging in as the current user.
//!
//! `Userland` builds a directory put first on the session's PATH (sshd's
//! `SetEnv`), to run the scan against busybox tools or hostile fakes.

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hostscan::ssh::hostkey::{KnownHostsPins, PinStore};
use hostscan::ssh::{ClientKey, ConnectOptions, HostKeyPolicy, HostKeyVerifier, Target};

use super::{Tied, current_user, eventually, free_port, is_root, run, temp_dir, write_executable};

/// Keys shared by the sshd instances of a test: one client key they all
/// authorize, and a host key.
pub struct Keys {
    pub dir: tempfile::TempDir,
    pub client: PathBuf,
    pub host: PathBuf,
}

impl Keys {
    pub fn generate() -> Self {
        let dir = temp_dir("hostscan-keys-");
        let client = dir.path().join("client_ed25519");
        let host = dir.path().join("host_ed25519");
        keygen(&client, "ed25519");
        keygen(&host, "ed25519");
        Self { dir, client, host }
    }

    /// Another key of type `kind` (ed25519, ecdsa, rsa) in the same dir.
    pub fn extra(&self, name: &str, kind: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        keygen(&path, kind);
        path
    }
}

pub fn keygen(path: &Path, kind: &str) {
    let path = path.to_str().expect("utf-8 path");
    let mut args = vec!["-q", "-t", kind, "-N", "", "-f", path];
    if kind == "rsa" {
        args.extend(["-b", "2048"]);
    }
    run("ssh-keygen", &args);
}

/// A key encrypted with `passphrase`: `format` is ssh-keygen's `-m`
/// (None for the OpenSSH format, "PEM", "PKCS8").
pub fn keygen_encrypted(path: &Path, kind: &str, passphrase: &str, format: Option<&str>) {
    let p = path.to_str().expect("utf-8 path");
    let mut args = vec!["-q", "-t", kind, "-N", passphrase, "-f", p];
    if let Some(f) = format {
        args.extend(["-m", f]);
    }
    if kind == "rsa" {
        args.extend(["-b", "2048"]);
    }
    run("ssh-keygen", &args);
}

/// Signs `key`'s public half with the CA key `ca`: a user certificate
/// (`host` false) or a host certificate, for `principals`, valid over
/// `validity` (ssh-keygen -V, e.g. "-5m:+1h"; None: forever). Writes and
/// returns `KEY-cert.pub`.
pub fn sign(
    ca: &Path,
    key: &Path,
    host: bool,
    principals: &str,
    validity: Option<&str>,
) -> PathBuf {
    let public = key.with_extension("pub");
    let mut args = vec![
        "-q",
        "-s",
        ca.to_str().expect("utf-8"),
        "-I",
        "hostscan-test",
        "-n",
        principals,
    ];
    if host {
        args.push("-h");
    }
    if let Some(v) = validity {
        args.extend(["-V", v]);
    }
    args.push(public.to_str().expect("utf-8"));
    run("ssh-keygen", &args);
    let mut cert = key.as_os_str().to_owned();
    cert.push("-cert.pub");
    PathBuf::from(cert)
}

/// What the sshd should look like.
#[derive(Default)]
pub struct Options {
    /// Directory put first on the session PATH.
    pub path_first: Option<PathBuf>,
    /// Use this host key instead of the shared one.
    pub host_key: Option<PathBuf>,
    /// Listen on this port instead of a free one (to restart "the same host").
    pub port: Option<u16>,
    /// Public keys authorized besides the client key.
    pub also_authorize: Vec<PathBuf>,
    /// Do not authorize the shared client key.
    pub no_client_key: bool,
    /// Run inside a network namespace with its own host name.
    pub netns: Option<InNetns>,
    /// More sshd_config lines (HostCertificate, TrustedUserCAKeys, ...).
    pub extra_config: Vec<String>,
    /// With `netns`: run the sshd in a private mount namespace too, after
    /// this constant-shaped sh fragment of the test's own (bind mounts of
    /// its temp dirs); the mounts vanish with the sshd and its sessions.
    pub mount_setup: Option<String>,
}

/// Where a namespaced sshd runs: `ip netns exec NS unshare --uts`, with
/// `hostname` set inside, listening on every address of the namespace;
/// `address` is the one tests dial.
pub struct InNetns {
    pub ns: String,
    pub hostname: String,
    pub address: String,
}

pub struct Sshd {
    /// The address tests dial (127.0.0.1, or the namespace's).
    pub host: String,
    pub port: u16,
    pub user: String,
    pub host_key: PathBuf,
    /// Set in every session's environment (`HOSTSCAN_TEST_SSHD`), so the
    /// commands this sshd started can be found and killed when it stops.
    marker: String,
    _dir: tempfile::TempDir,
    process: Tied,
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A value for `HOSTSCAN_TEST_SSHD` no other sshd of any test process has.
fn next_marker() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Processes whose environment holds `HOSTSCAN_TEST_SSHD=<marker>`.
fn marked_processes(marker: &str) -> Vec<u32> {
    let wanted = format!("HOSTSCAN_TEST_SSHD={marker}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == wanted.as_bytes()))
        })
        .collect()
}

impl Drop for Sshd {
    /// Stops sshd, then ends what its sessions left running (a hanging
    /// `df` fake, a `sleep`) and checks that nothing is left. TERM first:
    /// a login shell killed outright in its start-up files can leave their
    /// locks behind (pyenv's rehash lock stalls every later login).
    fn drop(&mut self) {
        self.process.stop();
        let signal = |name: &str, pids: &[u32]| {
            for pid in pids {
                std::process::Command::new("kill")
                    .args([&format!("-{name}"), &pid.to_string()])
                    .stderr(std::process::Stdio::null())
                    .status()
                    .ok();
            }
        };
        let start = std::time::Instant::now();
        let mut signalled = None;
        loop {
            let left = marked_processes(&self.marker);
            if left.is_empty() {
                return;
            }
            let elapsed = start.elapsed();
            if elapsed > Duration::from_secs(10) {
                if !std::thread::panicking() {
                    panic!("processes of the test sshd survived SIGKILL: {left:?}");
                }
                return;
            }
            let next = if elapsed > Duration::from_secs(3) {
                "KILL"
            } else {
                "TERM"
            };
            if signalled != Some(next) {
                signal(next, &left);
                signalled = Some(next);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn sshd_binary() -> &'static str {
    if Path::new("/usr/sbin/sshd").exists() {
        "/usr/sbin/sshd"
    } else {
        panic!("OpenSSH sshd not found at /usr/sbin/sshd: install openssh-server (see .ci/run)")
    }
}

impl Sshd {
    pub async fn start(keys: &Keys, options: Options) -> Self {
        let dir = temp_dir("hostscan-sshd-");
        // sshd reads authorized_keys as the login user, who may not be us.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let port = match (&options.port, &options.netns) {
            (Some(p), _) => *p,
            (None, Some(_)) => 22,
            (None, None) => free_port(),
        };
        let host_key = options
            .host_key
            .clone()
            .unwrap_or_else(|| keys.host.clone());
        let authorized = dir.path().join("authorized_keys");
        let mut text = match options.no_client_key {
            true => String::new(),
            false => {
                std::fs::read_to_string(keys.client.with_extension("pub")).expect("client pub")
            }
        };
        for k in &options.also_authorize {
            text.push_str(&std::fs::read_to_string(k.with_extension("pub")).expect("pub"));
        }
        std::fs::write(&authorized, text).expect("authorized_keys");
        let listen = match options.netns {
            Some(_) => "0.0.0.0",
            None => "127.0.0.1",
        };
        // ClientAlive: a session whose client vanished without a word (its
        // network namespace deleted first) ends within ~15 s instead of
        // waiting forever; live clients answer the probes.
        let mut config = format!(
            "Port {port}\n\
             ListenAddress {listen}\n\
             HostKey {host}\n\
             AuthorizedKeysFile {auth}\n\
             PidFile none\n\
             StrictModes no\n\
             UsePAM no\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\n\
             MaxSessions 10\n\
             MaxStartups 200:30:400\n\
             ClientAliveInterval 5\n\
             ClientAliveCountMax 3\n\
             LogLevel FATAL\n",
            host = host_key.display(),
            auth = authorized.display(),
        );
        let marker = next_marker();
        // Sessions get a HOME of their own: the login user's start-up files
        // (root's .bashrc here runs `pyenv init`, whose rehash lock outlives
        // a killed shell and then stalls every login for a minute) are this
        // machine's, not part of the host under test.
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).expect("session home");
        config.push_str(&format!(
            "SetEnv HOSTSCAN_TEST_SSHD={marker} HOME={}",
            home.display()
        ));
        if let Some(first) = &options.path_first {
            config.push_str(&format!(" PATH={}:/usr/bin:/bin", first.display()));
        }
        config.push('\n');
        for line in &options.extra_config {
            config.push_str(line);
            config.push('\n');
        }
        let config_path = dir.path().join("sshd_config");
        std::fs::write(&config_path, config).expect("sshd_config");
        if is_root() {
            std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        }
        // Its log stays in its dir: sshd reports clients that hang up
        // mid-session, which is every cancelled scan.
        let sshd = format!(
            "{} -D -e -f {} 2>>{}",
            sshd_binary(),
            config_path.display(),
            dir.path().join("sshd.log").display()
        );
        let (mut process, host) = match &options.netns {
            None => (
                Tied::spawn("sshd", &sshd, "TERM", ""),
                "127.0.0.1".to_string(),
            ),
            Some(n) => {
                let command = match &options.mount_setup {
                    None => format!(
                        "ip netns exec {ns} unshare --uts sh -c 'hostname {name} && exec {sshd}'",
                        ns = n.ns,
                        name = n.hostname,
                    ),
                    Some(setup) => {
                        let script = dir.path().join("start.sh");
                        std::fs::write(
                            &script,
                            format!("set -e\nhostname {}\n{setup}\nexec {sshd}\n", n.hostname),
                        )
                        .expect("start script");
                        format!(
                            "ip netns exec {ns} unshare --uts --mount --propagation private sh {}",
                            script.display(),
                            ns = n.ns,
                        )
                    }
                };
                (Tied::spawn("sshd", &command, "TERM", ""), n.address.clone())
            }
        };
        match &options.netns {
            None => wait_for_banner(port, &mut process).await,
            // Ready when ssh-keyscan, inside the namespace, gets its key.
            Some(n) => {
                let ns = n.ns.clone();
                eventually(
                    "a namespaced sshd to answer ssh-keyscan",
                    Duration::from_secs(20),
                    || {
                        let ns = ns.clone();
                        assert!(
                            process.is_running(),
                            "the namespaced sshd exited before answering: see its stderr above"
                        );
                        async move {
                            tokio::task::spawn_blocking(move || {
                                let out = super::netns::Lab::command(&ns, "ssh-keyscan")
                                    .args(["-T", "2", "-p", &port.to_string(), "127.0.0.1"])
                                    .output()
                                    .ok()?;
                                (!out.stdout.is_empty()).then_some(())
                            })
                            .await
                            .ok()
                            .flatten()
                        }
                    },
                )
                .await
            }
        }
        Self {
            host,
            port,
            user: current_user(),
            host_key,
            marker,
            _dir: dir,
            process,
        }
    }

    /// An sshd whose sessions find `fakes` (name, sh body) first on PATH.
    /// The returned `Userland` must outlive the sshd's sessions.
    pub async fn with_fakes(keys: &Keys, fakes: &[(&str, &str)]) -> (Self, Userland) {
        let userland = Userland::fakes(fakes);
        let sshd = Self::start(
            keys,
            Options {
                path_first: Some(userland.path()),
                ..Default::default()
            },
        )
        .await;
        (sshd, userland)
    }

    pub fn target(&self) -> Target {
        Target {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
        }
    }

    /// `host:port` as a ProxyJump hop (`user@host:port`).
    pub fn hop(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }

    /// The host key as a known_hosts line for this host and port.
    pub fn known_hosts_line(&self) -> String {
        let public =
            std::fs::read_to_string(self.host_key.with_extension("pub")).expect("host pub");
        let mut fields = public.split_whitespace();
        format!(
            "{} {} {}\n",
            hostscan::ssh::known_hosts::host_port_name(&self.host, self.port),
            fields.next().unwrap_or_default(),
            fields.next().unwrap_or_default()
        )
    }
}

/// Waits until something on 127.0.0.1:`port` sends an SSH banner.
/// Waits for the banner on `port`; fails at once, instead of at the
/// deadline, when `process` exits first (a namespace or chroot that cannot
/// be set up: its error is in the test's stderr above).
async fn wait_for_banner(port: u16, process: &mut Tied) {
    eventually("sshd to send its banner", Duration::from_secs(20), || {
        assert!(
            process.is_running(),
            "sshd exited before sending its banner: see its stderr above"
        );
        async move {
            tokio::task::spawn_blocking(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
                s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                let mut buf = [0u8; 7];
                s.read_exact(&mut buf).ok()?;
                (&buf == b"SSH-2.0").then_some(())
            })
            .await
            .ok()
            .flatten()
        }
    })
    .await;
}

/// Where an sshd in its own mount namespace runs.
pub enum Root<'a> {
    /// This machine's `/`, changed only by the setup's mounts.
    Host,
    /// A Debian tree (debootstrap): its own `/usr/sbin/sshd` runs chrooted
    /// there, with `/proc`, `/dev`, `/sys` and a fresh tmpfs `/run`.
    Chroot(&'a Path),
}

impl Sshd {
    /// An sshd in a private mount namespace (`unshare --mount`), logging in
    /// as root. `setup` is a constant-shaped sh fragment of the test's own
    /// (bind mounts of its temp dirs, files under `/run`) run there first;
    /// its mounts vanish with the namespace when the sshd and its sessions
    /// end. Needs root.
    pub async fn start_namespaced(keys: &Keys, root: Root<'_>, setup: &str) -> Self {
        assert!(
            is_root(),
            "namespaced sshd needs root (unshare --mount, chroot)"
        );
        let tree = match root {
            Root::Host => PathBuf::from("/"),
            Root::Chroot(t) => t.to_path_buf(),
        };
        let dir = tempfile::Builder::new()
            .prefix("hostscan-nssshd-")
            .tempdir_in(tree.join("tmp"))
            .expect("temp dir in the tree");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        // Paths as the sshd sees them.
        let inside = Path::new("/").join(dir.path().strip_prefix(&tree).expect("under the tree"));
        let host_key = dir.path().join("host_ed25519");
        std::fs::copy(&keys.host, &host_key).expect("copy host key");
        std::fs::set_permissions(&host_key, std::fs::Permissions::from_mode(0o600))
            .expect("chmod host key");
        std::fs::copy(
            keys.host.with_extension("pub"),
            host_key.with_extension("pub"),
        )
        .expect("copy host pub");
        std::fs::copy(
            keys.client.with_extension("pub"),
            dir.path().join("authorized_keys"),
        )
        .expect("authorized_keys");
        let port = free_port();
        let marker = next_marker();
        let config = format!(
            "Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {inside}/host_ed25519\n\
             AuthorizedKeysFile {inside}/authorized_keys\n\
             PidFile none\n\
             StrictModes no\n\
             UsePAM no\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\n\
             MaxSessions 10\n\
             ClientAliveInterval 5\n\
             ClientAliveCountMax 3\n\
             LogLevel FATAL\n\
             SetEnv HOSTSCAN_TEST_SSHD={marker}\n",
            inside = inside.display(),
        );
        std::fs::write(dir.path().join("sshd_config"), config).expect("sshd_config");
        let (mounts, exec) = match root {
            Root::Host => (
                "mkdir -p /run/sshd".to_string(),
                String::from("/usr/sbin/sshd"),
            ),
            Root::Chroot(t) => (
                format!(
                    "mount -t proc proc {t}/proc && mount --rbind /dev {t}/dev && \
                     mount --rbind /sys {t}/sys && mount -t tmpfs tmpfs {t}/run && \
                     mkdir -p {t}/run/sshd",
                    t = t.display()
                ),
                format!("chroot {} /usr/sbin/sshd", t.display()),
            ),
        };
        let script = format!(
            "set -e\n{mounts}\n{setup}\nexec {exec} -D -e -f {inside}/sshd_config\n",
            inside = inside.display()
        );
        let script_path = dir.path().join("start.sh");
        std::fs::write(&script_path, script).expect("start script");
        let mut process = Tied::spawn(
            "namespaced sshd",
            &format!(
                "unshare --mount --propagation private sh {}",
                script_path.display()
            ),
            "TERM",
            "",
        );
        wait_for_banner(port, &mut process).await;
        Self {
            host: "127.0.0.1".into(),
            port,
            user: "root".into(),
            host_key,
            marker,
            _dir: dir,
            process,
        }
    }
}

/// Connect options for the engine: `keys` as client keys, a known_hosts file
/// in `known_hosts` (TOFU pins appended there).
pub fn connect_options(
    client_keys: &[PathBuf],
    known_hosts: &Path,
    policy: HostKeyPolicy,
) -> ConnectOptions {
    ConnectOptions::with_keys(
        client_keys
            .iter()
            .map(|p| ClientKey::load(p).expect("client key")),
        HostKeyVerifier {
            policy,
            known_hosts: Some(known_hosts.to_path_buf()),
            pins: Some(
                Arc::new(KnownHostsPins::new(known_hosts.to_path_buf())) as Arc<dyn PinStore>
            ),
            host_key_alias: None,
        },
        Duration::from_secs(10),
        8,
    )
}

/// A directory of commands put first on a session's PATH.
pub struct Userland {
    pub dir: tempfile::TempDir,
}

impl Userland {
    /// Every busybox applet, as symlinks to Debian's busybox.
    pub fn busybox() -> Self {
        let dir = temp_dir("hostscan-busybox-");
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox not found: install the `busybox` package (see .ci/run)");
        for applet in run(busybox, &["--list"]).lines() {
            let applet = applet.trim();
            if applet.is_empty() || applet.contains('/') {
                continue;
            }
            std::os::unix::fs::symlink(busybox, dir.path().join(applet)).expect("symlink");
        }
        Self { dir }
    }

    /// Shell scripts named `name`, shadowing the real commands.
    pub fn fakes(commands: &[(&str, &str)]) -> Self {
        let dir = temp_dir("hostscan-fakes-");
        for (name, body) in commands {
            write_executable(&dir.path().join(name), &format!("#!/bin/sh\n{body}\n"));
        }
        Self { dir }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

/// Options with the test's client key and TOFU pins in a fresh known_hosts
/// file (kept alive by the returned dir).
pub fn tofu_options(keys: &Keys) -> (tempfile::TempDir, ConnectOptions) {
    let dir = temp_dir("hostscan-kh-");
    let opts = connect_options(
        std::slice::from_ref(&keys.client),
        &dir.path().join("known_hosts"),
        HostKeyPolicy::Tofu,
    );
    (dir, opts)
}
