//! The shared vocabulary: scan types, statuses, error kinds, the scan record
//! and its events. Plain data; every layer may use it, it uses no layer.

pub mod diff;
pub mod facts;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

pub use facts::ScanResults;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScanType {
    Quick,
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScanStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl ScanStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScanErrorKind {
    ConnectionRefused,
    Timeout,
    Dns,
    AuthFailed,
    HostKeyMismatch,
    Unreachable,
    Protocol,
    Cancelled,
    Interrupted,
    Internal,
}

/// Names as stored in the database and printed in logs.
macro_rules! names {
    ($ty:ty { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$(<$ty>::$variant),*];
            pub fn as_str(self) -> &'static str {
                match self { $(<$ty>::$variant => $name),* }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok(<$ty>::$variant),)*
                    other => Err(format!(
                        "unknown {} {other:?} (expected one of: {})",
                        stringify!($ty),
                        [$($name),*].join(", ")
                    )),
                }
            }
        }
    };
}

names!(ScanType { Quick => "quick", Full => "full" });
names!(ScanStatus {
    Pending => "pending",
    Running => "running",
    Completed => "completed",
    Failed => "failed",
    Cancelled => "cancelled",
});
names!(ScanErrorKind {
    ConnectionRefused => "connection_refused",
    Timeout => "timeout",
    Dns => "dns",
    AuthFailed => "auth_failed",
    HostKeyMismatch => "host_key_mismatch",
    Unreachable => "unreachable",
    Protocol => "protocol",
    Cancelled => "cancelled",
    Interrupted => "interrupted",
    Internal => "internal",
});

/// Why a scan as a whole failed or stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    pub kind: ScanErrorKind,
    pub message: String,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// A scan as stored: the request, where it is, and what it found.
#[derive(Debug, Clone, PartialEq)]
pub struct Scan {
    pub id: i64,
    pub hostname: String,
    pub port: u16,
    pub username: String,
    pub scan_type: ScanType,
    pub status: ScanStatus,
    pub progress: i32,
    pub current_step: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub results: Option<ScanResults>,
    pub error: Option<ScanError>,
    pub request_id: Option<String>,
    /// The sequence of the last event written for this scan.
    pub sequence: i64,
    /// Jump hosts as requested (OpenSSH ProxyJump syntax); "" for none.
    pub proxy_jump: String,
}

/// One change of a scan, as published to watchers after it is committed.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanEvent {
    pub scan_id: i64,
    pub sequence: i64,
    pub status: ScanStatus,
    pub progress: i32,
    pub current_step: String,
    pub time: DateTime<Utc>,
    /// The scan's host and type: what WatchScans filters on.
    pub hostname: String,
    pub scan_type: ScanType,
    /// The whole scan, on terminal events.
    pub scan: Option<Scan>,
    /// This event as WatchScan sends it, encoded by the first stream that
    /// sends it and shared by every other (an opaque cache: `pb` fills it).
    pub wire: std::sync::OnceLock<bytes::Bytes>,
}

impl ScanEvent {
    /// The event that describes `scan` as it is now.
    pub fn snapshot(scan: &Scan) -> Self {
        Self {
            scan_id: scan.id,
            sequence: scan.sequence,
            status: scan.status,
            progress: scan.progress,
            current_step: scan.current_step.clone(),
            time: Utc::now(),
            hostname: scan.hostname.clone(),
            scan_type: scan.scan_type,
            scan: Some(scan.clone()),
            wire: std::sync::OnceLock::new(),
        }
    }
}

/// One host (hostname and port) as the scans of it describe it now: its
/// newest scan, and the summary of its newest COMPLETED scan.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub hostname: String,
    pub port: u16,
    /// The newest scan of the host, whatever its status.
    pub latest_scan: ScanRef,
    /// The newest COMPLETED scan's summary; `None` until one completes.
    pub completed: Option<HostSummary>,
}

/// Which scan, in what state, since when.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanRef {
    pub id: i64,
    pub status: ScanStatus,
    pub created_at: DateTime<Utc>,
}

/// What a completed scan says about its host, in brief.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HostSummary {
    pub scan_id: i64,
    pub completed_at: Option<DateTime<Utc>>,
    pub scan_type: Option<ScanType>,
    /// os-release `ID` (or its fallbacks): debian, rhel, alpine…
    pub os_id: String,
    pub os_pretty_name: String,
    /// `uname -r`.
    pub kernel: String,
    /// Installed packages; `None` when the scan had no package step.
    pub package_count: Option<i64>,
    pub step_error_count: i32,
}

impl HostSummary {
    /// The summary of a completed scan's results (`scan_id` and time are
    /// the caller's).
    pub fn of(results: &ScanResults) -> Self {
        let os = results.os.as_ref();
        Self {
            os_id: os.map(|o| o.id.clone()).unwrap_or_default(),
            os_pretty_name: os.map(|o| o.pretty_name.clone()).unwrap_or_default(),
            kernel: os.map(|o| o.kernel.clone()).unwrap_or_default(),
            package_count: results
                .packages
                .as_ref()
                .map(|p| i64::try_from(p.count).unwrap_or(i64::MAX)),
            step_error_count: i32::try_from(results.step_errors.len()).unwrap_or(i32::MAX),
            ..Default::default()
        }
    }
}
