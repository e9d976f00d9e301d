//! `os` step: os-release (when the host has one) plus `uname -s/-r/-m`.

use super::{ParseError, lines, named_sections, truncate_chars};
use crate::model::facts::OsInfo;

/// Prints `@@os-release` (the first readable of `/etc/os-release`,
/// `/usr/lib/os-release`) and `@@uname` (three lines: `-s`, `-r`, `-m`; an
/// empty line where one failed). Exits 127 when neither gave anything.
pub const SCRIPT: &str = r#"PATH="${PATH:-/usr/bin:/bin}:/usr/sbin:/sbin:/usr/local/sbin"; export PATH
found=
for f in /etc/os-release /usr/lib/os-release; do
  if [ -r "$f" ] && out=$(head -n 200 "$f" 2>/dev/null </dev/null) && [ -n "$out" ]; then
    echo @@os-release
    printf '%s\n' "$out"
    found=1
    break
  fi
done
if command -v uname >/dev/null 2>&1; then
  s=$(uname -s 2>/dev/null)
  r=$(uname -r 2>/dev/null)
  m=$(uname -m 2>/dev/null)
  if [ -n "$s$r$m" ]; then
    echo @@uname
    printf '%s\n%s\n%s\n' "$s" "$r" "$m"
    found=1
  fi
fi
[ -n "$found" ] || exit 127
exit 0
"#;

const MAX_FIELD: usize = 256;

/// Parses the `SCRIPT` output. Err only when neither os-release nor uname
/// gave anything.
pub fn parse(stdout: &str) -> Result<OsInfo, ParseError> {
    let mut release: Vec<(String, String)> = Vec::new();
    let mut uname: Option<[String; 3]> = None;
    for (name, body) in named_sections(stdout) {
        match name {
            "os-release" if release.is_empty() => release = parse_os_release(body),
            "uname" if uname.is_none() => {
                let mut it = lines(body).map(|l| truncate_chars(l.trim(), MAX_FIELD));
                let u = [
                    it.next().unwrap_or_default(),
                    it.next().unwrap_or_default(),
                    it.next().unwrap_or_default(),
                ];
                if u.iter().any(|s| !s.is_empty()) {
                    uname = Some(u);
                }
            }
            _ => {}
        }
    }
    let [sysname, kernel, arch] = uname.clone().unwrap_or_default();
    let get = |key: &str| {
        release
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    if !release.is_empty() {
        let name = get("NAME").unwrap_or_else(|| "Linux".to_string());
        let version = get("VERSION_ID").unwrap_or_default();
        let id = get("ID").unwrap_or_else(|| "linux".to_string());
        let pretty_name = get("PRETTY_NAME").unwrap_or_else(|| match get("VERSION") {
            Some(v) => format!("{name} {v}"),
            None => name.clone(),
        });
        return Ok(OsInfo {
            name,
            version,
            id,
            pretty_name,
            kernel,
            arch,
        });
    }
    if uname.is_none() {
        return Err(ParseError::new("no os-release and no uname output"));
    }
    let version = kernel.split('-').next().unwrap_or_default().to_string();
    let pretty_name = format!("{sysname} {kernel}").trim().to_string();
    Ok(OsInfo {
        id: sysname.to_lowercase(),
        name: sysname,
        version,
        pretty_name,
        kernel,
        arch,
    })
}

/// `KEY=value` pairs of an os-release file, values unquoted. Lines that are
/// not assignments are skipped.
fn parse_os_release(body: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in lines(body) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        out.push((
            key.to_string(),
            truncate_chars(&unquote(value.trim()), MAX_FIELD),
        ));
        if out.len() >= 200 {
            break;
        }
    }
    out
}

