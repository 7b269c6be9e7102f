//! `command` and `shell` tasks: a program in a process group of its own, with pgsched's
//! environment, its output captured while it runs, and, when the run is interrupted, SIGTERM to
//! the whole group and SIGKILL to what is left of it [`KILL_GRACE`] later.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::context::{TaskContext, TaskOutcome};
use super::limits::{Interrupt, Limits};
use super::output::{capture_output, Captured};

/// How long a program has to exit after SIGTERM before its process group gets SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(10);

/// Once a program's main process has exited, how long to go on reading output that its
/// leftover children may still hold open: a daemon started with `&` must not hold the run.
const PIPE_DRAIN_GRACE: Duration = Duration::from_millis(500);

/// Runs the program `command` starts (`program` names it in messages) to its end, its
/// timeout or its cancellation.
pub(super) async fn run_program(
    mut command: Command,
    program: &str,
    env: &BTreeMap<String, String>,
    working_dir: Option<&str>,
    ctx: &TaskContext<'_>,
    limits: &Limits,
) -> TaskOutcome {
    prepare(&mut command, env, working_dir, ctx);
    if let Some(interrupt) = limits.already_interrupted() {
        return limits.outcome(interrupt, String::new());
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return TaskOutcome::failed(spawn_error(&e, program, working_dir), String::new()),
    };
    let group = ProcessGroup::of(&child);
    let mut captured = Captured::default();
    let (status, interrupt) = supervise(&mut child, &group, &mut captured, limits).await;
    group.disarm();
    program_outcome(status, interrupt, &captured, program, limits)
}

/// The program's environment, pipes and process group.
fn prepare(
    command: &mut Command,
    env: &BTreeMap<String, String>,
    working_dir: Option<&str>,
    ctx: &TaskContext<'_>,
) {
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
}

/// Waits for the main process to exit while copying its output into `captured`, stopping the
/// program if the run is interrupted first. Returns its exit status and the interruption.
async fn supervise(
    child: &mut Child,
    group: &ProcessGroup,
    captured: &mut Captured,
    limits: &Limits,
) -> (io::Result<ExitStatus>, Option<Interrupt>) {
    let capture = capture_output(child.stdout.take(), child.stderr.take(), captured);
    let mut output = OutputCopy {
        copy: std::pin::pin!(capture),
        done: false,
    };
    let (status, interrupt) = match output.wait(child, limits.interrupted()).await {
        Ok(status) => (status, None),
        Err(interrupt) => (stop(&mut output, child, group).await, Some(interrupt)),
    };
    // The main process is gone. Output still in the pipes is read, but a leftover child
    // that keeps them open does not hold the run.
    if !output.done {
        let _ = tokio::time::timeout(PIPE_DRAIN_GRACE, output.copy.as_mut()).await;
    }
    (status, interrupt)
}

/// Stops an interrupted program: SIGTERM to its group, then SIGKILL to whatever is left of the
/// group [`KILL_GRACE`] later (sooner once the whole group is gone). Returns the main process's
/// exit status.
async fn stop<F: Future<Output = ()>>(
    output: &mut OutputCopy<'_, F>,
    child: &mut Child,
    group: &ProcessGroup,
) -> io::Result<ExitStatus> {
    group.signal(libc::SIGTERM);
    let kill_at = Instant::now() + KILL_GRACE;
    match output.wait(child, tokio::time::sleep_until(kill_at)).await {
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
                .wait(child, std::future::pending::<std::convert::Infallible>())
                .await
            {
                Ok(status) => status,
                Err(never) => match never {},
            }
        }
    }
}

/// What the run records of a program that ended or was stopped: a failure's error quotes the
/// last line of its stderr.
fn program_outcome(
    status: io::Result<ExitStatus>,
    interrupt: Option<Interrupt>,
    captured: &Captured,
    program: &str,
    limits: &Limits,
) -> TaskOutcome {
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
