//! Connection strings as libpq reads them, TLS settings included. tokio-postgres knows only
//! `sslmode=disable|prefer|require` and no certificate options, while users copy URLs like
//! `postgres://app@db.example.com/app?sslmode=verify-full&sslrootcert=/etc/ssl/rds.pem` from
//! their cloud console. So the TLS keys are taken out of the string here, with libpq's meanings,
//! and the rest goes to tokio-postgres' own parser. Pure: no files are read (store::tls does).
//!
//! Both forms are understood: URLs (`postgres://…?k=v&k=v`, values percent-encoded) and
//! key/value strings (`host=/tmp port=5432 sslmode=require`, values optionally single-quoted).

use std::path::PathBuf;
use std::str::FromStr;

/// libpq's `sslmode`, all six of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// libpq tries without TLS first; tokio-postgres cannot, so this is treated as `prefer`.
    Allow,
    /// TLS when the server offers it, the certificate not checked (libpq's default).
    Prefer,
    /// TLS or no connection; the certificate is checked against `sslrootcert` only when one is
    /// given (or `~/.postgresql/root.crt` exists), as libpq does.
    Require,
    /// TLS, and a certificate signed by a trusted CA, whatever name it is for.
    VerifyCa,
    /// TLS, a certificate signed by a trusted CA and issued for the host connected to.
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(value: &str) -> Option<SslMode> {
        Some(match value {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// Modes that refuse a server whose certificate is not signed by a trusted CA.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// Where trusted CA certificates come from (`sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file with one or more CA certificates.
    File(PathBuf),
    /// `sslrootcert=system`: the operating system's trust store.
    System,
}

/// The TLS half of a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: Option<RootCert>,
    /// `sslcert` and `sslkey`: a client certificate (PEM) and its key, for `cert` authentication.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Every host is a Unix socket, where TLS is never used (as in libpq).
    pub unix_only: bool,
}

/// A parsed connection string: tokio-postgres' config (with its own `sslmode` set to match)
/// and the TLS settings it cannot hold.
#[derive(Debug, Clone)]
pub struct ConnString {
    pub config: tokio_postgres::Config,
    pub tls: TlsSettings,
}

/// What is wrong with a connection string. Messages name the key, never echo the string, so a
/// password in it cannot leak into logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("sslmode {} is not one of disable, allow, prefer, require, verify-ca, verify-full", shown(.0))]
    BadSslMode(String),
    #[error("`{0}` is given twice")]
    Repeated(&'static str),
    #[error("`{0}` has an empty value")]
    Empty(&'static str),
    #[error("`sslcert` and `sslkey` go together: `{0}` is missing")]
    HalfClientCert(&'static str),
    #[error(
        "sslrootcert=system needs sslmode=verify-full (libpq's rule: trusting every public CA \
         is only safe when the name is checked too)"
    )]
    SystemRootsNeedVerifyFull,
    #[error("`{0}` is not supported by pgsched (keys must not be encrypted; use an unencrypted PEM key file readable only by pgsched)")]
    Unsupported(&'static str),
    #[error("a quoted value is not closed")]
    UnclosedQuote,
    #[error(
        "{} has no `=`: write `key=value` pairs (`host=db dbname=app`) or a URL starting with postgres://",
        shown(.0)
    )]
    MissingEquals(String),
    #[error("{0}")]
    Other(String),
}

/// A word from a connection string, quoted in a message only when it is plainly a keyword, so a
/// password (a mistyped scheme sends a whole URL here) never reaches a log or a status file.
fn shown(word: &str) -> String {
    let plain = !word.is_empty()
        && word.len() <= 24
        && word
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-' || b == b'_');
    if plain {
        format!("`{word}`")
    } else {
        "(a value not shown)".into()
    }
}

/// Keys this module consumes; everything else is left for tokio-postgres.
const SSLMODE: &str = "sslmode";
const SSLROOTCERT: &str = "sslrootcert";
const SSLCERT: &str = "sslcert";
const SSLKEY: &str = "sslkey";
const SSLPASSWORD: &str = "sslpassword";

impl FromStr for ConnString {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<ConnString, UrlError> {
        parse(s)
    }
}

