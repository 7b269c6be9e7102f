//! The embedded default PostgreSQL, on real servers: start, restart, reuse, failure to start,
//! and finding the binaries.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{connect, fresh_db, test_options, ScratchDir, TestServer};
use pgsched::embedded::{
    find_postgres_bindir_in, BindirSearch, EmbeddedError, EmbeddedPostgres, StopMode,
};

async fn select_one(url: &str) -> i32 {
    connect(url)
        .await
        .query_one("SELECT 1", &[])
        .await
        .expect("SELECT 1")
        .get(0)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test]
async fn starts_and_answers_select_1() {
    let db = fresh_db().await;
    assert_eq!(select_one(&db.url).await, 1);

    let server = common::server();
    assert!(server.is_running());
    assert!(db.url.contains(&format!("port={}", server.port())));
    let socket_mode = fs::metadata(server.socket_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        socket_mode & 0o777,
        0o700,
        "trust auth relies on a private socket directory"
    );
}

#[tokio::test]
async fn fresh_databases_are_independent() {
    let (a, b) = (fresh_db().await, fresh_db().await);
    assert_ne!(a.name, b.name);
    let client_a = a.connect().await;
    client_a
        .batch_execute("CREATE TABLE only_in_a (id int); INSERT INTO only_in_a VALUES (1)")
        .await
        .unwrap();
    let client_b = b.connect().await;
    let found: i64 = client_b
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(found, 0);
    let current: String = client_b
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(current, b.name);
}

