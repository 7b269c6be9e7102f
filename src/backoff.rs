//! The one back-off every reconnect and retry loop uses: waits that double from a first one up
//! to a cap, each jittered by ±25 % so that replicas which lost the same server do not all come
//! back in the same millisecond. Reset it after a success.
//!
//! The loops that use it name their own first wait and cap (a reconnect is not a retry of a
//! failed apply); the waiting itself is [`pause`], which gives way to shutdown.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Exponential back-off with jitter; see the module documentation.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Waits from `first`, doubling up to `max` (before jitter).
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max: max.max(first),
            next: first,
        }
    }

    /// The back-off of a lost database connection: 100 ms doubling to 10 s.
    pub fn reconnect() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
    }

    /// Back to the first wait, after a success.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// The wait before the next attempt, jittered; the one after it doubles.
    pub fn next_wait(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(0.75 + rand::random::<f64>() * 0.5)
    }
}

/// Sleeps for `duration` unless `shutdown` comes first; true when the sleep completed.
pub async fn pause(duration: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(duration) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_to_the_cap_with_jitter_and_reset() {
        let mut b = Backoff::reconnect();
        let first = b.next_wait();
        assert!(first >= Duration::from_millis(75) && first <= Duration::from_millis(125));
        let second = b.next_wait();
        assert!(second >= Duration::from_millis(150) && second <= Duration::from_millis(250));
        for _ in 0..20 {
            b.next_wait();
        }
        let capped = b.next_wait();
        assert!(capped >= Duration::from_millis(7_500) && capped <= Duration::from_millis(12_500));
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(125));
    }

    #[test]
    fn a_cap_below_the_first_wait_is_the_first_wait() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        for _ in 0..5 {
            let wait = b.next_wait();
            assert!(wait >= Duration::from_millis(1_500) && wait <= Duration::from_millis(2_500));
        }
    }
}
