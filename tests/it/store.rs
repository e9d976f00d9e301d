//! The store, on both backends: claims, leases, pagination, idempotency,
//! pins, and copying between databases.

use std::collections::HashSet;
use std::time::Duration;

use hostscan::model::{ScanErrorKind, ScanResults, ScanStatus, ScanType};
use hostscan::store::{Lease, ListQuery, NewScan, Pin};

use crate::both_backends;
use crate::support::db::{Backend, TestDb};

const LEASE: Duration = Duration::from_secs(30);

fn new_scan(host: &str) -> NewScan {
    NewScan {
        hostname: host.into(),
        port: 22,
        username: "scanner".into(),
        scan_type: ScanType::Quick,
        request_id: None,
        proxy_jump: String::new(),
    }
}

async fn two_claimers_never_get_the_same_scan(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store();
    for i in 0..60 {
        store
            .create(new_scan(&format!("h{i}.example")))
            .await
            .expect("create");
    }
    let mut claimers = tokio::task::JoinSet::new();
    for c in 0..6 {
        let store = db.store_as(&format!("claimer-{c}"));
        claimers.spawn(async move {
            let mut mine = Vec::new();
            while let Some(scan) = store
                .claim_next(store.instance(), LEASE)
                .await
                .expect("claim")
            {
                assert_eq!(scan.status, ScanStatus::Running);
                mine.push(scan.id);
            }
            mine
        });
    }
    let mut all = Vec::new();
    while let Some(ids) = claimers.join_next().await {
        all.extend(ids.expect("claimer"));
    }
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 60, "every scan claimed once");
    assert_eq!(unique.len(), 60, "no scan claimed twice");
}

async fn claims_go_oldest_first_and_bump_the_sequence(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store();
    let (first, created) = store.create(new_scan("a.example")).await.expect("create");
    assert!(created);
    assert_eq!(
        (first.status, first.sequence, first.progress),
        (ScanStatus::Pending, 1, 0)
    );
    store.create(new_scan("b.example")).await.expect("create");
    let claimed = store
        .claim_next("w", LEASE)
        .await
        .expect("claim")
        .expect("a scan");
    assert_eq!(claimed.id, first.id);
    assert_eq!(claimed.sequence, 2);
    assert!(claimed.started_at.is_some());

    let step = store
        .record_step(first.id, "w", 40, "disks", LEASE)
        .await
        .expect("step")
        .expect("held");
    assert_eq!(
        (step.progress, step.sequence, step.current_step.as_str()),
        (40, 3, "disks")
    );
    // Progress never goes down.
    let lower = store
        .record_step(first.id, "w", 10, "memory", LEASE)
        .await
        .expect("step")
        .expect("held");
    assert_eq!((lower.progress, lower.sequence), (40, 4));
    // Only the lease holder writes.
    assert!(
        store
            .record_step(first.id, "intruder", 90, "x", LEASE)
            .await
            .expect("step")
            .is_none()
    );

    let results = ScanResults {
        hostname: "a".into(),
        ..Default::default()
    };
    let done = store
        .finish(first.id, "w", ScanStatus::Completed, &results, None)
        .await
        .expect("finish")
        .expect("held");
    assert_eq!(
        (done.status, done.progress, done.sequence),
        (ScanStatus::Completed, 100, 5)
    );
    assert_eq!(done.results.expect("results").hostname, "a");
    assert!(done.completed_at.is_some());
    // Finishing twice does nothing.
    assert!(
        store
            .finish(first.id, "w", ScanStatus::Failed, &results, None)
            .await
            .expect("finish")
            .is_none()
    );
}

