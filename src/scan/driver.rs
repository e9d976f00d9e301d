//! Runs a group of steps on one channel: one remote shell, under one
//! remote time limit, runs each step's script in turn as a shell function,
//! framed by marker lines that carry a per-scan nonce; `Demux` splits the
//! stream back into steps.
//!
//! One channel per group means one remote login shell per group (a user's
//! shell start-up files can cost far more than the commands), and steps
//! as functions mean no process per step beyond its own commands. A step
//! that floods past the cap or outlives its local deadline gets its
//! channel closed; the steps after it continue on a fresh channel.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

use super::Step;
use crate::ssh::{Chunk, Session, SshError};

/// Bytes of stderr kept per step (for error messages).
const STDERR_CAP: usize = 16 * 1024;
/// A partial line longer than this without a newline is taken as output.
const MAX_PENDING_LINE: usize = 64 * 1024;
/// Extra local time past the remote limit, for the kill to reach us.
pub const LOCAL_GRACE: Duration = Duration::from_secs(2);

/// What one step's run produced.
#[derive(Debug, Clone, Default)]
pub struct StepOutput {
    /// Up to the cap.
    pub stdout: Vec<u8>,
    /// Up to a small cap.
    pub stderr: Vec<u8>,
    pub exit_status: Option<u32>,
    /// Stdout bytes dropped past the cap.
    pub discarded: u64,
    /// The local deadline passed before the step ended.
    pub timed_out: bool,
}

/// The remote command line for a channel whose steps may take `limit` in
/// all: a POSIX shell with a C locale and the sbin directories on PATH,
/// which becomes `timeout -s KILL <limit>` over one `/bin/sh -s` (or that
/// shell alone where the host has no `timeout`). The shell reads the
/// driver script from stdin, so the login shell's syntax (csh, fish) never
/// matters. Only constants and the configured limit go into it. The
/// leading `exec` matters: dash does not exec the last command of `-c`.
///
/// `timeout` (without `--foreground`) kills its whole process group, so
/// nothing a step started outlives the channel's limit. On the host this
/// is one process (the login shell, exec'd into `sh`, then into `timeout`)
/// and the shell it runs: every step runs in that shell.
pub fn command_line(limit: Duration) -> String {
    let secs = limit.as_secs().max(1);
    format!(
        "exec /bin/sh -c 'LC_ALL=C LANG=C \
         PATH=\"$PATH:/usr/sbin:/sbin:/usr/local/bin:/usr/local/sbin\"; \
         export LC_ALL LANG PATH; \
         if command -v timeout >/dev/null 2>&1; then exec timeout -s KILL {secs} /bin/sh -s; fi; \
         exec /bin/sh -s'"
    )
}

/// The remote limit of a channel running `steps` steps: each step's
/// command timeout in turn, at most the scan's timeout. Locally each step
/// still has its own deadline; a step past it gets its channel closed.
pub fn channel_limit(limits: &super::Limits, steps: usize) -> Duration {
    let all = limits
        .command_timeout
        .saturating_mul(u32::try_from(steps.max(1)).unwrap_or(u32::MAX));
    all.min(limits.scan_timeout.max(limits.command_timeout))
}

fn marker(nonce: &str) -> String {
    format!("@@@HS-{nonce}")
}

/// The driver for `steps`, read by the channel's shell from stdin. Each
/// step is a shell function defined just before it runs, so it runs in the
/// channel's one shell with no process of its own beyond its commands:
/// its variables are unset first (as in a fresh shell), its `exit`s are
/// `return`s, its stdin is `/dev/null`, and begin/end markers frame its
/// output on stdout (begin also on stderr). A function the host's shell
/// cannot parse ends that shell: that step fails and the rest go on a
/// fresh channel (if it is the first, every step fails alike, as when no
/// shell runs at all). Only constants and our own nonce go into it.
pub fn script(steps: &[&Step], nonce: &str) -> String {
    let m = marker(nonce);
    let mut out = String::new();
    for step in steps {
        let name = step.name;
        out.push_str(&as_function(step));
        out.push_str(&format!(
            "echo '{m} begin {name}'; echo '{m} begin {name}' >&2\n\
             hs_{name} </dev/null\n\
             printf '\\n{m} end {name} %s\\n' \"$?\"\n"
        ));
    }
    out
}

