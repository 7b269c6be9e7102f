//! `kind: Connection`: another database SQL tasks may run on.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Another database that SQL tasks may run on. Secrets are only ever referenced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectionSpec {
    /// `postgres://user@host:5432/db?sslmode=require`, without a password.
    pub url: String,
    /// Name of an environment variable of the pgsched process that holds the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_from_env: Option<String>,
    /// Path of a file (e.g. a mounted secret) that holds the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_from_file: Option<String>,
}
