//! Facts from real userlands other than this machine's: Debian bullseye and
//! trixie trees (debootstrap, cached by `scripts/setup-debian`), each running
//! its own sshd chrooted in a private mount namespace, so every command a
//! scan runs is that release's own (procps, iproute2, dpkg, coreutils, dash);
//! and rpm, pacman and dpkg databases written by the real tools, mounted
//! where those managers keep them for an sshd in a namespace of its own.

use std::path::{Path, PathBuf};

use hostscan::model::facts::{RebootStatus, VirtualizationRole};
use hostscan::model::{ScanResults, ScanType};
use hostscan::scan::Limits;

use crate::engine::scan_with;
use crate::support::sshd::{Keys, Root, Sshd, tofu_options};
use crate::support::{Tied, run, temp_dir};

/// The cached tree of `suite`; a failure naming the script when missing.
fn tree(suite: &str) -> PathBuf {
    let base = std::env::var_os("HOSTSCAN_TEST_TREES")
        .map_or_else(|| PathBuf::from("/var/cache/hostscan-test"), PathBuf::from);
    let t = base.join(suite);
    assert!(
        t.join(".hostscan-ready").exists(),
        "no Debian {suite} tree at {}: run scripts/setup-debian (needs the `debootstrap` package)",
        t.display()
    );
    t
}

/// A failure naming the Debian package when `tool` is missing.
fn need(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(tool).exists());
    assert!(
        found,
        "`{tool}` not found: install the `{package}` package (scripts/setup-debian)"
    );
}

