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

use std::ffi::{c_char, CString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The environment variable naming the directory of `initdb`, `pg_ctl` and `postgres`.
pub const BINDIR_ENV: &str = "PGSCHED_PG_BINDIR";

const SERVER_BINARIES: [&str; 3] = ["initdb", "pg_ctl", "postgres"];
/// The OS user the server runs as when pgsched runs as root.
const SERVER_OS_USER: &str = "postgres";
/// The database superuser `initdb` creates.
const SUPERUSER: &str = "postgres";
const SETTINGS_FILE: &str = "pgsched.conf";
const INCLUDE_SETTINGS: &str = "include_if_exists = 'pgsched.conf'";
/// `sun_path` holds 108 bytes on Linux, the terminating NUL included; PostgreSQL refuses longer.
const MAX_SOCKET_PATH: usize = 107;
const LONGEST_SOCKET_NAME: &str = "/.s.PGSQL.65535";
const PORT_LOW: u16 = 20_000;
const PORT_HIGH: u16 = 60_000;
const POLL_INTERVAL: Duration = Duration::from_millis(50);
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

/// Why the embedded server could not be found, created, started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No directory with `initdb`, `pg_ctl` and `postgres` was found.
    #[error(
        "PostgreSQL server binaries were not found (looked in ${BINDIR_ENV}, `pg_config --bindir` \
         and /usr/lib/postgresql/*/bin): install them with `apt-get install postgresql` \
         (Debian/Ubuntu), or set --database-url / DATABASE_URL to use an existing server"
    )]
    NotInstalled,
    /// pgsched runs as root and there is no `postgres` user for the server to run as.
    #[error(
        "pgsched runs as root, which PostgreSQL refuses, and there is no `postgres` user to run \
         the server as: create it (`useradd --system --user-group postgres`), run pgsched as \
         another user, or set --database-url / DATABASE_URL"
    )]
    NoServerUser,
    /// An existing cluster lies where the `postgres` user cannot reach it; it is never moved.
    #[error(
        "the `postgres` user, which runs the server, cannot reach the cluster in {}/data: {} is \
         not searchable by it; run `chmod o+x {}`, or move {}/data away to start a new cluster \
         under /var/tmp",
        dir.display(), blocked.display(), blocked.display(), dir.display()
    )]
    NotReachable {
        /// The cluster directory (`.pgsched/`), canonicalised.
        dir: PathBuf,
        /// Its first ancestor the `postgres` user cannot search.
        blocked: PathBuf,
    },
    /// The `/var/tmp/pgsched-<hash>` fallback exists but someone else made it: not used.
    #[error(
        "{} exists but was not made by pgsched for this cluster (it must be a directory owned by \
         root or `postgres`, writable by its owner only): remove it, or run pgsched from a \
         directory the `postgres` user can enter",
        path.display()
    )]
    FallbackTaken {
        /// The fallback directory under `/var/tmp`.
        path: PathBuf,
    },
    /// A file-system operation on the cluster's files (or running a program) failed.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done, as a verb: `create`, `resolve`, `run`, ...
        action: &'static str,
        /// The file, directory or program it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A server program (`initdb`, `pg_ctl`, `postgres --version`) exited unsuccessfully.
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        /// The program and subcommand, e.g. `pg_ctl start`.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// Its stdout and stderr, trimmed, joined by a newline.
        output: String,
    },
    /// The cluster was made by another PostgreSQL major version than the binaries found.
    #[error(
        "{} holds a PostgreSQL {data_version} cluster, but {} has PostgreSQL {binary_version}: set \
         {BINDIR_ENV} to PostgreSQL {data_version}'s bin directory, or move {} away to start a new \
         cluster",
        data_dir.display(), bindir.display(), data_dir.display()
    )]
    VersionMismatch {
        /// The cluster's data directory.
        data_dir: PathBuf,
        /// The major version in its `PG_VERSION`, e.g. `16`.
        data_version: String,
        /// The directory of the binaries that would run it.
        bindir: PathBuf,
        /// Their full version, e.g. `17.2`.
        binary_version: String,
    },
    /// A setting in `EmbeddedOptions::settings` whose name PostgreSQL would not accept.
    #[error("invalid PostgreSQL setting name {0:?}: expected letters, digits, `_` and `.`")]
    InvalidSetting(String),
    /// The server did not come up; the log's last lines usually say why.
    #[error("PostgreSQL did not start ({reason}); last lines of {}:\n{tail}", log.display())]
    StartFailed {
        /// What went wrong from pgsched's side (`pg_ctl` failed, timed out, ...).
        reason: String,
        /// The server log file.
        log: PathBuf,
        /// Its last lines (at most 30).
        tail: String,
    },
}

