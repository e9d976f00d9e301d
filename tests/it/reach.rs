//! Reaching hosts the way operators do, against real OpenSSH: jump hosts
//! in network namespaces (a bastion reachable from the tests, an inner host
//! reachable only through it, a third only through both, each with its own
//! host name), ssh_config aliases, a real ssh-agent, encrypted keys, user
//! certificates (sshd `TrustedUserCAKeys`) and host certificates
//! (`@cert-authority`), through `hostscan probe` and through the service.
//!
//! The namespace tests need root (CI runs as root) and say so otherwise.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use hostscan::pb;

use crate::support::agent::SshAgent;
use crate::support::netns::Lab;
use crate::support::pg::TestDb;
use crate::support::server::{BINARY, Client, Server, watch};
use crate::support::sshd::{InNetns, Keys, Options, Sshd, keygen_encrypted, sign};
use crate::support::{eventually, temp_dir};

// ------------------------------------------------------------------ helpers

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `hostscan probe ARGS --json` with stdin not a terminal, no agent unless
/// `env` gives one, and `HOME` in `home` (no default keys or config).
fn probe(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BINARY)
        .arg("probe")
        .args(args)
        .arg("--json")
        .env_remove("SSH_AUTH_SOCK")
        .env("HOME", home)
        .envs(env.iter().copied())
        .output()
        .expect("run hostscan probe")
}

