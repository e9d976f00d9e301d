//! What changed between two scans of a host: `diff(base, new, options)`.
//!
//! A pure function from two `ScanResults` to a `model::diff::ScanDiff`: no
//! I/O, no clock, no panics on any input. Used by the DiffScans RPC (with
//! stored scans) and by `hostscan probe --diff-against` (with a saved one).
//!
//! Invariants (property-tested below):
//! - a scan diffed with itself is empty;
//! - swapping the arguments swaps every added/removed pair and every
//!   old/new value (a reboot is found in time order, so it stays);
//! - applying the package and interface changes to the base gives the new
//!   scan's package set and interfaces.
//!
//! A section is compared only when both scans collected it (see
//! `collected`); otherwise it is listed as skipped, with why.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};

use crate::model::ScanType;
use crate::model::diff::{
    AddressChange, Change, DiskResize, DiskUsage, InterfaceChange, PackageRef, PackageVersion,
    PackagesDiff, Reboot, ScanDiff, Section, Skipped,
};
use crate::model::facts::{
    Address, Disk, InstalledPackage, ListeningSocket, NetworkInterface, ScanResults,
};

/// The used-percent threshold when the caller gives none, in points.
pub const DEFAULT_USED_PERCENT_THRESHOLD: f64 = 5.0;

/// The scan types that can serve as the default base of a `scan_type`
/// scan: the same or richer (a full scan for a full scan; either for a
/// quick one, since a full scan holds every quick fact).
pub fn base_types(scan_type: ScanType) -> &'static [ScanType] {
    match scan_type {
        ScanType::Quick => &[ScanType::Quick, ScanType::Full],
        ScanType::Full => &[ScanType::Full],
    }
}

/// How much later a boot time must be to count as a reboot even though the
/// uptime went up (the scans' timing error and a paused VM stay below it).
pub const REBOOT_SLACK: Duration = Duration::minutes(10);

/// How to compare, and what is known about the two scans beyond their results.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffOptions {
    /// A disk's used percent must move by at least this many points (0-100)
    /// to be listed; 0 lists any change.
    pub used_percent_threshold: f64,
    /// The scans' types, for the reasons given for skipped sections.
    pub base_type: Option<ScanType>,
    pub new_type: Option<ScanType>,
    /// When each scan completed: with both, a reboot is seen in time order
    /// (whichever scan is later), also when the uptime grew but the boot
    /// time moved (more than `REBOOT_SLACK`), and the boot time is reported.
    pub base_completed_at: Option<DateTime<Utc>>,
    pub new_completed_at: Option<DateTime<Utc>>,
}

impl Default for DiffOptions {
    fn default() -> Self {
        Self {
            used_percent_threshold: DEFAULT_USED_PERCENT_THRESHOLD,
            base_type: None,
            new_type: None,
            base_completed_at: None,
            new_completed_at: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Base,
    New,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Self::Base => "the base scan",
            Self::New => "the scan",
        }
    }
}

/// Whether `r` holds `section`: its step ran, did not fail, and found
/// something. Every host has a mount, an interface and (being reached over
/// SSH) a listening socket, so an empty list means "not collected".
fn collected(r: &ScanResults, section: Section) -> bool {
    if let Some(step) = section.step()
        && r.step_errors.iter().any(|e| e.step == step)
    {
        return false;
    }
    match section {
        Section::Os => r.os.is_some(),
        Section::Hostname => !r.hostname.is_empty(),
        Section::Uptime => r.uptime_seconds.is_some(),
        Section::Disks => !r.disks.is_empty(),
        Section::Memory => r.memory.is_some(),
        Section::Cpu => r.cpu.is_some(),
        Section::Virtualization => r.virtualization.is_some(),
        Section::Timezone => r.timezone.is_some(),
        Section::Packages => r.packages.is_some(),
        Section::RebootRequired => r.reboot_required.is_some(),
        Section::NetworkInterfaces => !r.network_interfaces.is_empty(),
        Section::ListeningSockets => !r.listening_sockets.is_empty(),
        Section::StepErrors => true,
        Section::DefaultRoutes => r.default_routes.is_some(),
        Section::Dns => r.dns.is_some(),
    }
}

/// Why `side` lacks `section`.
fn missing_reason(r: &ScanResults, scan_type: Option<ScanType>, side: Side, s: Section) -> String {
    let step_error = s
        .step()
        .and_then(|step| r.step_errors.iter().find(|e| e.step == step));
    if let Some(e) = step_error {
        return format!(
            "the {} step failed in {}: {}",
            e.step,
            side.name(),
            e.message
        );
    }
    if s.full_only() && scan_type == Some(ScanType::Quick) {
        return format!("{} is a quick scan", side.name());
    }
    format!(
        "{} has no {} (stored before hostscan collected it, or none was found)",
        side.name(),
        s.as_str().replace('_', " ")
    )
}

/// What changed from `base` to `new`. Never panics; see the module docs.
pub fn diff(base: &ScanResults, new: &ScanResults, options: &DiffOptions) -> ScanDiff {
    let mut d = ScanDiff::default();
    for section in Section::ALL {
        let (b, n) = (collected(base, section), collected(new, section));
        if b && n {
            d.compared.push(section);
            compare(&mut d, section, base, new, options);
        } else {
            let reason = if b {
                missing_reason(new, options.new_type, Side::New, section)
            } else {
                missing_reason(base, options.base_type, Side::Base, section)
            };
            d.skipped.push(Skipped { section, reason });
        }
    }
    d
}