fn chroot_out(tree: &Path, args: &[&str]) -> String {
    let mut all = vec![tree.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    run("chroot", &all)
}

async fn full_scan(sshd: &Sshd, keys: &Keys) -> ScanResults {
    let (_known, opts) = tofu_options(keys);
    let (outcome, _) = scan_with(&sshd.target(), ScanType::Full, &opts, &Limits::default()).await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    outcome.results
}

/// What systemd-detect-virt on this machine says about the hardware: a
/// chroot carries no container markers, so its evidence is the VM's (or none).
fn expected_vm() -> (VirtualizationRole, Vec<String>) {
    need("systemd-detect-virt", "systemd");
    let out = std::process::Command::new("systemd-detect-virt")
        .arg("--vm")
        .output()
        .expect("systemd-detect-virt runs");
    let vm = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if vm == "none" {
        (VirtualizationRole::Host, vec!["none".into()])
    } else {
        // Without DMI files only CPUID speaks: lscpu names the vendor, the
        // cpuinfo flag only that there is one.
        (VirtualizationRole::Vm, vec![vm, "vm-other".into()])
    }
}

async fn debian_release(suite: &str) {
    need("unshare", "util-linux");
    need("debootstrap", "debootstrap");
    let t = tree(suite);
    let keys = Keys::generate();
    // A process of an account whose name procps cuts to `appserv+`, large
    // enough to be among the top 20 by memory.
    let _big = Tied::spawn(
        "big process",
        &format!(
            "chroot --userspec=appserviceuser:nogroup {} perl -e '$SIG{{TERM}} = sub {{ exit 0 }}; $x = \"a\" x (300 << 20); sleep 600'",
            t.display()
        ),
        "TERM",
        "",
    );
    let setup = format!(
        "printf '*** System restart required ***\\n' > {t}/run/reboot-required\n\
         printf 'libc6\\nlinux-image-amd64\\n' > {t}/run/reboot-required.pkgs",
        t = t.display()
    );
    let sshd = Sshd::start_namespaced(&keys, Root::Chroot(&t), &setup).await;
    let r = full_scan(&sshd, &keys).await;
    assert!(r.step_errors.is_empty(), "{suite}: {:?}", r.step_errors);

    let os = r.os.as_ref().expect("os");
    let release = std::fs::read_to_string(t.join("usr/lib/os-release")).expect("os-release");
    let version_id = release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_ID="))
        .expect("VERSION_ID")
        .trim_matches('"');
    assert_eq!(
        (os.id.as_str(), os.version.as_str()),
        ("debian", version_id)
    );

    // dpkg: the tree's own count, and versions as its dpkg-query shows them.
    let packages = r.packages.as_ref().expect("packages");
    assert_eq!(packages.manager, "dpkg");
    let installed = chroot_out(&t, &["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\n"])
        .lines()
        .filter(|l| matches!(l.get(1..2), Some("i" | "t" | "W")))
        .count() as u64;
    assert_eq!(packages.count, installed, "{suite}");
    assert!(!packages.recent.is_empty());
    for p in &packages.recent {
        let shown = chroot_out(&t, &["dpkg-query", "-W", "-f", "${Version}", &p.name]);
        assert_eq!(p.version, shown, "{suite}: {}", p.name);
    }

    // Process owners are whole account names, never procps's `appserv+`.
    assert!(
        r.processes
            .iter()
            .any(|p| p.user == "appserviceuser" && p.command.starts_with("perl")),
        "{suite}: {:?}",
        r.processes
    );
    assert!(
        r.processes.iter().all(|p| !p.user.ends_with('+')),
        "{:?}",
        r.processes
    );

    let cpu = r.cpu.as_ref().expect("cpu");
    assert_eq!(
        cpu.logical_cpus.to_string(),
        run("nproc", &["--all"]).trim()
    );
    let tz = r.timezone.as_ref().expect("timezone");
    let link = std::fs::read_link(t.join("etc/localtime")).expect("the tree's localtime link");
    assert!(
        link.to_string_lossy()
            .ends_with(&format!("zoneinfo/{}", tz.name)),
        "{tz:?} vs {link:?}"
    );
    let virt = r.virtualization.as_ref().expect("virtualization");
    let (role, kinds) = expected_vm();
    assert_eq!(virt.role, role, "{suite}: {virt:?}");
    assert!(kinds.contains(&virt.kind), "{suite}: {virt:?} vs {kinds:?}");

    // The tree's own sshd, as its own ss sees it.
    let ssh = r
        .listening_sockets
        .iter()
        .find(|s| s.protocol == "tcp" && s.port == u32::from(sshd.port))
        .unwrap_or_else(|| panic!("{suite}: sshd not in {:?}", r.listening_sockets));
    assert_eq!(
        (ssh.local_address.as_str(), ssh.process.as_str()),
        ("127.0.0.1", "sshd")
    );
    assert!(ssh.pid.is_some());

    let reboot = r.reboot_required.as_ref().expect("reboot_required");
    assert_eq!(reboot.status, RebootStatus::Required, "{reboot:?}");
    assert_eq!(reboot.packages, ["libc6", "linux-image-amd64"]);
}

#[tokio::test]
async fn debian_bullseye_userland() {
    debian_release("bullseye").await;
}

#[tokio::test]
async fn debian_trixie_userland() {
    debian_release("trixie").await;
}

/// A Debian host without os-release (both files empty): the release comes
/// from /etc/debian_version, never from the kernel.
#[tokio::test]
async fn os_identity_without_os_release() {
    need("unshare", "util-linux");
    let t = tree("bullseye");
    let keys = Keys::generate();
    let setup = format!(
        "mount --bind /dev/null {t}/usr/lib/os-release",
        t = t.display()
    );
    let sshd = Sshd::start_namespaced(&keys, Root::Chroot(&t), &setup).await;
    let (_known, opts) = tofu_options(&keys);
    let (outcome, _) = scan_with(&sshd.target(), ScanType::Quick, &opts, &Limits::default()).await;
    let os = outcome.results.os.expect("os");
    let debian_version = std::fs::read_to_string(t.join("etc/debian_version")).expect("version");
    assert_eq!(
        (os.name.as_str(), os.version.as_str(), os.id.as_str()),
        ("Debian GNU/Linux", debian_version.trim(), "debian")
    );
    assert_ne!(os.version, os.kernel);
}

/// An rpm database written by the real rpm, with and without an epoch,
/// on a host configured like an RPM distribution (`%_dbpath /var/lib/rpm`;
/// Debian's rpm defaults to `~/.rpmdb`) and without dpkg's database.
#[tokio::test]
async fn rpm_versions_carry_epochs() {
    need("rpmbuild", "rpm");
    need("unshare", "util-linux");
    let w = temp_dir("hostscan-rpm-");
    let top = w.path().join("top");
    let db = w.path().join("db");
    let empty = w.path().join("empty");
    std::fs::create_dir_all(&db).expect("db dir");
    std::fs::create_dir_all(&empty).expect("empty dir");
    for (name, epoch, version, release) in [
        ("hs-epoch", Some(2), "9.0.1378", "2"),
        ("hs-plain", None, "1.0", "1.el9"),
    ] {
        let spec = w.path().join(format!("{name}.spec"));
        let epoch = epoch.map_or(String::new(), |e| format!("Epoch: {e}\n"));
        std::fs::write(
            &spec,
            format!(
                "Name: {name}\nVersion: {version}\nRelease: {release}\n{epoch}\
                 Summary: hostscan test package\nLicense: MIT\nBuildArch: noarch\n\
                 %description\nA hostscan test package.\n%files\n"
            ),
        )
        .expect("spec");
        run(
            "rpmbuild",
            &[
                "-bb",
                "--quiet",
                "--define",
                &format!("_topdir {}", top.display()),
                spec.to_str().expect("utf-8"),
            ],
        );
    }
    let db_arg = db.to_str().expect("utf-8");
    run("rpm", &["--dbpath", db_arg, "--initdb"]);
    for rpm in std::fs::read_dir(top.join("RPMS/noarch")).expect("built rpms") {
        let rpm = rpm.expect("entry").path();
        run(
            "rpm",
            &[
                "--dbpath",
                db_arg,
                "-i",
                "--nodeps",
                "--justdb",
                rpm.to_str().expect("utf-8"),
            ],
        );
    }
    let keys = Keys::generate();
    let setup = format!(
        "mount -t tmpfs tmpfs /root\n\
         printf '%%_dbpath /var/lib/rpm\\n' > /root/.rpmmacros\n\
         mount --bind {db} /var/lib/rpm\n\
         mount --bind {empty} /var/lib/dpkg",
        db = db.display(),
        empty = empty.display()
    );
    let sshd = Sshd::start_namespaced(&keys, Root::Host, &setup).await;
    let r = full_scan(&sshd, &keys).await;
    let packages = r.packages.as_ref().expect("packages");
    assert_eq!((packages.manager.as_str(), packages.count), ("rpm", 2));
    let version = |name: &str| {
        packages
            .recent
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.version.clone())
            .unwrap_or_else(|| panic!("{name} in {packages:?}"))
    };
    assert_eq!(version("hs-epoch"), "2:9.0.1378-2");
    assert_eq!(version("hs-plain"), "1.0-1.el9");
    // The same as rpm itself prints with an epoch-aware format.
    let shown = run(
        "rpm",
        &[
            "--dbpath",
            db_arg,
            "-q",
            "--qf",
            "%{EPOCH}:%{VERSION}-%{RELEASE}",
            "hs-epoch",
        ],
    );
    assert_eq!(shown, "2:9.0.1378-2");
}

