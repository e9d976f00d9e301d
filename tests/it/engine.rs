//! The scan engine against a real OpenSSH sshd on loopback: facts are
//! cross-checked with what this machine reports about itself.

use std::time::Duration;

use hostscan::model::{ScanResults, ScanType};
use hostscan::scan::{self, Limits, Outcome, Progress};
use hostscan::ssh::{ConnectOptions, HostKeyPolicy, Target};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::support::sshd::{Keys, Options, Sshd, Userland, connect_options, tofu_options};
use crate::support::{run, temp_dir};

/// Runs one scan and returns its outcome and every progress report.
pub async fn scan_with(
    target: &Target,
    scan_type: ScanType,
    opts: &ConnectOptions,
    limits: &Limits,
) -> (Outcome, Vec<Progress>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let outcome = scan::run(
        target,
        scan_type,
        opts,
        limits,
        &tx,
        &CancellationToken::new(),
    )
    .await;
    drop(tx);
    let mut progress = Vec::new();
    while let Some(p) = rx.recv().await {
        progress.push(p);
    }
    (outcome, progress)
}

fn meminfo_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .expect("meminfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("field")
}

fn assert_quick_facts(r: &ScanResults) {
    assert!(r.step_errors.is_empty(), "step errors: {:?}", r.step_errors);
    assert_eq!(r.hostname, run("uname", &["-n"]).trim());
    let os = r.os.as_ref().expect("os");
    assert_eq!(os.kernel, run("uname", &["-r"]).trim());
    assert_eq!(os.arch, run("uname", &["-m"]).trim());
    let os_release = std::fs::read_to_string("/etc/os-release").expect("os-release");
    let id = os_release
        .lines()
        .find_map(|l| l.strip_prefix("ID="))
        .expect("ID")
        .trim_matches('"');
    assert_eq!(os.id, id);
    assert!(!os.pretty_name.is_empty());
    let memory = r.memory.as_ref().expect("memory");
    assert_eq!(memory.total_bytes, meminfo_kb("MemTotal") * 1024);
    assert!(memory.available_bytes > 0 && memory.available_bytes <= memory.total_bytes);
    assert_eq!(memory.swap_total_bytes, meminfo_kb("SwapTotal") * 1024);
    // Not every machine has a `/` row (containers, chroots): check each
    // reported file system against this machine's own df.
    crate::support::assert_disks_of_this_machine(r.disks.iter().map(|d| d.mount.as_str()));
    for disk in &r.disks {
        assert!(
            disk.total_bytes > 0 && disk.used_bytes <= disk.total_bytes,
            "{disk:?}"
        );
        let local = run("df", &["-Pk", &disk.mount]);
        let size_kib: u64 = local
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("df -Pk {}: {local}", disk.mount));
        assert_eq!(disk.total_bytes, size_kib * 1024, "{disk:?} vs {local}");
    }
    assert!(
        !r.disks
            .iter()
            .any(|d| d.fs_type == "tmpfs" || d.fs_type == "proc"),
        "{:?}",
        r.disks
    );
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .expect("uptime")
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("uptime value");
    let reported = r.uptime_seconds.expect("uptime") as f64;
    assert!(
        (reported - uptime).abs() < 60.0,
        "uptime {reported} vs {uptime}"
    );
    assert_new_quick_facts(r);
}