/// `Some(change)` when the values differ.
fn change<T: PartialEq + Clone>(old: &T, new: &T) -> Option<Change<T>> {
    (old != new).then(|| Change {
        old: old.clone(),
        new: new.clone(),
    })
}

/// Fills `d` with the changes of one section both scans collected.
fn compare(
    d: &mut ScanDiff,
    section: Section,
    base: &ScanResults,
    new: &ScanResults,
    o: &DiffOptions,
) {
    match section {
        Section::Os => {
            if let (Some(b), Some(n)) = (&base.os, &new.os) {
                d.os_name = change(&b.name, &n.name);
                d.os_version = change(&b.version, &n.version);
                d.kernel = change(&b.kernel, &n.kernel);
                d.arch = change(&b.arch, &n.arch);
            }
        }
        Section::Hostname => d.hostname = change(&base.hostname, &new.hostname),
        Section::Uptime => {
            if let (Some(b), Some(n)) = (base.uptime_seconds, new.uptime_seconds) {
                d.reboot = reboot(b, n, o);
            }
        }
        Section::Memory => {
            if let (Some(b), Some(n)) = (&base.memory, &new.memory) {
                d.memory_total_bytes = change(&b.total_bytes, &n.total_bytes);
            }
        }
        Section::Cpu => d.cpu = change(&base.cpu, &new.cpu).and_then(unwrap_change),
        Section::Virtualization => {
            if let (Some(b), Some(n)) = (&base.virtualization, &new.virtualization)
                && (b.role != n.role || b.kind != n.kind)
            {
                d.virtualization = Some(Change {
                    old: b.clone(),
                    new: n.clone(),
                });
            }
        }
        Section::Timezone => {
            if let (Some(b), Some(n)) = (&base.timezone, &new.timezone) {
                let unnamed = b.name.is_empty() && n.name.is_empty();
                let moved =
                    b.name != n.name || (unnamed && b.utc_offset_seconds != n.utc_offset_seconds);
                if moved {
                    d.timezone = Some(Change {
                        old: b.clone(),
                        new: n.clone(),
                    });
                }
            }
        }
        Section::RebootRequired => {
            if let (Some(b), Some(n)) = (&base.reboot_required, &new.reboot_required)
                && b.status != n.status
            {
                d.reboot_required = Some(Change {
                    old: b.clone(),
                    new: n.clone(),
                });
            }
        }
        Section::Disks => disks(d, &base.disks, &new.disks, o.used_percent_threshold),
        Section::Packages => {
            if let (Some(b), Some(n)) = (&base.packages, &new.packages) {
                d.packages = packages(b, n);
            }
        }
        Section::NetworkInterfaces => {
            interfaces(d, &base.network_interfaces, &new.network_interfaces)
        }
        Section::ListeningSockets => {
            let (added, removed) =
                keyed_sets(&base.listening_sockets, &new.listening_sockets, socket_key);
            d.listening_sockets_added = added;
            d.listening_sockets_removed = removed;
        }
        Section::StepErrors => {
            let (appeared, resolved) =
                keyed_sets(&base.step_errors, &new.step_errors, |e| e.step.clone());
            d.step_errors_appeared = appeared;
            d.step_errors_resolved = resolved;
        }
        Section::DefaultRoutes => {
            if let (Some(b), Some(n)) = (&base.default_routes, &new.default_routes) {
                let (added, removed) = keyed_sets(b, n, |r| {
                    (
                        r.family.clone(),
                        r.gateway.clone(),
                        r.interface.clone(),
                        r.metric,
                    )
                });
                d.default_routes_added = added;
                d.default_routes_removed = removed;
            }
        }
        Section::Dns => d.dns = change(&base.dns, &new.dns).and_then(unwrap_change),
    }
}

fn unwrap_change<T>(c: Change<Option<T>>) -> Option<Change<T>> {
    match (c.old, c.new) {
        (Some(old), Some(new)) => Some(Change { old, new }),
        _ => None,
    }
}

/// A reboot between the scans. With both completion times, in time order
/// (either argument may be the later scan): the later scan's uptime is
/// lower, or its boot time is more than `REBOOT_SLACK` later. Without
/// them, `new` is taken as the later scan and only a falling uptime counts.
fn reboot(old_uptime: u64, new_uptime: u64, o: &DiffOptions) -> Option<Reboot> {
    let secs = |u: u64| Duration::try_seconds(i64::try_from(u).unwrap_or(i64::MAX));
    let boot = |at: Option<DateTime<Utc>>, uptime: u64| {
        at.zip(secs(uptime))
            .and_then(|(at, up)| at.checked_sub_signed(up))
    };
    let (old_boot, new_boot) = (
        boot(o.base_completed_at, old_uptime),
        boot(o.new_completed_at, new_uptime),
    );
    let order = match (o.base_completed_at, o.new_completed_at) {
        (Some(b), Some(n)) => n.cmp(&b),
        _ => std::cmp::Ordering::Greater,
    };
    let (earlier, later) = match order {
        std::cmp::Ordering::Less => ((new_uptime, new_boot), (old_uptime, old_boot)),
        _ => ((old_uptime, old_boot), (new_uptime, new_boot)),
    };
    // Two scans at one instant have no "later": only boot times tell.
    let went_down = order != std::cmp::Ordering::Equal && later.0 < earlier.0;
    let (moved, boot_time) = match (earlier.1, later.1) {
        (Some(e), Some(l)) if order == std::cmp::Ordering::Equal => {
            ((l - e).abs() > REBOOT_SLACK, Some(e.max(l)))
        }
        (Some(e), Some(l)) => (l.signed_duration_since(e) > REBOOT_SLACK, Some(l)),
        (_, l) => (false, l),
    };
    (went_down || moved).then_some(Reboot {
        old_uptime_seconds: old_uptime,
        new_uptime_seconds: new_uptime,
        boot_time,
    })
}

