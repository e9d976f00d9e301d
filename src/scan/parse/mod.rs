//! Parsers: pure functions from a step script's stdout to typed facts.
//!
//! Each submodule owns one step: `SCRIPT`, the constant POSIX `sh` script the
//! engine feeds to `/bin/sh -s` on the host (with `LC_ALL=C` already set), and
//! `parse`, which turns what that script printed into facts. Scripts print
//! `@@name` marker lines so one script can try several tools and say which
//! one answered. Invariants: parsers do no I/O, never panic on any input
//! (property tests below feed them garbage), and bound what they keep.

use std::fmt;

pub mod cpu;
pub mod disks;
pub mod hostname;
pub mod listening;
pub mod memory;
pub mod network;
pub mod os;
pub mod packages;
pub mod processes;
pub mod reboot;
pub mod routing;
pub mod timezone;
pub mod uptime;
pub mod virtualization;

/// Why a step's output could not be turned into facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl ParseError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// Splits script output into `(marker, body)` pairs at lines of the form
/// `@@marker`. Text before the first marker is returned under the name "".
pub fn sections(text: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut name = "";
    let mut start = 0;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_end_matches(['\n', '\r']);
        if let Some(marker) = trimmed.strip_prefix("@@") {
            if pos > start || !name.is_empty() {
                out.push((name, &text[start..pos]));
            }
            name = marker.trim();
            start = pos + line.len();
        }
        pos += line.len();
    }
    if pos > start || !name.is_empty() {
        out.push((name, &text[start..pos]));
    }
    out
}

/// The body of the first section called `name`.
pub fn section<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    sections(text)
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, body)| body)
}

/// Sections of `text` that are not the unnamed preamble, in order.
pub fn named_sections(text: &str) -> Vec<(&str, &str)> {
    sections(text)
        .into_iter()
        .filter(|(n, _)| !n.is_empty())
        .collect()
}

/// Lines of `body` without their `\n` / `\r\n` terminators.
pub fn lines(body: &str) -> impl Iterator<Item = &str> {
    body.lines().map(|l| l.trim_end_matches('\r'))
}

/// Whitespace-separated tokens with the byte offset where each starts, so a
/// caller can take "the rest of the line" verbatim from a token on.
pub fn tokens_with_pos(line: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in line.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take()
                && let Some(tok) = line.get(s..i)
            {
                out.push((s, tok));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start
        && let Some(tok) = line.get(s..)
    {
        out.push((s, tok));
    }
    out
}

/// `s` cut to at most `max` chars (always on a char boundary).
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s.get(..i).unwrap_or(s).to_string(),
        None => s.to_string(),
    }
}

/// A netmask (host order) whose ones are all on the left: a prefix.
pub(crate) fn is_prefix_mask(m: u32) -> bool {
    m.leading_ones() + m.trailing_zeros() == 32
}

/// Whether Linux printed `/proc/net/route`'s addresses big endian. It
/// prints each address and mask as the hex of its in-memory u32, so the
/// host's byte order shows in `masks`: big endian when every one reads as
/// a prefix as printed and not all do byte-swapped; little endian (nearly
/// every Linux host) otherwise, also when there is none to tell.
pub(crate) fn proc_net_big_endian(masks: &[u32]) -> bool {
    masks.iter().all(|m| is_prefix_mask(*m))
        && !masks.iter().all(|m| is_prefix_mask(m.swap_bytes()))
}

/// An IPv6 address as `/proc/net` prints it: 32 hex digits, network order.
pub(crate) fn ipv6_hex(s: &str) -> Option<std::net::Ipv6Addr> {
    (s.len() == 32)
        .then(|| u128::from_str_radix(s, 16).ok())
        .flatten()
        .map(std::net::Ipv6Addr::from)
}

