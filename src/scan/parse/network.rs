//! `network` step: interfaces with their state, MAC, MTU and addresses.

use serde_json::Value;

use super::{
    ParseError, ipv6_hex, is_prefix_mask, lines, named_sections, parse_u64, proc_net_big_endian,
    truncate_chars,
};
use crate::model::facts::{Address, NetworkInterface};

/// Prints `@@ip-json` (`ip -j addr show`, only if it is a JSON array), else
/// `@@ip-link` + `@@ip-addr` (`ip -o`, which busybox ip also has), else
/// `@@ifconfig` (`ifconfig -a`), else, on Linux with neither iproute2 nor
/// net-tools (minimal images, containers), what the kernel itself shows:
/// `@@sys-net` (one line per `/sys/class/net` entry: name, operstate,
/// address, mtu, flags, read with the shell's `read`, no process each),
/// `@@if-inet6`, `@@route` and `@@fib-trie` (`/proc/net/…`). Exits 127
/// when none worked.
pub const SCRIPT: &str = r#"PATH="${PATH:-/usr/bin:/bin}:/usr/sbin:/sbin:/usr/local/sbin"; export PATH
if command -v ip >/dev/null 2>&1; then
  if out=$(ip -j addr show 2>/dev/null </dev/null) && [ -n "$out" ]; then
    case $out in
      \[*) echo @@ip-json; printf '%s\n' "$out"; exit 0 ;;
    esac
  fi
  if l=$(ip -o link show 2>/dev/null </dev/null) && [ -n "$l" ]; then
    echo @@ip-link
    printf '%s\n' "$l" | head -n 2000
    echo @@ip-addr
    ip -o addr show 2>/dev/null </dev/null | head -n 5000
    exit 0
  fi
fi
if command -v ifconfig >/dev/null 2>&1 && out=$(ifconfig -a 2>/dev/null </dev/null) && [ -n "$out" ]; then
  echo @@ifconfig
  printf '%s\n' "$out" | head -n 20000
  exit 0
fi
if [ -r /proc/net/route ] && [ -d /sys/class/net ]; then
  echo @@sys-net
  for d in /sys/class/net/*; do
    [ -r "$d/mtu" ] || continue
    st=; ad=; mt=; fl=
    read -r st 2>/dev/null <"$d/operstate"
    read -r ad 2>/dev/null <"$d/address"
    read -r mt 2>/dev/null <"$d/mtu"
    read -r fl 2>/dev/null <"$d/flags"
    printf '%s %s %s %s %s\n' "${d##*/}" "${st:--}" "${ad:--}" "${mt:--}" "${fl:--}"
  done
  echo @@if-inet6
  cat /proc/net/if_inet6 2>/dev/null </dev/null
  echo @@route
  cat /proc/net/route 2>/dev/null </dev/null
  echo @@fib-trie
  cat /proc/net/fib_trie 2>/dev/null </dev/null
  exit 0
fi
exit 127
"#;

const MAX_IFACES: usize = 1024;
const MAX_ADDRS: usize = 256;
const MAX_NAME: usize = 64;

/// Interfaces in the order the tool listed them.
pub fn parse(stdout: &str) -> Result<Vec<NetworkInterface>, ParseError> {
    let secs = named_sections(stdout);
    let get = |n: &str| secs.iter().find(|(name, _)| *name == n).map(|(_, b)| *b);
    if let Some(body) = get("ip-json") {
        return ip_json(body);
    }
    if let Some(link) = get("ip-link") {
        return Ok(ip_oneline(link, get("ip-addr").unwrap_or("")));
    }
    if let Some(body) = get("ifconfig") {
        return Ok(ifconfig(body));
    }
    if let Some(links) = get("sys-net") {
        return Ok(kernel(
            links,
            get("if-inet6").unwrap_or(""),
            get("route").unwrap_or(""),
            get("fib-trie").unwrap_or(""),
        ));
    }
    Err(ParseError::new(
        "no interface list (looked for ip -j, ip -o, ifconfig -a, /sys/class/net)",
    ))
}

fn iface(name: &str) -> NetworkInterface {
    NetworkInterface {
        name: truncate_chars(name, MAX_NAME),
        state: "unknown".to_string(),
        ..Default::default()
    }
}

/// `fe80::1%em0` -> `fe80::1`.
fn strip_scope(addr: &str) -> &str {
    addr.split('%').next().unwrap_or(addr)
}

fn address(family: &str, addr: &str, prefix: u32) -> Option<Address> {
    let addr = strip_scope(addr);
    let max = match family {
        "inet" => 32,
        "inet6" => 128,
        _ => return None,
    };
    if addr.is_empty() || addr.len() > 64 {
        return None;
    }
    Some(Address {
        family: family.to_string(),
        address: addr.to_string(),
        prefix_length: prefix.min(max),
    })
}

