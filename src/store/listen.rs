//! Cross-replica signals over PostgreSQL LISTEN/NOTIFY.
//!
//! One dedicated (unpooled) connection in a blocking thread polls for
//! notifications that the `scans_notify` trigger sends, drops those this
//! instance sent itself, and forwards the rest. After a reconnect it sends
//! `Signal::Resync`, since notifications may have been missed.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::model::{ScanStatus, ScanType};

/// Something another replica did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A scan became PENDING: `created` holds a new scan's type and host
    /// (its first event, sequence 1); `None` for a requeued one.
    Pending {
        scan_id: i64,
        created: Option<(ScanType, String)>,
    },
    /// A scan's row changed; the new state as the trigger saw it.
    Event {
        scan_id: i64,
        sequence: i64,
        status: ScanStatus,
        progress: i32,
        scan_type: ScanType,
        hostname: String,
        current_step: String,
    },
    /// A cancel was requested for a RUNNING scan.
    Cancel { scan_id: i64 },
    /// The listener reconnected; signals may have been lost.
    Resync,
}

const POLL: Duration = Duration::from_millis(50);

/// Runs until `stop` is cancelled or `tx` is closed. Blocking: call it from
/// `spawn_blocking`. `ready` fires once the first LISTEN is in force, so
/// the server can open its API only when it will hear other replicas; if
/// nobody waits for it any more (the server gave up and opened anyway),
/// that first LISTEN sends `Signal::Resync`, as every later one does.
pub fn run(
    url: String,
    instance: String,
    tx: mpsc::UnboundedSender<Signal>,
    stop: CancellationToken,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    while !stop.is_cancelled() && !tx.is_closed() {
        let mut conn = match PgConnection::establish(&url) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; retrying");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        if let Err(e) = conn.batch_execute(
            "LISTEN hostscan_pending; LISTEN hostscan_events; LISTEN hostscan_cancel",
        ) {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        // The first LISTEN is announced; a later one, or one nobody awaited,
        // means notifications may have been missed.
        let announced = ready.take().is_some_and(|r| r.send(()).is_ok());
        if !announced {
            tx.send(Signal::Resync).ok();
        }
        'poll: while !stop.is_cancelled() {
            for n in conn.notifications_iter() {
                let n = match n {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                        break 'poll;
                    }
                };
                if let Some(signal) = parse(&n.channel, &n.payload, &instance)
                    && tx.send(signal).is_err()
                {
                    return;
                }
            }
            std::thread::sleep(POLL);
        }
    }
}

/// Decodes a trigger payload; `None` for our own or malformed ones.
/// Payloads: "id origin" (cancel, requeued), "id origin scan_type hostname"
/// (a new scan) and
/// "id sequence status progress origin scan_type hostname current_step"
/// (events).
fn parse(channel: &str, payload: &str, instance: &str) -> Option<Signal> {
    match channel {
        "hostscan_pending" | "hostscan_cancel" => {
            let mut f = payload.split(' ');
            let scan_id = f.next()?.parse().ok()?;
            if f.next().unwrap_or("") == instance {
                return None;
            }
            Some(if channel == "hostscan_pending" {
                let created = match (f.next(), f.next()) {
                    (Some(t), Some(host)) => Some((t.parse().ok()?, host.to_string())),
                    _ => None,
                };
                Signal::Pending { scan_id, created }
            } else {
                Signal::Cancel { scan_id }
            })
        }
        "hostscan_events" => {
            let mut f = payload.splitn(8, ' ');
            let scan_id = f.next()?.parse().ok()?;
            let sequence = f.next()?.parse().ok()?;
            let status = f.next()?.parse().ok()?;
            let progress = f.next()?.parse().ok()?;
            if f.next()? == instance {
                return None;
            }
            let scan_type = f.next()?.parse().ok()?;
            let hostname = f.next()?.to_string();
            let current_step = f.next().unwrap_or("").to_string();
            Some(Signal::Event {
                scan_id,
                sequence,
                status,
                progress,
                scan_type,
                hostname,
                current_step,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        assert_eq!(
            parse(
                "hostscan_events",
                "5 9 running 40 other full db-1.example disks done",
                "me"
            ),
            Some(Signal::Event {
                scan_id: 5,
                sequence: 9,
                status: ScanStatus::Running,
                progress: 40,
                scan_type: ScanType::Full,
                hostname: "db-1.example".into(),
                current_step: "disks done".into()
            })
        );
        assert_eq!(
            parse("hostscan_events", "5 9 pending 0 other quick h ", "me"),
            Some(Signal::Event {
                scan_id: 5,
                sequence: 9,
                status: ScanStatus::Pending,
                progress: 0,
                scan_type: ScanType::Quick,
                hostname: "h".into(),
                current_step: String::new()
            })
        );
        assert_eq!(
            parse("hostscan_events", "5 9 running 40 me quick h disks", "me"),
            None
        );
        assert_eq!(
            parse("hostscan_pending", "7 other", "me"),
            Some(Signal::Pending {
                scan_id: 7,
                created: None
            })
        );
        assert_eq!(
            parse("hostscan_pending", "7  full web-1.example", "me"),
            Some(Signal::Pending {
                scan_id: 7,
                created: Some((ScanType::Full, "web-1.example".into()))
            })
        );
        assert_eq!(parse("hostscan_events", "5 9 bogus 40 x y", "me"), None);
        assert_eq!(
            parse("hostscan_cancel", "5 ", "me"),
            Some(Signal::Cancel { scan_id: 5 })
        );
        assert_eq!(parse("hostscan_cancel", "5 me", "me"), None);
        assert_eq!(parse("hostscan_pending", "x", "me"), None);
    }
}
