//! `packages` step: every package manager present answers; the parser keeps
//! the one with the most installed packages.

use std::collections::HashMap;

use super::{ParseError, lines, named_sections, parse_i64, truncate_chars};
use crate::model::facts::{InstalledPackage, Package, Packages};

/// Prints one section per manager whose database is present: `@@dpkg` (plus
/// `@@dpkg-log` with the last 500 install/upgrade lines of dpkg.log),
/// `@@rpm`, `@@apk`, `@@pacman`, `@@pkg`. Exits 127 when there is none.
/// Detection is by database, not just by tool: busybox has an `rpm` applet,
/// and FreeBSD's `/usr/sbin/pkg` is a bootstrapper that offers to download
/// pkg when it is not installed (hence also `</dev/null` everywhere: nothing
/// may read the script from stdin).
pub const SCRIPT: &str = r#"PATH="${PATH:-/usr/bin:/bin}:/usr/sbin:/sbin:/usr/local/sbin"; export PATH
found=
if [ -d /var/lib/dpkg ] && command -v dpkg-query >/dev/null 2>&1; then
  echo @@dpkg
  dpkg-query -W -f='${db:Status-Abbrev}\t${db-fsys:Last-Modified}\t${Package}\t${Version}\n' 2>/dev/null </dev/null
  found=1
  if [ -r /var/log/dpkg.log ]; then
    echo @@dpkg-log
    grep -h -E ' (install|upgrade) ' /var/log/dpkg.log 2>/dev/null </dev/null | tail -n 500
  fi
fi
if { [ -d /var/lib/rpm ] || [ -d /usr/lib/sysimage/rpm ]; } && command -v rpm >/dev/null 2>&1; then
  echo @@rpm
  rpm -qa --qf '%{INSTALLTIME}\t%{NAME}\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\n' 2>/dev/null </dev/null
  found=1
fi
if [ -r /lib/apk/db/installed ]; then
  echo @@apk
  grep -E '^[PV]:' /lib/apk/db/installed 2>/dev/null </dev/null
  found=1