fn push_addr(i: &mut NetworkInterface, a: Option<Address>) {
    if let Some(a) = a
        && i.addresses.len() < MAX_ADDRS
        && !i.addresses.contains(&a)
    {
        i.addresses.push(a);
    }
}

/// Lowercase colon-separated hex (`aa:bb:...`), else None.
fn mac(s: &str) -> Option<String> {
    let ok = s.len() <= 64
        && s.split(':').count() >= 2
        && s.split(':')
            .all(|p| !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then(|| s.to_ascii_lowercase())
}

fn mtu(s: &str) -> u32 {
    parse_u64(s)
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(0)
}

/// `255.255.255.0` or `0xffffff00` -> 24.
fn netmask_prefix(s: &str) -> Option<u32> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.is_empty() || hex.len() > 8 {
            return None;
        }
        return u32::from_str_radix(hex, 16).ok().map(u32::count_ones);
    }
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut bits = 0;
    for p in parts {
        let v = parse_u64(p).filter(|v| *v <= 255)?;
        bits += (v as u32).count_ones();
    }
    Some(bits)
}

/// `1.2.3.4/24` -> (`1.2.3.4`, Some(24)).
fn split_prefix(s: &str) -> (&str, Option<u32>) {
    match s.split_once('/') {
        Some((a, p)) => (a, parse_u64(p).and_then(|v| u32::try_from(v).ok())),
        None => (s, None),
    }
}

fn default_prefix(family: &str) -> u32 {
    if family == "inet6" { 128 } else { 32 }
}

fn json_str(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .map(|s| truncate_chars(s, MAX_NAME))
        .unwrap_or_default()
}

/// `ip -j addr show`.
fn ip_json(body: &str) -> Result<Vec<NetworkInterface>, ParseError> {
    let v: Value = serde_json::from_str(body.trim())
        .map_err(|_| ParseError::new("ip -j output is not valid JSON"))?;
    let arr = v
        .as_array()
        .ok_or_else(|| ParseError::new("ip -j output is not a JSON array"))?;
    let mut out = Vec::new();
    for link in arr.iter().take(MAX_IFACES) {
        let name = json_str(link, "ifname");
        if name.is_empty() {
            continue;
        }
        let mut i = iface(&name);
        let state = json_str(link, "operstate").to_ascii_lowercase();
        if !state.is_empty() {
            i.state = state;
        }
        i.mac = mac(&json_str(link, "address")).unwrap_or_default();
        i.mtu = link
            .get("mtu")
            .and_then(Value::as_u64)
            .and_then(|m| u32::try_from(m).ok())
            .unwrap_or(0);
        if let Some(addrs) = link.get("addr_info").and_then(Value::as_array) {
            for a in addrs {
                let family = json_str(a, "family");
                let prefix = a
                    .get("prefixlen")
                    .and_then(Value::as_u64)
                    .and_then(|p| u32::try_from(p).ok())
                    .unwrap_or_else(|| default_prefix(&family));
                push_addr(&mut i, address(&family, &json_str(a, "local"), prefix));
            }
        }
        out.push(i);
    }
    Ok(out)
}

