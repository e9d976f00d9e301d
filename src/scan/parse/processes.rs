//! `processes` step: the top processes by resident memory.

use super::{
    ParseError, lines, named_sections, parse_f64, parse_u64, round2, tokens_with_pos,
    truncate_chars,
};
use crate::model::facts::Process;

/// Prints `@@ps-gnu` (procps, already sorted, header + 40 rows), else
/// `@@ps-bsd` (header + 40 rows sorted on the host by RSS), else
/// `@@ps-busybox` (unsorted, bounded) plus `@@memtotal` (the MemTotal line of
/// /proc/meminfo). Exits 127 when no ps worked.
pub const SCRIPT: &str = r#"PATH="${PATH:-/usr/bin:/bin}:/usr/sbin:/sbin:/usr/local/sbin"; export PATH
if out=$(ps -ww -eo pid,user,pcpu,pmem,rss,args --sort=-rss 2>/dev/null) && [ -n "$out" ]; then
  echo @@ps-gnu
  printf '%s\n' "$out" | head -n 41
  exit 0
fi
if out=$(ps -axww -o pid,user,pcpu,pmem,rss,command 2>/dev/null) && [ -n "$out" ]; then
  echo @@ps-bsd
  printf '%s\n' "$out" | head -n 1
  printf '%s\n' "$out" | sed 1d | sort -n -r -k 5,5 | head -n 40
  exit 0
fi
if out=$(ps -o pid,user,rss,args 2>/dev/null) && [ -n "$out" ]; then
  echo @@ps-busybox
  printf '%s\n' "$out" | head -n 5000
  if [ -r /proc/meminfo ] && mt=$(grep '^MemTotal:' /proc/meminfo 2>/dev/null </dev/null); then
    echo @@memtotal
    printf '%s\n' "$mt"
  fi
  exit 0
fi
exit 127
"#;

const TOP: usize = 20;
const MAX_COMMAND: usize = 512;
const MAX_USER: usize = 64;

/// Commands of the script's own `ps` and `sh`, dropped from the list.
const OWN: &[&str] = &[
    "ps -ww -eo pid,user,pcpu,pmem,rss,args --sort=-rss",
    "ps -axww -o pid,user,pcpu,pmem,rss,command",
    "ps -o pid,user,rss,args",
    "/bin/sh -s",
    "sh -s",
];

/// Top 20 processes by `rss_bytes` descending, ties by pid.
pub fn parse(stdout: &str) -> Result<Vec<Process>, ParseError> {
    let secs = named_sections(stdout);
    let memtotal_kib = secs
        .iter()
        .find(|(n, _)| *n == "memtotal")
        .and_then(|(_, b)| {
            lines(b).find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(parse_u64)
            })
        });
    let Some((kind, body)) = secs
        .iter()
        .find(|(n, _)| matches!(*n, "ps-gnu" | "ps-bsd" | "ps-busybox"))
    else {
        return Err(ParseError::new("no ps output"));
    };
    let busybox = *kind == "ps-busybox";
    let mut procs: Vec<Process> = Vec::new();
    let mut header_seen = false;
    for line in lines(body) {
        let toks = tokens_with_pos(line);
        if toks.first().is_some_and(|(_, t)| *t == "PID") {
            header_seen = true;
            continue;
        }
        let row = if busybox {
            busybox_row(&toks, line, memtotal_kib)
        } else {
            full_row(&toks, line)
        };
        let Some(p) = row else { continue };
        if OWN.contains(&p.command.trim_end()) {
            continue;
        }
        procs.push(p);
        if procs.len() >= 4 * TOP {
            top(&mut procs);
        }
    }
    if procs.is_empty() && !header_seen {
        return Err(ParseError::new("no ps rows"));
    }
    top(&mut procs);
    Ok(procs)
}

fn top(procs: &mut Vec<Process>) {
    procs.sort_by(|a, b| b.rss_bytes.cmp(&a.rss_bytes).then(a.pid.cmp(&b.pid)));
    procs.truncate(TOP);
}

fn pid(tok: &str) -> Option<i32> {
    parse_u64(tok).and_then(|v| i32::try_from(v).ok())
}

fn rest(line: &str, toks: &[(usize, &str)], i: usize) -> String {
    toks.get(i)
        .and_then(|(pos, _)| line.get(*pos..))
        .map(|s| truncate_chars(s.trim_end(), MAX_COMMAND))
        .unwrap_or_default()
}

fn percent(tok: &str) -> Option<f64> {
    parse_f64(tok).map(|v| round2(v.clamp(0.0, 1.0e6)))
}

/// `pid user pcpu pmem rss command...` (procps and BSD ps).
fn full_row(toks: &[(usize, &str)], line: &str) -> Option<Process> {
    let pid = pid(toks.first()?.1)?;
    let user = toks.get(1)?.1;
    let cpu = percent(toks.get(2)?.1)?;
    let mem = percent(toks.get(3)?.1)?;
    let rss = parse_u64(toks.get(4)?.1)?;
    Some(Process {
        pid,
        user: truncate_chars(user, MAX_USER),
        cpu_percent: cpu,
        mem_percent: mem,
        rss_bytes: rss.saturating_mul(1024),
        command: rest(line, toks, 5),
    })
}