/// Where [`find_postgres_bindir_in`] looks, in this order.
#[derive(Debug, Clone)]
pub struct BindirSearch {
    /// When set, the only directory considered: an explicit choice that is wrong must not
    /// silently fall back to another installation.
    pub override_dir: Option<PathBuf>,
    /// The `pg_config` program asked for `--bindir`; `None` skips asking.
    pub pg_config: Option<PathBuf>,
    /// Holds one `<major version>/bin` per installed version (the Debian and Ubuntu layout).
    pub versioned_root: PathBuf,
}

impl BindirSearch {
    /// The search the CLI does: `$PGSCHED_PG_BINDIR`, `pg_config` on `PATH`,
    /// `/usr/lib/postgresql`.
    pub fn from_env() -> Self {
        BindirSearch {
            override_dir: std::env::var_os(BINDIR_ENV)
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from),
            pg_config: Some(PathBuf::from("pg_config")),
            versioned_root: PathBuf::from("/usr/lib/postgresql"),
        }
    }
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`, found as [`BindirSearch::from_env`]
/// says.
pub fn find_postgres_bindir() -> Result<PathBuf, EmbeddedError> {
    find_postgres_bindir_in(&BindirSearch::from_env())
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: the override if set, else
/// `pg_config --bindir`, else the highest version under `versioned_root`.
pub fn find_postgres_bindir_in(search: &BindirSearch) -> Result<PathBuf, EmbeddedError> {
    if let Some(dir) = &search.override_dir {
        return if has_server_binaries(dir) {
            Ok(dir.clone())
        } else {
            Err(EmbeddedError::NotInstalled)
        };
    }
    // pg_config often comes from libpq-dev alone, without a server next to it.
    if let Some(dir) = search.pg_config.as_deref().and_then(pg_config_bindir) {
        if has_server_binaries(&dir) {
            return Ok(dir);
        }
    }
    highest_versioned_bindir(&search.versioned_root).ok_or(EmbeddedError::NotInstalled)
}

fn pg_config_bindir(pg_config: &Path) -> Option<PathBuf> {
    let output = Command::new(pg_config)
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let mut bytes = output.stdout;
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    (!bytes.is_empty()).then(|| PathBuf::from(std::ffi::OsString::from_vec(bytes)))
}

fn highest_versioned_bindir(root: &Path) -> Option<PathBuf> {
    fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version: Vec<u32> = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<_>>()?;
            let bindir = entry.path().join("bin");
            has_server_binaries(&bindir).then_some((version, bindir))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bindir)| bindir)
}

fn has_server_binaries(dir: &Path) -> bool {
    SERVER_BINARIES.iter().all(|name| {
        fs::metadata(dir.join(name))
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}

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

#[derive(Debug, Clone, Copy)]
struct ServerUser {
    uid: u32,
    gid: u32,
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

    fn initdb(&self) -> Result<(), EmbeddedError> {
        tracing::info!(data_dir = %self.data_dir.display(), "creating the embedded PostgreSQL cluster");
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

    /// Whether the settings give the server a TCP listener (the default has none).
    fn listens_on_tcp(&self) -> bool {
        self.settings
            .iter()
            .rev()
            .find(|(name, _)| name.eq_ignore_ascii_case("listen_addresses"))
            .is_some_and(|(_, value)| !value.trim().is_empty())
    }

    fn durability_off(&self) -> bool {
        self.settings.iter().any(|(name, value)| {
            name.eq_ignore_ascii_case("fsync")
                && ["off", "false", "no", "0"].contains(&value.to_ascii_lowercase().as_str())
        })
    }

    fn check_version(&self) -> Result<(), EmbeddedError> {
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

    /// Our settings live in a file of their own, rewritten on every start, so that changing them
    /// never means editing the user's postgresql.conf again.
    fn ensure_settings_included(&self) -> Result<(), EmbeddedError> {
        let conf = self.data_dir.join("postgresql.conf");
        let text = fs::read_to_string(&conf).map_err(io_error("read", &conf))?;
        if text.lines().any(|line| line.trim() == INCLUDE_SETTINGS) {
            return Ok(());
        }
        let mut file = OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(io_error("open", &conf))?;
        write!(
            file,
            "\n# Written by pgsched on every start: port, socket, listen_addresses and its own \
             settings.\n{INCLUDE_SETTINGS}\n"
        )
        .map_err(io_error("write", &conf))
    }

    fn write_settings(&self) -> Result<(), EmbeddedError> {
        let mut text = String::from("# Written by pgsched on every start; edits are lost.\n");
        let socket_dir = self.socket_dir.to_string_lossy();
        let port = self.port.to_string();
        let managed = [
            ("listen_addresses", ""),
            ("port", port.as_str()),
            ("unix_socket_directories", socket_dir.as_ref()),
        ];
        let extra = self.settings.iter().map(|(n, v)| (n.as_str(), v.as_str()));
        for (name, value) in managed.into_iter().chain(extra) {
            text.push_str(&format!("{name} = {}\n", conf_value(value)));
        }
        let path = self.data_dir.join(SETTINGS_FILE);
        fs::write(&path, text).map_err(io_error("write", &path))?;
        self.give_to_server_user(&path)
    }

    fn launch(&mut self) -> Result<(), EmbeddedError> {
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
                tracing::info!(data_dir = %self.data_dir.display(), port = self.port, "embedded PostgreSQL is up");
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

    fn prepare_socket_dir(&self) -> Result<(), EmbeddedError> {
        match fs::DirBuilder::new().mode(0o700).create(&self.socket_dir) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(io_error("create", &self.socket_dir)(err)),
        }
        // The mode is what makes trust authentication safe; never accept a looser one.
        fs::set_permissions(&self.socket_dir, fs::Permissions::from_mode(0o700))
            .map_err(io_error("set permissions of", &self.socket_dir))?;
        self.give_to_server_user(&self.socket_dir)
    }

    fn give_to_server_user(&self, path: &Path) -> Result<(), EmbeddedError> {
        match self.server_user {
            Some(user) => chown(path, user),
            None => Ok(()),
        }
    }

    fn server_command(&self, program: &str) -> Command {
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

    fn start_failed(&self, reason: String) -> EmbeddedError {
        EmbeddedError::StartFailed {
            reason,
            log: self.log_file.clone(),
            tail: log_tail(&self.log_file),
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

fn server_user() -> Result<Option<ServerUser>, EmbeddedError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    lookup_user(SERVER_OS_USER)
        .map(Some)
        .ok_or(EmbeddedError::NoServerUser)
}

fn lookup_user(name: &str) -> Option<ServerUser> {
    let name = CString::new(name).ok()?;
    let mut buf: Vec<c_char> = vec![0; 16 * 1024];
    // SAFETY: passwd is plain data; getpwnam_r writes into it and into `buf`, whose length we
    // pass, and sets `result` to null or to `pwd`.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        (rc == 0 && !result.is_null()).then_some(ServerUser {
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        })
    }
}

/// Creates the cluster directory `dir` and returns it made absolute, with the directory the
/// server's own files go to: `dir` itself, or, when we are root and the server user cannot
/// enter one of `dir`'s parents, [`fallback_home`] (linked from `dir`).
fn prepare_cluster_dir(
    dir: &Path,
    user: Option<ServerUser>,
) -> Result<(PathBuf, PathBuf), EmbeddedError> {
    // Only the cluster directory itself is private; parents we create must stay searchable.
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_error("create", parent))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(io_error("create", dir)(err)),
    }
    let dir = dir.canonicalize().map_err(io_error("resolve", dir))?;
    let Some(user) = user else {
        return Ok((dir.clone(), dir));
    };
    let Some(blocked) = first_unsearchable_ancestor(&dir, user) else {
        // initdb, the log and the socket directory are all created by the server user here.
        chown(&dir, user)?;
        return Ok((dir.clone(), dir));
    };
    let data = dir.join("data");
    if fs::symlink_metadata(&data).is_ok_and(|m| m.is_dir()) {
        // A cluster made here before (by another user, or before a chmod): never moved.
        return Err(EmbeddedError::NotReachable { dir, blocked });
    }
    let home = fallback_home(&dir, user)?;
    for name in ["data", "socket", "postgres.log"] {
        link_into(&dir.join(name), &home.join(name))?;
    }
    tracing::info!(
        dir = %dir.display(),
        server_files = %home.display(),
        "the `postgres` user, which runs the server, cannot enter {}; its data, socket and log \
         live in {} (linked from {})",
        blocked.display(),
        home.display(),
        dir.display()
    );
    Ok((dir, home))
}

/// `/var/tmp/pgsched-<hash of dir>`: one per cluster directory, so the same checkout finds its
/// cluster again, kept across reboots (unlike /tmp), and reachable by the server user. Since
/// /var/tmp is writable by everyone, a name someone else made first is refused, not used.
fn fallback_home(dir: &Path, user: ServerUser) -> Result<PathBuf, EmbeddedError> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(dir.as_os_str().as_bytes());
    let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let home = PathBuf::from(format!("/var/tmp/pgsched-{hash}"));
    match fs::DirBuilder::new().mode(0o700).create(&home) {
        Ok(()) => chown(&home, user)?,
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(io_error("create", &home)(err)),
    }
    let meta = fs::symlink_metadata(&home).map_err(io_error("inspect", &home))?;
    // SAFETY: geteuid has no preconditions.
    let ours = meta.uid() == user.uid || meta.uid() == unsafe { libc::geteuid() };
    if !meta.is_dir() || !ours || meta.mode() & 0o022 != 0 {
        return Err(EmbeddedError::FallbackTaken { path: home });
    }
    Ok(home)
}

/// Makes `link` a symbolic link to `target`, replacing an older link; a real file or directory
/// of that name is left alone (it is only there for people to find their way).
fn link_into(link: &Path, target: &Path) -> Result<(), EmbeddedError> {
    match fs::symlink_metadata(link) {
        Ok(meta) if !meta.file_type().is_symlink() => return Ok(()),
        Ok(_) if fs::read_link(link).is_ok_and(|to| to == target) => return Ok(()),
        Ok(_) => fs::remove_file(link).map_err(io_error("replace", link))?,
        Err(_) => {}
    }
    std::os::unix::fs::symlink(target, link).map_err(io_error("create the link", link))
}

/// Mirrors how the kernel will judge the server user. Supplementary groups do not count:
/// `Command::uid` drops them when switching from root.
fn first_unsearchable_ancestor(dir: &Path, user: ServerUser) -> Option<PathBuf> {
    let mut ancestors: Vec<&Path> = dir.ancestors().skip(1).collect();
    ancestors.reverse();
    ancestors.into_iter().find_map(|ancestor| {
        let meta = fs::metadata(ancestor).ok()?;
        let bit = if meta.uid() == user.uid {
            0o100
        } else if meta.gid() == user.gid {
            0o010
        } else {
            0o001
        };
        (meta.mode() & bit == 0).then(|| ancestor.to_path_buf())
    })
}

fn chown(path: &Path, user: ServerUser) -> Result<(), EmbeddedError> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
        .map_err(io_error("change the owner of", path))
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

/// `dir/socket` when a socket path there fits in `sun_path`; else a fresh private directory
/// under /tmp (the `bool` says so), whose name [`read_postmaster_pid`] recovers for reuse.
fn choose_socket_dir(dir: &Path) -> Result<(PathBuf, bool), EmbeddedError> {
    let preferred = dir.join("socket");
    if preferred.as_os_str().len() + LONGEST_SOCKET_NAME.len() <= MAX_SOCKET_PATH {
        return Ok((preferred, false));
    }
    let mut template = b"/tmp/pgsched-XXXXXX\0".to_vec();
    // SAFETY: `template` is a NUL-terminated buffer that mkdtemp rewrites in place.
    let made = unsafe { libc::mkdtemp(template.as_mut_ptr().cast::<c_char>()) };
    if made.is_null() {
        return Err(io_error(
            "create a socket directory under",
            Path::new("/tmp"),
        )(io::Error::last_os_error()));
    }
    template.pop();
    Ok((PathBuf::from(std::ffi::OsString::from_vec(template)), true))
}

/// Deterministic per data directory, so a cluster tends to keep its port across runs; the socket
/// directory is private, so the only possible clash is with a server we started ourselves,
/// unless the settings add a TCP listener: then the port must be free on the loopback too.
fn choose_port(data_dir: &Path, socket_dir: &Path, tcp: bool) -> u16 {
    let span = u32::from(PORT_HIGH - PORT_LOW);
    let first = fnv1a(data_dir.as_os_str().as_bytes()) % span;
    (0..span)
        .map(|i| PORT_LOW + ((first + i) % span) as u16)
        .find(|&port| {
            !socket_in_use(socket_dir, port)
                && (!tcp || std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        })
        .unwrap_or(PORT_LOW)
}

/// A lock file whose owner died is stale, and PostgreSQL replaces it itself.
fn socket_in_use(socket_dir: &Path, port: u16) -> bool {
    fs::read_to_string(socket_dir.join(format!(".s.PGSQL.{port}.lock")))
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse().ok())
        .is_some_and(process_alive)
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, &byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

struct PostmasterPid {
    pid: i32,
    port: Option<u16>,
    socket_dir: Option<PathBuf>,
}

/// Lines of postmaster.pid: pid, data directory, start time, port, first socket directory,
/// listen address, shared memory key, status.
fn read_postmaster_pid(data_dir: &Path) -> Option<PostmasterPid> {
    let bytes = fs::read(data_dir.join("postmaster.pid")).ok()?;
    let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let text = |i: usize| lines.get(i).and_then(|l| std::str::from_utf8(l).ok());
    Some(PostmasterPid {
        // Negative for a single-user backend, which holds the lock the same way.
        pid: text(0)?.trim().parse::<i32>().ok()?.abs(),
        port: text(3).and_then(|l| l.trim().parse().ok()),
        socket_dir: lines
            .get(4)
            .filter(|l| !l.is_empty())
            .map(|l| PathBuf::from(std::ffi::OsString::from_vec(l.to_vec()))),
    })
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// Whether a server accepts connections on `socket`, the way `pg_isready` asks: send a startup
/// message and look at the first reply. Anything but "the database system is starting up /
/// shutting down" (SQLSTATE 57P03) means it answers.
fn server_answers(socket: &Path) -> bool {
    probe(socket).unwrap_or(false)
}

fn probe(socket: &Path) -> io::Result<bool> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut body = 196_608_i32.to_be_bytes().to_vec(); // protocol 3.0
    for field in ["user", SUPERUSER, "database", "postgres"] {
        body.extend_from_slice(field.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    stream.write_all(&message)?;

    let mut header = [0_u8; 5];
    stream.read_exact(&mut header)?;
    match header[0] {
        b'R' => {
            // Terminate, so the server does not log an unexpected EOF.
            let _ = stream.write_all(&[b'X', 0, 0, 0, 4]);
            Ok(true)
        }
        b'E' => {
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            let mut fields = vec![0; len.saturating_sub(4).min(64 * 1024)];
            stream.read_exact(&mut fields)?;
            let cannot_connect_now = fields.split(|&b| b == 0).any(|field| field == b"C57P03");
            Ok(!cannot_connect_now)
        }
        _ => Ok(false),
    }
}

fn run(mut cmd: Command, what: &str) -> Result<String, EmbeddedError> {
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

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> EmbeddedError {
    let path = path.to_path_buf();
    move |source| EmbeddedError::Io {
        action,
        path,
        source,
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

fn timeout_secs(timeout: Duration) -> String {
    timeout.as_secs_f64().ceil().max(1.0).to_string()
}

/// "15.18" → "15", "9.6.24" → "9.6", "17beta1" → "17": what PG_VERSION holds.
fn major_version(version: &str) -> String {
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

fn valid_setting_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// postgresql.conf string syntax: quotes doubled, backslashes escaped.
fn conf_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_versions_match_pg_version_files() {
        assert_eq!(major_version("15.18"), "15");
        assert_eq!(major_version("9.6.24"), "9.6");
        assert_eq!(major_version("17beta1"), "17");
    }

    #[test]
    fn conninfo_values_are_quoted_only_when_needed() {
        assert_eq!(conninfo_value("/tmp/x"), "/tmp/x");
        assert_eq!(conninfo_value("a b"), "'a b'");
        assert_eq!(conninfo_value(r"it's\"), r"'it\'s\\'");
        assert_eq!(conninfo_value(""), "''");
    }

    #[test]
    fn conf_values_escape_quotes_and_backslashes() {
        assert_eq!(conf_value(r"a'b\c"), r"'a''b\\c'");
    }

    #[test]
    fn setting_names_are_identifiers() {
        assert!(valid_setting_name("fsync"));
        assert!(valid_setting_name("auto_explain.log_min_duration"));
        assert!(!valid_setting_name("fsync = off\nport"));
        assert!(!valid_setting_name(""));
    }

    #[test]
    fn ports_stay_in_range() {
        let dir = Path::new("/nonexistent/socket");
        let port = choose_port(Path::new("/some/data"), dir, false);
        assert!((PORT_LOW..PORT_HIGH).contains(&port));
        assert_eq!(port, choose_port(Path::new("/some/data"), dir, false));
    }

    #[test]
    fn a_tcp_listener_skips_ports_taken_on_the_loopback() {
        let dir = Path::new("/nonexistent/socket");
        let data = Path::new("/some/data");
        let first = choose_port(data, dir, false);
        // The port the hash picks, taken by someone else (by us here; if the bind fails, it
        // was taken already).
        let _taken = std::net::TcpListener::bind(("127.0.0.1", first));
        let port = choose_port(data, dir, true);
        assert_ne!(port, first);
        assert!((PORT_LOW..PORT_HIGH).contains(&port));
    }
}
