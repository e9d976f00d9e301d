//! The scan engine: a plan of steps run over one SSH session.
//!
//! A scan type is a list of `Step`s (name, weight, constant script, parser).
//! `run` connects once, runs the steps as concurrent channels, turns each
//! step's output into facts or a step error, and reports progress as it goes.
//! It owns no storage and no API: the worker and `probe` call it. Nothing
//! from a request ever reaches a command line: scripts are constants, the
//! only number in the wrapper comes from configuration.

mod driver;
pub mod parse;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::model::facts::StepError;
use crate::model::{ScanError, ScanErrorKind, ScanResults, ScanType};
use crate::ssh::{ConnectOptions, Session, SshError, Target};
use driver::StepOutput;
use parse::ParseError;

/// One unit of work on the host.
pub struct Step {
    pub name: &'static str,
    /// Share of the progress bar.
    pub weight: u32,
    /// Fed to `/bin/sh -s` on the host.
    pub script: &'static str,
    pub full_only: bool,
    /// Steps of one group run in turn on one channel (one remote shell);
    /// groups run at once. A quick scan is one group; a full scan adds the
    /// package database's slow steps as a second.
    pub group: u8,
    /// Runs after the other steps of its group: `df` is what hangs on a
    /// stale NFS mount, and then nothing waits behind it.
    pub runs_last: bool,
    apply: fn(&str, &mut ScanResults) -> Result<(), ParseError>,
}

/// Every step, in the order results are presented.
pub static STEPS: [Step; 14] = [
    Step {
        name: "os",
        weight: 5,
        script: parse::os::SCRIPT,
        full_only: false,
        group: 0,
        runs_last: false,
        apply: |out, r| {
            r.os = Some(parse::os::parse(out)?);
            Ok(())
        },
    },
    Step {
        name: "hostname",
        weight: 3,
        script: parse::hostname::SCRIPT,
        full_only: false,
        group: 0,
        runs_last: false,
        apply: |out, r| {
            r.hostname = parse::hostname::parse(out)?;
            Ok(())
        },
    },
    Step {
        name: "uptime",
        weight: 3,
        script: parse::uptime::SCRIPT,
        full_only: false,
        group: 0,
        runs_last: false,
        apply: |out, r| {
            r.uptime_seconds = Some(parse::uptime::parse(out)?);
            Ok(())
        },
    },
    Step {
        name: "cpu",
        weight: 4,
        script: parse::cpu::SCRIPT,
        full_only: false,
        group: 0,
        runs_last: false,
        apply: |out, r| {
            r.cpu = Some(parse::cpu::parse(out)?);
            Ok(())
        },
    },
    Step {
        name: "virtualization",
        weight: 3,
        script: parse::virtualization::SCRIPT,
        full_only: false,
        group: 0,
        runs_last: false,
        apply: |out, r| {
            r.virtualization = Some(parse::virtualization::parse(out)?);
            Ok(())
        },
    },
    Step {
        name: "timezone",
        weight: 2,
        script: parse::timezone::SCRIPT,
        full_only: false,
        group: 0,
        runs_last: false,
        apply: |out, r| {
            r.timezone = Some(parse::timezone::parse(out)?);
            Ok(())
        },
    },
    Step {
        name: "disks",
        weight: 10,
        script: parse::disks::SCRIPT,
        full_only: false,
        group: 0,
        runs_last: true,
        apply: |out, r| {
            r.disks = parse::disks::parse(out)?;
            Ok(())
        },
    },
    Step {
        name: "memory",
        weight: 5,
        script: parse::memory::SCRIPT,
        full_only: false,
        group: 0,
        runs_last: false,
        apply: |out, r| {
            r.memory = Some(parse::memory::parse(out)?);
            Ok(())
        },
    },
    Step {
        name: "packages",
        weight: 20,
        script: parse::packages::SCRIPT,
        full_only: true,
        group: 1,
        runs_last: false,
        apply: |out, r| {
            r.packages = Some(parse::packages::parse(out)?);
            Ok(())
        },
    },
    // With the packages: it reads the package database and the installed
    // kernels, and EL's `needs-restarting` can take seconds.
    Step {
        name: "reboot_required",
        weight: 5,
        script: parse::reboot::SCRIPT,
        full_only: true,
        group: 1,
        runs_last: false,
        apply: |out, r| {
            r.reboot_required = Some(parse::reboot::parse(out)?);
            Ok(())
        },
    },
    Step {
        name: "processes",
        weight: 12,
        script: parse::processes::SCRIPT,
        full_only: true,
        group: 0,
        runs_last: false,
        apply: |out, r| {
            r.processes = parse::processes::parse(out)?;
            Ok(())
        },
    },
    Step {
        name: "network",
        weight: 8,
        script: parse::network::SCRIPT,
        full_only: true,
        group: 0,
        runs_last: false,
        apply: |out, r| {
            r.network_interfaces = parse::network::parse(out)?;
            Ok(())
        },
    },
    Step {
        name: "routing",
        weight: 4,
        script: parse::routing::SCRIPT,
        full_only: true,
        group: 0,
        runs_last: false,
        apply: |out, r| {
            (r.default_routes, r.dns) = parse::routing::parse(out)?;
            Ok(())
        },
    },
    Step {
        name: "listening_sockets",
        weight: 6,
        script: parse::listening::SCRIPT,
        full_only: true,
        group: 0,
        runs_last: false,
        apply: |out, r| {
            r.listening_sockets = parse::listening::parse(out)?;
            Ok(())
        },
    },
];

