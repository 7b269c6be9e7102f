//! Reading the managed objects and applying a plan to them. Each kind's table is described
//! once ([`ObjectTable`]): what every object table has in common is written once, and a
//! table's own columns and side effects are data, not branches on its name.

use super::{Context, StoreError, LOCK_CLASS, LOCK_RECONCILE};
use crate::plan::{Action, ActualObject, Change, Plan};
use crate::spec::Kind;
use serde_json::{json, Value};
use tokio_postgres::GenericClient;

/// Every object row, managed or not. For chains, the steps are read back from
/// `chain_steps`, so a hand edit of a step shows up as drift like any other.
const READ_ACTUAL: &str = "
    SELECT j.kind, j.name,
           CASE WHEN j.kind = 'Chain' THEN jsonb_set(j.spec, '{steps}', coalesce(
               (SELECT jsonb_agg(s.spec ORDER BY s.position) FROM pgsched.chain_steps s
                WHERE s.chain = j.name), '[]'::jsonb))
           ELSE j.spec END,
           j.labels, coalesce(j.source_file, ''), coalesce(j.spec_hash, ''), j.generation, j.managed
      FROM pgsched.jobs j
    UNION ALL
    SELECT 'Timeout', name, spec, labels, coalesce(source_file, ''), coalesce(spec_hash, ''), generation, managed
      FROM pgsched.timeouts
    UNION ALL
    SELECT 'Connection', name, spec, labels, coalesce(source_file, ''), coalesce(spec_hash, ''), generation, managed
      FROM pgsched.connections";

/// The Connections the executor's pools are made from: all of them, or the one named (specs
/// that no longer parse, from an older pgsched, are left out).
pub async fn connection_specs(
    client: &impl GenericClient,
    name: Option<&str>,
) -> Result<Vec<(String, crate::spec::ConnectionSpec)>, StoreError> {
    let rows = client
        .query(
            "SELECT name, spec FROM pgsched.connections WHERE $1::text IS NULL OR name = $1",
            &[&name],
        )
        .await
        .context("reading connections")?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((r.get(0), serde_json::from_value(r.get(1)).ok()?)))
        .collect())
}

/// Reads every object row of the pgsched schema, managed or not, as the plan compares them.
pub async fn read_actual(client: &impl GenericClient) -> Result<Vec<ActualObject>, StoreError> {
    let rows = client
        .query(READ_ACTUAL, &[])
        .await
        .context("reading the objects in the pgsched schema")?;
    Ok(actual_of(&rows))
}

/// The object rows with these names, of any kind: what a reconcile of a few changed files
/// compares with. PostgreSQL pushes the filter into each branch of the union.
pub async fn read_actual_named(
    client: &impl GenericClient,
    names: &[String],
) -> Result<Vec<ActualObject>, StoreError> {
    let rows = client
        .query(
            &format!("SELECT * FROM ({READ_ACTUAL}) o WHERE o.name = ANY($1)"),
            &[&names],
        )
        .await
        .context("reading the objects in the pgsched schema")?;
    Ok(actual_of(&rows))
}

/// How many objects pgsched manages: what a partial reconcile's wipe-out guard compares with.
pub async fn count_managed(client: &impl GenericClient) -> Result<usize, StoreError> {
    let n: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM pgsched.jobs WHERE managed)
                  + (SELECT count(*) FROM pgsched.timeouts WHERE managed)
                  + (SELECT count(*) FROM pgsched.connections WHERE managed)",
            &[],
        )
        .await
        .context("counting the managed objects")?
        .get(0);
    Ok(n as usize)
}

fn actual_of(rows: &[tokio_postgres::Row]) -> Vec<ActualObject> {
    rows.iter()
        .filter_map(|r| {
            let kind: String = r.get(0);
            Some(ActualObject {
                kind: Kind::parse(&kind)?,
                name: r.get(1),
                spec: r.get(2),
                labels: r.get(3),
                source_file: r.get(4),
                spec_hash: r.get(5),
                generation: r.get(6),
                managed: r.get(7),
            })
        })
        .collect()
}

