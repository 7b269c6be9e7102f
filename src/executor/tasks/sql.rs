//! SQL tasks: on a pooled connection of the task's database (`run_sql_pooled`), or on a
//! connection the caller holds ([`run_sql_on`], a chain's transaction). Owns what interrupting
//! a statement takes (the server's `statement_timeout` as a backstop, a cancel request, the
//! wait for the statement to end) and what a finished statement leaves on its connection.

use std::time::Duration;

use futures_util::TryStreamExt;
use serde_json::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, SimpleQueryMessage};

use super::context::{Outcome, TaskContext, TaskOutcome};
use super::limits::{Interrupt, Limits};
use crate::spec::sql::scan_sql;
use crate::store::describe_pg_error;
use crate::store::session::{self, TransactionState};
use crate::store::states::Effects;
use crate::store::tls::Tls;

/// After a cancel request, how long to wait for the server to end the statement.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// The server-side `statement_timeout` is set this much past the run's deadline: the run's
/// own timer fires first and sends a cancel request; the server's limit is the backstop for
/// when that request cannot reach the server.
const STATEMENT_TIMEOUT_MARGIN: Duration = Duration::from_secs(2);

/// Runs SQL on a connection the caller holds, e.g. every SQL step of a chain in one
/// transaction. Same semantics as a SQL task of [`run_task`](super::run_task), except that
/// the caller owns the connection's state: no transaction is rolled back here.
///
/// When the outcome is `TimedOut` or `Cancelled`, a cancel request was sent and the statement
/// has ended (or did not end within a few seconds); the caller should roll back and not run
/// unrelated work on that connection, since a late cancel request could still hit it.
///
/// `tls` is the connector the connection was made with: a cancel request goes out the same way.
pub async fn run_sql_on<C>(client: &C, tls: &Tls, sql: &str, ctx: &TaskContext<'_>) -> TaskOutcome
where
    C: GenericClient + Sync,
{
    let limits = Limits::start(ctx);
    let run = execute_sql(client.client(), tls, sql, ctx.params, &limits).await;
    if !run.interrupted && limits.deadline.is_some() {
        // In a chain's transaction the SET would otherwise outlive this step. An aborted
        // transaction refuses the RESET, but its rollback undoes the SET anyway.
        let _ = session::reset_statement_timeout(client.client()).await;
    }
    run.outcome
}

/// A SQL task's transaction, left open after its SQL succeeded so that the run's record is
/// written in it: [`HeldTransaction::commit`] commits both. Dropped without a commit, its
/// connection is closed, and the server rolls the SQL's writes back.
pub struct HeldTransaction {
    object: Option<deadpool_postgres::Object>,
}

impl HeldTransaction {
    fn object(&self) -> &deadpool_postgres::Object {
        self.object.as_ref().expect("held until committed")
    }

    /// The connection the transaction is open on.
    pub fn client(&self) -> &tokio_postgres::Client {
        self.object()
    }

    /// `sql` prepared on the transaction's connection, once per connection (the pool keeps
    /// prepared statements across tasks).
    pub async fn prepare_cached(
        &self,
        sql: &str,
    ) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
        self.object().prepare_cached(sql).await
    }

    /// Commits the SQL's writes and whatever was written here since.
    pub async fn commit(mut self) -> Result<(), tokio_postgres::Error> {
        let object = self.object.take().expect("held until committed");
        let committed = session::commit(&object).await;
        if committed.is_err() {
            drop(deadpool_postgres::Object::take(object));
        }
        committed
    }

    /// Rolls the SQL's writes back; the connection goes back to the pool if that worked.
    async fn roll_back(mut self) {
        let object = self.object.take().expect("held until committed");
        if session::rollback(&object).await.is_err() {
            drop(deadpool_postgres::Object::take(object));
        }
    }
}

impl Drop for HeldTransaction {
    fn drop(&mut self) {
        // Never hand a connection inside a transaction back to the pool.
        if let Some(object) = self.object.take() {
            drop(deadpool_postgres::Object::take(object));
        }
    }
}

