//! The embedded default PostgreSQL: the private cluster pgsched creates and runs itself when no
//! `--database-url` is given (product.md §3).
//!
//! This module owns finding the PostgreSQL server binaries, `initdb`, starting and stopping the
//! server with `pg_ctl`, and the layout of the cluster directory (`.pgsched/` for the CLI):
//!
//! ```text
//! .pgsched/
//!   data/          the cluster; data/pgsched.conf holds the settings pgsched manages
//!   socket/        the server's Unix socket directory, mode 0700
//!                  (/tmp/pgsched-XXXXXX instead when this path is too long for a socket)
//!   postgres.log   the server log
//!   .lock          held while starting or stopping on drop, so two processes never race there
//!   .in-use        share-locked by every process using the server; drop stops it only when no
//!                  other process holds it, so one pgsched exiting never pulls the server from
//!                  under another that reused it
//! ```
//!
//! The server listens on its Unix socket only, never on TCP. PostgreSQL refuses to run as root, so
//! when pgsched runs as root the server runs as the `postgres` user. That user must be able to
//! enter every parent of the cluster directory; when it cannot (a checkout under `/root`, or in a
//! `mktemp -d` directory), the server's own files (`data/`, `socket/`, `postgres.log`) go to a
//! directory of this cluster's own under `/var/tmp` instead (`/var/tmp/pgsched-<hash of the
//! path>`), and `.pgsched/` holds symbolic links to them, so the paths above still work for
//! the user. A cluster already created inside an unreachable directory is never moved: that
//! is an error that says what to do.
//!
//! This file holds the server's life (start or reuse, stop, drop) and the locks that keep
//! processes from racing through it; each step it takes lives in a module of its own:
//! `bindir` finds the binaries, `user` runs them as the `postgres` user when we are root,
//! `cluster_dir` places the server's files (the `/var/tmp` fallback), `settings` writes
//! `pgsched.conf`, `socket` picks the socket directory and port, `postmaster` tells whether
//! a server runs and answers, and `programs` runs `initdb`, `pg_ctl` and `postgres`.

mod bindir;
mod cluster_dir;
mod error;
mod postmaster;
mod programs;
mod settings;
mod socket;
#[cfg(test)]
mod tests;
mod user;

pub use bindir::{find_postgres_bindir, find_postgres_bindir_in, BindirSearch, BINDIR_ENV};
pub use error::EmbeddedError;

use cluster_dir::prepare_cluster_dir;
use error::io_error;
use postmaster::{process_alive, read_postmaster_pid, server_answers};
use programs::{run, timeout_secs};
use settings::valid_setting_name;
use socket::{choose_port, choose_socket_dir};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use user::{server_user, ServerUser};

/// The database superuser `initdb` creates.
const SUPERUSER: &str = "postgres";
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// What every file of this module logs under, so that one server's life reads (and filters) as
/// one module's lines wherever the step that logs lives.
const LOG_TARGET: &str = "pgsched::embedded";

/// How [`EmbeddedPostgres::start_with`] sets up the server.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Extra `postgresql.conf` settings, e.g. `("fsync", "off")`. With `fsync` off, `initdb`
    /// skips syncing too, since durability is given up anyway.
    pub settings: Vec<(String, String)>,
    /// Stop the server when the [`EmbeddedPostgres`] is dropped (never one it merely reused).
    pub stop_on_drop: bool,
    /// How long starting or stopping may take.
    pub timeout: Duration,
    /// Use these binaries instead of searching with [`find_postgres_bindir`].
    pub bindir: Option<PathBuf>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            settings: Vec::new(),
            stop_on_drop: true,
            timeout: Duration::from_secs(60),
            bindir: None,
        }
    }
}

impl EmbeddedOptions {
    /// Adds a `postgresql.conf` setting.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }
}

