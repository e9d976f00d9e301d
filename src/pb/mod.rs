//! The generated protobuf types of `proto/hostscan/v1/scan.proto`, the
//! mappings between them and `model`, and the proto3 JSON printer (what
//! grpcurl prints) used by the CLI. No I/O, no `tonic::Status`.

#![allow(clippy::all, missing_docs)]

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use prost_reflect::{DescriptorPool, DynamicMessage};

use crate::model::{self, facts};

tonic::include_proto!("hostscan.v1");

mod event;
pub use event::{ScanEvent, ScanEventFields};

/// Descriptors of the hostscan API, for reflection and JSON.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("hostscan_descriptor");

static POOL: LazyLock<Option<DescriptorPool>> =
    LazyLock::new(|| DescriptorPool::decode(FILE_DESCRIPTOR_SET).ok());

/// The descriptor of a message of the hostscan API, e.g. "hostscan.v1.Scan".
pub(crate) fn descriptor(full_name: &str) -> Option<prost_reflect::MessageDescriptor> {
    POOL.as_ref()?.get_message_by_name(full_name)
}

/// Prints `message` (of proto type `full_name`, e.g. "hostscan.v1.Scan") in
/// the proto3 JSON mapping, pretty, as grpcurl does.
pub fn to_json<M: prost::Message>(message: &M, full_name: &str) -> String {
    let dynamic = descriptor(full_name)
        .and_then(|desc| DynamicMessage::decode(desc, message.encode_to_vec().as_slice()).ok());
    let Some(dynamic) = dynamic else {
        return "{}".into();
    };
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut out,
        serde_json::ser::PrettyFormatter::with_indent(b"  "),
    );
    let options = prost_reflect::SerializeOptions::new();
    if dynamic.serialize_with_options(&mut ser, &options).is_err() {
        return "{}".into();
    }
    String::from_utf8(out).unwrap_or_else(|_| "{}".into())
}

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn from_timestamp(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
}

impl From<model::ScanType> for ScanType {
    fn from(t: model::ScanType) -> Self {
        match t {
            model::ScanType::Quick => Self::Quick,
            model::ScanType::Full => Self::Full,
        }
    }
}

impl ScanType {
    pub fn to_model(self) -> Option<model::ScanType> {
        match self {
            Self::Unspecified => None,
            Self::Quick => Some(model::ScanType::Quick),
            Self::Full => Some(model::ScanType::Full),
        }
    }
}

impl From<model::ScanStatus> for ScanStatus {
    fn from(s: model::ScanStatus) -> Self {
        match s {
            model::ScanStatus::Pending => Self::Pending,
            model::ScanStatus::Running => Self::Running,
            model::ScanStatus::Completed => Self::Completed,
            model::ScanStatus::Failed => Self::Failed,
            model::ScanStatus::Cancelled => Self::Cancelled,
        }
    }
}

impl ScanStatus {
    pub fn to_model(self) -> Option<model::ScanStatus> {
        match self {
            Self::Unspecified => None,
            Self::Pending => Some(model::ScanStatus::Pending),
            Self::Running => Some(model::ScanStatus::Running),
            Self::Completed => Some(model::ScanStatus::Completed),
            Self::Failed => Some(model::ScanStatus::Failed),
            Self::Cancelled => Some(model::ScanStatus::Cancelled),
        }
    }
}

impl From<model::ScanErrorKind> for ScanErrorKind {
    fn from(k: model::ScanErrorKind) -> Self {
        use model::ScanErrorKind as K;
        match k {
            K::ConnectionRefused => Self::ConnectionRefused,
            K::Timeout => Self::Timeout,
            K::Dns => Self::Dns,
            K::AuthFailed => Self::AuthFailed,
            K::HostKeyMismatch => Self::HostKeyMismatch,
            K::Unreachable => Self::Unreachable,
            K::Protocol => Self::Protocol,
            K::Cancelled => Self::Cancelled,
            K::Interrupted => Self::Interrupted,
            K::Internal => Self::Internal,
        }
    }
}

impl From<&model::ScanError> for ScanError {
    fn from(e: &model::ScanError) -> Self {
        Self {
            kind: ScanErrorKind::from(e.kind) as i32,
            message: e.message.clone(),
        }
    }
}

