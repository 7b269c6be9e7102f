//! Every query of the Timeout kind: loading the Timeouts with their tables' column types,
//! the next-deadline query, the one-statement expiry batch, recording errors, and the
//! wake-up triggers `apply` installs on the target tables.
//!
//! Identifiers from specs are quoted with [`quote_ident`]; `set` values are bound as text
//! parameters and cast to the column's type (read from the catalog), never spliced. The
//! `where` condition is SQL by design: it is spliced, in parentheses, as the spec author wrote
//! it (the loader rejects a second statement, and plan compiles it against the table).
//!
//! Times cross the wire as `float8` seconds since the epoch: they carry microseconds exactly,
//! and `±infinity` in an application's column cannot break decoding.

use super::{quote_ident, split_table, Context, StoreError};
use crate::plan::Plan;
use crate::spec::Kind;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tokio_postgres::{GenericClient, Row};

/// The NOTIFY channel of the deadline loop. The payload is a Timeout's name (rows changed in
/// its table) or [`RELOAD`] (the Timeouts themselves changed).
pub const CHANNEL: &str = "pgsched_timeouts";
/// The payload `apply` sends when Timeouts were created, changed or deleted.
pub const RELOAD: &str = "*";
/// The trigger function the migration creates.
pub const TRIGGER_FUNCTION: &str = "pgsched.timeout_notify";

/// The trigger `apply` installs for a Timeout: `pgsched_timeout_<name>`, shortened with a
/// hash when that exceeds PostgreSQL's 63-byte identifiers (Timeout names may be 63 long).
pub fn trigger_name(timeout: &str) -> String {
    let full = format!("pgsched_timeout_{timeout}");
    if full.len() <= 63 {
        return full;
    }
    let digest = Sha256::digest(timeout.as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let mut head = String::new();
    for c in full.chars() {
        if head.len() + c.len_utf8() > 63 - 9 {
            break;
        }
        head.push(c);
    }
    format!("{head}_{hash}")
}

/// What an expiry does to a due row.
#[derive(Debug, Clone, PartialEq)]
pub enum Expiry {
    /// `delete: true`: the row is deleted.
    Delete,
    /// Columns to set, each with its type (as `format_type` spells it) and its value as text
    /// (`None` for SQL NULL).
    Set(Vec<SetColumn>),
}

/// One column of a Timeout's `set`, with what it takes to bind its value.
#[derive(Debug, Clone, PartialEq)]
pub struct SetColumn {
    /// The column's name, unquoted.
    pub column: String,
    /// Its type as `format_type` spells it; the value is cast to it.
    pub sql_type: String,
    /// The value as text; `None` for SQL NULL.
    pub value: Option<String>,
}

/// A Timeout, resolved against the live catalog, ready to build its statements.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeoutDef {
    /// The Timeout's `metadata.name`.
    pub name: String,
    /// The table's schema, unquoted (`public` when the spec names none).
    pub schema: String,
    /// The table's name, unquoted.
    pub table: String,
    /// The table's oid: a table dropped and created again gets new statements.
    pub table_oid: u32,
    /// The `timestamptz` or `timestamp` column the limit counts from, unquoted.
    pub column: String,
    /// `after` in microseconds: an exact duration, so `column + after <= now()` and
    /// `column <= now() - after` agree even across daylight-saving changes.
    pub after_us: i64,
    /// The spec's `where`, as SQL; `None` when every due row expires.
    pub condition: Option<String>,
    /// What happens to an expired row.
    pub expiry: Expiry,
    /// Rows changed per statement: `batchSize`, 1000 by default, at least 1.
    pub batch_size: i64,
}

impl TimeoutDef {
    /// `"schema"."table"`.
    pub fn qualified_table(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }

    /// The `set` values, in the order of the expiry statement's parameters `$5...`.
    pub fn set_values(&self) -> Vec<Option<String>> {
        match &self.expiry {
            Expiry::Delete => Vec::new(),
            Expiry::Set(columns) => columns.iter().map(|c| c.value.clone()).collect(),
        }
    }
}

