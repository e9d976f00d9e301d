//! DiffScans and its terminal forms against real hosts: a host of the
//! test's own (an sshd in a network namespace and a private mount
//! namespace, with a dpkg database written by the real dpkg) is scanned,
//! changed by the test (a package installed, an address added, a socket
//! opened), and scanned again; the diff shows exactly that and nothing
//! else, through the real `hostscan serve`, `hostscan diff` and
//! `hostscan probe --diff-against`. Also: the default base on both
//! backends, served by an index, and what a scan costs to store.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use hostscan::model::{ScanResults, ScanStatus, ScanType};
use hostscan::pb;
use hostscan::store::{NewScan, Store};
use tonic::Code;

use crate::both_backends;
use crate::support::db::{Backend, TestDb};
use crate::support::netns::Lab;
use crate::support::server::{BINARY, Client, Server, watch};
use crate::support::sshd::{InNetns, Keys, Options, Sshd};
use crate::support::{Tied, eventually, run, temp_dir};

const LEASE: Duration = Duration::from_secs(30);

/// A failure naming the Debian package when `tool` is missing.
fn need(tool: &str, package: &str) {
    let found = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .any(|d| Path::new(d).join(tool).exists());
    assert!(
        found,
        "`{tool}` not found: install the `{package}` package (scripts/setup-debian)"
    );
}

/// A host of the test's own whose state the test changes between scans:
/// an sshd in a network namespace (its own interfaces, sockets and host
/// name; reached at `sshd.host`, ports 22 and 2222) and a private mount
/// namespace whose `/var/lib/dpkg` is a database the test writes with the
/// real dpkg. IPv6 is off in the namespace, so no link-local address
/// appears on its own between scans. Fields drop in order: the sshd and the
/// listener stop before the namespace goes.
struct ChangingHost {
    sshd: Sshd,
    listener: Option<Tied>,
    ns: String,
    /// `dpkg --root` of the database.
    dpkg_root: PathBuf,
    work: tempfile::TempDir,
    /// The interface `change` adds an address to.
    bridge: String,
    new_address: String,
    _lab: Lab,
}

impl ChangingHost {
    const LISTEN_PORT: u32 = 8080;

    async fn start(keys: &Keys) -> Self {
        need("dpkg-deb", "dpkg");
        need("unshare", "util-linux");
        let mut lab = Lab::new();
        let ns = lab.namespace("host");
        let (_, address) = lab.link_root(&ns);
        run(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        );
        // An interface with no traffic to put an address on: a port-less
        // bridge (this kernel has no `dummy` driver; a bridge without ports
        // behaves as one).
        let bridge = "br-dummy".to_string();
        run("ip", &["-n", &ns, "link", "add", &bridge, "type", "bridge"]);
        run("ip", &["-n", &ns, "link", "set", &bridge, "up"]);
        let new_address = lab.spare_address(0);

        let work = temp_dir("hostscan-diff-host-");
        let dpkg_root = work.path().join("root");
        let admin = dpkg_root.join("var/lib/dpkg");
        for d in ["info", "updates"] {
            std::fs::create_dir_all(admin.join(d)).expect("admindir");
        }
        for f in ["status", "available"] {
            std::fs::write(admin.join(f), "").expect("admin file");
        }
        let host = Self {
            sshd: Sshd::start(
                keys,
                Options {
                    netns: Some(InNetns {
                        ns: ns.clone(),
                        hostname: "changing-host".into(),
                        address,
                    }),
                    extra_config: vec!["Port 2222".into()],
                    mount_setup: Some(format!("mount --bind {} /var/lib/dpkg", admin.display())),
                    ..Default::default()
                },
            )
            .await,
            listener: None,
            ns,
            dpkg_root,
            work,
            bridge,
            new_address,
            _lab: lab,
        };
        host.install("hs-base", "1.0-1");
        host
    }

    /// Builds `name` `version` with dpkg-deb and installs it with dpkg.
    fn install(&self, name: &str, version: &str) {
        let pkg = self.work.path().join(name);
        std::fs::create_dir_all(pkg.join("DEBIAN")).expect("DEBIAN");
        std::fs::write(
            pkg.join("DEBIAN/control"),
            format!(
                "Package: {name}\nVersion: {version}\nArchitecture: all\n\
                 Maintainer: hostscan tests <tests@localhost>\nDescription: hostscan test package\n"
            ),
        )
        .expect("control");
        let deb = self.work.path().join(format!("{name}.deb"));
        run(
            "dpkg-deb",
            &[
                "--root-owner-group",
                "--build",
                pkg.to_str().expect("utf-8"),
                deb.to_str().expect("utf-8"),
            ],
        );
        run(
            "dpkg",
            &[
                &format!("--root={}", self.dpkg_root.display()),
                "--force-not-root",
                "--force-script-chrootless",
                "-i",
                deb.to_str().expect("utf-8"),
            ],
        );
    }

