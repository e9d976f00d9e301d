//! `os` step: the distribution's identity plus `uname -s/-r/-m`.
//!
//! In order: os-release; `lsb_release -a` or `/etc/lsb-release`; the
//! distribution's own release file (`/etc/centos-release`, `/etc/SuSE-release`,
//! `/etc/debian_version`, ...); macOS `sw_vers`; then `uname`. On Linux and
//! macOS the kernel version never stands in for the OS version.

use super::{ParseError, lines, named_sections, truncate_chars};
use crate::model::facts::OsInfo;

/// Prints `@@os-release` (the first readable of `/etc/os-release`,
/// `/usr/lib/os-release`); only without one, `@@lsb_release` (`lsb_release
/// -a`), `@@release PATH` for each release file present and `@@sw_vers`;
/// then `@@uname` (three lines: `-s`, `-r`, `-m`; an empty line where one
/// failed). Exits 127 when nothing gave anything.
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
if [ -z "$found" ]; then
  if command -v lsb_release >/dev/null 2>&1 && out=$(lsb_release -a 2>/dev/null </dev/null) && [ -n "$out" ]; then
    echo @@lsb_release
    printf '%s\n' "$out" | head -n 20
  fi
  for f in /etc/lsb-release /etc/centos-release /etc/fedora-release /etc/oracle-release \
      /etc/rocky-release /etc/almalinux-release /etc/redhat-release /etc/system-release \
      /etc/SuSE-release /etc/alpine-release /etc/gentoo-release /etc/slackware-version \
      /etc/openwrt_release /etc/arch-release /etc/debian_version; do
    if [ -f "$f" ] && [ -r "$f" ]; then
      echo "@@release $f"
      head -n 20 "$f" 2>/dev/null </dev/null
      found=1
    fi
  done
  if command -v sw_vers >/dev/null 2>&1 && out=$(sw_vers 2>/dev/null </dev/null) && [ -n "$out" ]; then
    echo @@sw_vers
    printf '%s\n' "$out" | head -n 20
    found=1
  fi
fi
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
    let mut lsb: Option<Identity> = None;
    let mut files: Vec<(&str, &str)> = Vec::new();
    let mut sw_vers: Option<Identity> = None;
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
            "lsb_release" if lsb.is_none() => lsb = lsb_release(body),
            "sw_vers" if sw_vers.is_none() => sw_vers = parse_sw_vers(body),
            n => {
                if let Some(path) = n.strip_prefix("release ") {
                    files.push((path.trim(), body));
                }
            }
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
    let from_files = || {
        // lsb-release first, then the most specific release file.
        let lsb_file = files
            .iter()
            .find(|(p, _)| *p == "/etc/lsb-release")
            .and_then(|(_, b)| lsb_vars(b, "DISTRIB_"));
        lsb_file.or_else(|| {
            RELEASE_FILES.iter().find_map(|(path, read)| {
                files
                    .iter()
                    .find(|(p, _)| p == path)
                    .and_then(|(_, body)| read(body))
            })
        })
    };
    if let Some(i) = lsb.or_else(from_files).or(sw_vers) {
        let pretty_name = if i.pretty_name.is_empty() {
            format!("{} {}", i.name, i.version).trim().to_string()
        } else {
            i.pretty_name
        };
        return Ok(OsInfo {
            name: i.name,
            version: i.version,
            id: i.id,
            pretty_name,
            kernel,
            arch,
        });
    }
    if uname.is_none() {
        return Err(ParseError::new(
            "no os-release, release file or uname output",
        ));
    }
    // On the BSDs the kernel release is the OS release (`14.1-RELEASE`); on
    // Linux and macOS it is not, and an unknown version stays empty.
    let bsd = matches!(
        sysname.as_str(),
        "FreeBSD" | "OpenBSD" | "NetBSD" | "DragonFly" | "MidnightBSD"
    );
    let version = if bsd {
        kernel.split('-').next().unwrap_or_default().to_string()
    } else {
        String::new()
    };
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

/// What a source other than os-release says about the distribution.
#[derive(Debug, Default)]
struct Identity {
    name: String,
    version: String,
    id: String,
    pretty_name: String,
}

fn identity(name: &str, version: &str, id: &str, pretty: &str) -> Identity {
    Identity {
        name: truncate_chars(name.trim(), MAX_FIELD),
        version: truncate_chars(version.trim(), MAX_FIELD),
        id: truncate_chars(id.trim(), MAX_FIELD),
        pretty_name: truncate_chars(pretty.trim(), MAX_FIELD),
    }
}

type ReadRelease = fn(&str) -> Option<Identity>;