#[tokio::test]
async fn restart_keeps_data_and_address() {
    let mut server = TestServer::start();
    let db = server.fresh_db().await;
    db.connect()
        .await
        .batch_execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before restart')")
        .await
        .unwrap();
    let (socket_dir, port) = (server.socket_dir().to_path_buf(), server.port());

    server.restart().unwrap();
    assert_eq!(
        (server.socket_dir(), server.port()),
        (socket_dir.as_path(), port)
    );
    let v: String = db
        .connect()
        .await
        .query_one("SELECT v FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "before restart");

    // A crash (immediate stop) and a start from the stopped state recover committed data too.
    server.stop_with(StopMode::Immediate).unwrap();
    assert!(!server.is_running());
    server.restart().unwrap();
    let count: i64 = db
        .connect()
        .await
        .query_one("SELECT count(*) FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
}

#[tokio::test]
async fn stop_is_idempotent() {
    let mut server = TestServer::start();
    server.stop().unwrap();
    assert!(!server.is_running());
    server.stop().unwrap();
}

#[tokio::test]
async fn second_start_on_the_same_dir_reuses_the_running_server() {
    let first = TestServer::start();
    assert!(!first.reused());

    let second = EmbeddedPostgres::start_with(first.dir(), test_options()).unwrap();
    assert!(second.reused());
    assert_eq!(second.socket_dir(), first.socket_dir());
    assert_eq!(second.port(), first.port());
    assert_eq!(select_one(&second.connection_string("postgres")).await, 1);

    drop(second);
    assert!(
        first.is_running(),
        "dropping a reused server must not stop it"
    );
    assert_eq!(select_one(&first.connection_string("postgres")).await, 1);
}

#[tokio::test]
async fn the_starter_leaves_the_server_running_while_a_reuser_needs_it() {
    let scratch = ScratchDir::new();
    let starter = EmbeddedPostgres::start_with(scratch.path(), test_options()).unwrap();
    let reuser = EmbeddedPostgres::start_with(scratch.path(), test_options()).unwrap();
    assert!(reuser.reused());

    drop(starter);
    assert!(reuser.is_running());
    assert_eq!(select_one(&reuser.connection_string("postgres")).await, 1);
}

#[tokio::test]
async fn cluster_survives_stop_and_a_new_start() {
    let scratch = ScratchDir::new();
    let mut pg = EmbeddedPostgres::start_with(scratch.path(), test_options()).unwrap();
    let url = pg.connection_string("postgres");
    connect(&url)
        .await
        .batch_execute("CREATE TABLE survives (id int)")
        .await
        .unwrap();
    pg.stop().unwrap();
    drop(pg);

    let pg = EmbeddedPostgres::start_with(scratch.path(), test_options()).unwrap();
    assert!(!pg.reused());
    connect(&pg.connection_string("postgres"))
        .await
        .batch_execute("SELECT * FROM survives")
        .await
        .unwrap();
}

#[tokio::test]
async fn long_paths_put_the_socket_under_tmp() {
    let scratch = ScratchDir::new();
    let deep = scratch
        .path()
        .join("a-directory-name-long-enough".repeat(2))
        .join("to-push-the-socket-path-past-the-limit-of-one-hundred-and-seven-bytes");
    let pg = EmbeddedPostgres::start_with(&deep, test_options()).unwrap();
    assert!(
        pg.socket_dir().starts_with("/tmp") && !pg.socket_dir().starts_with(scratch.path()),
        "socket dir {}",
        pg.socket_dir().display()
    );
    assert_eq!(select_one(&pg.connection_string("postgres")).await, 1);

    let socket_dir = pg.socket_dir().to_path_buf();
    drop(pg);
    assert!(
        !socket_dir.exists(),
        "the temporary socket directory is removed on stop"
    );
}

#[tokio::test]
async fn a_bad_setting_fails_with_the_log_tail() {
    let scratch = ScratchDir::new();
    let opts = test_options().setting("shared_buffers", "lots");
    let err = EmbeddedPostgres::start_with(scratch.path(), opts).unwrap_err();
    match &err {
        EmbeddedError::StartFailed { tail, .. } => {
            assert!(tail.contains("shared_buffers"), "log tail: {tail}");
        }
        other => panic!("expected StartFailed, got {other:?}"),
    }
}

#[test]
fn setting_names_are_checked_before_anything_starts() {
    let scratch = ScratchDir::new();
    let opts = test_options().setting("port = 5432\nfsync", "off");
    let err = EmbeddedPostgres::start_with(scratch.path(), opts).unwrap_err();
    assert!(matches!(err, EmbeddedError::InvalidSetting(_)), "{err:?}");
}

/// As root, in a directory the `postgres` user cannot enter (a checkout under /root, or in a
/// `mktemp -d` directory): the server's files go to /var/tmp, linked from the cluster
/// directory, and a second start finds the same cluster there.
#[tokio::test]
async fn an_unreachable_directory_puts_the_server_files_under_var_tmp_as_root() {
    if !is_root() {
        return; // only root switches to another user, who may be locked out
    }
    let scratch = ScratchDir::new();
    let locked = scratch.path().join("locked");
    fs::create_dir(&locked).unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o700)).unwrap();
    let dir = locked.join(".pgsched");
    let pg = EmbeddedPostgres::start_with(&dir, test_options()).unwrap();
    let home = pg.data_dir().parent().unwrap().to_path_buf();
    // Removed whatever happens below, a server left there stopped first (SIGQUIT: immediate):
    // the scratch directory's watchdog does not look in /var/tmp.
    struct RemoveOnDrop(std::path::PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let pid = fs::read_to_string(self.0.join("data/postmaster.pid"))
                .ok()
                .and_then(|text| text.lines().next()?.trim().parse::<i32>().ok());
            if let Some(pid) = pid {
                // SAFETY: kill with a pid and a signal number has no memory effects.
                unsafe { libc::kill(pid, libc::SIGQUIT) };
                common::wait_until(std::time::Duration::from_secs(10), || {
                    // SAFETY: as above; signal 0 only checks that the process exists.
                    unsafe { libc::kill(pid, 0) != 0 }
                });
            }
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = RemoveOnDrop(home.clone());
    assert!(
        home.to_string_lossy().starts_with("/var/tmp/pgsched-"),
        "{}",
        home.display()
    );
    assert_eq!(select_one(&pg.connection_string("postgres")).await, 1);
    for name in ["data", "socket", "postgres.log"] {
        assert_eq!(
            fs::read_link(dir.join(name)).unwrap(),
            home.join(name),
            "{name} is linked from the cluster directory"
        );
    }
    assert_eq!(pg.dir(), dir.canonicalize().unwrap());
    connect(&pg.connection_string("postgres"))
        .await
        .batch_execute("CREATE TABLE kept (id int)")
        .await
        .unwrap();
    drop(pg);

    let pg = EmbeddedPostgres::start_with(&dir, test_options()).unwrap();
    assert_eq!(pg.data_dir(), home.join("data"));
    connect(&pg.connection_string("postgres"))
        .await
        .batch_execute("SELECT * FROM kept")
        .await
        .unwrap();
}

/// A cluster that already lives inside a directory the `postgres` user cannot enter is not
/// moved: the error says which directory to open up.
#[test]
fn an_existing_cluster_in_an_unreachable_directory_is_reported_as_root() {
    if !is_root() {
        return;
    }
    let scratch = ScratchDir::new();
    let locked = scratch.path().join("locked");
    let inner = locked.join("inner");
    fs::create_dir_all(inner.join("data")).unwrap();
    fs::write(inner.join("data/PG_VERSION"), "15\n").unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o700)).unwrap();
    let err = EmbeddedPostgres::start_with(&inner, test_options()).unwrap_err();
    match &err {
        EmbeddedError::NotReachable { blocked, .. } => assert_eq!(blocked, &locked),
        other => panic!("expected NotReachable, got {other:?}"),
    }
    assert!(err.to_string().contains("chmod o+x"), "{err}");
}

