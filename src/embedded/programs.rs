//! Running the server programs, `initdb`, `pg_ctl` and `postgres --version`: as the server's
//! user, without the caller's libpq variables, and with their output in the error when they fail.

use super::error::io_error;
use super::postmaster::server_answers;
use super::{EmbeddedError, EmbeddedPostgres, StopMode, LOG_TARGET, POLL_INTERVAL, SUPERUSER};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LOG_TAIL_LINES: usize = 30;
/// libpq variables that `pg_ctl` would hand to the server, where `PGPORT` sets the default port.
const CLIENT_ENV: [&str; 8] = [
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGOPTIONS",
    "PGPASSWORD",
];

impl EmbeddedPostgres {
    pub(super) fn initdb(&self) -> Result<(), EmbeddedError> {
        tracing::info!(target: LOG_TARGET, data_dir = %self.data_dir.display(), "creating the embedded PostgreSQL cluster");
        let mut cmd = self.server_command("initdb");
        // Trust is safe here: the server has no TCP listener, and its socket directory is mode
        // 0700 and owned by the server's own OS user, so only that user (and root) can connect.
        cmd.arg("-D").arg(&self.data_dir).args([
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
        ]);
        if self.durability_off() {
            cmd.arg("--no-sync");
        }
        run(cmd, "initdb").map(drop)
    }

    pub(super) fn check_version(&self) -> Result<(), EmbeddedError> {
        let version_file = self.data_dir.join("PG_VERSION");
        let data_version = fs::read_to_string(&version_file)
            .map_err(io_error("read", &version_file))?
            .trim()
            .to_string();
        let mut cmd = self.server_command("postgres");
        cmd.arg("--version");
        let output = run(cmd, "postgres --version")?;
        // Unparsable output (a patched build) is not worth refusing to start over.
        let Some(binary_version) = output
            .split("(PostgreSQL) ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
        else {
            return Ok(());
        };
        if major_version(binary_version) == data_version {
            return Ok(());
        }
        Err(EmbeddedError::VersionMismatch {
            data_dir: self.data_dir.clone(),
            data_version,
            bindir: self.bindir.clone(),
            binary_version: binary_version.to_string(),
        })
    }

    pub(super) fn launch(&mut self) -> Result<(), EmbeddedError> {
        self.prepare_socket_dir()?;
        self.write_settings()?;
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("start")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file)
            .args(["-w", "-s", "-t"])
            .arg(timeout_secs(self.timeout));
        if let Err(err) = run(cmd, "pg_ctl start") {
            return Err(self.start_failed(err.to_string()));
        }
        // pg_ctl -w trusts postmaster.pid; a real connection is what callers need.
        let deadline = Instant::now() + self.timeout;
        let socket = self.socket_dir.join(format!(".s.PGSQL.{}", self.port));
        loop {
            if server_answers(&socket) {
                tracing::info!(target: LOG_TARGET, data_dir = %self.data_dir.display(), port = self.port, "embedded PostgreSQL is up");
                return Ok(());
            }
            if !self.is_running() {
                return Err(self.start_failed("the server exited".to_string()));
            }
            if Instant::now() >= deadline {
                let _ = self.stop_with(StopMode::Immediate);
                return Err(self.start_failed(format!(
                    "it did not accept connections within {:?}",
                    self.timeout
                )));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    pub(super) fn server_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(program));
        // The server user may be unable to read the caller's working directory.
        cmd.current_dir(&self.home).stdin(Stdio::null());
        for var in CLIENT_ENV {
            cmd.env_remove(var);
        }
        if let Some(user) = self.server_user {
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd
    }

    pub(super) fn start_failed(&self, reason: String) -> EmbeddedError {
        EmbeddedError::StartFailed {
            reason,
            log: self.log_file.clone(),
            tail: log_tail(&self.log_file),
        }
    }
}

pub(super) fn run(mut cmd: Command, what: &str) -> Result<String, EmbeddedError> {
    let output = cmd
        .output()
        .map_err(io_error("run", Path::new(cmd.get_program())))?;
    let mut text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !stderr.trim().is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(stderr.trim());
    }
    if output.status.success() {
        Ok(text)
    } else {
        Err(EmbeddedError::Command {
            command: what.to_string(),
            status: output.status,
            output: text,
        })
    }
}

fn log_tail(log: &Path) -> String {
    match fs::read(log) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(err) => format!("(no log: {err})"),
    }
}

pub(super) fn timeout_secs(timeout: Duration) -> String {
    timeout.as_secs_f64().ceil().max(1.0).to_string()
}

/// "15.18" → "15", "9.6.24" → "9.6", "17beta1" → "17": what PG_VERSION holds.
pub(super) fn major_version(version: &str) -> String {
    let mut parts = version.split('.').map(|part| {
        part.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
    });
    let first = parts.next().unwrap_or_default();
    match first.parse::<u32>() {
        Ok(major) if major < 10 => format!("{first}.{}", parts.next().unwrap_or_default()),
        _ => first,
    }
}
