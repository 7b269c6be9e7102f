//! Finding the PostgreSQL server binaries: `$PGSCHED_PG_BINDIR`, else `pg_config --bindir`,
//! else the highest version of the Debian and Ubuntu layout under `/usr/lib/postgresql`.

use super::EmbeddedError;
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The environment variable naming the directory of `initdb`, `pg_ctl` and `postgres`.
pub const BINDIR_ENV: &str = "PGSCHED_PG_BINDIR";

const SERVER_BINARIES: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

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
    while bytes.last().is_some_and(u8::is_ascii_whitespace) {
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