async fn expired_leases_are_requeued_once_then_failed_as_interrupted(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store();
    let (scan, _) = store
        .create(new_scan("dies.example"))
        .await
        .expect("create");
    store
        .claim_next("dead-worker", LEASE)
        .await
        .expect("claim")
        .expect("scan");
    // Nothing to recover while the lease is valid.
    assert!(store.recover_expired().await.expect("recover").is_empty());

    db.expire_lease(scan.id).await;
    let recovered = store.recover_expired().await.expect("recover");
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].status, ScanStatus::Pending);
    // The dead worker's lease is gone: its writes are refused.
    assert!(
        store
            .record_step(scan.id, "dead-worker", 50, "x", LEASE)
            .await
            .expect("step")
            .is_none()
    );
    assert_eq!(
        store
            .heartbeat(scan.id, "dead-worker", LEASE)
            .await
            .expect("heartbeat"),
        Lease::Lost
    );

    let again = store
        .claim_next("second-worker", LEASE)
        .await
        .expect("claim")
        .expect("requeued scan");
    assert_eq!(again.id, scan.id);
    db.expire_lease(scan.id).await;
    let recovered = store.recover_expired().await.expect("recover");
    assert_eq!(recovered.len(), 1);
    let failed = &recovered[0];
    assert_eq!(failed.status, ScanStatus::Failed);
    let error = failed.error.as_ref().expect("error");
    assert_eq!(error.kind, ScanErrorKind::Interrupted);
    assert!(failed.results.is_some(), "terminal scans carry results");
}

async fn shutdown_requeue_does_not_spend_an_attempt(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store();
    let (scan, _) = store
        .create(new_scan("drain.example"))
        .await
        .expect("create");
    store
        .claim_next("me", LEASE)
        .await
        .expect("claim")
        .expect("scan");
    let requeued = store.requeue_owned("me").await.expect("requeue");
    assert_eq!(requeued.len(), 1);
    assert_eq!(requeued[0].status, ScanStatus::Pending);
    // Claimed again, then dies: still one retry left.
    store
        .claim_next("other", LEASE)
        .await
        .expect("claim")
        .expect("scan");
    db.expire_lease(scan.id).await;
    let recovered = store.recover_expired().await.expect("recover");
    assert_eq!(recovered[0].status, ScanStatus::Pending);
}

async fn keyset_pages_are_stable_under_inserts(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store();
    let mut created = Vec::new();
    for i in 0..120 {
        created.push(
            store
                .create(new_scan(&format!("h{i}.example")))
                .await
                .expect("create")
                .0
                .id,
        );
    }
    let page = |before| ListQuery {
        limit: 50,
        before_id: before,
        ..Default::default()
    };
    let first = store.list(page(None)).await.expect("list");
    assert_eq!(first.total, 120);
    assert_eq!(first.scans.len(), 50);
    assert!(
        first.scans.windows(2).all(|w| w[0].id > w[1].id),
        "newest first"
    );
    assert_eq!(first.scans[0].id, *created.last().expect("ids"));
    // New scans arrive between pages: they do not shift later pages.
    for i in 0..10 {
        store
            .create(new_scan(&format!("late{i}.example")))
            .await
            .expect("create");
    }
    let second = store.list(page(first.next_before_id)).await.expect("list");
    let third = store.list(page(second.next_before_id)).await.expect("list");
    assert_eq!(second.scans.len(), 50);
    assert_eq!(third.scans.len(), 20);
    assert_eq!(third.next_before_id, None);
    let seen: Vec<i64> = [first.scans, second.scans, third.scans]
        .into_iter()
        .flatten()
        .map(|s| s.id)
        .collect();
    let mut expected = created.clone();
    expected.reverse();
    assert_eq!(seen, expected, "every original scan exactly once, in order");
}

async fn list_filters_combine(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store();
    for (host, scan_type) in [
        ("a.example", ScanType::Quick),
        ("a.example", ScanType::Full),
        ("b.example", ScanType::Full),
    ] {
        store
            .create(NewScan {
                scan_type,
                ..new_scan(host)
            })
            .await
            .expect("create");
    }
    store.claim_next("w", LEASE).await.expect("claim");
    let q = |hostname: Option<&str>, status, scan_type| ListQuery {
        hostname: hostname.map(String::from),
        status,
        scan_type,
        limit: 50,
        before_id: None,
        finished_since: None,
    };
    let count = |page: hostscan::store::Page| (page.scans.len(), page.total);
    assert_eq!(
        count(
            store
                .list(q(Some("a.example"), None, None))
                .await
                .expect("list")
        ),
        (2, 2)
    );
    assert_eq!(
        count(
            store
                .list(q(Some("a.example"), None, Some(ScanType::Full)))
                .await
                .expect("list")
        ),
        (1, 1)
    );
    assert_eq!(
        count(
            store
                .list(q(None, Some(ScanStatus::Running), None))
                .await
                .expect("list")
        ),
        (1, 1)
    );
    assert_eq!(
        count(
            store
                .list(q(None, Some(ScanStatus::Pending), Some(ScanType::Full)))
                .await
                .expect("list")
        ),
        (2, 2)
    );
    assert_eq!(
        count(
            store
                .list(q(Some("c.example"), None, None))
                .await
                .expect("list")
        ),
        (0, 0)
    );
}