/// One row of `pgsched.timeouts` that is not suspended: resolved, or why it cannot run.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedTimeout {
    /// The Timeout's name.
    pub name: String,
    /// The definition, or why it cannot run (table or column missing, ...), for its status.
    pub def: Result<TimeoutDef, String>,
}

/// The Timeouts to run, with each table's oid and column types, in one query. The table name
/// is split as [`split_table`] does (first dot; schema `public` without one).
/// Suspended Timeouts get their `next_deadline` cleared on the way: nobody acts on it.
const LOAD_TIMEOUTS: &str = "
    WITH cleared AS (
        UPDATE pgsched.timeouts SET next_deadline = NULL
         WHERE suspended AND next_deadline IS NOT NULL
    )
    SELECT t.name, s.nsp, s.rel, t.target_column,
           (extract(epoch FROM t.after) * 1000000)::int8,
           t.condition, t.action, t.batch_size::int8, t.spec->'set', c.oid,
           (SELECT jsonb_object_agg(a.attname, format_type(a.atttypid, a.atttypmod))
              FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
      FROM pgsched.timeouts t
      CROSS JOIN LATERAL (SELECT
             CASE WHEN strpos(t.target_table, '.') > 0
                  THEN split_part(t.target_table, '.', 1) ELSE 'public' END AS nsp,
             CASE WHEN strpos(t.target_table, '.') > 0
                  THEN substr(t.target_table, strpos(t.target_table, '.') + 1)
                  ELSE t.target_table END AS rel) s
      LEFT JOIN pg_namespace n ON n.nspname = s.nsp
      LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.rel
                          AND c.relkind IN ('r', 'p')
     WHERE NOT t.suspended
     ORDER BY t.name";

/// Loads the Timeouts that are not suspended. A Timeout whose table or columns are missing
/// comes back with the reason, so the loop records it and goes on with the others.
pub async fn load_timeouts(client: &impl GenericClient) -> Result<Vec<LoadedTimeout>, StoreError> {
    let rows = client
        .query(LOAD_TIMEOUTS, &[])
        .await
        .context("reading the Timeouts")?;
    Ok(rows.iter().map(resolve).collect())
}

fn resolve(row: &Row) -> LoadedTimeout {
    let name: String = row.get(0);
    LoadedTimeout {
        def: resolve_def(&name, row),
        name,
    }
}

fn resolve_def(name: &str, row: &Row) -> Result<TimeoutDef, String> {
    let schema: Option<String> = row.get(1);
    let table: Option<String> = row.get(2);
    let (Some(schema), Some(table)) = (schema, table) else {
        return Err("the Timeout names no table".into());
    };
    let Some(table_oid) = row.get::<_, Option<u32>>(9) else {
        return Err(format!("table {schema}.{table} does not exist"));
    };
    let types: HashMap<String, String> = row
        .get::<_, Option<Value>>(10)
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let column: Option<String> = row.get(3);
    let Some(column) = column else {
        return Err("the Timeout names no column".into());
    };
    match types.get(&column) {
        None => {
            return Err(format!(
                "column {column} does not exist in {schema}.{table}"
            ))
        }
        Some(ty) if !ty.starts_with("timestamp") => {
            return Err(format!(
                "column {column} of {schema}.{table} is {ty}, not a timestamptz or timestamp"
            ))
        }
        Some(_) => {}
    }
    let after_us: Option<i64> = row.get(4);
    let after_us = after_us.ok_or("the Timeout has no `after`")?;
    let action: String = row.get(6);
    let expiry = if action == "delete" {
        Expiry::Delete
    } else {
        let set: Option<Value> = row.get(8);
        let Some(Value::Object(set)) = set else {
            return Err("the Timeout has neither `set` nor `delete: true`".into());
        };
        if set.is_empty() {
            return Err("the Timeout's `set` is empty".into());
        }
        let mut columns = Vec::new();
        for (column, value) in set {
            let Some(sql_type) = types.get(&column) else {
                return Err(format!(
                    "column {column} (in `set`) does not exist in {schema}.{table}"
                ));
            };
            columns.push(SetColumn {
                column,
                sql_type: sql_type.clone(),
                value: value_as_text(&value),
            });
        }
        Expiry::Set(columns)
    };
    let batch_size: i64 = row.get(7);
    Ok(TimeoutDef {
        name: name.to_string(),
        schema,
        table,
        table_oid,
        column,
        after_us,
        condition: row.get(5),
        expiry,
        batch_size: batch_size.max(1),
    })
}

/// A `set` value as the text PostgreSQL's input function of the column's type reads:
/// `expired`, `0`, `1.5`, `false`; NULL for `null`; JSON text for lists (a json or array column).
fn value_as_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

/// `after`, from its microseconds in `$2`. Deadlines are cast to timestamptz: a `timestamp`
/// column is read in the session's time zone, as the application's own comparisons with
/// now() read it.
const AFTER: &str = "($2::int8 * interval '1 microsecond')";

fn condition_sql(def: &TimeoutDef) -> String {
    match &def.condition {
        Some(c) if !c.trim().is_empty() => format!("({c})"),
        _ => "true".into(),
    }
}

/// The next-deadline query. Parameters: `$1` name, `$2` after (µs), `$3` since (epoch
/// seconds of the loop's last expiry statement, or NULL).
///
/// Returns the earliest deadline of any matching row (what `next_deadline` shows; in the
/// past while a due row is held locked by someone), the earliest deadline after `since`
/// (what the loop sleeps until: rows due before `since` were tried and found locked), and the
/// server's now(). Stores the earliest deadline, and clears a recorded error, in the same
/// statement, writing only when they change.
pub fn deadline_sql(def: &TimeoutDef) -> String {
    let t = def.qualified_table();
    let c = quote_ident(&def.column);
    let w = condition_sql(def);
    format!(
        "WITH d AS (
             SELECT ((SELECT min({c}) FROM {t} WHERE {w}) + {AFTER})::timestamptz AS earliest,
                    ((SELECT min({c}) FROM {t}
                       WHERE {c} > to_timestamp(coalesce($3::float8, '-infinity')) - {AFTER}
                         AND {w}) + {AFTER})::timestamptz AS upcoming
         ), stored AS (
             UPDATE pgsched.timeouts SET next_deadline = d.earliest, last_error = NULL, last_error_at = NULL
               FROM d
              WHERE name = $1::text
                AND (next_deadline IS DISTINCT FROM d.earliest OR last_error IS NOT NULL)
         )
         SELECT extract(epoch FROM d.earliest)::float8, extract(epoch FROM d.upcoming)::float8,
                extract(epoch FROM now())::float8
           FROM d"
    )
}

