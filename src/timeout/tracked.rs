//! What the deadline loop knows of one Timeout between statements ([`Tracked`]): its
//! statements on the current connection, when to act next, whether its deadline must be
//! computed again, and how long rows held by someone else have stayed held. Also the one
//! conversion of server times to the loop's monotonic clock. Pure state and arithmetic, no
//! I/O, so its rules are tested without a database.

use crate::store::timeouts::TimeoutDef;
use std::time::Duration;
use tokio::time::Instant;
use tokio_postgres::Statement;

/// Statements prepared on the current work connection.
pub(super) struct Prepared {
    pub(super) deadline: Statement,
    pub(super) expire: Statement,
}

/// The shortest time between two deadline computations of one Timeout. A row changed within
/// it is seen at most this much later; only a row inserted already (nearly) due could notice.
pub(super) const RECOMPUTE_GAP: Duration = Duration::from_millis(10);

/// One Timeout's state in the loop.
pub(super) struct Tracked {
    /// None when it cannot run (its table or columns are missing).
    pub(super) def: Option<TimeoutDef>,
    pub(super) prepared: Option<Prepared>,
    /// Rows may have changed: compute the deadline again before sleeping.
    pub(super) dirty: bool,
    /// Failed; tried again on the next poll.
    pub(super) broken: bool,
    /// When to run an expiry batch next.
    pub(super) wake: Option<Instant>,
    /// The server's now() (epoch seconds) at the last expiry statement: due rows with a
    /// deadline before it were tried then, and are held by someone else.
    pub(super) since: Option<f64>,
    /// When the last expiry statement was sent.
    pub(super) last_expiry: Option<Instant>,
    /// Expiry statements in a row that left due rows behind (held by someone else).
    pub(super) held_streak: u32,
    /// When the deadline was last computed: notifications are folded into at most one
    /// recompute per [`RECOMPUTE_GAP`], so a busy table costs the database little.
    pub(super) last_recompute: Option<Instant>,
    /// The error recorded last, so a Timeout failing on every poll is logged and written once.
    pub(super) error: Option<String>,
}

impl Tracked {
    pub(super) fn new(def: Option<TimeoutDef>) -> Tracked {
        Tracked {
            def,
            prepared: None,
            dirty: true,
            broken: false,
            wake: None,
            since: None,
            last_expiry: None,
            held_streak: 0,
            last_recompute: None,
            error: None,
        }
    }

    /// How long after the last expiry statement to try rows held by someone else again:
    /// `base`, doubling with each statement in a row that found them still held, up to 1 s.
    pub(super) fn held_retry(&self, base: Duration) -> Duration {
        let cap = base.max(Duration::from_secs(1));
        let doublings = self.held_streak.saturating_sub(1).min(10);
        base.saturating_mul(1 << doublings).min(cap)
    }

    pub(super) fn recompute_deferred(&self, now: Instant) -> bool {
        self.last_recompute
            .is_some_and(|at| now < at + RECOMPUTE_GAP)
    }

    /// When the loop must next act for this Timeout: expire, or compute a deferred deadline.
    pub(super) fn next_action(&self) -> Option<Instant> {
        let recompute = (self.dirty && !self.broken && self.def.is_some()).then(|| {
            self.last_recompute
                .map_or_else(Instant::now, |at| at + RECOMPUTE_GAP)
        });
        earliest(self.wake, recompute)
    }
}

/// The server time `at` (epoch seconds), on the local clock: `sent` is when the query that
/// returned the server's `now` was sent. None for never (+infinity, NULL).
pub(super) fn local_instant(sent: Instant, now: f64, at: Option<f64>) -> Option<Instant> {
    let at = at?;
    if at.is_nan() || at == f64::INFINITY {
        return None;
    }
    let ahead = at - now;
    if ahead <= 0.0 {
        return Some(sent);
    }
    // Past a day the poll will have recomputed it anyway; the 1 ms makes sure the server's
    // now() has passed the deadline when the expiry statement runs.
    let ahead = Duration::from_secs_f64(ahead.min(86_400.0)) + Duration::from_millis(1);
    Some(sent + ahead)
}

pub(super) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_times_become_local_instants() {
        let sent = Instant::now();
        assert_eq!(local_instant(sent, 100.0, None), None);
        assert_eq!(local_instant(sent, 100.0, Some(f64::INFINITY)), None);
        assert_eq!(
            local_instant(sent, 100.0, Some(f64::NEG_INFINITY)),
            Some(sent)
        );
        assert_eq!(local_instant(sent, 100.0, Some(99.0)), Some(sent));
        assert_eq!(
            local_instant(sent, 100.0, Some(102.5)),
            Some(sent + Duration::from_millis(2501))
        );
        // Far deadlines are capped at a day: the poll recomputes long before.
        assert!(
            local_instant(sent, 0.0, Some(1e12)).unwrap() <= sent + Duration::from_secs(86_401)
        );
    }

    #[test]
    fn held_rows_are_retried_sooner_then_every_second() {
        let mut t = Tracked::new(None);
        let base = Duration::from_millis(100);
        let waits: Vec<u128> = (1..=6)
            .map(|streak| {
                t.held_streak = streak;
                t.held_retry(base).as_millis()
            })
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        t.held_streak = 40;
        assert_eq!(t.held_retry(base), Duration::from_secs(1));
        assert_eq!(t.held_retry(Duration::from_secs(3)), Duration::from_secs(3));
    }
}
