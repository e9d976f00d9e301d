//! `reboot_required` step: whether the host waits for a reboot to use what
//! was updated, and why; `unknown` where no evidence exists.

use std::cmp::Ordering;

use super::{ParseError, lines, named_sections, truncate_chars};
use crate::model::facts::{RebootRequired, RebootStatus};

/// Prints `@@uname-r`; `@@reboot-required` and `@@reboot-required-pkgs`
/// (Debian/Ubuntu's marker files) when present; `@@needs-restarting`
/// (`exit=N` then the output of EL's `needs-restarting -r`) where it exists;
/// `@@modules` and `@@boot` (installed kernels: `/lib/modules/*`,
/// `/boot/vmlinuz-*`); `@@freebsd-version` (`-k` then `-r`) on FreeBSD;
/// `@@proc-version` and `@@dpkg-kernel` (the running kernel's package
/// version, to catch a Debian kernel updated under the same ABI name).
pub const SCRIPT: &str = r#"PATH="${PATH:-/usr/bin:/bin}:/usr/sbin:/sbin:/usr/local/sbin"; export PATH
running=$(uname -r 2>/dev/null </dev/null)
echo @@uname-r
printf '%s\n' "$running"
for d in /var/run /run; do
  if [ -e "$d/reboot-required" ]; then
    echo @@reboot-required
    head -n 5 "$d/reboot-required" 2>/dev/null </dev/null
    if [ -r "$d/reboot-required.pkgs" ]; then
      echo @@reboot-required-pkgs
      head -n 500 "$d/reboot-required.pkgs" 2>/dev/null </dev/null
    fi
    break
  fi
done
if command -v needs-restarting >/dev/null 2>&1; then
  out=$(needs-restarting -r 2>/dev/null </dev/null)
  rc=$?
  echo @@needs-restarting
  echo "exit=$rc"
  printf '%s\n' "$out" | head -n 100
fi
if [ -d /lib/modules ]; then
  echo @@modules
  ls -1 /lib/modules 2>/dev/null </dev/null | head -n 500
fi
if [ -d /boot ]; then
  echo @@boot
  ls -1 /boot 2>/dev/null </dev/null | grep -E '^(vmlinuz|vmlinux|kernel|bzImage|Image)-' | head -n 500
fi
if command -v freebsd-version >/dev/null 2>&1; then
  echo @@freebsd-version
  freebsd-version -k 2>/dev/null </dev/null
  freebsd-version -r 2>/dev/null </dev/null
fi
if [ -r /proc/version ]; then
  echo @@proc-version
  head -n 1 /proc/version 2>/dev/null </dev/null
fi
if [ -n "$running" ] && [ -d /var/lib/dpkg ] && command -v dpkg-query >/dev/null 2>&1; then
  echo @@dpkg-kernel
  dpkg-query -W -f='${db:Status-Abbrev} ${Version}\n' "linux-image-$running" 2>/dev/null </dev/null
fi
exit 0
"#;

const MAX_LINE: usize = 256;
const MAX_PACKAGES: usize = 500;