/// One expiry batch, one statement. Parameters: `$1` name, `$2` after (µs), `$3` batch
/// size, `$4` worker, `$5...` the `set` values as text.
///
/// `due` picks up to a batch of due rows, oldest first, locking them and skipping rows that
/// another transaction holds (an application paying for a booking at its deadline is never
/// waited on). The change re-checks the condition and the deadline on each row it changes.
/// The run is recorded, and the next deadline stored, in the same statement, so a crash can
/// neither lose a run nor record one that did not happen.
///
/// Returns the number of rows changed; the earliest deadline of due rows left behind (held
/// locked, or beyond this batch); the earliest deadline after this statement's now(); and
/// now(), all as epoch seconds.
pub fn expire_sql(def: &TimeoutDef) -> String {
    let t = def.qualified_table();
    let c = quote_ident(&def.column);
    let w = condition_sql(def);
    // tableoid with ctid: on a partitioned table, ctids repeat across partitions.
    let recheck = format!(
        "{t}.tableoid = due.pgsched_tableoid AND {t}.ctid = due.pgsched_ctid \
         AND {t}.{c} <= now() - {AFTER} AND {w}"
    );
    let change = match &def.expiry {
        Expiry::Delete => format!("DELETE FROM {t} USING due WHERE {recheck} RETURNING {t}.{c}"),
        Expiry::Set(columns) => {
            let assignments: Vec<String> = columns
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    format!(
                        "{} = ${}::text::{}",
                        quote_ident(&s.column),
                        i + 5,
                        s.sql_type
                    )
                })
                .collect();
            format!(
                "UPDATE {t} SET {} FROM due WHERE {recheck} RETURNING {t}.{c}",
                assignments.join(", ")
            )
        }
    };
    format!(
        "WITH due AS (
             SELECT tableoid AS pgsched_tableoid, ctid AS pgsched_ctid FROM {t}
              WHERE {c} <= now() - {AFTER} AND {w}
              ORDER BY {c} LIMIT $3::int8
                FOR UPDATE SKIP LOCKED
         ), changed (pgsched_at) AS (
             {change}
         ), run AS (
             INSERT INTO pgsched.runs (job, kind, trigger, status, worker, due_at, started_at,
                                       finished_at, rows_affected)
             SELECT $1::text, 'Timeout', 'timeout', 'succeeded', $4::text,
                    min(pgsched_at) + {AFTER}, statement_timestamp(), clock_timestamp(), count(*)
               FROM changed
             HAVING count(*) > 0
         ), d AS (
             SELECT ((SELECT min({c}) FROM {t}
                       WHERE {c} <= now() - {AFTER} AND {w}
                         AND (tableoid, ctid) NOT IN (SELECT pgsched_tableoid, pgsched_ctid FROM due))
                      + {AFTER})::timestamptz AS left_behind,
                    ((SELECT min({c}) FROM {t}
                       WHERE {c} > now() - {AFTER} AND {w}) + {AFTER})::timestamptz AS upcoming
         ), stored AS (
             UPDATE pgsched.timeouts
                SET next_deadline = coalesce(d.left_behind, d.upcoming), last_error = NULL, last_error_at = NULL
               FROM d
              WHERE name = $1::text
                AND (next_deadline IS DISTINCT FROM coalesce(d.left_behind, d.upcoming)
                     OR last_error IS NOT NULL)
         )
         SELECT (SELECT count(*) FROM changed), extract(epoch FROM d.left_behind)::float8,
                extract(epoch FROM d.upcoming)::float8, extract(epoch FROM now())::float8
           FROM d"
    )
}

