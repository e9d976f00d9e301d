//! `listening_sockets` step: TCP sockets in LISTEN and bound UDP sockets,
//! with the owning process where the scanning user may see it.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{ParseError, lines, named_sections, parse_u64, truncate_chars};
use crate::model::facts::ListeningSocket;

/// Prints the first that works: `@@ss` (`ss -Htulnp`), `@@ss-old` (`ss
/// -tulnp`, iproute2 before 4.13 has no `-H`: there `*` is IPv4's any), `@@sockstat` (FreeBSD `sockstat -46l`), `@@netstat`
/// (Linux `netstat -tulnp`, busybox included; `-tuln` without `-p`),
/// `@@netstat-bsd` (macOS/OpenBSD `netstat -an`, TCP and UDP lines only),
/// else `@@proc-net-tcp`, `@@proc-net-tcp6`, `@@proc-net-udp`,
/// `@@proc-net-udp6` (the kernel's tables: no processes). Exits 127 when
/// none could be read.
pub const SCRIPT: &str = r#"PATH="${PATH:-/usr/bin:/bin}:/usr/sbin:/sbin:/usr/local/sbin"; export PATH
if command -v ss >/dev/null 2>&1; then
  if out=$(ss -Htulnp 2>/dev/null </dev/null) && [ -n "$out" ]; then
    echo @@ss
    printf '%s\n' "$out" | head -n 20000
    exit 0
  fi
  if out=$(ss -tulnp 2>/dev/null </dev/null) && [ -n "$out" ]; then
    echo @@ss-old
    printf '%s\n' "$out" | head -n 20000
    exit 0
  fi
fi
if [ "$(uname -s 2>/dev/null)" = FreeBSD ] && command -v sockstat >/dev/null 2>&1 &&
    out=$(sockstat -46l 2>/dev/null </dev/null) && [ -n "$out" ]; then
  echo @@sockstat
  printf '%s\n' "$out" | head -n 20000
  exit 0
fi
if [ "$(uname -s 2>/dev/null)" = Linux ]; then
  if [ -r /proc/net/tcp ] || [ -r /proc/net/tcp6 ]; then
    if command -v netstat >/dev/null 2>&1; then
      if out=$(netstat -tulnp 2>/dev/null </dev/null) || out=$(netstat -tuln 2>/dev/null </dev/null); then
        if [ -n "$out" ]; then
          echo @@netstat
          printf '%s\n' "$out" | head -n 20000
          exit 0
        fi
      fi
    fi
    for t in tcp tcp6 udp udp6; do
      if [ -r "/proc/net/$t" ]; then
        echo "@@proc-net-$t"
        head -n 20000 "/proc/net/$t" 2>/dev/null </dev/null
      fi
    done
    exit 0
  fi
elif command -v netstat >/dev/null 2>&1 && out=$(netstat -an 2>/dev/null </dev/null) && [ -n "$out" ]; then
  echo @@netstat-bsd
  printf '%s\n' "$out" | grep -E '^(tcp|udp)' | head -n 20000
  exit 0
fi
exit 127
"#;

const MAX_SOCKETS: usize = 4096;
const MAX_PROCESS: usize = 64;

