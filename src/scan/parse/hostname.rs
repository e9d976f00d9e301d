//! `hostname` step: `uname -n`, falling back to `hostname` and
//! `/proc/sys/kernel/hostname`.

use super::{ParseError, lines, named_sections, truncate_chars};

/// Prints `@@uname`, `@@hostname` or `@@proc` followed by the name, from the
/// first source that gave a non-empty answer; exits 127 when none did.
pub const SCRIPT: &str = r#"PATH="${PATH:-/usr/bin:/bin}:/usr/sbin:/sbin:/usr/local/sbin"; export PATH
h=$(uname -n 2>/dev/null) && [ -n "$h" ] && { echo @@uname; printf '%s\n' "$h"; exit 0; }
h=$(hostname 2>/dev/null </dev/null) && [ -n "$h" ] && { echo @@hostname; printf '%s\n' "$h"; exit 0; }
if [ -r /proc/sys/kernel/hostname ]; then
  h=$(head -n 1 /proc/sys/kernel/hostname 2>/dev/null </dev/null) && [ -n "$h" ] && { echo @@proc; printf '%s\n' "$h"; exit 0; }
fi
exit 127
"#;

/// The first non-empty line of the first answering source, trimmed (at most
/// 255 chars).
pub fn parse(stdout: &str) -> Result<String, ParseError> {
    named_sections(stdout)
        .into_iter()
        .filter(|(name, _)| matches!(*name, "uname" | "hostname" | "proc"))
        .find_map(|(_, body)| lines(body).map(str::trim).find(|l| !l.is_empty()))
        .map(|h| truncate_chars(h, 255))
        .ok_or_else(|| ParseError::new("no hostname output"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian12_real() {
        let h = parse(include_str!(
            "../../../tests/fixtures/debian12/hostname.txt"
        ))
        .expect("parses");
        assert_eq!(h, "vm");
    }

    #[test]
    fn busybox_on_debian12_real() {
        let h = parse(include_str!(
            "../../../tests/fixtures/busybox-on-debian12/hostname.txt"
        ))
        .expect("parses");
        assert_eq!(h, "vm");
    }

    #[test]
    fn freebsd14_documented() {
        let h = parse(include_str!(
            "../../../tests/fixtures/freebsd14/hostname.documented.txt"
        ))
        .expect("parses");
        assert_eq!(h, "fbsd14.example.org");
    }

    #[test]
    fn fallbacks_and_junk() {
        assert_eq!(
            parse("@@hostname\r\n  web-01 \r\n").expect("parses"),
            "web-01"
        );
        assert_eq!(parse("@@uname\n\n@@proc\nbox\n").expect("parses"), "box");
        assert!(parse("").is_err());
        assert!(parse("@@uname\n   \n").is_err());
        assert!(parse("stray\n").is_err());
    }
}