/// A pacman database written by the real pacman (`pacman -U`), with an epoch.
#[tokio::test]
async fn pacman_versions_carry_epochs() {
    need("pacman", "pacman-package-manager");
    need("unshare", "util-linux");
    let w = temp_dir("hostscan-pacman-");
    let root = w.path().join("root");
    let empty = w.path().join("empty");
    std::fs::create_dir_all(root.join("var/lib/pacman")).expect("db dir");
    std::fs::create_dir_all(&empty).expect("empty dir");
    let conf = w.path().join("pacman.conf");
    std::fs::write(&conf, "[options]\nSigLevel = Never\nArchitecture = auto\n").expect("conf");
    for (name, version) in [("hs-epoch", "1:2.3-1"), ("hs-plain", "0.5-2")] {
        let dir = w.path().join(name);
        std::fs::create_dir_all(&dir).expect("pkg dir");
        std::fs::write(
            dir.join(".PKGINFO"),
            format!(
                "pkgname = {name}\npkgbase = {name}\npkgver = {version}\n\
                 pkgdesc = hostscan test package\nbuilddate = 1700000000\n\
                 packager = hostscan tests\nsize = 0\narch = any\n"
            ),
        )
        .expect("PKGINFO");
        let file = w.path().join(format!("{name}-{version}-any.pkg.tar.gz"));
        run(
            "tar",
            &[
                "-czf",
                file.to_str().expect("utf-8"),
                "-C",
                dir.to_str().expect("utf-8"),
                ".PKGINFO",
            ],
        );
        run(
            "pacman",
            &[
                "-U",
                "--root",
                root.to_str().expect("utf-8"),
                "--dbpath",
                root.join("var/lib/pacman").to_str().expect("utf-8"),
                "--config",
                conf.to_str().expect("utf-8"),
                "--cachedir",
                w.path().join("cache").to_str().expect("utf-8"),
                "--logfile",
                w.path().join("pacman.log").to_str().expect("utf-8"),
                "--noconfirm",
                "--noscriptlet",
                "--nodeps",
                file.to_str().expect("utf-8"),
            ],
        );
    }
    let keys = Keys::generate();
    let setup = format!(
        "mount --bind {db} /var/lib/pacman\nmount --bind {empty} /var/lib/dpkg",
        db = root.join("var/lib/pacman").display(),
        empty = empty.display()
    );
    let sshd = Sshd::start_namespaced(&keys, Root::Host, &setup).await;
    let r = full_scan(&sshd, &keys).await;
    let packages = r.packages.as_ref().expect("packages");
    assert_eq!((packages.manager.as_str(), packages.count), ("pacman", 2));
    let epoch = packages
        .recent
        .iter()
        .find(|p| p.name == "hs-epoch")
        .expect("hs-epoch");
    assert_eq!(epoch.version, "1:2.3-1");
    assert!(epoch.installed_at.is_some());
}

