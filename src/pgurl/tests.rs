//! Tests of connection-string parsing: libpq's URL and key=value forms, sslmode meanings,
//! pgpass lookups, and errors that never show a password.

use super::*;
use tokio_postgres::config::{Host, SslMode as PgMode};

fn ok(s: &str) -> ConnString {
    parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn without_tls_keys_the_default_is_prefer_as_in_libpq() {
    let c = ok("postgres://app@db.example.com:6432/app");
    assert_eq!(c.tls.mode, SslMode::Prefer);
    assert_eq!(c.config.get_ssl_mode(), PgMode::Prefer);
    assert_eq!(c.config.get_user(), Some("app"));
    assert_eq!(c.config.get_ports(), &[6432]);
    assert!(c.tls.root_cert.is_none() && c.tls.client_cert.is_none());
}

#[test]
fn every_libpq_sslmode_is_understood() {
    for (text, mode, pg) in [
        ("disable", SslMode::Disable, PgMode::Disable),
        ("allow", SslMode::Allow, PgMode::Prefer),
        ("prefer", SslMode::Prefer, PgMode::Prefer),
        ("require", SslMode::Require, PgMode::Require),
        ("verify-ca", SslMode::VerifyCa, PgMode::Require),
        ("verify-full", SslMode::VerifyFull, PgMode::Require),
    ] {
        let c = ok(&format!("postgres://db.example.com/app?sslmode={text}"));
        assert_eq!((c.tls.mode, c.config.get_ssl_mode()), (mode, pg), "{text}");
        assert_eq!(mode.as_str(), text);
    }
}

#[test]
fn url_query_keeps_the_other_parameters() {
    let c = ok("postgresql://u@h/d?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20bundle.pem&connect_timeout=7");
    assert_eq!(c.tls.mode, SslMode::VerifyFull);
    assert_eq!(
        c.tls.root_cert,
        Some(RootCert::File("/etc/ca bundle.pem".into()))
    );
    assert_eq!(c.config.get_application_name(), Some("x"));
    assert_eq!(
        c.config.get_connect_timeout(),
        Some(&std::time::Duration::from_secs(7))
    );
}

#[test]
fn key_value_form_with_quotes_and_escapes() {
    let c = ok(
        r"host=db.example.com  sslmode = 'verify-ca' sslrootcert='/etc/my ca.pem' application_name='it\'s' dbname=a\ b",
    );
    assert_eq!(c.tls.mode, SslMode::VerifyCa);
    assert_eq!(
        c.tls.root_cert,
        Some(RootCert::File("/etc/my ca.pem".into()))
    );
    assert_eq!(c.config.get_application_name(), Some("it's"));
    assert_eq!(c.config.get_dbname(), Some("a b"));
    assert_eq!(c.config.get_hosts(), &[Host::Tcp("db.example.com".into())]);
}

#[test]
fn client_certificates_come_in_pairs() {
    let c = ok("postgres://h/d?sslmode=require&sslcert=/c.pem&sslkey=/k.pem");
    assert_eq!(
        c.tls.client_cert,
        Some((PathBuf::from("/c.pem"), PathBuf::from("/k.pem")))
    );
    assert_eq!(
        parse("postgres://h/d?sslcert=/c.pem").unwrap_err(),
        UrlError::HalfClientCert("sslkey")
    );
    assert_eq!(
        parse("host=h sslkey=/k.pem").unwrap_err(),
        UrlError::HalfClientCert("sslcert")
    );
}

#[test]
fn system_roots_mean_verify_full() {
    let c = ok("postgres://h/d?sslrootcert=system");
    assert_eq!(c.tls.mode, SslMode::VerifyFull);
    assert_eq!(c.tls.root_cert, Some(RootCert::System));
    assert_eq!(
        parse("postgres://h/d?sslrootcert=system&sslmode=require").unwrap_err(),
        UrlError::SystemRootsNeedVerifyFull
    );
}

#[test]
fn pgpass_lines_match_like_libpq() {
    let text = [
        "# comment",
        "db.example.com:5432:app:alice:first",
        "*:*:*:alice:fallback",
        r"localhost:6432:*:bob:with\:colon\\",
        r"\*:*:*:carol:literal-star",
        "other:*:*:dave:a:b:c",
        " #x:*:*:erin:not-a-comment-only-column-1-is",
        "/srv/pg:5432:*:fay:socket",
        r"*:*:*:gus:ends-in\",
        "*:*:*:hal:",
        "short:line",
    ]
    .join("\n");
    let find = |h, p, d, u| pgpass_lookup(&text, h, p, d, u);
    assert_eq!(
        find("db.example.com", 5432, "app", "alice").as_deref(),
        Some("first")
    );
    assert_eq!(
        find("db.example.com", 5433, "app", "alice").as_deref(),
        Some("fallback")
    );
    assert_eq!(
        find("localhost", 6432, "x", "bob").as_deref(),
        Some(r"with:colon\")
    );
    assert_eq!(find("localhost", 5432, "x", "bob"), None);
    assert_eq!(find("anything", 1, "x", "carol"), None);
    assert_eq!(find("*", 1, "x", "carol").as_deref(), Some("literal-star"));
    // The password ends at the next unescaped colon, as in libpq.
    assert_eq!(find("other", 1, "x", "dave").as_deref(), Some("a"));
    assert_eq!(
        find(" #x", 1, "x", "erin").as_deref(),
        Some("not-a-comment-only-column-1-is")
    );
    assert_eq!(find("/srv/pg", 5432, "x", "fay").as_deref(), Some("socket"));
    assert_eq!(find("h", 1, "d", "gus").as_deref(), Some(r"ends-in\"));
    assert_eq!(find("h", 1, "d", "hal").as_deref(), Some(""));
    assert_eq!(find("h", 1, "d", "nobody"), None);
}

#[test]
fn the_pgpass_key_defaults_as_libpq_does() {
    let key = |s: &str| pgpass_key(&ok(s).config, || Some("osuser".into()));
    assert_eq!(
        key("postgres://alice@db.example.com/app"),
        Some(("db.example.com".into(), 5432, "app".into(), "alice".into()))
    );
    assert_eq!(
        key("host=/run/postgresql port=6432 user=bob"),
        Some(("localhost".into(), 6432, "bob".into(), "bob".into()))
    );
    // Another socket directory is matched by its path.
    assert_eq!(
        key("host=/srv/pg user=bob").map(|k| k.0),
        Some("/srv/pg".into())
    );
    // Without a user, the OS user, as when connecting.
    assert_eq!(
        key("host=db dbname=app"),
        Some(("db".into(), 5432, "app".into(), "osuser".into()))
    );
}

#[test]
fn hostaddr_alone_is_the_name_and_a_socket_with_hostaddr_is_tcp() {
    let c = ok("hostaddr=10.1.2.3 port=6432 sslmode=verify-ca");
    assert_eq!(c.config.get_hosts(), &[Host::Tcp("10.1.2.3".into())]);
    let c = ok("hostaddr=10.1.2.3");
    assert_eq!(c.config.get_hosts(), &[Host::Tcp("10.1.2.3".into())]);
    assert_eq!(
        parse("hostaddr=10.1.2.3 sslmode=verify-full").unwrap_err(),
        UrlError::VerifyFullWithoutHost
    );
    // It would connect over TCP with no name for TLS (and once went without TLS at all).
    for mode in ["prefer", "verify-full"] {
        assert_eq!(
            parse(&format!("host=/tmp hostaddr=127.0.0.1 sslmode={mode}")).unwrap_err(),
            UrlError::SocketWithHostaddr
        );
    }
    let c = ok("host=db.example.com hostaddr=10.1.2.3 sslmode=verify-full");
    assert_eq!(c.config.get_hosts(), &[Host::Tcp("db.example.com".into())]);
}

#[test]
fn unix_sockets_never_use_tls() {
    let c = ok("host=/var/run/postgresql port=5432 user=postgres sslmode=require");
    assert!(c.tls.unix_only);
    assert_eq!(c.config.get_ssl_mode(), PgMode::Disable);
    // The systemd example's URL for a server on the same machine.
    let c = ok("postgres:///app?host=/run/postgresql");
    assert!(c.tls.unix_only);
    assert_eq!(c.config.get_dbname(), Some("app"));
    let c = ok("host=/tmp,db.example.com sslmode=require");
    assert!(!c.tls.unix_only);
    assert_eq!(c.config.get_ssl_mode(), PgMode::Require);
}

#[test]
fn bad_input_is_named_without_echoing_the_string() {
    assert_eq!(
        parse("postgres://h/d?sslmode=verify").unwrap_err(),
        UrlError::BadSslMode("verify".into())
    );
    assert_eq!(
        parse("postgres://h/d?sslmode=require&sslmode=disable").unwrap_err(),
        UrlError::Repeated("sslmode")
    );
    assert_eq!(
        parse("postgres://h/d?sslrootcert=").unwrap_err(),
        UrlError::Empty("sslrootcert")
    );
    assert_eq!(
        parse("postgres://h/d?sslpassword=x").unwrap_err(),
        UrlError::Unsupported("sslpassword")
    );
    assert_eq!(
        parse("host='h sslmode=require").unwrap_err(),
        UrlError::UnclosedQuote
    );
    assert_eq!(
        parse("host h").unwrap_err(),
        UrlError::MissingEquals("host".into())
    );
    // A mistyped scheme is read as key/value text; the message must not quote it, nor any
    // piece of a password that a space split off.
    for (url, secret) in [
        ("postgress://app:hunter2@db/app", "hunter2"),
        ("host=db sslmode=hunter2", "hunter2"),
        ("host=db password=hun ter2", "ter2"),
        ("host=db password=correct horse battery", "horse"),
        ("host=db password=a b=c", "`b`"),
        ("postgres://db/app?password=x&pass%20word=y", "pass word"),
    ] {
        let e = parse(url).unwrap_err().to_string();
        assert!(!e.contains(secret), "{url}: {e}");
    }
    let e = parse("host=db sslmdoe=require").unwrap_err().to_string();
    assert!(e.contains("did you mean `sslmode`"), "{e}");
    let e = parse("host=db sslmode=requried").unwrap_err().to_string();
    assert!(
        e.starts_with("sslmode `requried` is not one of")
            && e.ends_with("(did you mean `require`?)"),
        "{e}"
    );
    // A libpq keyword that tokio-postgres does not take is named (it is no secret).
    let e = parse("host=db gssencmode=disable").unwrap_err().to_string();
    assert!(e.contains("gssencmode"), "{e}");
    assert_eq!(
        parse("postgres://u@h/d?nonsense=1").unwrap_err(),
        UrlError::UnknownKey("nonsense".into())
    );
    let e = parse("host=h password=hunter2 bogus=1")
        .unwrap_err()
        .to_string();
    assert!(!e.contains("hunter2"), "{e}");
}
