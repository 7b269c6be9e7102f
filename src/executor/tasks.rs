//! Running one task of one run: SQL, a program (`command`), a shell script (`shell`) or a
//! builtin (`sleep`, `log`, `notify`, `http`), under the run's timeout and cancellation.
//!
//! Every task kind ends in a [`TaskOutcome`]; nothing here returns an error or panics on a
//! failing task, because a failure is a normal result the executor records. Interrupting a task
//! never just drops it: a SQL statement gets a cancel request and the run waits for the server
//! to end it, a program's process group gets SIGTERM and, [`KILL_GRACE`] later, SIGKILL. So
//! once a run is recorded as timed out or cancelled, nothing of it is still running. (A
//! program that ends by itself decides the run's end alone: processes it left in the
//! background are not killed, as under cron, and do not hold the run by keeping its pipes.)
//!
//! What is kept of a task's output is bounded ([`OUTPUT_LIMIT`]): the tail of a program's
//! output, the head of an HTTP response body.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use futures_util::TryStreamExt;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, SimpleQueryMessage};
use tokio_util::sync::CancellationToken;

use super::connections::Databases;
use crate::duration::format_duration;
use crate::spec::sql::scan_sql;
use crate::spec::{Builtin, HttpMethod, LogLevel, Task};
use crate::store::describe_pg_error;
use crate::store::session::{self, TransactionState};
use crate::store::tls::Tls;

/// How much of a task's output a run keeps: the last 64 KiB of a program's stdout and
/// stderr, the first 64 KiB of an HTTP response body.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// How long a program has to exit after SIGTERM before its process group gets SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(10);

/// Once a program's main process has exited, how long to go on reading output that its
/// leftover children may still hold open: a daemon started with `&` must not hold the run.
const PIPE_DRAIN_GRACE: Duration = Duration::from_millis(500);

/// After a cancel request, how long to wait for the server to end the statement.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// The server-side `statement_timeout` is set this much past the run's deadline: the run's
/// own timer fires first and sends a cancel request; the server's limit is the backstop for
/// when that request cannot reach the server.
const STATEMENT_TIMEOUT_MARGIN: Duration = Duration::from_secs(2);

/// How much of stderr is kept apart to quote its last line in a failed program's error.
const STDERR_TAIL: usize = 4 * 1024;

/// The longest last line of stderr quoted in an error message.
const ERROR_LINE_LIMIT: usize = 500;

/// What a task may know about the run it belongs to, and what it runs with.
#[derive(Debug)]
pub struct TaskContext<'a> {
    /// The job (or chain) name, for `PGSCHED_JOB` and log lines.
    pub job: &'a str,
    /// The run's id, for `PGSCHED_RUN_ID` and log lines.
    pub run_id: i64,
    /// 1 for the first attempt, 2 for the first retry, …
    pub attempt: i32,
    /// The run's parameters: `$1` of SQL tasks, `PGSCHED_PARAMS` of programs.
    pub params: &'a Value,
    /// Counted from the start of [`run_task`] (or [`run_sql_on`]).
    pub timeout: Option<Duration>,
    /// Cancelled by the executor for `concurrencyPolicy: Replace` and on shutdown.
    pub cancel: CancellationToken,
    /// The pools SQL and `notify` tasks take their connection from.
    pub databases: &'a Databases,
    /// The `Connection` SQL and `notify` tasks run on; `None` for the scheduler's own database.
    pub database: Option<&'a str>,
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The task completed without error.
    Succeeded,
    /// The task failed: a SQL error, a program exiting non-zero, an unexpected HTTP status, …
    Failed,
    /// The run's timeout expired; the task was stopped.
    TimedOut,
    /// [`TaskContext::cancel`] fired; the task was stopped.
    Cancelled,
}

/// The result of one task, as the run records it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOutcome {
    /// How the task ended.
    pub status: Outcome,
    /// Why the task did not succeed; `None` when it did.
    pub error: Option<String>,
    /// What the task printed or returned, bounded by [`OUTPUT_LIMIT`].
    pub output: String,
    /// Rows affected (or returned) by a SQL task.
    pub rows_affected: Option<i64>,
}

