//! The generated protobuf types of `proto/hostscan/v1/scan.proto`, the
//! mappings between them and `model`, and the proto3 JSON printer (what
//! grpcurl prints) used by the CLI. No I/O, no `tonic::Status`.

#![allow(clippy::all, missing_docs)]

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use prost_reflect::{DescriptorPool, DynamicMessage};

use crate::model::{self, facts};

tonic::include_proto!("hostscan.v1");

/// The protobuf codec of the hostscan service: prost, with a small initial
/// encode buffer. tonic keeps one per open stream, and a WatchScan stream
/// mostly sends small events; the buffer grows for the terminal one.
pub mod codec {
    use std::marker::PhantomData;

    use tonic::codec::BufferSettings;
    use tonic_prost::{ProstDecoder, ProstEncoder};

    const ENCODE_BUFFER: usize = 1024;
    const YIELD_THRESHOLD: usize = 32 * 1024;

    #[derive(Debug, Clone, Copy)]
    pub struct Codec<T, U>(PhantomData<(T, U)>);

    impl<T, U> Default for Codec<T, U> {
        fn default() -> Self {
            Self(PhantomData)
        }
    }

    impl<T, U> tonic::codec::Codec for Codec<T, U>
    where
        T: prost::Message + Send + 'static,
        U: prost::Message + Default + Send + 'static,
    {
        type Encode = T;
        type Decode = U;
        type Encoder = ProstEncoder<T>;
        type Decoder = ProstDecoder<U>;

        fn encoder(&mut self) -> Self::Encoder {
            ProstEncoder::new(BufferSettings::new(ENCODE_BUFFER, YIELD_THRESHOLD))
        }

        fn decoder(&mut self) -> Self::Decoder {
            ProstDecoder::new(BufferSettings::default())
        }
    }
}

/// Descriptors of the hostscan API, for reflection and JSON.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("hostscan_descriptor");

static POOL: LazyLock<Option<DescriptorPool>> =
    LazyLock::new(|| DescriptorPool::decode(FILE_DESCRIPTOR_SET).ok());

/// Prints `message` (of proto type `full_name`, e.g. "hostscan.v1.Scan") in
/// the proto3 JSON mapping, pretty, as grpcurl does.
pub fn to_json<M: prost::Message>(message: &M, full_name: &str) -> String {
    let dynamic = POOL
        .as_ref()
        .and_then(|pool| pool.get_message_by_name(full_name))
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
            ..Default::default()
        };
        let json = to_json(&ScanResults::from(&results), "hostscan.v1.ScanResults");
        for want in [
            "\"role\": \"VIRTUALIZATION_ROLE_CONTAINER\"",
            "\"type\": \"docker\"",
            "\"status\": \"REBOOT_STATUS_UNKNOWN\"",
            "\"localAddress\": \"127.0.0.1\"",
            "\"pid\": 2211",
            "\"logicalCpus\": 2",
            "\"name\": \"Etc/UTC\"",
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