/// A dpkg database in every state the real dpkg produces for selections
/// and removals: `ii`, `hi`, `ri`, `pi` are installed; `ic` is not.
#[tokio::test]
async fn dpkg_counts_by_status_letter() {
    need("dpkg-deb", "dpkg");
    need("unshare", "util-linux");
    let w = temp_dir("hostscan-dpkg-");
    let root = w.path().join("root");
    let admin = root.join("var/lib/dpkg");
    for d in ["info", "updates"] {
        std::fs::create_dir_all(admin.join(d)).expect("admindir");
    }
    for f in ["status", "available"] {
        std::fs::write(admin.join(f), "").expect("admin file");
    }
    let root_arg = format!("--root={}", root.display());
    let names = [
        "hs-installed",
        "hs-held",
        "hs-removing",
        "hs-purging",
        "hs-conf",
    ];
    for name in names {
        let pkg = w.path().join(name);
        std::fs::create_dir_all(pkg.join("DEBIAN")).expect("DEBIAN");
        std::fs::create_dir_all(pkg.join("etc")).expect("etc");
        std::fs::write(
            pkg.join("DEBIAN/control"),
            format!(
                "Package: {name}\nVersion: 2:1.0-1\nArchitecture: all\n\
                 Maintainer: hostscan tests <tests@localhost>\nDescription: hostscan test package\n"
            ),
        )
        .expect("control");
        std::fs::write(pkg.join(format!("etc/{name}.conf")), "x\n").expect("conffile");
        std::fs::write(pkg.join("DEBIAN/conffiles"), format!("/etc/{name}.conf\n"))
            .expect("conffiles");
        let deb = w.path().join(format!("{name}.deb"));
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
                &root_arg,
                "--force-not-root",
                "--force-script-chrootless",
                "-i",
                deb.to_str().expect("utf-8"),
            ],
        );
    }
    run(
        "dpkg",
        &[
            &root_arg,
            "--force-not-root",
            "--force-script-chrootless",
            "-r",
            "hs-conf",
        ],
    );
    let selections = "hs-held hold\nhs-removing deinstall\nhs-purging purge\nhs-conf install\n";
    let mut child = std::process::Command::new("dpkg")
        .args([root_arg.as_str(), "--set-selections"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("dpkg --set-selections");
    std::io::Write::write_all(
        &mut child.stdin.take().expect("stdin"),
        selections.as_bytes(),
    )
    .expect("write selections");
    assert!(child.wait().expect("dpkg").success());
    let states = run(
        "dpkg-query",
        &[
            &format!("--admindir={}", admin.display()),
            "-W",
            "-f",
            "${db:Status-Abbrev}${Package}\n",
        ],
    );
    let mut states: Vec<&str> = states.lines().map(str::trim).collect();
    states.sort();
    assert_eq!(
        states,
        [
            "hi hs-held",
            "ic hs-conf",
            "ii hs-installed",
            "pi hs-purging",
            "ri hs-removing"
        ]
    );

    let keys = Keys::generate();
    let setup = format!("mount --bind {} /var/lib/dpkg", admin.display());
    let sshd = Sshd::start_namespaced(&keys, Root::Host, &setup).await;
    let r = full_scan(&sshd, &keys).await;
    let packages = r.packages.as_ref().expect("packages");
    assert_eq!((packages.manager.as_str(), packages.count), ("dpkg", 4));
    let mut listed: Vec<(&str, &str)> = packages
        .recent
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str()))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            ("hs-held", "2:1.0-1"),
            ("hs-installed", "2:1.0-1"),
            ("hs-purging", "2:1.0-1"),
            ("hs-removing", "2:1.0-1")
        ]
    );
}

