//! The PostgreSQL store: claims, leases, pagination, idempotency, pins.

use std::collections::HashSet;
use std::time::Duration;

use hostscan::model::{ScanErrorKind, ScanResults, ScanStatus, ScanType};
use hostscan::store::{Lease, ListQuery, NewScan, Pin, Store};

use crate::support::pg::TestDb;

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

fn store_as(db: &TestDb, owner: &str) -> Store {
    Store::open(&db.url, 4, owner).expect("store")
}

#[tokio::test]
async fn two_claimers_never_get_the_same_scan() {
    let db = TestDb::new().await;
    let store = db.store();
    for i in 0..60 {
        store
            .create(new_scan(&format!("h{i}.example")))
            .await
            .expect("create");
    }
    let mut claimers = tokio::task::JoinSet::new();
    for c in 0..6 {
        let store = store_as(&db, &format!("claimer-{c}"));
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

#[tokio::test]
async fn claims_go_oldest_first_and_bump_the_sequence() {
    let db = TestDb::new().await;
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

#[tokio::test]
async fn expired_leases_are_requeued_once_then_failed_as_interrupted() {
    let db = TestDb::new().await;
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

    db.execute(&format!(
        "UPDATE scans SET lease_expires_at = now() - interval '1 second' WHERE id = {}",
        scan.id
    ))
    .await;
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
    db.execute(&format!(
        "UPDATE scans SET lease_expires_at = now() - interval '1 second' WHERE id = {}",
        scan.id
    ))
    .await;
    let recovered = store.recover_expired().await.expect("recover");
    assert_eq!(recovered.len(), 1);
    let failed = &recovered[0];
    assert_eq!(failed.status, ScanStatus::Failed);
    let error = failed.error.as_ref().expect("error");
    assert_eq!(error.kind, ScanErrorKind::Interrupted);
    assert!(failed.results.is_some(), "terminal scans carry results");
}

#[tokio::test]
async fn shutdown_requeue_does_not_spend_an_attempt() {
    let db = TestDb::new().await;
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
    db.execute(&format!(
        "UPDATE scans SET lease_expires_at = now() - interval '1 second' WHERE id = {}",
        scan.id
    ))
    .await;
    let recovered = store.recover_expired().await.expect("recover");
    assert_eq!(recovered[0].status, ScanStatus::Pending);
}

#[tokio::test]
async fn keyset_pages_are_stable_under_inserts() {
    let db = TestDb::new().await;
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

#[tokio::test]
async fn list_filters_combine() {
    let db = TestDb::new().await;
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

#[tokio::test]
async fn a_repeated_request_id_returns_the_first_scan() {
    let db = TestDb::new().await;
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

#[tokio::test]
async fn cancel_pending_at_once_and_running_by_request() {
    let db = TestDb::new().await;
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

#[tokio::test]
async fn host_key_pins_are_first_come() {
    let db = TestDb::new().await;
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