    /// The change the diff must show: a package installed, an address
    /// added to the bridge, a TCP socket listening on 8080.
    async fn change(&mut self) {
        self.install("hs-added", "2.0-1");
        run(
            "ip",
            &[
                "-n",
                &self.ns,
                "addr",
                "add",
                &format!("{}/32", self.new_address),
                "dev",
                &self.bridge,
            ],
        );
        self.listener = Some(Tied::spawn(
            "listener",
            &format!(
                "ip netns exec {} perl -MIO::Socket::INET -e \
                 '$SIG{{TERM}} = sub {{ exit 0 }}; $s = IO::Socket::INET->new(LocalAddr => \"0.0.0.0\", LocalPort => {}, Listen => 5, \
                 ReuseAddr => 1) or die $!; 1 while sleep 3600'",
                self.ns,
                Self::LISTEN_PORT
            ),
            "TERM",
            "",
        ));
        let ns = self.ns.clone();
        eventually("the listener to listen", Duration::from_secs(20), || {
            let ns = ns.clone();
            async move {
                let out = Lab::command(&ns, "ss")
                    .args(["-Htln", "sport = :8080"])
                    .output()
                    .ok()?;
                (!out.stdout.is_empty()).then_some(())
            }
        })
        .await;
    }
}

/// Starts a scan through the server and follows it to its end.
async fn scan(client: &mut Client, host: &str, port: u16, scan_type: pb::ScanType) -> pb::Scan {
    let started = client
        .start_scan(pb::StartScanRequest {
            hostname: host.into(),
            port: u32::from(port),
            scan_type: scan_type as i32,
            ..Default::default()
        })
        .await
        .expect("start")
        .into_inner();
    let mut stream = watch(client, started.id, 0).await;
    let mut last = None;
    while let Some(e) = stream.message().await.expect("stream") {
        if let Some(s) = e.into_fields().scan {
            last = Some(s);
        }
    }
    last.expect("the terminal event carries the scan")
}

fn completed(s: &pb::Scan) -> i64 {
    assert_eq!(s.status, pb::ScanStatus::Completed as i32, "{:?}", s.error);
    s.id
}