async fn a_repeated_request_id_returns_the_first_scan(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store();
    let with_id = |host: &str| NewScan {
        request_id: Some("retry-7".into()),
        ..new_scan(host)
    };
    let (first, created) = store.create(with_id("a.example")).await.expect("create");
    assert!(created);
    let (again, created) = store
        .create(with_id("other.example"))
        .await
        .expect("create");
    assert!(!created);
    assert_eq!(again.id, first.id);
    assert_eq!(again.hostname, "a.example");
    // Concurrent retries all land on one scan.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .create(NewScan {
                    request_id: Some("burst".into()),
                    ..new_scan("burst.example")
                })
                .await
                .expect("create")
        });
    }
    let mut ids = HashSet::new();
    let mut creations = 0;
    while let Some(r) = tasks.join_next().await {
        let (scan, created) = r.expect("task");
        ids.insert(scan.id);
        creations += usize::from(created);
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(creations, 1);
}

async fn cancel_pending_at_once_and_running_by_request(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store();
    let (pending, _) = store.create(new_scan("p.example")).await.expect("create");
    let (cancelled, changed) = store
        .request_cancel(pending.id)
        .await
        .expect("cancel")
        .expect("found");
    assert!(changed);
    assert_eq!(cancelled.status, ScanStatus::Cancelled);
    assert_eq!(cancelled.sequence, pending.sequence + 1);
    assert_eq!(
        cancelled.error.expect("error").kind,
        ScanErrorKind::Cancelled
    );

    let (running, _) = store.create(new_scan("r.example")).await.expect("create");
    store
        .claim_next("w", LEASE)
        .await
        .expect("claim")
        .expect("scan");
    let (still, changed) = store
        .request_cancel(running.id)
        .await
        .expect("cancel")
        .expect("found");
    assert!(!changed);
    assert_eq!(still.status, ScanStatus::Running);
    assert_eq!(
        store
            .heartbeat(running.id, "w", LEASE)
            .await
            .expect("heartbeat"),
        Lease::Held {
            cancel_requested: true
        }
    );
    // Terminal scans come back unchanged; unknown ids are None.
    let (same, changed) = store
        .request_cancel(pending.id)
        .await
        .expect("cancel")
        .expect("found");
    assert!(!changed && same.sequence == cancelled.sequence);
    assert!(
        store
            .request_cancel(999_999)
            .await
            .expect("cancel")
            .is_none()
    );
}

async fn host_key_pins_are_first_come(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store();
    let pin = |key: &'static str, fp: &'static str| {
        let store = store.clone();
        async move {
            store
                .pin_host_key("h.example", 22, "ssh-ed25519", key, fp)
                .await
                .expect("pin")
        }
    };
    assert_eq!(pin("ssh-ed25519 AAAA1", "SHA256:one").await, Pin::Pinned);
    assert_eq!(pin("ssh-ed25519 AAAA1", "SHA256:one").await, Pin::Matches);
    assert_eq!(
        pin("ssh-ed25519 AAAA2", "SHA256:two").await,
        Pin::Differs {
            fingerprint: "SHA256:one".into()
        }
    );
    assert_eq!(
        store
            .pinned_algorithm("h.example", 22)
            .await
            .expect("alg")
            .as_deref(),
        Some("ssh-ed25519")
    );
    assert_eq!(
        store
            .pinned_algorithm("h.example", 2222)
            .await
            .expect("alg"),
        None
    );
}