impl TaskOutcome {
    fn succeeded(output: String) -> TaskOutcome {
        TaskOutcome {
            status: Outcome::Succeeded,
            error: None,
            output,
            rows_affected: None,
        }
    }

    fn failed(error: impl Into<String>, output: String) -> TaskOutcome {
        TaskOutcome {
            status: Outcome::Failed,
            error: Some(error.into()),
            output,
            rows_affected: None,
        }
    }
}

/// Runs `task` to its end, its timeout or its cancellation, whichever comes first.
pub async fn run_task(task: &Task<'_>, ctx: &TaskContext<'_>) -> TaskOutcome {
    let limits = Limits::start(ctx);
    match task {
        Task::Sql(sql) => run_sql_pooled(sql, ctx, &limits).await,
        Task::Command {
            argv,
            env,
            working_dir,
        } => {
            let Some((program, args)) = argv.split_first() else {
                return TaskOutcome::failed("the command is empty", String::new());
            };
            let mut command = Command::new(program);
            command.args(args);
            run_program(command, program, env, *working_dir, ctx, &limits).await
        }
        Task::Shell {
            script,
            env,
            working_dir,
        } => {
            let mut command = Command::new("/bin/sh");
            // The job name becomes `$0`, so the shell's own messages say which job failed.
            command.arg("-c").arg(script).arg(ctx.job);
            run_program(command, "/bin/sh", env, *working_dir, ctx, &limits).await
        }
        Task::Builtin(builtin) => run_builtin(builtin, ctx, &limits).await,
    }
}

/// Runs SQL on a connection the caller holds, e.g. every SQL step of a chain in one
/// transaction. Same semantics as a SQL task of [`run_task`], except that the caller owns the
/// connection's state: no transaction is rolled back here.
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

// ---------------------------------------------------------------------------------------------
// Deadlines and cancellation

/// The run's deadline and cancellation, fixed when the task starts.
struct Limits {
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    cancel: CancellationToken,
}

/// Why a task was stopped before it ended.
#[derive(Debug, Clone, Copy)]
enum Interrupt {
    TimedOut,
    Cancelled,
}

impl Limits {
    fn start(ctx: &TaskContext<'_>) -> Limits {
        Limits {
            deadline: ctx.timeout.map(|t| Instant::now() + t),
            timeout: ctx.timeout,
            cancel: ctx.cancel.clone(),
        }
    }

    /// Completes when the deadline passes or the run is cancelled.
    async fn interrupted(&self) -> Interrupt {
        let deadline = async {
            match self.deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Interrupt::Cancelled,
            _ = deadline => Interrupt::TimedOut,
        }
    }

    fn already_interrupted(&self) -> Option<Interrupt> {
        if self.cancel.is_cancelled() {
            Some(Interrupt::Cancelled)
        } else if self.past_deadline() {
            Some(Interrupt::TimedOut)
        } else {
            None
        }
    }

    fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Runs `work` unless the run is interrupted first (in which case `work` is dropped: only
    /// for work that is safe to abandon).
    async fn bounded<T>(&self, work: impl Future<Output = T>) -> Result<T, Interrupt> {
        tokio::select! {
            biased;
            interrupt = self.interrupted() => Err(interrupt),
            value = work => Ok(value),
        }
    }

    fn outcome(&self, interrupt: Interrupt, output: String) -> TaskOutcome {
        let (status, error) = match interrupt {
            Interrupt::TimedOut => (Outcome::TimedOut, self.timed_out_message()),
            Interrupt::Cancelled => (Outcome::Cancelled, "cancelled".to_string()),
        };
        TaskOutcome {
            status,
            error: Some(error),
            output,
            rows_affected: None,
        }
    }

    fn timed_out_message(&self) -> String {
        match self.timeout {
            Some(t) => format!("timed out after {}", format_duration(t)),
            None => "timed out".to_string(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SQL

/// A SQL outcome, and whether the statement had to be interrupted (after which the
/// connection may still receive a late cancel request).
struct SqlRun {
    outcome: TaskOutcome,
    interrupted: bool,
}

/// A SQL task on a pooled connection of the task's database.
async fn run_sql_pooled(sql: &str, ctx: &TaskContext<'_>, limits: &Limits) -> TaskOutcome {
    let (object, tls) = match limits.bounded(ctx.databases.get(ctx.database)).await {
        Err(interrupt) => return limits.outcome(interrupt, String::new()),
        Ok(Err(e)) => return TaskOutcome::failed(e.to_string(), String::new()),
        Ok(Ok(got)) => got,
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
        result = &mut work => return finished(sql_outcome(result, limits)),
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

// ---------------------------------------------------------------------------------------------
// Programs: `command` and `shell`

async fn run_program(
    mut command: Command,
    program: &str,
    env: &BTreeMap<String, String>,
    working_dir: Option<&str>,
    ctx: &TaskContext<'_>,
    limits: &Limits,
) -> TaskOutcome {
    command
        .envs(env)
        // After the spec's env: these are pgsched's contract with the program.
        .env("PGSCHED_PARAMS", ctx.params.to_string())
        .env("PGSCHED_JOB", ctx.job)
        .env("PGSCHED_RUN_ID", ctx.run_id.to_string())
        .env("PGSCHED_ATTEMPT", ctx.attempt.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout reaches the children a script started too.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = working_dir {
        command.current_dir(dir);
    }
    if let Some(interrupt) = limits.already_interrupted() {
        return limits.outcome(interrupt, String::new());
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return TaskOutcome::failed(spawn_error(&e, program, working_dir), String::new()),
    };
    let group = ProcessGroup::of(&child);
    let mut captured = Captured::default();
    let (status, interrupt) = {
        let capture = capture_output(child.stdout.take(), child.stderr.take(), &mut captured);
        let mut output = OutputCopy {
            copy: std::pin::pin!(capture),
            done: false,
        };
        let (status, interrupt) = match output.wait(&mut child, limits.interrupted()).await {
            Ok(status) => (status, None),
            Err(interrupt) => {
                group.signal(libc::SIGTERM);
                let kill_at = Instant::now() + KILL_GRACE;
                let status = match output
                    .wait(&mut child, tokio::time::sleep_until(kill_at))
                    .await
                {
                    Ok(status) => {
                        // Children that outlive the main process get the rest of the grace,
                        // then SIGKILL: nothing of an interrupted run may go on running.
                        output.pump_while(|| group.is_alive(), kill_at).await;
                        group.signal(libc::SIGKILL);
                        status
                    }
                    Err(()) => {
                        group.signal(libc::SIGKILL);
                        match output
                            .wait(
                                &mut child,
                                std::future::pending::<std::convert::Infallible>(),
                            )
                            .await
                        {
                            Ok(status) => status,
                            Err(never) => match never {},
                        }
                    }
                };
                (status, Some(interrupt))
            }
        };
        // The main process is gone. Output still in the pipes is read, but a leftover child
        // that keeps them open does not hold the run.
        if !output.done {
            let _ = tokio::time::timeout(PIPE_DRAIN_GRACE, output.copy.as_mut()).await;
        }
        (status, interrupt)
    };
    group.disarm();
    let output = captured.output.text();
    if let Some(interrupt) = interrupt {
        return limits.outcome(interrupt, output);
    }
    match status {
        Ok(status) if status.success() => TaskOutcome::succeeded(output),
        Ok(status) => {
            let mut error = describe_exit(status);
            if let Some(line) = captured.stderr.last_line() {
                error.push_str(": ");
                error.push_str(&line);
            }
            TaskOutcome::failed(error, output)
        }
        Err(e) => TaskOutcome::failed(format!("cannot wait for `{program}`: {e}"), output),
    }
}

/// The output-copying future of a running program, polled alongside the waits for its exit.
struct OutputCopy<'a, F: Future<Output = ()>> {
    copy: Pin<&'a mut F>,
    done: bool,
}

impl<F: Future<Output = ()>> OutputCopy<'_, F> {
    /// Waits for `child` to exit while copying its output, unless `stop` completes first.
    async fn wait<S: Future>(
        &mut self,
        child: &mut Child,
        stop: S,
    ) -> Result<io::Result<ExitStatus>, S::Output> {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                stopped = &mut stop => return Err(stopped),
                status = child.wait() => return Ok(status),
                () = self.copy.as_mut(), if !self.done => self.done = true,
            }
        }
    }
}

impl<F: Future<Output = ()>> OutputCopy<'_, F> {
    /// Copies output while `condition` holds, checking it every 50 ms, until `until`.
    async fn pump_while(&mut self, condition: impl Fn() -> bool, until: Instant) {
        while condition() && Instant::now() < until {
            let tick = tokio::time::sleep(
                Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())),
            );
            tokio::pin!(tick);
            loop {
                tokio::select! {
                    biased;
                    () = &mut tick => break,
                    () = self.copy.as_mut(), if !self.done => self.done = true,
                }
            }
        }
    }
}

/// What a program wrote: the combined tail, and the tail of stderr alone for error messages.
struct Captured {
    output: TailBuffer,
    stderr: TailBuffer,
}

impl Default for Captured {
    fn default() -> Self {
        Captured {
            output: TailBuffer::new(OUTPUT_LIMIT),
            stderr: TailBuffer::new(STDERR_TAIL),
        }
    }
}

/// Copies stdout and stderr into `captured` in the order the chunks arrive, until both close.
async fn capture_output(
    mut stdout: Option<tokio::process::ChildStdout>,
    mut stderr: Option<tokio::process::ChildStderr>,
    captured: &mut Captured,
) {
    let mut out_buf = vec![0u8; 16 * 1024];
    let mut err_buf = vec![0u8; 16 * 1024];
    while stdout.is_some() || stderr.is_some() {
        tokio::select! {
            read = read_some(&mut stdout, &mut out_buf) => match read {
                Some(n) => captured.output.push(&out_buf[..n]),
                None => stdout = None,
            },
            read = read_some(&mut stderr, &mut err_buf) => match read {
                Some(n) => {
                    captured.output.push(&err_buf[..n]);
                    captured.stderr.push(&err_buf[..n]);
                }
                None => stderr = None,
            },
        }
    }
}

/// The next chunk of a pipe, `None` at its end (or on a read error); never completes for a
/// pipe already closed.
async fn read_some<R: AsyncRead + Unpin>(pipe: &mut Option<R>, buf: &mut [u8]) -> Option<usize> {
    match pipe {
        Some(pipe) => match pipe.read(buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        },
        None => std::future::pending().await,
    }
}

/// The last `limit` bytes written to it, and how many were dropped before them.
struct TailBuffer {
    bytes: VecDeque<u8>,
    limit: usize,
    dropped: u64,
}

impl TailBuffer {
    fn new(limit: usize) -> TailBuffer {
        TailBuffer {
            bytes: VecDeque::with_capacity(limit.min(8 * 1024)),
            limit,
            dropped: 0,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        let chunk = if chunk.len() > self.limit {
            self.dropped += (chunk.len() - self.limit) as u64;
            &chunk[chunk.len() - self.limit..]
        } else {
            chunk
        };
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(self.limit);
        self.bytes.drain(..overflow);
        self.dropped += overflow as u64;
        self.bytes.extend(chunk);
    }

    fn contents(&self) -> Vec<u8> {
        let mut bytes: Vec<u8> = self.bytes.iter().copied().collect();
        if self.dropped > 0 {
            // The cut may have split a UTF-8 character: skip its continuation bytes.
            let partial = bytes
                .iter()
                .take(3)
                .take_while(|b| (**b & 0xC0) == 0x80)
                .count();
            bytes.drain(..partial);
        }
        bytes
    }

    /// The kept bytes as text, with a first line saying how much came before them.
    fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.contents()).into_owned();
        if self.dropped == 0 {
            text
        } else {
            format!("[{} earlier bytes not kept]\n{text}", self.dropped)
        }
    }

