//! The runs executing in this process ([`InFlight`]): their cancellation tokens, so that a
//! `Replace`, a cancellation request or a shutdown reaches them, and why each was cancelled,
//! so that its attempt is settled accordingly.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

/// Why a running run's cancellation token fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CancelReason {
    Replaced,
    Shutdown,
}

/// Runs in flight in this process: their cancellation tokens, so a Replace or a shutdown can
/// reach them.
#[derive(Default)]
pub(super) struct InFlight {
    runs: Mutex<HashMap<i64, (CancellationToken, Option<CancelReason>)>>,
}

impl InFlight {
    pub(super) fn cancel(&self, id: i64, reason: CancelReason) {
        if let Some((token, why)) = self.runs.lock().expect("in-flight lock").get_mut(&id) {
            why.get_or_insert(reason);
            token.cancel();
        }
    }
    pub(super) fn cancel_all(&self, reason: CancelReason) {
        for (token, why) in self.runs.lock().expect("in-flight lock").values_mut() {
            why.get_or_insert(reason);
            token.cancel();
        }
    }
    pub(super) fn len(&self) -> usize {
        self.runs.lock().expect("in-flight lock").len()
    }
    /// Starts tracking run `id`, not cancelled yet.
    pub(super) fn insert(&self, id: i64, token: CancellationToken) {
        self.runs
            .lock()
            .expect("in-flight lock")
            .insert(id, (token, None));
    }
    /// Why run `id` was cancelled, if it was.
    pub(super) fn reason(&self, id: i64) -> Option<CancelReason> {
        self.runs
            .lock()
            .expect("in-flight lock")
            .get(&id)
            .and_then(|(_, why)| *why)
    }
    pub(super) fn remove(&self, id: i64) {
        self.runs.lock().expect("in-flight lock").remove(&id);
    }
}
