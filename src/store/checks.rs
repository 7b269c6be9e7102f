//! Checks against the live database at plan time, before anything is applied: a Timeout's
//! table and columns exist with the right types, and SQL task bodies compile (PREPARE, which
//! has no side effects), so a misspelt table fails in review, not at 2 a.m.

use super::{describe_pg_error, split_table, Context, StoreError};
use crate::spec::error::did_you_mean;
use crate::spec::sql::scan_sql;
use crate::spec::validate::shown_path;
use crate::spec::{Object, ObjectSpec, SpecError, TimeoutSpec};
use futures_util::future::join_all;
use std::path::Path;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

/// What the checks found: errors that stop the plan, and what could not be checked.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Located problems (bad SQL, missing tables or columns); any of them stops an apply.
    pub errors: Vec<SpecError>,
    /// `job/x spec.sql: not checked: ...`, for the plan to say what it did not verify.
    pub unchecked: Vec<String>,
    /// Warnings and what apply will do besides writing rows: `timeout/x: no index ...`.
    pub notes: Vec<String>,
}

/// Statements PostgreSQL can PREPARE: the ones worth checking.
const PREPARABLE: [&str; 7] = [
    "SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "VALUES", "TABLE",
];

/// The first keyword of a SQL body, after comments and opening parentheses.
fn first_keyword(sql: &str) -> String {
    let mut rest = sql;
    loop {
        let trimmed = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(after) = trimmed.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |x| x.1);
        } else if let Some(after) = trimmed.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |x| x.1);
        } else {
            return trimmed
                .chars()
                .take_while(char::is_ascii_alphabetic)
                .collect::<String>()
                .to_ascii_uppercase();
        }
    }
}

struct SqlTarget<'a> {
    object: &'a Object,
    path: String,
    sql: &'a str,
}

/// How one SQL step of a chain is checked.
#[derive(Debug, PartialEq, Eq)]
enum ChainCheck {
    /// On its own, with PREPARE.
    Prepare,
    /// Not: it runs on this Connection.
    OtherDatabase(String),
    /// Not: this step, which surely ran before it, may have created what it uses.
    After(String),
}

#[derive(Debug)]
struct ChainSql<'a> {
    path: String,
    sql: &'a str,
    check: ChainCheck,
}

/// Whether a step may change the scheduler database's schema (so later steps may use tables
/// that do not exist yet at plan time): SQL that is not one plain query, or a command or shell
/// (`psql -f`, `pg_restore`). Steps on another database change nothing here.
fn may_create(step: &crate::spec::Step) -> bool {
    if step.database.is_some() {
        return false;
    }
    match &step.sql {
        Some(sql) => {
            scan_sql(sql).statements != 1 || !PREPARABLE.contains(&first_keyword(sql).as_str())
        }
        None => step.command.is_some() || step.shell.is_some(),
    }
}