/// The weight of connecting and logging in, as the first pseudo-step.
pub const CONNECT_WEIGHT: u32 = 10;
pub const CONNECT_STEP: &str = "connect";

/// The steps of a scan type.
pub fn plan(scan_type: ScanType) -> impl Iterator<Item = &'static Step> {
    STEPS
        .iter()
        .filter(move |s| scan_type == ScanType::Full || !s.full_only)
}

pub use driver::as_function;

/// The plan's steps in channels: (plan index, step), one `Vec` per group
/// in the order the group's channel runs them (`runs_last` steps last).
fn groups<'a>(steps: &[&'a Step]) -> Vec<Vec<(usize, &'a Step)>> {
    let mut groups: Vec<Vec<(usize, &Step)>> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        match groups
            .iter_mut()
            .find(|g| g.first().is_some_and(|(_, s)| s.group == step.group))
        {
            Some(g) => g.push((i, step)),
            None => groups.push(vec![(i, step)]),
        }
    }
    for g in &mut groups {
        g.sort_by_key(|(_, s)| s.runs_last);
    }
    groups
}

/// The plan as one driver script and the remote command line that runs
/// it, for running the same work with the OpenSSH client in benchmarks
/// (`ssh host "$command_line" < script`): every step on one channel, in
/// the order hostscan's channels run them.
pub fn combined_script(scan_type: ScanType, command_timeout: Duration) -> (String, String) {
    let steps: Vec<&Step> = groups(&plan(scan_type).collect::<Vec<_>>())
        .into_iter()
        .flatten()
        .map(|(_, s)| s)
        .collect();
    let limits = Limits {
        command_timeout,
        ..Limits::default()
    };
    (
        driver::command_line(driver::channel_limit(&limits, steps.len())),
        driver::script(&steps, &nonce()),
    )
}

/// Time and size limits of one scan.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Per command, enforced on the host (`timeout`, where present) and locally.
    pub command_timeout: Duration,
    /// The whole scan, connection included.
    pub scan_timeout: Duration,
    /// Bytes of stdout kept per command; the rest is read and discarded.
    pub max_output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            command_timeout: Duration::from_secs(30),
            scan_timeout: Duration::from_secs(300),
            max_output_bytes: 4 * 1024 * 1024,
        }
    }
}

/// A progress report. `percent` never decreases within a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub step: &'static str,
    pub state: StepState,
    pub percent: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    Started,
    Finished,
    Failed,
}

/// What a scan produced: facts (possibly partial) and, if the scan as a
/// whole could not run or was stopped, why.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub results: ScanResults,
    pub error: Option<ScanError>,
}