/// cpu, virtualization and timezone against what this machine says itself.
fn assert_new_quick_facts(r: &ScanResults) {
    let cpu = r.cpu.as_ref().expect("cpu");
    let nproc: u32 = run("nproc", &["--all"]).trim().parse().expect("nproc");
    assert_eq!(cpu.logical_cpus, nproc, "{cpu:?}");
    assert!(!cpu.model_name.is_empty(), "{cpu:?}");
    if cpu.sockets > 0 && cpu.cores_per_socket > 0 && cpu.threads_per_core > 0 {
        assert_eq!(
            cpu.sockets * cpu.cores_per_socket * cpu.threads_per_core,
            nproc,
            "{cpu:?}"
        );
    }

    let tz = r.timezone.as_ref().expect("timezone");
    match std::fs::read_link("/etc/localtime") {
        Ok(target) => {
            let target = target.to_string_lossy().into_owned();
            let zone = target.rsplit_once("zoneinfo/").expect("a zoneinfo link").1;
            assert_eq!(tz.name, zone, "{tz:?}");
            assert_eq!(tz.source, "localtime-link");
        }
        Err(_) => assert!(!tz.source.is_empty() || tz.name.is_empty(), "{tz:?}"),
    }
    let offset = run("date", &["+%z"]);
    let offset = offset.trim();
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let hhmm: i32 = offset[1..].parse().expect("offset");
    assert_eq!(
        tz.utc_offset_seconds,
        sign * (hhmm / 100 * 3600 + hhmm % 100 * 60)
    );

    let virt = r.virtualization.as_ref().expect("virtualization");
    assert_eq!(virt, &expected_virtualization(), "{virt:?}");
}

/// What systemd-detect-virt says about this machine (container first).
fn expected_virtualization() -> hostscan::model::facts::Virtualization {
    use hostscan::model::facts::{Virtualization, VirtualizationRole};
    let sdv = ["/usr/bin/systemd-detect-virt", "/bin/systemd-detect-virt"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!("systemd-detect-virt not found: install the `systemd` package (see scripts/setup-debian)")
        });
    let ask = |flag: &str| {
        let out = std::process::Command::new(sdv)
            .arg(flag)
            .output()
            .expect("systemd-detect-virt runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (container, vm) = (ask("--container"), ask("--vm"));
    let (role, kind) = match (container.as_str(), vm.as_str()) {
        ("none", "none") => (VirtualizationRole::Host, "none".to_string()),
        ("none", _) => (VirtualizationRole::Vm, vm),
        _ => (VirtualizationRole::Container, container),
    };
    Virtualization {
        role,
        kind,
        source: "systemd-detect-virt".into(),
    }
}

fn assert_progress(progress: &[Progress]) {
    assert!(!progress.is_empty());
    assert_eq!(progress[0].step, "connect");
    let percents: Vec<i32> = progress.iter().map(|p| p.percent).collect();
    assert!(
        percents.windows(2).all(|w| w[0] <= w[1]),
        "progress went backwards: {percents:?}"
    );
    assert_eq!(percents.last(), Some(&100), "{percents:?}");
}

#[tokio::test]
async fn quick_scan_of_this_machine() {
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let known = temp_dir("hostscan-kh-");
    let known_hosts = known.path().join("known_hosts");
    let opts = connect_options(
        std::slice::from_ref(&keys.client),
        &known_hosts,
        HostKeyPolicy::Tofu,
    );
    let (outcome, progress) =
        scan_with(&sshd.target(), ScanType::Quick, &opts, &Limits::default()).await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert_quick_facts(&outcome.results);
    assert!(outcome.results.packages.is_none() && outcome.results.processes.is_empty());
    assert_progress(&progress);
    // TOFU pinned the key, and the pin matches the server's key.
    let pinned = std::fs::read_to_string(&known_hosts).expect("known_hosts written");
    assert_eq!(pinned, sshd.known_hosts_line());
    // A second scan trusts the pin.
    let (again, _) = scan_with(&sshd.target(), ScanType::Quick, &opts, &Limits::default()).await;
    assert!(again.error.is_none(), "{:?}", again.error);
}

#[tokio::test]
async fn full_scan_of_this_machine() {
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let (_known, opts) = tofu_options(&keys);
    let own = OwnSockets::open();
    let (outcome, progress) =
        scan_with(&sshd.target(), ScanType::Full, &opts, &Limits::default()).await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    let r = &outcome.results;
    assert_quick_facts(r);
    assert_progress(&progress);
    own.assert_listed(r, true);
    assert_reboot_required(r);

    let packages = r.packages.as_ref().expect("packages");
    assert_eq!(packages.manager, "dpkg");
    let installed = run("dpkg-query", &["-W", "-f", "${db:Status-Abbrev}\n"])
        .lines()
        .filter(|l| matches!(l.get(1..2), Some("i" | "t" | "W")))
        .count() as u64;
    assert_eq!(packages.count, installed);
    assert!(!packages.recent.is_empty() && packages.recent.len() <= 50);
    let times: Vec<i64> = packages
        .recent
        .iter()
        .map(|p| p.installed_at.expect("install time"))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "recent not newest first"
    );

    assert!(!r.processes.is_empty() && r.processes.len() <= 20);
    assert!(
        r.processes
            .windows(2)
            .all(|w| w[0].rss_bytes >= w[1].rss_bytes)
    );
    assert!(
        r.processes
            .iter()
            .all(|p| p.pid > 0 && !p.command.is_empty())
    );

    let lo = r
        .network_interfaces
        .iter()
        .find(|i| i.name == "lo")
        .expect("lo");
    assert!(
        lo.addresses
            .iter()
            .any(|a| a.family == "inet" && a.address == "127.0.0.1" && a.prefix_length == 8),
        "{lo:?}"
    );
    assert!(lo.mtu > 0);
}