/// A SQL task on the scheduler's own database, its writes to commit with its run: the SQL runs
/// in a transaction that is returned open when it succeeded ([`HeldTransaction`]) and rolled
/// back when it did not. SQL that controls its own transaction, that PostgreSQL refuses to run
/// in a transaction block (`VACUUM`, `CREATE INDEX CONCURRENTLY`, a procedure that commits), and
/// SQL on another Connection run as before, committed apart from the run.
pub(super) async fn run_sql_with_run(
    sql: &str,
    ctx: &TaskContext<'_>,
    limits: &Limits,
) -> (TaskOutcome, Effects, Option<HeldTransaction>) {
    if ctx.database.is_some() || scan_sql(sql).own_transaction {
        return (
            run_sql_pooled(sql, ctx, limits).await,
            Effects::Separate,
            None,
        );
    }
    let (object, tls) = match connection(ctx, limits).await {
        Ok(got) => got,
        Err(outcome) => return (outcome, Effects::WithRun, None),
    };
    let held = HeldTransaction {
        object: Some(object),
    };
    if let Err(e) = session::begin(held.client()).await {
        return (
            TaskOutcome::failed(describe_pg_error(&e), String::new()),
            Effects::WithRun,
            None,
        );
    }
    let run = execute_sql(held.client(), &tls, sql, ctx.params, limits).await;
    if run.interrupted {
        // Dropping `held` closes the connection: a late cancel request hits nothing.
        return (run.outcome, Effects::WithRun, None);
    }
    // SQL without transaction control cannot end the transaction: a procedure or a DO block
    // that commits fails inside one (and is run apart, below). So a success leaves it open.
    match run.outcome.status {
        Outcome::Succeeded => (run.outcome, Effects::WithRun, Some(held)),
        Outcome::Failed if refused_in_transaction(run.error_code.as_ref()) => {
            // Nothing ran: run it the way it can run, committed apart from the run.
            held.roll_back().await;
            (
                run_sql_pooled(sql, ctx, limits).await,
                Effects::Separate,
                None,
            )
        }
        // A failed attempt: its writes are rolled back.
        _ => {
            held.roll_back().await;
            (run.outcome, Effects::WithRun, None)
        }
    }
}

/// A pooled connection of the task's database, within the run's deadline and cancellation;
/// the outcome to record when there is none.
async fn connection(
    ctx: &TaskContext<'_>,
    limits: &Limits,
) -> Result<(deadpool_postgres::Object, Tls), TaskOutcome> {
    match limits.bounded(ctx.databases.get(ctx.database)).await {
        Err(interrupt) => Err(limits.outcome(interrupt, String::new())),
        Ok(Err(e)) => Err(TaskOutcome::failed(e.to_string(), String::new())),
        Ok(Ok(got)) => Ok(got),
    }
}

/// Errors of SQL that PostgreSQL runs only outside a transaction block.
fn refused_in_transaction(code: Option<&SqlState>) -> bool {
    matches!(code, Some(c) if *c == SqlState::ACTIVE_SQL_TRANSACTION
        || *c == SqlState::INVALID_TRANSACTION_TERMINATION)
}

/// A SQL outcome, and whether the statement had to be interrupted (after which the
/// connection may still receive a late cancel request).
struct SqlRun {
    outcome: TaskOutcome,
    interrupted: bool,
    /// The SQLSTATE of the error the SQL failed with.
    error_code: Option<SqlState>,
}

/// A SQL task on a pooled connection of the task's database.
pub(super) async fn run_sql_pooled(
    sql: &str,
    ctx: &TaskContext<'_>,
    limits: &Limits,
) -> TaskOutcome {
    let (object, tls) = match connection(ctx, limits).await {
        Ok(got) => got,
        Err(outcome) => return outcome,
    };
    let client: &tokio_postgres::Client = &object;
    let run = execute_sql(client, &tls, sql, ctx.params, limits).await;
    if run.interrupted {
        // A cancel request that arrives late would hit whatever the connection runs next:
        // never hand this connection to another task.
        drop(deadpool_postgres::Object::take(object));
        return run.outcome;
    }
    let mut outcome = run.outcome;
    match roll_back_open_transaction(client).await {
        Ok(false) => {}
        Ok(true) => {
            if outcome.status == Outcome::Succeeded {
                outcome.status = Outcome::Failed;
                outcome.error = Some(
                    "the SQL left a transaction open (BEGIN without COMMIT); it was rolled back"
                        .to_string(),
                );
            }
        }
        Err(e) => {
            tracing::warn!(job = ctx.job, run_id = ctx.run_id, error = %describe_pg_error(&e),
                "cannot check the connection after a SQL task; closing it");
            drop(deadpool_postgres::Object::take(object));
        }
    }
    // `statement_timeout` needs no RESET here: the pool recycles connections with RESET ALL.
    outcome
}