/// Err only when the output has none of the script's sections.
pub fn parse(stdout: &str) -> Result<RebootRequired, ParseError> {
    let secs = named_sections(stdout);
    if secs.is_empty() {
        return Err(ParseError::new("no reboot evidence printed"));
    }
    let get = |n: &str| secs.iter().find(|(name, _)| *name == n).map(|(_, b)| *b);
    let body_lines = |n: &str| -> Vec<&str> {
        get(n)
            .map(|b| lines(b).map(str::trim).filter(|l| !l.is_empty()).collect())
            .unwrap_or_default()
    };
    let mut r = RebootRequired {
        running_kernel: body_lines("uname-r")
            .first()
            .map(|k| truncate_chars(k, MAX_LINE))
            .unwrap_or_default(),
        ..Default::default()
    };
    let mut required = false;
    let mut not_required = false;

    if get("reboot-required").is_some() {
        required = true;
        r.reasons.push("/var/run/reboot-required exists".into());
        for p in body_lines("reboot-required-pkgs") {
            let p = truncate_chars(p, MAX_LINE);
            if !r.packages.contains(&p) && r.packages.len() < MAX_PACKAGES {
                r.packages.push(p);
            }
        }
    }

    let nr = body_lines("needs-restarting");
    match nr.first().and_then(|l| l.strip_prefix("exit=")) {
        Some("1") => {
            required = true;
            r.reasons
                .push("needs-restarting -r: reboot is required".into());
            // `  * kernel` lines name what changed.
            for l in &nr {
                if let Some(p) = l.strip_prefix("* ") {
                    let p = truncate_chars(p.trim(), MAX_LINE);
                    if !p.is_empty() && !r.packages.contains(&p) && r.packages.len() < MAX_PACKAGES
                    {
                        r.packages.push(p);
                    }
                }
            }
        }
        Some("0") => not_required = true,
        _ => {}
    }

    // Installed kernels: version-named entries only (`vmlinuz-linux` on
    // Arch names no version; its modules directory does).
    let mut installed: Vec<String> = body_lines("modules")
        .into_iter()
        .chain(
            body_lines("boot")
                .into_iter()
                .filter_map(|f| f.split_once('-').map(|(_, v)| v)),
        )
        .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()) && !v.contains("rescue"))
        .map(|v| truncate_chars(v, MAX_LINE))
        .collect();
    installed.sort_by(|a, b| vercmp(a, b).then_with(|| a.cmp(b)));
    installed.dedup();
    if let Some(newest) = installed.last() {
        r.newest_kernel = newest.clone();
        if !r.running_kernel.is_empty() {
            match vercmp(newest, &r.running_kernel) {
                Ordering::Greater => {
                    required = true;
                    r.reasons.push(format!(
                        "running kernel {}, newest installed {newest}",
                        r.running_kernel
                    ));
                }
                _ if installed.contains(&r.running_kernel) => not_required = true,
                _ => {}
            }
        }
    }

    // FreeBSD: the installed kernel against the running one.
    let fv = body_lines("freebsd-version");
    if let Some(k) = fv.first() {
        r.newest_kernel = truncate_chars(k, MAX_LINE);
        if !r.running_kernel.is_empty() {
            if *k != r.running_kernel {
                required = true;
                r.reasons.push(format!(
                    "running kernel {}, installed {k}",
                    r.running_kernel
                ));
            } else {
                not_required = true;
            }
        }
    }

    // Debian: `... Debian 6.1.76-1 (2024-02-01)` in /proc/version against
    // the installed package of the same ABI name (`ii 6.1.85-1`).
    let build = body_lines("proc-version")
        .first()
        .and_then(|l| l.rsplit_once(" Debian "))
        .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string));
    let package = body_lines("dpkg-kernel").first().and_then(|l| {
        let (status, version) = l.split_once(' ')?;
        (status.get(1..2) == Some("i")).then(|| version.trim().to_string())
    });
    if let (Some(build), Some(package)) = (build, package) {
        let same = package == build || package.starts_with(&format!("{build}+b"));
        if same {
            not_required = true;
        } else {
            required = true;
            r.reasons.push(truncate_chars(
                &format!(
                    "kernel package linux-image-{} is {package}, running build is {build}",
                    r.running_kernel
                ),
                MAX_LINE,
            ));
        }
    }

    r.status = if required {
        RebootStatus::Required
    } else if not_required {
        RebootStatus::NotRequired
    } else {
        RebootStatus::Unknown
    };
    Ok(r)
}

