//! Maintenance: lease rescue and retention, on a timer. Every instance runs
//! this loop; the store lets one at a time do the work (PostgreSQL: an
//! advisory lock; SQLite: one process). Bounded passes, repeated at once
//! while there is more, so a first compaction of a large history does not
//! hold one long transaction.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::runner::Runner;
use crate::store::Store;

/// How often an instance tries to maintain. Claims rescue expired leases
/// themselves; this pass makes them visible (`pending`) and keeps the
/// tables bounded.
pub const EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// History kept in full before it is folded into per-day counts.
pub const DEFAULT_RETENTION: SignedDuration = SignedDuration::from_hours(90 * 24);

/// The instant before which history is compacted: `retention` ago, but
/// never inside the frequency cap's window, whose counts must stay exact.
pub fn horizon(now: Timestamp, retention: SignedDuration, cap_window: SignedDuration) -> Timestamp {
    now.checked_sub(retention.max(cap_window))
        .unwrap_or(Timestamp::MIN)
}

pub async fn maintenance_loop<S: Store + 'static>(
    runner: Arc<Runner<S>>,
    retention: SignedDuration,
    cap_window: SignedDuration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let now = Timestamp::now();
        let pause = match runner
            .store
            .maintain(now, horizon(now, retention, cap_window))
            .await
        {
            Ok(m) => {
                if m.rescued
                    + m.outbox_compacted
                    + m.events_compacted
                    + m.sends_pruned
                    + m.traces_pruned
                    > 0
                {
                    tracing::info!(
                        rescued = m.rescued,
                        outbox_compacted = m.outbox_compacted,
                        events_compacted = m.events_compacted,
                        sends_pruned = m.sends_pruned,
                        traces_pruned = m.traces_pruned,
                        "maintenance"
                    );
                }
                if m.more {
                    std::time::Duration::ZERO
                } else {
                    EVERY
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "maintenance");
                EVERY
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_horizon_never_cuts_into_the_cap_window() {
        let now: Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
        let day = SignedDuration::from_hours(24);
        assert_eq!(
            horizon(now, day * 90, day * 7),
            "2026-03-03T00:00:00Z".parse().unwrap()
        );
        assert_eq!(
            horizon(now, day, day * 7),
            "2026-05-25T00:00:00Z".parse().unwrap()
        );
    }
}
