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

use crate::model::ScanStatus;

/// Something another replica did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A scan became PENDING.
    Pending,
    /// A scan's row changed; the new state as the trigger saw it.
    Event {
        scan_id: i64,
        sequence: i64,
        status: ScanStatus,
        progress: i32,
        current_step: String,
    },
    /// A cancel was requested for a RUNNING scan.
    Cancel { scan_id: i64 },
    /// The listener reconnected; signals may have been lost.
    Resync,
}

const POLL: Duration = Duration::from_millis(50);

/// Runs until `stop` is cancelled or `tx` is closed. Blocking: call it from
/// `spawn_blocking`.
pub fn run(
    url: String,
    instance: String,
    tx: mpsc::UnboundedSender<Signal>,
    stop: CancellationToken,
) {
    let mut first = true;
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
        if !first {
            tx.send(Signal::Resync).ok();
        }
        first = false;
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
/// Payloads: "id origin" (pending, cancel) and
/// "id sequence status progress origin current_step" (events).
fn parse(channel: &str, payload: &str, instance: &str) -> Option<Signal> {
    match channel {
        "hostscan_pending" | "hostscan_cancel" => {
            let (id, origin) = payload.split_once(' ').unwrap_or((payload, ""));
            if origin == instance {
                return None;
            }
            let scan_id = id.parse().ok()?;
            Some(if channel == "hostscan_pending" {
                Signal::Pending
            } else {
                Signal::Cancel { scan_id }
            })
        }
        "hostscan_events" => {
            let mut f = payload.splitn(6, ' ');
            let scan_id = f.next()?.parse().ok()?;
            let sequence = f.next()?.parse().ok()?;
            let status = f.next()?.parse().ok()?;
            let progress = f.next()?.parse().ok()?;
            if f.next()? == instance {
                return None;
            }
            let current_step = f.next().unwrap_or("").to_string();
            Some(Signal::Event {
                scan_id,
                sequence,
                status,
                progress,
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
            parse("hostscan_events", "5 9 running 40 other disks done", "me"),
            Some(Signal::Event {
                scan_id: 5,
                sequence: 9,
                status: ScanStatus::Running,
                progress: 40,
                current_step: "disks done".into()
            })
        );
        assert_eq!(
            parse("hostscan_events", "5 9 running 40 me disks", "me"),
            None
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
