//! What changed between two scans of a host: the result of `crate::diff`.
//!
//! Plain data, one type per kind of change; `pb` maps it to the public
//! `hostscan.v1.ScanDiff`. "Old" is the base scan's value, "new" the
//! compared scan's. No I/O, no logic beyond counting.

use std::fmt;

use chrono::{DateTime, Utc};

use super::facts::{
    Cpu, DefaultRoute, Disk, Dns, ListeningSocket, NetworkInterface, RebootRequired, StepError,
    Timezone, Virtualization,
};

/// A part of the results that a diff compares as a whole: compared when
/// both scans collected it, skipped (with a reason) otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    /// OS name, version, kernel and architecture.
    Os,
    Hostname,
    Uptime,
    Disks,
    Memory,
    Cpu,
    Virtualization,
    Timezone,
    Packages,
    RebootRequired,
    NetworkInterfaces,
    ListeningSockets,
    /// Always compared.
    StepErrors,
    DefaultRoutes,
    Dns,
}

impl Section {
    /// Every section, in the order a diff lists them.
    pub const ALL: [Section; 15] = [
        Section::Os,
        Section::Hostname,
        Section::Uptime,
        Section::Disks,
        Section::Memory,
        Section::Cpu,
        Section::Virtualization,
        Section::Timezone,
        Section::Packages,
        Section::RebootRequired,
        Section::NetworkInterfaces,
        Section::ListeningSockets,
        Section::StepErrors,
        Section::DefaultRoutes,
        Section::Dns,
    ];

    /// The name people read (and the proto enum's suffix, lowercased).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Os => "os",
            Self::Hostname => "hostname",
            Self::Uptime => "uptime",
            Self::Disks => "disks",
            Self::Memory => "memory",
            Self::Cpu => "cpu",
            Self::Virtualization => "virtualization",
            Self::Timezone => "timezone",
            Self::Packages => "packages",
            Self::RebootRequired => "reboot_required",
            Self::NetworkInterfaces => "network_interfaces",
            Self::ListeningSockets => "listening_sockets",
            Self::StepErrors => "step_errors",
            Self::DefaultRoutes => "default_routes",
            Self::Dns => "dns",
        }
    }

    /// The scan step that collects this section (`scan::STEPS` names);
    /// `None` for step errors, which every step may add to.
    pub fn step(self) -> Option<&'static str> {
        match self {
            Self::NetworkInterfaces => Some("network"),
            Self::DefaultRoutes | Self::Dns => Some("routing"),
            Self::StepErrors => None,
            other => Some(other.as_str()),
        }
    }

    /// Collected by full scans only.
    pub fn full_only(self) -> bool {
        matches!(
            self,
            Self::Packages
                | Self::RebootRequired
                | Self::NetworkInterfaces
                | Self::ListeningSockets
                | Self::DefaultRoutes
                | Self::Dns
        )
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A section that was not compared, and why (one sentence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub section: Section,
    pub reason: String,
}

/// A value that changed: `old` in the base scan, `new` in the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<T> {
    pub old: T,
    pub new: T,
}

impl<T> Change<T> {
    /// The same change seen from the other scan.
    pub fn swapped(self) -> Self {
        Self {
            old: self.new,
            new: self.old,
        }
    }
}

/// The host booted between the two scans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reboot {
    pub old_uptime_seconds: u64,
    pub new_uptime_seconds: u64,
    /// When the host booted, as the newer scan saw it: its completion time
    /// minus its uptime (accurate to that scan's duration). `None` when the
    /// scan's time is unknown.
    pub boot_time: Option<DateTime<Utc>>,
}

/// A file system's total size changed (grown, shrunk, replaced in place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskResize {
    pub mount: String,
    pub filesystem: String,
    pub total_bytes: Change<u64>,
}

/// A file system's used percent moved by at least the threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskUsage {
    pub mount: String,
    pub filesystem: String,
    /// Percent of the file system in use (0-100), before and after.
    pub used_percent: Change<f64>,
}

/// One installed package (a name with one version).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PackageRef {
    /// The package manager that lists it (dpkg, rpm, apk, pacman, pkg).
    pub manager: String,
    pub name: String,
    pub version: String,
}

/// A package installed under one version in both scans, a different one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PackageVersion {
    pub manager: String,
    pub name: String,
    pub old_version: String,
    pub new_version: String,
}

/// An interface's state, MAC address or MTU changed.
#[derive(Debug, Clone, PartialEq)]
pub struct InterfaceChange<T> {
    /// The interface name.
    pub name: String,
    pub change: Change<T>,
}

