//! Human-readable output of scans for the terminal. Pure formatting.

use std::fmt::Write as _;

use crate::pb;

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h) {
        (0, 0) => format!("{m}m {}s", secs % 60),
        (0, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h {m}m"),
    }
}

/// `+01:00`, `-05:30`.
pub fn utc_offset(secs: i32) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.unsigned_abs();
    format!("{sign}{:02}:{:02}", a / 3600, a % 3600 / 60)
}

pub fn status_name(status: i32) -> &'static str {
    match pb::ScanStatus::try_from(status) {
        Ok(pb::ScanStatus::Pending) => "PENDING",
        Ok(pb::ScanStatus::Running) => "RUNNING",
        Ok(pb::ScanStatus::Completed) => "COMPLETED",
        Ok(pb::ScanStatus::Failed) => "FAILED",
        Ok(pb::ScanStatus::Cancelled) => "CANCELLED",
        _ => "UNKNOWN",
    }
}

pub fn type_name(scan_type: i32) -> &'static str {
    match pb::ScanType::try_from(scan_type) {
        Ok(pb::ScanType::Quick) => "quick",
        Ok(pb::ScanType::Full) => "full",
        _ => "?",
    }
}

pub fn target(scan: &pb::Scan) -> String {
    if scan.hostname.contains(':') {
        format!("{}@[{}]:{}", scan.username, scan.hostname, scan.port)
    } else {
        format!("{}@{}:{}", scan.username, scan.hostname, scan.port)
    }
}

fn error_kind_name(kind: i32) -> String {
    pb::ScanErrorKind::try_from(kind)
        .map(|k| {
            k.as_str_name()
                .trim_start_matches("SCAN_ERROR_KIND_")
                .to_string()
        })
        .unwrap_or_else(|_| kind.to_string())
}

/// A scan with its results, as an operator wants to read it.
pub fn scan(s: &pb::Scan) -> String {
    let mut out = String::new();
    let took = match (&s.started_at, &s.completed_at) {
        (Some(a), Some(b)) => {
            let ms = (b.seconds - a.seconds) * 1000 + i64::from(b.nanos - a.nanos) / 1_000_000;
            format!("  in {:.2}s", ms as f64 / 1000.0)
        }
        _ => String::new(),
    };
    let id = if s.id > 0 {
        format!("Scan {}  ", s.id)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "{id}{}  {}  {}  {}%{took}",
        target(s),
        type_name(s.scan_type),
        status_name(s.status),
        s.progress
    );
    if let Some(e) = &s.error {
        let _ = writeln!(out, "Error      {}: {}", error_kind_name(e.kind), e.message);
    }
    if let Some(r) = &s.results {
        out.push_str(&results(r));
    }
    out
}

