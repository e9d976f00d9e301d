//! `processes` step: the top processes by resident memory.

use std::collections::HashMap;

use super::{
    ParseError, lines, named_sections, parse_f64, parse_u64, round2, tokens_with_pos,
    truncate_chars,
};
use crate::model::facts::Process;

/// Prints, from the first source that works:
/// - `@@ps-gnu` (procps: `pid uid pcpu pmem rss args`, sorted, header + 40 rows);
/// - `@@ps-bsd` (the same columns; sorted on the host by RSS);
/// - `@@proc` (`pid uid rss_kib name` of the 40 largest from `/proc/*/status`,
///   read with `cat`, which goes on past processes that exit meanwhile),
///   `@@proc-stat` (their `/proc/PID/stat`), `@@proc-cmdline` (`pid args`),
///   `@@uptime`, `@@clk-tck`, `@@memtotal`: busybox hosts and hosts without `ps`;
/// - `@@ps-busybox` (`ps -o pid,user,rss,args`) or `@@ps-plain` (a `ps` that
///   takes no options: `PID USER [VSZ STAT|TIME] COMMAND`), plus `@@memtotal`.
///
/// The uid is the effective one everywhere (`ps`'s `uid`, the second id on
/// the `Uid:` line of `/proc/PID/status`), as `ps`'s `USER` column shows.
/// Each ends with `@@passwd`: `name:uid` lines, from `getent passwd` for the
/// uids shown (the accounts NSS knows) or else `/etc/passwd`. Names come from
/// there, never from `ps`'s user column, which procps cuts to 8 characters
/// (`appserv+`) and busybox cuts silently. Exits 127 when nothing worked.
pub const SCRIPT: &str = r#"PATH="${PATH:-/usr/bin:/bin}:/usr/sbin:/sbin:/usr/local/sbin"; export PATH
names() {
  if [ -n "$1" ] && command -v getent >/dev/null 2>&1 &&
    n=$(getent passwd $1 2>/dev/null </dev/null | cut -d: -f1,3) && [ -n "$n" ]; then
    printf '%s\n' "$n"
  elif [ -r /etc/passwd ]; then
    cut -d: -f1,3 /etc/passwd 2>/dev/null </dev/null | head -n 5000
  fi
}
if out=$(ps -ww -eo pid,uid,pcpu,pmem,rss,args --sort=-rss 2>/dev/null </dev/null) && [ -n "$out" ]; then
  echo @@ps-gnu
  top=$(printf '%s\n' "$out" | head -n 41)
elif out=$(ps -axww -o pid,uid,pcpu,pmem,rss,command 2>/dev/null </dev/null) && [ -n "$out" ]; then
  echo @@ps-bsd
  top=$(printf '%s\n' "$out" | head -n 1; printf '%s\n' "$out" | sed 1d | sort -n -r -k 5,5 | head -n 40)
fi
if [ -n "$top" ]; then
  printf '%s\n' "$top"
  echo @@passwd
  names "$(printf '%s\n' "$top" | awk 'NR>1{print $2}' | sort -u)"
  exit 0