/// Records why a Timeout cannot run (written only when the message changes, so a Timeout
/// retried on every poll does not write every poll).
pub async fn record_error(
    client: &impl GenericClient,
    name: &str,
    message: &str,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE pgsched.timeouts SET last_error = $2, last_error_at = now()
              WHERE name = $1 AND last_error IS DISTINCT FROM $2",
            &[&name, &message],
        )
        .await
        .context("recording a Timeout's error")?;
    Ok(())
}

/// Called at the end of every apply, in its transaction: makes the wake-up triggers match the
/// Timeouts (one per Timeout, on its table; removed with the Timeout or when its table
/// changes), and wakes the deadline loops when Timeouts changed.
///
/// Only triggers that execute [`TRIGGER_FUNCTION`] are ever dropped. A table that does not
/// exist, or on which this role may not create triggers, gets none: its Timeout still runs, on
/// the poll (plan says so).
pub async fn sync_triggers(tx: &impl GenericClient, plan: &Plan) -> Result<(), StoreError> {
    let existing = installed_triggers(tx).await?;
    let wanted = wanted_triggers(tx).await?;
    let mut ddl = Vec::new();
    for (schema, table, trigger) in existing.iter().filter(|k| !wanted.contains_key(*k)) {
        ddl.push((
            tx.query_one(
                "SELECT format('DROP TRIGGER IF EXISTS %I ON %I.%I', $1::text, $2::text, $3::text)",
                &[trigger, schema, table],
            )
            .await
            .context("building DROP TRIGGER")?
            .get::<_, String>(0),
            format!("removing trigger {trigger} from {schema}.{table}"),
        ));
    }
    for (key, timeout) in wanted.iter().filter(|(k, _)| !existing.contains(*k)) {
        let (schema, table, trigger) = key;
        ddl.push((
            tx.query_one(
                "SELECT format('CREATE TRIGGER %I AFTER INSERT OR UPDATE ON %I.%I
                                FOR EACH STATEMENT EXECUTE FUNCTION pgsched.timeout_notify(%L)',
                               $1::text, $2::text, $3::text, $4::text)",
                &[trigger, schema, table, timeout],
            )
            .await
            .context("building CREATE TRIGGER")?
            .get::<_, String>(0),
            format!("installing trigger {trigger} on {schema}.{table}"),
        ));
    }
    run_trigger_ddl(tx, &ddl).await?;
    let timeouts_changed = plan.changes.iter().any(|c| c.kind == Kind::Timeout);
    if timeouts_changed || !ddl.is_empty() {
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &RELOAD])
            .await
            .context("waking the Timeout loops")?;
    }
    Ok(())
}