/// A plain unsigned decimal (ASCII digits only, no sign, no spaces).
pub fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A signed decimal integer (`-12`, `42`).
pub fn parse_i64(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A finite, plain decimal number like `12`, `1.5`, `.5` (no exponent, no
/// `inf`/`nan`, which `str::parse::<f64>` would accept).
pub fn parse_f64(s: &str) -> Option<f64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let mut dots = 0;
    let mut nd = 0;
    for b in digits.bytes() {
        match b {
            b'.' => dots += 1,
            b'0'..=b'9' => nd += 1,
            _ => return None,
        }
    }
    if nd == 0 || dots > 1 || digits.len() > 64 {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// `used / (used + available) * 100`, rounded to 2 decimals; 0 when both are 0.
pub fn used_percent(used: u64, available: u64) -> f64 {
    let denom = used as f64 + available as f64;
    if denom <= 0.0 {
        return 0.0;
    }
    round2(used as f64 / denom * 100.0)
}

/// Rounds to 2 decimals.
pub fn round2(v: f64) -> f64 {
    if v.is_finite() {
        (v * 100.0).round() / 100.0
    } else {
        0.0
    }
}

/// KiB to bytes, saturating.
pub fn kib(v: u64) -> u64 {
    v.saturating_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_sections() {
        let text = "junk\n@@a\none\ntwo\n@@b\n@@c\nthree";
        assert_eq!(
            sections(text),
            vec![
                ("", "junk\n"),
                ("a", "one\ntwo\n"),
                ("b", ""),
                ("c", "three")
            ]
        );
        assert_eq!(section(text, "c"), Some("three"));
        assert_eq!(section(text, "zz"), None);
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    type Check = fn(&str);

    /// Every parser, run for its side effect: it must return, not panic.
    const PARSERS: &[(&str, Check)] = &[
        ("os", |s| drop(super::os::parse(s))),
        ("hostname", |s| drop(super::hostname::parse(s))),
        ("uptime", |s| drop(super::uptime::parse(s))),
        ("disks", |s| drop(super::disks::parse(s))),
        ("memory", |s| drop(super::memory::parse(s))),
        ("packages", |s| drop(super::packages::parse(s))),
        ("processes", |s| drop(super::processes::parse(s))),
        ("network", |s| drop(super::network::parse(s))),
        ("cpu", |s| drop(super::cpu::parse(s))),
        ("virtualization", |s| drop(super::virtualization::parse(s))),
        ("timezone", |s| drop(super::timezone::parse(s))),
        ("listening_sockets", |s| drop(super::listening::parse(s))),
        ("reboot_required", |s| drop(super::reboot::parse(s))),
        ("routing", |s| drop(super::routing::parse(s))),
    ];

    macro_rules! fixtures {
        ($($path:literal),* $(,)?) => {
            &[$(($path, include_str!(concat!("../../../tests/fixtures/", $path)))),*]
        };
    }

    /// (path under tests/fixtures, text). The file name starts with the step.
    const FIXTURES: &[(&str, &str)] = fixtures![
        "debian12/os.txt",
        "debian12/hostname.txt",
        "debian12/uptime.txt",
        "debian12/disks.txt",
        "debian12/memory.txt",
        "debian12/memory-free.txt",
        "debian12/packages.txt",
        "debian12/processes.txt",
        "debian12/network.txt",
        "debian12/network-ip-o.txt",
        "debian12/network-ifconfig.txt",
        "debian12/network-kernel.txt",
        "debian12/network-kernel-ip-json.txt",
        "busybox-on-debian12/os.txt",
        "busybox-on-debian12/hostname.txt",
        "busybox-on-debian12/uptime.txt",
        "busybox-on-debian12/disks.txt",
        "busybox-on-debian12/memory.txt",
        "busybox-on-debian12/memory-free.txt",
        "busybox-on-debian12/processes.txt",
        "busybox-on-debian12/network.txt",
        "busybox-on-debian12/network-ifconfig.txt",
        "alpine/os.documented.txt",
        "alpine/disks.documented.txt",
        "alpine/packages.documented.txt",
        "rhel9/os.documented.txt",
        "rhel9/disks.documented.txt",
        "rhel9/memory.documented.txt",
        "rhel9/packages.documented.txt",
        "rhel9/network.documented.txt",
        "arch/os.documented.txt",
        "arch/disks.documented.txt",
        "arch/packages.documented.txt",
        "freebsd14/os.documented.txt",
        "freebsd14/hostname.documented.txt",
        "freebsd14/uptime.documented.txt",
        "freebsd14/disks.documented.txt",
        "freebsd14/memory.documented.txt",
        "freebsd14/packages.documented.txt",
        "freebsd14/processes.documented.txt",
        "freebsd14/network.documented.txt",
        "freebsd14-p2p/network.documented.txt",
        "debian12-p2p/network.txt",
        "debian12-p2p/network-ip-o.txt",
        "debian12-p2p/network-ifconfig.txt",
        "busybox-on-debian12-p2p/network.txt",
        "busybox-on-debian12-p2p/network-ifconfig.txt",
        "macos14/os.documented.txt",
        "macos14/network.documented.txt",
        "centos6/os.documented.txt",
        "rhel6/os.documented.txt",
        "sles11/os.documented.txt",
        "opensuse13/os.documented.txt",
        "ubuntu14/os.documented.txt",
        "alpine-old/os.documented.txt",
        "gentoo/os.documented.txt",
        "slackware14/os.documented.txt",
        "openwrt19/os.documented.txt",
        "amazon2018/os.documented.txt",
        "debian12/cpu.txt",
        "debian12/cpu-lscpu.txt",
        "debian12/virtualization.txt",
        "debian12/timezone.txt",
        "debian12/listening_sockets.txt",
        "debian12/listening_sockets-netstat.txt",
        "debian12/listening_sockets-proc.txt",
        "debian12/reboot_required.txt",
        "debian12/routing.txt",
        "busybox-on-debian12/cpu.txt",
        "busybox-on-debian12/virtualization.txt",
        "busybox-on-debian12/timezone.txt",
        "busybox-on-debian12/listening_sockets.txt",
        "busybox-on-debian12/reboot_required.txt",
        "freebsd14/cpu.documented.txt",
        "freebsd14/listening_sockets.documented.txt",
        "freebsd14/reboot_required.documented.txt",
        "macos14/cpu.documented.txt",
        "macos14/listening_sockets.documented.txt",
        "xeon-2s/cpu.documented.txt",
        "raspbian/cpu.documented.txt",
        "centos7/listening_sockets.documented.txt",
        "debian11/processes.txt",
        "debian11/processes-user-column.txt",
        "debian13/processes.txt",
        "busybox-on-debian12/processes-plain.txt",
        "busybox-on-debian12/processes-plain-vsz.txt",
        "dpkg-states/packages.documented.txt",
    ];

    fn all(s: &str) {
        for (_, p) in PARSERS {
            p(s);
        }
    }

    /// Char boundary at or before `i`.
    fn floor_boundary(s: &str, i: usize) -> usize {
        let mut i = i.min(s.len());
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        i
    }

    /// Marker-heavy noise: section names the parsers know, plus fragments of
    /// the formats they read.
    fn noisy_line() -> impl Strategy<Value = String> {
        let markers = prop::sample::select(vec![
            "@@os-release",
            "@@uname",
            "@@hostname",
            "@@proc",
            "@@boottime",
            "@@now",
            "@@df",
            "@@mounts",
            "@@meminfo",
            "@@free",
            "@@sysctl",
            "@@swapinfo",
            "@@dpkg",
            "@@dpkg-log",
            "@@rpm",
            "@@apk",
            "@@pacman",
            "@@pkg",
            "@@ps-gnu",
            "@@ps-bsd",
            "@@ps-busybox",
            "@@memtotal",
            "@@lscpu",
            "@@cpuinfo",
            "@@sdv-container",
            "@@sdv-vm",
            "@@files",
            "@@container",
            "@@dmi",
            "@@cpu-flags",
            "@@lscpu-hypervisor",
            "@@localtime-link",
            "@@etc-timezone",
            "@@date",
            "@@timedatectl",
            "@@ss",
            "@@ss-old",
            "@@netstat",
            "@@netstat-bsd",
            "@@sockstat",
            "@@proc-net-tcp",
            "@@proc-net-udp6",
            "@@uname-r",
            "@@reboot-required",
            "@@proc-route",
            "@@proc-ipv6-route",
            "@@netstat",
            "@@resolv-conf",
            "@@resolved-upstream",
            "nameserver 127.0.0.53",
            "search example.org",
            "mask FFFFFF00",
            "@@sys-net",
            "@@if-inet6",
            "@@route",
            "@@fib-trie",
            "|-- 127.0.0.1",
            "/32 host LOCAL",
            "/8 host LOCAL",
            "eth0 0000000A 00000000 0001 0 0 0 00FFFFFF",
            "@@reboot-required-pkgs",
            "@@needs-restarting",
            "@@modules",
            "@@boot",
            "@@freebsd-version",
            "@@proc-version",
            "@@dpkg-kernel",
            "@@ps-plain",
            "@@passwd",
            "@@proc-stat",
            "@@proc-cmdline",
            "@@clk-tck",
            "@@uptime",
            "@@lsb_release",
            "@@sw_vers",
            "@@release /etc/redhat-release",
            "@@release /etc/lsb-release",
            "@@release /etc/debian_version",
            "@@release /etc/SuSE-release",
            "@@ip-json",
            "@@ip-link",
            "@@ip-addr",
            "@@ifconfig",
        ]);
        let frags = prop::collection::vec(
            prop::sample::select(vec![
                "1",
                "-1",
                "18446744073709551616",
                "99999999999999999999",
                "0",
                "%",
                "50%",
                "-",
                "\t",
                " ",
                ":",
                "=",
                "\"",
                "'",
                "\\",
                "{",
                "}",
                "[",
                "]",
                "sec",
                "=",
                ",",
                "kB",
                "MemTotal:",
                "Mem:",
                "total",
                "PID",
                "inet",
                "inet6",
                "addr:",
                "Mask:",
                "netmask",
                "0xffffff00",
                "255.255.0.0",
                "prefixlen",
                "mtu",
                "MTU:",
                "flags=8843<UP,RUNNING>",
                "on",
                "type",
                "(",
                ")",
                "1.5g",
                "9.8m",
                "é",
                "\u{1F600}",
                "1024-blocks",
                "512-blocks",
                "Filesystem",
                "ii ",
                "hi ",
                "%NAME%",
                "%VERSION%",
                "%INSTALLDATE%",
                "P:",
                "V:",
                "2024-01-31",
                "12:34:56",
                "install",
                "upgrade",
                "state",
                "link/ether",
                "aa:bb",
                "eth0@if3:",
                "<UP,LOWER_UP>",
                "\r",
                "nan",
                "inf",
                "1e309",
                ".",
                "..",
                "/",
                "-->",
                "LISTEN",
                "UNCONN",
                "users:((\"",
                ",pid=",
                "0A",
                "0100007F:0016",
                "CPU(s):",
                "Socket(s):",
                "processor\t:",
                "physical id",
                "siblings",
                "cpu cores",
                "exit=1",
                "* ",
                "zoneinfo/",
                "+0130",
                "container=",
                "sys_vendor=",
                "peer",
                "P-t-P:",
                "destination",
                "+",
                "UID",
                "USER",
                "VSZ",
                "STAT",
                "COMMAND",
                "release",
                "VERSION = ",
                "DISTRIB_ID=",
                "Distributor ID:",
                "(x)",
                "ri ",
                "rc ",
                "pi ",
            ]),
            0..12,
        )
        .prop_map(|v| v.concat());
        prop_oneof![markers.prop_map(String::from), frags]
    }

    proptest! {
        // 256 cases each by default; PROPTEST_CASES=N for a longer run.

        #[test]
        fn arbitrary_strings(s in any::<String>()) {
            all(&s);
        }

        #[test]
        fn arbitrary_bytes(b in prop::collection::vec(any::<u8>(), 0..2048)) {
            all(&String::from_utf8_lossy(&b));
        }

        #[test]
        fn noisy_lines(lines in prop::collection::vec(noisy_line(), 0..40)) {
            all(&lines.join("\n"));
        }

        #[test]
        fn truncated_fixtures(f in 0..FIXTURES.len(), cut in any::<prop::sample::Index>()) {
            let text = FIXTURES[f].1;
            let end = floor_boundary(text, cut.index(text.len() + 1));
            all(&text[..end]);
        }

        #[test]
        fn mangled_fixtures(
            f in 0..FIXTURES.len(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3), 1..8),
            junk in noisy_line(),
        ) {
            let mut lines: Vec<String> = FIXTURES[f].1.lines().map(String::from).collect();
            for (at, op) in edits {
                if lines.is_empty() {
                    break;
                }
                let i = at.index(lines.len());
                match op {
                    0 => { let l = lines[i].clone(); lines.insert(i, l); }
                    1 => { lines.remove(i); }
                    _ => lines.insert(i, junk.clone()),
                }
            }
            all(&lines.join("\r\n"));
        }
    }

    #[test]
    fn every_fixture_parses_with_its_step_parser() {
        for (path, text) in FIXTURES {
            let file = path.rsplit('/').next().unwrap_or(path);
            let step = file.split(['.', '-']).next().unwrap_or(file);
            let ok = match step {
                "os" => super::os::parse(text).is_ok(),
                "hostname" => super::hostname::parse(text).is_ok(),
                "uptime" => super::uptime::parse(text).is_ok(),
                "disks" => super::disks::parse(text).is_ok_and(|d| !d.is_empty()),
                "memory" => super::memory::parse(text).is_ok(),
                "packages" => super::packages::parse(text).is_ok_and(|p| p.count > 0),
                "processes" => super::processes::parse(text).is_ok_and(|p| !p.is_empty()),
                "network" => super::network::parse(text).is_ok_and(|n| !n.is_empty()),
                "cpu" => super::cpu::parse(text).is_ok_and(|c| c.logical_cpus > 0),
                "virtualization" => super::virtualization::parse(text).is_ok(),
                "timezone" => super::timezone::parse(text).is_ok_and(|t| !t.name.is_empty()),
                "listening_sockets" => super::listening::parse(text).is_ok_and(|l| !l.is_empty()),
                "reboot_required" => super::reboot::parse(text).is_ok(),
                "routing" => super::routing::parse(text).is_ok(),
                other => panic!("fixture {path}: unknown step {other}"),
            };
            assert!(ok, "fixture {path} did not parse");
        }
    }

    /// Runs every `SCRIPT` for real with the local POSIX shells (dash as
    /// /bin/sh, `bash --posix`, `busybox sh`, whichever exist) and checks it
    /// exits 0 with output its parser accepts, or 127 with nothing usable.
    #[test]
    fn scripts_run_and_parse_locally() {
        use std::io::Write;
        use std::process::{Command, Stdio};

        type Parse = fn(&str) -> bool;
        let steps: &[(&str, &str, Parse)] = &[
            ("os", super::os::SCRIPT, |s| super::os::parse(s).is_ok()),
            ("hostname", super::hostname::SCRIPT, |s| {
                super::hostname::parse(s).is_ok()
            }),
            ("uptime", super::uptime::SCRIPT, |s| {
                super::uptime::parse(s).is_ok()
            }),
            ("disks", super::disks::SCRIPT, |s| {
                super::disks::parse(s).is_ok()
            }),
            ("memory", super::memory::SCRIPT, |s| {
                super::memory::parse(s).is_ok()
            }),
            ("packages", super::packages::SCRIPT, |s| {
                super::packages::parse(s).is_ok()
            }),
            ("processes", super::processes::SCRIPT, |s| {
                super::processes::parse(s).is_ok()
            }),
            ("network", super::network::SCRIPT, |s| {
                super::network::parse(s).is_ok()
            }),
            ("cpu", super::cpu::SCRIPT, |s| super::cpu::parse(s).is_ok()),
            ("virtualization", super::virtualization::SCRIPT, |s| {
                super::virtualization::parse(s).is_ok()
            }),
            ("timezone", super::timezone::SCRIPT, |s| {
                super::timezone::parse(s).is_ok()
            }),
            ("listening_sockets", super::listening::SCRIPT, |s| {
                super::listening::parse(s).is_ok()
            }),
            ("reboot_required", super::reboot::SCRIPT, |s| {
                super::reboot::parse(s).is_ok()
            }),
            ("routing", super::routing::SCRIPT, |s| {
                super::routing::parse(s).is_ok()
            }),
        ];
        let shells: &[&[&str]] = &[
            &["/bin/sh", "-s"],
            &["bash", "--posix", "-s"],
            &["busybox", "sh", "-s"],
        ];
        for shell in shells {
            for (step, script, parse) in steps {
                let child = Command::new(shell[0])
                    .args(&shell[1..])
                    .env("LC_ALL", "C")
                    .env("LANG", "C")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn();
                let Ok(mut child) = child else {
                    continue; // this shell is not installed
                };
                if let Some(mut stdin) = child.stdin.take() {
                    stdin.write_all(script.as_bytes()).expect("write script");
                }
                let out = child.wait_with_output().expect("shell ran");
                let stdout = String::from_utf8_lossy(&out.stdout);
                match out.status.code() {
                    Some(0) => assert!(
                        parse(&stdout),
                        "{shell:?} {step}: exit 0 but output does not parse:\n{stdout}"
                    ),
                    Some(127) => assert!(
                        !parse(&stdout),
                        "{shell:?} {step}: exit 127 but output parses"
                    ),
                    other => panic!(
                        "{shell:?} {step}: exit {other:?}, stderr: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ),
                }
            }
        }
    }
}