/// Runs `sql` with the run's deadline and cancellation: the server's `statement_timeout` as a
/// backstop, and a cancel request when the deadline passes or the run is cancelled.
async fn execute_sql(
    client: &tokio_postgres::Client,
    tls: &Tls,
    sql: &str,
    params: &Value,
    limits: &Limits,
) -> SqlRun {
    let finished = |outcome| SqlRun {
        outcome,
        interrupted: false,
        error_code: None,
    };
    if let Some(remaining) = limits.remaining() {
        if remaining.is_zero() {
            return finished(limits.outcome(Interrupt::TimedOut, String::new()));
        }
        let limit = remaining + STATEMENT_TIMEOUT_MARGIN;
        if let Err(e) = session::set_statement_timeout(client, limit).await {
            return finished(TaskOutcome::failed(describe_pg_error(&e), String::new()));
        }
    }
    let work = run_statements(client, sql, params);
    tokio::pin!(work);
    let interrupt = tokio::select! {
        biased;
        result = &mut work => {
            let error_code = result.as_ref().err().and_then(|e| e.code().cloned());
            return SqlRun { error_code, ..finished(sql_outcome(result, limits)) };
        }
        interrupt = limits.interrupted() => interrupt,
    };
    // Dropping the query would leave the backend running it: ask the server to cancel, and
    // wait for the statement to end, so nothing of this run is still running once recorded.
    // The cancel request opens a connection of its own, with the same TLS as the session's.
    if let Err(e) = client.cancel_token().cancel_query(tls.clone()).await {
        tracing::warn!(error = %describe_pg_error(&e), "cannot send a cancel request for a SQL task");
    }
    if tokio::time::timeout(CANCEL_WAIT, work).await.is_err() {
        tracing::warn!("a cancelled SQL statement did not end within {CANCEL_WAIT:?}");
    }
    SqlRun {
        outcome: limits.outcome(interrupt, String::new()),
        interrupted: true,
        error_code: None,
    }
}

/// How many statements ran and the rows they affected (or returned).
struct SqlCounts {
    statements: usize,
    rows: u64,
}

async fn run_statements(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &Value,
) -> Result<SqlCounts, tokio_postgres::Error> {
    if scan_sql(sql).max_param >= 1 {
        // One statement, parameters bound as `$1` jsonb (the unnamed statement: one round
        // trip, nothing left prepared on the server). Rows are streamed and dropped, so a big
        // SELECT costs no memory here.
        let rows = client.query_typed_raw(sql, [(params, Type::JSONB)]).await?;
        tokio::pin!(rows);
        while rows.try_next().await?.is_some() {}
        let count = rows.rows_affected().unwrap_or(0);
        return Ok(SqlCounts {
            statements: 1,
            rows: count,
        });
    }
    // Several statements in one simple-protocol message: the server runs them in one implicit
    // transaction, unless the SQL itself says BEGIN/COMMIT.
    let messages = client.simple_query_raw(sql).await?;
    tokio::pin!(messages);
    let mut counts = SqlCounts {
        statements: 0,
        rows: 0,
    };
    while let Some(message) = messages.try_next().await? {
        if let SimpleQueryMessage::CommandComplete(rows) = message {
            counts.statements += 1;
            counts.rows += rows;
        }
    }
    Ok(counts)
}

fn sql_outcome(result: Result<SqlCounts, tokio_postgres::Error>, limits: &Limits) -> TaskOutcome {
    match result {
        Ok(counts) => {
            let output = if counts.statements == 1 {
                format!("rows: {}", counts.rows)
            } else {
                format!("statements: {}, rows: {}", counts.statements, counts.rows)
            };
            TaskOutcome {
                rows_affected: Some(i64::try_from(counts.rows).unwrap_or(i64::MAX)),
                ..TaskOutcome::succeeded(output)
            }
        }
        // The server-side statement_timeout fired (it is set just past the deadline).
        Err(e) if e.code() == Some(&SqlState::QUERY_CANCELED) && limits.past_deadline() => {
            limits.outcome(Interrupt::TimedOut, String::new())
        }
        Err(e) => TaskOutcome::failed(describe_pg_error(&e), String::new()),
    }
}

/// Whether the connection was left inside a transaction block (rolled back if so), so that
/// the next task on this pooled connection does not run inside someone else's transaction.
async fn roll_back_open_transaction(
    client: &tokio_postgres::Client,
) -> Result<bool, tokio_postgres::Error> {
    match session::transaction_state(client).await? {
        TransactionState::Idle => Ok(false),
        TransactionState::InBlock | TransactionState::Aborted => {
            session::rollback(client).await?;
            Ok(true)
        }
    }
}
