//! `routing` step: the default routes (where traffic for other networks
//! goes) and the resolver configuration (where names are asked).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{ParseError, ipv6_hex, lines, named_sections, proc_net_big_endian};
use crate::model::facts::{DefaultRoute, Dns};

/// Linux, with no process: `@@proc-route` (the default routes of
/// `/proc/net/route`, `IFACE GATEWAY FLAGS METRIC`, and `mask M`, the
/// first other route's mask, which shows the kernel's byte order) and
/// `@@proc-ipv6-route` (those of `/proc/net/ipv6_route`), read with the
/// shell's `read`; elsewhere `@@netstat` (`netstat -rn`, BSD and macOS).
/// Then `@@resolv-conf` (the `nameserver`, `search` and `domain` lines of
/// `/etc/resolv.conf`) and, when it names systemd-resolved's stub
/// (127.0.0.53), `@@resolved-upstream` (the nameservers of
/// `/run/systemd/resolve/resolv.conf`). Exits 127 when it found none of
/// them.
pub const SCRIPT: &str = r#"PATH="${PATH:-/usr/bin:/bin}:/usr/sbin:/sbin:/usr/local/sbin"; export PATH
found=
if [ -r /proc/net/route ]; then
  found=1
  echo @@proc-route
  m=
  while read -r iface dest gw flags _ _ metric mask _; do
    if [ "$dest" = 00000000 ] && [ "$mask" = 00000000 ]; then
      printf '%s %s %s %s\n' "$iface" "$gw" "$flags" "$metric"
    elif [ -z "$m" ] && [ "$iface" != Iface ] && [ "$mask" != 00000000 ]; then
      m=$mask
    fi
  done </proc/net/route
  [ -n "$m" ] && echo "mask $m"
  if [ -r /proc/net/ipv6_route ]; then
    echo @@proc-ipv6-route
    while read -r dest plen _ _ gw metric _ _ flags iface; do
      if [ "$plen" = 00 ] && [ "$dest" = 00000000000000000000000000000000 ]; then
        printf '%s %s %s %s\n' "$iface" "$gw" "$flags" "$metric"
      fi
    done </proc/net/ipv6_route
  fi
elif command -v netstat >/dev/null 2>&1 && out=$(netstat -rn 2>/dev/null </dev/null); then
  found=1
  echo @@netstat
  printf '%s\n' "$out" | grep -i '^default' 2>/dev/null
fi
if [ -r /etc/resolv.conf ]; then
  found=1
  echo @@resolv-conf
  stub=
  while read -r key value rest; do
    case $key in
      nameserver) printf 'nameserver %s\n' "$value"; [ "$value" = 127.0.0.53 ] && stub=1 ;;
      search|domain) printf '%s %s %s\n' "$key" "$value" "$rest" ;;
    esac
  done </etc/resolv.conf
  if [ -n "$stub" ] && [ -r /run/systemd/resolve/resolv.conf ]; then
    echo @@resolved-upstream
    while read -r key value _; do
      [ "$key" = nameserver ] && printf 'nameserver %s\n' "$value"
    done </run/systemd/resolve/resolv.conf
  fi
fi
[ -n "$found" ] || exit 127
"#;

/// `/proc/net/route` flags: up, through a gateway, reject (unreachable).
const RTF_UP: u32 = 0x1;
const RTF_REJECT: u32 = 0x200;
/// At most this many of each list.
const MAX_ROUTES: usize = 64;
const MAX_SERVERS: usize = 64;
/// glibc reads at most 6 search domains (more since 2.26, but 256 chars).
const MAX_SEARCH: usize = 64;
const MAX_NAME: usize = 255;

/// What the routing step found: the default routes (`None` when the host
/// offered no routing table we read) and the resolver configuration
/// (`None` without `/etc/resolv.conf`).
pub fn parse(stdout: &str) -> Result<(Option<Vec<DefaultRoute>>, Option<Dns>), ParseError> {
    let secs = named_sections(stdout);
    let get = |n: &str| secs.iter().find(|(name, _)| *name == n).map(|(_, b)| *b);
    let routes = match (get("proc-route"), get("netstat")) {
        (Some(v4), _) => {
            let mut routes = proc_route(v4);
            routes.extend(proc_ipv6_route(get("proc-ipv6-route").unwrap_or("")));
            routes.truncate(MAX_ROUTES);
            Some(routes)
        }
        (None, Some(body)) => Some(netstat(body)),
        (None, None) => None,
    };
    let dns = get("resolv-conf").map(|body| resolv_conf(body, get("resolved-upstream")));
    if routes.is_none() && dns.is_none() {
        return Err(ParseError::new(
            "no routing table (/proc/net/route, netstat -rn) and no /etc/resolv.conf",
        ));
    }
    Ok((routes, dns))
}