/// `step` as the shell function `hs_<name>` that the driver runs: its
/// variables unset first (as in a fresh shell), then the definition, its
/// `exit`s turned into `return`s. Public so that benchmarks can run the
/// same steps in one plain shell, without the driver's markers.
pub fn as_function(step: &Step) -> String {
    let mut out = String::new();
    let vars = assigned_variables(step.script);
    if !vars.is_empty() {
        out.push_str(&format!("unset {}\n", vars.join(" ")));
    }
    out.push_str(&format!(
        "hs_{}() {{\n{}\n}}\n",
        step.name,
        exits_to_returns(step.script.trim_end())
    ));
    out
}

/// `exit` commands of a constant step script turned into `return`s, for
/// running it as a function. `exit` as a word inside quotes or other words
/// (`echo "exit=$rc"`) stays.
fn exits_to_returns(script: &str) -> String {
    let bytes = script.as_bytes();
    let mut out = String::with_capacity(script.len());
    let mut i = 0;
    while let Some(found) = script.get(i..).and_then(|rest| rest.find("exit")) {
        let at = i + found;
        let before = at.checked_sub(1).and_then(|b| bytes.get(b)).copied();
        let after = bytes.get(at + 4).copied();
        let starts = before.is_none_or(|c| b" \t\n;{&|(".contains(&c));
        let ends = after.is_none_or(|c| b" \t\n;}".contains(&c));
        out.push_str(script.get(i..at).unwrap_or_default());
        out.push_str(if starts && ends { "return" } else { "exit" });
        i = at + 4;
    }
    out.push_str(script.get(i..).unwrap_or_default());
    out
}

/// The shell variables a constant step script assigns (`name=`, `for name
/// in`), PATH aside, sorted: the driver unsets them before the step runs.
fn assigned_variables(script: &str) -> Vec<&str> {
    let is_name = |w: &str| {
        let mut chars = w.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    const KEYWORDS: [&str; 8] = ["if", "then", "else", "elif", "do", "while", "until", "time"];
    let mut vars: Vec<&str> = Vec::new();
    // Assignments are the words before a command's name.
    for command in script.split(|c: char| "\n;&|({!`".contains(c)) {
        let mut words = command.split_whitespace();
        while let Some(word) = words.next() {
            if KEYWORDS.contains(&word) {
                continue;
            }
            if word == "for" {
                if let Some(name) = words.next().filter(|n| is_name(n)) {
                    vars.push(name);
                }
                break;
            }
            match word.split_once('=') {
                Some((name, _)) if is_name(name) => vars.push(name),
                _ => break,
            }
        }
    }
    vars.retain(|v| *v != "PATH");
    vars.sort_unstable();
    vars.dedup();
    vars
}

/// What the stdout stream said.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Begin(usize),
    End(usize, Option<u32>),
}

/// Splits a driver's stdout and stderr into per-step outputs.
struct Demux<'a> {
    marker: String,
    names: Vec<&'a str>,
    cap: usize,
    pending: Vec<u8>,
    pending_err: Vec<u8>,
    /// The step whose output is arriving on stdout, and on stderr.
    current: Option<usize>,
    current_err: Option<usize>,
    outputs: Vec<StepOutput>,
}

impl<'a> Demux<'a> {
    fn new(marker: String, names: Vec<&'a str>, cap: usize) -> Self {
        let outputs = vec![StepOutput::default(); names.len()];
        Self {
            marker,
            names,
            cap,
            pending: Vec::new(),
            pending_err: Vec::new(),
            current: None,
            current_err: None,
            outputs,
        }
    }

