//! The server's Unix socket: its directory (private, and short enough for `sun_path`) and its
//! port, which names the socket file.

use super::error::io_error;
use super::postmaster::process_alive;
use super::{EmbeddedError, EmbeddedPostgres};
use std::ffi::c_char;
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// `sun_path` holds 108 bytes on Linux, the terminating NUL included; PostgreSQL refuses longer.
const MAX_SOCKET_PATH: usize = 107;
const LONGEST_SOCKET_NAME: &str = "/.s.PGSQL.65535";
pub(super) const PORT_LOW: u16 = 20_000;
pub(super) const PORT_HIGH: u16 = 60_000;

impl EmbeddedPostgres {
    pub(super) fn prepare_socket_dir(&self) -> Result<(), EmbeddedError> {
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
}

/// `dir/socket` when a socket path there fits in `sun_path`; else a fresh private directory
/// under /tmp (the `bool` says so), whose name
/// [`read_postmaster_pid`](super::postmaster::read_postmaster_pid) recovers for reuse.
pub(super) fn choose_socket_dir(dir: &Path) -> Result<(PathBuf, bool), EmbeddedError> {
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
pub(super) fn choose_port(data_dir: &Path, socket_dir: &Path, tcp: bool) -> u16 {
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