/// An address that appeared on, or went from, an interface present in both scans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressChange {
    pub interface: String,
    pub address: super::facts::Address,
}

/// Packages: the manager and count always; per-package changes when both
/// scans stored their whole installed list (`lists_compared`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PackagesDiff {
    pub manager: Option<Change<String>>,
    /// Installed packages (the manager's count).
    pub count: Option<Change<u64>>,
    /// Both scans listed every installed package, so `added`, `removed`
    /// and `changed` are complete; false for scans that stored only a
    /// count (made before hostscan kept the list, or over its bound).
    pub lists_compared: bool,
    pub added: Vec<PackageRef>,
    pub removed: Vec<PackageRef>,
    pub changed: Vec<PackageVersion>,
}

/// What changed from a base scan to another scan of (usually) the same host.
/// Each field holds one kind of change; empty/`None` means "no such change"
/// in a compared section. `compared` and `skipped` say which sections were
/// looked at (every `Section` is in exactly one of them).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScanDiff {
    pub compared: Vec<Section>,
    pub skipped: Vec<Skipped>,

    pub os_name: Option<Change<String>>,
    pub os_version: Option<Change<String>>,
    pub kernel: Option<Change<String>>,
    pub arch: Option<Change<String>>,
    pub hostname: Option<Change<String>>,
    pub reboot: Option<Reboot>,
    pub memory_total_bytes: Option<Change<u64>>,
    pub cpu: Option<Change<Cpu>>,
    pub virtualization: Option<Change<Virtualization>>,
    pub timezone: Option<Change<Timezone>>,

    pub disks_added: Vec<Disk>,
    pub disks_removed: Vec<Disk>,
    pub disks_resized: Vec<DiskResize>,
    pub disks_usage_changed: Vec<DiskUsage>,

    pub packages: PackagesDiff,

    pub interfaces_added: Vec<NetworkInterface>,
    pub interfaces_removed: Vec<NetworkInterface>,
    pub interfaces_state_changed: Vec<InterfaceChange<String>>,
    pub interfaces_mac_changed: Vec<InterfaceChange<String>>,
    pub interfaces_mtu_changed: Vec<InterfaceChange<u32>>,
    pub addresses_added: Vec<AddressChange>,
    pub addresses_removed: Vec<AddressChange>,

    pub listening_sockets_added: Vec<ListeningSocket>,
    pub listening_sockets_removed: Vec<ListeningSocket>,

    pub reboot_required: Option<Change<RebootRequired>>,

    pub step_errors_appeared: Vec<StepError>,
    pub step_errors_resolved: Vec<StepError>,

    /// By (family, gateway, interface, metric).
    pub default_routes_added: Vec<DefaultRoute>,
    pub default_routes_removed: Vec<DefaultRoute>,
    pub dns: Option<Change<Dns>>,
}

impl ScanDiff {
    /// How many changes the diff lists (each added, removed or changed
    /// thing counts once); 0 means nothing changed in the compared sections.
    pub fn change_count(&self) -> usize {
        let one = |b: bool| usize::from(b);
        let p = &self.packages;
        one(self.os_name.is_some())
            + one(self.os_version.is_some())
            + one(self.kernel.is_some())
            + one(self.arch.is_some())
            + one(self.hostname.is_some())
            + one(self.reboot.is_some())
            + one(self.memory_total_bytes.is_some())
            + one(self.cpu.is_some())
            + one(self.virtualization.is_some())
            + one(self.timezone.is_some())
            + self.disks_added.len()
            + self.disks_removed.len()
            + self.disks_resized.len()
            + self.disks_usage_changed.len()
            + one(p.manager.is_some())
            + one(p.count.is_some())
            + p.added.len()
            + p.removed.len()
            + p.changed.len()
            + self.interfaces_added.len()
            + self.interfaces_removed.len()
            + self.interfaces_state_changed.len()
            + self.interfaces_mac_changed.len()
            + self.interfaces_mtu_changed.len()
            + self.addresses_added.len()
            + self.addresses_removed.len()
            + self.listening_sockets_added.len()
            + self.listening_sockets_removed.len()
            + one(self.reboot_required.is_some())
            + self.step_errors_appeared.len()
            + self.step_errors_resolved.len()
            + self.default_routes_added.len()
            + self.default_routes_removed.len()
            + one(self.dns.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.change_count() == 0
    }
}