/// `ip -o link show` + `ip -o addr show` (iproute2 and busybox).
fn ip_oneline(link: &str, addr: &str) -> Vec<NetworkInterface> {
    let mut out: Vec<NetworkInterface> = Vec::new();
    for line in lines(link) {
        let toks: Vec<&str> = line.split_whitespace().collect();
        // `4: eth0@if12: <FLAGS> mtu 1500 ... state UP ... link/ether aa:.. brd ..`
        let Some(raw) = toks
            .get(1)
            .filter(|_| toks.first().is_some_and(|t| t.ends_with(':')))
        else {
            continue;
        };
        let name = link_name(raw);
        if name.is_empty() || out.len() >= MAX_IFACES {
            continue;
        }
        let mut i = iface(name);
        let mut flags: Vec<&str> = Vec::new();
        let mut state: Option<String> = None;
        for (k, t) in toks.iter().enumerate() {
            let next = toks.get(k + 1).copied().unwrap_or("");
            if let Some(f) = t.strip_prefix('<').and_then(|f| f.strip_suffix('>')) {
                flags = f.split(',').collect();
            } else if *t == "mtu" {
                i.mtu = mtu(next);
            } else if *t == "state" && state.is_none() {
                state = Some(truncate_chars(&next.to_ascii_lowercase(), 32));
            } else if t.starts_with("link/") && i.mac.is_empty() {
                i.mac = mac(next).unwrap_or_default();
            }
        }
        i.state = state.unwrap_or_else(|| {
            // busybox prints no `state`: derive it from the flags.
            if flags.contains(&"UP") && flags.contains(&"LOWER_UP") {
                "up".to_string()
            } else {
                "down".to_string()
            }
        });
        if let Some(existing) = out.iter_mut().find(|x| x.name == i.name) {
            *existing = i;
        } else {
            out.push(i);
        }
    }
    for line in lines(addr) {
        let toks: Vec<&str> = line.split_whitespace().collect();
        // `4: eth0    inet 192.0.2.2/24 brd ... scope global eth0\ ...`
        let (Some(raw), Some(family), Some(cidr)) = (toks.get(1), toks.get(2), toks.get(3)) else {
            continue;
        };
        if !toks.first().is_some_and(|t| t.ends_with(':')) {
            continue;
        }
        let name = link_name(raw);
        let (a, mut prefix) = split_prefix(cidr);
        // `inet 10.0.0.1 peer 10.0.0.2/32 scope ...`: the local address has
        // no prefix of its own; the one after the peer is the link's.
        if prefix.is_none()
            && toks.get(4) == Some(&"peer")
            && let Some(peer) = toks.get(5)
        {
            prefix = split_prefix(peer).1;
        }
        let Some(addr) = address(family, a, prefix.unwrap_or_else(|| default_prefix(family)))
        else {
            continue;
        };
        let pos = match out.iter().position(|x| x.name == name) {
            Some(p) => p,
            None if !name.is_empty() && out.len() < MAX_IFACES => {
                out.push(iface(name));
                out.len() - 1
            }
            None => continue,
        };
        if let Some(i) = out.get_mut(pos) {
            push_addr(i, Some(addr));
        }
    }
    out
}

/// `eth0@if12:` -> `eth0`.
fn link_name(raw: &str) -> &str {
    let n = raw.strip_suffix(':').unwrap_or(raw);
    n.split('@').next().unwrap_or(n)
}

/// `IFF_LOOPBACK` in `/sys/class/net/*/flags`.
const IFF_LOOPBACK: u32 = 0x8;
/// `/proc/net/route` flags: the route is up, goes through a gateway, or
/// rejects (unreachable, prohibit).
const RTF_UP: u32 = 0x1;
const RTF_GATEWAY: u32 = 0x2;
const RTF_REJECT: u32 = 0x200;

/// Linux's own view, for hosts without iproute2 or net-tools.
///
/// Interfaces, states, MACs and MTUs come from `/sys/class/net`; IPv6
/// addresses with their prefixes and interfaces from `/proc/net/if_inet6`.
/// The kernel lists IPv4 addresses only as the local routes of
/// `/proc/net/fib_trie` (`/32 host LOCAL`), with no interface: each goes to
/// the interface of the longest connected route (`/proc/net/route`, no
/// gateway) that holds it, with that route's prefix; one under a loopback
/// prefix (`127.0.0.0/8 host LOCAL`) goes to the loopback interface. An
/// address with neither (a /32 or `noprefixroute` address, an address on an
/// interface that is down) cannot be placed and is left out. The files do
/// not name the interface of a local address, so a /32 on one interface
/// inside another's connected prefix (a load balancer's VIP on `lo` in
/// `eth0`'s subnet) looks exactly like a secondary address of the other,
/// and is shown there.
fn kernel(links: &str, inet6: &str, route: &str, trie: &str) -> Vec<NetworkInterface> {
    let mut out: Vec<NetworkInterface> = Vec::new();
    let mut loopback = None;
    for line in lines(links) {
        let toks: Vec<&str> = line.split_whitespace().collect();
        let [name, state, address, mtu_text, flags] = toks[..] else {
            continue;
        };
        if out.len() >= MAX_IFACES {
            break;
        }
        let mut i = iface(name);
        if state != "-" {
            i.state = state.to_ascii_lowercase();
        }
        i.mac = mac(address).unwrap_or_default();
        i.mtu = mtu(mtu_text);
        let flags = flags
            .strip_prefix("0x")
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .unwrap_or(0);
        if flags & IFF_LOOPBACK != 0 && loopback.is_none() {
            loopback = Some(out.len());
        }
        out.push(i);
    }
    let index = |out: &[NetworkInterface], name: &str| out.iter().position(|i| i.name == name);

    let routes = connected_routes(route);
    let (locals, loopback_prefixes) = fib_locals(trie);
    for a in locals {
        let held = |net: u32, prefix: u32| prefix_mask(prefix) & u32::from(a) == net;
        let mut best: Option<(&str, u32)> = None;
        for (name, net, prefix) in &routes {
            if held(*net, *prefix) && best.is_none_or(|(_, p)| *prefix > p) {
                best = Some((name, *prefix));
            }
        }
        let place = match best {
            Some((name, prefix)) => index(&out, name).map(|k| (k, prefix)),
            None => loopback_prefixes
                .iter()
                .find(|(net, prefix)| held(*net, *prefix))
                .and_then(|(_, prefix)| loopback.map(|k| (k, *prefix))),
        };
        if let Some((k, prefix)) = place {
            push_addr(&mut out[k], address("inet", &a.to_string(), prefix));
        }
    }

    // `fe80000000000000021e06fffe123456 02 40 20 80 eth0`: address, index,
    // prefix length, scope, flags (hex), name.
    for line in lines(inet6) {
        let toks: Vec<&str> = line.split_whitespace().collect();
        let [hex, _, prefix, _, _, name] = toks[..] else {
            continue;
        };
        let (Some(addr), Ok(prefix)) = (ipv6_hex(hex), u32::from_str_radix(prefix, 16)) else {
            continue;
        };
        if let Some(k) = index(&out, name) {
            push_addr(&mut out[k], address("inet6", &addr.to_string(), prefix));
        }
    }
    // As ip lists them: IPv4 first, then IPv6.
    out
}