/// Sorted by protocol, port, family, address; duplicates dropped.
pub fn parse(stdout: &str) -> Result<Vec<ListeningSocket>, ParseError> {
    let secs = named_sections(stdout);
    let mut out = Vec::new();
    let mut any = false;
    for (name, body) in &secs {
        let rows: Vec<ListeningSocket> = match *name {
            "ss" => lines(body).filter_map(|l| ss_row(l, "inet6")).collect(),
            "ss-old" => lines(body).filter_map(|l| ss_row(l, "inet")).collect(),
            "sockstat" => lines(body).filter_map(sockstat_row).collect(),
            "netstat" => lines(body).filter_map(netstat_row).collect(),
            "netstat-bsd" => lines(body).filter_map(netstat_bsd_row).collect(),
            "proc-net-tcp" => proc_net(body, "tcp", false),
            "proc-net-tcp6" => proc_net(body, "tcp", true),
            "proc-net-udp" => proc_net(body, "udp", false),
            "proc-net-udp6" => proc_net(body, "udp", true),
            _ => continue,
        };
        any = true;
        out.extend(rows.into_iter().take(MAX_SOCKETS));
        if out.len() >= 4 * MAX_SOCKETS {
            break;
        }
    }
    if !any {
        return Err(ParseError::new(
            "no socket table (looked for ss, sockstat, netstat, /proc/net)",
        ));
    }
    out.sort_by(|a, b| {
        (
            &a.protocol,
            a.port,
            &a.family,
            &a.local_address,
            a.pid.is_none(),
        )
            .cmp(&(
                &b.protocol,
                b.port,
                &b.family,
                &b.local_address,
                b.pid.is_none(),
            ))
    });
    out.dedup_by(|b, a| {
        a.protocol == b.protocol
            && a.port == b.port
            && a.family == b.family
            && a.local_address == b.local_address
    });
    out.truncate(MAX_SOCKETS);
    Ok(out)
}

fn socket(protocol: &str, family: &str, address: String, port: u32) -> ListeningSocket {
    ListeningSocket {
        protocol: protocol.to_string(),
        family: family.to_string(),
        local_address: address,
        port,
        pid: None,
        process: String::new(),
    }
}

fn port(s: &str) -> Option<u32> {
    parse_u64(s)
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p <= 65_535)
}

/// A normalised address and its family: `0.0.0.0`, `127.0.0.53%lo`,
/// `[::1]`, `[fe80::1]%eth0`, `::ffff:127.0.0.1`. `*` is `any` of the
/// given family.
fn addr(raw: &str, star_family: &str) -> Option<(String, &'static str)> {
    let raw = raw.split('%').next().unwrap_or(raw);
    let raw = raw.trim_start_matches('[').trim_end_matches(']');
    if raw == "*" {
        return Some(if star_family == "inet6" {
            ("::".to_string(), "inet6")
        } else {
            ("0.0.0.0".to_string(), "inet")
        });
    }
    if let Ok(v4) = raw.parse::<Ipv4Addr>() {
        return Some((v4.to_string(), "inet"));
    }
    raw.parse::<Ipv6Addr>()
        .ok()
        .map(|v6| (v6.to_string(), "inet6"))
}

/// `ADDR:PORT` split at the last colon (`[::]:22`, `*:80`, `:::22`).
fn host_port(s: &str) -> Option<(&str, u32)> {
    let (a, p) = s.rsplit_once(':')?;
    Some((a, port(p)?))
}

/// `tcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=812,fd=3))`.
/// Current ss prints `*` for a dual-stack IPv6 socket and `[::]` for a
/// v6-only one; old ss (EL7's 3.10) `*` for IPv4's any and `:::22` for IPv6.
fn ss_row(line: &str, star: &str) -> Option<ListeningSocket> {
    let toks: Vec<&str> = line.split_whitespace().collect();
    let protocol = match *toks.first()? {
        "tcp" if *toks.get(1)? == "LISTEN" => "tcp",
        "udp" => "udp",
        _ => return None,
    };
    let (a, p) = host_port(toks.get(4)?)?;
    let (address, family) = addr(a, star)?;
    let mut s = socket(protocol, family, address, p);
    if let Some(users) = toks.get(6..).map(|t| t.join(" "))
        && let Some(first) = users.split("((").nth(1)
    {
        let name = first.split('"').nth(1).unwrap_or("");
        s.process = truncate_chars(name, MAX_PROCESS);
        s.pid = first
            .split(',')
            .find_map(|f| f.strip_prefix("pid="))
            .and_then(|v| parse_u64(v.trim_end_matches(')')))
            .and_then(|v| i32::try_from(v).ok());
    }
    Some(s)
}

/// `PID/Program name` -> (pid, name); `-` -> nothing.
fn pid_program(tok: &str) -> (Option<i32>, String) {
    match tok.split_once('/') {
        Some((p, name)) => (
            parse_u64(p).and_then(|v| i32::try_from(v).ok()),
            truncate_chars(name.trim_end_matches(':'), MAX_PROCESS),
        ),
        None => (None, String::new()),
    }
}