/// The scan JSON of a probe that ran (exit 0 or 1).
fn scan_of(out: &Output) -> serde_json::Value {
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "probe did not run a scan ({:?}):\n{}",
        out.status.code(),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

fn assert_completed_on(scan: &serde_json::Value, hostname: &str) {
    assert_eq!(scan["status"], "SCAN_STATUS_COMPLETED", "{scan:#}");
    assert_eq!(scan["results"]["hostname"], hostname, "{scan:#}");
}

/// Asserts a failed scan of `kind` whose message contains every `needle`.
fn assert_failed(scan: &serde_json::Value, kind: &str, needles: &[&str]) -> String {
    assert_eq!(scan["status"], "SCAN_STATUS_FAILED", "{scan:#}");
    assert_eq!(scan["error"]["kind"], kind, "{scan:#}");
    let message = scan["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    eprintln!("{kind}: {message}");
    for n in needles {
        assert!(message.contains(n), "{message:?} lacks {n:?}");
    }
    message
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Starts a scan through the service and follows it to its end.
async fn scan_to_end(client: &mut Client, request: pb::StartScanRequest) -> pb::Scan {
    let started = client
        .start_scan(request)
        .await
        .expect("StartScan")
        .into_inner();
    let mut stream = watch(client, started.id, 0).await;
    let mut last = None;
    while let Some(e) = stream.message().await.expect("watch") {
        if let Some(s) = e.into_fields().scan {
            last = Some(s);
        }
    }
    let scan = last.expect("a final scan");
    assert!(
        scan.status != pb::ScanStatus::Pending as i32
            && scan.status != pb::ScanStatus::Running as i32,
        "{scan:?}"
    );
    scan
}

fn request(hostname: &str, proxy_jump: &str) -> pb::StartScanRequest {
    pb::StartScanRequest {
        hostname: hostname.into(),
        port: 0,
        username: String::new(),
        scan_type: pb::ScanType::Quick as i32,
        request_id: String::new(),
        proxy_jump: proxy_jump.into(),
    }
}

/// `hostscan serve` with `config` as its ssh_config (`--ssh-config`), two
/// workers and `HOME` in `home`.
async fn serve_with_config(db: &TestDb, config: &Path, home: &Path) -> Server {
    Server::start_env(
        &db.url,
        &[
            "--ssh-config".into(),
            path_str(config).into(),
            "--workers".into(),
            "2".into(),
        ],
        &[("HOME", path_str(home))],
    )
    .await
}

/// `hostscan serve ARGS` that must fail at start-up: its stderr.
fn serve_fails(args: &[&str], home: &Path) -> String {
    let out = Command::new(BINARY)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            "postgres://127.0.0.1:1/x",
        ])
        .args(args)
        .env("HOME", home)
        .env_remove("HOSTSCAN_SSH_KEY")
        .output()
        .expect("run hostscan serve");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    text(&out.stderr)
}

/// The chain of the issue: bastion (reachable), inner (only through the
/// bastion), third (only through both), each a real sshd in its own
/// namespace with its own host name; plus sshds that refuse our key on the
/// bastion and the inner host (port 2200). Fields drop in order: the sshds
/// stop before their namespaces go.
struct Chain {
    bastion: Sshd,
    inner: Sshd,
    third: Sshd,
    bastion_no_key: Sshd,
    _inner_no_key: Sshd,
    /// The root namespace's address on the bastion's link.
    root_addr: String,
    bastion_ns: String,
    keys: Keys,
    _lab: Lab,
}

impl Chain {
    async fn start() -> Self {
        let mut lab = Lab::new();
        let b = lab.namespace("bastion");
        let i = lab.namespace("inner");
        let t = lab.namespace("third");
        let (root_addr, b_addr) = lab.link_root(&b);
        let (_, i_addr) = lab.link(&b, &i);
        let (_, t_addr) = lab.link(&i, &t);
        // The bastion resolves names through 127.0.0.1, where nothing
        // listens: a name it must look up fails as DNS, offline.
        lab.resolv_conf(&b, "nameserver 127.0.0.1\n");
        let keys = Keys::generate();
        let at = |ns: &str, hostname: &str, address: &str| InNetns {
            ns: ns.to_string(),
            hostname: hostname.to_string(),
            address: address.to_string(),
        };
        let forwarding = vec!["AllowTcpForwarding yes".to_string()];
        let bastion = Sshd::start(
            &keys,
            Options {
                netns: Some(at(&b, "bastion", &b_addr)),
                extra_config: forwarding.clone(),
                ..Default::default()
            },
        )
        .await;
        let inner = Sshd::start(
            &keys,
            Options {
                netns: Some(at(&i, "inner", &i_addr)),
                extra_config: forwarding.clone(),
                ..Default::default()
            },
        )
        .await;
        let third = Sshd::start(
            &keys,
            Options {
                netns: Some(at(&t, "third", &t_addr)),
                ..Default::default()
            },
        )
        .await;
        let no_key = |ns: &str, name: &str, addr: &str| Options {
            netns: Some(at(ns, name, addr)),
            port: Some(2200),
            no_client_key: true,
            extra_config: forwarding.clone(),
            ..Default::default()
        };
        let bastion_no_key = Sshd::start(&keys, no_key(&b, "bastion", &b_addr)).await;
        let _inner_no_key = Sshd::start(&keys, no_key(&i, "inner", &i_addr)).await;
        Self {
            bastion,
            inner,
            third,
            bastion_no_key,
            _inner_no_key,
            root_addr,
            bastion_ns: b,
            keys,
            _lab: lab,
        }
    }

    /// Probe flags: no config, our key, TOFU pins in `known_hosts`.
    fn common<'a>(&'a self, known_hosts: &'a Path) -> Vec<&'a str> {
        vec![
            "-F",
            "none",
            "-i",
            path_str(&self.keys.client),
            "--known-hosts",
            path_str(known_hosts),
            "--user",
            &self.bastion.user,
        ]
    }

    /// An ssh_config with aliases: `third` → ProxyJump inner → ProxyJump
    /// bastion, as an operator would write it.
    fn ssh_config(&self, dir: &Path, known_hosts: Option<&Path>) -> PathBuf {
        let mut text = format!(
            "# hostscan test topology\n\
             Host bastion\n    HostName {b}\n\
             Host inner\n    HostName {i}\n    ProxyJump bastion\n\
             Host third\n    HostName {t}\n    ProxyJump inner\n\
             Host *\n    User {user}\n    IdentityFile {key}\n    ServerAliveInterval 30\n",
            b = self.bastion.host,
            i = self.inner.host,
            t = self.third.host,
            user = self.bastion.user,
            key = self.keys.client.display(),
        );
        if let Some(kh) = known_hosts {
            text.push_str(&format!(
                "    UserKnownHostsFile {}\n    StrictHostKeyChecking accept-new\n",
                kh.display()
            ));
        }
        let path = dir.join("ssh_config");
        std::fs::write(&path, text).expect("ssh_config");
        path
    }
}

// ------------------------------------------------------------- jump hosts

#[tokio::test]
async fn jump_hosts_reach_hosts_only_they_can_reach() {
    let chain = Chain::start().await;
    let home = temp_dir("hostscan-home-");
    let kh = home.path().join("known_hosts");
    let common = chain.common(&kh);

    // Directly, the inner host is unreachable (the lab's unreachable route).
    let mut args = vec![chain.inner.host.as_str()];
    args.extend(&common);
    let scan = scan_of(&probe(home.path(), &args, &[]));
    assert_failed(&scan, "SCAN_ERROR_KIND_UNREACHABLE", &[&chain.inner.host]);

    // One jump host: quick and full.
    let one = chain.bastion.hop();
    for full in [false, true] {
        let mut args = vec!["-J", one.as_str(), chain.inner.host.as_str()];
        args.extend(&common);
        if full {
            args.push("--full");
        }
        let scan = scan_of(&probe(home.path(), &args, &[]));
        assert_completed_on(&scan, "inner");
        assert_eq!(scan["proxyJump"], one);
        assert!(scan["results"].get("stepErrors").is_none(), "{scan:#}");
        if full {
            assert_eq!(scan["results"]["packages"]["manager"], "dpkg", "{scan:#}");
        }
    }

    // Two jump hosts: quick and full.
    let two = format!("{},{}", chain.bastion.hop(), chain.inner.hop());
    for full in [false, true] {
        let mut args = vec!["-J", two.as_str(), chain.third.host.as_str()];
        args.extend(&common);
        if full {
            args.push("--full");
        }
        let scan = scan_of(&probe(home.path(), &args, &[]));
        assert_completed_on(&scan, "third");
        if full {
            assert!(
                scan["results"]["processes"]
                    .as_array()
                    .is_some_and(|p| !p.is_empty()),
                "{scan:#}"
            );
        }
    }
    // Every hop was pinned on first use, under its own name.
    let pinned = std::fs::read_to_string(&kh).expect("known_hosts");
    for host in [&chain.bastion.host, &chain.inner.host, &chain.third.host] {
        assert!(
            pinned.contains(host.as_str()),
            "{host} not pinned:\n{pinned}"
        );
    }

    // The same through ssh_config aliases: `third` chains through `inner`'s
    // own ProxyJump to the bastion.
    let config_home = temp_dir("hostscan-home-");
    let config_kh = config_home.path().join("known_hosts_from_config");
    let config = chain.ssh_config(config_home.path(), Some(&config_kh));
    for (alias, hostname, full) in [("third", "third", false), ("inner", "inner", true)] {
        let mut args = vec!["-F", path_str(&config), alias];
        if full {
            args.push("--full");
        }
        let scan = scan_of(&probe(config_home.path(), &args, &[]));
        assert_completed_on(&scan, hostname);
        assert_eq!(scan["hostname"], alias);
    }
    // Without -F, ~/.ssh/config is read, as ssh does.
    std::fs::create_dir_all(config_home.path().join(".ssh")).expect("~/.ssh");
    std::fs::copy(&config, config_home.path().join(".ssh/config")).expect("~/.ssh/config");
    let scan = scan_of(&probe(config_home.path(), &["third"], &[]));
    assert_completed_on(&scan, "third");
    // UserKnownHostsFile and StrictHostKeyChecking accept-new came from the file.
    assert!(
        std::fs::read_to_string(&config_kh)
            .expect("pins from the config")
            .contains(&chain.third.host)
    );
    // Flags win over the file: -J none makes the inner host direct again.
    let scan = scan_of(&probe(
        config_home.path(),
        &["-F", path_str(&config), "-J", "none", "inner"],
        &[],
    ));
    assert_failed(&scan, "SCAN_ERROR_KIND_UNREACHABLE", &[]);
}

#[tokio::test]
async fn jump_hosts_through_the_service() {
    let chain = Chain::start().await;
    let db = TestDb::new().await;
    let dir = temp_dir("hostscan-serve-");
    let config = chain.ssh_config(dir.path(), None);
    let server = serve_with_config(&db, &config, dir.path()).await;
    let mut client = server.client().await;

    // A request's proxy_jump, to an address.
    let hop = chain.bastion.hop();
    let scan = scan_to_end(&mut client, request(&chain.inner.host, &hop)).await;
    assert_eq!(scan.status, pb::ScanStatus::Completed as i32, "{scan:?}");
    assert_eq!(
        scan.results.as_ref().map(|r| r.hostname.as_str()),
        Some("inner")
    );
    assert_eq!(scan.proxy_jump, hop);

    // Two hops, by request.
    let two = format!("{},{}", chain.bastion.hop(), chain.inner.hop());
    let scan = scan_to_end(&mut client, request(&chain.third.host, &two)).await;
    assert_eq!(
        scan.results.as_ref().map(|r| r.hostname.as_str()),
        Some("third"),
        "{scan:?}"
    );

    // The server's ssh_config: the client names only the alias.
    let scan = scan_to_end(&mut client, request("third", "")).await;
    assert_eq!(scan.status, pb::ScanStatus::Completed as i32, "{scan:?}");
    assert_eq!(
        scan.results.as_ref().map(|r| r.hostname.as_str()),
        Some("third")
    );
    assert_eq!(scan.username, chain.bastion.user, "User from the config");
    assert_eq!(scan.proxy_jump, "");

    // A request's proxy_jump overrides the config's: "none" goes direct.
    let scan = scan_to_end(&mut client, request("inner", "none")).await;
    assert_eq!(scan.status, pb::ScanStatus::Failed as i32, "{scan:?}");
    let error = scan.error.expect("error");
    assert_eq!(
        error.kind,
        pb::ScanErrorKind::Unreachable as i32,
        "{error:?}"
    );

    // A malformed chain is refused up front, naming the field.
    for bad in ["bastion:0", "a b", "fe80::1", &["h"; 9].join(",")] {
        let status = client
            .start_scan(request(&chain.inner.host, bad))
            .await
            .expect_err(bad);
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad}");
        assert!(
            status.message().starts_with("proxy_jump: "),
            "{}",
            status.message()
        );
    }

    // Every hop is closed when its scan ends.
    let ns = chain.bastion_ns.clone();
    eventually(
        "the bastion to have no SSH connections left",
        Duration::from_secs(10),
        || {
            let ns = ns.clone();
            async move { (Lab::ssh_connections(&ns) == 0).then_some(()) }
        },
    )
    .await;
}