pub fn results(r: &pb::ScanResults) -> String {
    let mut out = String::new();
    if !r.hostname.is_empty() || r.uptime_seconds > 0 {
        let _ = writeln!(
            out,
            "Host       {}  up {}",
            r.hostname,
            duration(r.uptime_seconds)
        );
    }
    if let Some(os) = &r.os {
        let name = if os.pretty_name.is_empty() {
            format!("{} {}", os.name, os.version)
        } else {
            os.pretty_name.clone()
        };
        let _ = writeln!(out, "OS         {name}  kernel {}  {}", os.kernel, os.arch);
    }
    if let Some(c) = &r.cpu {
        let model = if c.model_name.is_empty() {
            "unknown model"
        } else {
            c.model_name.as_str()
        };
        let topology = if c.sockets > 0 && c.cores_per_socket > 0 && c.threads_per_core > 0 {
            format!(
                " ({} socket{} × {} cores × {} thread{})",
                c.sockets,
                if c.sockets == 1 { "" } else { "s" },
                c.cores_per_socket,
                c.threads_per_core,
                if c.threads_per_core == 1 { "" } else { "s" }
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "CPU        {model}, {} logical{topology}",
            c.logical_cpus
        );
    }
    if let Some(v) = &r.virtualization {
        let role = match pb::VirtualizationRole::try_from(v.role) {
            Ok(pb::VirtualizationRole::Host) => "host",
            Ok(pb::VirtualizationRole::Vm) => "virtual machine",
            Ok(pb::VirtualizationRole::Container) => "container",
            _ => "unknown",
        };
        let kind = if v.r#type.is_empty() || v.r#type == "none" {
            String::new()
        } else {
            format!(" ({})", v.r#type)
        };
        let _ = writeln!(out, "Runs as    {role}{kind}  [{}]", v.source);
    }
    if let Some(t) = &r.timezone {
        let name = if t.name.is_empty() {
            "unnamed zone"
        } else {
            t.name.as_str()
        };
        let _ = writeln!(
            out,
            "Timezone   {name} ({}, UTC{})",
            t.abbreviation,
            utc_offset(t.utc_offset_seconds)
        );
    }
    if let Some(m) = &r.memory {
        let _ = writeln!(
            out,
            "Memory     {} of {} used ({:.1}%), {} available; swap {} of {}",
            bytes(m.used_bytes),
            bytes(m.total_bytes),
            m.used_percent,
            bytes(m.available_bytes),
            bytes(m.swap_used_bytes),
            bytes(m.swap_total_bytes)
        );
    }
    if !r.disks.is_empty() {
        let _ = writeln!(out, "Disks");
        for d in &r.disks {
            let _ = writeln!(
                out,
                "  {:<24} {:<8} {:>10} of {:>10} used ({:.0}%)  {}",
                d.mount,
                d.fs_type,
                bytes(d.used_bytes),
                bytes(d.total_bytes),
                d.used_percent,
                d.filesystem
            );
        }
    }
    if let Some(p) = &r.packages {
        let _ = writeln!(out, "Packages   {} installed ({})", p.count, p.manager);
        for k in p.recent.iter().take(5) {
            let when = k
                .installed_at
                .as_ref()
                .and_then(pb::from_timestamp)
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default();
            let _ = writeln!(out, "  {when}  {} {}", k.name, k.version);
        }
        if p.recent.len() > 5 {
            let _ = writeln!(out, "  … {} more recent (see --json)", p.recent.len() - 5);
        }
    }
    if !r.processes.is_empty() {
        let _ = writeln!(out, "Processes  top {} by memory", r.processes.len());
        for p in r.processes.iter().take(10) {
            let command: String = p.command.chars().take(60).collect();
            let _ = writeln!(
                out,
                "  {:>7} {:<10} {:>5.1}% cpu {:>10}  {command}",
                p.pid,
                p.user,
                p.cpu_percent,
                bytes(p.rss_bytes)
            );
        }
    }
    if !r.network_interfaces.is_empty() {
        let _ = writeln!(out, "Network");
        for n in &r.network_interfaces {
            let addrs: Vec<String> = n
                .addresses
                .iter()
                .map(|a| format!("{}/{}", a.address, a.prefix_length))
                .collect();
            let _ = writeln!(
                out,
                "  {:<12} {:<8} {:<17} mtu {:<5} {}",
                n.name,
                n.state,
                n.mac,
                n.mtu,
                addrs.join(" ")
            );
        }
    }
    if !r.listening_sockets.is_empty() {
        let _ = writeln!(out, "Listening  {} sockets", r.listening_sockets.len());
        for l in r.listening_sockets.iter().take(20) {
            let endpoint = if l.family == "inet6" {
                format!("[{}]:{}", l.local_address, l.port)
            } else {
                format!("{}:{}", l.local_address, l.port)
            };
            let owner = match (l.pid, l.process.as_str()) {
                (0, "") => String::new(),
                (0, name) => name.to_string(),
                (pid, name) => format!("{name} ({pid})"),
            };
            let _ = writeln!(out, "  {:<4} {:<28} {owner}", l.protocol, endpoint);
        }
        if r.listening_sockets.len() > 20 {
            let _ = writeln!(
                out,
                "  … {} more (see --json)",
                r.listening_sockets.len() - 20
            );
        }
    }
    if let Some(b) = &r.reboot_required {
        let status = match pb::RebootStatus::try_from(b.status) {
            Ok(pb::RebootStatus::Required) => "required",
            Ok(pb::RebootStatus::NotRequired) => "not required",
            _ => "unknown (no evidence)",
        };
        let _ = writeln!(out, "Reboot     {status}");
        for reason in &b.reasons {
            let _ = writeln!(out, "  {reason}");
        }
        if !b.packages.is_empty() {
            let _ = writeln!(out, "  packages: {}", b.packages.join(", "));
        }
    }
    if !r.step_errors.is_empty() {
        let _ = writeln!(out, "Step errors");
        for e in &r.step_errors {
            let _ = writeln!(out, "  {}: {}", e.step, e.message);
        }
    }
    out
}

/// ListHosts as a table, one host per row, then the paging line.
pub fn hosts(page: &pb::ListHostsResponse) -> String {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_header([
            "HOST",
            "OS",
            "KERNEL",
            "PACKAGES",
            "STEP ERRORS",
            "COMPLETED",
            "LATEST",
        ]);
    for h in &page.hosts {
        let host = if h.hostname.contains(':') {
            format!("[{}]:{}", h.hostname, h.port)
        } else {
            format!("{}:{}", h.hostname, h.port)
        };
        let c = h.latest_completed.as_ref();
        let completed = c.map_or_else(
            || "never".to_string(),
            |c| format!("scan {} {}", c.scan_id, when(c.completed_at.as_ref())),
        );
        let latest = h.latest_scan.as_ref().map_or_else(String::new, |l| {
            format!("scan {} {}", l.scan_id, status_name(l.status))
        });
        table.add_row([
            host,
            c.map(|c| c.os_pretty_name.clone()).unwrap_or_default(),
            c.map(|c| c.kernel.clone()).unwrap_or_default(),
            c.and_then(|c| c.package_count)
                .map_or_else(String::new, |n| n.to_string()),
            c.map_or_else(String::new, |c| c.step_error_count.to_string()),
            completed,
            latest,
        ]);
    }
    let mut out = format!(
        "{table}\n{} of {} hosts\n",
        page.hosts.len(),
        page.total_size
    );
    if !page.next_page_token.is_empty() {
        out.push_str(&format!(
            "next page: --page-token {}\n",
            page.next_page_token
        ));
    }
    out
}

fn when(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(pb::from_timestamp)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(8 * 1024 * 1024 * 1024), "8.0 GiB");
        assert_eq!(duration(59), "0m 59s");
        assert_eq!(duration(3 * 86_400 + 4 * 3600 + 12 * 60), "3d 4h 12m");
        assert_eq!(utc_offset(19_800), "+05:30");
        assert_eq!(utc_offset(-18_000), "-05:00");
    }

    #[test]
    fn new_facts_read_as_sentences() {
        let r = pb::ScanResults {
            cpu: Some(pb::Cpu {
                model_name: "AMD EPYC".into(),
                logical_cpus: 8,
                sockets: 2,
                cores_per_socket: 2,
                threads_per_core: 2,
            }),
            virtualization: Some(pb::Virtualization {
                role: pb::VirtualizationRole::Container as i32,
                r#type: "docker".into(),
                source: "dockerenv".into(),
            }),
            timezone: Some(pb::Timezone {
                name: "Asia/Kolkata".into(),
                utc_offset_seconds: 19_800,
                abbreviation: "IST".into(),
                source: "localtime-link".into(),
            }),
            listening_sockets: vec![
                pb::ListeningSocket {
                    protocol: "tcp".into(),
                    family: "inet6".into(),
                    local_address: "::".into(),
                    port: 22,
                    pid: 812,
                    process: "sshd".into(),
                },
                pb::ListeningSocket {
                    protocol: "udp".into(),
                    family: "inet".into(),
                    local_address: "0.0.0.0".into(),
                    port: 68,
                    ..Default::default()
                },
            ],
            reboot_required: Some(pb::RebootRequired {
                status: pb::RebootStatus::Required as i32,
                reasons: vec!["/var/run/reboot-required exists".into()],
                packages: vec!["libc6".into(), "linux-image-amd64".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = results(&r);
        for want in [
            "CPU        AMD EPYC, 8 logical (2 sockets × 2 cores × 2 threads)",
            "Runs as    container (docker)  [dockerenv]",
            "Timezone   Asia/Kolkata (IST, UTC+05:30)",
            "Listening  2 sockets",
            "  tcp  [::]:22                      sshd (812)",
            "  udp  0.0.0.0:68",
            "Reboot     required",
            "  packages: libc6, linux-image-amd64",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        let unknown = pb::ScanResults {
            reboot_required: Some(pb::RebootRequired {
                status: pb::RebootStatus::Unknown as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(results(&unknown).contains("Reboot     unknown (no evidence)"));
    }

    #[test]
    fn failed_scan_says_why() {
        let s = pb::Scan {
            id: 3,
            hostname: "h".into(),
            port: 22,
            username: "u".into(),
            scan_type: pb::ScanType::Quick as i32,
            status: pb::ScanStatus::Failed as i32,
            error: Some(pb::ScanError {
                kind: pb::ScanErrorKind::AuthFailed as i32,
                message: "authentication failed for u@h:22 (tried 1 key)".into(),
            }),
            ..Default::default()
        };
        let text = scan(&s);
        assert!(text.starts_with("Scan 3  u@h:22  quick  FAILED"), "{text}");
        assert!(
            text.contains("Error      AUTH_FAILED: authentication failed"),
            "{text}"
        );
    }
}