/// The SQL of a chain's steps and `onFailure` steps, each with how it can be checked. A step
/// is checked on its own unless a step that surely ran before it may have created what it
/// uses: in a line, any earlier step; in a graph, the steps it needs, directly or through
/// others (a step running beside it in parallel is no excuse: depending on it would be a race).
/// `onFailure` steps may follow any main step, except in a transactional chain, whose steps
/// are rolled back before they run; and any earlier `onFailure` step.
fn chain_sql(chain: &crate::spec::ChainSpec) -> Vec<ChainSql<'_>> {
    let names = chain.step_names();
    let index: std::collections::HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let graph = chain.is_graph();
    // For each step, the first (in written order) step that surely ran before it and may
    // have created something.
    let creator_before = |i: usize| -> Option<usize> {
        if !graph {
            return (0..i).find(|&j| may_create(&chain.steps[j]));
        }
        let mut seen = vec![false; chain.steps.len()];
        let mut stack = vec![i];
        while let Some(k) = stack.pop() {
            for need in chain.steps[k].needs.iter().flatten() {
                if let Some(&j) = index.get(need.as_str()) {
                    if !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        (0..chain.steps.len()).find(|&j| seen[j] && may_create(&chain.steps[j]))
    };
    let check = |step: &crate::spec::Step, creator: Option<String>| match (&step.database, creator)
    {
        (Some(db), _) => ChainCheck::OtherDatabase(db.clone()),
        (None, Some(name)) => ChainCheck::After(name),
        (None, None) => ChainCheck::Prepare,
    };
    let mut out = Vec::new();
    for (i, step) in chain.steps.iter().enumerate() {
        if let Some(sql) = &step.sql {
            out.push(ChainSql {
                path: format!("spec.steps[{i}].sql"),
                sql,
                check: check(step, creator_before(i).map(|j| names[j].clone())),
            });
        }
    }
    let main_creator = if chain.transaction == Some(true) {
        None
    } else {
        (0..chain.steps.len())
            .find(|&j| may_create(&chain.steps[j]))
            .map(|j| names[j].clone())
    };
    let handlers = chain.on_failure_steps();
    let handler_names = chain.on_failure_names();
    for (i, step) in handlers.iter().enumerate() {
        if let Some(sql) = &step.sql {
            let creator = main_creator.clone().or_else(|| {
                (0..i)
                    .find(|&j| may_create(&handlers[j]))
                    .map(|j| handler_names[j].clone())
            });
            out.push(ChainSql {
                path: format!("spec.onFailure[{i}].sql"),
                sql,
                check: check(step, creator),
            });
        }
    }
    out
}

/// Runs every check for the given objects (the ones a plan creates or changes).
pub async fn check_objects(
    client: &Client,
    objects: &[&Object],
    dir: &Path,
) -> Result<CheckReport, StoreError> {
    let mut report = CheckReport::default();
    let mut targets = Vec::new();
    for object in objects {
        match &object.spec {
            ObjectSpec::Timeout(timeout) => {
                check_timeout(client, object, timeout, dir, &mut report).await?;
            }
            _ => targets.extend(sql_targets(object, &mut report)),
        }
    }
    let preparable = preparable(&targets, &mut report);
    prepare_all(client, &preparable, dir, &mut report).await?;
    report.unchecked.sort();
    report.notes.sort();
    Ok(report)
}

/// The SQL of a job or chain that runs on the scheduler's database, to be prepared; the SQL
/// that cannot be checked on it goes to `report.unchecked`, with why.
fn sql_targets<'o>(object: &'o Object, report: &mut CheckReport) -> Vec<SqlTarget<'o>> {
    let mut targets = Vec::new();
    match &object.spec {
        ObjectSpec::Job(job) => match (&job.sql, &job.database) {
            (Some(_), Some(db)) => report.unchecked.push(format!(
                "{} spec.sql: runs on connection `{db}`; only SQL on the scheduler's database is checked",
                object.key()
            )),
            (Some(sql), None) => targets.push(SqlTarget {
                object,
                path: "spec.sql".into(),
                sql,
            }),
            (None, _) => {}
        },
        ObjectSpec::Chain(chain) => {
            for step in chain_sql(chain) {
                match step.check {
                    ChainCheck::Prepare => targets.push(SqlTarget {
                        object,
                        path: step.path,
                        sql: step.sql,
                    }),
                    ChainCheck::OtherDatabase(db) => report.unchecked.push(format!(
                        "{} {}: runs on connection `{db}`; only SQL on the scheduler's database is checked",
                        object.key(),
                        step.path
                    )),
                    ChainCheck::After(earlier) => report.unchecked.push(format!(
                        "{} {}: may depend on what step `{earlier}` creates; not checked on its own",
                        object.key(),
                        step.path
                    )),
                }
            }
        }
        ObjectSpec::Timeout(_) | ObjectSpec::Connection(_) => {}
    }
    targets
}

/// The targets PREPARE can check: one statement of a preparable kind. The others go to
/// `report.unchecked`, with why.
fn preparable<'t, 'o>(
    targets: &'t [SqlTarget<'o>],
    report: &mut CheckReport,
) -> Vec<&'t SqlTarget<'o>> {
    let mut prepared = Vec::new();
    for target in targets {
        let shape = scan_sql(target.sql);
        let keyword = first_keyword(target.sql);
        if shape.statements != 1 {
            report.unchecked.push(format!(
                "{} {}: {} statements run as one batch; only single statements are checked",
                target.object.key(),
                target.path,
                shape.statements
            ));
        } else if !PREPARABLE.contains(&keyword.as_str()) {
            report.unchecked.push(format!(
                "{} {}: {keyword} cannot be prepared; only SELECT, INSERT, UPDATE, DELETE and WITH are checked",
                target.object.key(),
                target.path
            ));
        } else {
            prepared.push(target);
        }
    }
    prepared
}