/// Takes the reconcile lock for the rest of the transaction.
pub async fn lock_reconcile(tx: &impl GenericClient) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_CLASS, &LOCK_RECONCILE],
    )
    .await
    .context("waiting for the reconcile lock")?;
    Ok(())
}

/// One table of objects: the columns every kind has (name, spec, labels, source_file,
/// spec_hash, generation, managed), and what this table adds. Jobs and chains share one.
struct ObjectTable {
    name: &'static str,
    /// The table has a `kind` column (Job or Chain).
    kind_column: bool,
    /// Assignments an upsert that changes a row makes before the common ones.
    on_update: &'static str,
    /// Run with the names about to be deleted (`$1`) before they are, and what it does.
    before_delete: Option<(&'static str, &'static str)>,
}

const JOBS: ObjectTable = ObjectTable {
    name: "pgsched.jobs",
    kind_column: true,
    // A changed schedule, zone or runAt restarts the job's ticking from now: the executor
    // computes its next tick afresh instead of catching up on the old schedule's ticks.
    on_update: "kind = excluded.kind,
             tick_state = CASE WHEN (pgsched.jobs.spec->'schedule', pgsched.jobs.spec->'timeZone', pgsched.jobs.spec->'runAt')
                                    IS DISTINCT FROM (excluded.spec->'schedule', excluded.spec->'timeZone', excluded.spec->'runAt')
                               THEN 'new' ELSE pgsched.jobs.tick_state END,
             next_run_at = CASE WHEN (pgsched.jobs.spec->'schedule', pgsched.jobs.spec->'timeZone', pgsched.jobs.spec->'runAt')
                                    IS DISTINCT FROM (excluded.spec->'schedule', excluded.spec->'timeZone', excluded.spec->'runAt')
                                THEN NULL ELSE pgsched.jobs.next_run_at END, ",
    // Runs that have not started will not start; running ones finish; history stays.
    before_delete: Some((
        "UPDATE pgsched.runs SET status = 'cancelled', finished_at = now(),
                error = 'the job was removed from the spec directory'
          WHERE job = ANY($1) AND status = 'pending'",
        "cancelling pending runs of removed jobs",
    )),
};

const TIMEOUTS: ObjectTable = ObjectTable {
    name: "pgsched.timeouts",
    kind_column: false,
    on_update: "",
    before_delete: None,
};

const CONNECTIONS: ObjectTable = ObjectTable {
    name: "pgsched.connections",
    kind_column: false,
    on_update: "",
    before_delete: None,
};

fn table_of(kind: Kind) -> &'static ObjectTable {
    match kind {
        Kind::Job | Kind::Chain => &JOBS,
        Kind::Timeout => &TIMEOUTS,
        Kind::Connection => &CONNECTIONS,
    }
}

impl ObjectTable {
    /// The changes of `plan` to objects stored in this table.
    fn changes<'p>(
        &'static self,
        plan: &'p Plan,
        delete: bool,
    ) -> impl Iterator<Item = &'p Change> {
        plan.changes.iter().filter(move |c| {
            (c.action == Action::Delete) == delete && table_of(c.kind).name == self.name
        })
    }

    /// The upsert of a batch of rows (`$1`, a JSON array of records), changing only managed
    /// rows: a hand-made row of the same name stays as it is (plan reports it as a conflict).
    fn upsert_sql(&self) -> String {
        let table = self.name;
        let (kind_column, kind_value) = if self.kind_column {
            ("kind, ", "r.kind, ")
        } else {
            ("", "")
        };
        let on_update = self.on_update;
        format!(
            "INSERT INTO {table} (name, {kind_column}spec, labels, source_file, spec_hash, generation, managed)
             SELECT r.name, {kind_value}r.spec, r.labels, r.source_file, r.spec_hash, r.generation, true
               FROM jsonb_to_recordset($1::jsonb) AS r(name text, kind text, spec jsonb, labels jsonb,
                                                      source_file text, spec_hash text, generation bigint)
             ON CONFLICT (name) DO UPDATE SET {on_update}spec = excluded.spec, labels = excluded.labels,
                    source_file = excluded.source_file, spec_hash = excluded.spec_hash,
                    generation = excluded.generation, updated_at = now()
              WHERE {table}.managed"
        )
    }
}

