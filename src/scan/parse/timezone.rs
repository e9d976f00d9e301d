//! `timezone` step: the host's IANA time zone and its current UTC offset.

use super::{ParseError, lines, named_sections, parse_u64, truncate_chars};
use crate::model::facts::Timezone;

/// Prints the first of `@@localtime-link` (where `/etc/localtime` points),
/// `@@etc-timezone` (Debian, Alpine, Gentoo), `@@sysconfig-clock` (EL6
/// `ZONE=`), `@@var-db-zoneinfo` (FreeBSD's tzsetup) that exists, and
/// `@@timedatectl` only when none did (it asks systemd over D-Bus);
/// `@@no-localtime` when there is no `/etc/localtime` at all; always
/// `@@date` (`date '+%Z %z'`). Two commands on most hosts: a quick fact.
pub const SCRIPT: &str = r#"PATH="${PATH:-/usr/bin:/bin}:/usr/sbin:/sbin:/usr/local/sbin"; export PATH
named=
if [ -L /etc/localtime ]; then
  t=$(readlink /etc/localtime 2>/dev/null </dev/null) || t=$(ls -l /etc/localtime 2>/dev/null </dev/null | sed 's/.* -> //')
  if [ -n "$t" ]; then
    echo @@localtime-link
    printf '%s\n' "$t"
    named=1
  fi
elif [ ! -e /etc/localtime ]; then
  echo @@no-localtime
fi
if [ -z "$named" ] && [ -r /etc/timezone ]; then
  echo @@etc-timezone
  head -n 1 /etc/timezone 2>/dev/null </dev/null
  named=1
fi
if [ -z "$named" ] && [ -r /etc/sysconfig/clock ]; then
  echo @@sysconfig-clock
  grep -E '^[[:space:]]*(ZONE|TIMEZONE)=' /etc/sysconfig/clock 2>/dev/null </dev/null | head -n 2
  named=1
fi
if [ -z "$named" ] && [ -r /var/db/zoneinfo ]; then
  echo @@var-db-zoneinfo
  head -n 1 /var/db/zoneinfo 2>/dev/null </dev/null
  named=1
fi
if [ -z "$named" ] && command -v timedatectl >/dev/null 2>&1; then
  echo @@timedatectl
  timedatectl show -p Timezone --value 2>/dev/null </dev/null || timedatectl status 2>/dev/null </dev/null | grep 'Time zone'
fi
echo @@date
date '+%Z %z' 2>/dev/null </dev/null
exit 0
"#;

const MAX_NAME: usize = 128;

/// An IANA-looking name: `Area/Location`, `UTC`, `Etc/GMT+5`.
fn iana(s: &str) -> Option<String> {
    let s = s.trim().trim_matches('"').trim_matches('\'').trim();
    let ok = !s.is_empty()
        && s.len() <= MAX_NAME
        && !s.starts_with('/')
        && !s.contains("..")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'+'));
    ok.then(|| truncate_chars(s, MAX_NAME))
}

/// `/usr/share/zoneinfo/Europe/Berlin`, `../usr/share/zoneinfo/posix/Etc/UTC`,
/// `/var/db/timezone/zoneinfo/America/New_York` (macOS) -> the zone name.
fn from_link(target: &str) -> Option<String> {
    let (_, rest) = target.trim().rsplit_once("zoneinfo/")?;
    let rest = rest
        .strip_prefix("posix/")
        .or_else(|| rest.strip_prefix("right/"))
        .unwrap_or(rest);
    iana(rest)
}

/// `+0130` / `-0500` -> seconds east of UTC.
fn offset(s: &str) -> Option<i32> {
    let (sign, digits) = match s.as_bytes().first()? {
        b'+' => (1, s.get(1..)?),
        b'-' => (-1, s.get(1..)?),
        _ => return None,
    };
    if digits.len() != 4 {
        return None;
    }
    let hours = parse_u64(digits.get(..2)?)?;
    let minutes = parse_u64(digits.get(2..)?)?;
    if hours > 26 || minutes > 59 {
        return None;
    }
    i32::try_from(hours * 3600 + minutes * 60)
        .ok()
        .map(|v| sign * v)
}