/// Prepares every target; the ones that do not compile become located errors.
async fn prepare_all(
    client: &Client,
    targets: &[&SqlTarget<'_>],
    dir: &Path,
    report: &mut CheckReport,
) -> Result<(), StoreError> {
    // Prepares are pipelined on the one connection: thousands cost one round trip's wait each
    // at most, not in sequence. Each is its own protocol exchange, so one failure does not
    // affect the others, and preparing changes nothing in the database.
    let results = join_all(targets.iter().map(|t| {
        let types: &[Type] = if scan_sql(t.sql).max_param == 1 {
            &[Type::JSONB]
        } else {
            &[]
        };
        client.prepare_typed(t.sql, types)
    }))
    .await;
    for (target, result) in targets.iter().zip(results) {
        if let Err(e) = result {
            if e.as_db_error().is_none() {
                return Err(e).context("checking SQL against the database");
            }
            let shown = shown_path(dir, &target.object.source.file);
            report.errors.push(
                SpecError::new(
                    shown,
                    format!("the SQL does not compile: {}", describe_pg_error(&e)),
                )
                .at(target.object.locate(&target.path))
                .field(crate::spec::yaml::FieldPath::parse(&target.path)),
            );
        }
    }
    Ok(())
}

/// Checks a Timeout against the live schema: its table and columns exist and have the right
/// types, its condition compiles, and notes on the index and the wake-up trigger it needs.
async fn check_timeout(
    client: &Client,
    object: &Object,
    spec: &TimeoutSpec,
    dir: &Path,
    report: &mut CheckReport,
) -> Result<(), StoreError> {
    let (schema, table) = split_table(&spec.table);
    let check = TimeoutCheck {
        object,
        spec,
        shown: shown_path(dir, &object.source.file),
        quoted: format!(
            "{}.{}",
            super::quote_ident(&schema),
            super::quote_ident(&table)
        ),
        schema,
        table,
    };
    let Some(oid) = check.table_oid(client, report).await? else {
        return Ok(());
    };
    let columns: Vec<(String, String)> = client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
              WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped",
            &[&oid],
        )
        .await
        .context("reading a Timeout's columns")?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    check.columns(&columns, report);
    check.condition(client, report).await?;
    if columns.iter().any(|c| c.0 == spec.column) {
        check.index(client, oid, report).await?;
    }
    check.trigger(client, oid, report).await
}

/// One Timeout being checked, and where its errors point.
struct TimeoutCheck<'a> {
    object: &'a Object,
    spec: &'a TimeoutSpec,
    /// The spec file, as errors show it.
    shown: std::path::PathBuf,
    schema: String,
    table: String,
    /// `schema.table`, quoted for SQL.
    quoted: String,
}

