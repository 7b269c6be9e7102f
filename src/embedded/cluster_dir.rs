//! Where the server's own files live: in the cluster directory, or, when the `postgres` user
//! cannot enter one of its parents, in a fallback directory of the cluster's own under
//! `/var/tmp`, linked from the cluster directory.

use super::error::io_error;
use super::user::{chown, ServerUser};
use super::{EmbeddedError, LOG_TARGET};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Creates the cluster directory `dir` and returns it made absolute, with the directory the
/// server's own files go to: `dir` itself, or, when we are root and the server user cannot
/// enter one of `dir`'s parents, [`fallback_home`] (linked from `dir`).
pub(super) fn prepare_cluster_dir(
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
        target: LOG_TARGET,
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
