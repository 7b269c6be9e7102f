//! Building entries from views and rows, their text, and writing them to a directory.

use super::*;
use crate::store::report::LastRun;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn row(kind: &str, name: &str, hash: &str, file: &str) -> ObjectStatus {
    ObjectStatus {
        kind: kind.into(),
        name: name.into(),
        schedule: Some("0 2 * * *".into()),
        suspended: false,
        generation: 3,
        source_file: Some(file.into()),
        spec_hash: Some(hash.into()),
        managed: true,
        next_run_at: Some(t("2026-11-23T02:00:00Z")),
        active: 0,
        succeeded: 212,
        failed: 3,
        skipped: 0,
        last_run: Some(LastRun {
            id: 8812,
            status: "succeeded".into(),
            attempt: 1,
            started_at: Some(t("2026-11-22T02:00:00Z")),
            finished_at: Some(t("2026-11-22T02:00:01Z")),
            duration_ms: Some(812),
            worker: Some("db-1/4711".into()),
            error: None,
        }),
        last_successful_at: Some(t("2026-11-22T02:00:01Z")),
        last_scheduled_at: Some(t("2026-11-22T02:00:00Z")),
    }
}

fn view(file: &str, objects: &[(Kind, &str, &str)]) -> DirView {
    let mut v = DirView {
        files: vec![PathBuf::from(file)],
        ..Default::default()
    };
    std::sync::Arc::make_mut(&mut v.objects).insert(
        file.into(),
        objects
            .iter()
            .map(|(k, n, h)| FileObject {
                kind: *k,
                name: n.to_string(),
                spec_hash: h.to_string(),
            })
            .collect(),
    );
    v
}

const NOW: &str = "2026-11-22T10:00:00Z";

#[test]
fn a_reconciled_job_carries_its_runs() {
    let v = view("jobs/cleanup.yaml", &[(Kind::Job, "nightly-vacuum", "h1")]);
    let rows = [row("Job", "nightly-vacuum", "h1", "jobs/cleanup.yaml")];
    let mut tr = Transitions::new();
    let files = build(&v, &rows, &LastReconcile::Applied, &mut tr, t(NOW));
    let entries = &files[Path::new("jobs/cleanup.yaml")];
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.conditions[0].status, "True");
    assert_eq!(e.conditions[0].reason, "Reconciled");
    assert_eq!(e.conditions[0].observed_generation, Some(3));
    assert_eq!(
        e.next_schedule_time.as_deref(),
        Some("2026-11-23T02:00:00Z")
    );
    assert_eq!(e.totals.as_ref().unwrap().succeeded, 212);
    assert_eq!(e.last_run.as_ref().unwrap().duration_ms, Some(812));
    let text = render(entries);
    assert!(text.starts_with(HEADER));
    assert!(
        text.contains("status: \"True\"") || text.contains("status: 'True'"),
        "{text}"
    );
    assert!(
        text.contains("lastTransitionTime: 2026-11-22T10:00:00Z")
            || text.contains("lastTransitionTime: \"2026-11-22T10:00:00Z\""),
        "{text}"
    );
    // What we write, we read back the same (for the transition times after a restart).
    assert_eq!(parse(&text).unwrap(), *entries);
}

#[test]
fn an_unchanged_condition_keeps_its_time_and_a_change_moves_it() {
    let v = view("a.yaml", &[(Kind::Job, "a", "h1")]);
    let rows = [row("Job", "a", "h1", "a.yaml")];
    let mut tr = Transitions::new();
    build(&v, &rows, &LastReconcile::Applied, &mut tr, t(NOW));
    let later = build(
        &v,
        &rows,
        &LastReconcile::Applied,
        &mut tr,
        t("2026-11-22T11:00:00Z"),
    );
    assert_eq!(
        later[Path::new("a.yaml")][0].conditions[0].last_transition_time,
        NOW
    );
    let edited = view("a.yaml", &[(Kind::Job, "a", "h2")]);
    let pending = build(
        &edited,
        &rows,
        &LastReconcile::Pending,
        &mut tr,
        t("2026-11-22T12:00:00Z"),
    );
    let c = &pending[Path::new("a.yaml")][0].conditions[0];
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Pending"));
    assert_eq!(c.last_transition_time, "2026-11-22T12:00:00Z");
    assert_eq!(c.observed_generation, None);
}

#[test]
fn a_broken_file_lists_its_last_good_objects_as_not_ready() {
    let mut v = view("a.yaml", &[]);
    std::sync::Arc::make_mut(&mut v.objects).clear();
    v.errors.insert(
        "a.yaml".into(),
        vec!["a.yaml:4:3: spec.schedule: not a cron expression".into()],
    );
    let rows = [row("Job", "a", "h1", "a.yaml")];
    let files = build(
        &v,
        &rows,
        &LastReconcile::Invalid,
        &mut Transitions::new(),
        t(NOW),
    );
    let e = &files[Path::new("a.yaml")][0];
    assert_eq!(e.name, "a");
    assert_eq!(e.conditions[0].reason, "InvalidSpec");
    assert!(
        e.conditions[0].message.contains("a.yaml:4:3"),
        "{}",
        e.conditions[0].message
    );
    // Its last applied state still runs: the runs are still reported.
    assert!(e.last_run.is_some());
}

