//! `disks` step: POSIX `df -Pk`, with types from the mount table.

use std::collections::HashMap;

use super::{
    ParseError, lines, named_sections, parse_i64, tokens_with_pos, truncate_chars, used_percent,
};
use crate::model::facts::Disk;

/// Prints `@@df` with `df -Pk` (kept even when df exits non-zero, as GNU df
/// does when one mount is unreadable), then `@@mounts` with `/proc/mounts`,
/// else `mount -p` (FreeBSD), else `mount`. Exits 127 when df printed
/// nothing.
pub const SCRIPT: &str = r#"PATH="${PATH:-/usr/bin:/bin}:/usr/sbin:/sbin:/usr/local/sbin"; export PATH
command -v df >/dev/null 2>&1 || exit 127
out=$(df -Pk 2>/dev/null </dev/null | head -n 5000)
[ -n "$out" ] || exit 127
echo @@df
printf '%s\n' "$out"
if [ -r /proc/mounts ] && m=$(head -n 5000 /proc/mounts 2>/dev/null </dev/null) && [ -n "$m" ]; then
  echo @@mounts
  printf '%s\n' "$m"
elif m=$(mount -p 2>/dev/null </dev/null) && [ -n "$m" ]; then
  echo @@mounts
  printf '%s\n' "$m" | head -n 5000
elif m=$(mount 2>/dev/null </dev/null) && [ -n "$m" ]; then
  echo @@mounts
  printf '%s\n' "$m" | head -n 5000
fi
exit 0
"#;

const MAX_DISKS: usize = 2000;
const MAX_TEXT: usize = 4096;

/// File system types that are not disks a user would count.
const PSEUDO_TYPES: &[&str] = &[
    "tmpfs",
    "devtmpfs",
    "devfs",
    "proc",
    "procfs",
    "sysfs",
    "cgroup",
    "cgroup2",
    "squashfs",
    "fdescfs",
    "linprocfs",
    "linsysfs",
    "efivarfs",
    "ramfs",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "mqueue",
    "hugetlbfs",
    "autofs",
    "fusectl",
    "configfs",
    "nsfs",
];

/// Device names that mark pseudo file systems when there is no mount table.
const PSEUDO_DEVICES: &[&str] = &[
    "tmpfs", "devtmpfs", "udev", "none", "shm", "devfs", "proc", "sysfs",
];

/// Disks from `df -Pk`, in df order, one per mount point (the last row wins
/// when a mount point is listed twice, as busybox df does for over-mounts).
pub fn parse(stdout: &str) -> Result<Vec<Disk>, ParseError> {
    let mut df: Option<&str> = None;
    let mut mounts: Option<&str> = None;
    for (name, body) in named_sections(stdout) {
        match name {
            "df" if df.is_none() => df = Some(body),
            "mounts" if mounts.is_none() => mounts = Some(body),
            _ => {}
        }
    }
    let Some(df) = df else {
        return Err(ParseError::new("no df output"));
    };
    let types = mounts.map(mount_types).unwrap_or_default();

    let mut block = 1024u64;
    let mut rows: Vec<Disk> = Vec::new();
    let mut pending_fs: Option<String> = None;
    let mut seen_any = false;
    for line in lines(df) {
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with("Filesystem") {
            block = header_block_size(line).unwrap_or(1024);
            continue;
        }
        let Some(mut row) = parse_row(line, block) else {
            // A long device name alone on its line, numbers on the next.
            let t = line.trim();
            pending_fs = (!t.is_empty() && !t.contains(char::is_whitespace))
                .then(|| truncate_chars(t, MAX_TEXT));
            continue;
        };
        seen_any = true;
        if row.filesystem.is_empty() {
            row.filesystem = pending_fs.take().unwrap_or_default();
        }
        pending_fs = None;
        row.fs_type = types.get(row.mount.as_str()).cloned().unwrap_or_default();
        if is_pseudo(&row) || row.total_bytes == 0 {
            continue;
        }
        if let Some(pos) = rows.iter().position(|d| d.mount == row.mount) {
            if let Some(slot) = rows.get_mut(pos) {
                *slot = row;
            }
        } else if rows.len() < MAX_DISKS {
            rows.push(row);
        }
    }
    if !seen_any {
        return Err(ParseError::new("no df rows"));
    }
    Ok(rows)
}

