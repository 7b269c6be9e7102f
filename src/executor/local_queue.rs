//! The local queue: runs this replica has claimed and not started yet, and how far ahead of
//! its free workers it claims. Pure (no database, no clock of its own), so its sizing is
//! tested with made-up instants.
//!
//! Claiming only as many runs as there are free slots makes every finished run cost a claim
//! round trip; claiming far ahead holds runs another replica could start now. So the queue
//! claims `ahead` runs beyond its free slots and adapts `ahead` to how fast runs leave it: it
//! doubles with every claim that got all it asked for (more is due: a backlog), and halves
//! when a run waited in the queue longer than [`SLOW_START`]. A backlog of quick runs grows it
//! to the bound, so that a claim takes many runs at once and comes while plenty are still
//! queued; slow jobs keep it small (their runs would wait), idle ones leave it where it is.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::store::claims::ClaimedRun;

/// A run that waited this long in the queue means the queue holds more than the workers take:
/// claim less far ahead, so that other replicas get the rest.
pub(super) const SLOW_START: Duration = Duration::from_millis(200);

/// Claimed runs waiting for a free slot, oldest claim first, and the claim-ahead size.
#[derive(Debug)]
pub(super) struct LocalQueue {
    runs: VecDeque<(ClaimedRun, Instant)>,
    /// How many runs to hold beyond the free slots.
    ahead: usize,
    /// The bound on `ahead` (`--prefetch`).
    max_ahead: usize,
    /// The smallest non-zero step of `ahead`.
    step: usize,
}

impl LocalQueue {
    /// An empty queue that claims at most `max_ahead` runs beyond its free slots; `step` is the
    /// first non-zero `ahead` (the concurrency is a good one).
    pub(super) fn new(max_ahead: usize, step: usize) -> Self {
        LocalQueue {
            runs: VecDeque::new(),
            ahead: 0,
            max_ahead,
            step: step.max(1),
        }
    }

    /// How many runs to claim now, with `free` slots free.
    pub(super) fn want(&self, free: usize) -> usize {
        (free + self.ahead).saturating_sub(self.runs.len())
    }

    /// Whether the queue runs low with `free` slots free: worth a claim when more is due.
    pub(super) fn low(&self, free: usize) -> bool {
        self.runs.len() < free + self.ahead / 2
    }

    /// Records a claim that asked for `asked` runs and got `got`. A full claim means a backlog:
    /// claim further ahead.
    pub(super) fn claimed(&mut self, asked: usize, got: usize) {
        if asked > 0 && got >= asked {
            self.ahead = (self.ahead * 2).max(self.step).min(self.max_ahead);
        }
    }

    /// Queues claimed runs behind the others.
    pub(super) fn push_back(&mut self, runs: Vec<ClaimedRun>, now: Instant) {
        self.runs.extend(runs.into_iter().map(|r| (r, now)));
    }

    /// Queues claimed runs before the others (runs a policy decided to start into free slots).
    pub(super) fn push_front(&mut self, runs: Vec<ClaimedRun>, now: Instant) {
        for run in runs.into_iter().rev() {
            self.runs.push_front((run, now));
        }
    }

    /// The next run to start and how long it waited; a long wait shrinks `ahead`.
    pub(super) fn pop(&mut self, now: Instant) -> Option<(ClaimedRun, Duration)> {
        let (run, queued) = self.runs.pop_front()?;
        let waited = now.saturating_duration_since(queued);
        if waited > SLOW_START {
            self.ahead /= 2;
        }
        Some((run, waited))
    }

    /// Empties the queue (shutdown, a lost connection): the ids of the runs to give back.
    pub(super) fn take_all(&mut self) -> Vec<i64> {
        self.runs.drain(..).map(|(r, _)| r.id).collect()
    }

    /// Runs waiting in the queue.
    pub(super) fn len(&self) -> usize {
        self.runs.len()
    }

    /// How many runs it claims beyond its free slots now.
    #[cfg(test)]
    fn ahead(&self) -> usize {
        self.ahead
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Runnable;
    use std::sync::Arc;

    fn run(id: i64) -> ClaimedRun {
        ClaimedRun {
            id,
            job: "j".into(),
            attempt: 1,
            due_at: chrono::Utc::now(),
            params: serde_json::json!({}),
            spec: Arc::new(
                Runnable::from_row("Job", serde_json::json!({"sql": "SELECT 1"})).unwrap(),
            ),
        }
    }

    fn runs(ids: std::ops::Range<i64>) -> Vec<ClaimedRun> {
        ids.map(run).collect()
    }

    #[test]
    fn an_idle_queue_claims_only_its_free_slots() {
        let q = LocalQueue::new(1000, 32);
        assert_eq!(q.want(32), 32);
        assert_eq!(q.want(0), 0);
    }

    #[test]
    fn full_claims_double_the_claim_ahead_up_to_the_bound() {
        let mut q = LocalQueue::new(100, 32);
        q.claimed(32, 32);
        assert_eq!(q.ahead(), 32);
        q.claimed(64, 64);
        assert_eq!(q.ahead(), 64);
        q.claimed(96, 96);
        assert_eq!(q.ahead(), 100);
        assert_eq!(q.want(32), 132);
    }

    #[test]
    fn a_partial_claim_keeps_the_size() {
        let mut q = LocalQueue::new(100, 32);
        q.claimed(32, 10);
        assert_eq!(q.ahead(), 0, "nothing more was due");
        q.claimed(0, 0);
        assert_eq!(q.ahead(), 0, "nothing was asked");
    }

    #[test]
    fn a_run_that_waited_too_long_halves_the_claim_ahead() {
        let mut q = LocalQueue::new(1000, 32);
        q.claimed(32, 32);
        q.claimed(64, 64);
        assert_eq!(q.ahead(), 64);
        let t0 = Instant::now();
        q.push_back(runs(0..3), t0);
        let (first, waited) = q.pop(t0 + Duration::from_millis(5)).unwrap();
        assert_eq!((first.id, waited), (0, Duration::from_millis(5)));
        assert_eq!(q.ahead(), 64, "a quick start changes nothing");
        q.pop(t0 + SLOW_START + Duration::from_millis(1)).unwrap();
        assert_eq!(q.ahead(), 32);
    }

    #[test]
    fn decided_runs_go_first_and_everything_can_be_given_back() {
        let mut q = LocalQueue::new(10, 2);
        let now = Instant::now();
        q.push_back(runs(1..3), now);
        q.push_front(runs(10..12), now);
        assert_eq!(q.pop(now).unwrap().0.id, 10);
        assert_eq!(q.take_all(), vec![11, 1, 2]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn the_queue_runs_low_below_its_free_slots_and_half_its_claim_ahead() {
        let mut q = LocalQueue::new(100, 8);
        q.claimed(8, 8);
        q.claimed(16, 16);
        assert_eq!(q.ahead(), 16);
        q.push_back(runs(0..9), Instant::now());
        assert!(!q.low(0), "9 queued, low below 8");
        assert!(q.low(2));
    }
}