/// Runs one scan of `target`. Progress goes to `progress` (a closed
/// receiver is ignored); `cancel` stops the scan within the current await.
pub async fn run(
    target: &Target,
    scan_type: ScanType,
    opts: &ConnectOptions,
    limits: &Limits,
    progress: &mpsc::UnboundedSender<Progress>,
    cancel: &CancellationToken,
) -> Outcome {
    let start = Instant::now();
    let scan_deadline = start + limits.scan_timeout;
    let steps: Vec<&Step> = plan(scan_type).collect();
    let total = CONNECT_WEIGHT + steps.iter().map(|s| s.weight).sum::<u32>();
    // Weight of the steps done so far; shared with the step futures, which
    // report their start with the percent of the moment.
    let done_weight = AtomicU32::new(0);
    let report = |step, state| {
        let done = done_weight.load(Ordering::Relaxed);
        let percent = i32::try_from(done * 100 / total.max(1)).unwrap_or(100);
        progress
            .send(Progress {
                step,
                state,
                percent,
            })
            .ok();
    };

    let mut outcome = Outcome::default();
    report(CONNECT_STEP, StepState::Started);
    let session = tokio::select! {
        biased;
        _ = cancel.cancelled() => {
            outcome.error = Some(cancelled());
            return outcome;
        }
        s = Session::connect(target, opts) => s,
    };
    let session = match session {
        Ok(s) => s,
        Err(e) => {
            report(CONNECT_STEP, StepState::Failed);
            outcome.error = Some(ScanError {
                kind: e.kind(),
                message: e.to_string(),
            });
            return outcome;
        }
    };
    done_weight.fetch_add(CONNECT_WEIGHT, Ordering::Relaxed);
    report(CONNECT_STEP, StepState::Finished);
    tracing::debug!(target = %target, elapsed_ms = start.elapsed().as_millis() as u64, "connected");

    let groups = groups(&steps);
    let nonce = nonce();
    let started = |name: &'static str| report(name, StepState::Started);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<driver::Done>();
    let mut finished = vec![false; steps.len()];
    let mut running: FuturesUnordered<_> = groups
        .iter()
        .map(|group| {
            let done = done_tx.clone();
            driver::run_group(
                &session,
                group,
                &nonce,
                limits,
                scan_deadline,
                &started,
                done,
            )
        })
        .collect();
    drop(done_tx);

    let mut stopped: Option<ScanError> = None;
    let mut deadline_hit = false;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                stopped = Some(cancelled());
                break;
            }
            _ = tokio::time::sleep_until(scan_deadline) => {
                deadline_hit = true;
                break;
            }
            Some(()) = running.next() => {}
            next = done_rx.recv() => {
                let Some((i, out)) = next else { break };
                let step = steps[i];
                finished[i] = true;
                done_weight.fetch_add(step.weight, Ordering::Relaxed);
                match finish_step(step, out, limits, &mut outcome.results) {
                    Ok(()) => report(step.name, StepState::Finished),
                    Err(StepFailure::Step(message)) => {
                        tracing::info!(target = %target, step = step.name, %message, "step failed");
                        outcome.results.step_errors.push(StepError { step: step.name.into(), message });
                        report(step.name, StepState::Failed);
                    }
                    Err(StepFailure::Lost(e)) => {
                        outcome.results.step_errors.push(StepError { step: step.name.into(), message: e.to_string() });
                        stopped = Some(ScanError { kind: e.kind(), message: e.to_string() });
                        break;
                    }
                }
            }
        }
    }
    drop(running);

    for (step, _) in steps.iter().zip(&finished).filter(|(_, f)| !**f) {
        let message = if deadline_hit {
            format!(
                "not finished within the scan timeout ({}s)",
                limits.scan_timeout.as_secs()
            )
        } else if stopped
            .as_ref()
            .is_some_and(|e| e.kind == ScanErrorKind::Cancelled)
        {
            continue;
        } else {
            "not run: the connection was lost".into()
        };
        outcome.results.step_errors.push(StepError {
            step: step.name.into(),
            message,
        });
    }
    sort_step_errors(&mut outcome.results.step_errors);
    outcome.error = stopped;
    tokio::time::timeout(Duration::from_secs(1), session.close())
        .await
        .ok();
    tracing::debug!(target = %target, elapsed_ms = start.elapsed().as_millis() as u64, "scan finished");
    outcome
}

