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
//!
//! This file owns the dispatch from a task to its runner; each runner has a module of its own
//! (`sql`, `program`, `builtin`, `http`), and what they share sits below them (`context`: what
//! a task is given and returns; `limits`: its deadline and cancellation; `output`: the bounded
//! capture of a program's output).

mod builtin;
mod context;
mod http;
mod limits;
mod output;
mod program;
mod sql;

pub use context::{Outcome, TaskContext, TaskOutcome, OUTPUT_LIMIT};
pub use program::KILL_GRACE;
pub use sql::{run_sql_on, HeldTransaction};

use crate::spec::Task;
use crate::store::states::Effects;
use limits::Limits;
use tokio::process::Command;

/// Runs `task` like [`run_task`], except that SQL on the scheduler's own database runs in a
/// transaction left open on success, for the run's record to commit with it. Returns how a SQL
/// task's writes are committed (`None` for other tasks) and the open transaction.
pub async fn run_task_with_run(
    task: &Task<'_>,
    ctx: &TaskContext<'_>,
) -> (TaskOutcome, Option<Effects>, Option<HeldTransaction>) {
    match task {
        Task::Sql(sql) => {
            let limits = Limits::start(ctx);
            let (outcome, effects, held) = sql::run_sql_with_run(sql, ctx, &limits).await;
            (outcome, Some(effects), held)
        }
        other => (run_task(other, ctx).await, None, None),
    }
}

/// Runs `task` to its end, its timeout or its cancellation, whichever comes first.
pub async fn run_task(task: &Task<'_>, ctx: &TaskContext<'_>) -> TaskOutcome {
    let limits = Limits::start(ctx);
    match task {
        Task::Sql(sql) => sql::run_sql_pooled(sql, ctx, &limits).await,
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
            program::run_program(command, program, env, *working_dir, ctx, &limits).await
        }
        Task::Shell {
            script,
            env,
            working_dir,
        } => {
            let mut command = Command::new("/bin/sh");
            // The job name becomes `$0`, so the shell's own messages say which job failed.
            command.arg("-c").arg(script).arg(ctx.job);
            program::run_program(command, "/bin/sh", env, *working_dir, ctx, &limits).await
        }
        Task::Builtin(builtin) => builtin::run_builtin(builtin, ctx, &limits).await,
    }
}
