//! Reconcile leadership: one replica at a time holds a session-level advisory lock on a
//! connection of its own. The server releases the lock the moment that connection ends, so a
//! killed leader hands over as soon as its socket closes; a partitioned one as soon as TCP
//! keepalives give up on it.

use super::{Context, StoreError, LOCK_CLASS};
use tokio_postgres::Client;

/// The leadership lock's key, beside the migration, reconcile and claim locks.
pub const LOCK_LEADER: i32 = 4;

/// The `application_name` of the leadership session, so that `pg_stat_activity` shows who
/// leads (`pgsched leader host/pid`).
pub fn application_name(worker: &str) -> String {
    format!("pgsched leader {worker}")
}

/// Tries to take the leadership without waiting; true when this session now holds it (or
/// already did).
pub async fn try_lead(c: &Client) -> Result<bool, StoreError> {
    Ok(c.query_one(
        "SELECT pg_try_advisory_lock($1, $2)",
        &[&LOCK_CLASS, &LOCK_LEADER],
    )
    .await
    .context("trying the leadership lock")?
    .get(0))
}

/// Proves the leadership connection is still alive (and with it the lock).
pub async fn still_leading(c: &Client) -> Result<bool, StoreError> {
    Ok(c.query_one(
        "SELECT EXISTS (SELECT 1 FROM pg_locks
                         WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
                           AND classid = $1::int::oid AND objid = $2::int::oid AND objsubid = 2)",
        &[&LOCK_CLASS, &LOCK_LEADER],
    )
    .await
    .context("checking the leadership lock")?
    .get(0))
}

/// The `application_name` of the session that holds the leadership, if any.
pub async fn current_leader(
    c: &impl tokio_postgres::GenericClient,
) -> Result<Option<String>, StoreError> {
    Ok(c.query_opt(
        // Advisory locks are per database: other databases on the server have leaders too.
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)
          WHERE l.locktype = 'advisory' AND l.granted
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND l.classid = $1::int::oid AND l.objid = $2::int::oid AND l.objsubid = 2",
        &[&LOCK_CLASS, &LOCK_LEADER],
    )
    .await
    .context("reading who leads")?
    .map(|r| r.get(0)))
}