/// Release files from the most specific to the most generic (a CentOS host
/// also has `/etc/redhat-release`, an Ubuntu one `/etc/debian_version`).
const RELEASE_FILES: &[(&str, ReadRelease)] = &[
    ("/etc/centos-release", redhat_style),
    ("/etc/fedora-release", redhat_style),
    ("/etc/oracle-release", redhat_style),
    ("/etc/rocky-release", redhat_style),
    ("/etc/almalinux-release", redhat_style),
    ("/etc/redhat-release", redhat_style),
    ("/etc/system-release", redhat_style),
    ("/etc/SuSE-release", suse),
    ("/etc/openwrt_release", |b| lsb_vars(b, "DISTRIB_")),
    ("/etc/alpine-release", |b| {
        first_line(b).map(|v| identity("Alpine Linux", v, "alpine", &format!("Alpine Linux v{v}")))
    }),
    ("/etc/gentoo-release", redhat_style),
    ("/etc/slackware-version", slackware),
    ("/etc/arch-release", |_| {
        Some(identity("Arch Linux", "", "arch", "Arch Linux"))
    }),
    ("/etc/debian_version", debian_version),
];

fn first_line(body: &str) -> Option<&str> {
    lines(body).map(str::trim).find(|l| !l.is_empty())
}

/// The os-release `ID` of a distribution name, as the distribution's own
/// os-release says it on later releases.
fn id_of(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let known: &[(&str, &str)] = &[
        ("red hat", "rhel"),
        ("redhat", "rhel"),
        ("centos", "centos"),
        ("fedora", "fedora"),
        ("oracle", "ol"),
        ("rocky", "rocky"),
        ("almalinux", "almalinux"),
        ("scientific", "scientific"),
        ("amazon", "amzn"),
        ("cloudlinux", "cloudlinux"),
        ("opensuse", "opensuse"),
        ("suse", "sles"),
        ("gentoo", "gentoo"),
        ("slackware", "slackware"),
        ("openwrt", "openwrt"),
        ("ubuntu", "ubuntu"),
        ("debian", "debian"),
        ("linuxmint", "linuxmint"),
        ("alpine", "alpine"),
        ("arch", "arch"),
    ];
    known
        .iter()
        .find(|(k, _)| lower.starts_with(k))
        .map(|(_, id)| (*id).to_string())
        .unwrap_or_else(|| {
            lower
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .collect()
        })
}

/// `CentOS release 6.10 (Final)`, `Red Hat Enterprise Linux Server release
/// 6.10 (Santiago)`, `CentOS Linux release 7.9.2009 (Core)`, `Gentoo Base
/// System release 2.7`, `Amazon Linux AMI release 2018.03`.
fn redhat_style(body: &str) -> Option<Identity> {
    let line = first_line(body)?;
    let (name, rest) = line.split_once(" release ")?;
    let version = rest.split_whitespace().next().unwrap_or_default();
    let name = if name == "Gentoo Base System" {
        "Gentoo"
    } else {
        name
    };
    Some(identity(name, version, &id_of(name), line))
}

/// `SUSE Linux Enterprise Server 11 (x86_64)` / `VERSION = 11` /
/// `PATCHLEVEL = 4`, or `openSUSE 13.1 (x86_64)` / `VERSION = 13.1`.
fn suse(body: &str) -> Option<Identity> {
    let line = first_line(body)?;
    let mut version = String::new();
    let mut patch = String::new();
    for l in lines(body) {
        if let Some((k, v)) = l.split_once('=') {
            match k.trim() {
                "VERSION" => version = v.trim().to_string(),
                "PATCHLEVEL" => patch = v.trim().to_string(),
                _ => {}
            }
        }
    }
    let name: String = line
        .split(" (")
        .next()
        .unwrap_or(line)
        .split_whitespace()
        .take_while(|w| !w.starts_with(|c: char| c.is_ascii_digit()))
        .collect::<Vec<_>>()
        .join(" ");
    if !patch.is_empty() && patch != "0" && !version.contains('.') {
        version = format!("{version}.{patch}");
    }
    let pretty = line.split(" (").next().unwrap_or(line);
    Some(identity(&name, &version, &id_of(&name), pretty))
}

/// `Slackware 14.2`.
fn slackware(body: &str) -> Option<Identity> {
    let line = first_line(body)?;
    let mut words = line.split_whitespace();
    let name = words.next()?;
    let version = words.next().unwrap_or_default();
    Some(identity(name, version, &id_of(name), line))
}

/// `6.0.10`, `12.4`, or `bookworm/sid` (a testing host: no number).
fn debian_version(body: &str) -> Option<Identity> {
    let v = first_line(body)?;
    let version = if v.starts_with(|c: char| c.is_ascii_digit()) {
        v
    } else {
        ""
    };
    Some(identity(
        "Debian GNU/Linux",
        version,
        "debian",
        &format!("Debian GNU/Linux {v}"),
    ))
}

