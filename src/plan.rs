//! Desired (the spec directory) × actual (the tables) → a plan of creates, updates and
//! deletes, and its rendering as a readable diff or JSON. Pure: no database, no files.
//!
//! An object is compared on what the files own: its spec, its labels and the file it comes
//! from. Everything else in its row (generated key columns, executor state) follows from those
//! or belongs to the executor. A difference while the recorded spec hash still equals the
//! files' hash means someone edited the row by hand: that is drift, and the update puts the
//! files' version back.

use crate::spec::{Kind, Object};
use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};

/// An object as the files want it.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredObject {
    /// The object's kind: which table its row lives in.
    pub kind: Kind,
    /// `metadata.name`.
    pub name: String,
    /// The spec as stored: the JSON of the typed spec, defaults left out.
    pub spec: Value,
    /// `metadata.labels` as a JSON object (empty when none).
    pub labels: Value,
    /// The file it comes from, relative to the spec directory, with `/` separators.
    pub source_file: String,
    /// [`spec_hash`] of `spec` and `labels`.
    pub spec_hash: String,
}

impl DesiredObject {
    /// The stored form of a loaded object.
    pub fn from_object(object: &Object) -> Self {
        let spec = serde_json::to_value(&object.spec).expect("specs always serialise");
        let labels = serde_json::to_value(&object.metadata.labels).expect("labels serialise");
        let source_file = object.source.file.to_string_lossy().replace('\\', "/");
        let spec_hash = spec_hash(&spec, &labels);
        DesiredObject {
            kind: object.kind,
            name: object.metadata.name.clone(),
            spec,
            labels,
            source_file,
            spec_hash,
        }
    }
}

/// A managed object as its row says it is.
#[derive(Debug, Clone, PartialEq)]
pub struct ActualObject {
    /// Which table the row is in.
    pub kind: Kind,
    /// The row's name.
    pub name: String,
    /// The row's spec, as it is now (possibly edited by hand).
    pub spec: Value,
    /// The row's labels.
    pub labels: Value,
    /// The file recorded at the last apply; empty when the row has none.
    pub source_file: String,
    /// The hash recorded at the last apply; empty when the row has none.
    pub spec_hash: String,
    /// Bumped each time an apply changed the spec from the files.
    pub generation: i64,
    /// False for a row someone inserted by hand: pgsched never changes or deletes it.
    pub managed: bool,
}

/// The hash recorded with each object: of its spec and labels, in canonical JSON (sorted keys).
pub fn spec_hash(spec: &Value, labels: &Value) -> String {
    let canonical = serde_json::to_string(&json!({"spec": spec, "labels": labels}))
        .expect("a JSON value always serialises");
    let digest = Sha256::digest(canonical.as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// What a change does to an object's row; serialised as `create`, `update` or `delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The files declare an object that has no row yet.
    Create,
    /// The row differs from the files (or drifted): the files' version is written.
    Update,
    /// A managed row whose object the files no longer declare.
    Delete,
}

/// One object's change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// Create, update or delete.
    pub action: Action,
    /// The object's kind.
    pub kind: Kind,
    /// The object's name.
    pub name: String,
    /// The row's view before (None for a create).
    pub before: Option<Value>,
    /// The row's view after (None for a delete).
    pub after: Option<Value>,
    /// The row was edited by hand: the files did not change, the database did.
    pub drift: bool,
    /// Generation after the change: grows when the files change the spec, not on drift repair.
    pub generation: i64,
    /// What to write when applying; `None` for a delete. Not part of the JSON plan.
    #[serde(skip)]
    pub desired: Option<DesiredObject>,
}

impl Change {
    /// `job/nightly-vacuum`, as in plan headers.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind.slug(), self.name)
    }
}

/// A name taken by a row pgsched did not create.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conflict {
    /// The kind both the files and the row have.
    pub kind: Kind,
    /// The name both use.
    pub name: String,
    /// The file that declares it, relative to the spec directory.
    pub source_file: String,
}