/// A Linux host with neither iproute2 nor net-tools (a minimal image, a
/// container): its interfaces come from `/sys/class/net` and `/proc/net`,
/// and match what `ip -j addr show` says inside the same namespace, except
/// the one kind of address the kernel files cannot place (a /32 with no
/// connected route). The host is a network namespace of the test's own,
/// so nothing else changes its interfaces between the scan and `ip`.
#[tokio::test]
async fn interfaces_without_iproute2_or_net_tools() {
    use crate::support::netns::Lab;
    use crate::support::sshd::{InNetns, Options};
    need("unshare", "util-linux");
    need("ip", "iproute2");
    let keys = Keys::generate();
    let mut lab = Lab::new();
    let ns = lab.namespace("bare");
    let (_, address) = lab.link_root(&ns);
    // A second connected prefix on eth0 (.240/29), and a /32 on lo outside
    // it (.250), which no route holds. (Inside it, the /32 could not be
    // told from a secondary address of eth0: see `network::kernel`.)
    let (narrow, lone) = (lab.spare_address(1), lab.spare_address(10));
    run(
        "ip",
        &[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{narrow}/29"),
            "dev",
            "eth0",
        ],
    );
    run(
        "ip",
        &["-n", &ns, "addr", "add", &format!("{lone}/32"), "dev", "lo"],
    );
    // `ip` and `ifconfig` hidden wherever PATH could find them.
    let hide = "for f in /usr/bin/ip /usr/sbin/ip /bin/ip /sbin/ip /usr/bin/ifconfig \
                /usr/sbin/ifconfig /bin/ifconfig /sbin/ifconfig; do \
                if [ -f \"$f\" ] && [ ! -L \"$f\" ]; then mount --bind /dev/null \"$f\"; fi; done";
    let sshd = Sshd::start(
        &keys,
        Options {
            netns: Some(InNetns {
                ns: ns.clone(),
                hostname: "bare-host".into(),
                address,
            }),
            mount_setup: Some(hide.into()),
            ..Default::default()
        },
    )
    .await;
    let r = full_scan(&sshd, &keys).await;
    assert!(
        r.step_errors.iter().all(|e| e.step != "network"),
        "{:?}",
        r.step_errors
    );

    let truth = Lab::command(&ns, "ip")
        .args(["-j", "addr", "show"])
        .output()
        .expect("ip -j");
    let truth = hostscan::scan::parse::network::parse(&format!(
        "@@ip-json\n{}",
        String::from_utf8_lossy(&truth.stdout)
    ))
    .expect("ip -j parses");
    let canonical = |mut v: Vec<hostscan::model::facts::NetworkInterface>| {
        for i in &mut v {
            i.addresses
                .sort_by(|a, b| (&a.family, &a.address).cmp(&(&b.family, &b.address)));
        }
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    };
    let mut expected = canonical(truth);
    let lo = expected.iter_mut().find(|i| i.name == "lo").expect("lo");
    let before = lo.addresses.len();
    lo.addresses.retain(|a| a.address != lone);
    assert_eq!(
        lo.addresses.len(),
        before - 1,
        "ip shows the /32: {expected:?}"
    );
    let eth0 = expected.iter().find(|i| i.name == "eth0").expect("eth0");
    assert!(
        eth0.addresses
            .iter()
            .any(|a| a.address == narrow && a.prefix_length == 29),
        "{eth0:?}"
    );
    assert_eq!(canonical(r.network_interfaces), expected);
    closed_before_the_lab_goes(&ns).await;
}

