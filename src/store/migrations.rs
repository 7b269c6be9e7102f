//! Versioned migrations embedded in the binary. Each is applied once, in order, in a
//! transaction that first takes an advisory lock, so replicas starting together take turns
//! and the second finds the work done.

use super::{Context, StoreError, LOCK_CLASS, LOCK_MIGRATE};

/// (version, name, SQL), in order. Append only: a released migration is never edited.
/// Versions grow along the list but may leave gaps: branches written side by side take numbers
/// of their own (6 was written while 5 was), and [`migrate`] applies every missing one in list
/// order, so a number merged later is applied wherever it is missing.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("migrations/0001_init.sql")),
    (2, "timeouts", include_str!("migrations/0002_timeouts.sql")),
    (3, "executor", include_str!("migrations/0003_executor.sql")),
    (4, "chains", include_str!("migrations/0004_chains.sql")),
    (5, "queue", include_str!("migrations/0005_queue.sql")),
    (
        6,
        "bulk_enqueue",
        include_str!("migrations/0006_bulk_enqueue.sql"),
    ),
];

/// The latest schema version this binary knows.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Brings the `pgsched` schema up to date; returns the versions applied now.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<Vec<i32>, StoreError> {
    let tx = client
        .transaction()
        .await
        .context("starting the migration")?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_CLASS, &LOCK_MIGRATE],
    )
    .await
    .context("waiting for the migration lock")?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS pgsched;
         CREATE TABLE IF NOT EXISTS pgsched.schema_migrations (
             version    int PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
    )
    .await
    .context("creating the pgsched schema")?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM pgsched.schema_migrations", &[])
        .await
        .context("reading applied migrations")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if let Some(newer) = applied
        .iter()
        .copied()
        .filter(|v| *v > latest_version())
        .max()
    {
        // An older binary must not run against a schema it does not understand.
        return Err(StoreError::SchemaTooNew {
            found: newer,
            known: latest_version(),
        });
    }
    let mut now_applied = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .context(format!("applying migration {version} ({name})"))?;
        tx.execute(
            "INSERT INTO pgsched.schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .context("recording the migration")?;
        now_applied.push(*version);
    }
    tx.commit().await.context("committing migrations")?;
    Ok(now_applied)
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    /// Gaps are allowed, disorder is not: [`super::latest_version`] takes the last entry as the
    /// newest, and `migrate` applies the list in order.
    #[test]
    fn versions_increase_along_the_list() {
        for pair in MIGRATIONS.windows(2) {
            assert!(
                pair[0].0 < pair[1].0,
                "migration {} ({}) is listed before {} ({})",
                pair[0].0,
                pair[0].1,
                pair[1].0,
                pair[1].1
            );
        }
    }
}