/// Items of `new` whose key `base` lacks, and the reverse; the first item
/// of a repeated key stands for it; both lists in key order.
fn keyed_sets<T: Clone, K: Ord>(base: &[T], new: &[T], key: impl Fn(&T) -> K) -> (Vec<T>, Vec<T>) {
    let (b, n) = (first_by(base, &key), first_by(new, &key));
    let added = n
        .iter()
        .filter(|(k, _)| !b.contains_key(*k))
        .map(|(_, v)| (*v).clone())
        .collect();
    let removed = b
        .iter()
        .filter(|(k, _)| !n.contains_key(*k))
        .map(|(_, v)| (*v).clone())
        .collect();
    (added, removed)
}

fn socket_key(s: &ListeningSocket) -> (String, String, String, u32) {
    (
        s.protocol.clone(),
        s.family.clone(),
        s.local_address.clone(),
        s.port,
    )
}

fn disk_key(d: &Disk) -> (String, String) {
    (d.mount.clone(), d.filesystem.clone())
}

/// `list` by key, the first item of a repeated key standing for it.
fn first_by<T, K: Ord>(list: &[T], key: impl Fn(&T) -> K) -> BTreeMap<K, &T> {
    let mut m = BTreeMap::new();
    for item in list {
        m.entry(key(item)).or_insert(item);
    }
    m
}

fn disks(d: &mut ScanDiff, base: &[Disk], new: &[Disk], threshold: f64) {
    let (added, removed) = keyed_sets(base, new, disk_key);
    d.disks_added = added;
    d.disks_removed = removed;
    let old = first_by(base, disk_key);
    for (key, n) in first_by(new, disk_key) {
        let Some(b) = old.get(&key) else { continue };
        if b.total_bytes != n.total_bytes {
            d.disks_resized.push(DiskResize {
                mount: n.mount.clone(),
                filesystem: n.filesystem.clone(),
                total_bytes: Change {
                    old: b.total_bytes,
                    new: n.total_bytes,
                },
            });
        }
        let moved = (n.used_percent - b.used_percent).abs();
        // NaN never passes: an unreadable percent is no change.
        if moved > 0.0 && moved >= threshold {
            d.disks_usage_changed.push(DiskUsage {
                mount: n.mount.clone(),
                filesystem: n.filesystem.clone(),
                used_percent: Change {
                    old: b.used_percent,
                    new: n.used_percent,
                },
            });
        }
    }
}

/// name → its versions.
fn by_name(list: &[InstalledPackage]) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut m: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for p in list {
        m.entry(p.name.as_str())
            .or_default()
            .insert(p.version.as_str());
    }
    m
}

fn packages(b: &crate::model::facts::Packages, n: &crate::model::facts::Packages) -> PackagesDiff {
    let mut out = PackagesDiff {
        manager: change(&b.manager, &n.manager),
        count: change(&b.count, &n.count),
        ..Default::default()
    };
    let (Some(old), Some(new)) = (&b.installed, &n.installed) else {
        return out;
    };
    out.lists_compared = true;
    let reference = |manager: &str, name: &str, version: &str| PackageRef {
        manager: manager.to_string(),
        name: name.to_string(),
        version: version.to_string(),
    };
    if b.manager != n.manager {
        // Another manager's packages are not versions of these: each side
        // is listed whole.
        let (o, m) = (by_name(old), by_name(new));
        for (name, versions) in &o {
            for v in versions {
                out.removed.push(reference(&b.manager, name, v));
            }
        }
        for (name, versions) in &m {
            for v in versions {
                out.added.push(reference(&n.manager, name, v));
            }
        }
        return out;
    }
    let (o, m) = (by_name(old), by_name(new));
    let empty = BTreeSet::new();
    let names: BTreeSet<&str> = o.keys().chain(m.keys()).copied().collect();
    for name in names {
        let ov = o.get(name).unwrap_or(&empty);
        let nv = m.get(name).unwrap_or(&empty);
        if ov == nv {
            continue;
        }
        if let (1, 1, Some(old_v), Some(new_v)) = (ov.len(), nv.len(), ov.first(), nv.first()) {
            out.changed.push(PackageVersion {
                manager: n.manager.clone(),
                name: name.to_string(),
                old_version: (*old_v).to_string(),
                new_version: (*new_v).to_string(),
            });
            continue;
        }
        for v in nv.difference(ov) {
            out.added.push(reference(&n.manager, name, v));
        }
        for v in ov.difference(nv) {
            out.removed.push(reference(&b.manager, name, v));
        }
    }
    out
}

fn address_key(a: &Address) -> (String, String, u32) {
    (a.family.clone(), a.address.clone(), a.prefix_length)
}