/// Waits until the namespace's sshd has no connection left: the engine's
/// goodbye must reach it before the lab deletes the namespace, or the
/// session would wait for a client that can no longer say anything.
async fn closed_before_the_lab_goes(ns: &str) {
    use crate::support::netns::Lab;
    let ns = ns.to_string();
    crate::support::eventually(
        "the scan's SSH connection to close",
        std::time::Duration::from_secs(10),
        || {
            let ns = ns.clone();
            async move { (Lab::ssh_connections(&ns) == 0).then_some(()) }
        },
    )
    .await;
}

/// Default routes and the resolver configuration, from a host in a network
/// namespace of the test's own: a default route via the root namespace's
/// address and an on-link IPv6-less host, `/etc/resolv.conf` of its own (as
/// `ip netns exec` mounts it); changed between two full scans, the diff
/// shows the route replaced and the new nameservers.
#[tokio::test]
async fn default_routes_and_dns() {
    use crate::support::netns::Lab;
    use crate::support::sshd::{InNetns, Options};
    use hostscan::diff::{DiffOptions, diff};
    use hostscan::model::facts::{DefaultRoute, Dns};
    need("ip", "iproute2");
    let keys = Keys::generate();
    let mut lab = Lab::new();
    let ns = lab.namespace("routed");
    let (gateway, address) = lab.link_root(&ns);
    run(
        "ip",
        &[
            "-n", &ns, "route", "add", "default", "via", &gateway, "metric", "50",
        ],
    );
    lab.resolv_conf(
        &ns,
        "# written by the test\nnameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example lab.example\n",
    );
    let sshd = Sshd::start(
        &keys,
        Options {
            netns: Some(InNetns {
                ns: ns.clone(),
                hostname: "routed-host".into(),
                address,
            }),
            ..Default::default()
        },
    )
    .await;
    let before = full_scan(&sshd, &keys).await;
    assert!(
        before.step_errors.iter().all(|e| e.step != "routing"),
        "{:?}",
        before.step_errors
    );
    assert_eq!(
        before.default_routes,
        Some(vec![DefaultRoute {
            family: "inet".into(),
            gateway: gateway.clone(),
            interface: "eth0".into(),
            metric: 50,
        }])
    );
    assert_eq!(
        before.dns,
        Some(Dns {
            nameservers: vec!["192.0.2.53".into(), "192.0.2.54".into()],
            search: vec!["corp.example".into(), "lab.example".into()],
            upstream_nameservers: Vec::new(),
        })
    );

    // The route goes straight out of eth0 now; a nameserver is dropped.
    // (The sshd's own mount namespace holds the file it bind-mounted, so
    // the test writes through it.)
    run("ip", &["-n", &ns, "route", "del", "default"]);
    run("ip", &["-n", &ns, "route", "add", "default", "dev", "eth0"]);
    std::fs::write(
        format!("/etc/netns/{ns}/resolv.conf"),
        "nameserver 192.0.2.54\nsearch corp.example lab.example\n",
    )
    .expect("resolv.conf");
    let after = full_scan(&sshd, &keys).await;
    let d = diff(&before, &after, &DiffOptions::default());
    assert_eq!(
        d.default_routes_added,
        [DefaultRoute {
            family: "inet".into(),
            gateway: String::new(),
            interface: "eth0".into(),
            metric: 0,
        }],
        "{d:#?}"
    );
    assert_eq!(d.default_routes_removed.len(), 1, "{d:#?}");
    assert_eq!(
        d.dns.as_ref().map(|c| c.new.nameservers.clone()),
        Some(vec!["192.0.2.54".to_string()]),
        "{d:#?}"
    );
    closed_before_the_lab_goes(&ns).await;
}