    /// The last non-empty line, shortened for an error message.
    fn last_line(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.contents()).into_owned();
        let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
        let mut line = line.to_string();
        if line.len() > ERROR_LINE_LIMIT {
            let mut cut = ERROR_LINE_LIMIT;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        Some(line)
    }
}

/// The process group of a spawned program (its pid, as it was spawned with
/// `process_group(0)`). Until disarmed, dropping it kills the whole group, so a run abandoned
/// by its caller (its future dropped) leaves no processes behind.
struct ProcessGroup {
    pgid: Option<libc::pid_t>,
}

impl ProcessGroup {
    fn of(child: &Child) -> ProcessGroup {
        ProcessGroup {
            pgid: child.id().and_then(|pid| libc::pid_t::try_from(pid).ok()),
        }
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(pgid) = self.pgid {
            // SAFETY: killpg has no memory effects; a group that is already gone gives ESRCH,
            // which is fine to ignore.
            unsafe {
                libc::killpg(pgid, signal);
            }
        }
    }

    /// Whether any process of the group is left (zombies not yet reaped by their new parent
    /// count too, for the moment they last).
    fn is_alive(&self) -> bool {
        match self.pgid {
            // SAFETY: signal 0 only checks that the group exists and may be signalled.
            Some(pgid) => unsafe { libc::killpg(pgid, 0) == 0 },
            None => false,
        }
    }

