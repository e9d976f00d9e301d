//! `memory` step: `/proc/meminfo`, else `free -k`, else FreeBSD sysctl +
//! `swapinfo -k`.

use std::collections::HashMap;

use super::{ParseError, kib, lines, named_sections, parse_u64, used_percent};
use crate::model::facts::Memory;

/// Prints `@@meminfo`, else `@@free`, else `@@sysctl` (plus `@@swapinfo`
/// when it answers); exits 127 when none is available.
pub const SCRIPT: &str = r#"PATH="${PATH:-/usr/bin:/bin}:/usr/sbin:/sbin:/usr/local/sbin"; export PATH
if [ -r /proc/meminfo ] && out=$(head -n 200 /proc/meminfo 2>/dev/null </dev/null) && [ -n "$out" ]; then
  echo @@meminfo
  printf '%s\n' "$out"
  exit 0
fi
if command -v free >/dev/null 2>&1 && out=$(free -k 2>/dev/null </dev/null) && [ -n "$out" ]; then
  echo @@free
  printf '%s\n' "$out" | head -n 20
  exit 0
fi
if command -v sysctl >/dev/null 2>&1; then
  out=$(sysctl hw.physmem hw.pagesize vm.stats.vm.v_free_count vm.stats.vm.v_inactive_count vm.stats.vm.v_cache_count 2>/dev/null </dev/null)
  if [ -n "$out" ]; then
    echo @@sysctl
    printf '%s\n' "$out" | head -n 20
    if command -v swapinfo >/dev/null 2>&1 && s=$(swapinfo -k 2>/dev/null </dev/null) && [ -n "$s" ]; then
      echo @@swapinfo
      printf '%s\n' "$s" | head -n 100
    fi
    exit 0
  fi
fi
exit 127
"#;

/// Memory totals in bytes.
pub fn parse(stdout: &str) -> Result<Memory, ParseError> {
    let secs = named_sections(stdout);
    let get = |n: &str| secs.iter().find(|(name, _)| *name == n).map(|(_, b)| *b);
    if let Some(body) = get("meminfo")
        && let Some(m) = meminfo(body)
    {
        return Ok(m);
    }
    if let Some(body) = get("free")
        && let Some(m) = free(body)
    {
        return Ok(m);
    }
    if let Some(body) = get("sysctl")
        && let Some(m) = sysctl(body, get("swapinfo"))
    {
        return Ok(m);
    }
    if secs.is_empty() {
        Err(ParseError::new(
            "no memory information (looked for /proc/meminfo, free, sysctl)",
        ))
    } else {
        Err(ParseError::new(
            "memory output lacks a total (MemTotal, free's Mem: row, or hw.physmem + hw.pagesize + v_free_count)",
        ))
    }
}

fn build(total: u64, available: u64, swap_total: u64, swap_free: u64) -> Memory {
    let available = available.min(total);
    let used = total.saturating_sub(available);
    Memory {
        total_bytes: total,
        used_bytes: used,
        available_bytes: available,
        used_percent: used_percent(used, available),
        swap_total_bytes: swap_total,
        swap_used_bytes: swap_total.saturating_sub(swap_free),
    }
}

/// `Key:   123 kB` lines.
fn meminfo(body: &str) -> Option<Memory> {
    let mut kv: HashMap<&str, u64> = HashMap::new();
    for line in lines(body) {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let Some(n) = v.split_whitespace().next().and_then(parse_u64) else {
            continue;
        };
        let k = k.trim();
        if kv.len() < 500 || kv.contains_key(k) {
            kv.entry(k).or_insert(n);
        }
    }
    let total = *kv.get("MemTotal")?;
    let g = |k: &str| kv.get(k).copied().unwrap_or(0);
    let available = match kv.get("MemAvailable") {
        Some(a) => *a,
        None => g("MemFree")
            .saturating_add(g("Buffers"))
            .saturating_add(g("Cached"))
            .saturating_add(g("SReclaimable")),
    };
    Some(build(
        kib(total),
        kib(available),
        kib(g("SwapTotal")),
        kib(g("SwapFree")),
    ))
}