    fn parse_marker(&self, line: &[u8]) -> Option<Event> {
        let line = std::str::from_utf8(line).ok()?;
        let rest = line.strip_prefix(self.marker.as_str())?.strip_prefix(' ')?;
        let mut words = rest.split(' ');
        let kind = words.next()?;
        let name = words.next()?;
        let index = self.names.iter().position(|n| *n == name)?;
        match kind {
            "begin" => Some(Event::Begin(index)),
            "end" => Some(Event::End(
                index,
                words.next().and_then(|c| c.trim().parse().ok()),
            )),
            _ => None,
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        let Some(out) = self.current.and_then(|i| self.outputs.get_mut(i)) else {
            return; // Output outside any step: login shell noise.
        };
        let room = self.cap.saturating_sub(out.stdout.len());
        let keep = room.min(bytes.len());
        out.stdout
            .extend_from_slice(bytes.get(..keep).unwrap_or_default());
        out.discarded += (bytes.len() - keep) as u64;
    }

    /// Feeds stdout; returns the markers seen, in order.
    fn stdout(&mut self, data: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        self.pending.extend_from_slice(data);
        while let Some(nl) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=nl).collect();
            let body = line.get(..line.len() - 1).unwrap_or_default();
            match self.parse_marker(body) {
                Some(Event::Begin(i)) => {
                    self.current = Some(i);
                    events.push(Event::Begin(i));
                }
                Some(Event::End(i, status)) => {
                    if let Some(out) = self.outputs.get_mut(i) {
                        // Drop the newline the driver prints before the marker.
                        if out.stdout.last() == Some(&b'\n') && out.discarded == 0 {
                            out.stdout.pop();
                        }
                        out.exit_status = status;
                    }
                    self.current = None;
                    events.push(Event::End(i, status));
                }
                None => self.append(&line),
            }
        }
        if self.pending.len() > MAX_PENDING_LINE {
            let chunk = std::mem::take(&mut self.pending);
            self.append(&chunk);
        }
        events
    }

    fn stderr(&mut self, data: &[u8]) {
        self.pending_err.extend_from_slice(data);
        while let Some(nl) = self.pending_err.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending_err.drain(..=nl).collect();
            let body = line.get(..line.len() - 1).unwrap_or_default();
            if let Some(Event::Begin(i)) = self.parse_marker(body) {
                self.current_err = Some(i);
            } else if let Some(out) = self.current_err.and_then(|i| self.outputs.get_mut(i)) {
                let room = STDERR_CAP.saturating_sub(out.stderr.len());
                out.stderr
                    .extend_from_slice(line.get(..room.min(line.len())).unwrap_or_default());
            }
        }
        if self.pending_err.len() > STDERR_CAP {
            self.pending_err.clear();
        }
    }

    fn capped(&self, i: usize) -> bool {
        self.outputs.get(i).is_some_and(|o| o.discarded > 0)
    }

    fn take(&mut self, i: usize) -> StepOutput {
        self.outputs
            .get_mut(i)
            .map(std::mem::take)
            .unwrap_or_default()
    }
}

/// A step's end, reported by `run_group` with the step's index in the plan.
pub type Done = (usize, Result<StepOutput, SshError>);