fn is_pseudo(d: &Disk) -> bool {
    if d.fs_type.is_empty() {
        PSEUDO_DEVICES.contains(&d.filesystem.as_str())
    } else {
        PSEUDO_TYPES.contains(&d.fs_type.as_str())
    }
}

/// Block size from a df header: `1024-blocks`, `1K-blocks`, `512-blocks`,
/// `1M-blocks`... None when the header names none.
fn header_block_size(header: &str) -> Option<u64> {
    header.split_whitespace().find_map(|tok| {
        let num = tok
            .strip_suffix("-blocks")
            .or_else(|| tok.strip_suffix("-Blocks"))?;
        let (digits, mult) = match num.as_bytes().last()? {
            b'k' | b'K' => (num.get(..num.len() - 1)?, 1024u64),
            b'm' | b'M' => (num.get(..num.len() - 1)?, 1024 * 1024),
            b'g' | b'G' => (num.get(..num.len() - 1)?, 1024 * 1024 * 1024),
            _ => (num, 1),
        };
        let n: u64 = super::parse_u64(digits)?;
        n.checked_mul(mult).filter(|v| *v > 0)
    })
}

/// One df row: the leftmost capacity token (`NN%` or `-`) that follows three
/// numbers. The file system is everything before the numbers; the mount point
/// is the rest of the line after the capacity, verbatim.
fn parse_row(line: &str, block: u64) -> Option<Disk> {
    let toks = tokens_with_pos(line);
    for i in 3..toks.len() {
        let (_, cap) = toks.get(i)?;
        if !is_capacity(cap) {
            continue;
        }
        let (fs_start, total) = toks.get(i - 3)?;
        let nums = [total, &toks.get(i - 2)?.1, &toks.get(i - 1)?.1];
        let vals: Option<Vec<u64>> = nums.iter().map(|t| df_number(t)).collect();
        let Some(vals) = vals else { continue };
        let &(mount_start, _) = toks.get(i + 1)?;
        let mount = line.get(mount_start..)?;
        let filesystem = line.get(..*fs_start)?.trim();
        let scale = |v: u64| v.saturating_mul(block);
        let (total, used, avail) = (
            scale(*vals.first()?),
            scale(*vals.get(1)?),
            scale(*vals.get(2)?),
        );
        return Some(Disk {
            filesystem: truncate_chars(filesystem, MAX_TEXT),
            mount: truncate_chars(mount, MAX_TEXT),
            fs_type: String::new(),
            total_bytes: total,
            used_bytes: used,
            available_bytes: avail,
            used_percent: used_percent(used, avail),
        });
    }
    None
}