/// `hostscan copy-db`, the real binary, from `from` to the other backend
/// and back: every scan (all states, results, request ids) and pin, ids
/// kept; a second copy changes nothing; a scan that moved on since is
/// updated; new scans get ids above the copied ones; a different scan
/// under a copied id stops the copy.
async fn copy_db_moves_everything_both_ways(from: Backend) {
    let to = match from {
        Backend::Postgres => Backend::Sqlite,
        Backend::Sqlite => Backend::Postgres,
    };
    let (source, destination) = (TestDb::new(from).await, TestDb::new(to).await);
    let store = source.store_as("w");
    let results = ScanResults {
        hostname: "done.example".into(),
        ..Default::default()
    };
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut new = new_scan(&format!("h{i}.example"));
        new.request_id = Some(format!("req-{i}"));
        ids.push(store.create(new).await.expect("create").0.id);
    }
    // 0 completed, 1 failed, 2 cancelled, 3 running, 4-6 pending.
    for status in [ScanStatus::Completed, ScanStatus::Failed] {
        let scan = store
            .claim_next("w", LEASE)
            .await
            .expect("claim")
            .expect("scan");
        let error = (status == ScanStatus::Failed).then(|| hostscan::model::ScanError {
            kind: ScanErrorKind::AuthFailed,
            message: "no key".into(),
        });
        store
            .finish(scan.id, "w", status, &results, error.as_ref())
            .await
            .expect("finish");
    }
    store.request_cancel(ids[2]).await.expect("cancel");
    let running = store
        .claim_next("w", LEASE)
        .await
        .expect("claim")
        .expect("scan");
    assert_eq!(running.id, ids[3]);
    store
        .pin_host_key(
            "h0.example",
            22,
            "ssh-ed25519",
            "ssh-ed25519 AAAA",
            "SHA256:x",
        )
        .await
        .expect("pin");

    let copy = |from: &TestDb, to: &TestDb| {
        let out = std::process::Command::new(crate::support::server::BINARY)
            .args(["copy-db", "--from", from.url(), "--to", to.url()])
            .output()
            .expect("run copy-db");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let all = |db: &TestDb| {
        let store = db.store();
        async move {
            let mut scans = Vec::new();
            for id in 1..=12 {
                if let Some(s) = store.get(id).await.expect("get") {
                    scans.push(s);
                }
            }
            scans
        }
    };

    let (code, text) = copy(&source, &destination);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("scans: 7 copied, 0 updated, 0 already there"),
        "{text}"
    );
    assert!(text.contains("pins: 1 copied"), "{text}");
    assert_eq!(all(&source).await, all(&destination).await);
    let hosts = |db: &TestDb| {
        let store = db.store();
        async move {
            let query = hostscan::store::HostQuery {
                limit: 100,
                ..Default::default()
            };
            store.list_hosts(query).await.expect("hosts").hosts
        }
    };
    assert_eq!(
        hosts(&source).await,
        hosts(&destination).await,
        "hosts come along"
    );
    assert_eq!(hosts(&destination).await.len(), 7);
    let copied = destination.store();
    assert_eq!(
        copied
            .pin_host_key(
                "h0.example",
                22,
                "ssh-ed25519",
                "ssh-ed25519 AAAA",
                "SHA256:x"
            )
            .await
            .expect("pin"),
        Pin::Matches
    );
    let mut again = new_scan("h0.example");
    again.request_id = Some("req-0".into());
    assert_eq!(
        copied.create(again).await.expect("create").0.id,
        ids[0],
        "request ids survive"
    );

    // Idempotent; then the running scan finishes at the source and a
    // second copy brings it over.
    let (code, text) = copy(&source, &destination);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("scans: 0 copied, 0 updated, 7 already there"),
        "{text}"
    );
    store
        .finish(ids[3], "w", ScanStatus::Completed, &results, None)
        .await
        .expect("finish")
        .expect("held");
    let (code, text) = copy(&source, &destination);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("scans: 0 copied, 1 updated, 6 already there"),
        "{text}"
    );
    assert_eq!(all(&source).await, all(&destination).await);

    // New scans at the destination continue after the copied ids.
    let (fresh, _) = copied
        .create(new_scan("new.example"))
        .await
        .expect("create");
    assert!(fresh.id > ids[6], "{} after {}", fresh.id, ids[6]);
    // The source goes on too, up to the destination's new id: a different
    // scan under one id stops the copy.
    while store
        .create(new_scan("other.example"))
        .await
        .expect("create")
        .0
        .id
        < fresh.id
    {}
    let (code, text) = copy(&source, &destination);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&format!("already has a different scan {}", fresh.id)),
        "{text}"
    );
}

