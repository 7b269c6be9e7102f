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
    /// Never TLS.
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
    /// The spelling in connection strings: `disable`, ..., `verify-full`.
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
    /// `sslmode`; `prefer` when absent (`verify-full` with `sslrootcert=system`), as in libpq.
    pub mode: SslMode,
    /// `sslrootcert`; `None` falls back to `~/.postgresql/root.crt` if it exists.
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
    /// Everything but the TLS keys, parsed by tokio-postgres.
    pub config: tokio_postgres::Config,
    /// The TLS keys, with libpq's meanings.
    pub tls: TlsSettings,
}

/// What is wrong with a connection string. Messages name the key, never echo the string, so a
/// password in it cannot leak into logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error(
        "sslmode {} is not one of disable, allow, prefer, require, verify-ca, verify-full{}",
        shown_mode(.0),
        mode_hint(.0)
    )]
    /// An `sslmode` value that is no mode; shown only when it is close to one.
    BadSslMode(String),
    #[error("an option pgsched does not know{} (the option is not quoted: it may be part of a password)", did_you_mean(.0))]
    /// A key that is no libpq keyword; never shown, as it may be a piece of a password.
    UnknownKey(String),
    #[error(
        "a Unix socket `host` with `hostaddr` leaves TLS no name to check: give `host` the \
         server's name (hostaddr still says where to connect), or drop `hostaddr`"
    )]
    /// A Unix-socket `host` together with `hostaddr`.
    SocketWithHostaddr,
    #[error(
        "sslmode=verify-full needs a host name to check the certificate against: give `host` \
         (hostaddr still says where to connect)"
    )]
    /// `sslmode=verify-full` with no host name to check.
    VerifyFullWithoutHost,
    #[error("`{0}` is given twice")]
    /// A TLS key given twice.
    Repeated(&'static str),
    #[error("`{0}` has an empty value")]
    /// A TLS key with an empty value.
    Empty(&'static str),
    #[error("`sslcert` and `sslkey` go together: `{0}` is missing")]
    /// Only one of `sslcert` and `sslkey`; holds the missing one.
    HalfClientCert(&'static str),
    #[error(
        "sslrootcert=system needs sslmode=verify-full (libpq's rule: trusting every public CA \
         is only safe when the name is checked too)"
    )]
    /// `sslrootcert=system` with an `sslmode` weaker than `verify-full`.
    SystemRootsNeedVerifyFull,
    #[error("`{0}` is not supported by pgsched (keys must not be encrypted; use an unencrypted PEM key file readable only by pgsched)")]
    /// A libpq key pgsched does not implement (`sslpassword`).
    Unsupported(&'static str),
    #[error("a quoted value is not closed")]
    /// A single-quoted key/value value with no closing quote.
    UnclosedQuote,
    #[error(
        "{} has no `=`: write `key=value` pairs (`host=db dbname=app`) or a URL starting with postgres://",
        shown(.0)
    )]
    /// A key/value word without `=`; shown only when it is a keyword.
    MissingEquals(String),
    #[error("{0}")]
    /// tokio-postgres rejected the rest of the string; its reason, which never echoes it.
    Other(String),
}

/// The keywords a connection string may hold: libpq's, and tokio-postgres' own spelling
/// `keepalives_retries`. Only these are ever quoted in a message: any other word may be a piece
/// of a password (`password=correct horse` splits into `horse`, a mistyped scheme sends a whole
/// URL here), and must not reach a log or a status file.
const KEYWORDS: [&str; 42] = [
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "require_auth",
    "channel_binding",
    "connect_timeout",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "keepalives_retries",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "sslmode",
    "sslnegotiation",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcertmode",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
];

fn is_keyword(word: &str) -> bool {
    KEYWORDS.contains(&word)
}

/// `word` quoted when it is a keyword, else a placeholder.
fn shown(word: &str) -> String {
    if is_keyword(word) {
        format!("`{word}`")
    } else {
        "(a part not shown)".into()
    }
}

const MODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// The real mode a wrong sslmode is a near miss of: a typo, not a secret.
fn near_mode(value: &str) -> Option<&'static str> {
    MODES
        .iter()
        .copied()
        .find(|m| strsim::damerau_levenshtein(m, value) <= 2 && value.len() <= 12)
}

