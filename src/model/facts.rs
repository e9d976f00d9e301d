//! Typed facts about a host: what a scan produces.
//!
//! Plain data with serde (the store keeps them as JSONB). Parsers in
//! `scan::parse` build them; `pb` maps them to the public proto. No I/O here.

use serde::{Deserialize, Serialize};

/// Everything a scan collected. Fields stay empty/`None` when their step did
/// not run or failed; `step_errors` says which and why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScanResults {
    pub os: Option<OsInfo>,
    pub hostname: String,
    pub uptime_seconds: Option<u64>,
    pub disks: Vec<Disk>,
    pub memory: Option<Memory>,
    pub packages: Option<Packages>,
    pub processes: Vec<Process>,
    pub network_interfaces: Vec<NetworkInterface>,
    pub step_errors: Vec<StepError>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OsInfo {
    /// os-release `NAME`, or `uname -s` where there is no os-release.
    pub name: String,
    /// os-release `VERSION_ID` (or `uname -r` on systems without os-release).
    pub version: String,
    /// os-release `ID` (debian, rhel, alpine, arch...), lowercased `uname -s` otherwise.
    pub id: String,
    pub pretty_name: String,
    /// `uname -r`.
    pub kernel: String,
    /// `uname -m`.
    pub arch: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Disk {
    /// The device or source as `df` prints it.
    pub filesystem: String,
    pub mount: String,
    /// File system type where the host reports it (ext4, xfs, zfs...), else "".
    pub fs_type: String,
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
    /// used / (used + available) * 100, as `df` computes its capacity column.
    pub used_percent: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Memory {
    pub total_bytes: u64,
    /// total - available.
    pub used_bytes: u64,
    pub available_bytes: u64,
    pub used_percent: f64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Packages {
    /// dpkg, rpm, apk, pacman or pkg.
    pub manager: String,
    pub count: u64,
    /// Up to 50, newest first; empty where the manager records no install time.
    pub recent: Vec<Package>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// Unix seconds.
    pub installed_at: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Process {
    pub pid: i32,
    pub user: String,
    pub cpu_percent: f64,
    pub mem_percent: f64,
    pub rss_bytes: u64,
    pub command: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkInterface {
    pub name: String,
    /// Lowercase: up, down, unknown, dormant...
    pub state: String,
    /// Lowercase colon-separated hex, "" when the interface has none.
    pub mac: String,
    pub mtu: u32,
    pub addresses: Vec<Address>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Address {
    /// "inet" or "inet6".
    pub family: String,
    pub address: String,
    pub prefix_length: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StepError {
    pub step: String,
    pub message: String,
}