impl TimeoutCheck<'_> {
    fn error(&self, path: &str, message: String) -> SpecError {
        SpecError::new(&self.shown, message)
            .at(self.object.locate(path))
            .field(crate::spec::yaml::FieldPath::parse(path))
    }

    /// The table's oid; None (and an error with a did-you-mean) when it does not exist.
    async fn table_oid(
        &self,
        client: &Client,
        report: &mut CheckReport,
    ) -> Result<Option<u32>, StoreError> {
        let (schema, table) = (&self.schema, &self.table);
        let row = client
            .query_opt(
                "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
                &[schema, table],
            )
            .await
            .context("looking up a Timeout's table")?;
        if let Some(row) = row {
            return Ok(Some(row.get(0)));
        }
        let tables: Vec<String> = client
            .query(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')",
                &[schema],
            )
            .await
            .context("listing tables")?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut e = self.error(
            "spec.table",
            format!("table {schema}.{table} does not exist"),
        );
        e.hint = did_you_mean(table, tables.iter().map(String::as_str))
            .or_else(|| Some("create the table first, or fix the name (schema.table; the schema defaults to public)".into()));
        report.errors.push(e);
        Ok(None)
    }

    /// The deadline column exists and is a timestamp; every `set` column exists.
    fn columns(&self, columns: &[(String, String)], report: &mut CheckReport) {
        let missing = |path: &str, column: &str, report: &mut CheckReport| {
            let mut e = self.error(
                path,
                format!(
                    "column `{column}` does not exist in {}.{}",
                    self.schema, self.table
                ),
            );
            e.hint = did_you_mean(column, columns.iter().map(|c| c.0.as_str()));
            report.errors.push(e);
        };
        let spec = self.spec;
        match columns.iter().find(|c| c.0 == spec.column) {
            None => missing("spec.column", &spec.column, report),
            Some((_, ty)) if !ty.starts_with("timestamp") => report.errors.push(self.error(
                "spec.column",
                format!(
                    "column `{}` is {ty}; a Timeout needs a timestamptz or timestamp column",
                    spec.column
                ),
            )),
            Some(_) => {}
        }
        for column in spec.set.iter().flat_map(|s| s.keys()) {
            if !columns.iter().any(|c| &c.0 == column) {
                missing(&format!("spec.set.{column}"), column, report);
            }
        }
    }

    /// The `where` condition compiles against the table.
    async fn condition(&self, client: &Client, report: &mut CheckReport) -> Result<(), StoreError> {
        let Some(condition) = &self.spec.where_ else {
            return Ok(());
        };
        let probe = format!("SELECT 1 FROM {} WHERE ({condition}) LIMIT 0", self.quoted);
        if let Err(e) = client.prepare(&probe).await {
            if e.as_db_error().is_none() {
                return Err(e).context("checking a Timeout's condition");
            }
            report.errors.push(self.error(
                "spec.where",
                format!("the condition does not compile: {}", describe_pg_error(&e)),
            ));
        }
        Ok(())
    }

    /// A note, with the statement to run, when no index lets the loop find due rows.
    async fn index(
        &self,
        client: &Client,
        oid: u32,
        report: &mut CheckReport,
    ) -> Result<(), StoreError> {
        let spec = self.spec;
        if super::timeouts::has_deadline_index(client, oid, &spec.column).await? {
            return Ok(());
        }
        let predicate = spec
            .where_
            .as_deref()
            .map(|w| format!(" WHERE ({w})"))
            .unwrap_or_default();
        report.notes.push(format!(
            "{}: no index on {}.{} starts with `{}`, so finding due rows reads the whole \
             table on every wake; suggested: CREATE INDEX CONCURRENTLY ON {} ({}){predicate};",
            self.object.key(),
            self.schema,
            self.table,
            spec.column,
            self.quoted,
            super::quote_ident(&spec.column),
        ));
        Ok(())
    }

    /// A note on the wake-up trigger: apply installs it, or this role may not.
    async fn trigger(
        &self,
        client: &Client,
        oid: u32,
        report: &mut CheckReport,
    ) -> Result<(), StoreError> {
        let (key, schema, table) = (self.object.key(), &self.schema, &self.table);
        let trigger = super::timeouts::trigger_name(self.object.name());
        match super::timeouts::trigger_state(client, oid, self.object.name()).await? {
            (true, _) => {}
            (false, true) => report.notes.push(format!(
                "{key}: apply installs trigger {trigger} on {schema}.{table} (AFTER INSERT OR UPDATE, \
                 FOR EACH STATEMENT; it sends NOTIFY pgsched_timeouts so new rows' deadlines are \
                 known at once); deleting the Timeout removes it"
            )),
            (false, false) => report.notes.push(format!(
                "{key}: this role may not create triggers on {schema}.{table}, so rows are noticed only \
                 on the poll (up to 5 s late); GRANT TRIGGER ON {} to let apply install {trigger}",
                self.quoted
            )),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{chain_sql, first_keyword, ChainCheck};
    use crate::spec::ChainSpec;

    fn checks(chain: serde_json::Value) -> Vec<(String, ChainCheck)> {
        let chain: ChainSpec = serde_json::from_value(chain).unwrap();
        chain_sql(&chain)
            .into_iter()
            .map(|s| (s.path, s.check))
            .collect()
    }

    fn after(step: &str) -> ChainCheck {
        ChainCheck::After(step.into())
    }

    #[test]
    fn in_a_line_steps_after_a_schema_change_are_not_checked() {
        let found = checks(serde_json::json!({"steps": [
            {"name": "read", "sql": "SELECT 1"},
            {"name": "stage", "sql": "CREATE TEMP TABLE s AS SELECT 1"},
            {"name": "log", "builtin": {"name": "log", "message": "x"}},
            {"name": "use", "sql": "INSERT INTO s VALUES (2)"},
        ]}));
        assert_eq!(
            found,
            [
                ("spec.steps[0].sql".into(), ChainCheck::Prepare),
                ("spec.steps[1].sql".into(), ChainCheck::Prepare),
                ("spec.steps[3].sql".into(), after("stage")),
            ]
        );
    }

    #[test]
    fn in_a_graph_only_what_a_step_needs_counts_whatever_the_written_order() {
        let found = checks(serde_json::json!({"steps": [
            // Written first, runs after `create` (through `fill`).
            {"name": "report", "sql": "SELECT * FROM staged", "needs": ["fill"]},
            {"name": "fill", "sql": "INSERT INTO staged SELECT 1", "needs": ["create"]},
            {"name": "create", "sql": "CREATE TABLE staged (x int)"},
            // Beside `create`, not after it: checked, and an error if it used `staged`.
            {"name": "other", "sql": "SELECT 2"},
        ]}));
        assert_eq!(
            found,
            [
                ("spec.steps[0].sql".into(), after("create")),
                ("spec.steps[1].sql".into(), after("create")),
                // Listed as a statement that cannot be prepared, later.
                ("spec.steps[2].sql".into(), ChainCheck::Prepare),
                ("spec.steps[3].sql".into(), ChainCheck::Prepare),
            ]
        );
    }

    #[test]
    fn commands_may_create_and_other_databases_do_not() {
        let found = checks(serde_json::json!({"steps": [
            {"name": "remote", "sql": "CREATE TABLE t (x int)", "database": "warehouse"},
            {"name": "local", "sql": "SELECT 1"},
            {"name": "restore", "shell": "pg_restore -d app dump"},
            {"name": "after", "sql": "SELECT * FROM restored"},
        ]}));
        assert_eq!(
            found,
            [
                (
                    "spec.steps[0].sql".into(),
                    ChainCheck::OtherDatabase("warehouse".into())
                ),
                ("spec.steps[1].sql".into(), ChainCheck::Prepare),
                ("spec.steps[3].sql".into(), after("restore")),
            ]
        );
    }

    #[test]
    fn on_failure_sql_is_checked_unless_a_surviving_step_may_have_created_what_it_uses() {
        let steps = serde_json::json!([
            {"name": "make", "sql": "CREATE TABLE IF NOT EXISTS t (x int)"},
            {"name": "fill", "sql": "INSERT INTO t VALUES (1)"},
        ]);
        let handlers = serde_json::json!([
            {"sql": "INSERT INTO failures (error) VALUES ($1->>'error')"},
            {"name": "cleanup", "sql": "DROP TABLE IF EXISTS t"},
            {"sql": "SELECT 1"},
        ]);
        // Not transactional: `make` may have run and stayed.
        let found = checks(serde_json::json!({"steps": steps, "onFailure": handlers}));
        assert_eq!(found[2], ("spec.onFailure[0].sql".into(), after("make")));
        // In one transaction the steps are rolled back first; only earlier handlers count.
        let found =
            checks(serde_json::json!({"steps": steps, "onFailure": handlers, "transaction": true}));
        assert_eq!(
            found[2..],
            [
                ("spec.onFailure[0].sql".into(), ChainCheck::Prepare),
                ("spec.onFailure[1].sql".into(), ChainCheck::Prepare),
                ("spec.onFailure[2].sql".into(), after("cleanup")),
            ]
        );
    }

    #[test]
    fn first_keywords() {
        assert_eq!(first_keyword("  select 1"), "SELECT");
        assert_eq!(first_keyword("-- note\n/* x */ (SELECT 1)"), "SELECT");
        assert_eq!(first_keyword("VACUUM booking"), "VACUUM");
        assert_eq!(first_keyword(""), "");
    }
}
