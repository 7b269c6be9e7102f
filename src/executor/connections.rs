//! Connection pools for the databases tasks run on: the scheduler's own database, and the
//! named `Connection` objects that a task's `database` field refers to.
//!
//! Pools for `Connection` objects are created lazily, on the first task that needs them, so a
//! connection nobody uses never opens a socket and never needs its secret. The password is
//! read (from an environment variable of this process or a file) when the pool is created and
//! handed straight to tokio-postgres: it is never logged, stored, or put in an error message.
//! A pool is thrown away when its spec changes, and also when the server rejects the
//! password, so a rotated secret is picked up by the next task without a restart.
//!
//! Connections are recycled with deadpool's `Clean` method (`RESET ALL`, `UNLISTEN *`, advisory
//! locks released, temporary tables dropped): one job's session settings must never leak into
//! the next job that happens to get the same connection.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, Timeouts,
};
use tokio_postgres::error::SqlState;

use crate::spec::ConnectionSpec;
use crate::store::describe_pg_error;
use crate::store::tls::{TargetError, Tls};

/// How long opening one connection may take when the URL does not say (`connect_timeout`).
/// Without it an unreachable host would hold a task until the kernel gives up on TCP.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Recycling runs a few statements on an idle connection; a dead peer must not hang a task.
const RECYCLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Shown in `pg_stat_activity` unless the URL names another application.
const APPLICATION_NAME: &str = "pgsched";

/// A task that could not start because its database is not available.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The task names a Connection that is not applied.
    #[error("no Connection named `{name}`; add a Connection object with that name or fix the task's `database`")]
    UnknownConnection {
        /// The name the task gave.
        name: String,
    },
    /// The Connection's URL cannot be read.
    #[error("{database}: invalid connection URL: {source}")]
    InvalidUrl {
        /// The Connection (or the scheduler's own database).
        database: String,
        /// What is wrong with the URL.
        source: TargetError,
    },
    /// The Connection's password could not be read from its environment variable or file.
    #[error("{database}: {reason}")]
    Password {
        /// The Connection.
        database: String,
        /// Why the password is missing.
        reason: String,
    },
    /// The database did not accept a connection.
    #[error("cannot connect to {database}: {reason}")]
    Connect {
        /// The Connection (or the scheduler's own database).
        database: String,
        /// The server's or the network's answer.
        reason: String,
    },
}

/// The pools of every database a task may run on.
pub struct Databases {
    default: Pool,
    default_tls: Tls,
    max_size: usize,
    named: Mutex<HashMap<String, NamedPool>>,
}

/// A `Connection` object and, once a task has needed it, its pool.
struct NamedPool {
    spec: ConnectionSpec,
    pool: Option<Pool>,
    /// The TLS connector of the pool, set with it.
    tls: Option<Tls>,
}

impl std::fmt::Debug for Databases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only names: a URL may carry a password for the scheduler's own database.
        let named: Vec<String> = self.named.lock().unwrap().keys().cloned().collect();
        f.debug_struct("Databases")
            .field("max_size", &self.max_size)
            .field("connections", &named)
            .finish()
    }
}

impl Databases {
    /// Pools for the scheduler's own database at `default_url` (a tokio-postgres connection
    /// string or URL), each pool holding at most `max_size` connections. Connects lazily.
    pub fn new(default_url: &str, max_size: usize) -> Result<Databases, ConnectionError> {
        let target = crate::store::scheduler_target(default_url);
        let (config, tls) =
            with_defaults(target).map_err(|source| ConnectionError::InvalidUrl {
                database: DEFAULT_LABEL.to_string(),
                source,
            })?;
        Ok(Databases {
            default: build_pool(config, tls.clone(), max_size),
            default_tls: tls,
            max_size,
            named: Mutex::new(HashMap::new()),
        })
    }

    /// Replaces the set of `Connection` objects. A pool whose spec is unchanged is kept (with
    /// its open connections); one whose spec changed or that is gone is closed: connections in
    /// use finish their task and are then dropped instead of returning to the pool.
    pub fn set_connections(&self, specs: Vec<(String, ConnectionSpec)>) {
        let mut named = self.named.lock().unwrap();
        let mut next = HashMap::with_capacity(specs.len());
        for (name, spec) in specs {
            let entry = match named.remove(&name) {
                Some(old) if old.spec == spec => old,
                Some(old) => {
                    close(old.pool);
                    NamedPool::new(spec)
                }
                None => NamedPool::new(spec),
            };
            next.insert(name, entry);
        }
        for (_, gone) in named.drain() {
            close(gone.pool);
        }
        *named = next;
    }

    /// A connection to the task's database (the scheduler's own when `database` is `None`,
    /// else the `Connection` object of that name), with the TLS connector it was made with:
    /// a cancel request for it must go out the same way, whatever the specs say by then.
    pub async fn get(&self, database: Option<&str>) -> Result<(Object, Tls), ConnectionError> {
        let Some(name) = database else {
            return self
                .default
                .get()
                .await
                .map(|object| (object, self.default_tls.clone()))
                .map_err(|e| pool_error(DEFAULT_LABEL.to_string(), e));
        };
        let (pool, tls) = match self.named_pool(name) {
            // Connections are re-read once per poll interval; one applied together with the job
            // and triggered at once may be newer than that. Look before failing the run.
            Err(ConnectionError::UnknownConnection { .. }) if self.learn_connection(name).await => {
                self.named_pool(name)?
            }
            other => other?,
        };
        match pool.get().await {
            Ok(object) => Ok((object, tls)),
            Err(e) => {
                if is_auth_failure(&e) {
                    // The secret may have been rotated since the pool read it: read it again
                    // next time rather than failing every run until a restart.
                    self.forget_pool(name, &pool);
                }
                Err(pool_error(format!("connection `{name}`"), e))
            }
        }
    }