#[test]
fn a_file_that_never_parsed_gets_one_entry() {
    let mut v = view("new.yaml", &[]);
    v.errors
        .insert("new.yaml".into(), vec!["new.yaml:1:1: invalid YAML".into()]);
    let files = build(
        &v,
        &[],
        &LastReconcile::Invalid,
        &mut Transitions::new(),
        t(NOW),
    );
    let e = &files[Path::new("new.yaml")][0];
    assert_eq!((e.kind.as_str(), e.name.as_str()), ("File", "new.yaml"));
    assert_eq!(e.conditions[0].status, "False");
}

#[test]
fn a_good_file_is_blocked_by_a_broken_one() {
    let mut v = view("good.yaml", &[(Kind::Job, "new-job", "h9")]);
    v.files.push("bad.yaml".into());
    v.errors
        .insert("bad.yaml".into(), vec!["bad.yaml:2:1: oops".into()]);
    let files = build(
        &v,
        &[],
        &LastReconcile::Invalid,
        &mut Transitions::new(),
        t(NOW),
    );
    let c = &files[Path::new("good.yaml")][0].conditions[0];
    assert_eq!(c.reason, "Blocked");
    assert!(c.message.contains("bad.yaml"));
}

#[test]
fn check_failures_name_the_object_file() {
    let v = view("a.yaml", &[(Kind::Job, "a", "h1")]);
    let mut by_file = HashMap::new();
    by_file.insert(
        PathBuf::from("a.yaml"),
        vec!["a.yaml:7:5: spec.sql: relation \"nope\" does not exist".to_string()],
    );
    let files = build(
        &v,
        &[],
        &LastReconcile::ChecksFailed(by_file),
        &mut Transitions::new(),
        t(NOW),
    );
    let c = &files[Path::new("a.yaml")][0].conditions[0];
    assert_eq!(c.reason, "CheckFailed");
    assert!(c.message.contains("nope"));
}

#[test]
fn a_hand_made_row_with_the_same_name_is_reported() {
    let v = view("a.yaml", &[(Kind::Job, "a", "h1")]);
    let mut r = row("Job", "a", "other", "");
    r.managed = false;
    let files = build(
        &v,
        &[r],
        &LastReconcile::Applied,
        &mut Transitions::new(),
        t(NOW),
    );
    assert_eq!(
        files[Path::new("a.yaml")][0].conditions[0].reason,
        "NameTaken"
    );
}

#[test]
fn status_paths() {
    assert_eq!(
        status_path_of(Path::new("jobs/cleanup.yaml")),
        PathBuf::from("jobs/cleanup.status.yaml")
    );
    assert_eq!(
        status_path_of(Path::new("a.yml")),
        PathBuf::from("a.status.yaml")
    );
}

#[test]
fn writing_only_when_the_content_changes_and_removing_what_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = StatusWriter::new(dir.path(), None);
    let v = view("sub/a.yaml", &[(Kind::Job, "a", "h1")]);
    let rows = [row("Job", "a", "h1", "sub/a.yaml")];
    let r = w.update(&v, &rows, &LastReconcile::Applied, t(NOW));
    assert_eq!((r.written, r.unchanged), (1, 0));
    let path = dir.path().join("sub/a.status.yaml");
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    let r = w.update(
        &v,
        &rows,
        &LastReconcile::Applied,
        t("2026-11-22T11:00:00Z"),
    );
    assert_eq!((r.written, r.unchanged), (0, 1));
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        before
    );
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let empty = DirView::default();
    let r = w.update(&empty, &[], &LastReconcile::Applied, t(NOW));
    assert_eq!(r.removed, 1);
    assert!(!path.exists());
}

#[test]
fn a_read_only_spec_directory_points_to_status_dir() {
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::write(ro.join("a.yaml"), "").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(ro.join("probe"), "").is_ok() {
        // Root ignores permissions: nothing to test here.
        let _ = std::fs::remove_file(ro.join("probe"));
        return;
    }
    let mut w = StatusWriter::new(&ro, None);
    let r = w.update(
        &view("a.yaml", &[(Kind::Job, "a", "h1")]),
        &[],
        &LastReconcile::Pending,
        t(NOW),
    );
    let e = r.error.unwrap();
    assert!(e.contains("--status-dir"), "{e}");
    let mut w = StatusWriter::new(&ro, Some(&dir.path().join("status")));
    let r = w.update(
        &view("a.yaml", &[(Kind::Job, "a", "h1")]),
        &[],
        &LastReconcile::Pending,
        t(NOW),
    );
    assert_eq!((r.written, r.error), (1, None));
}