/// `DISTRIB_ID=Ubuntu` style files (`/etc/lsb-release`, OpenWrt's
/// `/etc/openwrt_release`). None without an ID: EL's redhat-lsb writes an
/// lsb-release with only `LSB_VERSION`.
fn lsb_vars(body: &str, prefix: &str) -> Option<Identity> {
    let vars = parse_os_release(body);
    let get = |k: &str| {
        vars.iter()
            .rev()
            .find(|(key, _)| key.strip_prefix(prefix) == Some(k))
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    let name = get("ID");
    if name.is_empty() {
        return None;
    }
    Some(identity(
        name,
        get("RELEASE"),
        &id_of(name),
        get("DESCRIPTION"),
    ))
}

/// `lsb_release -a`: `Distributor ID:\tCentOS`, `Description:\t...`,
/// `Release:\t6.10`.
fn lsb_release(body: &str) -> Option<Identity> {
    let get = |key: &str| {
        lines(body)
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.trim() == key)
                    .map(|(_, v)| v.trim())
            })
            .unwrap_or_default()
    };
    let distributor = get("Distributor ID");
    if distributor.is_empty() || distributor == "n/a" {
        return None;
    }
    // lsb_release names RHEL `RedHatEnterpriseServer` (or ...Workstation).
    let name = if distributor.starts_with("RedHatEnterprise") {
        "Red Hat Enterprise Linux"
    } else {
        distributor
    };
    let version = match get("Release") {
        "n/a" => "",
        v => v,
    };
    Some(identity(
        name,
        version,
        &id_of(distributor),
        get("Description"),
    ))
}

/// macOS `sw_vers`: `ProductName:\tmacOS`, `ProductVersion:\t14.4.1`.
fn parse_sw_vers(body: &str) -> Option<Identity> {
    let get = |key: &str| {
        lines(body)
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.trim() == key)
                    .map(|(_, v)| v.trim())
            })
            .unwrap_or_default()
    };
    let name = get("ProductName");
    if name.is_empty() {
        return None;
    }
    let version = get("ProductVersion");
    Some(identity(
        name,
        version,
        "macos",
        &format!("{name} {version}"),
    ))
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

    fn fixture(path: &str) -> OsInfo {
        let text = std::fs::read_to_string(format!(
            "{}/tests/fixtures/{path}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("fixture");
        parse(&text).expect("parses")
    }

    fn id(os: &OsInfo) -> (&str, &str, &str) {
        (&os.name, &os.version, &os.id)
    }

    /// The issue's example: only `/etc/centos-release`, a 2.6.32 kernel.
    #[test]
    fn centos6_without_os_release() {
        let os = fixture("centos6/os.documented.txt");
        assert_eq!(id(&os), ("CentOS", "6.10", "centos"));
        assert_eq!(os.pretty_name, "CentOS release 6.10 (Final)");
        assert_eq!(os.kernel, "2.6.32-754.35.1.el6.x86_64");
    }

    #[test]
    fn release_files_of_other_distributions() {
        let cases = [
            (
                "rhel6/os.documented.txt",
                ("Red Hat Enterprise Linux", "6.10", "rhel"),
            ),
            (
                "sles11/os.documented.txt",
                ("SUSE Linux Enterprise Server", "11.4", "sles"),
            ),
            (
                "opensuse13/os.documented.txt",
                ("openSUSE", "13.1", "opensuse"),
            ),
            ("ubuntu14/os.documented.txt", ("Ubuntu", "14.04", "ubuntu")),
            (
                "alpine-old/os.documented.txt",
                ("Alpine Linux", "3.2.3", "alpine"),
            ),
            ("gentoo/os.documented.txt", ("Gentoo", "2.7", "gentoo")),
            (
                "slackware14/os.documented.txt",
                ("Slackware", "14.2", "slackware"),
            ),
            (
                "openwrt19/os.documented.txt",
                ("OpenWrt", "19.07.7", "openwrt"),
            ),
            ("macos14/os.documented.txt", ("macOS", "14.4.1", "macos")),
            (
                "amazon2018/os.documented.txt",
                ("Amazon Linux AMI", "2018.03", "amzn"),
            ),
        ];
        for (path, want) in cases {
            let os = fixture(path);
            assert_eq!(id(&os), want, "{path}");
            assert!(!os.pretty_name.is_empty(), "{path}");
            assert!(!os.kernel.is_empty() && os.version != os.kernel, "{path}");
        }
        assert_eq!(
            fixture("ubuntu14/os.documented.txt").pretty_name,
            "Ubuntu 14.04.6 LTS"
        );
    }

    #[test]
    fn debian_version_and_linux_without_anything() {
        let os = parse(
            "@@release /etc/debian_version\n6.0.10\n@@uname\nLinux\n2.6.32-5-amd64\nx86_64\n",
        )
        .expect("parses");
        assert_eq!(id(&os), ("Debian GNU/Linux", "6.0.10", "debian"));
        let os = parse("@@release /etc/debian_version\nbookworm/sid\n").expect("parses");
        assert_eq!(
            (os.version.as_str(), os.pretty_name.as_str()),
            ("", "Debian GNU/Linux bookworm/sid")
        );
        // An appliance with nothing but uname: the kernel is not the OS version.
        let os = parse("@@uname\nLinux\n4.14.221\nmips\n").expect("parses");
        assert_eq!(id(&os), ("Linux", "", "linux"));
        assert_eq!(os.kernel, "4.14.221");
        // redhat-lsb's lsb-release without DISTRIB_ID falls through.
        let os = parse("@@release /etc/lsb-release\nLSB_VERSION=base-4.0-amd64\n@@release /etc/redhat-release\nCentOS Linux release 7.9.2009 (Core)\n")
            .expect("parses");
        assert_eq!(id(&os), ("CentOS Linux", "7.9.2009", "centos"));
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