#[tokio::test]
async fn failures_on_the_way_name_the_hop_and_keep_their_kind() {
    let chain = Chain::start().await;
    let home = temp_dir("hostscan-home-");
    let kh = home.path().join("known_hosts");
    let common = chain.common(&kh);
    let bastion = format!("{}:22", chain.bastion.host);
    let via = format!("via bastion {bastion}");
    let run = |jump: &str, target: &str, extra: &[&str]| {
        let mut args = vec!["-J", jump, target];
        args.extend(&common);
        args.extend(extra);
        scan_of(&probe(home.path(), &args, &[]))
    };

    // The inner host refuses the connection (nothing on port 2222).
    let inner_2222 = format!("{}:2222", chain.inner.host);
    let scan = run(&chain.bastion.hop(), &chain.inner.host, &["--port", "2222"]);
    assert_failed(
        &scan,
        "SCAN_ERROR_KIND_CONNECTION_REFUSED",
        &[&inner_2222, &via],
    );

    // The inner host does not take our key.
    let scan = run(&chain.bastion.hop(), &chain.inner.host, &["--port", "2200"]);
    assert_failed(
        &scan,
        "SCAN_ERROR_KIND_AUTH_FAILED",
        &[
            &format!(
                "authentication failed for {}@{}:2200",
                chain.inner.user, chain.inner.host
            ),
            &via,
        ],
    );

    // The bastion does not take our key.
    let scan = run(&chain.bastion_no_key.hop(), &chain.inner.host, &[]);
    assert_failed(
        &scan,
        "SCAN_ERROR_KIND_AUTH_FAILED",
        &[&format!("{}:2200", chain.bastion.host), "bastion 1 of 1"],
    );

    // A name only the bastion could resolve, and cannot.
    let scan = run(&chain.bastion.hop(), "nowhere.hostscan.test", &[]);
    assert_failed(
        &scan,
        "SCAN_ERROR_KIND_DNS",
        &["nowhere.hostscan.test", &via],
    );

    // A host behind the bastion that accepts TCP and never speaks: the
    // connect timeout covers the whole chain and says where it stuck.
    let silent = TcpListener::bind((chain.root_addr.as_str(), 0)).expect("bind");
    let silent_port = silent.local_addr().expect("addr").port().to_string();
    let scan = run(
        &chain.bastion.hop(),
        &chain.root_addr,
        &["--port", &silent_port, "--connect-timeout", "2"],
    );
    assert_failed(
        &scan,
        "SCAN_ERROR_KIND_TIMEOUT",
        &["waiting for the SSH handshake", &chain.root_addr, &via],
    );
    drop(silent);

    // The bastion's host key changed (known_hosts holds another key).
    let other = chain.keys.extra("not_the_bastion", "ed25519");
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).expect("pub");
    let changed = home.path().join("known_hosts_changed");
    std::fs::write(&changed, format!("{} {}", chain.bastion.host, other_pub)).expect("write");
    let hop = chain.bastion.hop();
    let mut args = vec!["-J", hop.as_str(), chain.inner.host.as_str()];
    args.extend(["-F", "none", "-i", path_str(&chain.keys.client)]);
    args.extend([
        "--known-hosts",
        path_str(&changed),
        "--user",
        &chain.bastion.user,
    ]);
    let scan = scan_of(&probe(home.path(), &args, &[]));
    assert_failed(
        &scan,
        "SCAN_ERROR_KIND_HOST_KEY_MISMATCH",
        &["HOST KEY CHANGED", &bastion, "bastion 1 of 1"],
    );
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_dns() {
    let mut lab = Lab::new();
    // A client namespace whose resolver is 127.0.0.1, where nothing
    // listens: the lookup fails at once and never leaves the machine.
    let client = lab.namespace("client");
    lab.resolv_conf(&client, "nameserver 127.0.0.1\n");
    let keys = Keys::generate();
    let home = temp_dir("hostscan-home-");
    let kh = home.path().join("known_hosts");
    let out = Lab::command(&client, BINARY)
        .args([
            "probe",
            "no-such-host.hostscan.test",
            "-F",
            "none",
            "--json",
        ])
        .args(["-i", path_str(&keys.client), "--known-hosts", path_str(&kh)])
        .env("HOME", home.path())
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .expect("run probe in the namespace");
    let scan = scan_of(&out);
    assert_failed(
        &scan,
        "SCAN_ERROR_KIND_DNS",
        &["cannot resolve no-such-host.hostscan.test"],
    );
}

