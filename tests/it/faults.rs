//! Hostile and broken hosts: every fault yields a typed scan error or a step
//! error, and whatever facts could be gathered are kept.

use std::time::{Duration, Instant};

use hostscan::model::{ScanErrorKind, ScanType};
use hostscan::scan::{self, Limits, StepState};
use hostscan::ssh::{HostKeyPolicy, Target};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::engine::scan_with;
use crate::support::faults::{Garbage, Proxy, Silent};
use crate::support::sshd::{Keys, Options, Sshd, connect_options, tofu_options};
use crate::support::{free_port, temp_dir};

fn local(port: u16) -> Target {
    Target {
        host: "127.0.0.1".into(),
        port,
        user: "scanner".into(),
    }
}

#[tokio::test]
async fn connection_refused() {
    let keys = Keys::generate();
    let (_known, opts) = tofu_options(&keys);
    let port = free_port();
    let (outcome, _) = scan_with(&local(port), ScanType::Quick, &opts, &Limits::default()).await;
    let e = outcome.error.expect("refused");
    assert_eq!(e.kind, ScanErrorKind::ConnectionRefused);
    assert_eq!(e.message, format!("connection refused by 127.0.0.1:{port}"));
}

#[tokio::test]
async fn a_silent_server_times_out_within_the_connect_timeout() {
    let keys = Keys::generate();
    let silent = Silent::start().await;
    let (_known, mut opts) = tofu_options(&keys);
    opts.connect_timeout = Duration::from_secs(1);
    let started = Instant::now();
    let (outcome, _) = scan_with(
        &local(silent.port),
        ScanType::Quick,
        &opts,
        &Limits::default(),
    )
    .await;
    let e = outcome.error.expect("timeout");
    assert_eq!(e.kind, ScanErrorKind::Timeout);
    assert!(
        e.message.contains("waiting for the SSH handshake"),
        "{}",
        e.message
    );
    // Bounded by the connect timeout, not by anything longer (generous
    // slack: this is a bound, not a benchmark).
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_server_that_is_not_ssh_is_a_protocol_error() {
    let keys = Keys::generate();
    let garbage = Garbage::start(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
    let (_known, opts) = tofu_options(&keys);
    let (outcome, _) = scan_with(
        &local(garbage.port),
        ScanType::Quick,
        &opts,
        &Limits::default(),
    )
    .await;
    let e = outcome.error.expect("protocol error");
    assert_eq!(e.kind, ScanErrorKind::Protocol, "{}", e.message);
}

#[tokio::test]
async fn a_wrong_key_is_auth_failed() {
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let stranger = keys.extra("stranger", "ed25519");
    let known = temp_dir("hostscan-kh-");
    let opts = connect_options(&[stranger], &known.path().join("kh"), HostKeyPolicy::Tofu);
    let (outcome, _) = scan_with(&sshd.target(), ScanType::Quick, &opts, &Limits::default()).await;
    let e = outcome.error.expect("auth failure");
    assert_eq!(e.kind, ScanErrorKind::AuthFailed);
    assert_eq!(
        e.message,
        format!(
            "authentication failed for {}@127.0.0.1:{} (tried 1 key)",
            sshd.user, sshd.port
        )
    );
}

#[tokio::test]
async fn a_changed_host_key_is_refused_under_tofu() {
    let keys = Keys::generate();
    let known = temp_dir("hostscan-kh-");
    let known_hosts = known.path().join("known_hosts");
    let opts = connect_options(
        std::slice::from_ref(&keys.client),
        &known_hosts,
        HostKeyPolicy::Tofu,
    );
    let first = Sshd::start(&keys, Options::default()).await;
    let port = first.port;
    let (outcome, _) = scan_with(&first.target(), ScanType::Quick, &opts, &Limits::default()).await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    drop(first);

    // The same host:port comes back with another key.
    let other_key = keys.extra("other_host_key", "ed25519");
    let second = Sshd::start(
        &keys,
        Options {
            host_key: Some(other_key),
            port: Some(port),
            ..Default::default()
        },
    )
    .await;
    let (outcome, _) =
        scan_with(&second.target(), ScanType::Quick, &opts, &Limits::default()).await;
    let e = outcome.error.expect("mismatch");
    assert_eq!(e.kind, ScanErrorKind::HostKeyMismatch);
    assert!(e.message.contains("HOST KEY CHANGED"), "{}", e.message);
    assert_eq!(
        e.message.matches("SHA256:").count(),
        2,
        "both fingerprints: {}",
        e.message
    );
    assert!(
        outcome.results.os.is_none(),
        "nothing may run on an untrusted host"
    );
    // The pin was not replaced.
    assert_eq!(
        std::fs::read_to_string(&known_hosts)
            .expect("kh")
            .lines()
            .count(),
        1
    );
}

#[tokio::test]
async fn a_hanging_command_is_a_step_error_and_the_rest_is_kept() {
    let keys = Keys::generate();
    let (sshd, _userland) = Sshd::with_fakes(&keys, &[("df", "exec sleep 600")]).await;
    let (_known, opts) = tofu_options(&keys);
    let limits = Limits {
        command_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let started = Instant::now();
    let (outcome, _) = scan_with(&sshd.target(), ScanType::Quick, &opts, &limits).await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    let r = &outcome.results;
    assert_eq!(r.step_errors.len(), 1, "{:?}", r.step_errors);
    assert_eq!(r.step_errors[0].step, "disks");
    assert_eq!(r.step_errors[0].message, "timed out after 2s");
    assert!(
        r.os.is_some()
            && r.memory.is_some()
            && !r.hostname.is_empty()
            && r.uptime_seconds.is_some()
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn a_flooding_command_is_capped() {
    let keys = Keys::generate();
    let (sshd, _userland) = Sshd::with_fakes(
        &keys,
        &[("df", "exec yes 'flood flood flood flood flood flood'")],
    )
    .await;
    let (_known, opts) = tofu_options(&keys);
    let limits = Limits {
        command_timeout: Duration::from_secs(2),
        max_output_bytes: 64 * 1024,
        ..Limits::default()
    };
    let (outcome, _) = scan_with(&sshd.target(), ScanType::Quick, &opts, &limits).await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    let r = &outcome.results;
    assert_eq!(r.step_errors.len(), 1, "{:?}", r.step_errors);
    assert_eq!(r.step_errors[0].step, "disks");
    // Either the cap or the remote kill ends it; both are step errors,
    // and the cap is reported whenever output was dropped.
    let m = &r.step_errors[0].message;
    assert!(
        m.contains("65536 byte cap") || m.contains("timed out"),
        "{m}"
    );
    assert!(r.disks.is_empty());
    assert!(r.os.is_some() && r.memory.is_some());
}

#[tokio::test]
async fn a_missing_command_is_a_step_error() {
    let keys = Keys::generate();
    let (sshd, _userland) = Sshd::with_fakes(
        &keys,
        &[("df", "echo 'sh: 1: df: not found' >&2; exit 127")],
    )
    .await;
    let (_known, opts) = tofu_options(&keys);
    let (outcome, _) = scan_with(&sshd.target(), ScanType::Full, &opts, &Limits::default()).await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    let r = &outcome.results;
    assert_eq!(r.step_errors.len(), 1, "{:?}", r.step_errors);
    assert_eq!(r.step_errors[0].step, "disks");
    assert!(r.disks.is_empty());
    assert!(r.packages.is_some() && !r.network_interfaces.is_empty() && r.memory.is_some());
}

/// Without `ps` (or with one that fails on every option), the processes
/// come from `/proc` directly, with account names from uids.
#[tokio::test]
async fn processes_without_ps_come_from_proc() {
    let keys = Keys::generate();
    let (sshd, _userland) = Sshd::with_fakes(
        &keys,
        &[("ps", "echo 'sh: 1: ps: not found' >&2; exit 127")],
    )
    .await;
    let (_known, opts) = tofu_options(&keys);
    let (outcome, _) = scan_with(&sshd.target(), ScanType::Full, &opts, &Limits::default()).await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    let r = &outcome.results;
    assert!(r.step_errors.is_empty(), "{:?}", r.step_errors);
    assert!(!r.processes.is_empty() && r.processes.len() <= 20);
    let me = std::process::id() as i32;
    // This test process is big enough to be listed, under its own user.
    if let Some(p) = r.processes.iter().find(|p| p.pid == me) {
        assert_eq!(p.user, crate::support::current_user());
        assert!(p.rss_bytes > 0, "{p:?}");
    }
    assert!(
        r.processes
            .windows(2)
            .all(|w| w[0].rss_bytes >= w[1].rss_bytes)
    );
    assert!(
        r.processes
            .iter()
            .all(|p| !p.user.is_empty() && !p.user.ends_with('+'))
    );
}

#[tokio::test]
async fn a_connection_dropped_mid_command_fails_the_scan_and_keeps_what_was_collected() {
    let keys = Keys::generate();
    let (sshd, _userland) = Sshd::with_fakes(&keys, &[("df", "exec sleep 600")]).await;
    let proxy = Proxy::start(sshd.port).await;
    let (_known, opts) = tofu_options(&keys);
    let target = local(proxy.port);
    let target = Target {
        user: sshd.user.clone(),
        ..target
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let limits = Limits::default();
    let scan = scan::run(&target, ScanType::Quick, &opts, &limits, &tx, &cancel);
    tokio::pin!(scan);
    // Cut the connection once every step but the hanging one has finished.
    let mut finished = 0;
    let outcome = loop {
        tokio::select! {
            outcome = &mut scan => break outcome,
            Some(p) = rx.recv() => {
                if p.state == StepState::Finished && p.step != "connect" {
                    finished += 1;
                    if finished == scan::plan(ScanType::Quick).count() - 1 {
                        proxy.cut();
                    }
                }
            }
        }
    };
    let e = outcome.error.expect("the scan cannot complete");
    assert_eq!(e.kind, ScanErrorKind::Protocol, "{}", e.message);
    assert!(e.message.contains("lost"), "{}", e.message);
    let r = &outcome.results;
    assert!(
        r.os.is_some()
            && r.memory.is_some()
            && r.uptime_seconds.is_some()
            && !r.hostname.is_empty()
    );
    assert!(
        r.step_errors.iter().any(|s| s.step == "disks"),
        "{:?}",
        r.step_errors
    );
}

#[tokio::test]
async fn cancel_stops_a_running_scan_at_once() {
    let keys = Keys::generate();
    let (sshd, _userland) = Sshd::with_fakes(&keys, &[("df", "exec sleep 600")]).await;
    let (_known, opts) = tofu_options(&keys);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let limits = Limits::default();
    let target = sshd.target();
    let scan = scan::run(&target, ScanType::Quick, &opts, &limits, &tx, &cancel);
    tokio::pin!(scan);
    let mut finished = 0;
    let mut cancelled_at = None;
    let outcome = loop {
        tokio::select! {
            outcome = &mut scan => break outcome,
            Some(p) = rx.recv() => {
                if p.state == StepState::Finished && p.step != "connect" {
                    finished += 1;
                    if finished == scan::plan(ScanType::Quick).count() - 1 {
                        cancel.cancel();
                        cancelled_at = Some(Instant::now());
                    }
                }
            }
        }
    };
    let e = outcome.error.expect("cancelled");
    assert_eq!(e.kind, ScanErrorKind::Cancelled);
    assert!(cancelled_at.expect("cancelled").elapsed() < Duration::from_secs(2));
    assert!(outcome.results.os.is_some() && outcome.results.memory.is_some());
}

#[tokio::test]
async fn without_a_remote_timeout_a_hang_mid_group_is_cut_locally_and_the_rest_runs() {
    let keys = Keys::generate();
    // A host with no working `timeout` (it runs the command untimed), where
    // `uname -n` hangs: the hostname step sits between os and uptime.
    let (sshd, _userland) = Sshd::with_fakes(
        &keys,
        &[
            ("timeout", "shift 3; exec \"$@\""),
            (
                "uname",
                "case \"$1\" in -n) exec sleep 600;; *) exec /usr/bin/uname \"$@\";; esac",
            ),
            ("hostname", "exec sleep 600"),
        ],
    )
    .await;
    let (_known, opts) = tofu_options(&keys);
    let limits = Limits {
        command_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let (outcome, _) = scan_with(&sshd.target(), ScanType::Quick, &opts, &limits).await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    let r = &outcome.results;
    assert_eq!(r.step_errors.len(), 1, "{:?}", r.step_errors);
    assert_eq!(r.step_errors[0].step, "hostname");
    assert_eq!(r.step_errors[0].message, "timed out after 1s");
    assert!(r.os.is_some() && r.uptime_seconds.is_some() && r.memory.is_some());
    crate::support::assert_disks_of_this_machine(r.disks.iter().map(|d| d.mount.as_str()));
}
