//! `uptime` step: `/proc/uptime`, or BSD/macOS `kern.boottime` and `date +%s`.

use super::{ParseError, lines, named_sections, parse_u64, section};

/// Prints `@@proc` with `/proc/uptime`, else `@@boottime` with
/// `sysctl -n kern.boottime` and `@@now` with `date +%s`; exits 127 when
/// neither works.
pub const SCRIPT: &str = r#"PATH="${PATH:-/usr/bin:/bin}:/usr/sbin:/sbin:/usr/local/sbin"; export PATH
if [ -r /proc/uptime ] && out=$(head -n 1 /proc/uptime 2>/dev/null </dev/null) && [ -n "$out" ]; then
  echo @@proc
  printf '%s\n' "$out"
  exit 0
fi
b=$(sysctl -n kern.boottime 2>/dev/null </dev/null) && [ -n "$b" ] && n=$(date +%s 2>/dev/null </dev/null) && [ -n "$n" ] && {
  echo @@boottime
  printf '%s\n' "$b"
  echo @@now
  printf '%s\n' "$n"
  exit 0
}
exit 127
"#;

/// Uptime in whole seconds.
pub fn parse(stdout: &str) -> Result<u64, ParseError> {
    for (name, body) in named_sections(stdout) {
        if name == "proc"
            && let Some(secs) = lines(body)
                .filter_map(|l| l.split_whitespace().next())
                .find_map(proc_seconds)
        {
            return Ok(secs);
        }
    }
    let boot = section(stdout, "boottime").and_then(boottime);
    let now = section(stdout, "now").and_then(|b| {
        lines(b)
            .filter_map(|l| l.split_whitespace().next())
            .find_map(parse_u64)
    });
    match (boot, now) {
        (Some(0), Some(_)) => Err(ParseError::new("kern.boottime is zero")),
        (Some(boot), Some(now)) => Ok(now.saturating_sub(boot)),
        (None, _) if section(stdout, "boottime").is_some() => {
            Err(ParseError::new("unrecognised kern.boottime output"))
        }
        (Some(_), None) => Err(ParseError::new("no current time (date +%s) output")),
        _ => Err(ParseError::new(
            "no uptime output (no /proc/uptime, no kern.boottime)",
        )),
    }
}

/// `12345.67` -> 12345 (floor), without going through f64.
fn proc_seconds(tok: &str) -> Option<u64> {
    let (int, frac) = tok.split_once('.').unwrap_or((tok, ""));
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    parse_u64(int)
}

/// `{ sec = 1700000000, usec = 123 } Tue Nov 14 ...` (FreeBSD, macOS) or a
/// plain integer (OpenBSD, NetBSD).
fn boottime(body: &str) -> Option<u64> {
    for line in lines(body) {
        let toks: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || matches!(c, ',' | '{' | '}'))
            .filter(|t| !t.is_empty())
            .collect();
        for (i, t) in toks.iter().enumerate() {
            if *t == "sec"
                && toks.get(i + 1) == Some(&"=")
                && let Some(v) = toks.get(i + 2).and_then(|v| parse_u64(v))
            {
                return Some(v);
            }
            if let Some(v) = t.strip_prefix("sec=").and_then(parse_u64) {
                return Some(v);
            }
        }
        if let Some(v) = toks.first().and_then(|t| parse_u64(t)) {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian12_real() {
        let up =
            parse(include_str!("../../../tests/fixtures/debian12/uptime.txt")).expect("parses");
        assert_eq!(up, 1197);
    }

    #[test]
    fn freebsd14_documented() {
        let up = parse(include_str!(
            "../../../tests/fixtures/freebsd14/uptime.documented.txt"
        ))
        .expect("parses");
        assert_eq!(up, 1_700_086_400 - 1_700_000_000);
    }

    #[test]
    fn forms() {
        assert_eq!(
            parse("@@proc\r\n350735.47 234388.90\r\n").expect("parses"),
            350_735
        );
        assert_eq!(parse("@@proc\n12 3\n").expect("parses"), 12);
        assert_eq!(
            parse("@@boottime\n1700000000\n@@now\n1700000100\n").expect("parses"),
            100
        );
        assert_eq!(
            parse("@@boottime\n{ sec = 1700000000, usec = 999999 } Tue Nov 14 22:13:20 2023\n@@now\n1700000050\n")
                .expect("parses"),
            50
        );
        // Clock behind boot time: saturate, do not wrap.
        assert_eq!(
            parse("@@boottime\n1700000000\n@@now\n1600000000\n").expect("parses"),
            0
        );
        assert!(parse("@@boottime\n0\n@@now\n5\n").is_err());
        assert!(parse("@@boottime\nfoo\n@@now\n5\n").is_err());
        assert!(parse("@@proc\nnan\n").is_err());
        assert!(parse("@@proc\n99999999999999999999999.5\n").is_err());
        assert!(parse("").is_err());
    }
}