impl From<&model::Scan> for Scan {
    fn from(s: &model::Scan) -> Self {
        Self {
            id: s.id,
            hostname: s.hostname.clone(),
            port: u32::from(s.port),
            username: s.username.clone(),
            scan_type: ScanType::from(s.scan_type) as i32,
            status: ScanStatus::from(s.status) as i32,
            progress: s.progress,
            current_step: s.current_step.clone(),
            created_at: Some(timestamp(s.created_at)),
            started_at: s.started_at.map(timestamp),
            completed_at: s.completed_at.map(timestamp),
            results: s.results.as_ref().map(ScanResults::from),
            error: s.error.as_ref().map(ScanError::from),
            request_id: s.request_id.clone().unwrap_or_default(),
            sequence: s.sequence,
            proxy_jump: s.proxy_jump.clone(),
        }
    }
}

impl From<&model::ScanEvent> for ScanEvent {
    fn from(e: &model::ScanEvent) -> Self {
        ScanEventFields::from(e).into()
    }
}

impl ScanEvent {
    /// `e` as WatchScan sends it to every watcher: encoded once, into the
    /// event's own cache, and shared.
    pub fn shared_from(e: &model::ScanEvent) -> Self {
        use prost::Message;
        let wire = e
            .wire
            .get_or_init(|| ScanEventFields::from(e).encode_to_vec().into());
        Self::shared(wire.clone())
    }
}

impl From<&model::ScanEvent> for ScanEventFields {
    fn from(e: &model::ScanEvent) -> Self {
        Self {
            scan_id: e.scan_id,
            sequence: e.sequence,
            status: ScanStatus::from(e.status) as i32,
            progress: e.progress,
            current_step: e.current_step.clone(),
            time: Some(timestamp(e.time)),
            scan: e.scan.as_ref().map(Scan::from),
            heartbeat: false,
            hostname: e.hostname.clone(),
            scan_type: ScanType::from(e.scan_type) as i32,
            resume_token: String::new(),
        }
    }
}

impl From<&model::Host> for Host {
    fn from(h: &model::Host) -> Self {
        let completed_id = h.completed.as_ref().map(|c| c.scan_id);
        Self {
            hostname: h.hostname.clone(),
            port: u32::from(h.port),
            latest_completed: h.completed.as_ref().map(|c| HostScanSummary {
                scan_id: c.scan_id,
                completed_at: c.completed_at.map(timestamp),
                scan_type: c.scan_type.map_or(0, |t| ScanType::from(t) as i32),
                os_id: c.os_id.clone(),
                os_pretty_name: c.os_pretty_name.clone(),
                kernel: c.kernel.clone(),
                package_count: c.package_count,
                step_error_count: c.step_error_count,
            }),
            latest_scan: (Some(h.latest_scan.id) != completed_id).then(|| ScanRef {
                scan_id: h.latest_scan.id,
                status: ScanStatus::from(h.latest_scan.status) as i32,
                created_at: Some(timestamp(h.latest_scan.created_at)),
            }),
        }
    }
}