/// A trigger: (schema, table, trigger name).
type TriggerKey = (String, String, String);

/// The wake-up triggers on tables now (those that execute [`TRIGGER_FUNCTION`]).
async fn installed_triggers(tx: &impl GenericClient) -> Result<BTreeSet<TriggerKey>, StoreError> {
    Ok(tx
        .query(
            "SELECT n.nspname::text, c.relname::text, t.tgname::text
               FROM pg_trigger t
               JOIN pg_class c ON c.oid = t.tgrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE t.tgfoid = 'pgsched.timeout_notify()'::regprocedure AND NOT t.tgisinternal",
            &[],
        )
        .await
        .context("reading the Timeouts' triggers")?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// The wake-up triggers the Timeouts want, each with its Timeout's name: one per Timeout
/// whose table exists and on which this role may create triggers.
async fn wanted_triggers(
    tx: &impl GenericClient,
) -> Result<BTreeMap<TriggerKey, String>, StoreError> {
    let timeouts: Vec<(String, String)> = tx
        .query(
            "SELECT name, target_table FROM pgsched.timeouts WHERE target_table IS NOT NULL",
            &[],
        )
        .await
        .context("reading the Timeouts' tables")?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let (schemas, tables): (Vec<String>, Vec<String>) =
        timeouts.iter().map(|(_, table)| split_table(table)).unzip();
    let usable: BTreeSet<(String, String)> = tx
        .query(
            "SELECT u.nsp, u.rel FROM unnest($1::text[], $2::text[]) AS u(nsp, rel)
               JOIN pg_namespace n ON n.nspname = u.nsp
               JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = u.rel
              WHERE c.relkind IN ('r', 'p') AND has_table_privilege(c.oid, 'TRIGGER')",
            &[&schemas, &tables],
        )
        .await
        .context("looking up the Timeouts' tables")?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(timeouts
        .into_iter()
        .zip(schemas.into_iter().zip(tables))
        .filter(|(_, table)| usable.contains(table))
        .map(|((name, _), (schema, table))| ((schema, table, trigger_name(&name)), name))
        .collect())
}

/// Runs trigger DDL (statement, what it does) under a short lock_timeout.
async fn run_trigger_ddl(
    tx: &impl GenericClient,
    ddl: &[(String, String)],
) -> Result<(), StoreError> {
    if ddl.is_empty() {
        return Ok(());
    }
    // A trigger change locks the table against writes until the apply commits; if a long
    // transaction holds the table, give up rather than queue every writer behind us.
    let previous: String = tx
        .query_one(
            "SELECT current_setting('lock_timeout'), set_config('lock_timeout', '5s', true)",
            &[],
        )
        .await
        .context("setting lock_timeout")?
        .get(0);
    for (sql, what) in ddl {
        tx.batch_execute(sql).await.context(format!(
            "{what} (a transaction holding the table for more than 5 s makes this fail; apply again)"
        ))?;
    }
    tx.execute("SELECT set_config('lock_timeout', $1, true)", &[&previous])
        .await
        .context("restoring lock_timeout")?;
    Ok(())
}

/// Whether `table` (by oid) has an index whose first key column is `column`: the index that
/// lets the deadline loop find due rows without reading the whole table.
pub async fn has_deadline_index(
    client: &impl GenericClient,
    table_oid: u32,
    column: &str,
) -> Result<bool, StoreError> {
    client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_index i
                              JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                             WHERE i.indrelid = $1 AND a.attname = $2 AND i.indisvalid)",
            &[&table_oid, &column],
        )
        .await
        .context("looking for an index on a Timeout's column")
        .map(|r| r.get(0))
}

