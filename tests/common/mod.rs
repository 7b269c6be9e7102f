//! The integration-test harness every test binary shares (`mod common;`).
//!
//! Each test binary gets one private PostgreSQL server, started on first use in a temporary
//! directory with durability turned off for speed, and each test gets a fresh database of its own
//! on it ([`fresh_db`]). Tests that stop, kill or restart a server take a [`TestServer`] of their
//! own instead, so they never disturb tests running beside them. Nothing depends on a server
//! started by hand or on port 5432.
//!
//! Statics are never dropped, so every server directory is guarded by a watchdog process: when
//! this process exits, however it exits, the watchdog kills any server left in the directory and
//! deletes it.
#![allow(dead_code)] // each test binary uses its own part of the harness

use std::fs;
use std::ops::{Deref, DerefMut};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use pgsched::embedded::{EmbeddedError, EmbeddedOptions, EmbeddedPostgres};

/// Settings that trade durability for speed: a test cluster is thrown away anyway.
pub fn test_options() -> EmbeddedOptions {
    EmbeddedOptions::default()
        .setting("fsync", "off")
        .setting("synchronous_commit", "off")
        .setting("full_page_writes", "off")
        .setting("max_connections", "200")
}

/// The server this test binary shares, started on first use.
pub fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(TestServer::start)
}

/// A new, empty database on the shared server.
pub async fn fresh_db() -> TestDb {
    server().fresh_db().await
}

/// A database of one test's own.
#[derive(Debug, Clone)]
pub struct TestDb {
    pub name: String,
    /// tokio-postgres connection string.
    pub url: String,
}

impl TestDb {
    /// A new connection, its connection task spawned on the current runtime.
    pub async fn connect(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }
}

/// Connects to `url`, spawning the connection task on the current runtime.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|err| panic!("cannot connect to {url}: {err}"));
    tokio::spawn(async move {
        // Tests stop and kill servers on purpose; the client reports the loss when used.
        let _ = connection.await;
    });
    client
}

/// A server in a scratch directory of its own: stopped, and the directory deleted, on drop.
pub struct TestServer {
    // Fields drop in order: the server stops before the watchdog deletes its directory.
    pg: EmbeddedPostgres,
    scratch: ScratchDir,
}

impl TestServer {
    /// Starts a server with [`test_options`], panicking with the reason if it cannot.
    pub fn start() -> TestServer {
        Self::start_with(test_options()).unwrap_or_else(|err| panic!("{err}"))
    }

    pub fn start_with(opts: EmbeddedOptions) -> Result<TestServer, EmbeddedError> {
        let scratch = ScratchDir::new();
        let pg = EmbeddedPostgres::start_with(scratch.path(), opts)?;
        Ok(TestServer { pg, scratch })
    }

    /// A new, empty database on this server.
    pub async fn fresh_db(&self) -> TestDb {
        create_db(&self.pg).await
    }

    pub fn scratch_dir(&self) -> &Path {
        self.scratch.path()
    }
}

impl Deref for TestServer {
    type Target = EmbeddedPostgres;
    fn deref(&self) -> &EmbeddedPostgres {
        &self.pg
    }
}

impl DerefMut for TestServer {
    fn deref_mut(&mut self) -> &mut EmbeddedPostgres {
        &mut self.pg
    }
}

/// Creates a database with a name no other test of this process uses.
pub async fn create_db(pg: &EmbeddedPostgres) -> TestDb {
    let name = unique_db_name();
    let admin = connect(&pg.connection_string("postgres")).await;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|err| panic!("cannot create database {name}: {err}"));
    TestDb {
        url: pg.connection_string(&name),
        name,
    }
}

/// `t<counter>_<test name>`: the counter makes it unique within the server (one per process),
/// the test name makes it readable; the counter comes first so truncation cannot merge names.
fn unique_db_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("test");
    let test = test.rsplit("::").next().unwrap_or(test);
    let mut name = format!("t{n}_");
    name.extend(test.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '_'
        }
    }));
    name.truncate(63); // NAMEDATALEN - 1; ASCII, so on a char boundary
    name
}

/// A temporary directory (mode 0711) that a watchdog process deletes,
/// after killing any PostgreSQL server whose data directory lies inside, as soon as this value
/// is dropped or this process ends, however it ends.
pub struct ScratchDir {
    path: PathBuf,
    /// The watchdog waits for EOF on the other end of this pipe, which the kernel delivers when
    /// the last copy of this end closes: on drop, or on exit even by SIGKILL.
    _alive: OwnedFd,
}

