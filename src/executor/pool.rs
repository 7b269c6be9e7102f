//! How the executor's loops read a failure of their bookkeeping pool: a pool error as a
//! [`StoreError`], and whether an error means a failover left the pool on a standby.

use crate::store::StoreError;

/// A pool that cannot hand out a connection is a store error like any other: the loops retry.
pub(super) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(source) => StoreError::Db {
            context: "connecting to PostgreSQL".into(),
            source,
        },
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// A failover left the pool on a standby: its connections are to be dropped.
pub(super) fn is_read_only(e: &StoreError) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
}