/// How [`EmbeddedPostgres::stop_with`] shuts the server down (`pg_ctl stop -m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Waits for every client to disconnect.
    Smart,
    /// Disconnects clients, rolls back their transactions, checkpoints.
    Fast,
    /// Kills every server process at once, like a crash; the next start recovers from the WAL.
    Immediate,
}

impl StopMode {
    fn as_pg_ctl(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// A running private PostgreSQL server; see the module documentation.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bindir: PathBuf,
    dir: PathBuf,
    /// Where the server's own files live: `dir`, or its fallback under /var/tmp.
    home: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    log_file: PathBuf,
    /// `Some` when we are root and must switch to the `postgres` user for every server command.
    server_user: Option<ServerUser>,
    settings: Vec<(String, String)>,
    timeout: Duration,
    stop_on_drop: bool,
    reused: bool,
    /// A directory we made under /tmp, to be removed once the server is gone.
    socket_dir_is_temporary: bool,
    /// Our shared lock on `.in-use`, held from start to drop.
    in_use: Option<File>,
}

impl EmbeddedPostgres {
    /// Creates (initdb, if no PG_VERSION) and starts a private cluster under `dir` (the CLI
    /// passes `.pgsched/` in the current directory): data in `dir/data`, the socket in a
    /// directory of its own, no TCP listener, the log in `dir/postgres.log`. A server still
    /// running on that data directory from an earlier run is reused, and not stopped on drop.
    /// Returns once the server accepts connections.
    pub fn start(dir: &Path) -> Result<Self, EmbeddedError> {
        Self::start_with(dir, EmbeddedOptions::default())
    }

    /// [`start`](Self::start) with options. A reused server keeps the settings it runs with;
    /// `opts.settings` apply from its next [`restart`](Self::restart).
    pub fn start_with(dir: &Path, opts: EmbeddedOptions) -> Result<Self, EmbeddedError> {
        if let Some((name, _)) = opts
            .settings
            .iter()
            .find(|(name, _)| !valid_setting_name(name))
        {
            return Err(EmbeddedError::InvalidSetting(name.clone()));
        }
        let bindir = match opts.bindir {
            Some(bindir) => bindir,
            None => find_postgres_bindir()?,
        };
        let server_user = server_user()?;
        let (dir, home) = prepare_cluster_dir(dir, server_user)?;
        let _starting = lock(&dir.join(".lock"), libc::LOCK_EX)?;

        // Until the server is ours, dropping `pg` on an error must not stop anything.
        let mut pg = EmbeddedPostgres {
            bindir,
            data_dir: home.join("data"),
            log_file: home.join("postgres.log"),
            dir,
            home,
            socket_dir: PathBuf::new(),
            port: 0,
            server_user,
            settings: opts.settings,
            timeout: opts.timeout,
            stop_on_drop: false,
            reused: false,
            socket_dir_is_temporary: false,
            in_use: None,
        };
        // Taken under the start lock, so a process stopping on drop cannot miss us.
        pg.in_use = Some(lock(&pg.dir.join(".in-use"), libc::LOCK_SH)?);
        if let Some((socket_dir, port)) = pg.find_running_server()? {
            tracing::info!(data_dir = %pg.data_dir.display(), port, "reusing the running embedded PostgreSQL");
            pg.socket_dir = socket_dir;
            pg.port = port;
            pg.reused = true;
            return Ok(pg);
        }
        if pg.data_dir.join("PG_VERSION").exists() {
            pg.check_version()?;
        } else {
            pg.initdb()?;
        }
        pg.ensure_settings_included()?;
        let (socket_dir, temporary) = choose_socket_dir(&pg.home)?;
        pg.socket_dir = socket_dir;
        pg.socket_dir_is_temporary = temporary;
        pg.port = choose_port(&pg.data_dir, &pg.socket_dir, pg.listens_on_tcp());
        pg.launch()?;
        pg.stop_on_drop = opts.stop_on_drop;
        Ok(pg)
    }

