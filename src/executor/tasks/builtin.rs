//! The builtin tasks that need no module of their own: `sleep`, `log` and `notify`; `http`
//! is handed to the `http` module.

use super::context::{TaskContext, TaskOutcome};
use super::http::{run_http, HttpRequest};
use super::limits::Limits;
use crate::duration::format_duration;
use crate::spec::{Builtin, HttpMethod, LogLevel};
use crate::store::describe_pg_error;
use crate::store::session;

/// Runs a builtin under the run's limits.
pub(super) async fn run_builtin(
    builtin: &Builtin,
    ctx: &TaskContext<'_>,
    limits: &Limits,
) -> TaskOutcome {
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