/// The netmask of a prefix length, as a host-order u32.
fn prefix_mask(prefix: u32) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - p.min(32)),
    }
}

/// Connected routes of `/proc/net/route` (up, no gateway, not a reject
/// route): (interface, network, prefix length), in the host's byte order
/// (`proc_net_big_endian`).
fn connected_routes(route: &str) -> Vec<(String, u32, u32)> {
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    let mut rows = Vec::new();
    for line in lines(route).skip(1).take(100_000) {
        let toks: Vec<&str> = line.split_whitespace().collect();
        let [name, dest, gateway, flags, _, _, _, mask, ..] = toks[..] else {
            continue;
        };
        let (Some(dest), Some(gateway), Some(flags), Some(mask)) =
            (hex(dest), hex(gateway), hex(flags), hex(mask))
        else {
            continue;
        };
        rows.push((name, dest, gateway, flags, mask));
    }
    let masks: Vec<u32> = rows.iter().map(|r| r.4).collect();
    let big_endian = proc_net_big_endian(&masks);
    let order = |v: u32| if big_endian { v } else { v.swap_bytes() };
    rows.into_iter()
        .filter(|(name, _, gateway, flags, _)| {
            *name != "*"
                && *gateway == 0
                && flags & RTF_UP != 0
                && flags & (RTF_GATEWAY | RTF_REJECT) == 0
        })
        .filter_map(|(name, dest, _, _, mask)| {
            let mask = order(mask);
            is_prefix_mask(mask)
                .then(|| (name.to_string(), order(dest) & mask, mask.leading_ones()))
        })
        .collect()
}

/// From `/proc/net/fib_trie`: the addresses of this host (`/32 host
/// LOCAL` leaves) and the loopback prefixes (`/8 host LOCAL`), each once.
///
/// ```text
///      +-- 127.0.0.0/8 2 0 2
///         |-- 127.0.0.0
///            /8 host LOCAL
///         |-- 127.0.0.1
///            /32 host LOCAL
/// ```
fn fib_locals(trie: &str) -> (Vec<std::net::Ipv4Addr>, Vec<(u32, u32)>) {
    let mut locals = Vec::new();
    let mut prefixes = Vec::new();
    let mut leaf: Option<std::net::Ipv4Addr> = None;
    for line in lines(trie).take(1_000_000) {
        let line = line.trim();
        if let Some(key) = line.strip_prefix("|-- ") {
            leaf = key.trim().parse().ok();
            continue;
        }
        let Some(info) = line.strip_prefix('/') else {
            leaf = None;
            continue;
        };
        let toks: Vec<&str> = info.split_whitespace().collect();
        let (Some(a), [len, "host", "LOCAL", ..]) = (leaf, &toks[..]) else {
            continue;
        };
        match parse_u64(len).and_then(|l| u32::try_from(l).ok()) {
            Some(32) if !locals.contains(&a) && locals.len() < MAX_IFACES * MAX_ADDRS => {
                locals.push(a)
            }
            Some(p @ 1..32) => {
                let net = u32::from(a) & prefix_mask(p);
                if !prefixes.contains(&(net, p)) && prefixes.len() < MAX_ADDRS {
                    prefixes.push((net, p));
                }
            }
            _ => {}
        }
    }
    (locals, prefixes)
}