/// A wrong sslmode is quoted only when it is a near miss of a real one.
fn shown_mode(value: &str) -> String {
    match near_mode(value) {
        Some(_) => format!("`{value}`"),
        None => "(value not shown)".into(),
    }
}

fn mode_hint(value: &str) -> String {
    near_mode(value)
        .map(|mode| format!(" (did you mean `{mode}`?)"))
        .unwrap_or_default()
}

fn did_you_mean(key: &str) -> String {
    KEYWORDS
        .iter()
        .map(|k| (strsim::damerau_levenshtein(k, key), k))
        .filter(|(d, k)| *d <= 2 && *d < k.len() / 2)
        .min()
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

/// Keys this module consumes; everything else is left for tokio-postgres.
const SSLMODE: &str = "sslmode";
const SSLROOTCERT: &str = "sslrootcert";
const SSLCERT: &str = "sslcert";
const SSLKEY: &str = "sslkey";
const SSLPASSWORD: &str = "sslpassword";

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
            std::error::Error::source(&e)
                .map_or_else(|| e.to_string(), std::string::ToString::to_string),
        )
    })?;
    let tls = found.settings(&config)?;
    if !config.get_hostaddrs().is_empty() {
        let hosts = config.get_hosts();
        if hosts
            .iter()
            .any(|h| matches!(h, tokio_postgres::config::Host::Unix(_)))
        {
            // tokio-postgres would connect over TCP with no name for TLS, and refuse the
            // handshake (or, before pgsched read this case, go without TLS).
            return Err(UrlError::SocketWithHostaddr);
        }
        if hosts.is_empty() {
            // libpq refuses verify-full without a host name; the weaker modes do not look at
            // the name, so the address stands in for it (tokio-postgres needs one for TLS).
            if tls.mode == SslMode::VerifyFull {
                return Err(UrlError::VerifyFullWithoutHost);
            }
            for addr in config.get_hostaddrs().to_vec() {
                config.host(addr.to_string());
            }
        }
    }
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
/// first host. A Unix socket is matched by its directory, except the usual default
/// directories, which count as `localhost`; the user defaults to `os_user` (as tokio-postgres
/// does when connecting) and the database to the user.
pub fn pgpass_key(
    config: &tokio_postgres::Config,
    os_user: impl FnOnce() -> Option<String>,
) -> Option<(String, u16, String, String)> {
    let user = match config.get_user() {
        Some(user) => user.to_string(),
        None => os_user()?,
    };
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(dir)) => {
            let dir = dir.to_string_lossy();
            match dir.trim_end_matches('/') {
                "/tmp" | "/var/run/postgresql" | "/run/postgresql" => "localhost".to_string(),
                _ => dir.into_owned(),
            }
        }
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config.get_dbname().unwrap_or(&user).to_string();
    Some((host, port, database, user))
}

/// The password a `.pgpass` file gives, read as libpq reads it:
/// `hostname:port:database:username:password` per line, `*` matching anything in the first four
/// fields, `\` escaping `:` and `\`, `#` in the first column starting a comment, the first
/// matching line winning, and the password ending at the next unescaped `:`.
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
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let fields = split_pgpass_line(line);
            if fields.len() < 5 {
                return None;
            }
            let matches = fields[..4]
                .iter()
                .zip(wanted)
                .all(|((field, escaped), want)| (field == "*" && !escaped) || field == want);
            matches.then(|| fields[4].0.clone())
        })
}

/// A `.pgpass` line split at unescaped `:`, each field with whether it had an escape (so `\*`
/// is a literal star, not the wildcard). A `\` at the very end stays, as in libpq.
fn split_pgpass_line(line: &str) -> Vec<(String, bool)> {
    let mut fields = vec![(String::new(), false)];
    let mut chars = line.trim_end_matches('\r').chars();
    while let Some(c) = chars.next() {
        let field = fields.last_mut().expect("never empty");
        match c {
            '\\' => {
                field.1 = true;
                field.0.push(chars.next().unwrap_or('\\'));
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
        let hosts = config.get_hosts();
        let unix_only = !hosts.is_empty()
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
        } else if !is_keyword(&key) {
            return Err(UrlError::UnknownKey(key));
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
        // A value after a space (`sslrootcert= /ca.pem`) is libpq's grammar too.
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
        } else if !is_keyword(&key) {
            return Err(UrlError::UnknownKey(key));
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
mod tests;