/// busybox `pid user rss command...`, rss in KiB or with a k/m/g/t suffix.
fn busybox_row(toks: &[(usize, &str)], line: &str, memtotal_kib: Option<u64>) -> Option<Process> {
    let pid = pid(toks.first()?.1)?;
    let user = toks.get(1)?.1;
    let rss_kib = busybox_kib(toks.get(2)?.1)?;
    let mem = match memtotal_kib {
        Some(total) if total > 0 => round2(rss_kib / total as f64 * 100.0),
        _ => 0.0,
    };
    Some(Process {
        pid,
        user: truncate_chars(user, MAX_USER),
        cpu_percent: 0.0,
        mem_percent: mem,
        rss_bytes: kib_f64_to_bytes(rss_kib),
        command: rest(line, toks, 3),
    })
}

/// `123` (KiB), `9.8m`, `1.2g`, `512k`, `2t` -> KiB.
fn busybox_kib(tok: &str) -> Option<f64> {
    let last = tok.chars().last()?;
    let (num, mult) = match last.to_ascii_lowercase() {
        'k' => (tok.get(..tok.len() - 1)?, 1.0),
        'm' => (tok.get(..tok.len() - 1)?, 1024.0),
        'g' => (tok.get(..tok.len() - 1)?, 1024.0 * 1024.0),
        't' => (tok.get(..tok.len() - 1)?, 1024.0 * 1024.0 * 1024.0),
        _ => (tok, 1.0),
    };
    let v = parse_f64(num)?;
    (v >= 0.0).then_some(v * mult)
}

fn kib_f64_to_bytes(kib: f64) -> u64 {
    let bytes = (kib * 1024.0).round();
    if bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64 {
        bytes as u64
    } else {
        u64::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(p: &[Process]) -> bool {
        p.windows(2).all(|w| {
            w[0].rss_bytes > w[1].rss_bytes
                || (w[0].rss_bytes == w[1].rss_bytes && w[0].pid < w[1].pid)
        })
    }

    #[test]
    fn debian12_real() {
        let p = parse(include_str!(
            "../../../tests/fixtures/debian12/processes.txt"
        ))
        .expect("parses");
        assert_eq!(p.len(), 20);
        assert!(sorted(&p));
        let top = &p[0];
        assert_eq!(top.user, "rabbitmq");
        assert!(
            top.command
                .starts_with("/usr/lib/erlang/erts-13.1.5/bin/beam.smp")
        );
        assert_eq!(top.command.chars().count(), 512);
        assert!(p.iter().all(|x| !x.command.starts_with("ps -ww")));
    }

    #[test]
    fn busybox_on_debian12_real() {
        let p = parse(include_str!(
            "../../../tests/fixtures/busybox-on-debian12/processes.txt"
        ))
        .expect("parses");
        assert_eq!(p.len(), 20);
        assert!(sorted(&p));
        let init = p.iter().find(|x| x.pid == 1).expect("pid 1 in top 20");
        assert_eq!(init.user, "root");
        assert_eq!(init.cpu_percent, 0.0);
        assert!(init.mem_percent > 0.0);
        assert!(init.command.starts_with("/process_api"));
    }

    #[test]
    fn freebsd14_documented() {
        let p = parse(include_str!(
            "../../../tests/fixtures/freebsd14/processes.documented.txt"
        ))
        .expect("parses");
        assert!(sorted(&p));
        assert_eq!(p[0].pid, 812);
        assert_eq!(p[0].user, "mysql");
        assert_eq!(p[0].rss_bytes, 412_340 * 1024);
        assert_eq!(p[0].cpu_percent, 1.5);
        assert_eq!(
            p[0].command,
            "/usr/local/libexec/mysqld --defaults-extra-file=/usr/local/etc/mysql/my.cnf"
        );
    }

    #[test]
    fn busybox_suffixes() {
        let text = "@@ps-busybox\nPID   USER     RSS  COMMAND\n    1 root     9.8m /init with args\n\
                    2 1000 1.5g java\n 3 nobody 512 x\n 4 r 0 [kthreadd]\n 5 root 12k y\n\
                    9 root 100 ps -o pid,user,rss,args\n@@memtotal\nMemTotal: 2097152 kB\n";
        let p = parse(text).expect("parses");
        assert_eq!(p.len(), 5);
        assert_eq!(p[0].pid, 2);
        assert_eq!(p[0].user, "1000");
        assert_eq!(p[0].rss_bytes, 1_610_612_736);
        assert_eq!(p[0].mem_percent, 75.0);
        assert_eq!(p[1].rss_bytes, (9.8f64 * 1024.0 * 1024.0).round() as u64);
        assert_eq!(p[1].command, "/init with args");
        assert_eq!(p[3].rss_bytes, 12 * 1024);
    }

    #[test]
    fn junk() {
        assert!(parse("").is_err());
        assert!(parse("@@ps-gnu\nnot a ps line\n").is_err());
        assert_eq!(
            parse("@@ps-gnu\r\n  PID USER %CPU %MEM RSS COMMAND\r\n")
                .expect("parses")
                .len(),
            0
        );
        let p = parse("@@ps-gnu\n 7 u nan 1 5 x\n 8 u 1 1 5 é\r\n").expect("parses");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].command, "é");
    }
}
