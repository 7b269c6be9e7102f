//! TLS to PostgreSQL as libpq users know it: every `sslmode`, `sslrootcert` (a file or the
//! system store), client certificates, and `pgsched run` whose every connection (leadership,
//! LISTEN, pools, the Timeout loop, cancel requests, named Connections) goes over TLS. Against a
//! real server with `ssl = on`, a certificate for `localhost` from a CA this test makes, and a
//! TCP listener on 127.0.0.1.

// A scenario reads best as one story from set-up to the last check, so tests here may be
// longer than the 80 lines asked of the code.
#![allow(clippy::too_many_lines)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use common::{job, wait_until, ScratchDir, Sidecar, Specs, TestServer};
use pgsched::store::connect;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A server that speaks TLS, and the files a client needs for it.
struct TlsServer {
    server: TestServer,
    /// The CA that signed the server's and the client's certificates.
    ca: PathBuf,
    /// A CA that signed nothing here.
    other_ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    _certs: ScratchDir,
}

impl TlsServer {
    /// A TCP connection string as the superuser; `extra` adds TLS keys.
    fn url(&self, host: &str, dbname: &str, extra: &str) -> String {
        format!(
            "host={host} port={} user=postgres dbname={dbname} {extra}",
            self.server.port()
        )
    }
}

fn tls_server() -> &'static TlsServer {
    static SERVER: OnceLock<TlsServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let certs = ScratchDir::new();
        let dir = certs.path();
        let ca = issuer("pgsched test CA");
        let server = leaf(&ca, "localhost", vec!["localhost".into()]);
        let client = leaf(&ca, "certuser", Vec::new());
        let other_ca = issuer("someone else's CA");
        let write = |name: &str, text: &str, mode: u32| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        let ca_file = write("ca.pem", &ca.pem(), 0o644);
        let server_cert = write("server.crt", &server.0, 0o644);
        // The server refuses a key that others can read, and runs as `postgres` under root.
        let server_key = write("server.key", &server.1, 0o600);
        give_to_server_user(&server_key);
        let hba = write(
            "pg_hba.conf",
            "local all all trust\n\
             hostssl all certuser 127.0.0.1/32 cert\n\
             hostssl all pwuser 127.0.0.1/32 scram-sha-256\n\
             hostssl all tlsonly 127.0.0.1/32 trust\n\
             host all postgres 127.0.0.1/32 trust\n",
            0o644,
        );
        let tls_server = TestServer::start_with(
            common::test_options()
                .setting("listen_addresses", "127.0.0.1")
                .setting("ssl", "on")
                .setting("ssl_cert_file", server_cert.to_str().unwrap())
                .setting("ssl_key_file", server_key.to_str().unwrap())
                .setting("ssl_ca_file", ca_file.to_str().unwrap())
                .setting("hba_file", hba.to_str().unwrap()),
        )
        .unwrap_or_else(|e| panic!("cannot start a TLS server: {e}"));
        TlsServer {
            server: tls_server,
            ca: ca_file,
            other_ca: write("other-ca.pem", &other_ca.pem(), 0o644),
            client_cert: write("client.crt", &client.0, 0o644),
            client_key: write("client.key", &client.1, 0o600),
            _certs: certs,
        }
    })
}