/// Whether the wake-up trigger of `timeout` is on the table now, and whether this role may
/// create it.
pub async fn trigger_state(
    client: &impl GenericClient,
    table_oid: u32,
    timeout: &str,
) -> Result<(bool, bool), StoreError> {
    client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = $1 AND tgname = $2),
                    has_table_privilege($1, 'TRIGGER')",
            &[&table_oid, &trigger_name(timeout)],
        )
        .await
        .context("looking up a Timeout's trigger")
        .map(|r| (r.get(0), r.get(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(expiry: Expiry) -> TimeoutDef {
        TimeoutDef {
            name: "hold".into(),
            schema: "public".into(),
            table: "we\"ird".into(),
            table_oid: 1,
            column: "created_at".into(),
            after_us: 1,
            condition: Some("status = 'pending'".into()),
            expiry,
            batch_size: 10,
        }
    }

    #[test]
    fn trigger_names_fit_in_63_bytes() {
        assert_eq!(trigger_name("hold"), "pgsched_timeout_hold");
        let long = "a".repeat(63);
        let name = trigger_name(&long);
        assert_eq!(name.len(), 63);
        assert_ne!(name, trigger_name(&"a".repeat(62)));
        assert!(trigger_name(&"a".repeat(47)).len() <= 63);
    }

    #[test]
    fn set_values_are_parameters_cast_to_the_column_type() {
        let sql = expire_sql(&def(Expiry::Set(vec![
            SetColumn {
                column: "status".into(),
                sql_type: "booking_status".into(),
                value: Some("expired'; DROP TABLE x; --".into()),
            },
            SetColumn {
                column: "held by".into(),
                sql_type: "text".into(),
                value: None,
            },
        ])));
        assert!(sql.contains("\"status\" = $5::text::booking_status"));
        assert!(sql.contains("\"held by\" = $6::text::text"));
        assert!(!sql.contains("DROP TABLE"));
        assert!(sql.contains("\"public\".\"we\"\"ird\""));
        assert!(sql.contains("FOR UPDATE SKIP LOCKED"));
        let delete = expire_sql(&def(Expiry::Delete));
        assert!(delete.contains("DELETE FROM \"public\".\"we\"\"ird\" USING due"));
    }

    #[test]
    fn values_as_text() {
        assert_eq!(value_as_text(&Value::Null), None);
        assert_eq!(value_as_text(&serde_json::json!("x")).as_deref(), Some("x"));
        assert_eq!(
            value_as_text(&serde_json::json!(false)).as_deref(),
            Some("false")
        );
        assert_eq!(
            value_as_text(&serde_json::json!(1.5)).as_deref(),
            Some("1.5")
        );
        assert_eq!(
            value_as_text(&serde_json::json!([1, 2])).as_deref(),
            Some("[1,2]")
        );
    }
}
