//! Running as the `postgres` user: PostgreSQL refuses root, so when we are root every server
//! program runs as that user, and the files it must own are given to it.

use super::error::io_error;
use super::{EmbeddedError, EmbeddedPostgres};
use std::ffi::{c_char, CString};
use std::path::Path;

/// The OS user the server runs as when pgsched runs as root.
const SERVER_OS_USER: &str = "postgres";

#[derive(Debug, Clone, Copy)]
pub(super) struct ServerUser {
    pub(super) uid: u32,
    pub(super) gid: u32,
}

impl EmbeddedPostgres {
    pub(super) fn give_to_server_user(&self, path: &Path) -> Result<(), EmbeddedError> {
        match self.server_user {
            Some(user) => chown(path, user),
            None => Ok(()),
        }
    }
}

pub(super) fn server_user() -> Result<Option<ServerUser>, EmbeddedError> {
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

pub(super) fn chown(path: &Path, user: ServerUser) -> Result<(), EmbeddedError> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
        .map_err(io_error("change the owner of", path))
}