/// A TCP listener and a bound UDP socket this test opened itself.
struct OwnSockets {
    tcp: std::net::TcpListener,
    udp: std::net::UdpSocket,
}

impl OwnSockets {
    fn open() -> Self {
        Self {
            tcp: std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp"),
            udp: std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp"),
        }
    }

    /// Both appear; with `owners`, under this process's pid and name.
    fn assert_listed(&self, r: &ScanResults, owners: bool) {
        let me = std::process::id() as i32;
        let comm = std::fs::read_to_string("/proc/self/comm").expect("comm");
        for (protocol, port) in [
            ("tcp", self.tcp.local_addr().expect("addr").port()),
            ("udp", self.udp.local_addr().expect("addr").port()),
        ] {
            let s = r
                .listening_sockets
                .iter()
                .find(|s| s.protocol == protocol && s.port == u32::from(port))
                .unwrap_or_else(|| panic!("{protocol} {port} not in {:?}", r.listening_sockets));
            assert_eq!(
                (s.family.as_str(), s.local_address.as_str()),
                ("inet", "127.0.0.1")
            );
            if owners {
                assert_eq!(s.pid, Some(me), "{s:?}");
                assert_eq!(s.process, comm.trim(), "{s:?}");
            }
        }
    }
}

/// reboot_required against this machine's marker file and kernels.
fn assert_reboot_required(r: &ScanResults) {
    use hostscan::model::facts::RebootStatus;
    let reboot = r.reboot_required.as_ref().expect("reboot_required");
    let running = run("uname", &["-r"]);
    assert_eq!(reboot.running_kernel, running.trim());
    let marker = std::path::Path::new("/var/run/reboot-required").exists();
    let modules: Vec<String> = std::fs::read_dir("/lib/modules")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(|c: char| c.is_ascii_digit()))
                .collect()
        })
        .unwrap_or_default();
    if marker {
        assert_eq!(reboot.status, RebootStatus::Required, "{reboot:?}");
    } else if modules.is_empty() {
        // A container: no kernels to compare, no marker.
        assert_eq!(reboot.status, RebootStatus::Unknown, "{reboot:?}");
        assert_eq!(reboot.newest_kernel, "");
    } else {
        assert_ne!(reboot.status, RebootStatus::Unknown, "{reboot:?}");
        assert!(modules.contains(&reboot.newest_kernel), "{reboot:?}");
    }
}