/// Err only when nothing at all was printed.
pub fn parse(stdout: &str) -> Result<Timezone, ParseError> {
    let secs = named_sections(stdout);
    if secs.is_empty() {
        return Err(ParseError::new("no time zone evidence printed"));
    }
    let get = |n: &str| secs.iter().find(|(name, _)| *name == n).map(|(_, b)| *b);
    let first = |n: &str| get(n).and_then(|b| lines(b).map(str::trim).find(|l| !l.is_empty()));
    let mut tz = Timezone::default();
    if let Some((abbr, off)) = first("date").and_then(|l| l.rsplit_once(' ')) {
        tz.abbreviation = truncate_chars(abbr.trim(), 16);
        tz.utc_offset_seconds = offset(off.trim()).unwrap_or(0);
    }
    let sysconfig = || {
        get("sysconfig-clock").and_then(|b| {
            lines(b).find_map(|l| {
                let (k, v) = l.trim().split_once('=')?;
                matches!(k.trim(), "ZONE" | "TIMEZONE")
                    .then(|| iana(v))
                    .flatten()
            })
        })
    };
    // The link is what the C library reads; the other files can be stale.
    let found = first("localtime-link")
        .and_then(from_link)
        .map(|n| (n, "localtime-link"))
        .or_else(|| {
            first("etc-timezone")
                .and_then(iana)
                .map(|n| (n, "etc-timezone"))
        })
        .or_else(|| {
            first("timedatectl")
                .map(|l| l.rsplit_once(':').map_or(l, |(_, v)| v))
                .and_then(|v| iana(v.split_whitespace().next().unwrap_or("")))
                .filter(|n| n != "n/a")
                .map(|n| (n, "timedatectl"))
        })
        .or_else(|| sysconfig().map(|n| (n, "sysconfig-clock")))
        .or_else(|| {
            first("var-db-zoneinfo")
                .and_then(iana)
                .map(|n| (n, "var-db-zoneinfo"))
        })
        .or_else(|| get("no-localtime").map(|_| ("UTC".to_string(), "no-localtime")));
    if let Some((name, source)) = found {
        tz.name = name;
        tz.source = source.to_string();
    }
    Ok(tz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian12_real() {
        let tz = parse(include_str!(
            "../../../tests/fixtures/debian12/timezone.txt"
        ))
        .expect("parses");
        assert_eq!(tz.name, "Etc/UTC");
        assert_eq!(tz.source, "localtime-link");
        assert_eq!(
            (tz.abbreviation.as_str(), tz.utc_offset_seconds),
            ("UTC", 0)
        );
    }

    #[test]
    fn busybox_on_debian12_real() {
        let tz = parse(include_str!(
            "../../../tests/fixtures/busybox-on-debian12/timezone.txt"
        ))
        .expect("parses");
        assert_eq!(tz.name, "Etc/UTC");
    }

    #[test]
    fn sources_in_order() {
        let cases = [
            (
                "@@localtime-link\n../usr/share/zoneinfo/posix/Europe/Berlin\n@@etc-timezone\nEtc/UTC\n@@date\nCEST +0200\n",
                ("Europe/Berlin", "localtime-link", 7200),
            ),
            (
                "@@localtime-link\n/var/db/timezone/zoneinfo/America/New_York\n@@date\nEST -0500\n",
                ("America/New_York", "localtime-link", -18000),
            ),
            (
                "@@etc-timezone\nAmerica/Argentina/Buenos_Aires\n@@date\n-03 -0300\n",
                ("America/Argentina/Buenos_Aires", "etc-timezone", -10800),
            ),
            (
                "@@sysconfig-clock\nZONE=\"Asia/Kolkata\"\n@@date\nIST +0530\n",
                ("Asia/Kolkata", "sysconfig-clock", 19800),
            ),
            (
                "@@var-db-zoneinfo\nEurope/London\n@@date\nGMT +0000\n",
                ("Europe/London", "var-db-zoneinfo", 0),
            ),
            (
                "@@timedatectl\nPacific/Auckland\n@@date\nNZDT +1300\n",
                ("Pacific/Auckland", "timedatectl", 46800),
            ),
            (
                "@@timedatectl\n       Time zone: Europe/Paris (CET, +0100)\n@@date\nCET +0100\n",
                ("Europe/Paris", "timedatectl", 3600),
            ),
            (
                "@@no-localtime\n@@date\nUTC +0000\n",
                ("UTC", "no-localtime", 0),
            ),
            ("@@date\nCET +0100\n", ("", "", 3600)),
            (
                "@@localtime-link\n/etc/localtime.dpkg-new\n@@date\nUTC +0000\n",
                ("", "", 0),
            ),
        ];
        for (text, (name, source, off)) in cases {
            let tz = parse(text).expect("parses");
            assert_eq!(
                (tz.name.as_str(), tz.source.as_str(), tz.utc_offset_seconds),
                (name, source, off),
                "{text}"
            );
        }
    }

    #[test]
    fn junk() {
        assert!(parse("").is_err());
        let tz = parse("@@etc-timezone\n../../etc/passwd\n@@date\nX +9999\n").expect("parses");
        assert_eq!((tz.name.as_str(), tz.utc_offset_seconds), ("", 0));
    }
}