    fn disarm(mut self) {
        self.pgid = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

fn spawn_error(e: &io::Error, program: &str, working_dir: Option<&str>) -> String {
    if let Some(dir) = working_dir {
        if !Path::new(dir).is_dir() {
            return format!("working directory {dir} does not exist or is not a directory");
        }
    }
    match e.kind() {
        io::ErrorKind::NotFound if program.contains('/') => {
            format!("program `{program}` not found")
        }
        io::ErrorKind::NotFound => format!("program `{program}` not found in PATH"),
        io::ErrorKind::PermissionDenied => {
            format!("program `{program}` cannot be executed (permission denied)")
        }
        _ => format!("cannot start `{program}`: {e}"),
    }
}

fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(signal) => {
            let name = match signal {
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGINT => " (SIGINT)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGPIPE => " (SIGPIPE)",
                _ => "",
            };
            format!("killed by signal {signal}{name}")
        }
        None => format!("ended with {status}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Builtins

async fn run_builtin(builtin: &Builtin, ctx: &TaskContext<'_>, limits: &Limits) -> TaskOutcome {
    match builtin {
        Builtin::Sleep { duration } => match limits.bounded(tokio::time::sleep(duration.0)).await {
            Ok(()) => TaskOutcome::succeeded(format!("slept {}", format_duration(duration.0))),
            Err(interrupt) => limits.outcome(interrupt, String::new()),
        },
        Builtin::Log { message, level } => {
            let (job, run_id) = (ctx.job, ctx.run_id);
            match level.unwrap_or(LogLevel::Info) {
                LogLevel::Debug => tracing::debug!(job, run_id, "{message}"),
                LogLevel::Info => tracing::info!(job, run_id, "{message}"),
                LogLevel::Warn => tracing::warn!(job, run_id, "{message}"),
                LogLevel::Error => tracing::error!(job, run_id, "{message}"),
            }
            TaskOutcome::succeeded(message.clone())
        }
        Builtin::Notify { channel, payload } => {
            let payload = payload.as_deref().unwrap_or("");
            let notify = async {
                let (client, _) = ctx
                    .databases
                    .get(ctx.database)
                    .await
                    .map_err(|e| e.to_string())?;
                session::notify(&client, channel, payload)
                    .await
                    .map_err(|e| describe_pg_error(&e))?;
                Ok::<_, String>(())
            };
            match limits.bounded(notify).await {
                Ok(Ok(())) => TaskOutcome::succeeded(format!("notified channel {channel}")),
                Ok(Err(error)) => TaskOutcome::failed(error, String::new()),
                Err(interrupt) => limits.outcome(interrupt, String::new()),
            }
        }
        Builtin::Http {
            url,
            method,
            headers,
            body,
            expect_status,
        } => {
            let request = HttpRequest {
                url: url.clone(),
                method: method.unwrap_or(HttpMethod::Get),
                headers: headers.clone(),
                body: body.clone(),
                timeout: limits.remaining(),
            };
            run_http(request, expect_status.as_deref(), limits).await
        }
    }
}

struct HttpRequest {
    url: String,
    method: HttpMethod,
    headers: BTreeMap<String, String>,
    body: Option<String>,
    /// What is left of the run's timeout, for the whole exchange.
    timeout: Option<Duration>,
}

struct HttpReply {
    status_line: String,
    status: u16,
    /// The first [`OUTPUT_LIMIT`] bytes of the body.
    body: Vec<u8>,
    truncated: bool,
}

enum HttpError {
    TimedOut,
    Other(String),
}

async fn run_http(request: HttpRequest, expect: Option<&[u16]>, limits: &Limits) -> TaskOutcome {
    if let Some(remaining) = request.timeout {
        if remaining.is_zero() {
            return limits.outcome(Interrupt::TimedOut, String::new());
        }
    }
    // ureq blocks. Its own timeout is the run's remaining time, so the thread ends by itself
    // after a timeout; on cancellation it is abandoned and ends with its request.
    let exchange = tokio::task::spawn_blocking(move || request.send());
    let reply = match limits.bounded(exchange).await {
        Err(interrupt) => return limits.outcome(interrupt, String::new()),
        Ok(Err(join_error)) => {
            return TaskOutcome::failed(
                format!("the HTTP request failed: {join_error}"),
                String::new(),
            )
        }
        Ok(Ok(Err(HttpError::TimedOut))) => {
            return limits.outcome(Interrupt::TimedOut, String::new())
        }
        Ok(Ok(Err(HttpError::Other(error)))) => return TaskOutcome::failed(error, String::new()),
        Ok(Ok(Ok(reply))) => reply,
    };
    let mut output = reply.status_line.clone();
    if !reply.body.is_empty() {
        output.push('\n');
        output.push_str(&String::from_utf8_lossy(&reply.body));
    }
    if reply.truncated {
        output.push_str(&format!("\n[body cut at {} bytes]", OUTPUT_LIMIT));
    }
    let expected = match expect {
        Some(list) => list.contains(&reply.status),
        None => (200..300).contains(&reply.status),
    };
    if expected {
        TaskOutcome::succeeded(output)
    } else {
        let wanted = match expect {
            Some(list) => {
                let codes: Vec<String> = list.iter().map(u16::to_string).collect();
                format!("expected {}", codes.join(", "))
            }
            None => "expected 2xx".to_string(),
        };
        TaskOutcome::failed(format!("{} ({wanted})", reply.status_line), output)
    }
}

impl HttpRequest {
    /// Sends the request and reads the head of the response body. Blocking.
    fn send(self) -> Result<HttpReply, HttpError> {
        use std::io::Read;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            // Every status is a reply: `expectStatus` decides, not the client.
            .http_status_as_error(false)
            // A redirect is reported, not followed, so `expectStatus: [302]` means what it says.
            .max_redirects(0)
            .timeout_global(self.timeout)
            .user_agent(concat!("pgsched/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let method = match self.method {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Head => "HEAD",
        };
        let mut builder = ureq::http::Request::builder().method(method).uri(&self.url);
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        let invalid = |e: ureq::http::Error| HttpError::Other(format!("invalid HTTP request: {e}"));
        let sent = match self.body {
            Some(body) => agent.run(builder.body(body).map_err(invalid)?),
            // Without a body, POST, PUT and PATCH still say `Content-Length: 0`: some servers
            // refuse them otherwise.
            None if matches!(
                self.method,
                HttpMethod::Post | HttpMethod::Put | HttpMethod::Patch
            ) =>
            {
                agent.run(builder.body(String::new()).map_err(invalid)?)
            }
            None => agent.run(builder.body(()).map_err(invalid)?),
        };
        let response = sent.map_err(http_error)?;
        let status = response.status();
        let status_line = format!(
            "{:?} {} {}",
            response.version(),
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
        .trim_end()
        .to_string();
        let mut body = Vec::new();
        response
            .into_body()
            .into_reader()
            .take(OUTPUT_LIMIT as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| match e.kind() {
                io::ErrorKind::TimedOut => HttpError::TimedOut,
                _ => HttpError::Other(format!("cannot read the HTTP response: {e}")),
            })?;
        let truncated = body.len() > OUTPUT_LIMIT;
        body.truncate(OUTPUT_LIMIT);
        Ok(HttpReply {
            status_line,
            status: status.as_u16(),
            body,
            truncated,
        })
    }
}

fn http_error(e: ureq::Error) -> HttpError {
    match e {
        ureq::Error::Timeout(_) => HttpError::TimedOut,
        other => HttpError::Other(format!("HTTP request failed: {other}")),
    }
}