#[tokio::test]
async fn busybox_userland_yields_the_same_facts() {
    let keys = Keys::generate();
    let busybox = Userland::busybox();
    let sshd = Sshd::start(
        &keys,
        Options {
            path_first: Some(busybox.path()),
            ..Default::default()
        },
    )
    .await;
    let (_known, opts) = tofu_options(&keys);
    let own = OwnSockets::open();
    let (outcome, _) = scan_with(&sshd.target(), ScanType::Full, &opts, &Limits::default()).await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    let r = &outcome.results;
    assert_quick_facts(r);
    // busybox ps cuts user names: the processes came from /proc, with
    // account names from uids.
    assert!(!r.processes.is_empty());
    let me = std::process::id() as i32;
    if let Some(p) = r.processes.iter().find(|p| p.pid == me) {
        assert_eq!(p.user, crate::support::current_user());
    }
    // Debian's busybox netstat has no -p: sockets without owners.
    own.assert_listed(r, false);
    assert_reboot_required(r);
    assert!(
        r.processes
            .windows(2)
            .all(|w| w[0].rss_bytes >= w[1].rss_bytes)
    );
    // busybox ip has no -j: the `ip -o` branch ran.
    let lo = r
        .network_interfaces
        .iter()
        .find(|i| i.name == "lo")
        .expect("lo");
    assert!(
        lo.addresses
            .iter()
            .any(|a| a.address == "127.0.0.1" && a.prefix_length == 8),
        "{lo:?}"
    );
}

#[tokio::test]
async fn rsa_and_ecdsa_keys_authenticate_after_a_rejected_key() {
    let keys = Keys::generate();
    let rsa = keys.extra("client_rsa", "rsa");
    let ecdsa = keys.extra("client_ecdsa", "ecdsa");
    let unauthorized = keys.extra("stranger", "ed25519");
    let sshd = Sshd::start(
        &keys,
        Options {
            also_authorize: vec![rsa.clone(), ecdsa.clone()],
            ..Default::default()
        },
    )
    .await;
    let known = temp_dir("hostscan-kh-");
    for key in [&rsa, &ecdsa] {
        let opts = connect_options(
            &[unauthorized.clone(), key.clone()],
            &known.path().join("kh"),
            HostKeyPolicy::Tofu,
        );
        let (outcome, _) =
            scan_with(&sshd.target(), ScanType::Quick, &opts, &Limits::default()).await;
        assert!(
            outcome.error.is_none(),
            "{}: {:?}",
            key.display(),
            outcome.error
        );
    }
}

#[tokio::test]
async fn strict_policy_needs_the_key_in_known_hosts() {
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let known = temp_dir("hostscan-kh-");
    let known_hosts = known.path().join("known_hosts");
    let opts = connect_options(
        std::slice::from_ref(&keys.client),
        &known_hosts,
        HostKeyPolicy::Strict,
    );
    let (outcome, _) = scan_with(&sshd.target(), ScanType::Quick, &opts, &Limits::default()).await;
    let error = outcome.error.expect("unknown host refused");
    assert_eq!(error.kind, hostscan::model::ScanErrorKind::HostKeyMismatch);
    assert!(
        error.message.contains("SHA256:") && error.message.contains("strict"),
        "{}",
        error.message
    );
    assert!(!known_hosts.exists(), "strict must not write known_hosts");

    std::fs::write(&known_hosts, sshd.known_hosts_line()).expect("write known_hosts");
    let (outcome, _) = scan_with(&sshd.target(), ScanType::Quick, &opts, &Limits::default()).await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
}

#[tokio::test]
async fn scan_timeout_bounds_the_whole_scan() {
    let keys = Keys::generate();
    let (sshd, _fakes) = Sshd::with_fakes(&keys, &[("df", "exec sleep 600")]).await;
    let (_known, opts) = tofu_options(&keys);
    let limits = Limits {
        command_timeout: Duration::from_secs(120),
        scan_timeout: Duration::from_secs(3),
        ..Limits::default()
    };
    let (outcome, _) = scan_with(&sshd.target(), ScanType::Quick, &opts, &limits).await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    let errors = &outcome.results.step_errors;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].step, "disks");
    assert!(
        errors[0].message.contains("scan timeout (3s)"),
        "{}",
        errors[0].message
    );
    assert!(outcome.results.memory.is_some() && outcome.results.os.is_some());
}