impl ScratchDir {
    pub fn new() -> ScratchDir {
        let path = tempfile::Builder::new()
            .prefix("pgsched-test-")
            // Searchable but not listable: a server run as `postgres` must pass through it to a
            // cluster directory nested inside, whatever the umask.
            .permissions(fs::Permissions::from_mode(0o711))
            .tempdir()
            .expect("cannot create a temporary directory")
            .keep();
        let alive = spawn_watchdog(&path);
        ScratchDir {
            path,
            _alive: alive,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for ScratchDir {
    fn default() -> Self {
        Self::new()
    }
}

/// SIGQUIT is PostgreSQL's immediate shutdown; the postmaster passes it on to its children. The
/// comm check guards against a pid recycled since a crash left postmaster.pid behind. Socket
/// directories pgsched had to put under /tmp are removed too.
const WATCHDOG_SCRIPT: &str = r#"
read -r _ignored
find "$1" -name postmaster.pid 2>/dev/null | while IFS= read -r pidfile; do
  pid=$(sed -n 1p "$pidfile")
  sockdir=$(sed -n 5p "$pidfile")
  case "$pid" in ''|*[!0-9]*) continue ;; esac
  if [ ! -r "/proc/$pid/comm" ] || [ "$(cat "/proc/$pid/comm")" = postgres ]; then
    if kill -QUIT "$pid" 2>/dev/null; then
      n=0
      while kill -0 "$pid" 2>/dev/null && [ "$n" -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
    fi
  fi
  case "$sockdir" in /tmp/pgsched-*) rmdir "$sockdir" 2>/dev/null ;; esac
done
rm -rf "$1"
"#;

fn spawn_watchdog(dir: &Path) -> OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills `fds` with two new descriptors, which we take ownership of. CLOEXEC
    // keeps the write end out of every child, or the watchdog would wait for them too.
    let (read_end, write_end) = unsafe {
        assert_eq!(
            libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC),
            0,
            "pipe2: {}",
            std::io::Error::last_os_error()
        );
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    let mut watchdog = Command::new("/bin/sh")
        .arg("-c")
        .arg(WATCHDOG_SCRIPT)
        .arg("pgsched-test-watchdog")
        .arg(dir)
        .stdin(Stdio::from(read_end))
        // Test runners wait for the test's stdout and stderr to close.
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Out of the test's process group, so Ctrl-C kills the tests but not their cleanup.
        .process_group(0)
        .spawn()
        .expect("cannot spawn the test-server watchdog");
    // Reaped here if it finishes while we live (a dropped ScratchDir); else init reaps it.
    std::thread::spawn(move || watchdog.wait());
    write_end
}

/// A spec directory of the test's own, deleted when dropped.
pub struct Specs(tempfile::TempDir);

impl Specs {
    pub fn new() -> Specs {
        Specs(tempfile::tempdir().unwrap())
    }
    /// A directory holding these files from the start.
    pub fn with(files: &[(&str, &str)]) -> Specs {
        let specs = Specs::new();
        for (name, text) in files {
            specs.write(name, text);
        }
        specs
    }
    pub fn path(&self) -> &Path {
        self.0.path()
    }
    pub fn write(&self, name: &str, text: &str) {
        let path = self.0.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.0.path().join(name)).unwrap();
    }
}

// ---- `pgsched run` as a child process (tests/sidecar.rs, benches/sidecar.rs) ----