/// A per-scan random marker, so command output cannot end a step by accident.
fn nonce() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    let fallback = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        bytes = fallback.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn cancelled() -> ScanError {
    ScanError {
        kind: ScanErrorKind::Cancelled,
        message: "cancelled".into(),
    }
}

/// Step errors in plan order, whatever order the steps finished in.
fn sort_step_errors(errors: &mut [StepError]) {
    let rank = |name: &str| {
        STEPS
            .iter()
            .position(|s| s.name == name)
            .unwrap_or(usize::MAX)
    };
    errors.sort_by_key(|e| rank(&e.step));
}

enum StepFailure {
    /// The step failed; the scan goes on.
    Step(String),
    /// The connection is gone; the scan cannot go on.
    Lost(SshError),
}

/// Exit codes of `timeout` (124) and of a process killed by SIGKILL (137).
const TIMEOUT_EXITS: [u32; 2] = [124, 137];
/// The shell's "command not found".
const NOT_FOUND_EXIT: u32 = 127;

fn finish_step(
    step: &Step,
    out: Result<StepOutput, SshError>,
    limits: &Limits,
    results: &mut ScanResults,
) -> Result<(), StepFailure> {
    let out = match out {
        Ok(out) => out,
        Err(e @ SshError::ConnectionLost { .. }) => return Err(StepFailure::Lost(e)),
        Err(e) => return Err(StepFailure::Step(e.to_string())),
    };
    if out.discarded > 0 {
        return Err(StepFailure::Step(format!(
            "output exceeded the {} byte cap ({} more bytes dropped)",
            limits.max_output_bytes, out.discarded
        )));
    }
    // The remote `timeout -s KILL` exits 124, or 137 when it passes the
    // KILL on (GNU timeout does).
    if out.timed_out || out.exit_status.is_some_and(|c| TIMEOUT_EXITS.contains(&c)) {
        let secs = limits.command_timeout.as_secs().max(1);
        return Err(StepFailure::Step(format!("timed out after {secs}s")));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let parsed = (step.apply)(&stdout, results);
    match (parsed, out.exit_status) {
        (Ok(()), _) => Ok(()),
        (Err(e), Some(0)) => Err(StepFailure::Step(format!("unparsable output: {e}"))),
        (Err(e), status) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let first = stderr.lines().map(str::trim).find(|l| !l.is_empty());
            let why = match (status, first) {
                (Some(NOT_FOUND_EXIT), Some(line)) => format!("command not found ({line})"),
                (Some(NOT_FOUND_EXIT), None) => e.to_string(),
                (Some(code), Some(line)) => format!("exit status {code}: {line}"),
                (Some(code), None) => format!("exit status {code}: {e}"),
                (None, _) => format!("the remote shell ended early: {e}"),
            };
            Err(StepFailure::Step(why))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        let quick: Vec<_> = plan(ScanType::Quick).map(|s| s.name).collect();
        assert_eq!(
            quick,
            [
                "os",
                "hostname",
                "uptime",
                "cpu",
                "virtualization",
                "timezone",
                "disks",
                "memory",
            ]
        );
        // A quick scan is one channel; df runs last on it, so a hanging df
        // delays no other step.
        let quick_steps: Vec<&Step> = plan(ScanType::Quick).collect();
        let quick_groups = groups(&quick_steps);
        assert_eq!(quick_groups.len(), 1);
        assert_eq!(quick_groups[0].last().map(|(_, s)| s.name), Some("disks"));
        // A full scan: the same channel plus the package database's.
        let full_steps: Vec<&Step> = plan(ScanType::Full).collect();
        let full_groups = groups(&full_steps);
        assert_eq!(full_groups.len(), 2);
        assert_eq!(full_groups[0].last().map(|(_, s)| s.name), Some("disks"));
        assert_eq!(plan(ScanType::Full).count(), STEPS.len());
        let total: u32 = CONNECT_WEIGHT + plan(ScanType::Full).map(|s| s.weight).sum::<u32>();
        assert_eq!(total, 100);
    }

    #[test]
    fn driver_is_constants_the_nonce_and_the_limit() {
        let steps: Vec<&Step> = plan(ScanType::Quick).collect();
        let script = driver::script(&steps, "abc");
        assert_eq!(script.matches("@@@HS-abc begin").count(), 2 * steps.len());
        assert_eq!(script.matches("@@@HS-abc end").count(), steps.len());
        assert!(!script.contains("timeout"));
        let limits = Limits {
            command_timeout: Duration::from_secs(7),
            scan_timeout: Duration::from_secs(30),
            ..Limits::default()
        };
        let line = driver::command_line(driver::channel_limit(&limits, steps.len()));
        // 8 steps of 7 s, capped by the scan's 30 s.
        assert!(
            line.contains("exec timeout -s KILL 30 /bin/sh -s"),
            "{line}"
        );
        assert_eq!(line.matches('\'').count(), 2);
        let one = driver::command_line(driver::channel_limit(&limits, 2));
        assert!(one.contains("timeout -s KILL 14 "), "{one}");
    }

    /// The driver runs every step in one shell: run a full plan's driver
    /// with the local shells (dash, bash, busybox) the way a channel does,
    /// and check that every step ends, in order, with its facts parsed, and
    /// that no step's variables leak into the next.
    #[test]
    fn driver_runs_every_step_in_one_local_shell() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let steps: Vec<&Step> = groups(&plan(ScanType::Full).collect::<Vec<_>>())
            .into_iter()
            .flatten()
            .map(|(_, s)| s)
            .collect();
        // A variable a step reads before it assigns it, set by the one before.
        let driver = driver::script(&steps, "n0");
        let unset_before_processes = driver
            .lines()
            .take_while(|l| !l.starts_with("hs_processes()"))
            .last()
            .unwrap_or_default();
        assert!(
            unset_before_processes.starts_with("unset ")
                && unset_before_processes.split(' ').any(|v| v == "top"),
            "{unset_before_processes}"
        );
        let script = format!("top=leaked\n{driver}");
        let shells: &[&[&str]] = &[
            &["/bin/sh", "-s"],
            &["bash", "--posix", "-s"],
            &["busybox", "sh", "-s"],
        ];
        let mut ran = 0;
        for shell in shells {
            let Ok(mut child) = Command::new(shell[0])
                .args(&shell[1..])
                .env("LC_ALL", "C")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
            else {
                continue;
            };
            ran += 1;
            child
                .stdin
                .take()
                .map(|mut i| i.write_all(script.as_bytes()));
            let out = child.wait_with_output().expect("shell ran");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let ends: Vec<&str> = stdout
                .lines()
                .filter_map(|l| l.strip_prefix("@@@HS-n0 end "))
                .collect();
            assert_eq!(ends.len(), steps.len(), "{shell:?}: {stdout}");
            for (end, step) in ends.iter().zip(&steps) {
                assert!(end.starts_with(step.name), "{shell:?}: {end}");
            }
            assert!(!stdout.contains("leaked"), "{shell:?}: a variable leaked");
        }
        assert!(ran >= 1, "no local shell ran");
    }

    #[test]
    fn step_failures_say_why() {
        let limits = Limits::default();
        let mut results = ScanResults::default();
        let step = &STEPS[1];
        let missing = StepOutput {
            exit_status: Some(127),
            stderr: b"sh: 1: uname: not found\n".to_vec(),
            ..Default::default()
        };
        match finish_step(step, Ok(missing), &limits, &mut results) {
            Err(StepFailure::Step(m)) => {
                assert_eq!(m, "command not found (sh: 1: uname: not found)")
            }
            _ => panic!("expected a step failure"),
        }
        let capped = StepOutput {
            exit_status: Some(0),
            discarded: 10,
            ..Default::default()
        };
        match finish_step(step, Ok(capped), &limits, &mut results) {
            Err(StepFailure::Step(m)) => assert!(m.contains("byte cap"), "{m}"),
            _ => panic!("expected a step failure"),
        }
        let ok = StepOutput {
            exit_status: Some(0),
            stdout: b"@@uname\nweb-1\n".to_vec(),
            ..Default::default()
        };
        assert!(finish_step(step, Ok(ok), &limits, &mut results).is_ok());
        assert_eq!(results.hostname, "web-1");
    }
}