/// Runs a scan through claim and finish, as a worker would.
async fn run_to_end(
    store: &hostscan::store::Store,
    new: NewScan,
    status: ScanStatus,
    results: &ScanResults,
) -> i64 {
    let (scan, _) = store.create(new).await.expect("create");
    let claimed = store
        .claim_next("w", LEASE)
        .await
        .expect("claim")
        .expect("a scan");
    assert_eq!(claimed.id, scan.id, "one pending scan at a time here");
    let error = (status != ScanStatus::Completed).then(|| hostscan::model::ScanError {
        kind: ScanErrorKind::Timeout,
        message: "slow".into(),
    });
    store
        .finish(scan.id, "w", status, results, error.as_ref())
        .await
        .expect("finish")
        .expect("held");
    scan.id
}

fn results_for(os_id: &str, packages: Option<u64>, step_errors: usize) -> ScanResults {
    use hostscan::model::facts::{OsInfo, Packages, StepError};
    ScanResults {
        os: Some(OsInfo {
            id: os_id.into(),
            pretty_name: format!("{os_id} pretty"),
            kernel: "6.1.0".into(),
            ..Default::default()
        }),
        packages: packages.map(|count| Packages {
            manager: "dpkg".into(),
            count,
            recent: Vec::new(),
            installed: None,
        }),
        step_errors: (0..step_errors)
            .map(|i| StepError {
                step: format!("s{i}"),
                message: "x".into(),
            })
            .collect(),
        ..Default::default()
    }
}

/// ListHosts: one row per (hostname, port), newest activity first, the
/// newest completed scan's summary, the newest scan's status when it is
/// newer, filters and pages.
async fn hosts_follow_their_scans(backend: Backend) {
    use hostscan::store::{HostCursor, HostOrder, HostQuery};
    let db = TestDb::new(backend).await;
    let store = db.store_as("w");
    let full = |host: &str, port: u16| NewScan {
        port,
        scan_type: ScanType::Full,
        ..new_scan(host)
    };
    let a1 = run_to_end(
        &store,
        full("a.example", 22),
        ScanStatus::Completed,
        &results_for("debian", Some(400), 0),
    )
    .await;
    let b1 = run_to_end(
        &store,
        new_scan("b.example"),
        ScanStatus::Completed,
        &results_for("rhel", None, 2),
    )
    .await;
    let a2 = run_to_end(
        &store,
        full("a.example", 2222),
        ScanStatus::Completed,
        &results_for("alpine", Some(90), 0),
    )
    .await;
    // a.example:22 again: the newest attempt fails, the summary stays.
    let a3 = run_to_end(
        &store,
        new_scan("a.example"),
        ScanStatus::Failed,
        &ScanResults::default(),
    )
    .await;
    // c.example only ever failed, and one more is pending.
    let c1 = run_to_end(
        &store,
        new_scan("c.example"),
        ScanStatus::Failed,
        &ScanResults::default(),
    )
    .await;
    let (c2, _) = store.create(new_scan("c.example")).await.expect("create");

    let query =
        |prefix: Option<&str>, os: Option<&str>, limit: i64, before: Option<i64>| HostQuery {
            hostname_prefix: prefix.map(String::from),
            os_id: os.map(String::from),
            limit,
            order: HostOrder::NewestActivity,
            after: before.map(HostCursor::BeforeScan),
        };
    let page = store
        .list_hosts(query(None, None, 10, None))
        .await
        .expect("hosts");
    assert_eq!(page.total, 4);
    let order: Vec<(String, u16)> = page
        .hosts
        .iter()
        .map(|h| (h.hostname.clone(), h.port))
        .collect();
    assert_eq!(
        order,
        [
            ("c.example", 22),
            ("a.example", 22),
            ("a.example", 2222),
            ("b.example", 22)
        ]
        .map(|(h, p)| (h.to_string(), p))
    );
    let c = &page.hosts[0];
    assert!(c.completed.is_none());
    assert_eq!(
        (c.latest_scan.id, c.latest_scan.status),
        (c2.id, ScanStatus::Pending)
    );
    let a = &page.hosts[1];
    assert_eq!(
        (a.latest_scan.id, a.latest_scan.status),
        (a3, ScanStatus::Failed)
    );
    let summary = a.completed.as_ref().expect("a completed scan");
    assert_eq!(summary.scan_id, a1);
    assert_eq!(
        (
            summary.os_id.as_str(),
            summary.os_pretty_name.as_str(),
            summary.kernel.as_str()
        ),
        ("debian", "debian pretty", "6.1.0")
    );
    assert_eq!(
        (summary.package_count, summary.step_error_count),
        (Some(400), 0)
    );
    assert_eq!(summary.scan_type, Some(ScanType::Full));
    assert!(summary.completed_at.is_some());
    assert_eq!(
        page.hosts[2].completed.as_ref().map(|s| s.scan_id),
        Some(a2)
    );
    let b = page.hosts[3].completed.as_ref().expect("b");
    assert_eq!(
        (b.scan_id, b.package_count, b.step_error_count),
        (b1, None, 2)
    );
    assert_eq!(page.hosts[3].latest_scan.id, b1);
    let _ = c1;

    let only_a = store
        .list_hosts(query(Some("a."), None, 10, None))
        .await
        .expect("prefix");
    assert_eq!((only_a.total, only_a.hosts.len()), (2, 2));
    let rhel = store
        .list_hosts(query(None, Some("rhel"), 10, None))
        .await
        .expect("os");
    assert_eq!(
        rhel.hosts
            .iter()
            .map(|h| h.hostname.as_str())
            .collect::<Vec<_>>(),
        ["b.example"]
    );
    // Pages of one: every host once, in order.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_hosts(query(None, None, 1, before))
            .await
            .expect("page");
        seen.extend(page.hosts.iter().map(|h| (h.hostname.clone(), h.port)));
        match page.next {
            Some(HostCursor::BeforeScan(id)) => before = Some(id),
            None => break,
            Some(other) => panic!("a cursor of another order: {other:?}"),
        }
    }
    assert_eq!(seen, order);

    // By host name, pages of one: every host once, in name and port order,
    // even though the host just listed is scanned again before each next
    // page (newest-activity pages would show it again and skip one).
    let by_name = |after: Option<HostCursor>| HostQuery {
        limit: 1,
        order: HostOrder::Hostname,
        after,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_hosts(by_name(after)).await.expect("page");
        assert_eq!(page.total, 4);
        for h in &page.hosts {
            seen.push((h.hostname.clone(), h.port));
            store
                .create(NewScan {
                    port: h.port,
                    ..new_scan(&h.hostname)
                })
                .await
                .expect("rescan");
        }
        match page.next {
            Some(c @ HostCursor::AfterHost(..)) => after = Some(c),
            None => break,
            Some(other) => panic!("a cursor of another order: {other:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            ("a.example", 22),
            ("a.example", 2222),
            ("b.example", 22),
            ("c.example", 22)
        ]
        .map(|(h, p)| (h.to_string(), p))
    );
    let rhel_by_name = store
        .list_hosts(HostQuery {
            os_id: Some("rhel".into()),
            ..by_name(None)
        })
        .await
        .expect("filtered");
    assert_eq!(
        (
            rhel_by_name.total,
            rhel_by_name.hosts.len(),
            rhel_by_name.next
        ),
        (1, 1, None)
    );
}