fn fake_bindir(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    for name in ["initdb", "pg_ctl", "postgres"] {
        let path = dir.join(name);
        fs::write(&path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn search(override_dir: Option<&Path>, versioned_root: &Path) -> BindirSearch {
    BindirSearch {
        override_dir: override_dir.map(Path::to_path_buf),
        pg_config: None,
        versioned_root: versioned_root.to_path_buf(),
    }
}

#[test]
fn not_installed_when_the_override_dir_is_empty() {
    let empty = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    fake_bindir(&root.path().join("15/bin"));
    // The override is authoritative even though other binaries exist.
    let err = find_postgres_bindir_in(&search(Some(empty.path()), root.path())).unwrap_err();
    assert!(matches!(err, EmbeddedError::NotInstalled), "{err:?}");

    let message = err.to_string();
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(message.contains("apt-get install postgresql"), "{message}");
    assert!(message.contains("DATABASE_URL"), "{message}");
}

#[test]
fn not_installed_when_nothing_is_found() {
    let empty = tempfile::tempdir().unwrap();
    let mut nothing = search(None, &empty.path().join("missing"));
    nothing.pg_config = Some(empty.path().join("no-pg_config"));
    let err = find_postgres_bindir_in(&nothing).unwrap_err();
    assert!(matches!(err, EmbeddedError::NotInstalled), "{err:?}");
}

#[test]
fn the_highest_installed_version_wins() {
    let root = tempfile::tempdir().unwrap();
    for version in ["9.6", "15", "16", "10"] {
        fake_bindir(&root.path().join(version).join("bin"));
    }
    // A version directory without a server (client packages only) is skipped.
    fs::create_dir_all(root.path().join("17/bin")).unwrap();
    fs::create_dir_all(root.path().join("not-a-version/bin")).unwrap();
    let found = find_postgres_bindir_in(&search(None, root.path())).unwrap();
    assert_eq!(found, root.path().join("16/bin"));
}

#[test]
fn an_override_with_binaries_is_used() {
    let dir = tempfile::tempdir().unwrap();
    fake_bindir(dir.path());
    let found = find_postgres_bindir_in(&search(Some(dir.path()), Path::new("/nonexistent")));
    assert_eq!(found.unwrap(), dir.path());
}

#[test]
fn pg_config_bindir_is_used_when_it_has_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let bindir = dir.path().join("bin");
    fake_bindir(&bindir);
    let pg_config = dir.path().join("pg_config");
    fs::write(
        &pg_config,
        format!("#!/bin/sh\necho '{}'\n", bindir.display()),
    )
    .unwrap();
    fs::set_permissions(&pg_config, fs::Permissions::from_mode(0o755)).unwrap();
    let mut s = search(None, Path::new("/nonexistent"));
    s.pg_config = Some(pg_config);
    // A child forked by another test thread while the script was open for writing keeps it
    // "busy" (ETXTBSY) until that child execs, so the first runs may fail for a moment.
    let found = (0..100)
        .find_map(|_| {
            let found = find_postgres_bindir_in(&s).ok();
            if found.is_none() {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            found
        })
        .expect("pg_config's bindir was not used");
    assert_eq!(found, bindir);
}