fi
if [ -r /proc/self/status ] && top=$(cat /proc/[0-9]*/status 2>/dev/null </dev/null | awk '
    function emit() { if (pid != "" && uid != "") print pid, uid, rss + 0, name }
    /^Name:/ { emit(); name = substr($0, 7); pid = ""; uid = ""; rss = 0 }
    /^Pid:/ { pid = $2 }
    /^Uid:/ { uid = $3 }
    /^VmRSS:/ { rss = $2 }
    END { emit() }
  ' | sort -k3,3nr -k1,1n | head -n 40) && [ -n "$top" ]; then
  echo @@proc
  printf '%s\n' "$top"
  pids=$(printf '%s\n' "$top" | awk '{print $1}')
  echo @@proc-stat
  for p in $pids; do cat "/proc/$p/stat" 2>/dev/null </dev/null; done
  echo @@proc-cmdline
  for p in $pids; do
    printf '%s ' "$p"
    tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | head -c 4096
    echo
  done
  echo @@uptime
  cat /proc/uptime 2>/dev/null </dev/null
  echo @@clk-tck
  getconf CLK_TCK 2>/dev/null </dev/null || echo 100
  echo @@memtotal
  grep '^MemTotal:' /proc/meminfo 2>/dev/null </dev/null
  echo @@passwd
  names "$(printf '%s\n' "$top" | awk '{print $2}' | sort -u)"
  exit 0
fi
if out=$(ps -o pid,user,rss,args 2>/dev/null </dev/null) && [ -n "$out" ]; then
  echo @@ps-busybox
elif out=$(ps 2>/dev/null </dev/null) && [ -n "$out" ]; then
  echo @@ps-plain
else
  exit 127
fi
printf '%s\n' "$out" | head -n 5000
if [ -r /proc/meminfo ] && mt=$(grep '^MemTotal:' /proc/meminfo 2>/dev/null </dev/null); then
  echo @@memtotal
  printf '%s\n' "$mt"
fi
echo @@passwd
names ""
exit 0
"#;

const TOP: usize = 20;
const MAX_COMMAND: usize = 512;
const MAX_USER: usize = 64;
/// busybox prints user names cut to this many characters.
const BUSYBOX_USER_WIDTH: usize = 8;

/// Commands of the script's own `ps`, dropped from the list.
const OWN: &[&str] = &[
    "ps -ww -eo pid,uid,pcpu,pmem,rss,args --sort=-rss",
    "ps -axww -o pid,uid,pcpu,pmem,rss,command",
    "ps -o pid,user,rss,args",
    "ps",
    // The columns before uids were read (fixtures captured then).
    "ps -ww -eo pid,user,pcpu,pmem,rss,args --sort=-rss",
    "ps -axww -o pid,user,pcpu,pmem,rss,command",
    "/bin/sh -s",
    "sh -s",
];
/// A fragment of every step script: the shells running them are ours too.
const OWN_SCRIPT: &str = "PATH=\"${PATH:-/usr/bin:/bin}:/usr/sbin";

/// Top 20 processes by `rss_bytes` descending, ties by pid. Err only when
/// no section with processes is present.
pub fn parse(stdout: &str) -> Result<Vec<Process>, ParseError> {
    let secs = named_sections(stdout);
    let get = |n: &str| secs.iter().find(|(name, _)| *name == n).map(|(_, b)| *b);
    let memtotal_kib = get("memtotal").and_then(|b| {
        lines(b).find_map(|l| {
            l.strip_prefix("MemTotal:")
                .and_then(|v| v.split_whitespace().next())
                .and_then(parse_u64)
        })
    });
    let accounts = Accounts::parse(get("passwd").unwrap_or(""));
    let mut rows: Vec<Row> = if let Some(body) = get("proc") {
        proc_rows(body, &secs, memtotal_kib)
    } else if let Some((kind, body)) = secs
        .iter()
        .find(|(n, _)| matches!(*n, "ps-gnu" | "ps-bsd" | "ps-busybox" | "ps-plain"))
    {
        let mut rows = table_rows(body, memtotal_kib)
            .ok_or_else(|| ParseError::new("no ps header or rows"))?;
        // A user column without uids: busybox cuts names silently, procps with `+`.
        let busybox = matches!(*kind, "ps-busybox" | "ps-plain");
        for r in rows.iter_mut().filter(|r| r.uid.is_none()) {
            r.process.user = match r.user.take() {
                Some(user) if busybox => accounts.busybox_name(&user),
                Some(user) => accounts.checked_name(&user),
                None => String::new(),
            };
        }
        rows
    } else {
        return Err(ParseError::new("no ps or /proc output"));
    };
    for r in &mut rows {
        if let Some(uid) = r.uid {
            r.process.user = accounts.name(uid);
        }
    }
    rows.retain(|r| !own(&r.process.command));
    rows.sort_by(|a, b| {
        b.process
            .rss_bytes
            .cmp(&a.process.rss_bytes)
            .then(b.vsz_kib.total_cmp(&a.vsz_kib))
            .then(a.process.pid.cmp(&b.process.pid))
    });
    rows.truncate(TOP);
    Ok(rows.into_iter().map(|r| r.process).collect())
}

fn own(command: &str) -> bool {
    let c = command.trim_end();
    // The channel's time limit over its shell: `timeout -s KILL <secs> /bin/sh -s`.
    let limit = c
        .strip_prefix("timeout -s KILL ")
        .and_then(|rest| rest.strip_suffix(" /bin/sh -s"))
        .is_some_and(|secs| !secs.is_empty() && secs.bytes().all(|b| b.is_ascii_digit()));
    OWN.contains(&c) || c.contains(OWN_SCRIPT) || limit
}

/// One process as read, before names are resolved.
struct Row {
    process: Process,
    uid: Option<u32>,
    user: Option<String>,
    /// Only for ordering when the host shows no RSS (a plain busybox `ps`).
    vsz_kib: f64,
}

/// uid -> account name, from the `@@passwd` section.
struct Accounts {
    by_uid: HashMap<u32, String>,
    names: Vec<String>,
}

impl Accounts {
    fn parse(body: &str) -> Self {
        let mut by_uid = HashMap::new();
        let mut names = Vec::new();
        for line in lines(body).take(20_000) {
            let Some((name, uid)) = line.trim().split_once(':') else {
                continue;
            };
            let Some(uid) = parse_u64(uid.trim()).and_then(|u| u32::try_from(u).ok()) else {
                continue;
            };
            if name.is_empty() || name.chars().count() > MAX_USER {
                continue;
            }
            by_uid.entry(uid).or_insert_with(|| name.to_string());
            names.push(name.to_string());
        }
        Self { by_uid, names }
    }

    /// The account name of `uid`, else the uid in decimal.
    fn name(&self, uid: u32) -> String {
        self.by_uid
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string())
    }

    /// A user column that may be cut with a trailing `+` (procps).
    fn checked_name(&self, user: &str) -> String {
        match user.strip_suffix('+') {
            Some(prefix) => self.unique_prefix(prefix).unwrap_or_default(),
            None => truncate_chars(user, MAX_USER),
        }
    }

    /// A busybox user column: a name cut silently to 8 characters, or a uid.
    fn busybox_name(&self, user: &str) -> String {
        if let Some(uid) = parse_u64(user).and_then(|u| u32::try_from(u).ok()) {
            return self.name(uid);
        }
        if user.chars().count() < BUSYBOX_USER_WIDTH || self.names.iter().any(|n| n == user) {
            return truncate_chars(user, MAX_USER);
        }
        self.unique_prefix(user).unwrap_or_default()
    }

    /// The one account whose name starts with `prefix`, if exactly one does.
    fn unique_prefix(&self, prefix: &str) -> Option<String> {
        let mut found = self.names.iter().filter(|n| n.starts_with(prefix));
        let first = found.next()?;
        found.all(|n| n == first).then(|| first.clone())
    }
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

#[derive(Default, Clone, Copy)]
struct Columns {
    pid: Option<usize>,
    uid: Option<usize>,
    user: Option<usize>,
    cpu: Option<usize>,
    mem: Option<usize>,
    rss: Option<usize>,
    vsz: Option<usize>,
    command: Option<usize>,
    width: usize,
}

impl Columns {
    /// From a header line such as `PID UID %CPU %MEM RSS COMMAND`,
    /// `PID USER VSZ STAT COMMAND` or busybox's old `PID Uid VmSize Stat Command`.
    fn from_header(toks: &[(usize, &str)]) -> Option<Self> {
        let mut c = Columns {
            width: toks.len(),
            ..Default::default()
        };
        for (i, (_, t)) in toks.iter().enumerate() {
            let slot = match t.to_ascii_uppercase().as_str() {
                "PID" => &mut c.pid,
                "UID" if *t == "UID" => &mut c.uid,
                "USER" | "UID" => &mut c.user,
                "%CPU" => &mut c.cpu,
                "%MEM" => &mut c.mem,
                "RSS" => &mut c.rss,
                "VSZ" | "VMSIZE" => &mut c.vsz,
                "COMMAND" | "CMD" | "ARGS" => &mut c.command,
                _ => continue,
            };
            slot.get_or_insert(i);
        }
        (c.pid == Some(0) && c.command == Some(toks.len() - 1)).then_some(c)
    }
}

/// Rows of a `ps` table, columns found from its header.
fn table_rows(body: &str, memtotal_kib: Option<u64>) -> Option<Vec<Row>> {
    let mut cols: Option<Columns> = None;
    let mut rows = Vec::new();
    for line in lines(body) {
        let toks = tokens_with_pos(line);
        if toks.first().is_some_and(|(_, t)| *t == "PID") {
            cols = Columns::from_header(&toks).or(cols);
            continue;
        }
        let Some(c) = cols else { continue };
        if let Some(row) = table_row(&c, &toks, line, memtotal_kib) {
            rows.push(row);
            if rows.len() >= 100_000 {
                break;
            }
        }
    }
    cols.map(|_| rows)
}

fn table_row(
    c: &Columns,
    toks: &[(usize, &str)],
    line: &str,
    memtotal_kib: Option<u64>,
) -> Option<Row> {
    if toks.len() < c.width {
        return None;
    }
    let tok = |i: Option<usize>| i.and_then(|i| toks.get(i)).map(|(_, t)| *t);
    let pid = pid(tok(c.pid)?)?;
    let uid = match c.uid {
        Some(_) => Some(parse_u64(tok(c.uid)?).and_then(|u| u32::try_from(u).ok())?),
        None => None,
    };
    let rss_kib = match c.rss {
        Some(_) => Some(busybox_kib(tok(c.rss)?)?),
        None => None,
    };
    let vsz_kib = match c.vsz {
        Some(_) => busybox_kib(tok(c.vsz)?)?,
        None => 0.0,
    };
    let cpu = match c.cpu {
        Some(_) => percent(tok(c.cpu)?)?,
        None => 0.0,
    };
    let mem = match (c.mem, rss_kib, memtotal_kib) {
        (Some(_), _, _) => percent(tok(c.mem)?)?,
        (None, Some(rss), Some(total)) if total > 0 => round2(rss / total as f64 * 100.0),
        _ => 0.0,
    };
    Some(Row {
        process: Process {
            pid,
            user: String::new(),
            cpu_percent: cpu,
            mem_percent: mem,
            rss_bytes: kib_f64_to_bytes(rss_kib.unwrap_or(0.0)),
            command: rest(line, toks, c.command?),
        },
        uid,
        user: tok(c.user).map(str::to_string),
        vsz_kib,
    })
}

/// `/proc` sections: `pid uid rss_kib name` rows, their stat lines (CPU
/// time and start time, for the lifetime CPU share `ps` also shows) and
/// their command lines.
fn proc_rows(body: &str, secs: &[(&str, &str)], memtotal_kib: Option<u64>) -> Vec<Row> {
    let get = |n: &str| secs.iter().find(|(name, _)| *name == n).map(|(_, b)| *b);
    let uptime = get("uptime")
        .and_then(|b| b.split_whitespace().next())
        .and_then(parse_f64);
    let hz = get("clk-tck")
        .and_then(|b| b.split_whitespace().next())
        .and_then(parse_u64)
        .filter(|v| *v > 0)
        .unwrap_or(100) as f64;
    let mut cpu: HashMap<i32, f64> = HashMap::new();
    for line in lines(get("proc-stat").unwrap_or("")).take(10_000) {
        // `pid (comm with spaces) S ppid ...`: fields after the last `)`.
        let Some((head, tail)) = line.rsplit_once(')') else {
            continue;
        };
        let Some(p) = head.split_whitespace().next().and_then(pid) else {
            continue;
        };
        let f: Vec<&str> = tail.split_whitespace().collect();
        // tail[0] is field 3 (state): utime 14, stime 15, starttime 22.
        let num = |field: usize| f.get(field - 3).and_then(|t| parse_u64(t));
        let (Some(ut), Some(st), Some(start), Some(up)) = (num(14), num(15), num(22), uptime)
        else {
            continue;
        };
        let elapsed = up - start as f64 / hz;
        if elapsed > 0.0 {
            let share = (ut.saturating_add(st)) as f64 / hz / elapsed * 100.0;
            cpu.insert(p, round2(share.clamp(0.0, 1.0e6)));
        }
    }
    let mut args: HashMap<i32, String> = HashMap::new();
    for line in lines(get("proc-cmdline").unwrap_or("")).take(10_000) {
        let Some((p, a)) = line.split_once(' ') else {
            continue;
        };
        if let Some(p) = pid(p.trim()) {
            let a = a.trim();
            if !a.is_empty() {
                args.insert(p, truncate_chars(a, MAX_COMMAND));
            }
        }
    }
    let mut rows = Vec::new();
    for line in lines(body).take(100_000) {
        let toks = tokens_with_pos(line);
        let (Some(p), Some(uid), Some(rss)) = (
            toks.first().and_then(|(_, t)| pid(t)),
            toks.get(1)
                .and_then(|(_, t)| parse_u64(t))
                .and_then(|u| u32::try_from(u).ok()),
            toks.get(2).and_then(|(_, t)| parse_u64(t)),
        ) else {
            continue;
        };
        let name = rest(line, &toks, 3);
        let command = args.get(&p).cloned().unwrap_or_else(|| format!("[{name}]"));
        let mem = match memtotal_kib {
            Some(total) if total > 0 => round2(rss as f64 / total as f64 * 100.0),
            _ => 0.0,
        };
        rows.push(Row {
            process: Process {
                pid: p,
                user: String::new(),
                cpu_percent: cpu.get(&p).copied().unwrap_or(0.0),
                mem_percent: mem,
                rss_bytes: rss.saturating_mul(1024),
                command,
            },
            uid: Some(uid),
            user: None,
            vsz_kib: 0.0,
        });
    }
    rows
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
    fn own_processes_are_recognised() {
        assert!(own("timeout -s KILL 240 /bin/sh -s"));
        assert!(own("/bin/sh -s"));
        assert!(!own("timeout -s KILL x /bin/sh -s"));
        assert!(!own("timeout -s KILL 240 /bin/sh -s -c evil"));
        assert!(!own("/usr/sbin/sshd -D"));
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
        let p = parse("@@ps-gnu\nPID UID %CPU %MEM RSS COMMAND\n 7 0 nan 1 5 x\n 8 0 1 1 5 é\r\n")
            .expect("parses");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].command, "é");
        assert_eq!(p[0].user, "0");
    }

    /// procps cuts `user` to 8 columns (`appserv+`): names come from uids.
    #[test]
    fn long_user_names_from_uids() {
        let text = "@@ps-gnu\n  PID   UID %CPU %MEM   RSS COMMAND\n\
                    4242  1001  2.0  1.0 90000 /opt/app/bin/server\n\
                    4343  1002  0.5  0.5 40000 /usr/bin/prometheus-node-exporter\n\
                    4444  5000  0.0  0.1  1000 orphan\n\
                    4545     0  0.0  0.1   900 /sbin/init\n\
                    @@passwd\nroot:0\nappserviceuser:1001\nprometheus-exporter:1002\n";
        let p = parse(text).expect("parses");
        let users: Vec<&str> = p.iter().map(|x| x.user.as_str()).collect();
        assert_eq!(
            users,
            ["appserviceuser", "prometheus-exporter", "5000", "root"]
        );
    }

    /// Captures made before uids were read: a cut name resolves when one
    /// account has that prefix, and is never reported cut.
    #[test]
    fn cut_user_column_resolves_or_stays_unknown() {
        let text = "@@ps-gnu\n  PID USER     %CPU %MEM   RSS COMMAND\n\
                    10 appserv+  0.0  0.0 300 a\n11 prometh+  0.0  0.0 200 b\n12 www-data 0.0 0.0 100 c\n\
                    @@passwd\nappserviceuser:1001\nprometheus-exporter:1002\nprometheus:1003\nwww-data:33\n";
        let p = parse(text).expect("parses");
        let users: Vec<&str> = p.iter().map(|x| x.user.as_str()).collect();
        assert_eq!(users, ["appserviceuser", "", "www-data"]);
    }

    /// The issue's example, captured on Debian 11 (procps 3.3.17) with
    /// processes of `appserviceuser` and `prometheus-exporter`: procps shows
    /// `appserv+` and `prometh+`; hostscan shows the accounts.
    #[test]
    fn debian11_real_long_user_names() {
        let cut = include_str!("../../../tests/fixtures/debian11/processes-user-column.txt");
        assert!(cut.contains(" appserv+ ") && cut.contains(" prometh+ "));
        for text in [
            cut,
            include_str!("../../../tests/fixtures/debian11/processes.txt"),
        ] {
            let p = parse(text).expect("parses");
            let user = |needle: &str| {
                p.iter()
                    .find(|x| x.command.contains(needle))
                    .map(|x| x.user.clone())
                    .unwrap_or_else(|| panic!("{needle} in {p:?}"))
            };
            assert_eq!(user("(300 << 20)"), "appserviceuser");
            assert_eq!(user("(280 << 20)"), "prometheus-exporter");
            assert!(p.iter().all(|x| !x.user.ends_with('+')), "{p:?}");
        }
        let p = parse(include_str!(
            "../../../tests/fixtures/debian13/processes.txt"
        ))
        .expect("parses");
        assert_eq!(p[0].user, "appserviceuser");
        assert!(sorted(&p));
    }

    /// Debian's busybox `ps` without options (`PID USER COMMAND`) and with
    /// the columns of builds whose default is `PID USER VSZ STAT COMMAND`.
    #[test]
    fn busybox_on_debian12_real_option_less() {
        let plain = parse(include_str!(
            "../../../tests/fixtures/busybox-on-debian12/processes-plain.txt"
        ))
        .expect("parses");
        assert_eq!(plain.len(), 20);
        let init = plain.iter().find(|x| x.pid == 1).expect("pid 1");
        assert_eq!((init.user.as_str(), init.rss_bytes), ("root", 0));
        let vsz = parse(include_str!(
            "../../../tests/fixtures/busybox-on-debian12/processes-plain-vsz.txt"
        ))
        .expect("parses");
        assert_eq!(vsz.len(), 20);
        assert!(
            vsz.iter()
                .all(|x| x.rss_bytes == 0 && !x.command.is_empty())
        );
        assert!(
            vsz.iter()
                .any(|x| x.user == "rabbitmq" || x.user == "postgres")
        );
    }

    /// A busybox `ps` that takes no options, in its three header shapes.
    #[test]
    fn option_less_busybox_ps() {
        let vsz = "@@ps-plain\nPID   USER     VSZ  STAT COMMAND\n\
                   1 root      1.6m S    /sbin/init\n  812 appservi  120m S    /opt/app/bin/server --port 80\n\
                   900 1234      20m S    x\n  2 root         0 SW   [kthreadd]\n\
                   @@passwd\nroot:0\nappserviceuser:1001\n";
        let p = parse(vsz).expect("parses");
        assert_eq!(p[0].pid, 812);
        assert_eq!(p[0].user, "appserviceuser");
        assert_eq!(p[0].rss_bytes, 0);
        assert_eq!(p[0].command, "/opt/app/bin/server --port 80");
        assert_eq!(p[1].user, "1234");
        assert_eq!(p.len(), 4);
        let time = "@@ps-plain\nPID   USER     TIME  COMMAND\n    1 root      0:01 /sbin/init\n\
                    7 nobody    0:00 sleep 9\n";
        let p = parse(time).expect("parses");
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].user, "nobody");
        let old =
            "@@ps-plain\n  PID  Uid     VmSize Stat Command\n    1 root         404 S   init\n";
        let p = parse(old).expect("parses");
        assert_eq!(
            (p[0].user.as_str(), p[0].command.as_str()),
            ("root", "init")
        );
        let bare = "@@ps-plain\nPID   USER     COMMAND\n    1 root     /sbin/init\n";
        assert_eq!(parse(bare).expect("parses")[0].command, "/sbin/init");
    }

    /// `/proc` read directly: uids, RSS, lifetime CPU share, kernel threads.
    #[test]
    fn proc_directly() {
        let text = "@@proc\n2967 106 126948 beam.smp\n12 0 0 kworker/0:1\n77 5000 2000 my prog\n\
                    @@proc-stat\n2967 (beam.smp) S 1 2966 2966 0 -1 4194304 33858 0 1 0 300 100 0 0 20 0 20 0 100 2289168384 31655\n\
                    77 (my prog) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0\n\
                    @@proc-cmdline\n2967 /usr/lib/erlang/erts-13.1.5/bin/beam.smp -W w \n12 \n77 ./my prog\n\
                    @@uptime\n21.00 10.00\n@@clk-tck\n100\n@@memtotal\nMemTotal: 1269480 kB\n\
                    @@passwd\nrabbitmq:106\n";
        let p = parse(text).expect("parses");
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].user, "rabbitmq");
        assert_eq!(p[0].rss_bytes, 126_948 * 1024);
        assert_eq!(p[0].mem_percent, 10.0);
        // 400 ticks of CPU in 20 s of life.
        assert_eq!(p[0].cpu_percent, 20.0);
        assert_eq!(
            p[0].command,
            "/usr/lib/erlang/erts-13.1.5/bin/beam.smp -W w"
        );
        assert_eq!(
            (p[1].user.as_str(), p[1].command.as_str()),
            ("5000", "./my prog")
        );
        assert_eq!(p[2].command, "[kworker/0:1]");
    }
}