/// net-tools and busybox: `tcp 0 0 0.0.0.0:22 0.0.0.0:* LISTEN 812/sshd`,
/// `udp6 0 0 :::5353 :::* 600/avahi-daemon`.
fn netstat_row(line: &str) -> Option<ListeningSocket> {
    let toks: Vec<&str> = line.split_whitespace().collect();
    let (protocol, v6, rest) = match *toks.first()? {
        "tcp" => ("tcp", false, 6),
        "tcp6" => ("tcp", true, 6),
        "udp" => ("udp", false, 5),
        "udp6" => ("udp", true, 5),
        _ => return None,
    };
    if protocol == "tcp" && *toks.get(5)? != "LISTEN" {
        return None;
    }
    let (a, p) = host_port(toks.get(3)?)?;
    let (address, family) = addr(a, if v6 { "inet6" } else { "inet" })?;
    let mut s = socket(protocol, family, address, p);
    if let Some(tok) = toks.get(rest) {
        (s.pid, s.process) = pid_program(tok);
    }
    Some(s)
}

/// FreeBSD `sockstat -46l`: `root sshd 812 4 tcp6 *:22 *:*`; `?` where the
/// owner is not visible.
fn sockstat_row(line: &str) -> Option<ListeningSocket> {
    let toks: Vec<&str> = line.split_whitespace().collect();
    let proto = *toks.get(4)?;
    let (protocol, star) = match proto {
        "tcp4" => ("tcp", "inet"),
        "tcp6" | "tcp46" => ("tcp", "inet6"),
        "udp4" => ("udp", "inet"),
        "udp6" | "udp46" => ("udp", "inet6"),
        _ => return None,
    };
    let (a, p) = host_port(toks.get(5)?)?;
    let (address, family) = addr(a, star)?;
    let mut s = socket(protocol, family, address, p);
    s.pid = parse_u64(toks.get(2)?).and_then(|v| i32::try_from(v).ok());
    if s.pid.is_some() {
        s.process = truncate_chars(toks.get(1)?, MAX_PROCESS);
    }
    Some(s)
}

/// macOS/OpenBSD `netstat -an`: `tcp4 0 0 *.22 *.* LISTEN`,
/// `tcp6 0 0 ::1.25 *.* LISTEN`, `udp4 0 0 *.5353 *.*`.
fn netstat_bsd_row(line: &str) -> Option<ListeningSocket> {
    let toks: Vec<&str> = line.split_whitespace().collect();
    let (protocol, star) = match *toks.first()? {
        "tcp4" | "tcp" => ("tcp", "inet"),
        "tcp6" | "tcp46" => ("tcp", "inet6"),
        "udp4" | "udp" => ("udp", "inet"),
        "udp6" | "udp46" => ("udp", "inet6"),
        _ => return None,
    };
    let foreign = *toks.get(4)?;
    if protocol == "tcp" && *toks.get(5)? != "LISTEN" {
        return None;
    }
    if protocol == "udp" && foreign != "*.*" {
        return None;
    }
    let (a, p) = toks.get(3)?.rsplit_once('.')?;
    let (address, family) = addr(a, star)?;
    Some(socket(protocol, family, address, port(p)?))
}

/// `/proc/net/{tcp,udp}[6]`: `sl local rem st ...`; LISTEN is `0A` for
/// TCP; UDP sockets are listed when unconnected (`07`) with no remote.
fn proc_net(body: &str, protocol: &str, v6: bool) -> Vec<ListeningSocket> {
    let mut out = Vec::new();
    for line in lines(body) {
        let toks: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state)) = (toks.get(1), toks.get(3)) else {
            continue;
        };
        let wanted = if protocol == "tcp" { "0A" } else { "07" };
        if *state != wanted {
            continue;
        }
        let Some((a, p)) = local.split_once(':') else {
            continue;
        };
        let Some(p) = u32::from_str_radix(p, 16)
            .ok()
            .filter(|p| *p <= 65_535 && *p > 0)
        else {
            continue;
        };
        let address = if v6 { hex_v6(a) } else { hex_v4(a) };
        if let Some(address) = address {
            out.push(socket(
                protocol,
                if v6 { "inet6" } else { "inet" },
                address,
                p,
            ));
        }
        if out.len() >= MAX_SOCKETS {
            break;
        }
    }
    out
}