/// Shell-style unquoting of one os-release value: `"..."` with backslash
/// escapes, `'...'` literal, or bare (backslash escapes honoured).
fn unquote(v: &str) -> String {
    let mut out = String::new();
    let mut chars = v.chars();
    match v.chars().next() {
        Some('\'') => {
            chars.next();
            for c in chars {
                if c == '\'' {
                    break;
                }
                out.push(c);
            }
        }
        Some('"') => {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => {
                        if let Some(n) = chars.next() {
                            out.push(n);
                        }
                    }
                    _ => out.push(c),
                }
            }
        }
        _ => {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            out.push(n);
                        }
                    }
                    c if c.is_whitespace() => break,
                    _ => out.push(c),
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian12_real() {
        let os = parse(include_str!("../../../tests/fixtures/debian12/os.txt")).expect("parses");
        assert_eq!(os.name, "Debian GNU/Linux");
        assert_eq!(os.version, "12");
        assert_eq!(os.id, "debian");
        assert_eq!(os.pretty_name, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(os.arch, "x86_64");
        assert!(!os.kernel.is_empty());
    }

    #[test]
    fn busybox_on_debian12_real() {
        let os = parse(include_str!(
            "../../../tests/fixtures/busybox-on-debian12/os.txt"
        ))
        .expect("parses");
        assert_eq!(os.id, "debian");
        assert_eq!(os.arch, "x86_64");
    }

    #[test]
    fn alpine_documented() {
        let os = parse(include_str!(
            "../../../tests/fixtures/alpine/os.documented.txt"
        ))
        .expect("parses");
        assert_eq!(os.name, "Alpine Linux");
        assert_eq!(os.id, "alpine");
        assert_eq!(os.version, "3.20.3");
        assert_eq!(os.pretty_name, "Alpine Linux v3.20");
        assert_eq!(os.arch, "aarch64");
    }

    #[test]
    fn rhel9_documented() {
        let os = parse(include_str!(
            "../../../tests/fixtures/rhel9/os.documented.txt"
        ))
        .expect("parses");
        assert_eq!(os.name, "Red Hat Enterprise Linux");
        assert_eq!(os.id, "rhel");
        assert_eq!(os.version, "9.4");
        assert_eq!(os.kernel, "5.14.0-427.13.1.el9_4.x86_64");
    }

    #[test]
    fn arch_documented() {
        let os = parse(include_str!(
            "../../../tests/fixtures/arch/os.documented.txt"
        ))
        .expect("parses");
        assert_eq!(os.id, "arch");
        assert_eq!(os.version, "");
        assert_eq!(os.pretty_name, "Arch Linux");
    }

    #[test]
    fn freebsd14_documented() {
        let os = parse(include_str!(
            "../../../tests/fixtures/freebsd14/os.documented.txt"
        ))
        .expect("parses");
        assert_eq!(os.id, "freebsd");
        assert_eq!(os.version, "14.1");
        assert_eq!(os.pretty_name, "FreeBSD 14.1-RELEASE");
        assert_eq!(os.kernel, "14.1-RELEASE");
        assert_eq!(os.arch, "amd64");
    }

    #[test]
    fn bsd_without_os_release() {
        let os = parse("@@uname\r\nFreeBSD\r\n14.1-RELEASE-p5\r\namd64\r\n").expect("parses");
        assert_eq!(os.name, "FreeBSD");
        assert_eq!(os.id, "freebsd");
        assert_eq!(os.version, "14.1");
        assert_eq!(os.pretty_name, "FreeBSD 14.1-RELEASE-p5");
        assert_eq!(os.kernel, "14.1-RELEASE-p5");
        assert_eq!(os.arch, "amd64");
    }

    #[test]
    fn quoting() {
        let text = "@@os-release\n# c\nNAME='Single \\ quoted'\nID=bare\nVERSION_ID=\"1.0\"\n\
                    PRETTY_NAME=\"Say \\\"hi\\\" \\$x\"\ngarbage line\n=x\n";
        let os = parse(text).expect("parses");
        assert_eq!(os.name, "Single \\ quoted");
        assert_eq!(os.id, "bare");
        assert_eq!(os.version, "1.0");
        assert_eq!(os.pretty_name, "Say \"hi\" $x");
        assert_eq!(os.kernel, "");
    }

    #[test]
    fn nothing() {
        assert!(parse("").is_err());
        assert!(parse("@@uname\n\n\n\n").is_err());
        assert!(parse("junk\n").is_err());
    }
}