/// procps (`total used free shared buff/cache available`, or the older
/// `buffers cached`) and busybox (with or without `available`) `free -k`.
fn free(body: &str) -> Option<Memory> {
    let mut header: Vec<&str> = Vec::new();
    let mut mem: Option<HashMap<&str, u64>> = None;
    let mut swap: Option<(u64, u64)> = None;
    for line in lines(body) {
        let toks: Vec<&str> = line.split_whitespace().collect();
        match toks.first() {
            Some(&"total") => header = toks,
            Some(&"Mem:") if mem.is_none() => {
                let vals: HashMap<&str, u64> = header
                    .iter()
                    .zip(toks.iter().skip(1))
                    .filter_map(|(h, v)| Some((*h, parse_u64(v)?)))
                    .collect();
                mem = Some(vals);
            }
            Some(&"Swap:") if swap.is_none() => {
                let total = toks.get(1).and_then(|v| parse_u64(v)).unwrap_or(0);
                let used = toks.get(2).and_then(|v| parse_u64(v)).unwrap_or(0);
                swap = Some((total, used));
            }
            _ => {}
        }
    }
    let mem = mem?;
    let total = *mem.get("total")?;
    let g = |k: &str| mem.get(k).copied().unwrap_or(0);
    let available = match mem.get("available") {
        Some(a) => *a,
        None if mem.contains_key("buff/cache") => g("free").saturating_add(g("buff/cache")),
        None => g("free")
            .saturating_add(g("buffers"))
            .saturating_add(g("cached")),
    };
    let (swap_total, swap_used) = swap.unwrap_or((0, 0));
    Some(build(
        kib(total),
        kib(available),
        kib(swap_total),
        kib(swap_total.saturating_sub(swap_used)),
    ))
}

/// FreeBSD `sysctl name...` (`name: value` lines; `name=value` tolerated).
fn sysctl(body: &str, swapinfo: Option<&str>) -> Option<Memory> {
    let mut kv: HashMap<&str, u64> = HashMap::new();
    for line in lines(body) {
        let Some((k, v)) = line.split_once(':').or_else(|| line.split_once('=')) else {
            continue;
        };
        if let Some(n) = v.split_whitespace().next().and_then(parse_u64) {
            kv.insert(k.trim(), n);
        }
        if kv.len() > 100 {
            break;
        }
    }
    let total = *kv.get("hw.physmem")?;
    let page = *kv.get("hw.pagesize")?;
    let free = *kv.get("vm.stats.vm.v_free_count")?;
    let g = |k: &str| kv.get(k).copied().unwrap_or(0);
    let pages = free
        .saturating_add(g("vm.stats.vm.v_inactive_count"))
        .saturating_add(g("vm.stats.vm.v_cache_count"));
    let (swap_total, swap_used) = swapinfo.map(swapinfo_totals).unwrap_or((0, 0));
    Some(build(
        total,
        pages.saturating_mul(page),
        swap_total,
        swap_total.saturating_sub(swap_used),
    ))
}