/// The kernel prints each 32-bit word in host (little-endian) order.
fn hex_word(s: &str) -> Option<[u8; 4]> {
    if s.len() != 8 {
        return None;
    }
    u32::from_str_radix(s, 16).ok().map(u32::to_le_bytes)
}

fn hex_v4(s: &str) -> Option<String> {
    hex_word(s).map(|b| Ipv4Addr::from(b).to_string())
}

fn hex_v6(s: &str) -> Option<String> {
    if s.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(4).enumerate() {
        chunk.copy_from_slice(&hex_word(s.get(i * 8..i * 8 + 8)?)?);
    }
    Some(Ipv6Addr::from(bytes).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(
        v: &'a [ListeningSocket],
        proto: &str,
        family: &str,
        port: u32,
    ) -> &'a ListeningSocket {
        v.iter()
            .find(|s| s.protocol == proto && s.family == family && s.port == port)
            .unwrap_or_else(|| panic!("{proto} {family} {port} in {v:?}"))
    }

    #[test]
    fn ss_forms() {
        let text = "@@ss\n\
            udp   UNCONN 0      0          127.0.0.53%lo:53        0.0.0.0:*    users:((\"systemd-resolve\",pid=600,fd=13))\n\
            udp   UNCONN 0      0                      *:5353            *:*\n\
            tcp   LISTEN 0      128              0.0.0.0:22        0.0.0.0:*    users:((\"sshd\",pid=812,fd=3),(\"sshd\",pid=813,fd=3))\n\
            tcp   LISTEN 0      128                 [::]:22           [::]:*    users:((\"sshd\",pid=812,fd=4))\n\
            tcp   LISTEN 0      511                    *:80              *:*    users:((\"apache2\",pid=900,fd=4))\n\
            tcp   LISTEN 0      4096   [::ffff:127.0.0.1]:8080            *:*\n\
            tcp   ESTAB  0      0              10.0.0.1:22       10.0.0.2:5000\n\
            Netid State  Recv-Q Send-Q Local Address:Port Peer Address:PortProcess\n";
        let v = parse(text).expect("parses");
        assert_eq!(v.len(), 6, "{v:?}");
        let dns = find(&v, "udp", "inet", 53);
        assert_eq!(
            (dns.local_address.as_str(), dns.pid, dns.process.as_str()),
            ("127.0.0.53", Some(600), "systemd-resolve")
        );
        assert_eq!(find(&v, "udp", "inet6", 5353).local_address, "::");
        let ssh = find(&v, "tcp", "inet", 22);
        assert_eq!((ssh.pid, ssh.process.as_str()), (Some(812), "sshd"));
        assert_eq!(find(&v, "tcp", "inet6", 22).local_address, "::");
        assert_eq!(find(&v, "tcp", "inet6", 80).process, "apache2");
        assert_eq!(
            find(&v, "tcp", "inet6", 8080).local_address,
            "::ffff:127.0.0.1"
        );
    }

    /// EL7's ss 3.10: no `-H`, `*` is IPv4's any, IPv6 without brackets.
    #[test]
    fn old_ss_documented() {
        let v = parse(include_str!(
            "../../../tests/fixtures/centos7/listening_sockets.documented.txt"
        ))
        .expect("parses");
        let ssh4 = find(&v, "tcp", "inet", 22);
        assert_eq!(
            (ssh4.local_address.as_str(), ssh4.pid),
            ("0.0.0.0", Some(1088))
        );
        assert_eq!(find(&v, "tcp", "inet6", 22).local_address, "::");
        assert_eq!(find(&v, "udp", "inet", 323).process, "chronyd");
        assert_eq!(find(&v, "udp", "inet6", 323).local_address, "::1");
        assert_eq!(v.len(), 6);
    }

    #[test]
    fn debian12_real() {
        let v = parse(include_str!(
            "../../../tests/fixtures/debian12/listening_sockets.txt"
        ))
        .expect("parses");
        let pg = find(&v, "tcp", "inet", 5432);
        assert_eq!(
            (pg.local_address.as_str(), pg.process.as_str()),
            ("127.0.0.1", "postgres")
        );
        assert!(pg.pid.is_some());
    }

    #[test]
    fn netstat_real() {
        let v = parse(include_str!(
            "../../../tests/fixtures/debian12/listening_sockets-netstat.txt"
        ))
        .expect("parses");
        let pg = find(&v, "tcp", "inet", 5432);
        assert_eq!(pg.local_address, "127.0.0.1");
        assert_eq!((pg.process.as_str(), pg.pid.is_some()), ("postgres", true));
        assert_eq!(find(&v, "tcp", "inet6", 6379).local_address, "::1");
        // Debian's busybox netstat is built without -p: no owners.
        let v = parse(include_str!(
            "../../../tests/fixtures/busybox-on-debian12/listening_sockets.txt"
        ))
        .expect("parses");
        let pg = find(&v, "tcp", "inet", 5432);
        assert_eq!((pg.local_address.as_str(), pg.pid), ("127.0.0.1", None));
        assert_eq!(find(&v, "tcp", "inet6", 6379).local_address, "::1");
    }

    #[test]
    fn proc_net_real() {
        let v = parse(include_str!(
            "../../../tests/fixtures/debian12/listening_sockets-proc.txt"
        ))
        .expect("parses");
        let pg = find(&v, "tcp", "inet", 5432);
        assert_eq!((pg.local_address.as_str(), pg.pid), ("127.0.0.1", None));
        assert_eq!(find(&v, "tcp", "inet6", 6379).local_address, "::1");
    }

    #[test]
    fn bsd_documented() {
        let v = parse(include_str!(
            "../../../tests/fixtures/freebsd14/listening_sockets.documented.txt"
        ))
        .expect("parses");
        let ssh = find(&v, "tcp", "inet", 22);
        assert_eq!(
            (ssh.local_address.as_str(), ssh.pid, ssh.process.as_str()),
            ("0.0.0.0", Some(812), "sshd")
        );
        assert_eq!(find(&v, "tcp", "inet6", 22).local_address, "::");
        assert_eq!(find(&v, "tcp", "inet", 80).pid, None);
        assert_eq!(find(&v, "udp", "inet", 514).process, "syslogd");
        let m = parse(include_str!(
            "../../../tests/fixtures/macos14/listening_sockets.documented.txt"
        ))
        .expect("parses");
        assert_eq!(find(&m, "tcp", "inet", 22).local_address, "0.0.0.0");
        assert_eq!(find(&m, "tcp", "inet6", 5000).local_address, "::");
        assert_eq!(find(&m, "tcp", "inet", 631).local_address, "127.0.0.1");
        assert_eq!(find(&m, "udp", "inet", 5353).local_address, "0.0.0.0");
        assert!(m.iter().all(|s| s.port != 49152), "{m:?}");
    }

    #[test]
    fn hex_addresses() {
        assert_eq!(hex_v4("0100007F").as_deref(), Some("127.0.0.1"));
        assert_eq!(
            hex_v6("00000000000000000000000001000000").as_deref(),
            Some("::1")
        );
        assert_eq!(
            hex_v6("0000000000000000FFFF00000100007F").as_deref(),
            Some("::ffff:127.0.0.1")
        );
        assert_eq!(hex_v4("zz"), None);
    }

    #[test]
    fn junk() {
        assert!(parse("").is_err());
        assert!(parse("@@ss\n").expect("parses").is_empty());
        assert!(
            parse("@@ss\ntcp LISTEN 0 0 1.2.3.4:99999 x\n")
                .expect("parses")
                .is_empty()
        );
    }
}