fn is_capacity(tok: &str) -> bool {
    tok == "-"
        || tok
            .strip_suffix('%')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A df count: digits, `-` (unknown, 0) or negative (BSD "available" when the
/// reserve is in use, clamped to 0).
fn df_number(tok: &str) -> Option<u64> {
    if tok == "-" {
        return Some(0);
    }
    parse_i64(tok).map(|v| u64::try_from(v).unwrap_or(0))
}

/// Mount point -> file system type (last match wins), from `/proc/mounts`,
/// FreeBSD `mount -p`, or `mount` in its BSD or Linux form.
fn mount_types(body: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for line in lines(body) {
        if let Some((mnt, ty)) = mount_line(line) {
            if out.len() >= 20_000 && !out.contains_key(&mnt) {
                continue;
            }
            out.insert(mnt, ty);
        }
    }
    out
}

fn mount_line(line: &str) -> Option<(String, String)> {
    let t = line.trim();
    if t.ends_with(')')
        && let Some((_, rest)) = t.split_once(" on ")
    {
        let open = rest.rfind(" (")?;
        let inner = rest.get(open + 2..rest.len() - 1)?;
        let head = rest.get(..open)?;
        // Linux: `/mnt type ext4 (rw,...)`.
        if let Some(p) = head.rfind(" type ") {
            let mnt = head.get(..p)?;
            let ty = head.get(p + 6..)?.trim();
            return valid(mnt, ty);
        }
        // BSD/macOS: `/mnt (ufs, local, ...)`.
        let ty = inner.split(',').next()?.trim();
        return valid(head, ty);
    }
    // /proc/mounts or FreeBSD `mount -p`: device mount type opts ...
    let mut f = t.split_whitespace();
    let _dev = f.next()?;
    let mnt = f.next()?;
    let ty = f.next()?;
    valid(&unescape_octal(mnt), ty)
}

fn valid(mnt: &str, ty: &str) -> Option<(String, String)> {
    if mnt.is_empty() || ty.is_empty() || ty.contains(char::is_whitespace) {
        return None;
    }
    Some((truncate_chars(mnt, MAX_TEXT), truncate_chars(ty, 64)))
}

/// Decodes `\040`-style octal escapes used in `/proc/mounts` and fstab.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b.get(i).copied().unwrap_or(0);
        if c == b'\\' {
            let oct = b
                .get(i + 1..i + 4)
                .filter(|d| d.iter().all(|x| (b'0'..=b'7').contains(x)));
            if let Some(d) = oct {
                let v = d.iter().fold(0u32, |acc, x| acc * 8 + u32::from(x - b'0'));
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(d: &'a [Disk], mount: &str) -> &'a Disk {
        d.iter().find(|x| x.mount == mount).expect("mount present")
    }

    #[test]
    fn debian12_real() {
        let d = parse(include_str!("../../../tests/fixtures/debian12/disks.txt")).expect("parses");
        let root = find(&d, "/");
        assert_eq!(root.filesystem, "/dev/vda");
        assert_eq!(root.fs_type, "ext4");
        assert_eq!(root.total_bytes, 264_212_084 * 1024);
        // tmpfs / devtmpfs are dropped.
        assert!(
            d.iter()
                .all(|x| x.fs_type != "tmpfs" && x.fs_type != "devtmpfs")
        );
    }

    #[test]
    fn busybox_on_debian12_real() {
        let d = parse(include_str!(
            "../../../tests/fixtures/busybox-on-debian12/disks.txt"
        ))
        .expect("parses");
        let root = find(&d, "/");
        assert_eq!(root.fs_type, "ext4");
        assert_eq!(root.total_bytes, 264_212_084 * 1024);
        assert_eq!(d.iter().filter(|x| x.mount == "/").count(), 1);
    }

    #[test]
    fn rhel9_documented() {
        let d = parse(include_str!(
            "../../../tests/fixtures/rhel9/disks.documented.txt"
        ))
        .expect("parses");
        assert_eq!(d.len(), 3);
        let root = find(&d, "/");
        assert_eq!(root.filesystem, "/dev/mapper/rhel-root");
        assert_eq!(root.fs_type, "xfs");
        assert_eq!(root.used_bytes, 5_123_456 * 1024);
        assert_eq!(root.used_percent, used_percent(5_123_456, 12_656_444));
        assert_eq!(find(&d, "/boot/efi").fs_type, "vfat");
        let spaced = find(&d, "/mnt/my disk");
        assert_eq!(spaced.fs_type, "ext4");
        assert_eq!(spaced.filesystem, "/dev/sdb1");
    }

    #[test]
    fn alpine_documented() {
        let d = parse(include_str!(
            "../../../tests/fixtures/alpine/disks.documented.txt"
        ))
        .expect("parses");
        assert_eq!(d.len(), 2);
        let root = find(&d, "/");
        assert_eq!(root.fs_type, "overlay");
        assert_eq!(root.available_bytes, 40_000_000 * 1024);
    }

    #[test]
    fn freebsd14_documented() {
        let d = parse(include_str!(
            "../../../tests/fixtures/freebsd14/disks.documented.txt"
        ))
        .expect("parses");
        let root = find(&d, "/");
        assert_eq!(root.filesystem, "zroot/ROOT/default");
        assert_eq!(root.fs_type, "zfs");
        assert_eq!(root.total_bytes, 100_614_160 * 1024);
        assert!(d.iter().all(|x| x.mount != "/dev" && x.fs_type != "devfs"));
        assert_eq!(find(&d, "/home").fs_type, "zfs");
    }

    #[test]
    fn arch_documented() {
        let d = parse(include_str!(
            "../../../tests/fixtures/arch/disks.documented.txt"
        ))
        .expect("parses");
        let mounts: Vec<&str> = d.iter().map(|x| x.mount.as_str()).collect();
        assert_eq!(mounts, ["/", "/home", "/boot"]);
        let root = find(&d, "/");
        assert_eq!(root.fs_type, "btrfs");
        assert_eq!(root.total_bytes, 487_861_252 * 1024);
        assert_eq!(find(&d, "/boot").fs_type, "vfat");
    }

    #[test]
    fn macos_like_512_blocks_and_mount_output() {
        let text = "@@df\nFilesystem   512-blocks     Used Available Capacity  Mounted on\n\
                    /dev/disk3s1s1  1000  250  750    25%    /\n\
                    devfs  400  400  0   100%    /dev\n\
                    map auto_home  0  0  0   100%    /System/Volumes/Data/home\n\
                    /dev/disk4s1  2000  1000  1000    50%    /Volumes/USB Stick\n\
                    @@mounts\n\
                    /dev/disk3s1s1 on / (apfs, sealed, local, read-only, journaled)\n\
                    devfs on /dev (devfs, local, nobrowse)\n\
                    map auto_home on /System/Volumes/Data/home (autofs, automounted, nobrowse)\n\
                    /dev/disk4s1 on /Volumes/USB Stick (msdos, local, nodev, nosuid, noowners)\n";
        let d = parse(text).expect("parses");
        assert_eq!(d.len(), 2);
        let root = find(&d, "/");
        assert_eq!(root.fs_type, "apfs");
        assert_eq!(root.total_bytes, 1000 * 512);
        assert_eq!(root.used_bytes, 250 * 512);
        assert_eq!(root.used_percent, 25.0);
        let usb = find(&d, "/Volumes/USB Stick");
        assert_eq!(usb.fs_type, "msdos");
        assert_eq!(usb.filesystem, "/dev/disk4s1");
    }

    #[test]
    fn mount_forms() {
        assert_eq!(
            mount_line("/dev/ada0p2 on / (ufs, local, journaled soft-updates)"),
            Some(("/".into(), "ufs".into()))
        );
        assert_eq!(
            mount_line("/dev/sda1 on /mnt/a b type ext4 (rw,relatime)"),
            Some(("/mnt/a b".into(), "ext4".into()))
        );
        assert_eq!(
            mount_line("zroot/ROOT/default\t/\tzfs\trw\t0 0"),
            Some(("/".into(), "zfs".into()))
        );
        assert_eq!(
            mount_line("/dev/sdb1 /mnt/my\\040disk ext4 rw 0 0"),
            Some(("/mnt/my disk".into(), "ext4".into()))
        );
        assert_eq!(mount_line("x on )"), None);
    }

    #[test]
    fn rows() {
        let text = "@@df\r\nFilesystem 1024-blocks Used Available Capacity Mounted on\r\n\
                    my fs 100 -5 -2 100% /a b 50%\r\n\
                    /dev/verylongname\r\n    10 5 5 50% /wrapped\r\n\
                    garbage\r\n";
        let d = parse(text).expect("parses");
        assert_eq!(d.len(), 2);
        let first = find(&d, "/a b 50%");
        assert_eq!(first.filesystem, "my fs");
        assert_eq!(first.used_bytes, 0);
        assert_eq!(first.used_percent, 0.0);
        assert_eq!(find(&d, "/wrapped").filesystem, "/dev/verylongname");
        assert!(parse("@@df\nFilesystem\n").is_err());
        assert!(parse("").is_err());
    }
}
