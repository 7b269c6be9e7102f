//! The task of a job or a chain step: the built-in tasks, [`Task`] (the one task a validated
//! spec has) and [`HasTask`], the task fields jobs and steps both write out.

use crate::duration::SpecDuration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The level of a `log` built-in's line: `debug`, `info` (default), `warn` or `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Detail; in pgsched's log only when its log level includes debug.
    Debug,
    /// Normal messages (the default).
    Info,
    /// Something worth a look.
    Warn,
    /// Something went wrong.
    Error,
}

/// The method of an `http` built-in's request: `GET` (default), `POST`, `PUT`, `PATCH`,
/// `DELETE` or `HEAD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// `GET` (the default).
    Get,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
    /// `HEAD`.
    Head,
}

/// A task built into pgsched, chosen by `name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "name", rename_all = "lowercase", deny_unknown_fields)]
pub enum Builtin {
    /// Wait, e.g. between two steps of a chain.
    Sleep {
        /// How long to wait (`500ms`, `30s`, `1h30m`).
        duration: SpecDuration,
    },
    /// Write a line to pgsched's log and to the run's output.
    Log {
        /// The line to write.
        message: String,
        /// `debug`, `info` (default), `warn` or `error`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        level: Option<LogLevel>,
    },
    /// `pg_notify(channel, payload)` on the job's database.
    Notify {
        /// The channel to notify.
        channel: String,
        /// The payload (default: empty).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<String>,
    },
    /// An HTTP request; a status outside `expectStatus` (default 2xx) fails the run.
    Http {
        /// The URL to request (`http` or `https`).
        url: String,
        /// The method; default `GET`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        method: Option<HttpMethod>,
        /// Request headers.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
        /// The request body.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
        /// The statuses that count as success; default any 2xx.
        #[serde(
            default,
            rename = "expectStatus",
            skip_serializing_if = "Option::is_none"
        )]
        expect_status: Option<Vec<u16>>,
    },
}

impl Builtin {
    /// The `name:` tag of this built-in (`sleep`, `log`, `notify` or `http`).
    pub fn name(&self) -> &'static str {
        match self {
            Builtin::Sleep { .. } => "sleep",
            Builtin::Log { .. } => "log",
            Builtin::Notify { .. } => "notify",
            Builtin::Http { .. } => "http",
        }
    }
}

/// The task of a job or a chain step, once validated: exactly one of the four.
#[derive(Debug, Clone, PartialEq)]
pub enum Task<'a> {
    /// The `sql` text, run on the job's (or step's) database.
    Sql(&'a str),
    /// A program run without a shell.
    Command {
        /// The program followed by its arguments.
        argv: &'a [String],
        /// Variables added to the child's environment.
        env: &'a BTreeMap<String, String>,
        /// Where the child starts; `None` keeps pgsched's own working directory.
        working_dir: Option<&'a str>,
    },
    /// A script run by `/bin/sh -c`.
    Shell {
        /// The script text.
        script: &'a str,
        /// Variables added to the child's environment.
        env: &'a BTreeMap<String, String>,
        /// Where the shell starts; `None` keeps pgsched's own working directory.
        working_dir: Option<&'a str>,
    },
    /// A task built into pgsched.
    Builtin(&'a Builtin),
}

/// The task fields, shared by jobs and chain steps. (Written out in each struct rather than
/// flattened, because serde cannot reject unknown fields through `flatten`.)
pub trait HasTask {
    /// The `sql` field, if set.
    fn sql(&self) -> Option<&str>;
    /// The `command` field (program and arguments), if set.
    fn command(&self) -> Option<&[String]>;
    /// The `shell` field, if set.
    fn shell(&self) -> Option<&str>;
    /// The `builtin` field, if set.
    fn builtin(&self) -> Option<&Builtin>;
    /// The `env` field (empty when absent); only `command` and `shell` tasks use it.
    fn env(&self) -> &BTreeMap<String, String>;
    /// The `workingDir` field, if set; only `command` and `shell` tasks use it.
    fn working_dir(&self) -> Option<&str>;

    /// The names of the task fields that are set, in the order the user reads them.
    fn task_fields_set(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        if self.sql().is_some() {
            set.push("sql");
        }
        if self.command().is_some() {
            set.push("command");
        }
        if self.shell().is_some() {
            set.push("shell");
        }
        if self.builtin().is_some() {
            set.push("builtin");
        }
        set
    }

    /// The task, when exactly one task field is set (validation guarantees it for loaded specs).
    fn task(&self) -> Option<Task<'_>> {
        if self.task_fields_set().len() != 1 {
            return None;
        }
        if let Some(sql) = self.sql() {
            return Some(Task::Sql(sql));
        }
        if let Some(argv) = self.command() {
            return Some(Task::Command {
                argv,
                env: self.env(),
                working_dir: self.working_dir(),
            });
        }
        if let Some(script) = self.shell() {
            return Some(Task::Shell {
                script,
                env: self.env(),
                working_dir: self.working_dir(),
            });
        }
        self.builtin().map(Task::Builtin)
    }
}

macro_rules! impl_has_task {
    ($ty:ty) => {
        impl HasTask for $ty {
            fn sql(&self) -> Option<&str> {
                self.sql.as_deref()
            }
            fn command(&self) -> Option<&[String]> {
                self.command.as_deref()
            }
            fn shell(&self) -> Option<&str> {
                self.shell.as_deref()
            }
            fn builtin(&self) -> Option<&Builtin> {
                self.builtin.as_ref()
            }
            fn env(&self) -> &BTreeMap<String, String> {
                &self.env
            }
            fn working_dir(&self) -> Option<&str> {
                self.working_dir.as_deref()
            }
        }
    };
}
pub(super) use impl_has_task;