fn issuer(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// (certificate PEM, key PEM) for `common_name`, signed by `ca`.
fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    common_name: &str,
    names: Vec<String>,
) -> (String, String) {
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn give_to_server_user(path: &Path) {
    // SAFETY: geteuid has no preconditions; getpwnam's result is read before any other call.
    unsafe {
        if libc::geteuid() != 0 {
            return;
        }
        let pw = libc::getpwnam(c"postgres".as_ptr());
        assert!(
            !pw.is_null(),
            "running as root, but there is no postgres user"
        );
        std::os::unix::fs::chown(path, Some((*pw).pw_uid), Some((*pw).pw_gid)).unwrap();
    }
}

/// Creates a role the server's pg_hba names (`name` and its options), unless a test running
/// beside this one already did.
async fn create_role(s: &TlsServer, definition: &str) {
    let admin = connect(&s.server.connection_string("postgres"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE {definition}; EXCEPTION WHEN duplicate_object THEN END $$"
        ))
        .await
        .unwrap();
}

/// Whether the session behind `client` is encrypted, from the server's side.
async fn encrypted(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn connect_error(url: &str) -> String {
    match connect(url).await {
        Ok(_) => panic!("connected, but should not have: {url}"),
        Err(e) => e.to_string(),
    }
}

/// Whether a connection to the TLS server's `postgres` database at `host`, with the TLS keys
/// `extra`, is encrypted; panics when it cannot connect.
async fn encrypted_at(s: &TlsServer, host: &str, extra: &str) -> bool {
    let url = s.url(host, "postgres", extra);
    let client = connect(&url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    encrypted(&client).await
}

/// Why a connection to the TLS server at `host` with `extra` is refused.
async fn refused_at(s: &TlsServer, host: &str, extra: &str) -> String {
    connect_error(&s.url(host, "postgres", extra)).await
}

#[tokio::test]
async fn every_sslmode_means_what_it_means_in_libpq() {
    let s = tls_server();
    let ca = s.ca.display();
    let other_ca = s.other_ca.display();
    // libpq's default CA file, when this machine has one, makes `require` check against it.
    let home_ca = std::env::var_os("HOME")
        .map(|h| Path::new(&h).join(".postgresql/root.crt"))
        .is_some_and(|p| p.exists());
    // Encrypted without checking: prefer (the default) and require without a CA.
    let modes: &[&str] = if home_ca {
        &["", "sslmode=prefer", "sslmode=allow"]
    } else {
        &["", "sslmode=prefer", "sslmode=allow", "sslmode=require"]
    };
    for &extra in modes {
        assert!(
            encrypted_at(s, "localhost", extra).await,
            "{extra:?} should encrypt"
        );
    }
    assert!(!encrypted_at(s, "localhost", "sslmode=disable").await);

    // verify-full: the CA and the name.
    let verify_full = format!("sslmode=verify-full sslrootcert={ca}");
    assert!(encrypted_at(s, "localhost", &verify_full).await);
    // The certificate is for `localhost`, not for 127.0.0.1.
    let e = refused_at(s, "127.0.0.1", &verify_full).await;
    assert!(e.contains("not valid for name"), "{e}");
    // verify-ca does not look at the name.
    assert!(
        encrypted_at(
            s,
            "127.0.0.1",
            &format!("sslmode=verify-ca sslrootcert={ca}")
        )
        .await
    );

    // A CA that did not sign the server's certificate is refused by every checking mode, and
    // by require once a root file is given (libpq's rule).
    for mode in ["verify-full", "verify-ca", "require"] {
        let e = refused_at(
            s,
            "localhost",
            &format!("sslmode={mode} sslrootcert={other_ca}"),
        )
        .await;
        assert!(e.contains("UnknownIssuer"), "{mode}: {e}");
    }
    // verify-ca skips the name, never the CA: a wrong CA and a wrong name still fail.
    let e = refused_at(
        s,
        "127.0.0.1",
        &format!("sslmode=verify-ca sslrootcert={other_ca}"),
    )
    .await;
    assert!(e.contains("UnknownIssuer"), "{e}");
    // Checking without a CA says what to set, before any connection is tried.
    if !home_ca {
        let e = refused_at(s, "localhost", "sslmode=verify-full").await;
        assert!(e.contains("sslrootcert"), "{e}");
    }
    // A URL of the other form, percent-encoded, works the same.
    let url = format!(
        "postgresql://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        s.server.port(),
        ca.to_string().replace('/', "%2F")
    );
    assert!(encrypted(&connect(&url).await.unwrap()).await);
}

#[tokio::test]
async fn a_client_certificate_logs_in_with_cert_authentication() {
    let s = tls_server();
    create_role(s, "certuser LOGIN").await;
    let url = |extra: &str| {
        format!(
            "host=localhost port={} user=certuser dbname=postgres sslmode=verify-full sslrootcert={} {extra}",
            s.server.port(),
            s.ca.display()
        )
    };
    let client = connect(&url(&format!(
        "sslcert={} sslkey={}",
        s.client_cert.display(),
        s.client_key.display()
    )))
    .await
    .unwrap();
    let user: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, "certuser");
    // Without the certificate the server refuses: pg_hba says `cert`.
    let e = connect_error(&url("")).await;
    assert!(e.contains("certificate") || e.contains("certuser"), "{e}");
    // A key file that is not there is named.
    let e = connect_error(&url(&format!(
        "sslcert={} sslkey=/nonexistent/client.key",
        s.client_cert.display()
    )))
    .await;
    assert!(e.contains("/nonexistent/client.key"), "{e}");
}

#[tokio::test]
async fn require_refuses_a_server_without_tls_and_unix_sockets_ignore_sslmode() {
    let plain =
        TestServer::start_with(common::test_options().setting("listen_addresses", "127.0.0.1"))
            .unwrap();
    let url = |mode: &str| {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode={mode}",
            plain.port()
        )
    };
    let e = connect_error(&url("require")).await;
    assert!(e.contains("server does not support TLS"), "{e}");
    // prefer falls back to plain text, as libpq does.
    assert!(!encrypted(&connect(&url("prefer")).await.unwrap()).await);
    // Over a Unix socket TLS is never used, whatever sslmode says (libpq ignores it there).
    let socket = format!("{} sslmode=require", plain.connection_string("postgres"));
    assert!(!encrypted(&connect(&socket).await.unwrap()).await);
}

/// TCP sessions of `db` other than this one: (encrypted, not encrypted).
async fn tcp_sessions(client: &tokio_postgres::Client, db: &str) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
               FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
              WHERE a.datname = $1 AND a.client_addr IS NOT NULL AND a.pid <> pg_backend_pid()",
            &[&db],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_makes_every_connection_over_tls() {
    let s = tls_server();
    let db = common::create_db(&s.server).await;
    let admin = connect(&db.url).await.unwrap();
    // The sidecar logs in as a role pg_hba admits over TLS only: a plain-text connection of
    // any of its parts would be refused, not just go unseen between samples.
    create_role(s, "tlsonly LOGIN SUPERUSER").await;
    admin
        .batch_execute(
            "CREATE TABLE hits (at timestamptz DEFAULT now());
             CREATE TABLE holds (id serial PRIMARY KEY, status text NOT NULL DEFAULT 'held',
                                 created_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .unwrap();
    let ca = s.ca.display().to_string();
    let secure = format!(
        "host=localhost port={} user=tlsonly dbname={} sslmode=verify-full sslrootcert={ca}",
        s.server.port(),
        db.name
    );
    let wrong_ca = s.url(
        "localhost",
        &db.name,
        &format!("sslmode=verify-full sslrootcert={}", s.other_ca.display()),
    );
    let connection = |name: &str, url: &str| {
        format!(
            "apiVersion: pgsched/v1\nkind: Connection\nmetadata:\n  name: {name}\nspec:\n  url: \"{url}\"\n"
        )
    };
    let specs = Specs::with(&[
        ("hit.yaml", &job("hit", "  sql: INSERT INTO hits DEFAULT VALUES\n")),
        (
            "slow.yaml",
            &job("slow", "  sql: SELECT pg_sleep(30)\n  timeout: 1s\n"),
        ),
        (
            "remote.yaml",
            &job("remote", "  database: secure\n  sql: INSERT INTO hits DEFAULT VALUES\n"),
        ),
        (
            "untrusted.yaml",
            &job("untrusted", "  database: untrusted\n  sql: SELECT 1\n"),
        ),
        ("secure.yaml", &connection("secure", &secure)),
        ("untrusted-conn.yaml", &connection("untrusted", &wrong_ca)),
        (
            "holds.yaml",
            "apiVersion: pgsched/v1\nkind: Timeout\nmetadata:\n  name: holds\nspec:\n  table: holds\n  column: created_at\n  after: 1h\n  where: \"status = 'held'\"\n  set: {status: expired}\n",
        ),
    ]);
    let mut sidecar = Sidecar::start(specs.path(), &secure, &[]);
    sidecar.wait_ready();

    for name in ["hit", "slow", "remote", "untrusted"] {
        admin
            .execute("SELECT pgsched.trigger($1)", &[&name])
            .await
            .unwrap();
    }
    let status = |job: &'static str| {
        let admin = &admin;
        async move {
            admin
                .query_opt(
                    "SELECT status, coalesce(error, '') FROM pgsched.runs WHERE job = $1
                      AND status NOT IN ('pending', 'running')",
                    &[&job],
                )
                .await
                .unwrap()
                .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut finished = Vec::new();
    for name in ["hit", "slow", "remote", "untrusted"] {
        loop {
            if let Some(done) = status(name).await {
                finished.push((name, done));
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} did not finish; log:\n{}",
                sidecar.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let outcome = |name: &str| finished.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    assert_eq!(outcome("hit").0, "succeeded", "{:?}", outcome("hit"));
    assert_eq!(outcome("remote").0, "succeeded", "{:?}", outcome("remote"));
    let (st, error) = outcome("slow");
    assert!(
        st == "failed" && error.contains("timed out"),
        "{st}: {error}"
    );
    // The cancel request went out over TLS too (a failed one is logged; the server's
    // statement_timeout would still end the statement, so the log is what tells).
    assert!(
        !sidecar.log().contains("cannot send a cancel request"),
        "{}",
        sidecar.log()
    );
    // And the statement is gone from the server.
    let sleeping = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'
               AND state = 'active'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(sleeping, 0, "the timed-out statement still runs");
    let (st, error) = outcome("untrusted");
    assert!(
        st == "failed" && error.contains("UnknownIssuer"),
        "{st}: {error}"
    );

    // Leadership, LISTEN, the pools and the Timeout loop: all encrypted, none in plain text.
    let settled = wait_until(Duration::from_secs(10), || {
        let (tls, plain) = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(tcp_sessions(&admin, &db.name))
        });
        tls >= 4 && plain == 0
    });
    let (tls, plain) = tcp_sessions(&admin, &db.name).await;
    assert!(
        settled,
        "{tls} encrypted and {plain} plain TCP sessions; log:\n{}",
        sidecar.log()
    );
}

/// As with libpq, `PGPASSWORD` gives the scheduler's database its password, so a deployment
/// keeps the secret out of `--database-url` (the Kubernetes and systemd examples do).
#[tokio::test]
async fn pgpassword_or_pgpass_supplies_the_scheduler_databases_password() {
    let s = tls_server();
    create_role(s, "pwuser LOGIN SUPERUSER PASSWORD 's3cret'").await;
    let db = common::create_db(&s.server).await;
    let specs = Specs::with(&[("a.yaml", &job("a", "  sql: SELECT 1\n"))]);
    let url = format!(
        "postgres://pwuser@localhost:{}/{}?sslmode=require",
        s.server.port(),
        db.name
    );
    // A HOME of its own: no ~/.pgpass of this machine's interferes, and one is written below.
    let home = tempfile::tempdir().unwrap();
    let plan = |password: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pgsched"));
        command
            .arg("--dir")
            .arg(specs.path())
            .args(["--database-url", &url, "plan"])
            .env("HOME", home.path())
            .env_remove("PGPASSFILE")
            .env_remove("PGPASSWORD");
        if let Some(password) = password {
            command.env("PGPASSWORD", password);
        }
        let out = command.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = plan(Some("s3cret"));
    assert_eq!(code, Some(2), "changes pending expected; stderr:\n{stderr}");
    let (code, stderr) = plan(None);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("password"), "{stderr}");
    let (code, stderr) = plan(Some("wrong"));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );

    // Or ~/.pgpass, as with psql, first matching line winning, when it is private.
    let pgpass = home.path().join(".pgpass");
    std::fs::write(
        &pgpass,
        format!(
            "# other servers first\nelsewhere:*:*:pwuser:wrong\nlocalhost:{}:*:pwuser:s3cret\n*:*:*:*:wrong\n",
            s.server.port()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, stderr) = plan(None);
    assert_eq!(code, Some(2), "stderr:\n{stderr}");
    // PGPASSWORD comes first.
    let (code, _) = plan(Some("wrong"));
    assert_eq!(code, Some(1));
    // A file others can read is ignored, with a warning, as libpq does.
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, stderr) = plan(None);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("chmod 0600"), "{stderr}");
}