/// Compares version strings the way rpm and dpkg order kernel releases:
/// runs of digits numerically, runs of letters as text, digits above letters.
pub fn vercmp(a: &str, b: &str) -> Ordering {
    fn segments(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start: Option<(usize, bool)> = None;
        for (i, c) in s.char_indices() {
            let kind = if c.is_ascii_digit() {
                Some(true)
            } else if c.is_ascii_alphabetic() {
                Some(false)
            } else {
                None
            };
            match (start, kind) {
                (Some((st, k)), Some(nk)) if k == nk => {
                    let _ = st;
                }
                (Some((st, k)), _) => {
                    if let Some(seg) = s.get(st..i) {
                        out.push((k, seg));
                    }
                    start = kind.map(|k| (i, k));
                }
                (None, Some(k)) => start = Some((i, k)),
                (None, None) => {}
            }
        }
        if let Some((st, k)) = start
            && let Some(seg) = s.get(st..)
        {
            out.push((k, seg));
        }
        out
    }
    let (sa, sb) = (segments(a), segments(b));
    for (x, y) in sa.iter().zip(sb.iter()) {
        let ord = match (x.0, y.0) {
            (true, true) => {
                let (xt, yt) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                xt.len().cmp(&yt.len()).then_with(|| xt.cmp(yt))
            }
            (false, false) => x.1.cmp(y.1),
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    sa.len().cmp(&sb.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            vercmp("6.1.0-20-amd64", "6.1.0-18-amd64"),
            Ordering::Greater
        );
        assert_eq!(vercmp("6.1.0-9-amd64", "6.1.0-18-amd64"), Ordering::Less);
        assert_eq!(
            vercmp("4.18.0-553.el8_10.x86_64", "4.18.0-513.5.1.el8_9.x86_64"),
            Ordering::Greater
        );
        assert_eq!(
            vercmp("6.10.10-arch1-1", "6.10.10-arch1-1"),
            Ordering::Equal
        );
        assert_eq!(vercmp("5.10", "5.10.1"), Ordering::Less);
    }

    #[test]
    fn debian_marker_file() {
        let r = parse("@@uname-r\n6.1.0-18-amd64\n@@reboot-required\n*** System restart required ***\n\
                       @@reboot-required-pkgs\nlinux-image-6.1.0-20-amd64\nlibc6\nlibc6\n\
                       @@modules\n6.1.0-18-amd64\n6.1.0-20-amd64\n@@boot\nvmlinuz-6.1.0-18-amd64\nvmlinuz-6.1.0-20-amd64\n")
            .expect("parses");
        assert_eq!(r.status, RebootStatus::Required);
        assert_eq!(r.packages, ["linux-image-6.1.0-20-amd64", "libc6"]);
        assert_eq!(r.newest_kernel, "6.1.0-20-amd64");
        assert_eq!(r.reasons.len(), 2, "{:?}", r.reasons);
    }

    #[test]
    fn el_needs_restarting() {
        let yes = parse("@@uname-r\n4.18.0-513.el8.x86_64\n@@needs-restarting\nexit=1\n\
            Core libraries or services have been updated since boot-up:\n  * kernel\n  * systemd\n\n\
            Reboot is required to fully utilize these updates.\n\
            More information: https://access.redhat.com/solutions/27943\n\
            @@modules\n4.18.0-513.el8.x86_64\n4.18.0-553.el8_10.x86_64\n@@boot\nvmlinuz-0-rescue-0123abcd\n\
            vmlinuz-4.18.0-513.el8.x86_64\nvmlinuz-4.18.0-553.el8_10.x86_64\n")
            .expect("parses");
        assert_eq!(yes.status, RebootStatus::Required);
        assert_eq!(yes.packages, ["kernel", "systemd"]);
        assert_eq!(yes.newest_kernel, "4.18.0-553.el8_10.x86_64");
        let no = parse("@@uname-r\n4.18.0-553.el8_10.x86_64\n@@needs-restarting\nexit=0\n\
            No core libraries or services have been updated since boot-up.\nReboot should not be necessary.\n\
            @@modules\n4.18.0-553.el8_10.x86_64\n")
            .expect("parses");
        assert_eq!(no.status, RebootStatus::NotRequired);
        assert!(no.reasons.is_empty() && no.packages.is_empty());
    }

    #[test]
    fn kernels_alone() {
        // Arch: the running kernel's modules are gone after an upgrade.
        let arch = parse("@@uname-r\n6.10.9-arch1-2\n@@modules\n6.10.10-arch1-1\nextramodules-6.10-arch\n@@boot\nvmlinuz-linux\n")
            .expect("parses");
        assert_eq!(arch.status, RebootStatus::Required);
        assert_eq!(arch.newest_kernel, "6.10.10-arch1-1");
        let current =
            parse("@@uname-r\n6.1.0-20-amd64\n@@modules\n6.1.0-18-amd64\n6.1.0-20-amd64\n")
                .expect("parses");
        assert_eq!(current.status, RebootStatus::NotRequired);
        // A container: the host's kernel, no kernels installed inside.
        let container =
            parse("@@uname-r\n6.18.44-fc-v657\n@@proc-version\nLinux version 6.18.44\n")
                .expect("parses");
        assert_eq!(container.status, RebootStatus::Unknown);
        assert_eq!(container.newest_kernel, "");
    }

    #[test]
    fn debian_same_abi_newer_package() {
        let text = "@@uname-r\n6.1.0-18-amd64\n@@modules\n6.1.0-18-amd64\n@@proc-version\n\
            Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)\n\
            @@dpkg-kernel\nii 6.1.85-1\n";
        let r = parse(text).expect("parses");
        assert_eq!(r.status, RebootStatus::Required);
        assert!(r.reasons[0].contains("6.1.85-1"), "{:?}", r.reasons);
        let same = parse(&text.replace("ii 6.1.85-1", "ii 6.1.76-1")).expect("parses");
        assert_eq!(same.status, RebootStatus::NotRequired);
    }

    #[test]
    fn freebsd_documented() {
        let r = parse(include_str!(
            "../../../tests/fixtures/freebsd14/reboot_required.documented.txt"
        ))
        .expect("parses");
        assert_eq!(r.status, RebootStatus::Required);
        assert_eq!(
            (r.running_kernel.as_str(), r.newest_kernel.as_str()),
            ("14.1-RELEASE-p3", "14.1-RELEASE-p5")
        );
    }

    #[test]
    fn junk() {
        assert!(parse("").is_err());
        assert_eq!(
            parse("@@uname-r\n\n").expect("parses").status,
            RebootStatus::Unknown
        );
        assert_eq!(
            parse("@@needs-restarting\nexit=\u{1F600}\n")
                .expect("parses")
                .status,
            RebootStatus::Unknown
        );
    }
}