/// `ifconfig -a`: Linux net-tools (new and old/busybox) and BSD/macOS forms.
fn ifconfig(body: &str) -> Vec<NetworkInterface> {
    let mut out: Vec<NetworkInterface> = Vec::new();
    let mut cur: Option<Block> = None;
    for line in lines(body) {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            if let Some(b) = cur.take()
                && out.len() < MAX_IFACES
            {
                out.push(b.finish());
            }
            let mut toks = line.split_whitespace();
            let Some(first) = toks.next() else { continue };
            let name = first.strip_suffix(':').unwrap_or(first);
            if name.is_empty() {
                continue;
            }
            let mut b = Block::new(name);
            b.line(line);
            cur = Some(b);
        } else if let Some(b) = cur.as_mut() {
            b.line(line);
        }
    }
    if let Some(b) = cur.take()
        && out.len() < MAX_IFACES
    {
        out.push(b.finish());
    }
    out
}

struct Block {
    iface: NetworkInterface,
    up: bool,
    running: bool,
    status: Option<bool>,
}

impl Block {
    fn new(name: &str) -> Self {
        Block {
            iface: iface(name),
            up: false,
            running: false,
            status: None,
        }
    }

    fn flags<'a>(&mut self, flags: impl Iterator<Item = &'a str>) {
        for f in flags {
            match f {
                "UP" => self.up = true,
                "RUNNING" => self.running = true,
                _ => {}
            }
        }
    }

    fn line(&mut self, line: &str) {
        let toks: Vec<&str> = line.split_whitespace().collect();
        let t = |k: usize| toks.get(k).copied().unwrap_or("");
        // BSD / new net-tools flags: `flags=8843<UP,BROADCAST,RUNNING>`.
        for tok in &toks {
            if let Some(f) = tok.strip_prefix("flags=")
                && let Some((_, inner)) = f.split_once('<')
            {
                let inner = inner.split('>').next().unwrap_or("");
                self.flags(inner.split(','));
            }
        }
        // Old net-tools / busybox flags line: `UP BROADCAST RUNNING MULTICAST  MTU:1500  Metric:1`.
        if toks.iter().any(|x| x.starts_with("MTU:")) {
            self.flags(toks.iter().copied());
        }
        for (k, tok) in toks.iter().enumerate() {
            let next = t(k + 1);
            if let Some(m) = tok.strip_prefix("MTU:") {
                self.iface.mtu = mtu(m);
            } else if *tok == "mtu" {
                self.iface.mtu = mtu(next);
            } else if matches!(*tok, "HWaddr" | "ether" | "lladdr" | "address:")
                && let Some(m) = mac(next)
            {
                self.iface.mac = m;
            }
        }
        match t(0) {
            "status:" => {
                let rest = toks.get(1..).unwrap_or(&[]).join(" ");
                self.status = Some(rest == "active" || rest == "associated");
            }
            "inet" => self.inet(&toks),
            "inet6" => self.inet6(&toks),
            _ => {}
        }
    }

    /// `inet 192.0.2.1 netmask 0xffffff00 ...` (BSD), `inet 192.0.2.1/24`,
    /// `inet addr:192.0.2.1  Mask:255.255.255.0` (old net-tools, busybox),
    /// and point-to-point forms: `inet 192.0.2.65 --> 192.0.2.66/24` (FreeBSD
    /// CIDR output: the prefix after the peer belongs to the local address),
    /// `inet 10.0.0.1 --> 10.0.0.2 netmask 0xffffffff` (macOS, OpenBSD),
    /// `inet 10.0.0.1  netmask 255.255.255.255  destination 10.0.0.2` (net-tools)
    /// and `inet addr:10.0.0.1  P-t-P:10.0.0.2  Mask:...`. The peer is never
    /// an address of this interface.
    fn inet(&mut self, toks: &[&str]) {
        let t = |k: usize| toks.get(k).copied().unwrap_or("");
        let (raw, mut prefix) = match t(1).strip_prefix("addr:") {
            Some(a) => split_prefix(a),
            None => split_prefix(t(1)),
        };
        for (k, tok) in toks.iter().enumerate() {
            let mask = if let Some(m) = tok.strip_prefix("Mask:") {
                Some(m)
            } else if *tok == "netmask" {
                Some(t(k + 1))
            } else {
                None
            };
            if let Some(p) = mask.and_then(netmask_prefix) {
                prefix = Some(p);
            }
            if *tok == "-->"
                && prefix.is_none()
                && let (_, Some(p)) = split_prefix(t(k + 1))
            {
                prefix = Some(p);
            }
        }
        push_addr(&mut self.iface, address("inet", raw, prefix.unwrap_or(32)));
    }

    fn inet6(&mut self, toks: &[&str]) {
        let t = |k: usize| toks.get(k).copied().unwrap_or("");
        // `inet6 addr: fe80::1/64 Scope:Link`, `inet6 addr:fe80::1/64`, or
        // `inet6 fe80::1%em0 prefixlen 64 scopeid 0x1`.
        let raw = if t(1) == "addr:" {
            t(2)
        } else {
            t(1).strip_prefix("addr:").unwrap_or(t(1))
        };
        let (a, mut prefix) = split_prefix(raw);
        for (k, tok) in toks.iter().enumerate() {
            if *tok == "prefixlen"
                && let Some(p) = parse_u64(t(k + 1)).and_then(|v| u32::try_from(v).ok())
            {
                prefix = Some(p);
            }
        }
        push_addr(&mut self.iface, address("inet6", a, prefix.unwrap_or(128)));
    }

    fn finish(mut self) -> NetworkInterface {
        let up = self.up && self.running && self.status.unwrap_or(true);
        self.iface.state = if up { "up" } else { "down" }.to_string();
        self.iface
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(v: &'a [NetworkInterface], name: &str) -> &'a NetworkInterface {
        v.iter()
            .find(|i| i.name == name)
            .expect("interface present")
    }

    fn a(family: &str, address: &str, prefix: u32) -> Address {
        Address {
            family: family.into(),
            address: address.into(),
            prefix_length: prefix,
        }
    }

    #[test]
    fn debian12_real_json() {
        let v =
            parse(include_str!("../../../tests/fixtures/debian12/network.txt")).expect("parses");
        let lo = find(&v, "lo");
        assert_eq!(lo.state, "unknown");
        assert_eq!(lo.mtu, 65536);
        assert_eq!(lo.addresses[0], a("inet", "127.0.0.1", 8));
        let eth0 = find(&v, "eth0");
        assert_eq!(eth0.state, "up");
        assert_eq!(eth0.mac, "02:fc:00:00:00:01");
        assert_eq!(eth0.mtu, 1400);
        assert!(eth0.addresses.contains(&a("inet", "192.0.2.2", 24)));
        assert!(
            eth0.addresses
                .contains(&a("inet6", "fe80::fc:ff:fe00:1", 64))
        );
        assert_eq!(find(&v, "ifb0").state, "down");
    }

    /// Addresses in a canonical order: ip lists them in the order they were
    /// added, the kernel fallback in address order.
    fn sorted(mut v: Vec<NetworkInterface>) -> Vec<NetworkInterface> {
        for i in &mut v {
            i.addresses
                .sort_by(|a, b| (&a.family, &a.address).cmp(&(&b.family, &b.address)));
        }
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    #[test]
    fn debian12_real_kernel_fallback_matches_ip() {
        let kernel = parse(include_str!(
            "../../../tests/fixtures/debian12/network-kernel.txt"
        ))
        .expect("parses");
        let ip = parse(include_str!(
            "../../../tests/fixtures/debian12/network-kernel-ip-json.txt"
        ))
        .expect("parses");
        assert_eq!(kernel.len(), 5);
        assert_eq!(sorted(kernel), sorted(ip));
    }

    #[test]
    fn kernel_fallback_edges() {
        // Big-endian /proc/net/route; an address with no connected route
        // (a /32) is left out; a reject route and a gateway route hold
        // nothing; junk lines are skipped.
        let text = "@@sys-net\n\
            lo unknown 00:00:00:00:00:00 65536 0x9\n\
            eth0 up 52:54:00:12:34:56 1500 0x1003\n\
            br0 up - 1500 0x1003\n\
            bad line\n\
            @@if-inet6\n\
            zz 01 80 10 80 lo\n\
            fe800000000000005054fffffe123456 02 40 20 80 eth0\n\
            @@route\n\
            Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT\n\
            eth0 0A000000 00000000 0001 0 0 0 FFFFFF00 0 0 0\n\
            eth0 00000000 0A000001 0003 0 0 0 00000000 0 0 0\n\
            * C6120000 00000000 0201 0 0 0 FFFE0000 0 0 0\n\
            @@fib-trie\n\
            Local:\n\
              +-- 0.0.0.0/0 3 0 5\n\
                 |-- 10.0.0.7\n\
                    /32 host LOCAL\n\
                 |-- 127.0.0.0\n\
                    /8 host LOCAL\n\
                 |-- 127.0.0.1\n\
                    /32 host LOCAL\n\
                 |-- 198.18.0.9\n\
                    /32 host LOCAL\n\
                 |-- 203.0.113.5\n\
                    /32 host LOCAL\n\
                 |-- 10.0.0.255\n\
                    /32 link BROADCAST\n";
        let v = parse(text).expect("parses");
        assert_eq!(v.len(), 3);
        assert_eq!(find(&v, "lo").addresses, [a("inet", "127.0.0.1", 8)]);
        let eth0 = find(&v, "eth0");
        assert_eq!(
            eth0.addresses,
            [
                a("inet", "10.0.0.7", 24),
                a("inet6", "fe80::5054:ffff:fe12:3456", 64)
            ]
        );
        assert_eq!(eth0.mac, "52:54:00:12:34:56");
        assert_eq!(find(&v, "br0").mac, "");
        assert!(find(&v, "br0").addresses.is_empty());
    }

    #[test]
    fn debian12_real_ip_oneline() {
        let v = parse(include_str!(
            "../../../tests/fixtures/debian12/network-ip-o.txt"
        ))
        .expect("parses");
        let json =
            parse(include_str!("../../../tests/fixtures/debian12/network.txt")).expect("parses");
        assert_eq!(v, json);
    }

    #[test]
    fn busybox_on_debian12_real_ip() {
        let v = parse(include_str!(
            "../../../tests/fixtures/busybox-on-debian12/network.txt"
        ))
        .expect("parses");
        let eth0 = find(&v, "eth0");
        assert_eq!(eth0.state, "up");
        assert_eq!(eth0.mac, "02:fc:00:00:00:01");
        assert_eq!(eth0.addresses.len(), 3);
        assert!(eth0.addresses.contains(&a("inet6", "fd00::2", 64)));
        assert_eq!(find(&v, "lo").state, "up");
        assert_eq!(find(&v, "ifb1").state, "down");
    }

    #[test]
    fn busybox_on_debian12_real_ifconfig() {
        let v = parse(include_str!(
            "../../../tests/fixtures/busybox-on-debian12/network-ifconfig.txt"
        ))
        .expect("parses");
        let eth0 = find(&v, "eth0");
        assert_eq!(eth0.state, "up");
        assert_eq!(eth0.mac, "02:fc:00:00:00:01");
        assert_eq!(eth0.mtu, 1400);
        assert_eq!(eth0.addresses[0], a("inet", "192.0.2.2", 24));
        assert!(
            eth0.addresses
                .contains(&a("inet6", "fe80::fc:ff:fe00:1", 64))
        );
        let lo = find(&v, "lo");
        assert_eq!(lo.mac, "");
        assert_eq!(lo.addresses[0], a("inet", "127.0.0.1", 8));
        assert_eq!(find(&v, "ifb0").state, "down");
    }

    #[test]
    fn debian12_real_nettools_ifconfig() {
        let v = parse(include_str!(
            "../../../tests/fixtures/debian12/network-ifconfig.txt"
        ))
        .expect("parses");
        let eth0 = find(&v, "eth0");
        assert_eq!(eth0.state, "up");
        assert_eq!(eth0.mac, "02:fc:00:00:00:01");
        assert_eq!(eth0.addresses[0], a("inet", "192.0.2.2", 24));
        assert_eq!(find(&v, "lo").addresses[1], a("inet6", "::1", 128));
    }

    #[test]
    fn freebsd14_documented() {
        let v = parse(include_str!(
            "../../../tests/fixtures/freebsd14/network.documented.txt"
        ))
        .expect("parses");
        let em0 = find(&v, "em0");
        assert_eq!(em0.state, "up");
        assert_eq!(em0.mac, "08:00:27:aa:bb:cc");
        assert_eq!(em0.mtu, 1500);
        assert_eq!(em0.addresses[0], a("inet", "10.0.2.15", 24));
        assert_eq!(em0.addresses[1], a("inet6", "fe80::a00:27ff:feaa:bbcc", 64));
        let em1 = find(&v, "em1");
        assert_eq!(em1.state, "down");
        let lo0 = find(&v, "lo0");
        assert_eq!(lo0.addresses[0], a("inet6", "::1", 128));
        assert_eq!(lo0.addresses[2], a("inet", "127.0.0.1", 8));
    }

    #[test]
    fn rhel9_documented_veth() {
        let v = parse(include_str!(
            "../../../tests/fixtures/rhel9/network.documented.txt"
        ))
        .expect("parses");
        let veth = find(&v, "veth1a2b");
        assert_eq!(veth.state, "up");
        assert_eq!(veth.mtu, 1500);
        assert_eq!(veth.mac, "9a:1b:2c:3d:4e:5f");
        assert_eq!(find(&v, "eth0").addresses[0], a("inet", "10.10.0.5", 16));
    }

    #[test]
    fn container_ip_oneline() {
        let text = "@@ip-link\n\
            1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n\
            12: eth0@if13: <BROADCAST,MULTICAST,UP,LOWER_UP,M-DOWN> mtu 1450 qdisc noqueue state UP mode DEFAULT group default \\    link/ether 0A:58:0a:f4:01:07 brd ff:ff:ff:ff:ff:ff link-netnsid 0\n\
            @@ip-addr\n\
            12: eth0    inet 10.244.1.7/24 brd 10.244.1.255 scope global eth0\\       valid_lft forever preferred_lft forever\n\
            14: tun0    inet 10.8.0.1 peer 10.8.0.2/32 scope global tun0\n";
        let v = parse(text).expect("parses");
        let eth0 = find(&v, "eth0");
        assert_eq!(eth0.state, "up");
        assert_eq!(eth0.mtu, 1450);
        assert_eq!(eth0.mac, "0a:58:0a:f4:01:07");
        assert_eq!(eth0.addresses, [a("inet", "10.244.1.7", 24)]);
        // An address whose link line is missing still gets an interface.
        assert_eq!(find(&v, "tun0").addresses, [a("inet", "10.8.0.1", 32)]);
    }

    /// Point-to-point links: the prefix is the local address's, the peer is
    /// not an address of the interface. Real captures of a tun device with
    /// `ip addr add 192.0.2.65 peer 192.0.2.66/24` in every Linux form.
    #[test]
    fn point_to_point_real_linux() {
        let fixtures = [
            include_str!("../../../tests/fixtures/debian12-p2p/network.txt"),
            include_str!("../../../tests/fixtures/debian12-p2p/network-ip-o.txt"),
            include_str!("../../../tests/fixtures/debian12-p2p/network-ifconfig.txt"),
            include_str!("../../../tests/fixtures/busybox-on-debian12-p2p/network.txt"),
            include_str!("../../../tests/fixtures/busybox-on-debian12-p2p/network-ifconfig.txt"),
        ];
        for text in fixtures {
            let v = parse(text).expect("parses");
            let tun = find(&v, "tun0");
            assert_eq!(tun.addresses[0], a("inet", "192.0.2.65", 24), "{text}");
            assert!(
                tun.addresses.iter().all(|x| !x.address.ends_with("::2")
                    && !x.address.ends_with(".66")
                    && !x.address.ends_with(".2")),
                "{:?}",
                tun.addresses
            );
            assert!(
                tun.addresses.contains(&a("inet6", "2001:db8::1", 64)),
                "{text}"
            );
            if let Some(second) = tun.addresses.iter().find(|x| x.address == "198.51.100.1") {
                assert_eq!(second.prefix_length, 32);
            }
        }
    }

    #[test]
    fn point_to_point_bsd_documented() {
        let v = parse(include_str!(
            "../../../tests/fixtures/freebsd14-p2p/network.documented.txt"
        ))
        .expect("parses");
        assert_eq!(find(&v, "tun0").addresses[0], a("inet", "192.0.2.65", 24));
        assert_eq!(find(&v, "tun0").addresses.len(), 2);
        assert_eq!(find(&v, "gif0").addresses, [a("inet", "10.8.0.1", 32)]);
        let mac = parse(include_str!(
            "../../../tests/fixtures/macos14/network.documented.txt"
        ))
        .expect("parses");
        let utun = find(&mac, "utun3");
        assert_eq!(utun.addresses[0], a("inet", "10.8.0.6", 32));
        assert_eq!(find(&mac, "en0").addresses, [a("inet", "192.168.1.23", 24)]);
    }

    #[test]
    fn masks() {
        assert_eq!(netmask_prefix("255.255.255.0"), Some(24));
        assert_eq!(netmask_prefix("0xffffff00"), Some(24));
        assert_eq!(netmask_prefix("0xff000000"), Some(8));
        assert_eq!(netmask_prefix("255.255.256.0"), None);
        assert_eq!(netmask_prefix("0x"), None);
        assert_eq!(mac("AA:BB:cc:00:11:22"), Some("aa:bb:cc:00:11:22".into()));
        assert_eq!(mac("00-00-00-00"), None);
        assert_eq!(mac("0.0.0.0"), None);
    }

    #[test]
    fn junk() {
        assert!(parse("").is_err());
        assert!(parse("@@ip-json\n[{\"ifname\":").is_err());
        assert!(parse("@@ip-json\n{}\n").is_err());
        assert_eq!(
            parse("@@ip-json\n[1, {\"ifname\": 3}, {\"ifname\":\"x\",\"mtu\":-1}]\n")
                .expect("parses")
                .len(),
            1
        );
        assert_eq!(
            parse("@@ifconfig\n\r\n   orphan line\r\n")
                .expect("parses")
                .len(),
            0
        );
    }
}
