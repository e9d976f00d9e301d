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
    pub cpu: Option<Cpu>,
    pub virtualization: Option<Virtualization>,
    pub timezone: Option<Timezone>,
    /// Full scans only.
    pub listening_sockets: Vec<ListeningSocket>,
    /// Full scans only.
    pub reboot_required: Option<RebootRequired>,
    /// Full scans only: the default routes, IPv4 then IPv6; `None` when
    /// the host showed no routing table (or the scan predates the fact),
    /// empty when it has no default route.
    pub default_routes: Option<Vec<DefaultRoute>>,
    /// Full scans only: the resolver configuration; `None` without
    /// `/etc/resolv.conf`.
    pub dns: Option<Dns>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OsInfo {
    /// os-release `NAME`; else lsb_release's distributor, the release
    /// file's name (`CentOS`), macOS `sw_vers`, or `uname -s`.
    pub name: String,
    /// os-release `VERSION_ID`, else the release from the same sources as
    /// `name`; on the BSDs `uname -r` without its suffix. "" when unknown:
    /// a Linux or Darwin kernel version never stands in for it.
    pub version: String,
    /// os-release `ID` (debian, rhel, alpine, arch...), else the ID those
    /// distributions use in os-release (`centos`, `sles`), else lowercased `uname -s`.
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
    /// Every installed package, sorted by name then version, each distinct
    /// (name, version) once (dpkg's co-installed architectures of one
    /// version are one entry; rpm's several kernels are several). `None`
    /// where the list is not known: results stored before hostscan kept it,
    /// or a host with more than `MAX_INSTALLED` packages. Stored as
    /// `[name, version]` pairs (about 30 bytes a package as JSON text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installed: Option<Vec<InstalledPackage>>,
}

impl Packages {
    /// The most packages a scan lists one by one (`installed`); beyond it
    /// only the count is kept. Real hosts have a few thousand; at this bound
    /// a scan's list is about 0.7 MB in protobuf, and a diff listing two
    /// whole lists (a changed manager) stays well below gRPC's 4 MB
    /// default message limit.
    pub const MAX_INSTALLED: usize = 20_000;
}

/// A package as the manager lists it: its name and version.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "(String, String)", into = "(String, String)")]
pub struct InstalledPackage {
    pub name: String,
    /// As the manager shows it, epoch included (see `Package::version`).
    pub version: String,
}

impl From<(String, String)> for InstalledPackage {
    fn from((name, version): (String, String)) -> Self {
        Self { name, version }
    }
}

impl From<InstalledPackage> for (String, String) {
    fn from(p: InstalledPackage) -> Self {
        (p.name, p.version)
    }
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
    /// The account name of the process's effective uid; the uid in decimal where
    /// the host has no name for it; "" where neither can be known (a busybox
    /// `ps` cut the name and no account matches). Never a cut name.
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

/// The processor. Counts are 0 where the host does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cpu {
    /// lscpu `Model name`, `/proc/cpuinfo` `model name` (or ARM's
    /// `Processor`), macOS `machdep.cpu.brand_string`, BSD `hw.model`.
    pub model_name: String,
    /// Logical CPUs the kernel knows: lscpu `CPU(s)`, `processor` entries
    /// of `/proc/cpuinfo`, `hw.ncpu`.
    pub logical_cpus: u32,
    pub sockets: u32,
    pub cores_per_socket: u32,
    pub threads_per_core: u32,
}

/// Whether the host is a machine of its own, a virtual machine or a container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VirtualizationRole {
    #[default]
    Unspecified,
    Host,
    Vm,
    Container,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Virtualization {
    /// A container inside a VM is a container.
    pub role: VirtualizationRole,
    /// In systemd-detect-virt's vocabulary: `none` for a host, `kvm`,
    /// `qemu`, `vmware`, `microsoft`, `xen`, `amazon`, `oracle`, `vm-other`,
    /// `docker`, `podman`, `lxc`, `openvz`, `wsl`, `systemd-nspawn`...; and
    /// `jail` for a FreeBSD jail, which systemd has no word for.
    #[serde(rename = "type")]
    pub kind: String,
    /// What decided: `systemd-detect-virt`, `container-env`, `dockerenv`,
    /// `containerenv`, `proc-vz`, `wsl-kernel`, `dmi`, `hypervisor`,
    /// `cpuid` (lscpu's hypervisor vendor or the cpuinfo flag), `sysctl`,
    /// or `no-evidence` for a host.
    pub source: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timezone {
    /// IANA name (`Europe/Berlin`, `Etc/UTC`), "" when the host does not
    /// name its zone (a copied `/etc/localtime` and nothing else).
    pub name: String,
    /// Seconds east of UTC now (`date +%z`), daylight saving included.
    pub utc_offset_seconds: i32,
    /// `date +%Z`: `CET`, `UTC`...
    pub abbreviation: String,
    /// Where `name` came from: `localtime-link`, `etc-timezone`,
    /// `timedatectl`, `sysconfig-clock`, `var-db-zoneinfo`, `no-localtime`
    /// (glibc's default, UTC) or "".
    pub source: String,
}

/// A route for every destination no narrower route covers. From
/// `/proc/net/route` and `/proc/net/ipv6_route` (Linux) or `netstat -rn`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DefaultRoute {
    /// "inet" or "inet6".
    pub family: String,
    /// The next hop; "" when the route goes straight out of the interface
    /// (a point-to-point link, a VPN device).
    pub gateway: String,
    pub interface: String,
    /// The route's metric (lower wins); 0 where the host does not say.
    pub metric: u32,
}

/// The resolver configuration: `/etc/resolv.conf`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Dns {
    /// Its `nameserver` lines, in order, each once (the resolver asks the
    /// first three).
    pub nameservers: Vec<String>,
    /// The search list: the last `search` or `domain` line, as the
    /// resolver keeps it.
    pub search: Vec<String>,
    /// When `nameservers` is systemd-resolved's stub (127.0.0.53): the
    /// servers it forwards to, from `/run/systemd/resolve/resolv.conf`.
    pub upstream_nameservers: Vec<String>,
}

/// A socket waiting for connections (TCP) or datagrams (UDP).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ListeningSocket {
    /// `tcp` or `udp`.
    pub protocol: String,
    /// `inet` or `inet6`, as in `Address.family`.
    pub family: String,
    /// The bound address: `0.0.0.0` or `::` for every address.
    pub local_address: String,
    pub port: u32,
    /// Where the scanning user may see it (`ss -p`, `netstat -p`, `sockstat`).
    pub pid: Option<i32>,
    /// The process name, "" where not visible.
    pub process: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RebootStatus {
    #[default]
    Unspecified,
    /// No evidence either way (a container without kernels, no marker file).
    Unknown,
    NotRequired,
    Required,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RebootRequired {
    pub status: RebootStatus,
    /// Why, one line each: `/var/run/reboot-required exists`, `needs-restarting
    /// -r: ...`, `running kernel 6.1.0-18-amd64, newest installed 6.1.0-20-amd64`.
    pub reasons: Vec<String>,
    /// Packages that asked for the reboot (`/var/run/reboot-required.pkgs`,
    /// the names `needs-restarting -r` lists).
    pub packages: Vec<String>,
    /// `uname -r`.
    pub running_kernel: String,
    /// The newest kernel installed (`/lib/modules`, `/boot/vmlinuz-*`,
    /// `freebsd-version -k`), "" when none was found.
    pub newest_kernel: String,
}