// ------------------------------------------------------ agent and keys

#[tokio::test]
async fn keys_in_an_ssh_agent_log_in() {
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let agent = SshAgent::start().await;
    agent.add(&keys.client);
    let home = temp_dir("hostscan-home-");
    let kh = home.path().join("known_hosts");
    let port = sshd.port.to_string();
    let args = [
        "127.0.0.1",
        "--port",
        &port,
        "--user",
        &sshd.user,
        "-F",
        "none",
        "--known-hosts",
        path_str(&kh),
    ];
    // No key file anywhere: only the agent holds the key.
    let scan = scan_of(&probe(
        home.path(),
        &args,
        &[("SSH_AUTH_SOCK", path_str(&agent.socket))],
    ));
    assert_eq!(scan["status"], "SCAN_STATUS_COMPLETED", "{scan:#}");
    // Without the agent there is nothing to offer.
    let scan = scan_of(&probe(home.path(), &args, &[]));
    assert_failed(&scan, "SCAN_ERROR_KIND_AUTH_FAILED", &["no keys"]);
    // IdentitiesOnly: the agent's key is not offered unless configured.
    let other = keys.extra("not_authorized", "ed25519");
    let only = home.path().join("identities_only");
    std::fs::write(
        &only,
        format!(
            "Host *\n    IdentitiesOnly yes\n    IdentityFile {}\n",
            other.display()
        ),
    )
    .expect("config");
    let mut only_args = args.to_vec();
    only_args[6] = path_str(&only);
    let scan = scan_of(&probe(
        home.path(),
        &only_args,
        &[("SSH_AUTH_SOCK", path_str(&agent.socket))],
    ));
    assert_failed(&scan, "SCAN_ERROR_KIND_AUTH_FAILED", &["tried 1 key"]);

    // The service uses the agent it is given, never $SSH_AUTH_SOCK.
    let db = TestDb::new().await;
    let server_home = temp_dir("hostscan-serve-");
    let server = Server::start_env(
        &db.url,
        &[
            "--ssh-auth-sock".into(),
            path_str(&agent.socket).into(),
            "--ssh-user".into(),
            sshd.user.clone(),
            "--ssh-port".into(),
            port.clone(),
        ],
        &[("HOME", path_str(server_home.path()))],
    )
    .await;
    let mut client = server.client().await;
    let scan = scan_to_end(&mut client, request("127.0.0.1", "")).await;
    assert_eq!(scan.status, pb::ScanStatus::Completed as i32, "{scan:?}");

    // An agent that does not answer stops start-up, naming the setting.
    let stderr = serve_fails(
        &["--ssh-auth-sock", "/nonexistent/agent.sock"],
        server_home.path(),
    );
    assert!(
        stderr.contains("--ssh-auth-sock/HOSTSCAN_SSH_AUTH_SOCK"),
        "{stderr}"
    );
}