fn hex_u32(s: &str) -> Option<u32> {
    (!s.is_empty() && s.len() <= 8)
        .then(|| u32::from_str_radix(s, 16).ok())
        .flatten()
}

/// `IFACE GATEWAY FLAGS METRIC` lines and `mask M`, a sample of the
/// table's masks that shows the host's byte order (`proc_net_big_endian`).
fn proc_route(body: &str) -> Vec<DefaultRoute> {
    let masks: Vec<u32> = lines(body)
        .filter_map(|l| l.strip_prefix("mask "))
        .filter_map(|m| hex_u32(m.trim()))
        .take(1)
        .collect();
    let big_endian = proc_net_big_endian(&masks);
    let mut out = Vec::new();
    for line in lines(body) {
        let toks: Vec<&str> = line.split_whitespace().collect();
        let [iface, gateway, flags, metric] = toks[..] else {
            continue;
        };
        if iface == "mask" || iface.len() > MAX_NAME {
            continue;
        }
        let (Some(gateway), Some(flags)) = (hex_u32(gateway), hex_u32(flags)) else {
            continue;
        };
        if flags & RTF_UP == 0 || flags & RTF_REJECT != 0 || iface == "*" {
            continue;
        }
        let ip = Ipv4Addr::from(if big_endian {
            gateway
        } else {
            gateway.swap_bytes()
        });
        out.push(DefaultRoute {
            family: "inet".into(),
            gateway: if gateway == 0 {
                String::new()
            } else {
                ip.to_string()
            },
            interface: iface.to_string(),
            metric: metric.parse().unwrap_or(0),
        });
    }
    out
}

/// `IFACE NEXTHOP FLAGS METRIC` of `/proc/net/ipv6_route` (hex; the next
/// hop as 32 hex digits in network order). Reject routes (the kernel's
/// `unreachable default` on `lo`) are not routes out.
fn proc_ipv6_route(body: &str) -> Vec<DefaultRoute> {
    let mut out = Vec::new();
    for line in lines(body) {
        let toks: Vec<&str> = line.split_whitespace().collect();
        let [iface, gateway, flags, metric] = toks[..] else {
            continue;
        };
        let flags = hex_u32(flags).unwrap_or(0);
        if flags & RTF_UP == 0 || flags & RTF_REJECT != 0 || iface.len() > MAX_NAME {
            continue;
        }
        let Some(gateway) = ipv6_hex(gateway) else {
            continue;
        };
        out.push(DefaultRoute {
            family: "inet6".into(),
            gateway: if gateway.is_unspecified() {
                String::new()
            } else {
                gateway.to_string()
            },
            interface: iface.to_string(),
            metric: hex_u32(metric).unwrap_or(0),
        });
    }
    out
}

/// `netstat -rn` default lines: `default GATEWAY FLAGS … IFACE` (FreeBSD:
/// `default 192.168.1.1 UGS em0`; macOS adds columns before the
/// interface; an IPv6 gateway carries `%scope`). The last column that is
/// an interface name is the interface; `link#N` gateways are on-link.
fn netstat(body: &str) -> Vec<DefaultRoute> {
    let mut out = Vec::new();
    for line in lines(body) {
        let toks: Vec<&str> = line.split_whitespace().collect();
        if toks.len() < 3 || !toks[0].eq_ignore_ascii_case("default") {
            continue;
        }
        let gateway = toks[1].split('%').next().unwrap_or("");
        let (family, gateway) = if let Ok(ip) = gateway.parse::<Ipv4Addr>() {
            ("inet", ip.to_string())
        } else if let Ok(ip) = gateway.parse::<Ipv6Addr>() {
            ("inet6", ip.to_string())
        } else if gateway.starts_with("link#") {
            ("inet", String::new())
        } else {
            continue;
        };
        let Some(iface) = toks[2..].iter().rev().find(|t| {
            t.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && t.len() <= MAX_NAME
                && !t.chars().all(|c| c.is_ascii_uppercase())
        }) else {
            continue;
        };
        if out.len() < MAX_ROUTES {
            out.push(DefaultRoute {
                family: family.into(),
                gateway,
                interface: iface.to_string(),
                metric: 0,
            });
        }
    }
    out
}

