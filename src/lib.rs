//! pgsched: a declarative, file-driven job scheduler for PostgreSQL.
//!
//! Data flows one way: YAML files → [`spec`] (parse, validate) → plan → store (tables) →
//! executor (runs) → status files. The pure core ([`spec`], [`schedule`], [`duration`]) has no
//! I/O besides reading spec files; [`embedded`] owns the private PostgreSQL cluster.

pub mod backoff;
pub mod controller;
pub mod duration;
pub mod embedded;
pub mod executor;
pub mod http;
pub mod metrics;
pub mod pgurl;
pub mod plan;
pub mod reconcile;
pub mod schedule;
pub mod spec;
pub mod status;
pub mod store;
pub mod timeout;