/// Everything an apply would do, and what stops it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    /// Connections created first and deleted last (jobs refer to them), then by kind and name.
    pub changes: Vec<Change>,
    /// Objects the files declare whose names belong to rows created by hand.
    pub conflicts: Vec<Conflict>,
    /// How many managed objects exist now (for the wipe-out guard).
    pub managed_before: usize,
}

/// How many objects a plan creates, updates and deletes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Creates.
    pub add: usize,
    /// Updates, drift repairs included.
    pub change: usize,
    /// Deletes.
    pub delete: usize,
}

impl Plan {
    /// The counts for the summary line.
    pub fn summary(&self) -> Summary {
        let count = |a: Action| self.changes.iter().filter(|c| c.action == a).count();
        Summary {
            add: count(Action::Create),
            change: count(Action::Update),
            delete: count(Action::Delete),
        }
    }

    /// Whether there is no change to apply (conflicts may still be there).
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// True when applying would delete every managed object (an empty or wrongly mounted
    /// directory): refused unless the user says `--allow-empty`.
    pub fn deletes_everything(&self) -> bool {
        self.managed_before > 0 && self.summary().delete == self.managed_before
    }
}

/// The view of an object that plans show and compare: what the files own.
pub fn view(spec: &Value, labels: &Value, source_file: &str) -> Value {
    let mut map = Map::new();
    if labels.as_object().is_some_and(|l| !l.is_empty()) {
        map.insert("labels".into(), labels.clone());
    }
    map.insert("source".into(), Value::String(source_file.to_string()));
    map.insert("spec".into(), spec.clone());
    Value::Object(map)
}

/// Compares the files with the tables.
pub fn make_plan(desired: &[DesiredObject], actual: &[ActualObject]) -> Plan {
    let by_key: HashMap<(Kind, &str), &ActualObject> = actual
        .iter()
        .map(|a| ((a.kind, a.name.as_str()), a))
        .collect();
    let mut plan = Plan {
        managed_before: actual.iter().filter(|a| a.managed).count(),
        ..Plan::default()
    };
    let mut wanted: HashSet<(Kind, &str)> = HashSet::with_capacity(desired.len());
    for d in desired {
        wanted.insert((d.kind, d.name.as_str()));
        let after = view(&d.spec, &d.labels, &d.source_file);
        match by_key.get(&(d.kind, d.name.as_str())) {
            None => plan.changes.push(Change {
                action: Action::Create,
                kind: d.kind,
                name: d.name.clone(),
                before: None,
                after: Some(after),
                drift: false,
                generation: 1,
                desired: Some(d.clone()),
            }),
            Some(a) if !a.managed => plan.conflicts.push(Conflict {
                kind: d.kind,
                name: d.name.clone(),
                source_file: d.source_file.clone(),
            }),
            Some(a) => {
                let before = view(&a.spec, &a.labels, &a.source_file);
                if before != after || a.spec_hash != d.spec_hash {
                    let files_changed = a.spec_hash != d.spec_hash;
                    plan.changes.push(Change {
                        action: Action::Update,
                        kind: d.kind,
                        name: d.name.clone(),
                        before: Some(before),
                        after: Some(after),
                        // The files did not change what the row was made from, yet the row
                        // differs: edited by hand. A moved file is not drift.
                        drift: !files_changed && (a.spec != d.spec || a.labels != d.labels),
                        generation: if files_changed {
                            a.generation + 1
                        } else {
                            a.generation
                        },
                        desired: Some(d.clone()),
                    });
                }
            }
        }
    }
    for a in actual {
        if a.managed && !wanted.contains(&(a.kind, a.name.as_str())) {
            plan.changes.push(Change {
                action: Action::Delete,
                kind: a.kind,
                name: a.name.clone(),
                before: Some(view(&a.spec, &a.labels, &a.source_file)),
                after: None,
                drift: false,
                generation: a.generation,
                desired: None,
            });
        }
    }
    // Connections first on create (jobs reference them), last on delete; then by name.
    plan.changes.sort_by(|x, y| {
        let order = |c: &Change| match (c.action, c.kind) {
            (Action::Delete, Kind::Connection) => 2,
            (_, Kind::Connection) => 0,
            _ => 1,
        };
        (order(x), x.kind, &x.name).cmp(&(order(y), y.kind, &y.name))
    });
    plan
}

