//! A Timeout's checks: the table and column, the `where` condition, and exactly one of
//! `set` and `delete` on expiry.

use super::Checker;
use crate::spec::model::TimeoutSpec;
use crate::spec::sql::scan_sql;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// Largest `batchSize` a Timeout may ask for: one statement should not hold locks for long.
pub const MAX_BATCH_SIZE: u32 = 100_000;

impl Checker<'_, '_> {
    pub(super) fn timeout(&mut self, t: &TimeoutSpec) {
        self.timeout_target(t);
        if let Some(condition) = &t.where_ {
            self.timeout_where(condition);
        }
        self.timeout_change(t.set.as_ref(), t.delete == Some(true));
        if let Some(batch) = t.batch_size {
            if batch == 0 || batch > MAX_BATCH_SIZE {
                self.error(
                    "spec.batchSize",
                    format!("batchSize must be between 1 and {MAX_BATCH_SIZE}"),
                );
            }
        }
    }

    /// Which rows expire when: the table, the column, the time limit, and the run history.
    fn timeout_target(&mut self, t: &TimeoutSpec) {
        let parts: Vec<&str> = t.table.split('.').collect();
        if parts.len() > 2
            || parts
                .iter()
                .any(|p| p.trim().is_empty() || p.contains('\0'))
        {
            self.error_hint(
                "spec.table",
                format!("`{}` is not a table name", t.table),
                Some("write `table` or `schema.table`".into()),
            );
        }
        if t.column.trim().is_empty() {
            self.error("spec.column", "the column is empty");
        }
        if t.after.0 == Duration::ZERO {
            self.error("spec.after", "must be longer than 0s");
        }
        if let Some(history) = &t.history {
            self.positive("spec.history.keepFor", history.keep_for);
        }
    }

    fn timeout_where(&mut self, condition: &str) {
        let shape = scan_sql(condition);
        if shape.statements == 0 {
            self.error(
                "spec.where",
                "the condition is empty; remove `where` to expire every row",
            );
        } else if shape.statements > 1 {
            self.error(
                "spec.where",
                "`where` is one SQL condition; it must not contain `;`",
            );
        } else if shape.max_param > 0 {
            self.error("spec.where", "`where` cannot use $n parameters");
        }
    }

    /// What expiry does to a row: `set` columns, or `delete: true`, not both.
    fn timeout_change(&mut self, set: Option<&BTreeMap<String, Value>>, deletes: bool) {
        match (set, deletes) {
            (Some(_), true) => {
                self.error_hint(
                    "spec.delete",
                    "`set` and `delete: true` are exclusive",
                    Some("a row is either updated or deleted when it expires".into()),
                );
            }
            (None, false) => {
                self.error_hint(
                    "spec",
                    "a Timeout needs `set` or `delete: true`",
                    Some("e.g. `set: {status: expired}`".into()),
                );
            }
            (Some(set), false) => {
                if set.is_empty() {
                    self.error("spec.set", "`set` names no column");
                }
                for (column, value) in set {
                    if column.trim().is_empty() {
                        self.error("spec.set", "a column name in `set` is empty");
                    }
                    if value.is_object() || value.is_array() {
                        self.error(
                            &format!("spec.set.{column}"),
                            "values in `set` must be a string, a number, true, false or null",
                        );
                    }
                }
            }
            (None, true) => {}
        }
    }
}
