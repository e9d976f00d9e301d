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
    if let Some(routes) = &r.default_routes {
        if routes.routes.is_empty() {
            let _ = writeln!(out, "Routes     no default route");
        } else {
            let _ = writeln!(out, "Routes");
            for route in &routes.routes {
                let _ = writeln!(out, "  default {}", route_text(route));
            }
        }
    }
    if let Some(dns) = &r.dns {
        let _ = writeln!(out, "DNS        {}", dns_text(dns));
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

/// `via 192.0.2.1 dev eth0 metric 100` (ip's words), `dev wg0` on-link.
fn route_text(r: &pb::DefaultRoute) -> String {
    let mut text = String::new();
    if !r.gateway.is_empty() {
        text.push_str(&format!("via {} ", r.gateway));
    }
    text.push_str(&format!("dev {}", r.interface));
    if r.metric != 0 {
        text.push_str(&format!(" metric {}", r.metric));
    }
    text
}

/// `192.0.2.53 10.0.0.53, search corp.example` (and what a stub forwards to).
fn dns_text(d: &pb::Dns) -> String {
    let mut text = if d.nameservers.is_empty() {
        "no nameserver".to_string()
    } else {
        d.nameservers.join(" ")
    };
    if !d.upstream_nameservers.is_empty() {
        text.push_str(&format!(" (→ {})", d.upstream_nameservers.join(" ")));
    }
    if !d.search.is_empty() {
        text.push_str(&format!(", search {}", d.search.join(" ")));
    }
    text
}

/// ListHosts as a table, one host per row, then the paging line (which
/// repeats `order_by`: a token pages only in its own order).
pub fn hosts(page: &pb::ListHostsResponse, order_by: &str) -> String {
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
        // The server took `order_by`, so it is "hostname" in some spelling.
        let order = if order_by.trim().is_empty() {
            ""
        } else {
            " --order-by hostname"
        };
        out.push_str(&format!(
            "next page: --page-token {}{order}\n",
            page.next_page_token
        ));
    }
    out
}

/// Styles of diff lines; `anstream` drops them where colour is off.
mod style {
    use anstyle::{AnsiColor, Style};
    pub const ADDED: Style = AnsiColor::Green.on_default();
    pub const REMOVED: Style = AnsiColor::Red.on_default();
    pub const CHANGED: Style = AnsiColor::Yellow.on_default();
    pub const EVENT: Style = AnsiColor::Magenta.on_default().bold();
    pub const HEADER: Style = Style::new().bold();
    pub const DIM: Style = Style::new().dimmed();
}

/// One line of a diff: a sign (+ added, - removed, ~ changed, ! event),
/// what, and the detail, styled by sign.
fn diff_line(out: &mut String, sign: char, what: &str, detail: &str) {
    let style = match sign {
        '+' => style::ADDED,
        '-' => style::REMOVED,
        '!' => style::EVENT,
        _ => style::CHANGED,
    };
    let _ = writeln!(out, "{style}{sign} {what:<16} {detail}{style:#}");
}

fn arrow<T: std::fmt::Display>(old: T, new: T) -> String {
    format!("{old} → {new}")
}

fn shown_or_none(s: &str) -> &str {
    if s.is_empty() { "(none)" } else { s }
}

fn diffed_label(d: Option<&pb::DiffedScan>, unsaved: &str) -> String {
    let Some(d) = d else {
        return unsaved.to_string();
    };
    let at = d
        .completed_at
        .as_ref()
        .and_then(pb::from_timestamp)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default();
    let at = if at.is_empty() {
        String::new()
    } else {
        format!(", {at}")
    };
    let name = if d.scan_id > 0 {
        format!("scan {}", d.scan_id)
    } else {
        unsaved.to_string()
    };
    format!("{name} ({}{at})", type_name(d.scan_type))
}