    /// Reads the `Connection` `name` from `pgsched.connections` (in the scheduler's database);
    /// true when it exists and is now known.
    async fn learn_connection(&self, name: &str) -> bool {
        let Ok(client) = self.default.get().await else {
            return false;
        };
        let found = crate::store::objects::connection_specs(&**client, Some(name)).await;
        let Some((_, spec)) = found.ok().and_then(|mut specs| specs.pop()) else {
            return false;
        };
        let mut named = self.named.lock().unwrap();
        named
            .entry(name.to_string())
            .or_insert_with(|| NamedPool::new(spec));
        true
    }

    /// The pool of `Connection` `name` and its TLS connector, created (and its password read)
    /// on first use.
    fn named_pool(&self, name: &str) -> Result<(Pool, Tls), ConnectionError> {
        let mut named = self.named.lock().unwrap();
        let entry = named
            .get_mut(name)
            .ok_or_else(|| ConnectionError::UnknownConnection {
                name: name.to_string(),
            })?;
        if let (Some(pool), Some(tls)) = (&entry.pool, &entry.tls) {
            return Ok((pool.clone(), tls.clone()));
        }
        let label = format!("connection `{name}`");
        let (mut config, tls) =
            with_defaults(crate::store::tls::target(&entry.spec.url)).map_err(|source| {
                ConnectionError::InvalidUrl {
                    database: label.clone(),
                    source,
                }
            })?;
        if let Some(password) =
            read_password(&entry.spec).map_err(|reason| ConnectionError::Password {
                database: label.clone(),
                reason,
            })?
        {
            config.password(password);
        }
        let pool = build_pool(config, tls.clone(), self.max_size);
        entry.pool = Some(pool.clone());
        entry.tls = Some(tls.clone());
        Ok((pool, tls))
    }

    /// The TLS connector of the scheduler's own database, for SQL run on a connection the
    /// caller holds ([`super::tasks::run_sql_on`]).
    pub fn default_tls(&self) -> Tls {
        self.default_tls.clone()
    }

    /// Drops the pool of `name` if it is still `pool` (a concurrent `set_connections` may
    /// already have replaced it).
    fn forget_pool(&self, name: &str, pool: &Pool) {
        let mut named = self.named.lock().unwrap();
        if let Some(entry) = named.get_mut(name) {
            if entry
                .pool
                .as_ref()
                .is_some_and(|p| std::ptr::eq(p.manager(), pool.manager()))
            {
                close(entry.pool.take());
            }
        }
    }
}

const DEFAULT_LABEL: &str = "the scheduler's database";

impl NamedPool {
    fn new(spec: ConnectionSpec) -> NamedPool {
        NamedPool {
            spec,
            pool: None,
            tls: None,
        }
    }
}

/// A parsed URL with pgsched's defaults for task connections. The parser's messages name the
/// offending part, never echo the whole string, so a password inside the URL cannot leak
/// through them.
fn with_defaults(
    target: Result<(tokio_postgres::Config, Tls), TargetError>,
) -> Result<(tokio_postgres::Config, Tls), TargetError> {
    let (mut config, tls) = target?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name(APPLICATION_NAME);
    }
    Ok((config, tls))
}

fn build_pool(config: tokio_postgres::Config, tls: Tls, max_size: usize) -> Pool {
    let manager = Manager::from_config(
        config,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Clean,
        },
    );
    Pool::builder(manager)
        .max_size(max_size.max(1))
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            // Waiting for a free connection is bounded by the task's own timeout instead.
            wait: None,
            create: None,
            recycle: Some(RECYCLE_TIMEOUT),
        })
        .build()
        // Only fails for timeouts without a runtime, and the runtime is set above.
        .expect("a pool with a runtime always builds")
}

fn close(pool: Option<Pool>) {
    if let Some(pool) = pool {
        pool.close();
    }
}

/// The password of a `Connection`, from `passwordFromEnv` or `passwordFromFile`. The error
/// names where the password should have come from, never what it is.
fn read_password(spec: &ConnectionSpec) -> Result<Option<String>, String> {
    if let Some(var) = &spec.password_from_env {
        return match std::env::var(var) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Err(format!(
                "environment variable {var} (passwordFromEnv) is not set in the pgsched process"
            )),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!(
                "environment variable {var} (passwordFromEnv) is not valid UTF-8"
            )),
        };
    }
    if let Some(path) = &spec.password_from_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read passwordFromFile {path}: {e}"))?;
        // Secret files are usually written with `echo`, so the line ending is not part of
        // the password; other whitespace may be.
        let password = text
            .strip_suffix('\n')
            .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
        return Ok(Some(password.to_string()));
    }
    Ok(None)
}

fn is_auth_failure(e: &PoolError) -> bool {
    match e {
        PoolError::Backend(e) => matches!(
            e.code(),
            Some(c) if *c == SqlState::INVALID_PASSWORD
                || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        ),
        _ => false,
    }
}

fn pool_error(database: String, e: PoolError) -> ConnectionError {
    let reason = match &e {
        PoolError::Backend(pg) => describe_pg_error(pg),
        other => other.to_string(),
    };
    ConnectionError::Connect { database, reason }
}
