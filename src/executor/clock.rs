//! The time the executor goes by, injected ([`Clock`]) so tests of missed runs need not wait
//! for hours.

use chrono::{DateTime, Utc};

/// The time, injected so tests of missed runs need not wait for hours.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