/// Runs `steps` (plan index, step) in order on one channel at a time,
/// reporting each start through `started` and each end through `done`.
pub async fn run_group(
    session: &Session,
    steps: &[(usize, &Step)],
    nonce: &str,
    limits: &super::Limits,
    scan_deadline: Instant,
    started: &(dyn Fn(&'static str) + Sync),
    done: mpsc::UnboundedSender<Done>,
) {
    let mut next = 0;
    while next < steps.len() {
        let batch = &steps[next..];
        let plan: Vec<&Step> = batch.iter().map(|(_, s)| *s).collect();
        let driver = script(&plan, nonce);
        let command = command_line(channel_limit(limits, plan.len()));
        let step_time = limits.command_timeout + LOCAL_GRACE;
        let mut exec = match session.start(&command, driver.into_bytes()).await {
            Ok(exec) => exec,
            Err(e) => {
                for (i, _) in batch {
                    done.send((*i, Err(e.clone()))).ok();
                }
                return;
            }
        };
        let mut demux = Demux::new(
            marker(nonce),
            plan.iter().map(|s| s.name).collect(),
            limits.max_output_bytes,
        );
        // Until the first step begins, the login shell's start-up counts
        // against the first step.
        let mut deadline = (Instant::now() + step_time).min(scan_deadline);
        let mut current: Option<usize> = None;
        let mut exit: Option<u32> = None;
        // Index in `batch` of the first step not yet reported.
        let mut first_open = 0;
        let outcome: Result<(), SshError> = loop {
            let chunk = match timeout_at(deadline, exec.next()).await {
                Err(_) => {
                    exec.close().await;
                    let k = current.unwrap_or(first_open);
                    let mut out = demux.take(k);
                    out.timed_out = true;
                    report(&done, batch, k, Ok(out));
                    first_open = k + 1;
                    break Ok(());
                }
                Ok(Err(e)) => break Err(e),
                Ok(Ok(chunk)) => chunk,
            };
            match chunk {
                Chunk::Stdout(data) => {
                    for event in demux.stdout(&data) {
                        match event {
                            Event::Begin(k) => {
                                current = Some(k);
                                deadline = (Instant::now() + step_time).min(scan_deadline);
                                started(plan[k].name);
                            }
                            Event::End(k, _) => {
                                current = None;
                                report(&done, batch, k, Ok(demux.take(k)));
                                first_open = k + 1;
                            }
                        }
                    }
                    if let Some(k) = current.filter(|k| demux.capped(*k)) {
                        exec.close().await;
                        report(&done, batch, k, Ok(demux.take(k)));
                        first_open = k + 1;
                        break Ok(());
                    }
                }
                Chunk::Stderr(data) => demux.stderr(&data),
                Chunk::Exit(code) => exit = Some(code),
                Chunk::Signal(_) => exit = Some(137),
                Chunk::Closed => {
                    if first_open < batch.len() {
                        // The driver died mid-step (or before running any).
                        let k = current.unwrap_or(first_open);
                        let mut out = demux.take(k);
                        out.exit_status = out.exit_status.or(exit);
                        if current.is_none() && k == 0 && next == 0 && out.stdout.is_empty() {
                            // The shell never ran a step: the same for all.
                            for j in 0..batch.len() {
                                report(&done, batch, j, Ok(out.clone()));
                            }
                            return;
                        }
                        report(&done, batch, k, Ok(out));
                        first_open = k + 1;
                    }
                    break Ok(());
                }
            }
        };
        if let Err(e) = outcome {
            for k in first_open..batch.len() {
                report(&done, batch, k, Err(e.clone()));
            }
            return;
        }
        next += first_open;
    }
}

fn report(
    done: &mpsc::UnboundedSender<Done>,
    batch: &[(usize, &Step)],
    k: usize,
    out: Result<StepOutput, SshError>,
) {
    if let Some((index, _)) = batch.get(k) {
        done.send((*index, out)).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_become_returns_and_nothing_else_changes() {
        let script =
            "a=$(x) && { echo @@a; exit 0; }\nexit 127\necho \"exit=$rc\"\nexit\nexitcode=1";
        assert_eq!(
            exits_to_returns(script),
            "a=$(x) && { echo @@a; return 0; }\nreturn 127\necho \"exit=$rc\"\nreturn\nexitcode=1"
        );
        for step in &super::super::STEPS {
            let body = exits_to_returns(step.script);
            assert!(
                !body.lines().any(|l| l.trim_start().starts_with("exit ")),
                "{}",
                step.name
            );
        }
    }

    #[test]
    fn assigned_variables_are_found() {
        let vars = assigned_variables(
            "PATH=x; export PATH\nfound=\nif out=$(ps -o a=b) && [ -n \"$out\" ]; then\n  for k in a b; do :; done\nfi\nawk '{ n = 1 }' --sort=-rss",
        );
        assert_eq!(vars, ["found", "k", "out"]);
    }

    #[test]
    fn demux_splits_steps_across_chunk_boundaries() {
        let m = marker("n1");
        let mut d = Demux::new(m.clone(), vec!["a", "b"], 1024);
        let stream = format!(
            "motd noise\n{m} begin a\nline 1\nline 2\n\n{m} end a 0\n{m} begin b\npartial\n{m} end b 3\n"
        );
        let mut events = Vec::new();
        for chunk in stream.as_bytes().chunks(7) {
            events.extend(d.stdout(chunk));
        }
        assert_eq!(
            events,
            vec![
                Event::Begin(0),
                Event::End(0, Some(0)),
                Event::Begin(1),
                Event::End(1, Some(3))
            ]
        );
        let a = d.take(0);
        assert_eq!(String::from_utf8_lossy(&a.stdout), "line 1\nline 2\n");
        assert_eq!(a.exit_status, Some(0));
        let b = d.take(1);
        assert_eq!(String::from_utf8_lossy(&b.stdout), "partial");
        assert_eq!(b.exit_status, Some(3));
    }

    #[test]
    fn demux_caps_and_ignores_forged_markers() {
        let m = marker("n1");
        let mut d = Demux::new(m.clone(), vec!["a"], 10);
        d.stdout(format!("{m} begin a\n0123456789abcdef\n@@@HS-other end a 0\n").as_bytes());
        assert!(d.capped(0));
        let a = d.take(0);
        assert_eq!(a.stdout, b"0123456789");
        assert!(a.discarded > 0);
        // A line with no newline past the limit is output, not a marker.
        let mut d = Demux::new(m.clone(), vec!["a"], 1 << 20);
        d.stdout(format!("{m} begin a\n").as_bytes());
        d.stdout(&vec![b'x'; MAX_PENDING_LINE + 1]);
        assert_eq!(d.take(0).stdout.len(), MAX_PENDING_LINE + 1);
    }

    #[test]
    fn demux_routes_stderr_by_marker() {
        let m = marker("n");
        let mut d = Demux::new(m.clone(), vec!["a", "b"], 1024);
        d.stderr(format!("bashrc noise\n{m} begin a\n{m} begin b\nb: oops\n").as_bytes());
        assert!(d.take(0).stderr.is_empty());
        assert_eq!(d.take(1).stderr, b"b: oops\n");
    }
}