impl From<&facts::ScanResults> for ScanResults {
    fn from(r: &facts::ScanResults) -> Self {
        Self {
            os: r.os.as_ref().map(|o| OsInfo {
                name: o.name.clone(),
                version: o.version.clone(),
                id: o.id.clone(),
                pretty_name: o.pretty_name.clone(),
                kernel: o.kernel.clone(),
                arch: o.arch.clone(),
            }),
            hostname: r.hostname.clone(),
            uptime_seconds: r
                .uptime_seconds
                .map_or(0, |u| i64::try_from(u).unwrap_or(i64::MAX)),
            disks: r
                .disks
                .iter()
                .map(|d| Disk {
                    filesystem: d.filesystem.clone(),
                    mount: d.mount.clone(),
                    total_bytes: d.total_bytes,
                    used_bytes: d.used_bytes,
                    available_bytes: d.available_bytes,
                    used_percent: d.used_percent,
                    fs_type: d.fs_type.clone(),
                })
                .collect(),
            memory: r.memory.as_ref().map(|m| Memory {
                total_bytes: m.total_bytes,
                used_bytes: m.used_bytes,
                available_bytes: m.available_bytes,
                used_percent: m.used_percent,
                swap_total_bytes: m.swap_total_bytes,
                swap_used_bytes: m.swap_used_bytes,
            }),
            packages: r.packages.as_ref().map(|p| Packages {
                manager: p.manager.clone(),
                count: i64::try_from(p.count).unwrap_or(i64::MAX),
                installed: p
                    .installed
                    .iter()
                    .flatten()
                    .map(|k| Package {
                        name: k.name.clone(),
                        version: k.version.clone(),
                        installed_at: None,
                    })
                    .collect(),
                installed_complete: p.installed.is_some(),
                recent: p
                    .recent
                    .iter()
                    .map(|k| Package {
                        name: k.name.clone(),
                        version: k.version.clone(),
                        installed_at: k.installed_at.map(|s| prost_types::Timestamp {
                            seconds: s,
                            nanos: 0,
                        }),
                    })
                    .collect(),
            }),
            processes: r
                .processes
                .iter()
                .map(|p| Process {
                    pid: p.pid,
                    user: p.user.clone(),
                    cpu_percent: p.cpu_percent,
                    mem_percent: p.mem_percent,
                    rss_bytes: p.rss_bytes,
                    command: p.command.clone(),
                })
                .collect(),
            network_interfaces: r
                .network_interfaces
                .iter()
                .map(|n| NetworkInterface {
                    name: n.name.clone(),
                    state: n.state.clone(),
                    mac: n.mac.clone(),
                    mtu: n.mtu,
                    addresses: n
                        .addresses
                        .iter()
                        .map(|a| Address {
                            family: a.family.clone(),
                            address: a.address.clone(),
                            prefix_length: a.prefix_length,
                        })
                        .collect(),
                })
                .collect(),
            step_errors: r
                .step_errors
                .iter()
                .map(|e| StepError {
                    step: e.step.clone(),
                    message: e.message.clone(),
                })
                .collect(),
            cpu: r.cpu.as_ref().map(|c| Cpu {
                model_name: c.model_name.clone(),
                logical_cpus: c.logical_cpus,
                sockets: c.sockets,
                cores_per_socket: c.cores_per_socket,
                threads_per_core: c.threads_per_core,
            }),
            virtualization: r.virtualization.as_ref().map(|v| Virtualization {
                role: VirtualizationRole::from(v.role) as i32,
                r#type: v.kind.clone(),
                source: v.source.clone(),
            }),
            timezone: r.timezone.as_ref().map(|t| Timezone {
                name: t.name.clone(),
                utc_offset_seconds: t.utc_offset_seconds,
                abbreviation: t.abbreviation.clone(),
                source: t.source.clone(),
            }),
            listening_sockets: r
                .listening_sockets
                .iter()
                .map(|s| ListeningSocket {
                    protocol: s.protocol.clone(),
                    family: s.family.clone(),
                    local_address: s.local_address.clone(),
                    port: s.port,
                    pid: s.pid.unwrap_or(0),
                    process: s.process.clone(),
                })
                .collect(),
            reboot_required: r.reboot_required.as_ref().map(|b| RebootRequired {
                status: RebootStatus::from(b.status) as i32,
                reasons: b.reasons.clone(),
                packages: b.packages.clone(),
                running_kernel: b.running_kernel.clone(),
                newest_kernel: b.newest_kernel.clone(),
            }),
            default_routes: r.default_routes.as_ref().map(|list| DefaultRoutes {
                routes: list.iter().map(DefaultRoute::from).collect(),
            }),
            dns: r.dns.as_ref().map(Dns::from),
        }
    }
}

impl From<&facts::DefaultRoute> for DefaultRoute {
    fn from(r: &facts::DefaultRoute) -> Self {
        Self {
            family: r.family.clone(),
            gateway: r.gateway.clone(),
            interface: r.interface.clone(),
            metric: r.metric,
        }
    }
}

impl From<&DefaultRoute> for facts::DefaultRoute {
    fn from(r: &DefaultRoute) -> Self {
        Self {
            family: r.family.clone(),
            gateway: r.gateway.clone(),
            interface: r.interface.clone(),
            metric: r.metric,
        }
    }
}

impl From<&facts::Dns> for Dns {
    fn from(d: &facts::Dns) -> Self {
        Self {
            nameservers: d.nameservers.clone(),
            search: d.search.clone(),
            upstream_nameservers: d.upstream_nameservers.clone(),
        }
    }
}

impl From<&Dns> for facts::Dns {
    fn from(d: &Dns) -> Self {
        Self {
            nameservers: d.nameservers.clone(),
            search: d.search.clone(),
            upstream_nameservers: d.upstream_nameservers.clone(),
        }
    }
}

impl From<facts::VirtualizationRole> for VirtualizationRole {
    fn from(r: facts::VirtualizationRole) -> Self {
        match r {
            facts::VirtualizationRole::Unspecified => Self::Unspecified,
            facts::VirtualizationRole::Host => Self::Host,
            facts::VirtualizationRole::Vm => Self::Vm,
            facts::VirtualizationRole::Container => Self::Container,
        }
    }
}

