//! The connection of a transactional chain (`transaction: true`): opened and BEGUN by the
//! first SQL step, a savepoint around each step that may fail without ending the chain, and
//! the COMMIT or ROLLBACK at the end. A connection whose state is in doubt never goes back to
//! the pool.

use std::time::Duration;

use crate::duration::format_duration;
use crate::executor::connections::Databases;
use crate::executor::tasks::{run_sql_on, Outcome, TaskContext, TaskOutcome};
use crate::store::describe_pg_error;
use crate::store::session::{self, TransactionState};

/// How long a ROLLBACK or COMMIT may take before the connection is closed instead.
const END_WAIT: Duration = Duration::from_secs(10);

/// The chain's transaction: one connection of the SQL steps' database, opened by the first
/// SQL step. A connection that saw an interrupted statement (or whose state is unknown) is
/// closed rather than returned to the pool, since a late cancel request could still hit it.
pub(super) struct Transaction<'d> {
    databases: &'d Databases,
    database: Option<&'d str>,
    conn: Option<deadpool_postgres::Object>,
    /// The connector `conn` was made with, for cancel requests.
    tls: Option<crate::store::tls::Tls>,
    /// Whether BEGIN ran (so there is work to commit or roll back).
    pub(super) began: bool,
    /// Close the connection at the end instead of returning it to the pool.
    discard: bool,
}

impl<'d> Transaction<'d> {
    pub(super) fn new(databases: &'d Databases, database: Option<&'d str>) -> Self {
        Transaction {
            databases,
            database,
            conn: None,
            tls: None,
            began: false,
            discard: false,
        }
    }

    /// Runs one SQL step in the transaction, inside a savepoint when asked. Returns the
    /// outcome and whether the transaction can go on after a failure (rolled back to the
    /// savepoint, or nothing begun yet).
    pub(super) async fn run_sql(
        &mut self,
        sql: &str,
        ctx: &TaskContext<'_>,
        savepoint: bool,
    ) -> (TaskOutcome, bool) {
        if self.conn.is_none() {
            if let Err(outcome) = self.open(ctx).await {
                return (outcome, true);
            }
        }
        let client: &tokio_postgres::Client = self.conn.as_ref().expect("connected");
        if savepoint {
            if let Err(e) = session::step_savepoint(client).await {
                self.discard = true;
                return (
                    failed(format!(
                        "cannot take a savepoint: {}",
                        describe_pg_error(&e)
                    )),
                    false,
                );
            }
        }
        let tls = self.tls.as_ref().expect("set with the connection");
        let outcome = run_sql_on(client, tls, sql, ctx).await;
        if matches!(outcome.status, Outcome::TimedOut | Outcome::Cancelled) {
            self.discard = true;
        }
        if outcome.status == Outcome::Succeeded {
            return self.keep(outcome, savepoint).await;
        }
        if !savepoint {
            return (outcome, false);
        }
        self.roll_back_step(outcome).await
    }

