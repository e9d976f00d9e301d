//! Request validation: pure functions, each error names the field.

use std::net::IpAddr;

use crate::model::{ScanStatus, ScanType};
use crate::store::{HostCursor, HostOrder};

/// A field and what is wrong with it; becomes INVALID_ARGUMENT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        field,
        message: message.into(),
    }
}

/// Shows a rejected value safely: quoted, escaped, shortened.
fn shown(value: &str) -> String {
    let short: String = value.chars().take(64).collect();
    let more = if value.chars().count() > 64 {
        "…"
    } else {
        ""
    };
    format!("{short:?}{more}")
}

/// A DNS name (letters, digits, hyphens; labels of 1–63, 253 in all, an
/// optional final dot) or an IPv4/IPv6 literal.
pub fn hostname(value: &str) -> Result<String, Invalid> {
    const FIELD: &str = "hostname";
    if value.is_empty() {
        return Err(invalid(FIELD, "is required"));
    }
    if value.len() > 253 {
        return Err(invalid(
            FIELD,
            format!("is {} bytes long; the limit is 253", value.len()),
        ));
    }
    if value.parse::<IpAddr>().is_ok() {
        return Ok(value.to_string());
    }
    let name = value.strip_suffix('.').unwrap_or(value);
    let ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        // An all-numeric last label would be a malformed IPv4 address.
        && !name.rsplit('.').next().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(invalid(
            FIELD,
            format!("must be a DNS name or an IP address, got {}", shown(value)),
        ))
    }
}

/// ListScans' hostname filter: "" for any host, otherwise a hostname as
/// StartScan accepts it (and stores it: DNS names lowercased), so that a
/// filter can match exactly the scans it names.
pub fn hostname_filter(value: &str) -> Result<Option<String>, Invalid> {
    match value {
        "" => Ok(None),
        v => hostname(v).map(Some),
    }
}

/// 1–65535; 0 means `default`.
pub fn port(value: u32, default: u16) -> Result<u16, Invalid> {
    match value {
        0 => Ok(default),
        1..=65535 => Ok(u16::try_from(value).unwrap_or(default)),
        _ => Err(invalid(
            "port",
            format!("must be 1-65535 (or 0 for the default), got {value}"),
        )),
    }
}

/// A portable POSIX user name: 1–32 of `[A-Za-z0-9._-]`, not starting with
/// '-', optionally ending in '$'; "" means `default`.
pub fn username(value: &str, default: &str) -> Result<String, Invalid> {
    if value.is_empty() {
        return Ok(default.to_string());
    }
    let body = value.strip_suffix('$').unwrap_or(value);
    let ok = !body.is_empty()
        && value.len() <= 32
        && !body.starts_with('-')
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(value.to_string())
    } else {
        Err(invalid(
            "username",
            format!(
                "must be a POSIX user name (letters, digits, '.', '_', '-'; up to 32), got {}",
                shown(value)
            ),
        ))
    }
}

/// Printable ASCII, up to 128 bytes; "" means none.
pub fn request_id(value: &str) -> Result<Option<String>, Invalid> {
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > 128 || !value.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(invalid(
            "request_id",
            "must be 1-128 printable ASCII characters without spaces",
        ));
    }
    Ok(Some(value.to_string()))
}

/// Most jump hosts in a `proxy_jump`.
pub const MAX_JUMP_HOSTS: usize = 8;