impl From<facts::RebootStatus> for RebootStatus {
    fn from(s: facts::RebootStatus) -> Self {
        match s {
            facts::RebootStatus::Unspecified => Self::Unspecified,
            facts::RebootStatus::Unknown => Self::Unknown,
            facts::RebootStatus::NotRequired => Self::NotRequired,
            facts::RebootStatus::Required => Self::Required,
        }
    }
}

// ---- DiffScans: model ↔ proto, and reading saved scans back ----

/// Reads the proto3 JSON of a message of type `full_name` (as `to_json`,
/// grpcurl or `hostscan … --json` print it).
pub fn from_json<M: prost::Message + Default>(text: &str, full_name: &str) -> Result<M, String> {
    let desc = POOL
        .as_ref()
        .and_then(|pool| pool.get_message_by_name(full_name))
        .ok_or_else(|| format!("no message type {full_name}"))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let dynamic = DynamicMessage::deserialize(desc, &mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    dynamic.transcode_to::<M>().map_err(|e| e.to_string())
}

impl From<&model::Scan> for DiffedScan {
    fn from(s: &model::Scan) -> Self {
        Self {
            scan_id: s.id,
            hostname: s.hostname.clone(),
            port: u32::from(s.port),
            scan_type: ScanType::from(s.scan_type) as i32,
            completed_at: s.completed_at.map(timestamp),
        }
    }
}

impl From<&Scan> for DiffedScan {
    fn from(s: &Scan) -> Self {
        Self {
            scan_id: s.id,
            hostname: s.hostname.clone(),
            port: s.port,
            scan_type: s.scan_type,
            completed_at: s.completed_at,
        }
    }
}

impl From<crate::model::diff::Section> for DiffSection {
    fn from(s: crate::model::diff::Section) -> Self {
        use crate::model::diff::Section as S;
        match s {
            S::Os => Self::Os,
            S::Hostname => Self::Hostname,
            S::Uptime => Self::Uptime,
            S::Disks => Self::Disks,
            S::Memory => Self::Memory,
            S::Cpu => Self::Cpu,
            S::Virtualization => Self::Virtualization,
            S::Timezone => Self::Timezone,
            S::Packages => Self::Packages,
            S::RebootRequired => Self::RebootRequired,
            S::NetworkInterfaces => Self::NetworkInterfaces,
            S::ListeningSockets => Self::ListeningSockets,
            S::StepErrors => Self::StepErrors,
            S::DefaultRoutes => Self::DefaultRoutes,
            S::Dns => Self::Dns,
        }
    }
}

fn string_change(c: &Option<crate::model::diff::Change<String>>) -> Option<StringChange> {
    c.as_ref().map(|c| StringChange {
        old_value: c.old.clone(),
        new_value: c.new.clone(),
    })
}

fn secs(u: u64) -> i64 {
    i64::try_from(u).unwrap_or(i64::MAX)
}

impl ScanDiff {
    /// The public form of `d`, a diff from `base` to `scan`.
    pub fn new(d: &crate::model::diff::ScanDiff, base: DiffedScan, scan: DiffedScan) -> Self {
        // The single-value facts, as their proto messages.
        let one = |r: facts::ScanResults| ScanResults::from(&r);
        let cpu = |c: &facts::Cpu| {
            one(facts::ScanResults {
                cpu: Some(c.clone()),
                ..Default::default()
            })
            .cpu
        };
        let virt = |v: &facts::Virtualization| {
            one(facts::ScanResults {
                virtualization: Some(v.clone()),
                ..Default::default()
            })
            .virtualization
        };
        let tz = |t: &facts::Timezone| {
            one(facts::ScanResults {
                timezone: Some(t.clone()),
                ..Default::default()
            })
            .timezone
        };
        let reboot_required = |b: &facts::RebootRequired| {
            one(facts::ScanResults {
                reboot_required: Some(b.clone()),
                ..Default::default()
            })
            .reboot_required
        };
        let disks = |list: &[facts::Disk]| {
            one(facts::ScanResults {
                disks: list.to_vec(),
                ..Default::default()
            })
            .disks
        };
        let interfaces = |list: &[facts::NetworkInterface]| {
            one(facts::ScanResults {
                network_interfaces: list.to_vec(),
                ..Default::default()
            })
            .network_interfaces
        };
        let sockets = |list: &[facts::ListeningSocket]| {
            one(facts::ScanResults {
                listening_sockets: list.to_vec(),
                ..Default::default()
            })
            .listening_sockets
        };
        let errors = |list: &[facts::StepError]| {
            one(facts::ScanResults {
                step_errors: list.to_vec(),
                ..Default::default()
            })
            .step_errors
        };
        let package = |p: &crate::model::diff::PackageRef| PackageChange {
            manager: p.manager.clone(),
            name: p.name.clone(),
            version: p.version.clone(),
        };
        let address = |a: &crate::model::diff::AddressChange| AddressChange {
            interface: a.interface.clone(),
            address: Some(Address {
                family: a.address.family.clone(),
                address: a.address.address.clone(),
                prefix_length: a.address.prefix_length,
            }),
        };
        let p = &d.packages;
        Self {
            base: Some(base),
            scan: Some(scan),
            compared_sections: d
                .compared
                .iter()
                .map(|s| DiffSection::from(*s) as i32)
                .collect(),
            skipped_sections: d
                .skipped
                .iter()
                .map(|s| SkippedSection {
                    section: DiffSection::from(s.section) as i32,
                    reason: s.reason.clone(),
                })
                .collect(),
            change_count: i32::try_from(d.change_count()).unwrap_or(i32::MAX),
            os_name: string_change(&d.os_name),
            os_version: string_change(&d.os_version),
            kernel: string_change(&d.kernel),
            arch: string_change(&d.arch),
            hostname: string_change(&d.hostname),
            reboot: d.reboot.as_ref().map(|r| Reboot {
                old_uptime_seconds: secs(r.old_uptime_seconds),
                new_uptime_seconds: secs(r.new_uptime_seconds),
                boot_time: r.boot_time.map(timestamp),
            }),
            memory_total_bytes: d.memory_total_bytes.as_ref().map(|c| Uint64Change {
                old_value: c.old,
                new_value: c.new,
            }),
            cpu: d.cpu.as_ref().map(|c| CpuChange {
                old_value: cpu(&c.old),
                new_value: cpu(&c.new),
            }),
            virtualization: d.virtualization.as_ref().map(|c| VirtualizationChange {
                old_value: virt(&c.old),
                new_value: virt(&c.new),
            }),
            timezone: d.timezone.as_ref().map(|c| TimezoneChange {
                old_value: tz(&c.old),
                new_value: tz(&c.new),
            }),
            disks_added: disks(&d.disks_added),
            disks_removed: disks(&d.disks_removed),
            disks_resized: d
                .disks_resized
                .iter()
                .map(|r| DiskSizeChange {
                    mount: r.mount.clone(),
                    filesystem: r.filesystem.clone(),
                    old_total_bytes: r.total_bytes.old,
                    new_total_bytes: r.total_bytes.new,
                })
                .collect(),
            disks_usage_changed: d
                .disks_usage_changed
                .iter()
                .map(|u| DiskUsageChange {
                    mount: u.mount.clone(),
                    filesystem: u.filesystem.clone(),
                    old_used_percent: u.used_percent.old,
                    new_used_percent: u.used_percent.new,
                })
                .collect(),
            package_manager: string_change(&p.manager),
            package_count: p.count.as_ref().map(|c| Int64Change {
                old_value: secs(c.old),
                new_value: secs(c.new),
            }),
            package_lists_compared: p.lists_compared,
            packages_added: p.added.iter().map(package).collect(),
            packages_removed: p.removed.iter().map(package).collect(),
            packages_version_changed: p
                .changed
                .iter()
                .map(|c| PackageVersionChange {
                    manager: c.manager.clone(),
                    name: c.name.clone(),
                    old_version: c.old_version.clone(),
                    new_version: c.new_version.clone(),
                })
                .collect(),
            interfaces_added: interfaces(&d.interfaces_added),
            interfaces_removed: interfaces(&d.interfaces_removed),
            interfaces_state_changed: d
                .interfaces_state_changed
                .iter()
                .map(|c| InterfaceStateChange {
                    name: c.name.clone(),
                    old_state: c.change.old.clone(),
                    new_state: c.change.new.clone(),
                })
                .collect(),
            interfaces_mac_changed: d
                .interfaces_mac_changed
                .iter()
                .map(|c| InterfaceMacChange {
                    name: c.name.clone(),
                    old_mac: c.change.old.clone(),
                    new_mac: c.change.new.clone(),
                })
                .collect(),
            interfaces_mtu_changed: d
                .interfaces_mtu_changed
                .iter()
                .map(|c| InterfaceMtuChange {
                    name: c.name.clone(),
                    old_mtu: c.change.old,
                    new_mtu: c.change.new,
                })
                .collect(),
            addresses_added: d.addresses_added.iter().map(address).collect(),
            addresses_removed: d.addresses_removed.iter().map(address).collect(),
            listening_sockets_added: sockets(&d.listening_sockets_added),
            listening_sockets_removed: sockets(&d.listening_sockets_removed),
            reboot_required: d.reboot_required.as_ref().map(|c| RebootRequiredChange {
                old_value: reboot_required(&c.old),
                new_value: reboot_required(&c.new),
            }),
            step_errors_appeared: errors(&d.step_errors_appeared),
            step_errors_resolved: errors(&d.step_errors_resolved),
            default_routes_added: d
                .default_routes_added
                .iter()
                .map(DefaultRoute::from)
                .collect(),
            default_routes_removed: d
                .default_routes_removed
                .iter()
                .map(DefaultRoute::from)
                .collect(),
            dns: d.dns.as_ref().map(|c| DnsChange {
                old_value: Some(Dns::from(&c.old)),
                new_value: Some(Dns::from(&c.new)),
            }),
        }
    }
}

impl From<&ScanResults> for facts::ScanResults {
    /// The facts a proto scan carries (e.g. a saved `probe --json`), back in
    /// the model: the inverse of `ScanResults::from(&facts::ScanResults)`
    /// (0 and "" stand for unknown where the proto has no presence).
    fn from(r: &ScanResults) -> Self {
        let text = |s: &str| s.to_string();
        Self {
            os: r.os.as_ref().map(|o| facts::OsInfo {
                name: text(&o.name),
                version: text(&o.version),
                id: text(&o.id),
                pretty_name: text(&o.pretty_name),
                kernel: text(&o.kernel),
                arch: text(&o.arch),
            }),
            hostname: text(&r.hostname),
            uptime_seconds: u64::try_from(r.uptime_seconds).ok().filter(|u| *u > 0),
            disks: r
                .disks
                .iter()
                .map(|d| facts::Disk {
                    filesystem: text(&d.filesystem),
                    mount: text(&d.mount),
                    fs_type: text(&d.fs_type),
                    total_bytes: d.total_bytes,
                    used_bytes: d.used_bytes,
                    available_bytes: d.available_bytes,
                    used_percent: d.used_percent,
                })
                .collect(),
            memory: r.memory.as_ref().map(|m| facts::Memory {
                total_bytes: m.total_bytes,
                used_bytes: m.used_bytes,
                available_bytes: m.available_bytes,
                used_percent: m.used_percent,
                swap_total_bytes: m.swap_total_bytes,
                swap_used_bytes: m.swap_used_bytes,
            }),
            packages: r.packages.as_ref().map(|p| facts::Packages {
                manager: text(&p.manager),
                count: u64::try_from(p.count).unwrap_or(0),
                recent: p
                    .recent
                    .iter()
                    .map(|k| facts::Package {
                        name: text(&k.name),
                        version: text(&k.version),
                        installed_at: k.installed_at.as_ref().map(|t| t.seconds),
                    })
                    .collect(),
                installed: p.installed_complete.then(|| {
                    p.installed
                        .iter()
                        .map(|k| facts::InstalledPackage {
                            name: text(&k.name),
                            version: text(&k.version),
                        })
                        .collect()
                }),
            }),
            processes: r
                .processes
                .iter()
                .map(|p| facts::Process {
                    pid: p.pid,
                    user: text(&p.user),
                    cpu_percent: p.cpu_percent,
                    mem_percent: p.mem_percent,
                    rss_bytes: p.rss_bytes,
                    command: text(&p.command),
                })
                .collect(),
            network_interfaces: r
                .network_interfaces
                .iter()
                .map(|n| facts::NetworkInterface {
                    name: text(&n.name),
                    state: text(&n.state),
                    mac: text(&n.mac),
                    mtu: n.mtu,
                    addresses: n
                        .addresses
                        .iter()
                        .map(|a| facts::Address {
                            family: text(&a.family),
                            address: text(&a.address),
                            prefix_length: a.prefix_length,
                        })
                        .collect(),
                })
                .collect(),
            step_errors: r
                .step_errors
                .iter()
                .map(|e| facts::StepError {
                    step: text(&e.step),
                    message: text(&e.message),
                })
                .collect(),
            cpu: r.cpu.as_ref().map(|c| facts::Cpu {
                model_name: text(&c.model_name),
                logical_cpus: c.logical_cpus,
                sockets: c.sockets,
                cores_per_socket: c.cores_per_socket,
                threads_per_core: c.threads_per_core,
            }),
            virtualization: r.virtualization.as_ref().map(|v| facts::Virtualization {
                role: match VirtualizationRole::try_from(v.role) {
                    Ok(VirtualizationRole::Host) => facts::VirtualizationRole::Host,
                    Ok(VirtualizationRole::Vm) => facts::VirtualizationRole::Vm,
                    Ok(VirtualizationRole::Container) => facts::VirtualizationRole::Container,
                    _ => facts::VirtualizationRole::Unspecified,
                },
                kind: text(&v.r#type),
                source: text(&v.source),
            }),
            timezone: r.timezone.as_ref().map(|t| facts::Timezone {
                name: text(&t.name),
                utc_offset_seconds: t.utc_offset_seconds,
                abbreviation: text(&t.abbreviation),
                source: text(&t.source),
            }),
            listening_sockets: r
                .listening_sockets
                .iter()
                .map(|s| facts::ListeningSocket {
                    protocol: text(&s.protocol),
                    family: text(&s.family),
                    local_address: text(&s.local_address),
                    port: s.port,
                    pid: (s.pid != 0).then_some(s.pid),
                    process: text(&s.process),
                })
                .collect(),
            reboot_required: r.reboot_required.as_ref().map(|b| facts::RebootRequired {
                status: match RebootStatus::try_from(b.status) {
                    Ok(RebootStatus::Unknown) => facts::RebootStatus::Unknown,
                    Ok(RebootStatus::NotRequired) => facts::RebootStatus::NotRequired,
                    Ok(RebootStatus::Required) => facts::RebootStatus::Required,
                    _ => facts::RebootStatus::Unspecified,
                },
                reasons: b.reasons.clone(),
                packages: b.packages.clone(),
                running_kernel: text(&b.running_kernel),
                newest_kernel: text(&b.newest_kernel),
            }),
            default_routes: r
                .default_routes
                .as_ref()
                .map(|d| d.routes.iter().map(facts::DefaultRoute::from).collect()),
            dns: r.dns.as_ref().map(facts::Dns::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_uses_proto3_mapping() {
        let scan = Scan {
            id: 7,
            status: ScanStatus::Completed as i32,
            created_at: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            ..Default::default()
        };
        let json = to_json(&scan, "hostscan.v1.Scan");
        assert!(json.contains("\"id\": \"7\""), "{json}");
        assert!(
            json.contains("\"status\": \"SCAN_STATUS_COMPLETED\""),
            "{json}"
        );
        assert!(
            json.contains("\"createdAt\": \"1970-01-01T00:00:00Z\""),
            "{json}"
        );
    }

    /// A saved `--json` scan reads back into the same facts (what
    /// `probe --diff-against` relies on), the installed list included.
    #[test]
    fn saved_json_reads_back_into_facts() {
        let results = facts::ScanResults {
            os: Some(facts::OsInfo {
                name: "Debian GNU/Linux".into(),
                kernel: "6.1.0-17-amd64".into(),
                ..Default::default()
            }),
            hostname: "web-1".into(),
            uptime_seconds: Some(3600),
            packages: Some(facts::Packages {
                manager: "dpkg".into(),
                count: 2,
                recent: vec![facts::Package {
                    name: "bash".into(),
                    version: "5.2.15-2".into(),
                    installed_at: Some(1_700_000_000),
                }],
                installed: Some(vec![
                    facts::InstalledPackage {
                        name: "bash".into(),
                        version: "5.2.15-2".into(),
                    },
                    facts::InstalledPackage {
                        name: "libc6".into(),
                        version: "2.36-9".into(),
                    },
                ]),
            }),
            network_interfaces: vec![facts::NetworkInterface {
                name: "eth0".into(),
                state: "up".into(),
                mtu: 1500,
                addresses: vec![facts::Address {
                    family: "inet".into(),
                    address: "10.0.0.5".into(),
                    prefix_length: 24,
                }],
                ..Default::default()
            }],
            listening_sockets: vec![facts::ListeningSocket {
                protocol: "tcp".into(),
                family: "inet".into(),
                local_address: "0.0.0.0".into(),
                port: 22,
                pid: Some(7),
                process: "sshd".into(),
            }],
            virtualization: Some(facts::Virtualization {
                role: facts::VirtualizationRole::Vm,
                kind: "kvm".into(),
                source: "dmi".into(),
            }),
            reboot_required: Some(facts::RebootRequired {
                status: facts::RebootStatus::NotRequired,
                ..Default::default()
            }),
            ..Default::default()
        };
        let scan = Scan {
            id: 3,
            results: Some(ScanResults::from(&results)),
            ..Default::default()
        };
        let json = to_json(&scan, "hostscan.v1.Scan");
        assert!(json.contains("\"installedComplete\": true"), "{json}");
        let back: Scan = from_json(&json, "hostscan.v1.Scan").expect("reads back");
        assert_eq!(back, scan);
        let facts_back = facts::ScanResults::from(back.results.as_ref().expect("results"));
        assert_eq!(facts_back, results);
        // Without installedComplete the list is unknown, not empty.
        let old = from_json::<Scan>(
            r#"{"results": {"packages": {"manager": "dpkg", "count": "2"}}}"#,
            "hostscan.v1.Scan",
        )
        .expect("old JSON");
        let packages = facts::ScanResults::from(old.results.as_ref().expect("results")).packages;
        assert_eq!(packages.and_then(|p| p.installed), None);
        for bad in ["", "{", "[]", r#"{"id": "x"}"#, r#"{"nosuch": 1}"#, "{} {}"] {
            assert!(from_json::<Scan>(bad, "hostscan.v1.Scan").is_err(), "{bad}");
        }
    }

    #[test]
    fn new_facts_map_to_proto_and_json() {
        let results = facts::ScanResults {
            virtualization: Some(facts::Virtualization {
                role: facts::VirtualizationRole::Container,
                kind: "docker".into(),
                source: "dockerenv".into(),
            }),
            reboot_required: Some(facts::RebootRequired {
                status: facts::RebootStatus::Unknown,
                ..Default::default()
            }),
            listening_sockets: vec![facts::ListeningSocket {
                protocol: "tcp".into(),
                family: "inet".into(),
                local_address: "127.0.0.1".into(),
                port: 5432,
                pid: Some(2211),
                process: "postgres".into(),
            }],
            timezone: Some(facts::Timezone {
                name: "Etc/UTC".into(),
                ..Default::default()
            }),
            cpu: Some(facts::Cpu {
                logical_cpus: 2,
                ..Default::default()
            }),
            default_routes: Some(vec![facts::DefaultRoute {
                family: "inet".into(),
                gateway: "192.0.2.1".into(),
                interface: "eth0".into(),
                metric: 100,
            }]),
            dns: Some(facts::Dns {
                nameservers: vec!["127.0.0.53".into()],
                search: vec!["corp.example".into()],
                upstream_nameservers: vec!["192.0.2.53".into()],
            }),
            ..Default::default()
        };
        let proto = ScanResults::from(&results);
        assert_eq!(facts::ScanResults::from(&proto), results);
        // A host without a default route still says it read the table.
        let none = ScanResults::from(&facts::ScanResults {
            default_routes: Some(Vec::new()),
            ..Default::default()
        });
        assert_eq!(
            facts::ScanResults::from(&none).default_routes,
            Some(Vec::new())
        );
        let json = to_json(&ScanResults::from(&results), "hostscan.v1.ScanResults");
        for want in [
            "\"role\": \"VIRTUALIZATION_ROLE_CONTAINER\"",
            "\"type\": \"docker\"",
            "\"status\": \"REBOOT_STATUS_UNKNOWN\"",
            "\"localAddress\": \"127.0.0.1\"",
            "\"pid\": 2211",
            "\"logicalCpus\": 2",
            "\"name\": \"Etc/UTC\"",
            "\"gateway\": \"192.0.2.1\"",
            "\"upstreamNameservers\": [",
        ] {
            assert!(json.contains(want), "missing {want} in {json}");
        }
        // Results stored before these facts existed still load.
        let old: facts::ScanResults =
            serde_json::from_str(r#"{"hostname":"h","step_errors":[]}"#).expect("old JSON");
        assert!(old.cpu.is_none() && old.listening_sockets.is_empty());
        let round: facts::ScanResults =
            serde_json::from_str(&serde_json::to_string(&results).expect("json")).expect("back");
        assert_eq!(round, results);
    }
}
