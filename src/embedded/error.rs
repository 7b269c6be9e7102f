//! What can go wrong with the embedded server, each error written to say what to do about it,
//! and the shorthand every file of the module uses to attach a path to an OS error.

use super::BINDIR_ENV;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

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

pub(super) fn io_error(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> EmbeddedError {
    let path = path.to_path_buf();
    move |source| EmbeddedError::Io {
        action,
        path,
        source,
    }
}
