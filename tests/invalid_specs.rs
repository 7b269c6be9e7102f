//! Every file under tests/fixtures/invalid/ is a broken spec that must be rejected with a
//! located error. Each fixture states what it expects in header comments:
//!
//! ```yaml
//! # expect-line: 9
//! # expect-path: spec.retries.limit
//! # expect-message: invalid type
//! # expect-hint: did you mean `retries`?
//! ```
//!
//! `expect-line` and `expect-message` are required; the others are checked when present. The
//! fixture is loaded on its own from a directory, the way `pgsched validate` loads it, and one
//! of the reported errors must name the fixture's file and match every expectation.

use pgsched::spec::load_dir;
use std::path::{Path, PathBuf};

struct Expectation {
    line: usize,
    path: Option<String>,
    message: String,
    hint: Option<String>,
}

fn expectation(text: &str, file: &Path) -> Expectation {
    let field = |name: &str| {
        text.lines()
            .filter_map(|l| l.strip_prefix(&format!("# expect-{name}:")))
            .map(|v| v.trim().to_string())
            .next()
    };
    Expectation {
        line: field("line")
            .unwrap_or_else(|| panic!("{}: no `# expect-line:` header", file.display()))
            .parse()
            .expect("expect-line is a number"),
        path: field("path"),
        message: field("message")
            .unwrap_or_else(|| panic!("{}: no `# expect-message:` header", file.display())),
        hint: field("hint"),
    }
}

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_invalid_fixture_is_rejected_with_file_line_and_field() {
    let files = fixtures("invalid");
    assert!(files.len() >= 30, "only {} invalid fixtures", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let expect = expectation(&text, file);
        let dir = tempfile::tempdir().unwrap();
        let name = file.file_name().unwrap();
        std::fs::write(dir.path().join(name), &text).unwrap();
        let loaded = load_dir(dir.path());
        let shown = dir.path().join(name);
        let matching = loaded.errors.iter().find(|e| {
            e.file == shown
                && e.line() == Some(expect.line)
                && e.message.contains(&expect.message)
                && expect
                    .path
                    .as_ref()
                    .is_none_or(|p| e.path.as_ref().is_some_and(|ep| &ep.to_string() == p))
                && expect
                    .hint
                    .as_ref()
                    .is_none_or(|h| e.hint.as_ref().is_some_and(|eh| eh.contains(h.as_str())))
        });
        if matching.is_none() {
            failures.push(format!(
                "{}: expected line {} path {:?} message {:?} hint {:?}; got:\n{}",
                name.to_string_lossy(),
                expect.line,
                expect.path,
                expect.message,
                expect.hint,
                loaded
                    .errors
                    .iter()
                    .map(|e| format!("    {e}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
        // The rendered message always starts with the file name and line.
        for e in &loaded.errors {
            if e.position.is_some() {
                assert!(e.to_string().starts_with(&format!("{}:", shown.display())));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_valid_fixture_and_example_loads() {
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/specs")];
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid"));
    for dir in dirs {
        let loaded = load_dir(&dir);
        assert!(
            loaded.is_valid(),
            "{}:\n{}",
            dir.display(),
            loaded
                .errors
                .iter()
                .map(std::string::ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            !loaded.objects.is_empty(),
            "{} has no objects",
            dir.display()
        );
    }
}