/// Sums the device rows of `swapinfo -k` (skipping its `Total` row), bytes.
fn swapinfo_totals(body: &str) -> (u64, u64) {
    let mut block = 1024u64;
    let (mut total, mut used) = (0u64, 0u64);
    for line in lines(body) {
        let toks: Vec<&str> = line.split_whitespace().collect();
        match toks.first() {
            Some(&"Device") => {
                if let Some(b) = toks.get(1).and_then(|h| h.strip_suffix("-blocks")) {
                    block = match b {
                        "1K" | "1k" | "1024" => 1024,
                        "512" => 512,
                        "1M" | "1m" => 1024 * 1024,
                        _ => 1024,
                    };
                }
            }
            Some(&"Total") | None => {}
            Some(_) => {
                let t = toks.get(1).and_then(|v| parse_u64(v));
                let u = toks.get(2).and_then(|v| parse_u64(v));
                if let (Some(t), Some(u)) = (t, u) {
                    total = total.saturating_add(t.saturating_mul(block));
                    used = used.saturating_add(u.saturating_mul(block));
                }
            }
        }
    }
    (total, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian12_real() {
        let m = parse(include_str!("../../../tests/fixtures/debian12/memory.txt")).expect("parses");
        assert_eq!(m.total_bytes, 24_684_092 * 1024);
        assert!(m.available_bytes > 0 && m.available_bytes <= m.total_bytes);
        assert_eq!(m.used_bytes, m.total_bytes - m.available_bytes);
        assert_eq!(m.swap_total_bytes, 0);
    }

    #[test]
    fn busybox_on_debian12_real() {
        // /proc/meminfo exists there too: busybox changes nothing.
        let m = parse(include_str!(
            "../../../tests/fixtures/busybox-on-debian12/memory.txt"
        ))
        .expect("parses");
        assert_eq!(m.total_bytes, 24_684_092 * 1024);
    }

    #[test]
    fn busybox_free_real() {
        // `busybox free -k` on Debian 12 (busybox 1.35), captured.
        let m = parse(include_str!(
            "../../../tests/fixtures/busybox-on-debian12/memory-free.txt"
        ))
        .expect("parses");
        assert_eq!(m.total_bytes, 24_684_092 * 1024);
        assert_eq!(m.available_bytes, 24_014_260 * 1024);
        assert_eq!(m.used_bytes, (24_684_092 - 24_014_260) * 1024);
        assert_eq!(m.swap_total_bytes, 0);
    }

    #[test]
    fn procps_free_real() {
        let text = include_str!("../../../tests/fixtures/debian12/memory-free.txt");
        let m = parse(text).expect("parses");
        assert_eq!(m.total_bytes, 24_684_092 * 1024);
        let avail: u64 = text
            .lines()
            .find(|l| l.starts_with("Mem:"))
            .and_then(|l| l.split_whitespace().nth(6))
            .and_then(|v| v.parse().ok())
            .expect("available column");
        assert_eq!(m.available_bytes, avail * 1024);
    }

    #[test]
    fn rhel9_documented() {
        let m = parse(include_str!(
            "../../../tests/fixtures/rhel9/memory.documented.txt"
        ))
        .expect("parses");
        assert_eq!(m.total_bytes, 7_869_640 * 1024);
        assert_eq!(m.available_bytes, 6_900_000 * 1024);
        assert_eq!(m.swap_total_bytes, 8_388_604 * 1024);
        assert_eq!(m.swap_used_bytes, (8_388_604 - 8_000_000) * 1024);
    }

    #[test]
    fn freebsd14_documented() {
        let m = parse(include_str!(
            "../../../tests/fixtures/freebsd14/memory.documented.txt"
        ))
        .expect("parses");
        assert_eq!(m.total_bytes, 8_542_674_944);
        assert_eq!(m.available_bytes, (1_500_000 + 300_000) * 4096);
        assert_eq!(m.swap_total_bytes, 2_097_152 * 1024 * 2);
        assert_eq!(m.swap_used_bytes, 1024 * 1024);
    }

    #[test]
    fn old_meminfo_and_free_forms() {
        let m = parse(
            "@@meminfo\nMemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 150 kB\n",
        )
        .expect("parses");
        assert_eq!(m.available_bytes, 300 * 1024);
        assert_eq!(m.used_percent, 70.0);
        let old_busybox = "@@free\n             total       used       free     shared    buffers\n\
                           Mem:          1000        900        100          0         50\n\
                           Swap:          200         20        180\n";
        let m = parse(old_busybox).expect("parses");
        assert_eq!(m.available_bytes, 150 * 1024);
        assert_eq!(m.swap_used_bytes, 20 * 1024);
        let old_procps = "@@free\n             total       used       free     shared    buffers     cached\n\
                          Mem:          1000        900        100          0         50        250\n\
                          -/+ buffers/cache:        600        400\n\
                          Swap:            0          0          0\n";
        assert_eq!(
            parse(old_procps).expect("parses").available_bytes,
            400 * 1024
        );
        assert!(parse("@@meminfo\nMemFree: 1 kB\n").is_err());
        assert!(parse("").is_err());
    }
}