/// Renders a value as YAML for the diff; keys are sorted (serde_json's maps are), so equal
/// objects render equally.
pub fn to_yaml(value: &Value) -> String {
    serde_saphyr::to_string(value).unwrap_or_else(|_| format!("{value:#}\n"))
}

/// Colours for a terminal; empty strings when output is not one.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// Before created objects and added lines.
    pub add: &'static str,
    /// Before deleted objects, removed lines and conflicts.
    pub delete: &'static str,
    /// Before updated objects.
    pub change: &'static str,
    /// Before hunk headers and notes.
    pub dim: &'static str,
    /// After each coloured part.
    pub reset: &'static str,
}

impl Style {
    /// No escape codes: for pipes, files and `NO_COLOR`.
    pub const PLAIN: Style = Style {
        add: "",
        delete: "",
        change: "",
        dim: "",
        reset: "",
    };
    /// ANSI colours: green, red, yellow and dim.
    pub const COLOR: Style = Style {
        add: "\x1b[32m",
        delete: "\x1b[31m",
        change: "\x1b[33m",
        dim: "\x1b[2m",
        reset: "\x1b[0m",
    };
}

/// The readable plan: a header per object (`+ job/x`, `~ job/x`, `- job/x`), the object's
/// YAML (whole for creates and deletes, a unified diff for updates), and the summary line.
pub fn render_text(plan: &Plan, style: Style) -> String {
    let mut out = String::new();
    for change in &plan.changes {
        let (sign, colour) = match change.action {
            Action::Create => ("+", style.add),
            Action::Update => ("~", style.change),
            Action::Delete => ("-", style.delete),
        };
        out.push_str(&format!("{colour}{sign} {}{}", change.key(), style.reset));
        if change.drift {
            out.push_str(&format!(
                "  {}(drift: changed in the database by hand; apply restores the files' version){}",
                style.dim, style.reset
            ));
        }
        out.push('\n');
        let before = change.before.as_ref().map(to_yaml).unwrap_or_default();
        let after = change.after.as_ref().map(to_yaml).unwrap_or_default();
        match change.action {
            Action::Create => push_lines(&mut out, &after, "+", style.add, style.reset),
            Action::Delete => push_lines(&mut out, &before, "-", style.delete, style.reset),
            Action::Update => {
                let diff = similar::TextDiff::from_lines(&before, &after);
                for hunk in diff.unified_diff().context_radius(3).iter_hunks() {
                    out.push_str(&format!(
                        "    {}{}{}\n",
                        style.dim,
                        hunk.header(),
                        style.reset
                    ));
                    for op in hunk.iter_changes() {
                        let (sign, colour) = match op.tag() {
                            similar::ChangeTag::Delete => ("-", style.delete),
                            similar::ChangeTag::Insert => ("+", style.add),
                            similar::ChangeTag::Equal => (" ", ""),
                        };
                        let reset = if colour.is_empty() { "" } else { style.reset };
                        let line = op.value().trim_end_matches('\n');
                        out.push_str(&format!("    {colour}{sign} {line}{reset}\n"));
                    }
                }
            }
        }
        out.push('\n');
    }
    for conflict in &plan.conflicts {
        out.push_str(&format!(
            "{}! {}/{}{}: a row with this name exists in the database but was not created from files; pgsched will not take it over (rename the object in {} or delete the row)\n\n",
            style.delete,
            conflict.kind.slug(),
            conflict.name,
            style.reset,
            conflict.source_file
        ));
    }
    let s = plan.summary();
    if plan.is_empty() && plan.conflicts.is_empty() {
        out.push_str("No changes. The database matches the spec directory.\n");
    } else {
        out.push_str(&format!(
            "Plan: {} to add, {} to change, {} to delete.\n",
            s.add, s.change, s.delete
        ));
    }
    out
}