use std::io::{Read, Write};
use std::process::Child;
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `pgsched run` child process, killed when dropped.
pub struct Sidecar {
    pub child: Child,
    pub port: u16,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl Sidecar {
    /// With the tests' quick settings (status every 200 ms, 1 s poll, 3 s grace, 50 ms
    /// debounce, debug logs) unless `extra` gives its own.
    pub fn start(dir: &Path, url: &str, extra: &[&str]) -> Sidecar {
        let defaults = [
            ("--status-interval", "200ms"),
            ("--poll", "1s"),
            ("--grace", "3s"),
            ("--debounce", "50ms"),
        ];
        let mut args: Vec<&str> = Vec::new();
        for (flag, value) in defaults {
            if !extra.contains(&flag) {
                args.extend([flag, value]);
            }
        }
        args.extend(extra);
        Sidecar::start_plain(dir, url, &args, "info,pgsched=debug")
    }

    /// With pgsched's own defaults but for the port: what a user runs.
    pub fn start_plain(dir: &Path, url: &str, args: &[&str], log_filter: &str) -> Sidecar {
        Sidecar::start_as(dir, url, args, log_filter, None)
    }

    /// Like [`Sidecar::start_plain`], as another user (uid, gid) when given.
    pub fn start_as(
        dir: &Path,
        url: &str,
        args: &[&str],
        log_filter: &str,
        user: Option<(u32, u32)>,
    ) -> Sidecar {
        let port = free_port();
        let log_dir = tempfile::tempdir().unwrap();
        let log = log_dir.path().join("pgsched.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut command = match user {
            Some((uid, gid)) => {
                let mut command = Command::new(binary_for_other_users());
                command.uid(uid).gid(gid);
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_pgsched")),
        };
        let child = command
            .arg("--dir")
            .arg(dir)
            .args(["--database-url", url, "run"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("PGSCHED_LOG", log_filter)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        Sidecar {
            child,
            port,
            log,
            _log_dir: log_dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// GET on the sidecar's HTTP port: (status code, body), or None when nothing answers.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((code, body))
    }

    pub fn wait_ready(&mut self) {
        let ok = wait_until(Duration::from_secs(30), || {
            self.get("/readyz").is_some_and(|(code, _)| code == 200)
                || self.child.try_wait().unwrap().is_some()
        }) && self.child.try_wait().unwrap().is_none();
        assert!(ok, "never ready; log:\n{}", self.log());
    }

    /// The value of a metric without labels, from /metrics.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} "))?.trim().parse().ok())
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// The pgsched binary, copied once per test process into a scratch directory every user can
/// enter: the checkout itself may be private (`/root`, a `mktemp -d` directory), and then
/// another user cannot execute `target/debug/pgsched` in place.
fn binary_for_other_users() -> &'static Path {
    static COPY: OnceLock<(ScratchDir, PathBuf)> = OnceLock::new();
    let (_, path) = COPY.get_or_init(|| {
        let scratch = ScratchDir::new();
        let path = scratch.path().join("pgsched");
        fs::copy(env!("CARGO_BIN_EXE_pgsched"), &path)
            .expect("cannot copy the pgsched binary for another user");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        (scratch, path)
    });
    path
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 20 ms until it holds or `within` passes.
pub fn wait_until(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- specs, applies and an in-process executor (tests/executor.rs, tests/chains.rs) ----

use pgsched::executor::{run_executor, ExecutorConfig, SystemClock};
use pgsched::reconcile::{apply, Outcome};
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

/// A Job document with this spec body (indented two spaces).
pub fn job(name: &str, body: &str) -> String {
    format!("apiVersion: pgsched/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n{body}")
}

pub async fn apply_specs(client: &mut Client, specs: &Specs) {
    match apply(client, specs.path(), false).await.unwrap() {
        Outcome::Applied(_) => {}
        other => panic!("apply failed: {other:?}"),
    }
}

/// An executor running in this process until stopped.
pub struct Executor {
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl Executor {
    pub fn start(url: &str, worker: &str, tweak: impl FnOnce(&mut ExecutorConfig)) -> Executor {
        let mut config = ExecutorConfig::new(url);
        config.worker = worker.to_string();
        config.poll = Duration::from_millis(500);
        config.heartbeat = Duration::from_millis(300);
        tweak(&mut config);
        let stop = CancellationToken::new();
        let token = stop.clone();
        let handle = tokio::spawn(async move {
            run_executor(config, Arc::new(SystemClock), token)
                .await
                .unwrap();
        });
        Executor { stop, handle }
    }
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("executor stops")
            .unwrap();
    }
}

/// Enqueues an on-demand run of `job` through `pgsched.trigger` with `params` (JSON text).
pub async fn trigger(client: &Client, job: &str, params: &str) -> i64 {
    client
        .query_one(
            "SELECT pgsched.trigger($1, $2::text::jsonb)",
            &[&job, &params],
        )
        .await
        .map_or_else(|e| panic!("trigger {job}: {e}"), |r| r.get(0))
}

/// Polls `query` (returning one i64) until `check` holds or the deadline passes.
pub async fn wait_for(
    client: &Client,
    query: &str,
    check: impl Fn(i64) -> bool,
    within: Duration,
) -> i64 {
    let last = std::cell::Cell::new(0);
    eventually(&format!("`{query}` to pass its check"), within, || async {
        last.set(client.query_one(query, &[]).await.unwrap().get(0));
        check(last.get())
    })
    .await;
    last.get()
}

/// Awaits `condition` every 20 ms until it holds, and panics naming `what` when it has not
/// within `within`: the one asynchronous wait of the tests (the threads of sidecar tests use
/// [`wait_until`]).
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// True when a benchmark runs under `cargo bench` (which passes `--bench`); under
/// `cargo test --all-targets` (`make test`) it is a smoke run: smaller and shorter, proving the
/// benchmark still works without spending minutes of CI on figures nobody reads there.
pub fn full_bench() -> bool {
    let full = std::env::args().any(|a| a == "--bench");
    static SAID: std::sync::Once = std::sync::Once::new();
    if !full {
        SAID.call_once(|| {
            println!(
                "(smoke run under cargo test: smaller and shorter; `make bench` for the figures)"
            );
        });
    }
    full
}