#[tokio::test]
async fn encrypted_keys_need_their_passphrase_from_a_file() {
    let keys = Keys::generate();
    let dir = keys.dir.path().to_path_buf();
    let passphrase = "correct horse battery staple";
    let openssh = dir.join("enc_ed25519");
    let pem = dir.join("enc_rsa_pem");
    let pkcs8 = dir.join("enc_ecdsa_pkcs8");
    keygen_encrypted(&openssh, "ed25519", passphrase, None);
    keygen_encrypted(&pem, "rsa", passphrase, Some("PEM"));
    keygen_encrypted(&pkcs8, "ecdsa", passphrase, Some("PKCS8"));
    let sshd = Sshd::start(
        &keys,
        Options {
            also_authorize: vec![openssh.clone(), pem.clone(), pkcs8.clone()],
            no_client_key: true,
            ..Default::default()
        },
    )
    .await;
    let home = temp_dir("hostscan-home-");
    let kh = home.path().join("known_hosts");
    let pass_file = home.path().join("passphrase");
    std::fs::write(&pass_file, format!("{passphrase}\n")).expect("passphrase file");
    let wrong_file = home.path().join("wrong");
    std::fs::write(&wrong_file, "not it\n").expect("wrong passphrase file");
    let port = sshd.port.to_string();
    let base = |key: &Path| -> Vec<String> {
        [
            "127.0.0.1",
            "--port",
            &port,
            "--user",
            &sshd.user,
            "-F",
            "none",
            "--known-hosts",
            path_str(&kh),
            "-i",
            path_str(key),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    for key in [&openssh, &pem, &pkcs8] {
        let mut args = base(key);
        args.extend(["--passphrase-file".into(), path_str(&pass_file).into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = probe(home.path(), &args, &[]);
        let scan = scan_of(&out);
        assert_eq!(
            scan["status"],
            "SCAN_STATUS_COMPLETED",
            "{}: {scan:#}",
            key.display()
        );
        assert!(!text(&out.stderr).contains(passphrase));
    }

    // On a terminal (a pty from util-linux's `script`), probe asks.
    let command = format!(
        "{BINARY} probe 127.0.0.1 --port {port} --user {} -F none --known-hosts {} -i {} --json",
        sshd.user,
        kh.display(),
        openssh.display()
    );
    let mut on_tty = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("HOME", home.path())
        .env_remove("SSH_AUTH_SOCK")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    {
        use std::io::Write as _;
        let mut stdin = on_tty.stdin.take().expect("stdin");
        writeln!(stdin, "{passphrase}").expect("type the passphrase");
    }
    let out = on_tty.wait_with_output().expect("script");
    let shown = text(&out.stdout);
    assert!(shown.contains("Enter passphrase for key"), "{shown}");
    assert!(shown.contains("SCAN_STATUS_COMPLETED"), "{shown}");

    // Without the passphrase (and no terminal to ask on): exit 2 before
    // any connection, naming --passphrase-file.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let untouched = listener.local_addr().expect("addr").port().to_string();
    let mut args = base(&openssh);
    args[2] = untouched;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = probe(home.path(), &args, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("needs a passphrase") && stderr.contains("--passphrase-file"),
        "{stderr}"
    );
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "probe connected although the key could not be used"
    );

    // A wrong passphrase is a clear error too.
    let mut args = base(&openssh);
    args.extend(["--passphrase-file".into(), path_str(&wrong_file).into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = probe(home.path(), &args, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot decrypt"),
        "{}",
        text(&out.stderr)
    );

    // The service: --ssh-key-passphrase-file decrypts at start-up.
    let db = TestDb::new().await;
    let server = Server::start_env(
        &db.url,
        &[
            "--ssh-key".into(),
            path_str(&openssh).into(),
            "--ssh-key-passphrase-file".into(),
            path_str(&pass_file).into(),
            "--ssh-user".into(),
            sshd.user.clone(),
            "--ssh-port".into(),
            port.clone(),
        ],
        &[("HOME", path_str(home.path()))],
    )
    .await;
    let mut client = server.client().await;
    let scan = scan_to_end(&mut client, request("127.0.0.1", "")).await;
    assert_eq!(scan.status, pb::ScanStatus::Completed as i32, "{scan:?}");
    assert!(
        !server.logs().contains(passphrase),
        "the passphrase reached the log"
    );

    // Without it, start-up fails naming both settings.
    let stderr = serve_fails(&["--ssh-key", path_str(&openssh)], home.path());
    assert!(
        stderr.contains("--ssh-key/HOSTSCAN_SSH_KEY")
            && stderr.contains("--ssh-key-passphrase-file"),
        "{stderr}"
    );
    // A config file that does not parse stops start-up, naming it.
    let bad = home.path().join("bad_config");
    std::fs::write(&bad, "Host x\n    Port none\n").expect("write");
    let stderr = serve_fails(
        &[
            "--ssh-key",
            path_str(&keys.client),
            "--ssh-config",
            path_str(&bad),
        ],
        home.path(),
    );
    assert!(
        stderr.contains("--ssh-config/HOSTSCAN_SSH_CONFIG") && stderr.contains("line 2"),
        "{stderr}"
    );
}

// ---------------------------------------------------------- certificates

#[tokio::test]
async fn user_certificates_from_files_config_and_agent() {
    let keys = Keys::generate();
    let dir = keys.dir.path().to_path_buf();
    let ca = keys.extra("user_ca", "ed25519");
    let sshd = Sshd::start(
        &keys,
        Options {
            no_client_key: true,
            extra_config: vec![format!(
                "TrustedUserCAKeys {}",
                ca.with_extension("pub").display()
            )],
            ..Default::default()
        },
    )
    .await;
    let user = sshd.user.clone();
    let home = temp_dir("hostscan-home-");
    let kh = home.path().join("known_hosts");
    let port = sshd.port.to_string();
    let with_key = |key: &Path, extra: &[&str]| {
        let mut args = vec![
            "127.0.0.1",
            "--port",
            &port,
            "--user",
            &user,
            "--known-hosts",
            path_str(&kh),
            "-i",
        ];
        args.push(path_str(key));
        if !extra.contains(&"-F") {
            args.extend(["-F", "none"]);
        }
        args.extend(extra);
        scan_of(&probe(home.path(), &args, &[]))
    };

    // Only a certificate gets in: the plain key is not authorized.
    let scan = with_key(&keys.client, &[]);
    assert_failed(&scan, "SCAN_ERROR_KIND_AUTH_FAILED", &["1 key"]);

    // KEY-cert.pub beside the key.
    let certified = keys.extra("certified", "ed25519");
    sign(&ca, &certified, false, &user, Some("-5m:+1h"));
    let scan = with_key(&certified, &[]);
    assert_eq!(scan["status"], "SCAN_STATUS_COMPLETED", "{scan:#}");

    // CertificateFile in an ssh_config, the certificate elsewhere.
    let elsewhere = keys.extra("certificate_elsewhere", "ed25519");
    let cert = sign(&ca, &elsewhere, false, &user, None);
    let moved = dir.join("moved-cert.pub");
    std::fs::rename(&cert, &moved).expect("move the certificate");
    let config = home.path().join("config");
    std::fs::write(
        &config,
        format!("Host *\n    CertificateFile {}\n", moved.display()),
    )
    .expect("config");
    let scan = with_key(&elsewhere, &["-F", path_str(&config)]);
    assert_eq!(scan["status"], "SCAN_STATUS_COMPLETED", "{scan:#}");

    // An expired certificate is reported before connecting, and not offered.
    let expired = keys.extra("expired", "ed25519");
    sign(&ca, &expired, false, &user, Some("20200101:20200102"));
    let mut args = vec!["127.0.0.1", "--port", &port, "--user", &user, "-F", "none"];
    args.extend(["--known-hosts", path_str(&kh), "-i", path_str(&expired)]);
    let out = probe(home.path(), &args, &[]);
    assert!(
        text(&out.stderr).contains("expired at 2020-01-0"),
        "{}",
        text(&out.stderr)
    );
    assert_failed(
        &scan_of(&out),
        "SCAN_ERROR_KIND_AUTH_FAILED",
        &["expired at 2020-01-0"],
    );

    // The service offers --ssh-key's KEY-cert.pub too.
    let db = TestDb::new().await;
    let server = Server::start_env(
        &db.url,
        &[
            "--ssh-key".into(),
            path_str(&certified).into(),
            "--ssh-user".into(),
            user.clone(),
            "--ssh-port".into(),
            port.clone(),
        ],
        &[("HOME", path_str(home.path()))],
    )
    .await;
    let scan = scan_to_end(&mut server.client().await, request("127.0.0.1", "")).await;
    assert_eq!(scan.status, pb::ScanStatus::Completed as i32, "{scan:?}");

    // A certificate held by an agent (with its key), no files at all.
    let agent = SshAgent::start().await;
    let in_agent = keys.extra("agent_certified", "ed25519");
    sign(&ca, &in_agent, false, &user, None);
    agent.add(&in_agent);
    assert!(agent.list().contains("CERT"), "{}", agent.list());
    std::fs::remove_file(&in_agent).expect("only the agent holds the key now");
    let args = [
        "127.0.0.1",
        "--port",
        &port,
        "--user",
        &user,
        "-F",
        "none",
        "--known-hosts",
        path_str(&kh),
    ];
    let scan = scan_of(&probe(
        home.path(),
        &args,
        &[("SSH_AUTH_SOCK", path_str(&agent.socket))],
    ));
    assert_eq!(scan["status"], "SCAN_STATUS_COMPLETED", "{scan:#}");
}

#[tokio::test]
async fn host_certificates_via_cert_authority() {
    let keys = Keys::generate();
    let ca = keys.extra("host_ca", "ed25519");
    let other_ca = keys.extra("other_ca", "ed25519");
    // One sshd per kind of host certificate, each with its own host key.
    let host = |name: &str, signer: &Path, principals: &str, validity: Option<&str>| {
        let key = keys.extra(name, "ed25519");
        let cert = sign(signer, &key, true, principals, validity);
        Options {
            host_key: Some(key),
            extra_config: vec![format!("HostCertificate {}", cert.display())],
            ..Default::default()
        }
    };
    let good = Sshd::start(&keys, host("hk_good", &ca, "127.0.0.1,localhost", None)).await;
    let unknown_ca = Sshd::start(&keys, host("hk_unknown", &other_ca, "127.0.0.1", None)).await;
    let expired = Sshd::start(
        &keys,
        host("hk_expired", &ca, "127.0.0.1", Some("20200101:20200102")),
    )
    .await;
    let principal = Sshd::start(&keys, host("hk_principal", &ca, "db.example.org", None)).await;
    let plain = Sshd::start(&keys, Options::default()).await;

    let home = temp_dir("hostscan-home-");
    let kh = home.path().join("known_hosts");
    let ca_line = format!(
        "@cert-authority * {}",
        std::fs::read_to_string(ca.with_extension("pub")).expect("ca pub")
    );
    std::fs::write(&kh, &ca_line).expect("known_hosts");
    let scan_port = |sshd: &Sshd, policy: &str| {
        let port = sshd.port.to_string();
        let args = [
            "127.0.0.1",
            "--port",
            &port,
            "--user",
            &sshd.user,
            "-F",
            "none",
            "-i",
            path_str(&keys.client),
            "--known-hosts",
            path_str(&kh),
            "--host-key-policy",
            policy,
        ];
        scan_of(&probe(home.path(), &args, &[]))
    };

    // Accepted under strict and tofu, and never pinned.
    for policy in ["strict", "tofu"] {
        let scan = scan_port(&good, policy);
        assert_eq!(
            scan["status"], "SCAN_STATUS_COMPLETED",
            "{policy}: {scan:#}"
        );
    }
    assert_eq!(std::fs::read_to_string(&kh).expect("kh"), ca_line);

    // Rejected, saying why.
    for (sshd, why) in [
        (&unknown_ca, "unknown CA"),
        (&expired, "expired at 2020-01-0"),
        (&principal, "wrong principal"),
    ] {
        for policy in ["strict", "tofu"] {
            let scan = scan_port(sshd, policy);
            assert_failed(
                &scan,
                "SCAN_ERROR_KIND_HOST_KEY_MISMATCH",
                &[why, "host certificate"],
            );
        }
    }

    // A host without a certificate behaves as before: pinned under tofu.
    let scan = scan_port(&plain, "tofu");
    assert_eq!(scan["status"], "SCAN_STATUS_COMPLETED", "{scan:#}");
    assert!(
        std::fs::read_to_string(&kh)
            .expect("kh")
            .contains(&format!("[127.0.0.1]:{}", plain.port))
    );

    // A revoked CA takes its certificates with it.
    let revoked = format!(
        "@revoked * {}",
        std::fs::read_to_string(ca.with_extension("pub")).expect("ca pub")
    );
    let mut text = std::fs::read_to_string(&kh).expect("kh");
    text.push_str(&revoked);
    std::fs::write(&kh, text).expect("known_hosts");
    let scan = scan_port(&good, "strict");
    assert_failed(&scan, "SCAN_ERROR_KIND_HOST_KEY_MISMATCH", &["@revoked"]);
}

// ----------------------------------------------------------- ProxyCommand

/// ProxyCommand from ssh_config: OpenSSH's own `ssh -W %h:%p bastion`
/// carries the connection to a host only the bastion reaches, from `probe`
/// and through the service; a command that fails says how (its exit status
/// and stderr) as UNREACHABLE; the command is gone when its scan ends (the
/// bastion has no SSH connection left).
#[tokio::test]
async fn proxy_command_carries_the_connection() {
    let chain = Chain::start().await;
    let home = temp_dir("hostscan-home-");
    let kh = home.path().join("known_hosts");
    let bastion_kh = home.path().join("known_hosts_of_ssh");
    let key = chain.keys.client.display().to_string();
    let config = home.path().join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host inner-pc\n    HostName {inner}\n    \
             ProxyCommand ssh -F none -i {key} -o IdentitiesOnly=yes -o BatchMode=yes \
             -o UserKnownHostsFile={bkh} -o StrictHostKeyChecking=accept-new \
             -p {bport} -l {user} -W %h:%p {bastion}\n\
             Host broken-pc\n    HostName {inner}\n    \
             ProxyCommand sh -c 'echo no route to the moon >&2; exit 3'\n\
             Host *\n    User {user}\n    IdentityFile {key}\n    \
             UserKnownHostsFile {kh}\n    StrictHostKeyChecking accept-new\n",
            inner = chain.inner.host,
            bkh = bastion_kh.display(),
            bport = chain.bastion.port,
            user = chain.bastion.user,
            bastion = chain.bastion.host,
            kh = kh.display(),
        ),
    )
    .expect("ssh_config");
    need_ssh_client();

    for full in [false, true] {
        let mut args = vec!["-F", path_str(&config), "inner-pc"];
        if full {
            args.push("--full");
        }
        let scan = scan_of(&probe(home.path(), &args, &[]));
        assert_completed_on(&scan, "inner");
        assert!(scan.get("proxyJump").is_none(), "{scan:#}");
    }
    // hostscan checked and pinned the inner host's own key; ssh, the bastion's.
    assert!(
        std::fs::read_to_string(&kh)
            .expect("pins")
            .contains(&chain.inner.host)
    );
    assert!(
        std::fs::read_to_string(&bastion_kh)
            .expect("ssh's pins")
            .contains(&chain.bastion.host)
    );

    let scan = scan_of(&probe(
        home.path(),
        &["-F", path_str(&config), "broken-pc"],
        &[],
    ));
    assert_failed(
        &scan,
        "SCAN_ERROR_KIND_UNREACHABLE",
        &["the ProxyCommand exited with status 3: no route to the moon"],
    );

    // The service: the client names only the alias.
    let db = TestDb::new().await;
    let server = serve_with_config(&db, &config, home.path()).await;
    let mut client = server.client().await;
    for _ in 0..2 {
        let scan = scan_to_end(&mut client, request("inner-pc", "")).await;
        assert_eq!(scan.status, pb::ScanStatus::Completed as i32, "{scan:?}");
        assert_eq!(
            scan.results.as_ref().map(|r| r.hostname.as_str()),
            Some("inner")
        );
    }
    let ns = chain.bastion_ns.clone();
    eventually(
        "the ProxyCommands to end with their scans",
        Duration::from_secs(10),
        || {
            let ns = ns.clone();
            async move { (Lab::ssh_connections(&ns) == 0).then_some(()) }
        },
    )
    .await;
}

/// Fails the test, naming the package, when OpenSSH's client is missing.
fn need_ssh_client() {
    assert!(
        Command::new("ssh").arg("-V").output().is_ok(),
        "`ssh` not found: install openssh-client (scripts/setup-debian)"
    );
}

// ----------------------------------------------------------- HostKeyAlias

/// HostKeyAlias: host keys are looked up, checked and pinned under the
/// alias (with the dialled port), not the address. One sshd seen as two
/// aliases: the one known_hosts lists under its alias passes `strict`; the
/// other, unknown under its own alias, is refused under `strict` though the
/// same key is listed for the first, and pinned under its alias with
/// accept-new.
#[tokio::test]
async fn host_key_alias_files_keys_under_the_alias() {
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let home = temp_dir("hostscan-home-");
    let kh = home.path().join("known_hosts");
    let host_pub = std::fs::read_to_string(sshd.host_key.with_extension("pub")).expect("host key");
    let mut fields = host_pub.split_whitespace();
    let (kind, blob) = (
        fields.next().expect("key type"),
        fields.next().expect("key blob"),
    );
    std::fs::write(
        &kh,
        format!("[web-a.internal]:{} {kind} {blob}\n", sshd.port),
    )
    .expect("known_hosts");
    let config = home.path().join("ssh_config");
    let block = |alias: &str, key_alias: &str, strict: &str| {
        format!(
            "Host {alias}\n    HostName 127.0.0.1\n    Port {port}\n    User {user}\n    \
             IdentityFile {key}\n    HostKeyAlias {key_alias}\n    UserKnownHostsFile {kh}\n    \
             StrictHostKeyChecking {strict}\n",
            port = sshd.port,
            user = sshd.user,
            key = keys.client.display(),
            kh = kh.display(),
        )
    };
    std::fs::write(
        &config,
        [
            block("web-a", "web-a.internal", "yes"),
            block("web-b", "web-b.internal", "yes"),
            block("web-c", "web-c.internal", "accept-new"),
        ]
        .concat(),
    )
    .expect("ssh_config");

    let scan = scan_of(&probe(
        home.path(),
        &["-F", path_str(&config), "web-a"],
        &[],
    ));
    assert_eq!(scan["status"], "SCAN_STATUS_COMPLETED", "{scan:#}");
    let scan = scan_of(&probe(
        home.path(),
        &["-F", path_str(&config), "web-b"],
        &[],
    ));
    assert_failed(
        &scan,
        "SCAN_ERROR_KIND_HOST_KEY_MISMATCH",
        &["web-b.internal"],
    );
    let scan = scan_of(&probe(
        home.path(),
        &["-F", path_str(&config), "web-c"],
        &[],
    ));
    assert_eq!(scan["status"], "SCAN_STATUS_COMPLETED", "{scan:#}");
    let pinned = std::fs::read_to_string(&kh).expect("known_hosts");
    assert!(
        pinned.contains(&format!("[web-c.internal]:{}", sshd.port))
            && !pinned.contains("127.0.0.1"),
        "{pinned}"
    );
}