/// resolv.conf(5): every `nameserver` in order (the resolver asks the
/// first three); the search list from the last `search` or `domain` line,
/// as the resolver keeps the last one.
fn resolv_conf(body: &str, upstream: Option<&str>) -> Dns {
    let servers = |text: &str| -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for line in lines(text) {
            let mut toks = line.split_whitespace();
            if toks.next() != Some("nameserver") {
                continue;
            }
            let Some(value) = toks.next().filter(|v| v.len() <= MAX_NAME) else {
                continue;
            };
            if !out.iter().any(|s| s == value) && out.len() < MAX_SERVERS {
                out.push(value.to_string());
            }
        }
        out
    };
    let mut search = Vec::new();
    for line in lines(body) {
        let mut toks = line.split_whitespace();
        match toks.next() {
            Some("search") | Some("domain") => {
                search = toks
                    .filter(|t| t.len() <= MAX_NAME)
                    .take(MAX_SEARCH)
                    .map(str::to_string)
                    .collect();
            }
            _ => {}
        }
    }
    Dns {
        nameservers: servers(body),
        search,
        upstream_nameservers: upstream.map(servers).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(family: &str, gateway: &str, interface: &str, metric: u32) -> DefaultRoute {
        DefaultRoute {
            family: family.into(),
            gateway: gateway.into(),
            interface: interface.into(),
            metric,
        }
    }

    #[test]
    fn debian12_real() {
        let (routes, dns) =
            parse(include_str!("../../../tests/fixtures/debian12/routing.txt")).expect("parses");
        // The kernel's own `unreachable default` on lo is not a route out.
        assert_eq!(
            routes.expect("routes"),
            [
                route("inet", "192.0.2.1", "eth0", 0),
                route("inet6", "fd00::1", "eth0", 1024)
            ]
        );
        assert_eq!(
            dns,
            Some(Dns {
                nameservers: vec!["10.255.255.53".into()],
                ..Default::default()
            })
        );
    }

    #[test]
    fn byte_order_ipv6_rejects_and_on_link() {
        let text = "@@proc-route\n\
            eth0 0102000A 0003 100\n\
            wg0 00000000 0001 50\n\
            * 00000000 0201 0\n\
            mask FFFFFF00\n\
            @@proc-ipv6-route\n\
            eth0 fe800000000000000000000000000001 00000003 00000400\n\
            lo 00000000000000000000000000000000 00200200 ffffffff\n\
            @@resolv-conf\n\
            nameserver 127.0.0.53\n\
            nameserver 127.0.0.53\n\
            domain old.example\n\
            search corp.example lab.example\n\
            @@resolved-upstream\n\
            nameserver 192.0.2.53\n\
            nameserver 2001:db8::53\n";
        let (routes, dns) = parse(text).expect("parses");
        assert_eq!(
            routes.expect("routes"),
            [
                // Big endian (the mask says so): 0x0102000A is 1.2.0.10.
                route("inet", "1.2.0.10", "eth0", 100),
                route("inet", "", "wg0", 50),
                route("inet6", "fe80::1", "eth0", 1024),
            ]
        );
        assert_eq!(
            dns,
            Some(Dns {
                nameservers: vec!["127.0.0.53".into()],
                search: vec!["corp.example".into(), "lab.example".into()],
                upstream_nameservers: vec!["192.0.2.53".into(), "2001:db8::53".into()],
            })
        );
    }

    #[test]
    fn freebsd14_documented_netstat() {
        let text = "@@netstat\n\
            default            192.168.1.1        UGS         em0\n\
            default                           fe80::1%em0                   UG          em0\n\
            @@resolv-conf\n\
            nameserver 192.168.1.1\n";
        let (routes, _) = parse(text).expect("parses");
        assert_eq!(
            routes.expect("routes"),
            [
                route("inet", "192.168.1.1", "em0", 0),
                route("inet6", "fe80::1", "em0", 0)
            ]
        );
    }

    #[test]
    fn junk() {
        assert!(parse("").is_err());
        assert!(
            parse("@@proc-route\nmask zz\nx y z w\n")
                .is_ok_and(|(r, d)| r == Some(Vec::new()) && d.is_none())
        );
        assert!(parse("@@resolv-conf\nnameserver\nsearch\n").is_ok());
    }
}