fn interfaces(d: &mut ScanDiff, base: &[NetworkInterface], new: &[NetworkInterface]) {
    let (added, removed) = keyed_sets(base, new, |i| i.name.clone());
    d.interfaces_added = added;
    d.interfaces_removed = removed;
    let (old, cur) = (
        first_by(base, |i| i.name.clone()),
        first_by(new, |i| i.name.clone()),
    );
    for (name, n) in &cur {
        let Some(b) = old.get(name) else { continue };
        if let Some(c) = change(&b.state, &n.state) {
            d.interfaces_state_changed.push(InterfaceChange {
                name: name.clone(),
                change: c,
            });
        }
        if let Some(c) = change(&b.mac, &n.mac) {
            d.interfaces_mac_changed.push(InterfaceChange {
                name: name.clone(),
                change: c,
            });
        }
        if let Some(c) = change(&b.mtu, &n.mtu) {
            d.interfaces_mtu_changed.push(InterfaceChange {
                name: name.clone(),
                change: c,
            });
        }
        let (added, removed) = keyed_sets(&b.addresses, &n.addresses, address_key);
        d.addresses_added
            .extend(added.into_iter().map(|address| AddressChange {
                interface: name.clone(),
                address,
            }));
        d.addresses_removed
            .extend(removed.into_iter().map(|address| AddressChange {
                interface: name.clone(),
                address,
            }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::facts::{
        Cpu, DefaultRoute, Dns, Memory, OsInfo, Packages, RebootRequired, RebootStatus, StepError,
        Timezone, Virtualization, VirtualizationRole,
    };

    fn host() -> ScanResults {
        ScanResults {
            os: Some(OsInfo {
                name: "Debian GNU/Linux".into(),
                version: "12".into(),
                id: "debian".into(),
                pretty_name: "Debian GNU/Linux 12 (bookworm)".into(),
                kernel: "6.1.0-17-amd64".into(),
                arch: "x86_64".into(),
            }),
            hostname: "web-1".into(),
            uptime_seconds: Some(86_400),
            disks: vec![Disk {
                filesystem: "/dev/vda1".into(),
                mount: "/".into(),
                fs_type: "ext4".into(),
                total_bytes: 100 << 30,
                used_bytes: 40 << 30,
                available_bytes: 60 << 30,
                used_percent: 40.0,
            }],
            memory: Some(Memory {
                total_bytes: 8 << 30,
                ..Default::default()
            }),
            packages: Some(Packages {
                manager: "dpkg".into(),
                count: 2,
                recent: Vec::new(),
                installed: Some(vec![pkg("bash", "5.2.15-2"), pkg("libc6", "2.36-9")]),
            }),
            network_interfaces: vec![
                NetworkInterface {
                    name: "lo".into(),
                    state: "unknown".into(),
                    mtu: 65536,
                    addresses: vec![addr("inet", "127.0.0.1", 8)],
                    ..Default::default()
                },
                NetworkInterface {
                    name: "eth0".into(),
                    state: "up".into(),
                    mac: "52:54:00:12:34:56".into(),
                    mtu: 1500,
                    addresses: vec![addr("inet", "10.0.0.5", 24)],
                },
            ],
            cpu: Some(Cpu {
                model_name: "AMD EPYC".into(),
                logical_cpus: 2,
                ..Default::default()
            }),
            virtualization: Some(Virtualization {
                role: VirtualizationRole::Vm,
                kind: "kvm".into(),
                source: "systemd-detect-virt".into(),
            }),
            timezone: Some(Timezone {
                name: "Europe/Berlin".into(),
                utc_offset_seconds: 3600,
                abbreviation: "CET".into(),
                source: "localtime-link".into(),
            }),
            listening_sockets: vec![socket("tcp", "0.0.0.0", 22)],
            reboot_required: Some(RebootRequired {
                status: RebootStatus::NotRequired,
                ..Default::default()
            }),
            default_routes: Some(vec![DefaultRoute {
                family: "inet".into(),
                gateway: "10.0.0.1".into(),
                interface: "eth0".into(),
                metric: 0,
            }]),
            dns: Some(Dns {
                nameservers: vec!["10.0.0.2".into()],
                search: vec!["example.org".into()],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pkg(name: &str, version: &str) -> InstalledPackage {
        InstalledPackage {
            name: name.into(),
            version: version.into(),
        }
    }

    fn addr(family: &str, address: &str, prefix_length: u32) -> Address {
        Address {
            family: family.into(),
            address: address.into(),
            prefix_length,
        }
    }

    fn socket(protocol: &str, address: &str, port: u32) -> ListeningSocket {
        ListeningSocket {
            protocol: protocol.into(),
            family: "inet".into(),
            local_address: address.into(),
            port,
            pid: Some(100),
            process: "sshd".into(),
        }
    }

    #[test]
    fn a_scan_against_itself_is_empty_and_compares_everything() {
        let d = diff(&host(), &host(), &DiffOptions::default());
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(d.compared, Section::ALL.to_vec());
        assert!(d.skipped.is_empty());
        assert!(d.packages.lists_compared);
    }

    #[test]
    fn each_kind_of_change() {
        let base = host();
        let mut new = host();
        if let Some(os) = new.os.as_mut() {
            os.kernel = "6.1.0-18-amd64".into();
        }
        new.hostname = "web-2".into();
        new.disks[0].used_percent = 46.0;
        new.disks[0].total_bytes = 200 << 30;
        new.disks.push(Disk {
            mount: "/data".into(),
            filesystem: "/dev/vdb".into(),
            ..Default::default()
        });
        if let Some(p) = new.packages.as_mut() {
            p.count = 3;
            p.installed = Some(vec![
                pkg("bash", "5.2.15-2"),
                pkg("curl", "7.88.1-10"),
                pkg("libc6", "2.36-9+deb12u4"),
            ]);
        }
        new.network_interfaces[1].mtu = 9000;
        new.network_interfaces[1]
            .addresses
            .push(addr("inet6", "fd00::5", 64));
        new.network_interfaces.push(NetworkInterface {
            name: "dummy0".into(),
            state: "up".into(),
            ..Default::default()
        });
        new.listening_sockets.push(socket("tcp", "0.0.0.0", 8080));
        new.reboot_required = Some(RebootRequired {
            status: RebootStatus::Required,
            reasons: vec!["/var/run/reboot-required exists".into()],
            ..Default::default()
        });
        new.step_errors.push(StepError {
            step: "processes".into(),
            message: "ps: not found".into(),
        });
        if let Some(routes) = new.default_routes.as_mut() {
            routes[0].gateway = "10.0.0.254".into();
        }
        if let Some(dns) = new.dns.as_mut() {
            dns.nameservers.insert(0, "10.0.0.3".into());
        }
        let d = diff(&base, &new, &DiffOptions::default());
        assert_eq!(
            d.kernel,
            Some(Change {
                old: "6.1.0-17-amd64".to_string(),
                new: "6.1.0-18-amd64".to_string()
            })
        );
        assert_eq!(d.hostname.as_ref().map(|c| c.new.as_str()), Some("web-2"));
        assert_eq!(d.disks_added.len(), 1);
        assert_eq!(d.disks_resized.len(), 1);
        assert_eq!(d.disks_usage_changed.len(), 1);
        assert_eq!(d.packages.count, Some(Change { old: 2, new: 3 }));
        assert_eq!(
            d.packages.added,
            [PackageRef {
                manager: "dpkg".into(),
                name: "curl".into(),
                version: "7.88.1-10".into()
            }]
        );
        assert_eq!(
            d.packages.changed,
            [PackageVersion {
                manager: "dpkg".into(),
                name: "libc6".into(),
                old_version: "2.36-9".into(),
                new_version: "2.36-9+deb12u4".into()
            }]
        );
        assert!(d.packages.removed.is_empty());
        assert_eq!(d.interfaces_added.len(), 1);
        assert_eq!(
            d.interfaces_mtu_changed[0].change,
            Change {
                old: 1500,
                new: 9000
            }
        );
        assert_eq!(d.addresses_added[0].interface, "eth0");
        assert_eq!(d.listening_sockets_added[0].port, 8080);
        assert!(d.reboot_required.is_some());
        assert_eq!(d.step_errors_appeared.len(), 1);
        assert_eq!(d.default_routes_added[0].gateway, "10.0.0.254");
        assert_eq!(d.default_routes_removed[0].gateway, "10.0.0.1");
        assert_eq!(
            d.dns.as_ref().map(|c| c.new.nameservers.clone()),
            Some(vec!["10.0.0.3".to_string(), "10.0.0.2".to_string()])
        );
        assert_eq!(d.change_count(), 17, "{d:#?}");
        // A failed step without a section of its own skips nothing.
        assert_eq!(d.compared.len(), Section::ALL.len());
    }

    #[test]
    fn usage_changes_below_the_threshold_are_not_listed() {
        let base = host();
        let mut new = host();
        new.disks[0].used_percent = 44.9;
        let quiet = diff(&base, &new, &DiffOptions::default());
        assert!(quiet.is_empty(), "{quiet:?}");
        let strict = DiffOptions {
            used_percent_threshold: 0.0,
            ..Default::default()
        };
        assert_eq!(diff(&base, &new, &strict).disks_usage_changed.len(), 1);
        assert!(diff(&base, &base, &strict).is_empty());
        new.disks[0].used_percent = f64::NAN;
        assert!(diff(&base, &new, &strict).disks_usage_changed.is_empty());
    }

    #[test]
    fn quick_against_full_compares_what_both_have() {
        let full = host();
        let quick = ScanResults {
            packages: None,
            network_interfaces: Vec::new(),
            listening_sockets: Vec::new(),
            reboot_required: None,
            default_routes: None,
            dns: None,
            ..host()
        };
        let options = DiffOptions {
            base_type: Some(ScanType::Full),
            new_type: Some(ScanType::Quick),
            ..Default::default()
        };
        let d = diff(&full, &quick, &options);
        assert!(d.is_empty());
        let skipped: Vec<Section> = d.skipped.iter().map(|s| s.section).collect();
        assert_eq!(
            skipped,
            [
                Section::Packages,
                Section::RebootRequired,
                Section::NetworkInterfaces,
                Section::ListeningSockets,
                Section::DefaultRoutes,
                Section::Dns
            ]
        );
        assert!(
            d.skipped
                .iter()
                .all(|s| s.reason == "the scan is a quick scan")
        );
        assert_eq!(d.compared.len() + d.skipped.len(), Section::ALL.len());
    }

    #[test]
    fn a_failed_step_skips_its_section_and_says_why() {
        let base = host();
        let mut new = host();
        new.packages = None;
        new.step_errors.push(StepError {
            step: "packages".into(),
            message: "timed out after 30s".into(),
        });
        let d = diff(&base, &new, &DiffOptions::default());
        let skipped = d
            .skipped
            .iter()
            .find(|s| s.section == Section::Packages)
            .expect("packages skipped");
        assert_eq!(
            skipped.reason,
            "the packages step failed in the scan: timed out after 30s"
        );
        assert_eq!(d.step_errors_appeared.len(), 1);
        assert_eq!(d.change_count(), 1);
        // Old results without the newer facts: skipped, not "changed".
        let old = ScanResults {
            cpu: None,
            ..host()
        };
        let d = diff(&old, &host(), &DiffOptions::default());
        assert!(d.is_empty());
        assert!(
            d.skipped[0].reason.starts_with("the base scan has no cpu"),
            "{:?}",
            d.skipped
        );
    }

    #[test]
    fn packages_without_lists_compare_by_count() {
        let mut base = host();
        if let Some(p) = base.packages.as_mut() {
            p.installed = None;
        }
        let mut new = host();
        if let Some(p) = new.packages.as_mut() {
            p.count = 5;
        }
        let d = diff(&base, &new, &DiffOptions::default());
        assert!(!d.packages.lists_compared);
        assert_eq!(d.packages.count, Some(Change { old: 2, new: 5 }));
        assert!(d.packages.added.is_empty() && d.packages.removed.is_empty());
    }

    #[test]
    fn several_versions_of_a_name_show_as_added_and_removed() {
        let mut base = host();
        let mut new = host();
        let kernels = |vs: &[&str]| {
            Some(Packages {
                manager: "rpm".into(),
                count: vs.len() as u64,
                recent: Vec::new(),
                installed: Some(vs.iter().map(|v| pkg("kernel-core", v)).collect()),
            })
        };
        base.packages = kernels(&["5.14.0-1", "5.14.0-2"]);
        new.packages = kernels(&["5.14.0-2", "5.14.0-3"]);
        let d = diff(&base, &new, &DiffOptions::default());
        assert!(d.packages.changed.is_empty());
        assert_eq!(d.packages.added[0].version, "5.14.0-3");
        assert_eq!(d.packages.removed[0].version, "5.14.0-1");
        // Another manager: a change of its own, and every package moves.
        new.packages = Some(Packages {
            manager: "apk".into(),
            count: 1,
            recent: Vec::new(),
            installed: Some(vec![pkg("musl", "1.2.4-r2")]),
        });
        let d = diff(&base, &new, &DiffOptions::default());
        assert_eq!(
            d.packages.manager,
            Some(Change {
                old: "rpm".to_string(),
                new: "apk".to_string()
            })
        );
        assert_eq!((d.packages.added.len(), d.packages.removed.len()), (1, 2));
        assert_eq!(d.packages.removed[0].manager, "rpm");
    }

    #[test]
    fn reboots() {
        let at = |s: i64| DateTime::from_timestamp(s, 0);
        let mut base = host();
        let mut new = host();
        base.uptime_seconds = Some(90 * 86_400);
        new.uptime_seconds = Some(300);
        let t0 = 1_800_000_000;
        let options = DiffOptions {
            base_completed_at: at(t0),
            new_completed_at: at(t0 + 86_400),
            ..Default::default()
        };
        let d = diff(&base, &new, &options);
        let r = d.reboot.expect("uptime went down");
        assert_eq!(r.boot_time, at(t0 + 86_400 - 300));
        // Uptime grew, but less than the time between the scans: rebooted.
        base.uptime_seconds = Some(86_400);
        new.uptime_seconds = Some(5 * 86_400);
        let week = DiffOptions {
            new_completed_at: at(t0 + 7 * 86_400),
            ..options.clone()
        };
        assert!(diff(&base, &new, &week).reboot.is_some());
        // Grew by the time between the scans (give or take): no reboot.
        new.uptime_seconds = Some(8 * 86_400 - 30);
        assert!(diff(&base, &new, &week).reboot.is_none());
        // Without times, only a falling uptime counts.
        new.uptime_seconds = Some(5 * 86_400);
        assert!(diff(&base, &new, &DiffOptions::default()).reboot.is_none());
        // The same two scans the other way round: still a reboot, at the
        // later scan's boot time.
        let backwards = DiffOptions {
            base_completed_at: week.new_completed_at,
            new_completed_at: week.base_completed_at,
            ..Default::default()
        };
        let r = diff(&new, &base, &backwards).reboot.expect("time order");
        assert_eq!(r.boot_time, at(t0 + 2 * 86_400));
        assert_eq!(
            (r.old_uptime_seconds, r.new_uptime_seconds),
            (5 * 86_400, 86_400)
        );
        // Absurd values never panic.
        base.uptime_seconds = Some(u64::MAX);
        new.uptime_seconds = Some(0);
        let extreme = DiffOptions {
            base_completed_at: Some(DateTime::<Utc>::MIN_UTC),
            new_completed_at: Some(DateTime::<Utc>::MAX_UTC),
            ..Default::default()
        };
        assert!(diff(&base, &new, &extreme).reboot.is_some());
    }

    #[test]
    fn timezone_daylight_saving_is_not_a_change() {
        let base = host();
        let mut new = host();
        if let Some(t) = new.timezone.as_mut() {
            t.utc_offset_seconds = 7200;
            t.abbreviation = "CEST".into();
        }
        assert!(diff(&base, &new, &DiffOptions::default()).is_empty());
        if let Some(t) = new.timezone.as_mut() {
            t.name = "Etc/UTC".into();
        }
        assert!(
            diff(&base, &new, &DiffOptions::default())
                .timezone
                .is_some()
        );
    }

    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;
        use proptest::sample::select;

        fn word() -> impl Strategy<Value = String> {
            select(vec!["a", "b", "c", "d", "e"]).prop_map(String::from)
        }

        fn packages() -> impl Strategy<Value = Option<Packages>> {
            proptest::option::of((
                select(vec!["dpkg", "rpm"]),
                0u64..5,
                proptest::option::weighted(0.8, vec((word(), word()), 0..8)),
            ))
            .prop_map(|p| {
                p.map(|(manager, count, installed)| Packages {
                    manager: manager.into(),
                    count,
                    recent: Vec::new(),
                    installed: installed.map(|l| {
                        let mut l: Vec<InstalledPackage> = l.into_iter().map(Into::into).collect();
                        l.sort();
                        l.dedup();
                        l
                    }),
                })
            })
        }

        fn interfaces() -> impl Strategy<Value = Vec<NetworkInterface>> {
            vec(
                (
                    word(),
                    select(vec!["up", "down"]),
                    select(vec!["", "52:54:00:00:00:01"]),
                    select(vec![1500u32, 9000]),
                    vec((select(vec!["inet", "inet6"]), word(), 0u32..3), 0..4),
                ),
                0..5,
            )
            .prop_map(|list| {
                list.into_iter()
                    .map(|(name, state, mac, mtu, addrs)| NetworkInterface {
                        name,
                        state: state.into(),
                        mac: mac.into(),
                        mtu,
                        addresses: addrs.into_iter().map(|(f, a, p)| addr(f, &a, p)).collect(),
                    })
                    .collect()
            })
        }

        prop_compose! {
            fn results()(
                kernel in proptest::option::of(word()),
                hostname in select(vec!["", "web-1", "web-2"]),
                uptime in proptest::option::of(0u64..1000),
                disks in vec((select(vec!["/", "/data"]), word(), 0u64..3, 0.0f64..100.0), 0..3),
                memory in proptest::option::of(0u64..3),
                packages in packages(),
                interfaces in interfaces(),
                sockets in vec((select(vec!["tcp", "udp"]), 0u32..4), 0..4),
                reboot in proptest::option::of(select(vec![RebootStatus::Required, RebootStatus::NotRequired])),
                errors in vec((select(vec!["packages", "network", "cpu", "df"]), word()), 0..3),
                cpus in proptest::option::of(1u32..3),
                tz in proptest::option::of(select(vec!["", "UTC", "Europe/Berlin"])),
                routes in proptest::option::of(vec((select(vec!["inet", "inet6"]), select(vec!["", "192.0.2.1", "fe80::1"]), 0u32..3), 0..3)),
                dns in proptest::option::of(vec(select(vec!["192.0.2.53", "127.0.0.53", "2001:db8::53"]), 0..3)),
            ) -> ScanResults {
                ScanResults {
                    os: kernel.map(|k| OsInfo { kernel: k, ..Default::default() }),
                    hostname: hostname.into(),
                    uptime_seconds: uptime,
                    disks: disks.into_iter().map(|(m, f, t, u)| Disk {
                        mount: m.into(), filesystem: f, total_bytes: t, used_percent: u,
                        ..Default::default()
                    }).collect(),
                    memory: memory.map(|t| Memory { total_bytes: t, ..Default::default() }),
                    packages,
                    network_interfaces: interfaces,
                    listening_sockets: sockets.into_iter().map(|(p, port)| socket(p, "0.0.0.0", port)).collect(),
                    reboot_required: reboot.map(|status| RebootRequired { status, ..Default::default() }),
                    step_errors: errors.into_iter().map(|(step, message)| StepError { step: step.into(), message }).collect(),
                    cpu: cpus.map(|n| Cpu { logical_cpus: n, ..Default::default() }),
                    timezone: tz.map(|name| Timezone { name: name.into(), ..Default::default() }),
                    virtualization: None,
                    processes: Vec::new(),
                    default_routes: routes.map(|list| list.into_iter().map(|(family, gateway, metric)| crate::model::facts::DefaultRoute {
                        family: family.into(), gateway: gateway.into(), interface: "eth0".into(), metric,
                    }).collect()),
                    dns: dns.map(|servers| crate::model::facts::Dns {
                        nameservers: servers.into_iter().map(String::from).collect(),
                        ..Default::default()
                    }),
                }
            }
        }

        /// The package set as (name, version) pairs.
        fn package_set(r: &ScanResults) -> BTreeSet<(String, String)> {
            r.packages
                .as_ref()
                .and_then(|p| p.installed.as_ref())
                .map(|l| l.iter().cloned().map(Into::into).collect())
                .unwrap_or_default()
        }

        /// Interfaces by name (first wins) with their address sets.
        type Ifaces = BTreeMap<String, (String, String, u32, BTreeSet<(String, String, u32)>)>;

        fn interface_map(list: &[NetworkInterface]) -> Ifaces {
            let mut m = Ifaces::new();
            for i in list {
                m.entry(i.name.clone()).or_insert_with(|| {
                    (
                        i.state.clone(),
                        i.mac.clone(),
                        i.mtu,
                        i.addresses.iter().map(address_key).collect(),
                    )
                });
            }
            m
        }

        fn swap_pairs<T>(c: Option<Change<T>>) -> Option<Change<T>> {
            c.map(Change::swapped)
        }

        /// `d` as seen from the other side (what swapping the arguments
        /// must give), reboots aside.
        fn mirrored(d: &ScanDiff) -> ScanDiff {
            let d = d.clone();
            let iface = |v: Vec<InterfaceChange<String>>| {
                v.into_iter()
                    .map(|c| InterfaceChange {
                        name: c.name,
                        change: c.change.swapped(),
                    })
                    .collect()
            };
            ScanDiff {
                compared: d.compared,
                skipped: Vec::new(),
                os_name: swap_pairs(d.os_name),
                os_version: swap_pairs(d.os_version),
                kernel: swap_pairs(d.kernel),
                arch: swap_pairs(d.arch),
                hostname: swap_pairs(d.hostname),
                reboot: None,
                memory_total_bytes: swap_pairs(d.memory_total_bytes),
                cpu: swap_pairs(d.cpu),
                virtualization: swap_pairs(d.virtualization),
                timezone: swap_pairs(d.timezone),
                disks_added: d.disks_removed,
                disks_removed: d.disks_added,
                disks_resized: d
                    .disks_resized
                    .into_iter()
                    .map(|r| DiskResize {
                        total_bytes: r.total_bytes.swapped(),
                        ..r
                    })
                    .collect(),
                disks_usage_changed: d
                    .disks_usage_changed
                    .into_iter()
                    .map(|u| DiskUsage {
                        used_percent: u.used_percent.swapped(),
                        ..u
                    })
                    .collect(),
                packages: {
                    let p = d.packages;
                    let mut changed: Vec<PackageVersion> = p
                        .changed
                        .into_iter()
                        .map(|c| PackageVersion {
                            old_version: c.new_version,
                            new_version: c.old_version,
                            ..c
                        })
                        .collect();
                    changed.sort();
                    PackagesDiff {
                        manager: swap_pairs(p.manager),
                        count: swap_pairs(p.count),
                        lists_compared: p.lists_compared,
                        added: p.removed,
                        removed: p.added,
                        changed,
                    }
                },
                interfaces_added: d.interfaces_removed,
                interfaces_removed: d.interfaces_added,
                interfaces_state_changed: iface(d.interfaces_state_changed),
                interfaces_mac_changed: iface(d.interfaces_mac_changed),
                interfaces_mtu_changed: d
                    .interfaces_mtu_changed
                    .into_iter()
                    .map(|c| InterfaceChange {
                        name: c.name,
                        change: c.change.swapped(),
                    })
                    .collect(),
                addresses_added: d.addresses_removed,
                addresses_removed: d.addresses_added,
                listening_sockets_added: d.listening_sockets_removed,
                listening_sockets_removed: d.listening_sockets_added,
                reboot_required: swap_pairs(d.reboot_required),
                step_errors_appeared: d.step_errors_resolved,
                step_errors_resolved: d.step_errors_appeared,
                default_routes_added: d.default_routes_removed,
                default_routes_removed: d.default_routes_added,
                dns: swap_pairs(d.dns),
            }
        }

        proptest! {
            #[test]
            fn a_scan_diffed_with_itself_is_empty(r in results(), threshold in 0.0f64..100.0) {
                let options = DiffOptions { used_percent_threshold: threshold, ..Default::default() };
                let d = diff(&r, &r, &options);
                prop_assert!(d.is_empty(), "{:?}", d);
                prop_assert_eq!(d.compared.len() + d.skipped.len(), Section::ALL.len());
            }

            #[test]
            fn swapping_the_scans_swaps_the_diff(
                a in results(),
                b in results(),
                times in proptest::option::of((0i64..5, 0i64..5)),
            ) {
                // Steps of 5 minutes around the slack; equal times too.
                let at = |step: i64| DateTime::from_timestamp(1_800_000_000 + step * 300, 0);
                let options = DiffOptions {
                    base_completed_at: times.and_then(|t| at(t.0)),
                    new_completed_at: times.and_then(|t| at(t.1)),
                    ..Default::default()
                };
                let swapped = DiffOptions {
                    base_completed_at: options.new_completed_at,
                    new_completed_at: options.base_completed_at,
                    ..Default::default()
                };
                let forward = diff(&a, &b, &options);
                let mut backward = diff(&b, &a, &swapped);
                backward.skipped = Vec::new();
                let mut expected = mirrored(&forward);
                // A reboot is found in time order: with both times it
                // stays, its uptimes swapped; without, it is directional.
                if times.is_some() {
                    expected.reboot = forward.reboot.clone().map(|r| Reboot {
                        old_uptime_seconds: r.new_uptime_seconds,
                        new_uptime_seconds: r.old_uptime_seconds,
                        boot_time: r.boot_time,
                    });
                } else {
                    backward.reboot = None;
                }
                prop_assert_eq!(expected, backward);
            }

            #[test]
            fn applying_the_diff_to_the_base_gives_the_scan(a in results(), b in results()) {
                let d = diff(&a, &b, &DiffOptions::default());
                if d.packages.lists_compared {
                    let mut set = package_set(&a);
                    for p in &d.packages.removed {
                        prop_assert!(set.remove(&(p.name.clone(), p.version.clone())));
                    }
                    for c in &d.packages.changed {
                        prop_assert!(set.remove(&(c.name.clone(), c.old_version.clone())));
                        set.insert((c.name.clone(), c.new_version.clone()));
                    }
                    for p in &d.packages.added {
                        prop_assert!(set.insert((p.name.clone(), p.version.clone())));
                    }
                    prop_assert_eq!(set, package_set(&b));
                }
                if d.compared.contains(&Section::NetworkInterfaces) {
                    let mut m = interface_map(&a.network_interfaces);
                    for i in &d.interfaces_removed {
                        prop_assert!(m.remove(&i.name).is_some());
                    }
                    for i in &d.interfaces_added {
                        let one = interface_map(std::slice::from_ref(i));
                        m.extend(one);
                    }
                    for c in &d.interfaces_state_changed {
                        if let Some(i) = m.get_mut(&c.name) { i.0 = c.change.new.clone(); }
                    }
                    for c in &d.interfaces_mac_changed {
                        if let Some(i) = m.get_mut(&c.name) { i.1 = c.change.new.clone(); }
                    }
                    for c in &d.interfaces_mtu_changed {
                        if let Some(i) = m.get_mut(&c.name) { i.2 = c.change.new; }
                    }
                    for a in &d.addresses_removed {
                        let i = m.get_mut(&a.interface);
                        prop_assert!(i.is_some_and(|i| i.3.remove(&address_key(&a.address))));
                    }
                    for a in &d.addresses_added {
                        let i = m.get_mut(&a.interface);
                        prop_assert!(i.is_some_and(|i| i.3.insert(address_key(&a.address))));
                    }
                    prop_assert_eq!(m, interface_map(&b.network_interfaces));
                }
            }
        }
    }
}