    /// Takes the connection and BEGINs, unless the run is interrupted first. Nothing has
    /// begun when this fails, so the chain can go on.
    async fn open(&mut self, ctx: &TaskContext<'_>) -> Result<(), TaskOutcome> {
        let got = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return Err(interrupted(Outcome::Cancelled, "cancelled")),
            _ = sleep_for(ctx.timeout) => return Err(interrupted(Outcome::TimedOut, "timed out waiting for a connection")),
            got = self.databases.get(self.database) => got,
        };
        let (conn, tls) = match got {
            Ok(got) => got,
            Err(e) => return Err(failed(e.to_string())),
        };
        if let Err(e) = session::begin(&conn).await {
            drop(deadpool_postgres::Object::take(conn));
            return Err(failed(describe_pg_error(&e)));
        }
        self.conn = Some(conn);
        self.tls = Some(tls);
        self.began = true;
        Ok(())
    }

    /// After a step's SQL succeeded: checks that the transaction is still open and releases
    /// the step's savepoint.
    async fn keep(&mut self, mut outcome: TaskOutcome, savepoint: bool) -> (TaskOutcome, bool) {
        let client: &tokio_postgres::Client = self.conn.as_ref().expect("connected");
        if let Err(error) = still_in_transaction(client).await {
            self.discard = true;
            outcome.status = Outcome::Failed;
            outcome.error = Some(error);
            return (outcome, false);
        }
        if savepoint {
            if let Err(e) = session::release_step_savepoint(client).await {
                self.discard = true;
                return (
                    failed(format!(
                        "cannot release the savepoint: {}",
                        describe_pg_error(&e)
                    )),
                    false,
                );
            }
        }
        (outcome, true)
    }

    /// After a step's SQL failed inside its savepoint: undoes the step alone.
    async fn roll_back_step(&mut self, mut outcome: TaskOutcome) -> (TaskOutcome, bool) {
        let client: &tokio_postgres::Client = self.conn.as_ref().expect("connected");
        match session::roll_back_step(client).await {
            Ok(()) => (outcome, true),
            Err(e) => {
                self.discard = true;
                let error = format!(
                    "{}; then the rollback to the savepoint failed: {}",
                    outcome.error.as_deref().unwrap_or("failed"),
                    describe_pg_error(&e)
                );
                outcome.error = Some(error);
                (outcome, false)
            }
        }
    }

    /// Commits what the SQL steps did.
    pub(super) async fn commit(&mut self) -> Result<(), String> {
        let Some(conn) = self.conn.take() else {
            return Ok(());
        };
        match tokio::time::timeout(END_WAIT, session::commit(&conn)).await {
            Ok(Ok(())) => {
                self.release(conn);
                Ok(())
            }
            Ok(Err(e)) => {
                self.discard = true;
                self.release(conn);
                Err(describe_pg_error(&e))
            }
            Err(_) => {
                self.discard = true;
                self.release(conn);
                Err(format!(
                    "COMMIT did not finish within {}",
                    format_duration(END_WAIT)
                ))
            }
        }
    }

    /// Rolls back everything the SQL steps did.
    pub(super) async fn rollback(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if !self.discard {
            match tokio::time::timeout(END_WAIT, session::rollback(&conn)).await {
                Ok(Ok(())) => {}
                _ => self.discard = true,
            }
        }
        // A discarded connection is closed: the server rolls its transaction back.
        self.release(conn);
    }

    fn release(&self, conn: deadpool_postgres::Object) {
        if self.discard {
            drop(deadpool_postgres::Object::take(conn));
        } else {
            drop(conn);
        }
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        // Never hand a connection that is inside a transaction back to the pool.
        if let Some(conn) = self.conn.take() {
            drop(deadpool_postgres::Object::take(conn));
        }
    }
}

/// Fails when a step's SQL ended the chain's transaction (COMMIT or ROLLBACK of its own), or
/// left it aborted.
async fn still_in_transaction(client: &tokio_postgres::Client) -> Result<(), String> {
    match session::transaction_state(client).await {
        Ok(TransactionState::InBlock) => Ok(()),
        Ok(TransactionState::Idle) => Err("the step's SQL ended the chain's transaction (COMMIT or ROLLBACK in a step); what the SQL steps did until then may have been committed".into()),
        Ok(TransactionState::Aborted) => {
            Err("the step's SQL left the chain's transaction aborted".into())
        }
        Err(e) => Err(describe_pg_error(&e)),
    }
}

async fn sleep_for(limit: Option<Duration>) {
    match limit {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

fn failed(error: String) -> TaskOutcome {
    TaskOutcome {
        status: Outcome::Failed,
        error: Some(error),
        output: String::new(),
        rows_affected: None,
    }
}

fn interrupted(status: Outcome, error: &str) -> TaskOutcome {
    TaskOutcome {
        status,
        error: Some(error.into()),
        output: String::new(),
        rows_affected: None,
    }
}
