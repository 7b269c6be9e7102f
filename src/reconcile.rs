//! One reconcile: load the spec directory, compare it with the tables, check what would
//! change against the live schema, and (for `apply`) write the changes in one transaction
//! under the reconcile lock. `plan`, `apply` and the sidecar all go through here.
//!
//! Spec and check errors are an [`Outcome`], not an error: the only error is the database's
//! ([`StoreError`], which says what was being done), and then nothing was applied.

use crate::plan::{make_plan, Action, DesiredObject, Plan};
use crate::spec::{load_dir, Object, SpecError};
use crate::store::checks::{check_objects, CheckReport};
use crate::store::objects::{
    apply_changes, count_managed, lock_reconcile, read_actual, read_actual_named,
};
use crate::store::{migrations::migrate, Context, StoreError};
use std::collections::HashSet;
use std::path::Path;
use tokio_postgres::Client;

/// A plan with what the checks found.
#[derive(Debug)]
pub struct PlanReport {
    /// What an apply would change (or, for `Applied`, changed).
    pub plan: Plan,
    /// What checking the changes against the live schema found.
    pub checks: CheckReport,
}

impl PlanReport {
    /// Errors that stop an apply: bad SQL, missing tables, names taken by hand-made rows.
    pub fn has_errors(&self) -> bool {
        !self.checks.errors.is_empty() || !self.plan.conflicts.is_empty()
    }
}

/// How a reconcile ended, when the database did not fail.
#[derive(Debug)]
pub enum Outcome {
    /// The spec directory has errors: nothing was compared or changed.
    Invalid(Vec<SpecError>),
    /// A plan was made (and, for apply, written unless it had errors or was refused).
    Planned(PlanReport),
    /// Apply refused because it would delete every managed object.
    RefusedWipeOut(PlanReport),
    /// Apply wrote the plan.
    Applied(PlanReport),
}

fn desired_of(objects: &[&Object]) -> Vec<DesiredObject> {
    objects
        .iter()
        .map(|o| DesiredObject::from_object(o))
        .collect()
}

/// Limits a reconcile to the objects of some files: the names they declared before and
/// declare now. Objects outside it are neither compared nor changed (the periodic full
/// reconcile repairs their drift).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    /// Object names (of any kind) the changed files declared before or declare now.
    pub names: Vec<String>,
}

async fn read_scope(
    client: &impl tokio_postgres::GenericClient,
    partial: Option<&Partial>,
) -> Result<(Vec<crate::plan::ActualObject>, Option<usize>), StoreError> {
    match partial {
        None => Ok((read_actual(client).await?, None)),
        Some(p) => Ok((
            read_actual_named(client, &p.names).await?,
            Some(count_managed(client).await?),
        )),
    }
}

/// The plan over the scope; a partial plan counts every managed object for the wipe-out guard.
fn plan_in_scope(
    objects: &[&Object],
    actual: &[crate::plan::ActualObject],
    managed: Option<usize>,
) -> Plan {
    let mut plan = make_plan(&desired_of(objects), actual);
    if let Some(managed) = managed {
        plan.managed_before = managed;
    }
    plan
}

async fn checked_plan(
    client: &Client,
    dir: &Path,
    objects: &[&Object],
    partial: Option<&Partial>,
) -> Result<PlanReport, StoreError> {
    let (actual, managed) = read_scope(client, partial).await?;
    let plan = plan_in_scope(objects, &actual, managed);
    let changed: HashSet<(crate::spec::Kind, &str)> = plan
        .changes
        .iter()
        .filter(|c| c.action != Action::Delete)
        .map(|c| (c.kind, c.name.as_str()))
        .collect();
    let to_check: Vec<&Object> = objects
        .iter()
        .filter(|o| changed.contains(&(o.kind, o.name())))
        .copied()
        .collect();
    let checks = check_objects(client, &to_check, dir).await?;
    Ok(PlanReport { plan, checks })
}

/// The dry run: what `apply` would change. Migrates the schema (so there is something to
/// compare with) but changes no object.
pub async fn plan(client: &mut Client, dir: &Path) -> Result<Outcome, StoreError> {
    let loaded = load_dir(dir);
    if !loaded.is_valid() {
        return Ok(Outcome::Invalid(loaded.errors));
    }
    migrate(client).await?;
    let objects: Vec<&Object> = loaded.objects.iter().collect();
    Ok(Outcome::Planned(
        checked_plan(client, dir, &objects, None).await?,
    ))
}

/// Reconciles once: the plan, applied in one transaction. Nothing is written when the
/// directory has errors, a check fails, or the plan would delete every managed object
/// without `allow_empty`.
pub async fn apply(
    client: &mut Client,
    dir: &Path,
    allow_empty: bool,
) -> Result<Outcome, StoreError> {
    let loaded = load_dir(dir);
    if !loaded.is_valid() {
        return Ok(Outcome::Invalid(loaded.errors));
    }
    apply_objects(client, dir, &loaded.objects, allow_empty).await
}

/// Applies an already loaded, valid set of objects.
pub async fn apply_objects(
    client: &mut Client,
    dir: &Path,
    objects: &[Object],
    allow_empty: bool,
) -> Result<Outcome, StoreError> {
    let objects: Vec<&Object> = objects.iter().collect();
    apply_in_scope(client, dir, &objects, None, allow_empty).await
}

/// Applies valid objects: all of them (`partial` None), or those of a few changed files
/// (`objects` being the objects the files declare now, `partial` every name they declared
/// before or declare now), which costs a few rows instead of reading every object.
pub async fn apply_in_scope(
    client: &mut Client,
    dir: &Path,
    objects: &[&Object],
    partial: Option<&Partial>,
    allow_empty: bool,
) -> Result<Outcome, StoreError> {
    migrate(client).await?;
    // Checks run before the transaction: a failed PREPARE inside it would abort it.
    let report = checked_plan(client, dir, objects, partial).await?;
    if report.has_errors() {
        return Ok(Outcome::Planned(report));
    }
    if report.plan.is_empty() {
        return Ok(Outcome::Applied(report));
    }
    let tx = client.transaction().await.context("starting the apply")?;
    lock_reconcile(&tx).await?;
    // Compare again under the lock: another apply may have written in between.
    let (actual, managed) = read_scope(&tx, partial).await?;
    let plan = plan_in_scope(objects, &actual, managed);
    let report = PlanReport {
        plan,
        checks: report.checks,
    };
    if !report.plan.conflicts.is_empty() {
        return Ok(Outcome::Planned(report));
    }
    if report.plan.deletes_everything() && !allow_empty {
        return Ok(Outcome::RefusedWipeOut(report));
    }
    apply_changes(&tx, &report.plan).await?;
    tx.commit().await.context("committing the apply")?;
    for change in report.plan.changes.iter().filter(|c| c.drift) {
        tracing::warn!(object = %change.key(), "drift repaired: the row was changed in the database by hand; restored the spec files' version");
    }
    Ok(Outcome::Applied(report))
}
