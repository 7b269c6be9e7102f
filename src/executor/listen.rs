//! The executor's LISTEN connection: what it hears wakes the claim loop or cancels a run in
//! flight here.

use std::sync::Arc;

use tokio::sync::Notify;

use super::in_flight::{CancelReason, InFlight};
use crate::store::listener::{Heard, Listener};
use crate::store::runs::CHANNEL_CANCEL;

/// What the LISTEN connection hears: new runs and changed jobs wake the executor, and so does
/// every (re)subscription, since notifications sent while it was away are lost; cancellation
/// requests reach the runs in flight here.
pub(super) async fn listen(mut listener: Listener, wake: Arc<Notify>, in_flight: Arc<InFlight>) {
    while let Some(heard) = listener.recv().await {
        match heard {
            Heard::Notification(n) if n.channel() == CHANNEL_CANCEL => {
                if let Ok(id) = n.payload().parse() {
                    in_flight.cancel(id, CancelReason::Replaced);
                }
            }
            Heard::Notification(_) | Heard::Subscribed => wake.notify_one(),
        }
    }
}