/// Applies the plan's changes inside the caller's transaction: deletes first (so a name can
/// move from a job to a chain), then creates and updates in bulk, one statement per table,
/// then the chains' steps and the Timeouts' triggers.
pub async fn apply_changes(tx: &impl GenericClient, plan: &Plan) -> Result<(), StoreError> {
    for table in [&JOBS, &TIMEOUTS, &CONNECTIONS] {
        delete_removed(tx, table, plan).await?;
    }
    // Connections are written first and deleted last, as the plan orders them: jobs that name
    // a Connection never do so while it is missing.
    for table in [&CONNECTIONS, &JOBS, &TIMEOUTS] {
        upsert_changed(tx, table, plan).await?;
    }
    write_chain_steps(tx, plan).await?;
    super::timeouts::sync_triggers(tx, plan).await
}

async fn delete_removed(
    tx: &impl GenericClient,
    table: &'static ObjectTable,
    plan: &Plan,
) -> Result<(), StoreError> {
    let names: Vec<&str> = table.changes(plan, true).map(|c| c.name.as_str()).collect();
    if names.is_empty() {
        return Ok(());
    }
    if let Some((sql, what)) = table.before_delete {
        tx.execute(sql, &[&names]).await.context(what)?;
    }
    tx.execute(
        &format!(
            "DELETE FROM {} WHERE name = ANY($1) AND managed",
            table.name
        ),
        &[&names],
    )
    .await
    .context(format!("deleting from {}", table.name))?;
    Ok(())
}

async fn upsert_changed(
    tx: &impl GenericClient,
    table: &'static ObjectTable,
    plan: &Plan,
) -> Result<(), StoreError> {
    let records: Vec<Value> = table
        .changes(plan, false)
        .filter_map(|c| {
            let d = c.desired.as_ref()?;
            Some(json!({
                "name": d.name,
                "kind": d.kind.as_str(),
                "spec": d.spec,
                "labels": d.labels,
                "source_file": d.source_file,
                "spec_hash": d.spec_hash,
                "generation": c.generation,
            }))
        })
        .collect();
    if records.is_empty() {
        return Ok(());
    }
    tx.execute(&table.upsert_sql(), &[&Value::Array(records)])
        .await
        .context(format!("writing {}", table.name))?;
    Ok(())
}

/// Chain steps follow their chain's spec: rewritten whole for every created or changed chain.
async fn write_chain_steps(tx: &impl GenericClient, plan: &Plan) -> Result<(), StoreError> {
    let chains: Vec<&Change> = plan
        .changes
        .iter()
        .filter(|c| c.action != Action::Delete && c.kind == Kind::Chain)
        .collect();
    if chains.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = chains.iter().map(|c| c.name.as_str()).collect();
    tx.execute(
        "DELETE FROM pgsched.chain_steps WHERE chain = ANY($1)",
        &[&names],
    )
    .await
    .context("clearing chain steps")?;
    let mut steps = Vec::new();
    for c in &chains {
        let Some(d) = &c.desired else { continue };
        for (i, step) in d.spec["steps"].as_array().into_iter().flatten().enumerate() {
            let name = step["name"]
                .as_str()
                .map_or_else(|| format!("step-{}", i + 1), str::to_string);
            steps.push(json!({"chain": d.name, "position": i + 1, "name": name, "spec": step}));
        }
    }
    tx.execute(
        "INSERT INTO pgsched.chain_steps (chain, position, name, spec)
         SELECT r.chain, r.position, r.name, r.spec
           FROM jsonb_to_recordset($1::jsonb) AS r(chain text, position int, name text, spec jsonb)",
        &[&Value::Array(steps)],
    )
    .await
    .context("writing chain steps")?;
    Ok(())
}