async fn diff_scans(
    client: &mut Client,
    base: i64,
    scan: i64,
) -> Result<pb::ScanDiff, tonic::Status> {
    client
        .diff_scans(pb::DiffScansRequest {
            base_scan_id: base,
            scan_id: scan,
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

fn all_sections() -> Vec<i32> {
    (1..=15).collect()
}

/// Asserts that `d` lists exactly the change `ChangingHost::change` made.
fn assert_exactly_the_change(d: &pb::ScanDiff, host: &ChangingHost) {
    assert_eq!(d.compared_sections, all_sections(), "{d:#?}");
    assert!(d.skipped_sections.is_empty(), "{d:#?}");
    assert!(d.package_lists_compared);
    assert_eq!(
        d.packages_added,
        [pb::PackageChange {
            manager: "dpkg".into(),
            name: "hs-added".into(),
            version: "2.0-1".into()
        }]
    );
    assert_eq!(
        d.package_count,
        Some(pb::Int64Change {
            old_value: 1,
            new_value: 2
        })
    );
    assert_eq!(
        d.addresses_added,
        [pb::AddressChange {
            interface: host.bridge.clone(),
            address: Some(pb::Address {
                family: "inet".into(),
                address: host.new_address.clone(),
                prefix_length: 32
            })
        }]
    );
    assert_eq!(d.listening_sockets_added.len(), 1, "{d:#?}");
    let socket = &d.listening_sockets_added[0];
    assert_eq!(
        (
            socket.protocol.as_str(),
            socket.family.as_str(),
            socket.local_address.as_str(),
            socket.port
        ),
        ("tcp", "inet", "0.0.0.0", ChangingHost::LISTEN_PORT)
    );
    assert_eq!(socket.process, "perl");
    assert_eq!(d.change_count, 4, "{d:#?}");
    // Nothing else.
    let rest = pb::ScanDiff {
        base: None,
        scan: None,
        compared_sections: Vec::new(),
        change_count: 0,
        package_lists_compared: false,
        packages_added: Vec::new(),
        package_count: None,
        addresses_added: Vec::new(),
        listening_sockets_added: Vec::new(),
        ..d.clone()
    };
    assert_eq!(rest, pb::ScanDiff::default(), "only the change: {d:#?}");
}

fn hostscan(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .env_remove("HOSTSCAN_SERVER")
        .env_remove("HOSTSCAN_API_KEY")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .output()
        .expect("run hostscan")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// `command` on a terminal (a pty from util-linux's `script`): its output.
fn on_a_terminal(command: &str, env: &[(&str, &str)]) -> String {
    let mut c = Command::new("script");
    c.args(["-qec", command, "/dev/null"])
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("HOSTSCAN_SERVER")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c
        .spawn()
        .expect("script (util-linux)")
        .wait_with_output()
        .expect("script");
    text(&out.stdout)
}

/// The issue's test: real full scans before and after the test changes the
/// host show exactly that change, through the real server; the default
/// base, a quick scan against a full one, the errors; `hostscan diff` as
/// text (coloured only on a terminal) and JSON.
#[tokio::test]
async fn diff_scans_shows_exactly_what_the_test_changed() {
    let db = TestDb::new(Backend::Postgres).await;
    let keys = Keys::generate();
    let mut host = ChangingHost::start(&keys).await;
    let server = Server::start(
        db.url(),
        &crate::e2e::server_args(&keys, &host.sshd, &["--workers", "2"]),
    )
    .await;
    let mut client = server.client().await;
    let address = host.sshd.host.clone();

    let first = completed(&scan(&mut client, &address, 22, pb::ScanType::Full).await);
    let status = diff_scans(&mut client, 0, first)
        .await
        .expect_err("nothing before the first scan");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status
            .message()
            .contains("has no earlier completed full scan of"),
        "{}",
        status.message()
    );

    host.change().await;
    let second = completed(&scan(&mut client, &address, 22, pb::ScanType::Full).await);
    // base_scan_id 0: the previous completed full scan of the host.
    let d = diff_scans(&mut client, 0, second).await.expect("diff");
    assert_eq!(d.base.as_ref().map(|b| b.scan_id), Some(first));
    assert_eq!(d.scan.as_ref().map(|s| s.scan_id), Some(second));
    assert_exactly_the_change(&d, &host);
    assert_eq!(
        diff_scans(&mut client, first, second).await.expect("diff"),
        d
    );
    // Backwards: the same change undone.
    let back = diff_scans(&mut client, second, first).await.expect("diff");
    assert_eq!(back.packages_removed, d.packages_added);
    assert_eq!(back.addresses_removed, d.addresses_added);
    assert_eq!(back.listening_sockets_removed, d.listening_sockets_added);
    assert_eq!(back.change_count, 4);

    // A quick scan: its base is the newest earlier completed scan of the
    // same or a richer type (the full one); only quick facts are compared.
    let quick = completed(&scan(&mut client, &address, 22, pb::ScanType::Quick).await);
    let q = diff_scans(&mut client, 0, quick).await.expect("diff");
    assert_eq!(q.base.as_ref().map(|b| b.scan_id), Some(second));
    assert_eq!(q.change_count, 0, "{q:#?}");
    let skipped: Vec<(i32, &str)> = q
        .skipped_sections
        .iter()
        .map(|s| (s.section, s.reason.as_str()))
        .collect();
    assert_eq!(
        skipped,
        [
            pb::DiffSection::Packages,
            pb::DiffSection::RebootRequired,
            pb::DiffSection::NetworkInterfaces,
            pb::DiffSection::ListeningSockets,
            pb::DiffSection::DefaultRoutes,
            pb::DiffSection::Dns
        ]
        .map(|s| (s as i32, "the scan is a quick scan"))
    );
    assert_eq!(q.compared_sections.len(), 9);

    // Errors.
    for (base, scan_id) in [(0, 424_242), (424_242, second)] {
        let status = diff_scans(&mut client, base, scan_id)
            .await
            .expect_err("unknown id");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert!(status.message().contains("424242"), "{}", status.message());
    }
    let refused = scan(&mut client, &address, 2200, pb::ScanType::Quick).await;
    assert_eq!(refused.status, pb::ScanStatus::Failed as i32);
    for (base, scan_id, field) in [
        (0, refused.id, "scan_id: "),
        (refused.id, second, "base_scan_id: "),
    ] {
        let status = diff_scans(&mut client, base, scan_id)
            .await
            .expect_err("a failed scan");
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(
            status.message().starts_with(field) && status.message().contains("is FAILED"),
            "{}",
            status.message()
        );
    }
    // Another host: the same sshd on port 2222 is (hostname, port) apart.
    let other = completed(&scan(&mut client, &address, 2222, pb::ScanType::Quick).await);
    let status = diff_scans(&mut client, second, other)
        .await
        .expect_err("different hosts");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("allow_different_hosts"),
        "{}",
        status.message()
    );
    let across = client
        .diff_scans(pb::DiffScansRequest {
            base_scan_id: second,
            scan_id: other,
            allow_different_hosts: true,
            ..Default::default()
        })
        .await
        .expect("allowed")
        .into_inner();
    assert_eq!(across.change_count, 0, "{across:#?}");
    assert_eq!(across.scan.as_ref().map(|s| s.port), Some(2222));
    for (request, field) in [
        (
            pb::DiffScansRequest {
                scan_id: 0,
                ..Default::default()
            },
            "scan_id: ",
        ),
        (
            pb::DiffScansRequest {
                scan_id: second,
                base_scan_id: -1,
                ..Default::default()
            },
            "base_scan_id: ",
        ),
        (
            pb::DiffScansRequest {
                scan_id: second,
                used_percent_threshold: Some(101.0),
                ..Default::default()
            },
            "used_percent_threshold: ",
        ),
    ] {
        let status = client.diff_scans(request).await.expect_err("invalid");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(field), "{}", status.message());
    }

    // hostscan diff: text, exit 1 with changes (as diff(1)).
    let url = server.url();
    let (first_id, second_id) = (first.to_string(), second.to_string());
    let out = hostscan(&["diff", &second_id, "--server", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    for want in [
        format!("scan {second} (full, "),
        format!(" against scan {first} (full, "),
        "~ packages         1 → 2 installed\n".into(),
        "+ package          hs-added 2.0-1 (dpkg)\n".into(),
        format!(
            "+ address          {} inet {}/32\n",
            host.bridge, host.new_address
        ),
        "+ listening        tcp 0.0.0.0:8080 perl (".into(),
        "4 changes\n".into(),
    ] {
        assert!(shown.contains(&want), "missing {want:?} in\n{shown}");
    }
    assert!(
        !shown.contains('\x1b'),
        "no colour off a terminal: {shown:?}"
    );
    let out = hostscan(&["diff", &first_id, &first_id, "--server", &url]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).ends_with("No changes\n"));
    let out = hostscan(&["diff", &first_id, &second_id, "--json", "--server", &url]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["packagesAdded"][0]["name"], "hs-added");
    assert_eq!(json["changeCount"], 4);
    assert_eq!(json["comparedSections"][0], "DIFF_SECTION_OS");
    let out = hostscan(&["diff", "424242", "--server", &url]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("NotFound"),
        "{}",
        text(&out.stderr)
    );
    // On a terminal: coloured by sign, unless NO_COLOR says otherwise.
    let command = format!("{BINARY} diff {second_id} --server {url}");
    let coloured = on_a_terminal(&command, &[]);
    assert!(
        coloured.contains("\x1b[32m+ package          hs-added"),
        "{coloured:?}"
    );
    let plain = on_a_terminal(&command, &[("NO_COLOR", "1")]);
    assert!(
        plain.contains("+ package          hs-added") && !plain.contains('\x1b'),
        "{plain:?}"
    );
}

/// `probe --diff-against`: the engine alone compares a scan with a saved
/// `probe --json`; no server, no database.
#[tokio::test]
async fn probe_diff_against_a_saved_scan() {
    let keys = Keys::generate();
    let mut host = ChangingHost::start(&keys).await;
    let dir = temp_dir("hostscan-probe-diff-");
    let known_hosts = dir.path().join("known_hosts");
    let saved = dir.path().join("before.json");
    let (address, user) = (host.sshd.host.clone(), host.sshd.user.clone());
    let probe = |extra: &[&str]| {
        let mut args = vec![
            "probe",
            address.as_str(),
            "--user",
            user.as_str(),
            "-i",
            keys.client.to_str().expect("utf-8"),
            "-F",
            "none",
            "--known-hosts",
            known_hosts.to_str().expect("utf-8"),
            "--full",
        ];
        args.extend_from_slice(extra);
        hostscan(&args)
    };
    let out = probe(&["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    std::fs::write(&saved, &out.stdout).expect("save the scan");
    let saved_arg = saved.to_str().expect("utf-8");

    // Unchanged: exit 0, no changes.
    let out = probe(&["--diff-against", saved_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).ends_with("No changes\n"),
        "{}",
        text(&out.stdout)
    );

    host.change().await;
    let out = probe(&["--diff-against", saved_arg, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let d: pb::ScanDiff =
        pb::from_json(&text(&out.stdout), "hostscan.v1.ScanDiff").expect("a ScanDiff");
    assert_eq!(d.base.as_ref().map(|b| b.scan_id), Some(0));
    assert_exactly_the_change(&d, &host);
    let out = probe(&["--diff-against", saved_arg]);
    assert_eq!(out.status.code(), Some(1));
    let shown = text(&out.stdout);
    assert!(
        shown.starts_with("this probe (full, ")
            && shown.contains(" against the saved scan (full, "),
        "{shown}"
    );
    assert!(
        shown.contains("+ package          hs-added 2.0-1 (dpkg)"),
        "{shown}"
    );

    // Files that cannot be compared: exit 2 before connecting, saying why.
    let bad = dir.path().join("bad.json");
    for (content, why) in [
        ("not json", "not a scan in JSON"),
        (
            r#"{"status": "SCAN_STATUS_FAILED", "results": {}}"#,
            "only COMPLETED scans can be compared",
        ),
    ] {
        std::fs::write(&bad, content).expect("write");
        let out = probe(&["--diff-against", bad.to_str().expect("utf-8")]);
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains(why), "{}", text(&out.stderr));
    }
    let other_host = saved_arg.to_string();
    let out = probe(&["--diff-against", &other_host, "--port", "2222"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--allow-different-hosts"),
        "{}",
        text(&out.stderr)
    );
    let out = probe(&[
        "--diff-against",
        &other_host,
        "--port",
        "2222",
        "--allow-different-hosts",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    // A probe that fails has nothing to compare: the scan says why, exit 2.
    let out = probe(&[
        "--diff-against",
        &other_host,
        "--port",
        "2200",
        "--allow-different-hosts",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let failed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the scan");
    assert_eq!(
        failed["error"]["kind"],
        "SCAN_ERROR_KIND_CONNECTION_REFUSED"
    );
    assert!(
        text(&out.stderr).contains("cannot compare: the scan is FAILED"),
        "{}",
        text(&out.stderr)
    );
}

/// Runs a scan through claim and finish, as a worker would, with one
/// package listed.
async fn stored(store: &Store, host: &str, port: u16, t: ScanType, status: ScanStatus) -> i64 {
    let results = ScanResults {
        packages: Some(hostscan::model::facts::Packages {
            manager: "dpkg".into(),
            count: 1,
            recent: Vec::new(),
            installed: Some(vec![hostscan::model::facts::InstalledPackage {
                name: "libc6".into(),
                version: "2.36-9".into(),
            }]),
        }),
        ..Default::default()
    };
    stored_with(store, host, port, t, status, &results).await
}

async fn stored_with(
    store: &Store,
    host: &str,
    port: u16,
    t: ScanType,
    status: ScanStatus,
    results: &ScanResults,
) -> i64 {
    let (scan, _) = store
        .create(NewScan {
            hostname: host.into(),
            port,
            username: "scanner".into(),
            scan_type: t,
            request_id: None,
            proxy_jump: String::new(),
        })
        .await
        .expect("create");
    let claimed = store.claim_next("w", LEASE).await.expect("claim");
    assert_eq!(claimed.map(|c| c.id), Some(scan.id));
    let error = (status != ScanStatus::Completed).then(|| hostscan::model::ScanError {
        kind: hostscan::model::ScanErrorKind::Timeout,
        message: "slow".into(),
    });
    store
        .finish(scan.id, "w", status, results, error.as_ref())
        .await
        .expect("finish")
        .expect("held");
    scan.id
}

/// DiffScans' default base: the newest earlier COMPLETED scan of the same
/// host (hostname and port) of the same or a richer type, read through
/// `scans_host_completed_idx` (the query plan says so on both backends).
async fn the_default_base_is_the_previous_completed_scan(backend: Backend) {
    use ScanStatus::{Completed, Failed};
    use ScanType::{Full, Quick};
    let db = TestDb::new(backend).await;
    let store = db.store_as("w");
    let f1 = stored(&store, "a.example", 22, Full, Completed).await;
    let q1 = stored(&store, "a.example", 22, Quick, Completed).await;
    let _failed = stored(&store, "a.example", 22, Full, Failed).await;
    let _other_port = stored(&store, "a.example", 2222, Full, Completed).await;
    let _other_host = stored(&store, "b.example", 22, Full, Completed).await;
    let q2 = stored(&store, "a.example", 22, Quick, Completed).await;
    let f2 = stored(&store, "a.example", 22, Full, Completed).await;
    let base = |before: i64, types: &'static [ScanType]| {
        let store = store.clone();
        async move {
            store
                .previous_completed("a.example", 22, before, types)
                .await
                .expect("lookup")
                .map(|s| s.id)
        }
    };
    let either = hostscan::diff::base_types(Quick);
    assert_eq!(either, [Quick, Full]);
    assert_eq!(base(f2, hostscan::diff::base_types(Full)).await, Some(f1));
    assert_eq!(base(f2, either).await, Some(q2));
    assert_eq!(base(q2, either).await, Some(q1));
    assert_eq!(base(q1, either).await, Some(f1));
    assert_eq!(base(f1, either).await, None);
    // The stored package list comes back as it went in.
    let scan = store.get(f1).await.expect("get").expect("scan");
    let installed = scan
        .results
        .and_then(|r| r.packages)
        .and_then(|p| p.installed);
    assert_eq!(installed.map(|l| l.len()), Some(1));

    // Served by the index, among 20,000 completed scans of 500 hosts.
    let sql = "SELECT id FROM scans WHERE hostname = 'h7.example' AND port = 22 \
               AND scan_type = 'full' AND status = 'completed' AND id < 15000 \
               ORDER BY id DESC LIMIT 1";
    let plan = match &db {
        TestDb::Postgres(pg) => {
            pg.execute(
                "INSERT INTO scans (hostname, port, username, scan_type, status, progress, \
                   created_at, completed_at, results) \
                 SELECT 'h' || (g % 500) || '.example', 22, 'u', \
                   CASE WHEN g % 3 = 0 THEN 'full' ELSE 'quick' END, 'completed', 100, \
                   now(), now(), '{}'::jsonb FROM generate_series(1, 20000) g; \
                 ANALYZE scans;",
            )
            .await;
            pg.explain(sql).await
        }
        TestDb::Sqlite { path, .. } => {
            db.execute(
                "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20000) \
                 INSERT INTO scans (hostname, port, username, scan_type, status, progress, \
                   created_at, completed_at, results) \
                 SELECT 'h' || (n % 500) || '.example', 22, 'u', \
                   CASE WHEN n % 3 = 0 THEN 'full' ELSE 'quick' END, 'completed', 100, \
                   0, 0, '{}' FROM g; \
                 ANALYZE;",
            )
            .await;
            sqlite_plan(path, sql).await
        }
    };
    assert!(
        plan.contains("scans_host_completed_idx") && !plan.contains("Seq Scan"),
        "{plan}"
    );
}

/// SQLite's `EXPLAIN QUERY PLAN` for `sql`, one step a line.
async fn sqlite_plan(path: &Path, sql: &str) -> String {
    use diesel::prelude::*;
    #[derive(diesel::QueryableByName)]
    struct Step {
        #[diesel(sql_type = diesel::sql_types::Text)]
        detail: String,
    }
    let (path, sql) = (
        path.display().to_string(),
        format!("EXPLAIN QUERY PLAN {sql}"),
    );
    tokio::task::spawn_blocking(move || {
        let mut c = diesel::SqliteConnection::establish(&path).expect("sqlite");
        let steps: Vec<Step> = diesel::sql_query(&sql).load(&mut c).expect("plan");
        steps
            .into_iter()
            .map(|s| s.detail)
            .collect::<Vec<_>>()
            .join("\n")
    })
    .await
    .expect("join")
}

both_backends!(the_default_base_is_the_previous_completed_scan);

/// What a scan costs to store, for the README's retention advice: real
/// quick and full scans of the test sshd (this machine), stored as a worker
/// stores them, measured in PostgreSQL (`pg_column_size` of the results,
/// table growth with TOAST and indexes) and in the embedded SQLite (file
/// growth after a checkpoint). Prints the numbers; fails if a scan costs
/// more than the README says.
#[tokio::test]
async fn what_a_scan_costs_to_store() {
    use hostscan::scan::Limits;
    const N: usize = 100;
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let (_known, opts) = crate::support::sshd::tofu_options(&keys);
    let mut results = Vec::new();
    for t in [ScanType::Quick, ScanType::Full] {
        let (outcome, _) =
            crate::engine::scan_with(&sshd.target(), t, &opts, &Limits::default()).await;
        assert!(outcome.error.is_none(), "{:?}", outcome.error);
        results.push((t, outcome.results));
    }
    let packages = results[1]
        .1
        .packages
        .as_ref()
        .and_then(|p| p.installed.as_ref())
        .map_or(0, Vec::len);
    assert!(packages > 0, "a full scan lists this machine's packages");
    let mut report = format!("this machine: {packages} packages\n");
    // The same full scan as stored before scans kept the package list: what
    // the list costs.
    let mut without = results[1].1.clone();
    if let Some(p) = without.packages.as_mut() {
        p.installed = None;
    }
    let cases = [
        (
            "quick",
            ScanType::Quick,
            &results[0].1,
            Some(8 * 1024u64),
            Some(16 * 1024u64),
        ),
        (
            "full",
            ScanType::Full,
            &results[1].1,
            Some(64 * 1024),
            Some(160 * 1024),
        ),
        (
            "full without the package list",
            ScanType::Full,
            &without,
            None,
            None,
        ),
    ];

    let pg = TestDb::new(Backend::Postgres).await;
    let TestDb::Postgres(pgdb) = &pg else {
        unreachable!("PostgreSQL")
    };
    let store = pg.store_as("w");
    let size = |sql: &'static str| async move {
        pgdb.query_text(sql)
            .await
            .trim()
            .parse::<u64>()
            .expect("a number")
    };
    for (i, (kind, t, r, limit, _)) in cases.iter().enumerate() {
        let before = size("SELECT pg_total_relation_size('scans')::text AS line").await;
        let host = format!("case{i}.example");
        for _ in 0..N {
            stored_with(&store, &host, 22, *t, ScanStatus::Completed, r).await;
        }
        let after = size("SELECT pg_total_relation_size('scans')::text AS line").await;
        let column = pgdb
            .query_text(&format!(
                "SELECT (avg(pg_column_size(results))::bigint)::text || ' ' || \
                   (avg(octet_length(results::text))::bigint)::text AS line \
                 FROM scans WHERE hostname = '{host}'"
            ))
            .await;
        let mut parts = column
            .split_whitespace()
            .map(|n| n.parse::<u64>().expect("n"));
        let (stored, text) = (parts.next().expect("size"), parts.next().expect("text"));
        let growth = after.saturating_sub(before) / N as u64;
        report.push_str(&format!(
            "PostgreSQL {kind}: results {stored} B stored ({text} B as JSON text), \
             table+TOAST+indexes {growth} B per scan\n"
        ));
        if let Some(limit) = limit {
            assert!(stored <= *limit, "{kind} results take {stored} B > {limit}");
        }
    }

    let lite = TestDb::new(Backend::Sqlite).await;
    let TestDb::Sqlite { path, .. } = &lite else {
        unreachable!("SQLite")
    };
    let store = lite.store_as("w");
    for (i, (kind, t, r, _, limit)) in cases.iter().enumerate() {
        lite.execute("PRAGMA wal_checkpoint(TRUNCATE)").await;
        let before = std::fs::metadata(path).expect("db file").len();
        let host = format!("case{i}.example");
        for _ in 0..N {
            stored_with(&store, &host, 22, *t, ScanStatus::Completed, r).await;
        }
        lite.execute("PRAGMA wal_checkpoint(TRUNCATE)").await;
        let after = std::fs::metadata(path).expect("db file").len();
        let growth = after.saturating_sub(before) / N as u64;
        report.push_str(&format!("SQLite {kind}: file grows {growth} B per scan\n"));
        if let Some(limit) = limit {
            assert!(growth <= *limit, "{kind}: {growth} B > {limit}");
        }
    }
    eprintln!("{report}");
}