/// Parses a connection string (URL or key/value form).
pub fn parse(s: &str) -> Result<ConnString, UrlError> {
    let (rest, pairs) = if is_url(s) {
        split_url(s)?
    } else {
        split_key_values(s)?
    };
    let mut found = Found::default();
    for (key, value) in pairs {
        found.take(&key, value)?;
    }
    let mut config = tokio_postgres::Config::from_str(&rest).map_err(|e| {
        // tokio-postgres says only "invalid connection string"; the reason (which option, which
        // value) is its source. Neither echoes the whole string.
        UrlError::Other(
            std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string()),
        )
    })?;
    // With only `hostaddr`, TLS would have no name to check the certificate against (and
    // tokio-postgres refuses the handshake): the address is the name, as in libpq.
    if config.get_hosts().is_empty() {
        for addr in config.get_hostaddrs().to_vec() {
            config.host(addr.to_string());
        }
    }
    let tls = found.settings(&config)?;
    config.ssl_mode(match tls.mode {
        _ if tls.unix_only => tokio_postgres::config::SslMode::Disable,
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    Ok(ConnString { config, tls })
}

/// What a password file is searched with, as libpq does: (host, port, database, user) of the
/// first host; a Unix socket counts as `localhost`; the database defaults to the user. None
/// without a user (nothing could match).
pub fn pgpass_key(config: &tokio_postgres::Config) -> Option<(String, u16, String, String)> {
    let user = config.get_user()?.to_string();
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config.get_dbname().unwrap_or(&user).to_string();
    Some((host, port, database, user))
}

/// The password a `.pgpass` file gives: libpq's format, `hostname:port:database:username:password`
/// per line, `*` matching anything in the first four fields, `\` escaping `:` and `\`, `#`
/// starting a comment line, the first matching line winning.
pub fn pgpass_lookup(
    text: &str,
    host: &str,
    port: u16,
    database: &str,
    user: &str,
) -> Option<String> {
    let port = port.to_string();
    let wanted = [host, port.as_str(), database, user];
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .find_map(|line| {
            let fields = split_pgpass_line(line);
            if fields.len() < 5 {
                return None;
            }
            let matches = fields[..4]
                .iter()
                .zip(wanted)
                .all(|((field, escaped), want)| (field == "*" && !escaped) || field == want);
            // A password may itself hold `:`; everything after the fourth separator is it.
            matches.then(|| {
                fields[4..]
                    .iter()
                    .map(|(f, _)| f.as_str())
                    .collect::<Vec<_>>()
                    .join(":")
            })
        })
}

/// A `.pgpass` line split at unescaped `:`, each field with whether it had an escape (so `\*`
/// is a literal star, not the wildcard).
fn split_pgpass_line(line: &str) -> Vec<(String, bool)> {
    let mut fields = vec![(String::new(), false)];
    let mut chars = line.trim_end_matches('\r').chars();
    while let Some(c) = chars.next() {
        let field = fields.last_mut().expect("never empty");
        match c {
            '\\' => {
                field.1 = true;
                field.0.extend(chars.next());
            }
            ':' => fields.push((String::new(), false)),
            c => field.0.push(c),
        }
    }
    fields
}

fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

#[derive(Default)]
struct Found {
    mode: Option<SslMode>,
    root: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

impl Found {
    fn take(&mut self, key: &str, value: String) -> Result<(), UrlError> {
        let (slot, name) = match key {
            SSLMODE => {
                if self.mode.is_some() {
                    return Err(UrlError::Repeated(SSLMODE));
                }
                self.mode = Some(
                    SslMode::parse(&value).ok_or_else(|| UrlError::BadSslMode(value.clone()))?,
                );
                return Ok(());
            }
            SSLPASSWORD => return Err(UrlError::Unsupported(SSLPASSWORD)),
            SSLROOTCERT => (&mut self.root, SSLROOTCERT),
            SSLCERT => (&mut self.cert, SSLCERT),
            SSLKEY => (&mut self.key, SSLKEY),
            _ => unreachable!("only the keys of is_tls_key are taken"),
        };
        if slot.is_some() {
            return Err(UrlError::Repeated(name));
        }
        if value.is_empty() {
            return Err(UrlError::Empty(name));
        }
        *slot = Some(value);
        Ok(())
    }

    fn settings(self, config: &tokio_postgres::Config) -> Result<TlsSettings, UrlError> {
        let root_cert = self.root.map(|r| match r.as_str() {
            "system" => RootCert::System,
            _ => RootCert::File(PathBuf::from(r)),
        });
        // libpq: sslrootcert=system makes verify-full the default and refuses weaker modes.
        let mode = match (self.mode, &root_cert) {
            (None, Some(RootCert::System)) => SslMode::VerifyFull,
            (Some(m), Some(RootCert::System)) if m != SslMode::VerifyFull => {
                return Err(UrlError::SystemRootsNeedVerifyFull)
            }
            (m, _) => m.unwrap_or(SslMode::Prefer),
        };
        let client_cert = match (self.cert, self.key) {
            (None, None) => None,
            (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
            (Some(_), None) => return Err(UrlError::HalfClientCert(SSLKEY)),
            (None, Some(_)) => return Err(UrlError::HalfClientCert(SSLCERT)),
        };
        // A socket path with a `hostaddr` still connects over TCP, so it is not Unix-only.
        let hosts = config.get_hosts();
        let unix_only = !hosts.is_empty()
            && config.get_hostaddrs().is_empty()
            && hosts
                .iter()
                .all(|h| matches!(h, tokio_postgres::config::Host::Unix(_)));
        Ok(TlsSettings {
            mode,
            root_cert,
            client_cert,
            unix_only,
        })
    }
}

fn is_tls_key(key: &str) -> bool {
    matches!(key, SSLMODE | SSLROOTCERT | SSLCERT | SSLKEY | SSLPASSWORD)
}

type Split = (String, Vec<(String, String)>);

/// `postgres://…?a=1&sslmode=x&b=2` → (`postgres://…?a=1&b=2`, [(sslmode, x)]).
fn split_url(s: &str) -> Result<Split, UrlError> {
    let Some((base, query)) = s.split_once('?') else {
        return Ok((s.to_string(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for part in query.split('&') {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        let key = decode(key);
        if is_tls_key(&key) {
            taken.push((key, decode(value)));
        } else {
            kept.push(part);
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, taken))
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// `host=x sslmode = 'require' dbname=y` → (`host='x' dbname='y'`, [(sslmode, require)]).
/// libpq's grammar: `key = value` pairs split by whitespace; a value is single-quoted or bare,
/// with `\` escaping the next character in both.
fn split_key_values(s: &str) -> Result<Split, UrlError> {
    let mut kept = String::new();
    let mut taken = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(UrlError::MissingEquals(key));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(UrlError::UnclosedQuote),
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        if is_tls_key(&key) {
            taken.push((key, value));
        } else {
            if !kept.is_empty() {
                kept.push(' ');
            }
            kept.push_str(&format!(
                "{key}='{}'",
                value.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        }
    }
    Ok((kept, taken))
}

#[cfg(test)]
mod tests {
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
        let text = "# comment\n\
                    db.example.com:5432:app:alice:first\n\
                    *:*:*:alice:fallback\n\
                    localhost:6432:*:bob:with\\:colon\\\\\n\
                    \\*:*:*:carol:literal-star\n\
                    other:*:*:dave:a:b:c\n";
        let find = |h, p, d, u| pgpass_lookup(text, h, p, d, u);
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
            Some("with:colon\\")
        );
        assert_eq!(find("localhost", 5432, "x", "bob"), None);
        assert_eq!(find("anything", 1, "x", "carol"), None);
        assert_eq!(find("*", 1, "x", "carol").as_deref(), Some("literal-star"));
        // Unescaped colons after the fourth field belong to the password.
        assert_eq!(find("other", 1, "x", "dave").as_deref(), Some("a:b:c"));
        assert_eq!(find("h", 1, "d", "nobody"), None);
    }

    #[test]
    fn the_pgpass_key_defaults_as_libpq_does() {
        let key = |s: &str| pgpass_key(&ok(s).config);
        assert_eq!(
            key("postgres://alice@db.example.com/app"),
            Some(("db.example.com".into(), 5432, "app".into(), "alice".into()))
        );
        assert_eq!(
            key("host=/run/postgresql port=6432 user=bob"),
            Some(("localhost".into(), 6432, "bob".into(), "bob".into()))
        );
        assert_eq!(key("host=db dbname=app"), None);
    }

    #[test]
    fn hostaddr_alone_is_the_name_and_a_socket_with_hostaddr_is_tcp() {
        let c = ok("hostaddr=10.1.2.3 port=6432 sslmode=verify-full");
        assert_eq!(c.config.get_hosts(), &[Host::Tcp("10.1.2.3".into())]);
        let c = ok("host=/tmp hostaddr=127.0.0.1 sslmode=verify-full");
        assert!(!c.tls.unix_only);
        assert_eq!(c.config.get_ssl_mode(), PgMode::Require);
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
        // A mistyped scheme is read as key/value text; the message must not quote it.
        for url in [
            "postgress://app:hunter2@db/app",
            "host=db sslmode=hunter2",
            "host=db password=hun ter2",
        ] {
            let e = parse(url).unwrap_err().to_string();
            assert!(!e.contains("hunter2") && !e.contains("ter2"), "{e}");
        }
        let e = parse("postgres://u@h/d?nonsense=1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nonsense"), "{e}");
        let e = parse("host=h password=hunter2 bogus=1")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