fn push_lines(out: &mut String, text: &str, sign: &str, colour: &str, reset: &str) {
    for line in text.lines() {
        out.push_str(&format!("    {colour}{sign} {line}{reset}\n"));
    }
}

/// The plan for machines (`--output json`).
pub fn render_json(plan: &Plan, notes: &BTreeMap<String, Value>) -> Value {
    json!({
        "changes": plan.changes.iter().map(|c| json!({
            "action": c.action,
            "kind": c.kind.as_str(),
            "name": c.name,
            "drift": c.drift,
            "generation": c.generation,
            "before": c.before,
            "after": c.after,
        })).collect::<Vec<_>>(),
        "conflicts": plan.conflicts,
        "summary": plan.summary(),
        "notes": notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(kind: Kind, name: &str, spec: Value) -> DesiredObject {
        let labels = json!({});
        DesiredObject {
            kind,
            name: name.into(),
            spec_hash: spec_hash(&spec, &labels),
            spec,
            labels,
            source_file: "jobs.yaml".into(),
        }
    }

    fn actual_of(d: &DesiredObject, generation: i64) -> ActualObject {
        ActualObject {
            kind: d.kind,
            name: d.name.clone(),
            spec: d.spec.clone(),
            labels: d.labels.clone(),
            source_file: d.source_file.clone(),
            spec_hash: d.spec_hash.clone(),
            generation,
            managed: true,
        }
    }

    #[test]
    fn creates_updates_deletes_and_no_ops() {
        let a = desired(Kind::Job, "a", json!({"sql": "SELECT 1"}));
        let b = desired(Kind::Job, "b", json!({"sql": "SELECT 2"}));
        let b_old = desired(Kind::Job, "b", json!({"sql": "SELECT 1"}));
        let c = desired(Kind::Timeout, "c", json!({"table": "t"}));
        let actual = vec![actual_of(&b_old, 3), actual_of(&c, 1)];
        let plan = make_plan(&[a.clone(), b.clone()], &actual);
        let actions: Vec<_> = plan
            .changes
            .iter()
            .map(|c| (c.action, c.name.as_str()))
            .collect();
        assert_eq!(
            actions,
            vec![
                (Action::Create, "a"),
                (Action::Update, "b"),
                (Action::Delete, "c")
            ]
        );
        assert_eq!(plan.changes[1].generation, 4);
        assert!(!plan.changes[1].drift);
        assert_eq!(
            plan.summary(),
            Summary {
                add: 1,
                change: 1,
                delete: 1
            }
        );

        let same = make_plan(std::slice::from_ref(&a), &[actual_of(&a, 1)]);
        assert!(same.is_empty());
    }

    #[test]
    fn a_hand_edit_is_drift_and_keeps_the_generation() {
        let a = desired(
            Kind::Job,
            "a",
            json!({"schedule": "0 2 * * *", "sql": "SELECT 1"}),
        );
        let mut edited = actual_of(&a, 5);
        edited.spec = json!({"schedule": "* * * * *", "sql": "SELECT 1"});
        let plan = make_plan(&[a], &[edited]);
        assert_eq!(plan.changes.len(), 1);
        assert!(plan.changes[0].drift);
        assert_eq!(plan.changes[0].generation, 5);
        let text = render_text(&plan, Style::PLAIN);
        assert!(text.contains("~ job/a"), "{text}");
        assert!(text.contains("drift"), "{text}");
        assert!(
            text.contains("-   schedule: '* * * * *'") || text.contains("schedule: \"* * * * *\""),
            "{text}"
        );
    }

    #[test]
    fn moving_an_object_to_another_file_is_an_update_not_drift() {
        let a = desired(Kind::Job, "a", json!({"sql": "SELECT 1"}));
        let mut moved = actual_of(&a, 2);
        moved.source_file = "old.yaml".into();
        let plan = make_plan(&[a], &[moved]);
        assert_eq!(plan.changes[0].action, Action::Update);
        assert!(!plan.changes[0].drift);
        assert_eq!(plan.changes[0].generation, 2);
    }

    #[test]
    fn rows_created_by_hand_are_never_touched() {
        let a = desired(Kind::Job, "a", json!({"sql": "SELECT 1"}));
        let mut by_hand = actual_of(&a, 1);
        by_hand.managed = false;
        by_hand.spec = json!({"sql": "SELECT 42"});
        let other_by_hand = ActualObject {
            name: "z".into(),
            ..by_hand.clone()
        };
        let plan = make_plan(&[a], &[by_hand, other_by_hand]);
        assert!(plan.changes.is_empty());
        assert_eq!(plan.conflicts.len(), 1);
        assert_eq!(plan.managed_before, 0);
    }

    #[test]
    fn the_wipe_out_guard_sees_every_managed_object_deleted() {
        let a = desired(Kind::Job, "a", json!({"sql": "SELECT 1"}));
        let b = desired(Kind::Job, "b", json!({"sql": "SELECT 1"}));
        let actual = vec![actual_of(&a, 1), actual_of(&b, 1)];
        assert!(make_plan(&[], &actual).deletes_everything());
        assert!(!make_plan(std::slice::from_ref(&a), &actual).deletes_everything());
        // Replacing everything with something else is a wipe-out too.
        let c = desired(Kind::Job, "c", json!({"sql": "SELECT 1"}));
        assert!(make_plan(&[c], &actual).deletes_everything());
        assert!(!make_plan(&[], &[]).deletes_everything());
    }

    #[test]
    fn connections_are_created_first_and_deleted_last() {
        let conn = desired(Kind::Connection, "db2", json!({"url": "postgres://x@h/db"}));
        let job = desired(
            Kind::Job,
            "a",
            json!({"sql": "SELECT 1", "database": "db2"}),
        );
        let plan = make_plan(&[job.clone(), conn.clone()], &[]);
        assert_eq!(plan.changes[0].kind, Kind::Connection);
        let plan = make_plan(&[], &[actual_of(&job, 1), actual_of(&conn, 1)]);
        assert_eq!(plan.changes.last().unwrap().kind, Kind::Connection);
    }

    #[test]
    fn text_rendering_has_headers_bodies_and_summary() {
        let a = desired(Kind::Job, "a", json!({"sql": "SELECT 1"}));
        let text = render_text(&make_plan(std::slice::from_ref(&a), &[]), Style::PLAIN);
        assert!(text.starts_with("+ job/a\n"), "{text}");
        assert!(text.contains("    + source: jobs.yaml"), "{text}");
        assert!(
            text.ends_with("Plan: 1 to add, 0 to change, 0 to delete.\n"),
            "{text}"
        );
        let none = render_text(
            &make_plan(std::slice::from_ref(&a), &[actual_of(&a, 1)]),
            Style::PLAIN,
        );
        assert!(none.contains("No changes"), "{none}");
        let coloured = render_text(&make_plan(&[a], &[]), Style::COLOR);
        assert!(coloured.contains("\x1b[32m+ job/a"), "{coloured}");
    }

    #[test]
    fn json_rendering_counts() {
        let a = desired(Kind::Job, "a", json!({"sql": "SELECT 1"}));
        let v = render_json(&make_plan(&[a], &[]), &BTreeMap::new());
        assert_eq!(v["summary"]["add"], 1);
        assert_eq!(v["changes"][0]["action"], "create");
        assert_eq!(v["changes"][0]["kind"], "Job");
    }

    #[test]
    fn hashes_ignore_key_order() {
        let x = spec_hash(&json!({"a": 1, "b": 2}), &json!({}));
        let y = spec_hash(&json!({"b": 2, "a": 1}), &json!({}));
        assert_eq!(x, y);
        assert_ne!(x, spec_hash(&json!({"a": 1, "b": 3}), &json!({})));
    }
}