fi
if [ -d /var/lib/pacman/local ]; then
  echo @@pacman
  awk 'FNR==1{k=""} /^%(NAME|VERSION|INSTALLDATE)%$/{k=$0;next} k!=""{print k" "$0;k=""}' /var/lib/pacman/local/*/desc 2>/dev/null </dev/null
  found=1
fi
if [ -f /var/db/pkg/local.sqlite ] && command -v pkg >/dev/null 2>&1; then
  echo @@pkg
  ASSUME_ALWAYS_YES=no pkg query '%t\t%n\t%v' 2>/dev/null </dev/null
  found=1
fi
[ -n "$found" ] || exit 127
exit 0
"#;

const RECENT: usize = 50;
const MAX_TEXT: usize = 256;

/// Picks the manager with the most installed packages (ties: the order
/// dpkg, rpm, apk, pacman, pkg).
pub fn parse(stdout: &str) -> Result<Packages, ParseError> {
    let secs = named_sections(stdout);
    let dpkg_log = secs.iter().find(|(n, _)| *n == "dpkg-log").map(|(_, b)| *b);
    let mut best: Option<(String, Found)> = None;
    for (name, body) in &secs {
        let found = match *name {
            "dpkg" => dpkg(body, dpkg_log),
            "rpm" => tab_separated(body),
            "apk" => apk(body),
            "pacman" => pacman(body),
            "pkg" => tab_separated(body),
            _ => continue,
        };
        if best.as_ref().is_none_or(|(_, b)| found.count > b.count) {
            best = Some(((*name).to_string(), found));
        }
    }
    let Some((manager, found)) = best else {
        return Err(ParseError::new(
            "no package manager found (looked for dpkg, rpm, apk, pacman, pkg)",
        ));
    };
    Ok(Packages {
        manager,
        count: found.count,
        recent: recent(found.dated),
        installed: found.installed.finish(),
    })
}

/// What one manager's section lists.
#[derive(Default)]
struct Found {
    /// Installed packages, as the manager counts them.
    count: u64,
    /// Candidates for `recent` (bounded by `push_bounded`).
    dated: Vec<Package>,
    installed: Installed,
}

/// Every installed (name, version), up to `Packages::MAX_INSTALLED`.
#[derive(Default)]
struct Installed {
    list: Vec<InstalledPackage>,
    overflow: bool,
}

impl Installed {
    fn push(&mut self, name: &str, version: &str) {
        if self.list.len() >= Packages::MAX_INSTALLED {
            self.overflow = true;
            return;
        }
        self.list.push(InstalledPackage {
            name: truncate_chars(name.trim(), MAX_TEXT),
            version: truncate_chars(version.trim(), MAX_TEXT),
        });
    }

    /// Sorted, each (name, version) once; `None` past the bound.
    fn finish(mut self) -> Option<Vec<InstalledPackage>> {
        if self.overflow {
            return None;
        }
        self.list.sort();
        self.list.dedup();
        Some(self.list)
    }
}

/// The newest `RECENT` packages with a known install time, newest first,
/// ties by name.
fn recent(mut pkgs: Vec<Package>) -> Vec<Package> {
    pkgs.retain(|p| p.installed_at.is_some());
    pkgs.sort_by(|a, b| {
        b.installed_at
            .cmp(&a.installed_at)
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.version.cmp(&b.version))
    });
    pkgs.truncate(RECENT);
    pkgs
}

/// A positive unix time, else None ("(none)", 0, garbage).
fn time(tok: &str) -> Option<i64> {
    parse_i64(tok.trim()).filter(|t| *t > 0)
}

fn package(name: &str, version: &str, installed_at: Option<i64>) -> Package {
    Package {
        name: truncate_chars(name.trim(), MAX_TEXT),
        version: truncate_chars(version.trim(), MAX_TEXT),
        installed_at,
    }
}

/// Keeps memory bounded: only the newest few hundred packages are needed.
fn push_bounded(pkgs: &mut Vec<Package>, p: Package) {
    if p.installed_at.is_none() {
        return;
    }
    pkgs.push(p);
    if pkgs.len() >= 4 * RECENT {
        *pkgs = recent(std::mem::take(pkgs));
    }
}

/// `status\tlast-modified\tname\tversion`. `${db:Status-Abbrev}` is the
/// selection (`u`nknown, `i`nstall, `h`old, `r`emove, `p`urge), then the
/// status, then an error flag. Installed means the status letter: `i`
/// (installed), or `t`/`W` (installed, a trigger pending or awaited), so
/// `ii`, `hi`, `ri`, `pi` count and `rc`, `in`, `ic`, `un`, `iU` do not.
/// `${Version}` is dpkg's own string, epoch included (`2:9.0.1378-2`).
fn dpkg(body: &str, log: Option<&str>) -> Found {
    let mut found = Found::default();
    let mut missing: Vec<(String, String)> = Vec::new();
    for line in lines(body) {
        let mut f = line.split('\t');
        let (Some(status), Some(mtime), Some(name), Some(version)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if !dpkg_installed(status) || name.trim().is_empty() {
            continue;
        }
        found.count = found.count.saturating_add(1);
        found.installed.push(name, version);
        match time(mtime) {
            Some(t) => push_bounded(&mut found.dated, package(name, version, Some(t))),
            None if missing.len() < 100_000 => {
                missing.push((name.trim().to_string(), version.to_string()))
            }
            None => {}
        }
    }
    if !missing.is_empty() {
        let times = log.map(dpkg_log_times).unwrap_or_default();
        for (name, version) in missing {
            if let Some(t) = times.get(name.as_str()) {
                push_bounded(&mut found.dated, package(&name, &version, Some(*t)));
            }
        }
    }
    found
}

fn dpkg_installed(status: &str) -> bool {
    let mut letters = status.chars();
    matches!(
        (letters.next(), letters.next()),
        (Some('u' | 'i' | 'h' | 'r' | 'p'), Some('i' | 't' | 'W'))
    )
}

/// Latest install/upgrade time per package name from dpkg.log lines
/// `2024-01-31 12:34:56 install name:arch <none> 1.2-3` (UTC assumed).
fn dpkg_log_times(log: &str) -> HashMap<String, i64> {
    let mut out: HashMap<String, i64> = HashMap::new();
    for line in lines(log) {
        let toks: Vec<&str> = line.split_whitespace().collect();
        let (Some(date), Some(clock), Some(action), Some(pkg)) =
            (toks.first(), toks.get(1), toks.get(2), toks.get(3))
        else {
            continue;
        };
        if *action != "install" && *action != "upgrade" {
            continue;
        }
        let Some(t) = log_timestamp(date, clock) else {
            continue;
        };
        let name = pkg.split(':').next().unwrap_or(pkg);
        if name.is_empty() || (out.len() >= 10_000 && !out.contains_key(name)) {
            continue;
        }
        let e = out.entry(name.to_string()).or_insert(t);
        *e = (*e).max(t);
    }
    out
}

/// `YYYY-MM-DD` `HH:MM:SS` as UTC unix seconds.
fn log_timestamp(date: &str, clock: &str) -> Option<i64> {
    let mut d = date.split('-');
    let y = parse_i64(d.next()?)?;
    let m = parse_i64(d.next()?)?;
    let day = parse_i64(d.next()?)?;
    let mut c = clock.split(':');
    let hh = parse_i64(c.next()?)?;
    let mm = parse_i64(c.next()?)?;
    let ss = parse_i64(c.next()?)?;
    if d.next().is_some()
        || !(1970..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || !(0..=23).contains(&hh)
        || !(0..=59).contains(&mm)
        || !(0..=60).contains(&ss)
    {
        return None;
    }
    let days = days_from_civil(y, m, day);
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm). Inputs are range-checked by the caller.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// rpm (`[EPOCH:]VERSION-RELEASE`, as `rpm -q` shows it with an epoch)
/// and FreeBSD pkg (`%v`, whose `,N` suffix is pkg's epoch): `time\tname\tversion`. Every line with a name
/// counts (rpm's gpg-pubkey entries included, as `rpm -qa | wc -l`).
fn tab_separated(body: &str) -> Found {
    let mut found = Found::default();
    for line in lines(body) {
        let mut f = line.split('\t');
        let (Some(t), Some(name), Some(version)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if name.trim().is_empty() {
            continue;
        }
        found.count = found.count.saturating_add(1);
        found.installed.push(name, version);
        push_bounded(&mut found.dated, package(name, version, time(t)));
    }
    found
}

/// `P:name` starts a record, `V:version` completes it. No install times.
fn apk(body: &str) -> Found {
    let mut found = Found::default();
    let mut name: Option<&str> = None;
    let flush = |name: &mut Option<&str>, version: &str, found: &mut Found| {
        if let Some(n) = name.take() {
            found.count = found.count.saturating_add(1);
            found.installed.push(n, version);
        }
    };
    for line in lines(body) {
        if let Some(n) = line.strip_prefix("P:") {
            flush(&mut name, "", &mut found);
            name = Some(n).filter(|n| !n.trim().is_empty());
        } else if let Some(v) = line.strip_prefix("V:") {
            flush(&mut name, v, &mut found);
        }
    }
    flush(&mut name, "", &mut found);
    found
}

/// `%NAME% x`, `%VERSION% y`, `%INSTALLDATE% t` lines; a NAME starts a record.
fn pacman(body: &str) -> Found {
    let mut found = Found::default();
    let mut cur: Option<Package> = None;
    let flush = |cur: &mut Option<Package>, found: &mut Found| {
        if let Some(p) = cur.take() {
            found.installed.push(&p.name, &p.version);
            push_bounded(&mut found.dated, p);
        }
    };
    for line in lines(body) {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        match key {
            "%NAME%" if !value.trim().is_empty() => {
                flush(&mut cur, &mut found);
                found.count = found.count.saturating_add(1);
                cur = Some(package(value, "", None));
            }
            "%VERSION%" => {
                if let Some(p) = cur.as_mut() {
                    p.version = truncate_chars(value.trim(), MAX_TEXT);
                }
            }
            "%INSTALLDATE%" => {
                if let Some(p) = cur.as_mut() {
                    p.installed_at = time(value);
                }
            }
            _ => {}
        }
    }
    flush(&mut cur, &mut found);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(log_timestamp("2024-01-31", "12:34:56"), Some(1_706_704_496));
        assert_eq!(log_timestamp("2024-02-29", "00:00:00"), Some(1_709_164_800));
        assert_eq!(log_timestamp("2024-13-01", "00:00:00"), None);
        assert_eq!(
            log_timestamp("99999999999999999999-01-01", "00:00:00"),
            None
        );
    }

    #[test]
    fn debian12_real() {
        let p = parse(include_str!(
            "../../../tests/fixtures/debian12/packages.txt"
        ))
        .expect("parses");
        assert_eq!(p.manager, "dpkg");
        assert_eq!(p.count, DEBIAN12_COUNT);
        assert_eq!(p.recent.len(), 50);
        let ts: Vec<i64> = p.recent.iter().filter_map(|x| x.installed_at).collect();
        assert!(ts.windows(2).all(|w| w[0] >= w[1]));
    }

    const DEBIAN12_COUNT: u64 = 760;

    #[test]
    fn dpkg_without_fsys_times_uses_log() {
        let text = "@@dpkg\nii \t\tbash\t5.2.15-2+b2\nhi \t\tvim\t2:9.0\nrc \t\tgone\t1.0\n\
                    ii \t\tcurl\t7.88\n@@dpkg-log\n\
                    2024-01-31 12:34:56 install bash:amd64 <none> 5.2.15-2+b2\n\
                    2024-02-01 00:00:00 upgrade bash:amd64 5.2.15-2+b2 5.2.15-2+b3\n\
                    2023-12-01 10:00:00 install vim:amd64 <none> 2:9.0\n\
                    garbage line\n";
        let p = parse(text).expect("parses");
        assert_eq!(p.count, 3);
        let names: Vec<&str> = p.recent.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["bash", "vim"]);
        assert_eq!(p.recent[0].installed_at, Some(1_706_745_600));
    }

    /// The issue's rows: 5 installed, whatever the selection.
    #[test]
    fn dpkg_states_documented() {
        let p = parse(include_str!(
            "../../../tests/fixtures/dpkg-states/packages.documented.txt"
        ))
        .expect("parses");
        assert_eq!(p.count, 5);
        let mut names: Vec<&str> = p.recent.iter().map(|x| x.name.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            ["base-files", "libc6", "nginx", "vim", "vim-runtime"]
        );
    }

    /// The same kind, with trigger states.
    #[test]
    fn dpkg_counts_by_status_letter() {
        let text = "@@dpkg\nii \t1\tbase-files\t12.4+deb12u5\nii \t2\tlibc6\t2.36-9+deb12u4\n\
                    hi \t3\tnginx\t1.22.1-9\nri \t4\tvim\t2:9.0.1378-2\npi \t5\tvim-runtime\t2:9.0.1378-2\n\
                    rc \t6\tapache2\t2.4.57-2\nin \t\tsquid\t\nic \t7\tsquid-common\t5.7-2\n\
                    un \t\told-tool\t\niU \t8\thalf\t1\nit \t9\ttrig\t1\n";
        let p = parse(text).expect("parses");
        assert_eq!(p.count, 6);
        let names: Vec<&str> = p.recent.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(
            names,
            ["trig", "vim-runtime", "vim", "nginx", "libc6", "base-files"]
        );
        assert_eq!(p.recent[2].version, "2:9.0.1378-2");
    }

    #[test]
    fn rhel9_documented() {
        let p = parse(include_str!(
            "../../../tests/fixtures/rhel9/packages.documented.txt"
        ))
        .expect("parses");
        assert_eq!(p.manager, "rpm");
        assert_eq!(p.count, 12);
        assert_eq!(p.recent.len(), 12);
        assert_eq!(p.recent[0].name, "gpg-pubkey");
        assert_eq!(p.recent[0].installed_at, Some(1_714_000_500));
        assert_eq!(p.recent[1].name, "kernel-core");
        assert_eq!(p.recent[1].version, "5.14.0-427.13.1.el9_4");
        // Epochs as `rpm -q --qf '%{EPOCH}:…'` shows them (RHEL 9's own).
        let version = |n: &str| {
            p.recent
                .iter()
                .find(|x| x.name == n)
                .map(|x| x.version.as_str())
        };
        assert_eq!(version("openssl-libs"), Some("1:3.0.7-27.el9"));
        assert_eq!(version("shadow-utils"), Some("2:4.9-8.el9"));
    }

    #[test]
    fn alpine_documented() {
        let p = parse(include_str!(
            "../../../tests/fixtures/alpine/packages.documented.txt"
        ))
        .expect("parses");
        assert_eq!(p.manager, "apk");
        assert_eq!(p.count, 8);
        assert!(p.recent.is_empty());
    }

    #[test]
    fn arch_documented() {
        let p = parse(include_str!(
            "../../../tests/fixtures/arch/packages.documented.txt"
        ))
        .expect("parses");
        assert_eq!(p.manager, "pacman");
        assert_eq!(p.count, 6);
        assert_eq!(p.recent.len(), 5);
        assert_eq!(p.recent[0].name, "linux");
        assert_eq!(p.recent[0].version, "6.10.10.arch1-1");
        assert_eq!(p.recent[0].installed_at, Some(1_726_500_000));
        // Same time: by name.
        assert_eq!(p.recent[1].name, "glibc");
        assert_eq!(p.recent[2].name, "pacman");
    }

    #[test]
    fn freebsd14_documented() {
        let p = parse(include_str!(
            "../../../tests/fixtures/freebsd14/packages.documented.txt"
        ))
        .expect("parses");
        assert_eq!(p.manager, "pkg");
        assert_eq!(p.count, 8);
        // pkg's epoch is the `,N` suffix.
        assert_eq!(p.recent[0].name, "jpeg-turbo");
        assert_eq!(p.recent[0].version, "3.0.3,1");
        assert_eq!(p.recent[1].name, "sudo");
        assert_eq!(p.recent[1].version, "1.9.15p5_4");
    }

    /// Every installed package, sorted, each (name, version) once: dpkg's
    /// co-installed architectures collapse, rpm's kernels do not.
    #[test]
    fn the_whole_installed_list() {
        let p = parse(include_str!(
            "../../../tests/fixtures/debian12/packages.txt"
        ))
        .expect("parses");
        let installed = p.installed.expect("listed");
        assert_eq!(installed.len() as u64, DEBIAN12_COUNT);
        assert!(installed.windows(2).all(|w| w[0] < w[1]));
        for r in &p.recent {
            assert!(
                installed
                    .iter()
                    .any(|i| i.name == r.name && i.version == r.version),
                "{r:?}"
            );
        }
        let text = "@@dpkg\nii \t1\tlibc6\t2.36-9\nii \t1\tlibc6\t2.36-9\nrc \t2\tgone\t1\n\
                    @@rpm\n1\tkernel-core\t5.14.0-2\n2\tkernel-core\t5.14.0-1\n3\tkernel-core\t5.14.0-3\n";
        let p = parse(text).expect("parses");
        assert_eq!((p.manager.as_str(), p.count), ("rpm", 3));
        let versions: Vec<&str> = p
            .installed
            .as_ref()
            .expect("listed")
            .iter()
            .map(|i| i.version.as_str())
            .collect();
        assert_eq!(versions, ["5.14.0-1", "5.14.0-2", "5.14.0-3"]);
        let dpkg = parse("@@dpkg\nii \t1\tlibc6\t2.36-9\nii \t1\tlibc6\t2.36-9\n").expect("parses");
        assert_eq!(dpkg.count, 2, "dpkg counts both architectures");
        assert_eq!(dpkg.installed.map(|l| l.len()), Some(1));
        let apk =
            parse("@@apk\nP:musl\nV:1.2.4-r2\nP:busybox\nV:1.36.1-r5\nP:nover\n").expect("parses");
        assert_eq!(apk.count, 3);
        let listed: Vec<(String, String)> = apk
            .installed
            .expect("listed")
            .into_iter()
            .map(Into::into)
            .collect();
        assert_eq!(
            listed,
            [
                ("busybox".into(), "1.36.1-r5".into()),
                ("musl".into(), "1.2.4-r2".into()),
                ("nover".into(), String::new())
            ]
        );
    }

    #[test]
    fn installed_lists_are_bounded() {
        let mut text = String::from("@@rpm\n");
        for i in 0..=Packages::MAX_INSTALLED {
            text.push_str(&format!("1\tp{i}\t1\n"));
        }
        let p = parse(&text).expect("parses");
        assert_eq!(p.count as usize, Packages::MAX_INSTALLED + 1);
        assert!(p.installed.is_none(), "over the bound: the count only");
    }

    #[test]
    fn most_packages_wins() {
        let text = "@@rpm\n@@dpkg\nii \t100\ta\t1\nii \t200\tb\t2\n@@apk\nP:x\nV:1\n";
        let p = parse(text).expect("parses");
        assert_eq!(p.manager, "dpkg");
        assert_eq!(p.count, 2);
        assert_eq!(p.recent[0].name, "b");
        let empty = parse("@@rpm\n").expect("parses");
        assert_eq!((empty.manager.as_str(), empty.count), ("rpm", 0));
        assert!(parse("").is_err());
        assert!(parse("@@other\nx\n").is_err());
    }
}