/// OpenSSH ProxyJump syntax: `[user@]host[:port]`, comma-separated, at most
/// `MAX_JUMP_HOSTS`; each host a DNS name or an IP literal (IPv6 as
/// `[addr]` or `[addr]:port`); or `none`. "" means none given. Returns the
/// normalized list (lower-case names, no spaces).
pub fn proxy_jump(value: &str) -> Result<String, Invalid> {
    const FIELD: &str = "proxy_jump";
    if value.is_empty() {
        return Ok(String::new());
    }
    if value.len() > 2048 {
        return Err(invalid(
            FIELD,
            format!("is {} bytes long; the limit is 2048", value.len()),
        ));
    }
    if value.trim().eq_ignore_ascii_case("none") {
        return Ok("none".into());
    }
    let hops: Vec<&str> = value.split(',').collect();
    if hops.len() > MAX_JUMP_HOSTS {
        return Err(invalid(
            FIELD,
            format!(
                "has {} jump hosts; the limit is {MAX_JUMP_HOSTS}",
                hops.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(hops.len());
    for (i, raw) in hops.iter().enumerate() {
        let hop = raw.trim();
        let bad =
            |why: String| invalid(FIELD, format!("jump host {} ({}) {why}", i + 1, shown(hop)));
        if hop.is_empty() {
            return Err(bad("is empty".into()));
        }
        let (user, rest) = match hop.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, hop),
        };
        let user = match user {
            Some(u) => Some(
                username(u, "")
                    .ok()
                    .filter(|u| !u.is_empty())
                    .ok_or_else(|| bad("has a bad user name".into()))?,
            ),
            None => None,
        };
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (addr, after) = inner
                .split_once(']')
                .ok_or_else(|| bad("has '[' without ']'".into()))?;
            if addr.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad(
                    "has brackets around something that is not an IPv6 address".into(),
                ));
            }
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("has text after ']' that is not :port".into()))?,
                ),
            };
            (format!("[{addr}]"), port)
        } else {
            let (h, p) = match rest.split_once(':') {
                Some((h, p)) if !p.contains(':') => (h, Some(p)),
                Some(_) => {
                    return Err(bad(
                        "is an IPv6 address without brackets; write [address]:port".into(),
                    ));
                }
                None => (rest, None),
            };
            let h = hostname(h).map_err(|e| bad(e.message))?;
            (h, p)
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(bad(format!("has a bad port {p:?} (1-65535)"))),
            },
        };
        let mut normalized = String::new();
        if let Some(u) = user {
            normalized.push_str(&u);
            normalized.push('@');
        }
        normalized.push_str(&host);
        if let Some(p) = port {
            normalized.push_str(&format!(":{p}"));
        }
        out.push(normalized);
    }
    Ok(out.join(","))
}

pub fn scan_id(value: i64) -> Result<i64, Invalid> {
    if value > 0 {
        Ok(value)
    } else {
        Err(invalid(
            "scan_id",
            format!("must be a positive scan id, got {value}"),
        ))
    }
}

/// A ScanStatus filter: UNSPECIFIED means any.
pub fn status_filter(value: i32) -> Result<Option<ScanStatus>, Invalid> {
    crate::pb::ScanStatus::try_from(value)
        .map(crate::pb::ScanStatus::to_model)
        .map_err(|_| invalid("status", format!("unknown value {value}")))
}

/// A ScanType filter: UNSPECIFIED means any.
pub fn type_filter(value: i32) -> Result<Option<ScanType>, Invalid> {
    crate::pb::ScanType::try_from(value)
        .map(crate::pb::ScanType::to_model)
        .map_err(|_| invalid("scan_type", format!("unknown value {value}")))
}

pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 500;

pub fn page_size(value: i32) -> Result<i64, Invalid> {
    match value {
        0 => Ok(DEFAULT_PAGE_SIZE),
        1.. => Ok(i64::from(value).min(MAX_PAGE_SIZE)),
        _ => Err(invalid(
            "page_size",
            format!("must not be negative, got {value}"),
        )),
    }
}

const TOKEN_PREFIX: &str = "v1:";
/// Longer than any token `encode_page_token` makes ("v1:" + an i64, base64).
const MAX_PAGE_TOKEN: usize = 64;

/// Opaque page token for "scans older than `id`".
pub fn encode_page_token(before_id: i64) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{TOKEN_PREFIX}{before_id}"))
}

pub fn page_token(value: &str) -> Result<Option<i64>, Invalid> {
    use base64::Engine as _;
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > MAX_PAGE_TOKEN {
        return Err(invalid(
            "page_token",
            format!(
                "is {} bytes long; tokens this server issues have at most {MAX_PAGE_TOKEN}",
                value.len()
            ),
        ));
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix(TOKEN_PREFIX)?.parse::<i64>().ok())
        .filter(|id| *id > 0)
        .map(Some)
        .ok_or_else(|| invalid("page_token", "is not a token this server issued"))
}