fn diffed_host(d: Option<&pb::DiffedScan>) -> String {
    d.map_or_else(String::new, |d| {
        if d.hostname.contains(':') {
            format!("[{}]:{}", d.hostname, d.port)
        } else {
            format!("{}:{}", d.hostname, d.port)
        }
    })
}

fn section_name(section: i32) -> String {
    pb::DiffSection::try_from(section)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("DIFF_SECTION_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| section.to_string())
}

fn cpu_text(c: Option<&pb::Cpu>) -> String {
    c.map_or_else(
        || "unknown".into(),
        |c| {
            format!(
                "{}, {} logical",
                shown_or_none(&c.model_name),
                c.logical_cpus
            )
        },
    )
}

fn virt_text(v: Option<&pb::Virtualization>) -> String {
    v.map_or_else(
        || "unknown".into(),
        |v| {
            let role = match pb::VirtualizationRole::try_from(v.role) {
                Ok(pb::VirtualizationRole::Host) => "host",
                Ok(pb::VirtualizationRole::Vm) => "virtual machine",
                Ok(pb::VirtualizationRole::Container) => "container",
                _ => "unknown",
            };
            format!("{role} ({})", v.r#type)
        },
    )
}

fn reboot_status(b: Option<&pb::RebootRequired>) -> &'static str {
    match b.map(|b| pb::RebootStatus::try_from(b.status)) {
        Some(Ok(pb::RebootStatus::Required)) => "required",
        Some(Ok(pb::RebootStatus::NotRequired)) => "not required",
        _ => "unknown",
    }
}

fn interface_text(i: &pb::NetworkInterface) -> String {
    let addrs: Vec<String> = i
        .addresses
        .iter()
        .map(|a| format!("{}/{}", a.address, a.prefix_length))
        .collect();
    format!(
        "{} {} {} mtu {} {}",
        i.name,
        i.state,
        shown_or_none(&i.mac),
        i.mtu,
        addrs.join(" ")
    )
    .trim_end()
    .to_string()
}

fn socket_text(l: &pb::ListeningSocket) -> String {
    let endpoint = if l.family == "inet6" {
        format!("[{}]:{}", l.local_address, l.port)
    } else {
        format!("{}:{}", l.local_address, l.port)
    };
    match (l.pid, l.process.as_str()) {
        (0, "") => format!("{} {endpoint}", l.protocol),
        (0, name) => format!("{} {endpoint} {name}", l.protocol),
        (pid, name) => format!("{} {endpoint} {name} ({pid})", l.protocol),
    }
}

fn disk_text(d: &pb::Disk) -> String {
    format!("{} {} {}", d.mount, d.filesystem, bytes(d.total_bytes))
}

/// A diff as an operator reads it: which scans, what was compared, then one
/// line per change (`+` added, `-` removed, `~` changed, `!` a reboot), each
/// styled by its sign.
pub fn diff(d: &pb::ScanDiff) -> String {
    let mut out = String::new();
    let (base, scan) = (d.base.as_ref(), d.scan.as_ref());
    let (base_host, scan_host) = (diffed_host(base), diffed_host(scan));
    let hosts = if base_host == scan_host {
        format!("  {scan_host}")
    } else {
        format!("  {base_host} → {scan_host}")
    };
    let _ = writeln!(
        out,
        "{h}{} against {}{hosts}{h:#}",
        diffed_label(scan, "this probe"),
        diffed_label(base, "the saved scan"),
        h = style::HEADER
    );
    let compared: Vec<String> = d
        .compared_sections
        .iter()
        .map(|s| section_name(*s))
        .collect();
    let _ = writeln!(
        out,
        "{s}Compared   {}{s:#}",
        compared.join(", "),
        s = style::DIM
    );
    for skipped in &d.skipped_sections {
        let _ = writeln!(
            out,
            "{s}Skipped    {}: {}{s:#}",
            section_name(skipped.section),
            skipped.reason,
            s = style::DIM
        );
    }
    let string_changes = [
        ("os name", &d.os_name),
        ("os version", &d.os_version),
        ("kernel", &d.kernel),
        ("arch", &d.arch),
        ("hostname", &d.hostname),
    ];
    for (what, change) in string_changes {
        if let Some(c) = change {
            diff_line(
                &mut out,
                '~',
                what,
                &arrow(shown_or_none(&c.old_value), shown_or_none(&c.new_value)),
            );
        }
    }
    if let Some(r) = &d.reboot {
        let booted = r
            .boot_time
            .as_ref()
            .and_then(pb::from_timestamp)
            .map(|t| format!("; booted {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
            .unwrap_or_default();
        diff_line(
            &mut out,
            '!',
            "rebooted",
            &format!(
                "up {}{booted}",
                arrow(
                    duration(r.old_uptime_seconds),
                    duration(r.new_uptime_seconds)
                )
            ),
        );
    }
    if let Some(m) = &d.memory_total_bytes {
        diff_line(
            &mut out,
            '~',
            "memory",
            &arrow(bytes(m.old_value), bytes(m.new_value)),
        );
    }
    if let Some(c) = &d.cpu {
        diff_line(
            &mut out,
            '~',
            "cpu",
            &arrow(
                cpu_text(c.old_value.as_ref()),
                cpu_text(c.new_value.as_ref()),
            ),
        );
    }
    if let Some(v) = &d.virtualization {
        diff_line(
            &mut out,
            '~',
            "virtualization",
            &arrow(
                virt_text(v.old_value.as_ref()),
                virt_text(v.new_value.as_ref()),
            ),
        );
    }
    if let Some(t) = &d.timezone {
        let name = |t: Option<&pb::Timezone>| {
            t.map_or_else(String::new, |t| {
                format!(
                    "{} (UTC{})",
                    shown_or_none(&t.name),
                    utc_offset(t.utc_offset_seconds)
                )
            })
        };
        diff_line(
            &mut out,
            '~',
            "timezone",
            &arrow(name(t.old_value.as_ref()), name(t.new_value.as_ref())),
        );
    }
    for disk in &d.disks_added {
        diff_line(&mut out, '+', "disk", &disk_text(disk));
    }
    for disk in &d.disks_removed {
        diff_line(&mut out, '-', "disk", &disk_text(disk));
    }
    for r in &d.disks_resized {
        diff_line(
            &mut out,
            '~',
            "disk size",
            &format!(
                "{} {} {}",
                r.mount,
                r.filesystem,
                arrow(bytes(r.old_total_bytes), bytes(r.new_total_bytes))
            ),
        );
    }
    for u in &d.disks_usage_changed {
        diff_line(
            &mut out,
            '~',
            "disk usage",
            &format!(
                "{} {} {:.0}% → {:.0}%",
                u.mount, u.filesystem, u.old_used_percent, u.new_used_percent
            ),
        );
    }
    if let Some(m) = &d.package_manager {
        diff_line(
            &mut out,
            '~',
            "package manager",
            &arrow(&m.old_value, &m.new_value),
        );
    }
    if let Some(c) = &d.package_count {
        diff_line(
            &mut out,
            '~',
            "packages",
            &format!("{} installed", arrow(c.old_value, c.new_value)),
        );
    }
    let packages_compared = d
        .compared_sections
        .contains(&(pb::DiffSection::Packages as i32));
    if packages_compared && !d.package_lists_compared {
        let _ = writeln!(
            out,
            "{s}           packages compared by count only: a scan stored no package list{s:#}",
            s = style::DIM
        );
    }
    for p in &d.packages_added {
        diff_line(
            &mut out,
            '+',
            "package",
            &format!("{} {} ({})", p.name, p.version, p.manager),
        );
    }
    for p in &d.packages_removed {
        diff_line(
            &mut out,
            '-',
            "package",
            &format!("{} {} ({})", p.name, p.version, p.manager),
        );
    }
    for p in &d.packages_version_changed {
        diff_line(
            &mut out,
            '~',
            "package",
            &format!(
                "{} {} ({})",
                p.name,
                arrow(&p.old_version, &p.new_version),
                p.manager
            ),
        );
    }
    for i in &d.interfaces_added {
        diff_line(&mut out, '+', "interface", &interface_text(i));
    }
    for i in &d.interfaces_removed {
        diff_line(&mut out, '-', "interface", &interface_text(i));
    }
    for c in &d.interfaces_state_changed {
        diff_line(
            &mut out,
            '~',
            "interface",
            &format!("{} state {}", c.name, arrow(&c.old_state, &c.new_state)),
        );
    }
    for c in &d.interfaces_mac_changed {
        diff_line(
            &mut out,
            '~',
            "interface",
            &format!(
                "{} mac {}",
                c.name,
                arrow(shown_or_none(&c.old_mac), shown_or_none(&c.new_mac))
            ),
        );
    }
    for c in &d.interfaces_mtu_changed {
        diff_line(
            &mut out,
            '~',
            "interface",
            &format!("{} mtu {}", c.name, arrow(c.old_mtu, c.new_mtu)),
        );
    }
    let address = |a: &pb::AddressChange| {
        a.address.as_ref().map_or_else(
            || a.interface.clone(),
            |x| {
                format!(
                    "{} {} {}/{}",
                    a.interface, x.family, x.address, x.prefix_length
                )
            },
        )
    };
    for a in &d.addresses_added {
        diff_line(&mut out, '+', "address", &address(a));
    }
    for a in &d.addresses_removed {
        diff_line(&mut out, '-', "address", &address(a));
    }
    for l in &d.listening_sockets_added {
        diff_line(&mut out, '+', "listening", &socket_text(l));
    }
    for l in &d.listening_sockets_removed {
        diff_line(&mut out, '-', "listening", &socket_text(l));
    }
    for r in &d.default_routes_added {
        diff_line(&mut out, '+', "default route", &route_text(r));
    }
    for r in &d.default_routes_removed {
        diff_line(&mut out, '-', "default route", &route_text(r));
    }
    if let Some(c) = &d.dns {
        let text = |v: Option<&pb::Dns>| v.map(dns_text).unwrap_or_default();
        diff_line(
            &mut out,
            '~',
            "dns",
            &arrow(text(c.old_value.as_ref()), text(c.new_value.as_ref())),
        );
    }
    if let Some(b) = &d.reboot_required {
        let reasons = b
            .new_value
            .as_ref()
            .map(|n| n.reasons.join("; "))
            .filter(|r| !r.is_empty())
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        diff_line(
            &mut out,
            '~',
            "reboot",
            &format!(
                "{}{reasons}",
                arrow(
                    reboot_status(b.old_value.as_ref()),
                    reboot_status(b.new_value.as_ref())
                )
            ),
        );
    }
    for e in &d.step_errors_appeared {
        diff_line(
            &mut out,
            '+',
            "step error",
            &format!("{}: {}", e.step, e.message),
        );
    }
    for e in &d.step_errors_resolved {
        diff_line(
            &mut out,
            '-',
            "step error",
            &format!("{}: {}", e.step, e.message),
        );
    }
    let _ = match d.change_count {
        0 => writeln!(out, "No changes"),
        1 => writeln!(out, "1 change"),
        n => writeln!(out, "{n} changes"),
    };
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
            default_routes: Some(pb::DefaultRoutes {
                routes: vec![
                    pb::DefaultRoute {
                        family: "inet".into(),
                        gateway: "192.0.2.1".into(),
                        interface: "eth0".into(),
                        metric: 100,
                    },
                    pb::DefaultRoute {
                        family: "inet".into(),
                        interface: "wg0".into(),
                        ..Default::default()
                    },
                ],
            }),
            dns: Some(pb::Dns {
                nameservers: vec!["127.0.0.53".into()],
                search: vec!["corp.example".into()],
                upstream_nameservers: vec!["192.0.2.53".into()],
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
            "  default via 192.0.2.1 dev eth0 metric 100\n",
            "  default dev wg0\n",
            "DNS        127.0.0.53 (→ 192.0.2.53), search corp.example\n",
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
        let unrouted = pb::ScanResults {
            default_routes: Some(pb::DefaultRoutes::default()),
            ..Default::default()
        };
        assert!(results(&unrouted).contains("Routes     no default route"));
    }

    #[test]
    fn diffs_read_line_by_line_and_colour_by_sign() {
        let d = pb::ScanDiff {
            base: Some(pb::DiffedScan {
                scan_id: 12,
                hostname: "web-1".into(),
                port: 22,
                scan_type: pb::ScanType::Full as i32,
                ..Default::default()
            }),
            scan: Some(pb::DiffedScan {
                scan_id: 14,
                hostname: "web-1".into(),
                port: 22,
                scan_type: pb::ScanType::Quick as i32,
                ..Default::default()
            }),
            compared_sections: vec![pb::DiffSection::Os as i32, pb::DiffSection::Uptime as i32],
            skipped_sections: vec![pb::SkippedSection {
                section: pb::DiffSection::Packages as i32,
                reason: "the scan is a quick scan".into(),
            }],
            change_count: 4,
            kernel: Some(pb::StringChange {
                old_value: "6.1.0-17-amd64".into(),
                new_value: "6.1.0-18-amd64".into(),
            }),
            reboot: Some(pb::Reboot {
                old_uptime_seconds: 86_400,
                new_uptime_seconds: 60,
                boot_time: Some(prost_types::Timestamp {
                    seconds: 1_800_000_000,
                    nanos: 0,
                }),
            }),
            packages_added: vec![pb::PackageChange {
                manager: "dpkg".into(),
                name: "hs-new".into(),
                version: "1.0-1".into(),
            }],
            addresses_removed: vec![pb::AddressChange {
                interface: "eth0".into(),
                address: Some(pb::Address {
                    family: "inet".into(),
                    address: "10.0.0.5".into(),
                    prefix_length: 24,
                }),
            }],
            default_routes_added: vec![pb::DefaultRoute {
                family: "inet".into(),
                gateway: "10.0.0.254".into(),
                interface: "eth0".into(),
                metric: 0,
            }],
            dns: Some(pb::DnsChange {
                old_value: Some(pb::Dns {
                    nameservers: vec!["10.0.0.2".into()],
                    ..Default::default()
                }),
                new_value: Some(pb::Dns {
                    nameservers: vec!["10.0.0.3".into(), "10.0.0.2".into()],
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let styled = diff(&d);
        let plain = anstream::adapter::strip_str(&styled).to_string();
        for want in [
            "scan 14 (quick) against scan 12 (full)  web-1:22\n",
            "Compared   os, uptime\n",
            "Skipped    packages: the scan is a quick scan\n",
            "~ kernel           6.1.0-17-amd64 → 6.1.0-18-amd64\n",
            "! rebooted         up 1d 0h 0m → 1m 0s; booted 2027-01-15 08:00:00 UTC\n",
            "+ package          hs-new 1.0-1 (dpkg)\n",
            "- address          eth0 inet 10.0.0.5/24\n",
            "+ default route    via 10.0.0.254 dev eth0\n",
            "~ dns              10.0.0.2 → 10.0.0.3 10.0.0.2\n",
            "4 changes\n",
        ] {
            assert!(plain.contains(want), "missing {want:?} in\n{plain}");
        }
        assert!(
            styled.contains("\x1b[32m+ package"),
            "added lines are green: {styled:?}"
        );
        assert!(styled.contains("\x1b[31m- address"), "{styled:?}");
        assert!(diff(&pb::ScanDiff::default()).ends_with("No changes\n"));
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