    /// A connection string for tokio-postgres (key=value form) to database `dbname` as the
    /// superuser.
    pub fn connection_string(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user={} dbname={}",
            conninfo_value(&self.socket_dir.to_string_lossy()),
            self.port,
            SUPERUSER,
            conninfo_value(dbname)
        )
    }

    /// The directory holding the server's socket (`host` for clients).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The port, which only names the socket file since there is no TCP listener.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory given to [`start`](Self::start), made absolute.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server log.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// Whether this found the server already running rather than starting it.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Whether a postmaster is alive on the data directory.
    pub fn is_running(&self) -> bool {
        read_postmaster_pid(&self.data_dir).is_some_and(|pid| process_alive(pid.pid))
    }

    /// Stops the server (`pg_ctl stop -m fast`); does nothing when it is not running.
    pub fn stop(&mut self) -> Result<(), EmbeddedError> {
        self.stop_with(StopMode::Fast)
    }

    /// Stops the server in the given mode; does nothing when it is not running.
    pub fn stop_with(&mut self, mode: StopMode) -> Result<(), EmbeddedError> {
        if !self.is_running() {
            return Ok(());
        }
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("stop")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", mode.as_pg_ctl(), "-w", "-s", "-t"])
            .arg(timeout_secs(self.timeout));
        match run(cmd, "pg_ctl stop") {
            // Lost a race with someone else stopping it: the outcome is what was asked for.
            Err(_) if !self.is_running() => Ok(()),
            result => result.map(drop),
        }
    }

    /// Stops the server unless another process also uses it.
    fn stop_unless_shared(&mut self) -> Result<(), EmbeddedError> {
        let _starting = lock(&self.dir.join(".lock"), libc::LOCK_EX)?;
        if let Some(in_use) = &self.in_use {
            // Converting our shared lock to exclusive fails while anyone else holds one.
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(in_use.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                tracing::info!(data_dir = %self.data_dir.display(), "leaving the embedded PostgreSQL running: another process uses it");
                return Ok(());
            }
        }
        self.stop()
    }

    /// Stops the server if it runs and starts it again on the same socket and port, so
    /// connection strings stay valid. Whether drop stops it does not change.
    pub fn restart(&mut self) -> Result<(), EmbeddedError> {
        self.stop()?;
        self.launch()
    }

    fn find_running_server(&self) -> Result<Option<(PathBuf, u16)>, EmbeddedError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let Some(pid_file) = read_postmaster_pid(&self.data_dir) else {
                return Ok(None);
            };
            // A file left by a crash; PostgreSQL itself removes it on the next start.
            if !process_alive(pid_file.pid) {
                return Ok(None);
            }
            if let (Some(socket_dir), Some(port)) = (&pid_file.socket_dir, pid_file.port) {
                if server_answers(&socket_dir.join(format!(".s.PGSQL.{port}"))) {
                    return Ok(Some((socket_dir.clone(), port)));
                }
            }
            // Still starting up or shutting down: wait for it to settle either way.
            if Instant::now() >= deadline {
                return Err(self.start_failed(format!(
                    "a server (pid {}) already runs on {} but does not answer on its socket; \
                     stop it with `kill {}`",
                    pid_file.pid,
                    self.data_dir.display(),
                    pid_file.pid
                )));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if self.stop_on_drop {
            if let Err(err) = self.stop_unless_shared() {
                tracing::warn!(error = %err, data_dir = %self.data_dir.display(), "could not stop the embedded PostgreSQL");
            }
        }
        if self.socket_dir_is_temporary && !self.is_running() {
            let _ = fs::remove_dir(&self.socket_dir);
        }
    }
}

/// `flock(operation)` on `path`, created if missing; released when the returned file is closed.
fn lock(path: &Path, operation: libc::c_int) -> Result<File, EmbeddedError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_error("open", path))?;
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(file);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(io_error("lock", path)(err));
        }
    }
}

/// libpq key=value syntax, which tokio-postgres follows.
fn conninfo_value(value: &str) -> String {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\');
    if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}
