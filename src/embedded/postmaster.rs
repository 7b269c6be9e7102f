//! Whether a server runs on a data directory and answers on its socket: `postmaster.pid`, a
//! signal 0, and a startup message the way `pg_isready` sends one.

use super::SUPERUSER;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(super) struct PostmasterPid {
    pub(super) pid: i32,
    pub(super) port: Option<u16>,
    pub(super) socket_dir: Option<PathBuf>,
}

/// Lines of postmaster.pid: pid, data directory, start time, port, first socket directory,
/// listen address, shared memory key, status.
pub(super) fn read_postmaster_pid(data_dir: &Path) -> Option<PostmasterPid> {
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

pub(super) fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// Whether a server accepts connections on `socket`, the way `pg_isready` asks: send a startup
/// message and look at the first reply. Anything but "the database system is starting up /
/// shutting down" (SQLSTATE 57P03) means it answers.
pub(super) fn server_answers(socket: &Path) -> bool {
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