/// A host-name prefix filter: host-name characters (letters, digits, '.',
/// '-', ':' for IPv6), up to 253; "" means none. Lowercased.
pub fn hostname_prefix(value: &str) -> Result<Option<String>, Invalid> {
    const FIELD: &str = "hostname_prefix";
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > 253 {
        return Err(invalid(
            FIELD,
            format!("is {} bytes long; the limit is 253", value.len()),
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
    {
        return Err(invalid(
            FIELD,
            format!(
                "may hold only letters, digits, '.', '-' and ':', got {}",
                shown(value)
            ),
        ));
    }
    Ok(Some(value.to_ascii_lowercase()))
}

/// An os-release `ID`: 1-64 of lowercase letters, digits, '.', '_', '-';
/// "" means none.
pub fn os_id(value: &str) -> Result<Option<String>, Invalid> {
    if value.is_empty() {
        return Ok(None);
    }
    let ok = value.len() <= 64
        && value.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(Some(value.to_string()))
    } else {
        Err(invalid(
            "os_id",
            format!(
                "must be an os-release ID (up to 64 of a-z, 0-9, '.', '_', '-'), got {}",
                shown(value)
            ),
        ))
    }
}

/// ListHosts tokens: `h1:<scan id>` (newest activity first) and
/// `h2:<port>:<hostname>` (by host name), base64url.
const HOST_TOKEN_PREFIX: &str = "h1:";
const HOST_NAME_TOKEN_PREFIX: &str = "h2:";

/// ListHosts' `order_by` (AIP-132): "" or "hostname" (also "hostname asc");
/// case and spaces as AIP-132 allows.
pub fn host_order(value: &str) -> Result<HostOrder, Invalid> {
    let words: Vec<String> = value
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => Ok(HostOrder::NewestActivity),
        ["hostname"] | ["hostname", "asc"] => Ok(HostOrder::Hostname),
        _ => Err(invalid(
            "order_by",
            format!(
                "must be \"\" (newest activity first) or \"hostname\", got {}",
                shown(value)
            ),
        )),
    }
}

/// Opaque ListHosts page token for `cursor`.
pub fn encode_host_page_token(cursor: &HostCursor) -> String {
    use base64::Engine as _;
    let text = match cursor {
        HostCursor::BeforeScan(id) => format!("{HOST_TOKEN_PREFIX}{id}"),
        HostCursor::AfterHost(name, port) => format!("{HOST_NAME_TOKEN_PREFIX}{port}:{name}"),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// A ListHosts page token of `order`; `None` for the first page.
pub fn host_page_token(value: &str, order: HostOrder) -> Result<Option<HostCursor>, Invalid> {
    use base64::Engine as _;
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > MAX_PAGE_TOKEN {
        return Err(invalid(
            "page_token",
            format!(
                "is {} bytes long; tokens this server issues have at most {MAX_PAGE_TOKEN}",
                value.len()
            ),
        ));
    }
    let cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            if let Some(id) = s.strip_prefix(HOST_TOKEN_PREFIX) {
                let id = id.parse::<i64>().ok().filter(|id| *id > 0)?;
                return Some(HostCursor::BeforeScan(id));
            }
            let (port, name) = s.strip_prefix(HOST_NAME_TOKEN_PREFIX)?.split_once(':')?;
            let port = port.parse::<u16>().ok()?;
            hostname(name).ok()?;
            Some(HostCursor::AfterHost(name.to_string(), port))
        })
        .ok_or_else(|| invalid("page_token", "is not a ListHosts token this server issued"))?;
    let token_order = match cursor {
        HostCursor::BeforeScan(_) => HostOrder::NewestActivity,
        HostCursor::AfterHost(..) => HostOrder::Hostname,
    };
    if token_order != order {
        return Err(invalid(
            "page_token",
            "was issued for another order_by: page with the order_by of the first page",
        ));
    }
    Ok(Some(cursor))
}

/// DiffScans' `base_scan_id`: a scan id, or 0 for "the previous one" (`None`).
pub fn base_scan_id(value: i64) -> Result<Option<i64>, Invalid> {
    match value {
        0 => Ok(None),
        1.. => Ok(Some(value)),
        _ => Err(invalid(
            "base_scan_id",
            format!("must be a scan id, or 0 for the previous completed scan; got {value}"),
        )),
    }
}

/// DiffScans' `used_percent_threshold`: percentage points, 0-100; unset
/// means `crate::diff::DEFAULT_USED_PERCENT_THRESHOLD`.
pub fn used_percent_threshold(value: Option<f64>) -> Result<f64, Invalid> {
    match value {
        None => Ok(crate::diff::DEFAULT_USED_PERCENT_THRESHOLD),
        Some(v) if (0.0..=100.0).contains(&v) => Ok(v),
        Some(v) => Err(invalid(
            "used_percent_threshold",
            format!("must be 0-100 percentage points, got {v}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_fields() {
        assert_eq!(base_scan_id(0), Ok(None));
        assert_eq!(base_scan_id(7), Ok(Some(7)));
        assert_eq!(
            base_scan_id(-1).expect_err("negative").field,
            "base_scan_id"
        );
        assert_eq!(used_percent_threshold(None), Ok(5.0));
        assert_eq!(used_percent_threshold(Some(0.0)), Ok(0.0));
        for bad in [-0.5, 100.5, f64::NAN, f64::INFINITY] {
            let e = used_percent_threshold(Some(bad)).expect_err("out of range");
            assert!(e.to_string().starts_with("used_percent_threshold: "), "{e}");
        }
    }

    #[test]
    fn hostnames() {
        for ok in [
            "db-1.example.org",
            "localhost",
            "127.0.0.1",
            "::1",
            "fe80::1",
            "a.b.c.",
            "XN--BCHER-KVA.example",
        ] {
            assert!(hostname(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            hostname("Web-1.Example.org").ok().as_deref(),
            Some("web-1.example.org")
        );
        for bad in [
            "",
            "a b",
            "host;rm -rf /",
            "$(id)",
            "-lead",
            "trail-.x",
            "a..b",
            "1.2.3.999",
            "`x`",
            "a_b",
            "x\n",
        ] {
            let e = hostname(bad).expect_err(bad);
            assert_eq!(e.field, "hostname");
        }
        let long = format!("{}.com", "a".repeat(250));
        assert!(
            hostname(&long)
                .expect_err("too long")
                .message
                .contains("253")
        );
        assert!(hostname(&"a".repeat(64)).is_err());
    }

    #[test]
    fn ports_users_ids() {
        assert_eq!(port(0, 2222), Ok(2222));
        assert_eq!(port(22, 2222), Ok(22));
        assert_eq!(port(65536, 22).expect_err("big").field, "port");
        assert_eq!(username("", "scan").as_deref(), Ok("scan"));
        assert_eq!(
            username("svc_scan-1.x$", "d").as_deref(),
            Ok("svc_scan-1.x$")
        );
        for bad in ["-x", "a b", "root;id", "$", &"u".repeat(33)] {
            assert_eq!(username(bad, "d").expect_err(bad).field, "username");
        }
        assert_eq!(request_id(""), Ok(None));
        assert!(request_id("a b").is_err());
        assert_eq!(scan_id(0).expect_err("zero").field, "scan_id");
    }

    #[test]
    fn host_filters() {
        assert_eq!(hostname_prefix(""), Ok(None));
        assert_eq!(
            hostname_prefix("Web-").ok().flatten().as_deref(),
            Some("web-")
        );
        assert_eq!(
            hostname_prefix("fe80::").ok().flatten().as_deref(),
            Some("fe80::")
        );
        for bad in ["a%", "a_b", "x\0", "a b", &"a".repeat(254)] {
            assert_eq!(
                hostname_prefix(bad).expect_err(bad).field,
                "hostname_prefix"
            );
        }
        assert_eq!(os_id("debian").ok().flatten().as_deref(), Some("debian"));
        assert_eq!(
            os_id("opensuse-leap").ok().flatten().as_deref(),
            Some("opensuse-leap")
        );
        for bad in ["Debian", "a'b", "x\0", &"a".repeat(65)] {
            assert_eq!(os_id(bad).expect_err(bad).field, "os_id");
        }
        let token = encode_host_page_token(&HostCursor::BeforeScan(9));
        assert_eq!(
            host_page_token(&token, HostOrder::NewestActivity),
            Ok(Some(HostCursor::BeforeScan(9)))
        );
        assert!(host_page_token(&encode_page_token(9), HostOrder::NewestActivity).is_err());
        let by_name = HostCursor::AfterHost("web-1.example.org".into(), 2222);
        let token = encode_host_page_token(&by_name);
        assert_eq!(
            host_page_token(&token, HostOrder::Hostname),
            Ok(Some(by_name))
        );
        let other = host_page_token(&token, HostOrder::NewestActivity).expect_err("other order");
        assert!(other.to_string().starts_with("page_token: "), "{other}");
        assert_eq!(host_order(""), Ok(HostOrder::NewestActivity));
        assert_eq!(host_order(" HostName  ASC "), Ok(HostOrder::Hostname));
        for bad in ["hostname desc", "os_id", "hostname,port"] {
            let e = host_order(bad).expect_err(bad);
            assert!(e.to_string().starts_with("order_by: "), "{e}");
        }
    }

    #[test]
    fn proxy_jumps() {
        assert_eq!(proxy_jump(""), Ok(String::new()));
        assert_eq!(proxy_jump("NONE"), Ok("none".into()));
        assert_eq!(
            proxy_jump("ops@Bastion.example.org:2222, 10.0.2.2,[fe80::1]:22,[::1]"),
            Ok("ops@bastion.example.org:2222,10.0.2.2,[fe80::1]:22,[::1]".into())
        );
        for bad in [
            "a,,b",
            "fe80::1",
            "host:0",
            "host:70000",
            "bad host",
            "$(id)",
            "a;b",
            "@host",
            "-x@host",
            "[::1",
            "[not-v6]:22",
            "[::1]x",
            "a,b,c,d,e,f,g,h,i",
        ] {
            let e = proxy_jump(bad).expect_err(bad);
            assert_eq!(e.field, "proxy_jump", "{bad}");
            assert!(e.to_string().starts_with("proxy_jump: "), "{e}");
        }
        assert!(
            proxy_jump("ok,bad:x")
                .expect_err("bad port")
                .message
                .starts_with("jump host 2")
        );
        assert!(proxy_jump(&"a,".repeat(1100)).is_err());
    }

    proptest::proptest! {
        #[test]
        fn proxy_jump_validation_never_panics(value in "(?s).{0,120}") {
            if let Ok(v) = proxy_jump(&value) {
                // What passes validation is what the SSH layer accepts.
                if !v.is_empty() {
                    proptest::prop_assert!(crate::ssh::jump::parse_proxy_jump(&v).is_ok(), "{v}");
                }
            }
        }
    }

    #[test]
    fn pages() {
        assert_eq!(page_size(0), Ok(50));
        assert_eq!(page_size(10_000), Ok(500));
        assert!(page_size(-1).is_err());
        let token = encode_page_token(42);
        assert_eq!(page_token(&token), Ok(Some(42)));
        assert_eq!(page_token(""), Ok(None));
        assert_eq!(page_token("garbage!").expect_err("bad").field, "page_token");
        assert!(page_token(&encode_page_token(i64::MAX)).is_ok());
        let long = page_token(&"A".repeat(1 << 20)).expect_err("long");
        assert!(long.message.contains("1048576 bytes"), "{}", long.message);
    }

    #[test]
    fn hostname_filters_follow_start_scan_rules() {
        assert_eq!(hostname_filter(""), Ok(None));
        assert_eq!(
            hostname_filter("Web-1.Example.org"),
            Ok(Some("web-1.example.org".into()))
        );
        for bad in ["a\0b", "\0", "a b", "%", "*.example.org"] {
            let e = hostname_filter(bad).expect_err("invalid");
            assert_eq!(e.field, "hostname");
            assert!(!e.message.contains('\0'), "the NUL is escaped: {e}");
        }
        let e = hostname_filter(&"a".repeat(1 << 20)).expect_err("long");
        assert!(e.to_string().starts_with("hostname: is 1048576 bytes long"));
    }
}