/// Retention deletes old finished scans in batches and keeps each host's
/// newest scan and newest completed scan, whatever their age; a dry run
/// counts the same set.
async fn retention_keeps_each_hosts_newest(backend: Backend) {
    use std::time::Duration;
    let db = TestDb::new(backend).await;
    let store = db.store_as("w");
    let ok = results_for("debian", None, 0);
    let mut old = Vec::new();
    for host in ["a.example", "b.example"] {
        for status in [
            ScanStatus::Completed,
            ScanStatus::Completed,
            ScanStatus::Failed,
        ] {
            old.push(run_to_end(&store, new_scan(host), status, &ok).await);
        }
    }
    // c.example: two old completed scans, then a recent one.
    let c_old1 = run_to_end(&store, new_scan("c.example"), ScanStatus::Completed, &ok).await;
    let c_old2 = run_to_end(&store, new_scan("c.example"), ScanStatus::Completed, &ok).await;
    let all_old: Vec<i64> = old.iter().copied().chain([c_old1, c_old2]).collect();
    let ids = all_old
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let ago = match backend {
        Backend::Postgres => "now() - interval '100 days'".to_string(),
        Backend::Sqlite => {
            "CAST(unixepoch('subsec') * 1000000 AS INTEGER) - 100 * 86400000000".to_string()
        }
    };
    db.execute(&format!(
        "UPDATE scans SET completed_at = {ago} WHERE id IN ({ids})"
    ))
    .await;
    let c_new = run_to_end(&store, new_scan("c.example"), ScanStatus::Completed, &ok).await;
    let running = store
        .create(new_scan("d.example"))
        .await
        .expect("create")
        .0
        .id;
    store.claim_next("w", LEASE).await.expect("claim");

    let ninety = Duration::from_secs(90 * 86400);
    // a and b: keep the newest completed (2nd) and the newest (failed 3rd);
    // c: both old ones go, the recent one stays.
    assert_eq!(store.count_prunable(ninety).await.expect("count"), 4);
    assert_eq!(store.prune(ninety, 1).await.expect("prune"), 4);
    assert_eq!(store.prune(ninety, 1).await.expect("prune again"), 0);
    let mut left = Vec::new();
    for id in 1..=running {
        if store.get(id).await.expect("get").is_some() {
            left.push(id);
        }
    }
    assert_eq!(left, vec![old[1], old[2], old[4], old[5], c_new, running]);
    let hosts = store
        .list_hosts(hostscan::store::HostQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("hosts");
    assert_eq!(hosts.total, 4, "no host is forgotten");
}

both_backends!(
    two_claimers_never_get_the_same_scan,
    claims_go_oldest_first_and_bump_the_sequence,
    expired_leases_are_requeued_once_then_failed_as_interrupted,
    shutdown_requeue_does_not_spend_an_attempt,
    keyset_pages_are_stable_under_inserts,
    list_filters_combine,
    a_repeated_request_id_returns_the_first_scan,
    cancel_pending_at_once_and_running_by_request,
    host_key_pins_are_first_come,
    copy_db_moves_everything_both_ways,
    hosts_follow_their_scans,
    retention_keeps_each_hosts_newest,
);

/// PostgreSQL over TLS with the libpq built into hostscan (bundled, with a
/// vendored OpenSSL): a server that accepts only TLS, `sslmode=verify-full`
/// against the right CA works, the wrong CA is refused, and a plaintext
/// login is refused with a message that says so.
#[tokio::test]
async fn postgres_over_tls_with_the_bundled_libpq() {
    use crate::support::pg::{Cluster, ServerOptions};
    use crate::support::{is_root, run, temp_dir};

    let dir = temp_dir("hostscan-pgtls-");
    let d = dir.path();
    let path = |name: &str| d.join(name).to_str().expect("utf-8").to_string();
    std::fs::write(
        d.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("ext");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        let (key, crt, subj) = (
            path(&format!("{ca}.key")),
            path(&format!("{ca}.crt")),
            format!("/CN=hostscan test {ca}"),
        );
        args.extend(["-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subj]);
        run("openssl", &args);
    }
    let (key, csr, crt) = (path("server.key"), path("server.csr"), path("server.crt"));
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"]);
    run("openssl", &args);
    let (ca_crt, ca_key, ext) = (path("ca.crt"), path("ca.key"), path("san.ext"));
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
    // The server reads its key as the postgres user, and wants it private.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
    if is_root() {
        run("chown", &["postgres:postgres", &key, &crt]);
    }
    let cluster = Cluster::start_with(ServerOptions {
        settings: format!("-c ssl=on -c ssl_cert_file={crt} -c ssl_key_file={key}"),
        hba: Some("local all all trust\nhostssl all all 127.0.0.1/32 trust\n".into()),
    })
    .await;
    let url = |query: &str| {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?{query}",
            cluster.port
        )
    };
    let migrate = |url: String| {
        let out = std::process::Command::new(crate::support::server::BINARY)
            .args(["migrate", "--database-url", &url])
            .output()
            .expect("run migrate");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout),
        )
    };

    let verified = url(&format!("sslmode=verify-full&sslrootcert={ca_crt}"));
    let (code, text) = migrate(verified.clone());
    assert_eq!(code, Some(0), "{text}");
    let store = hostscan::store::Store::open(&verified, 2, "tls").expect("store");
    let (scan, _) = store
        .create(new_scan("tls.example"))
        .await
        .expect("create over TLS");
    assert_eq!(
        store.get(scan.id).await.expect("get").map(|s| s.hostname),
        Some("tls.example".to_string())
    );

    let (code, text) = migrate(url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        path("other-ca.crt")
    )));
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("certificate verify failed"), "{text}");

    let (code, text) = migrate(url("sslmode=disable"));
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("no pg_hba.conf entry") && text.contains("refused this login"),
        "{text}"
    );
}
