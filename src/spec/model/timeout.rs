//! `kind: Timeout`: rows of an application table that expire after a time limit.

use super::History;
use crate::duration::SpecDuration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Rows of an application table that change state when a time limit passes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TimeoutSpec {
    /// The table, as `schema.table` or `table` (schema `public`).
    pub table: String,
    /// A `timestamptz` or `timestamp` column the limit counts from.
    pub column: String,
    /// The time limit: a row expires when `column + after <= now()`.
    pub after: SpecDuration,
    /// A condition that must still hold when the row expires (re-checked atomically).
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_: Option<String>,
    /// Columns to set on expiry, e.g. `{status: expired}`; values are bound as parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<BTreeMap<String, Value>>,
    /// Delete expired rows instead of updating them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<bool>,
    /// Rows changed per statement. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// No expiry while true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// How many of the loop's run records (one per batch that expired rows) are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<History>,
}
