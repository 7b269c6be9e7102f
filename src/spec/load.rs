//! Finding and reading spec files: every `*.yaml` / `*.yml` below the directory, recursively,
//! following symlinks (git-sync and ConfigMap mounts swap whole directories by symlink), and
//! skipping hidden names (`..data`, `.git`) and our own `*.status.yaml` files.

use super::document::{object_from_document, Object};
use super::error::SpecError;
use super::validate::{shown_path, validate_all, Located};
use super::yaml::parse_documents;
use std::path::{Path, PathBuf};

/// The result of loading a spec directory: the objects, every error, and the files read (so
/// status files can be written for files that failed too).
#[derive(Debug, Default)]
pub struct Loaded {
    pub objects: Vec<Object>,
    pub errors: Vec<SpecError>,
    /// Relative paths of every spec file found, sorted.
    pub files: Vec<PathBuf>,
}

impl Loaded {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }
    /// Relative paths of the files that have at least one error.
    pub fn files_with_errors(&self, dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .files
            .iter()
            .filter(|f| {
                let shown = shown_path(dir, f);
                self.errors.iter().any(|e| e.file == shown)
            })
            .cloned()
            .collect();
        files.dedup();
        files
    }
}

/// Is this a spec file by its name? Hidden names and status files are not.
pub fn is_spec_file_name(name: &str) -> bool {
    !name.starts_with('.')
        && (name.ends_with(".yaml") || name.ends_with(".yml"))
        && !name.ends_with(".status.yaml")
        && !name.ends_with(".status.yml")
}

/// Lists spec files below `dir` (relative paths, sorted), with errors for what could not be
/// walked. A missing directory is an error, never an empty set: an empty set would prune.
pub fn find_spec_files(dir: &Path) -> (Vec<PathBuf>, Vec<SpecError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            errors.push(SpecError::new(
                dir,
                "not a directory; --dir must name the spec directory",
            ));
            return (files, errors);
        }
        Err(e) => {
            errors.push(SpecError::new(
                dir,
                format!("cannot read the spec directory: {e}"),
            ));
            return (files, errors);
        }
    }
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        match entry {
            Ok(entry) => {
                if entry.file_type().is_file()
                    && is_spec_file_name(&entry.file_name().to_string_lossy())
                {
                    let relative = entry.path().strip_prefix(dir).unwrap_or(entry.path());
                    files.push(relative.to_path_buf());
                }
            }
            Err(e) => {
                let path = e
                    .path()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| dir.to_path_buf());
                let is_spec = path
                    .file_name()
                    .is_some_and(|n| is_spec_file_name(&n.to_string_lossy()));
                // A dangling link or unreadable entry that is not a spec file is no concern of
                // ours; one that is (or a loop, or an unreadable directory) must hold the apply.
                if is_spec || e.loop_ancestor().is_some() || e.depth() == 0 || path.is_dir() {
                    errors.push(SpecError::new(path, format!("cannot read: {e}")));
                }
            }
        }
    }
    files.sort();
    (files, errors)
}

/// Loads and validates every spec file below `dir`.
pub fn load_dir(dir: &Path) -> Loaded {
    let (files, mut errors) = find_spec_files(dir);
    let mut texts = Vec::with_capacity(files.len());
    for relative in &files {
        let shown = shown_path(dir, relative);
        match std::fs::read(dir.join(relative)) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => texts.push((relative.clone(), text)),
                Err(_) => errors.push(SpecError::new(shown, "not UTF-8 text")),
            },
            Err(e) => errors.push(SpecError::new(shown, format!("cannot read: {e}"))),
        }
    }
    let mut loaded = load_texts(dir, &texts);
    errors.append(&mut loaded.errors);
    sort_errors(&mut errors);
    loaded.errors = errors;
    loaded.files = files;
    loaded
}

/// Parses and validates spec texts given as (relative path, content); `dir` only shapes the
/// file names shown in errors. Used by `load_dir` and by tests that need no files.
pub fn load_texts(dir: &Path, texts: &[(PathBuf, String)]) -> Loaded {
    // YAML parsing dominates loading a large directory; files are independent, so they are
    // parsed on every core.
    let chunks = parallel_chunks(texts, |chunk| {
        let mut errors = Vec::new();
        let mut parsed: Vec<(Object, PathBuf)> = Vec::new();
        for (relative, text) in chunk {
            let shown = shown_path(dir, relative);
            match parse_documents(text) {
                Err(e) => errors.push(
                    SpecError::new(&shown, format!("invalid YAML: {}", e.message)).at(e.position),
                ),
                Ok(docs) => {
                    for doc in docs {
                        match object_from_document(&doc, &shown, relative) {
                            Ok(object) => parsed.push((object, shown.clone())),
                            Err(mut e) => errors.append(&mut e),
                        }
                    }
                }
            }
        }
        (parsed, errors)
    });
    let mut errors = Vec::new();
    let mut parsed = Vec::new();
    for (mut p, mut e) in chunks {
        parsed.append(&mut p);
        errors.append(&mut e);
    }
    let located: Vec<Located<'_>> = parsed
        .iter()
        .map(|(object, shown)| Located {
            object,
            doc: &object.doc,
            shown,
        })
        .collect();
    errors.extend(validate_all(&located));
    drop(located);
    sort_errors(&mut errors);
    Loaded {
        objects: parsed.into_iter().map(|(o, _)| o).collect(),
        errors,
        files: texts.iter().map(|(p, _)| p.clone()).collect(),
    }
}

/// Runs `work` over contiguous chunks of `items` on scoped threads, one per core, and returns
/// the results in the order of the chunks. Small inputs stay on the calling thread.
pub(crate) fn parallel_chunks<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(&[T]) -> R + Sync,
) -> Vec<R> {
    const MIN_PER_THREAD: usize = 64;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len() / MIN_PER_THREAD)
        .max(1);
    if threads == 1 {
        return vec![work(items)];
    }
    let size = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(size)
            .map(|chunk| scope.spawn(|| work(chunk)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a spec loading thread panicked"))
            .collect()
    })
}

/// Reading order: by file, then line. The sort is stable, so errors without a line keep
/// the order they were found in.
fn sort_errors(errors: &mut [SpecError]) {
    errors.sort_by(|a, b| a.file.cmp(&b.file).then(a.line().cmp(&b.line())));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_file_names() {
        assert!(is_spec_file_name("a.yaml"));
        assert!(is_spec_file_name("a.yml"));
        assert!(!is_spec_file_name("a.status.yaml"));
        assert!(!is_spec_file_name(".hidden.yaml"));
        assert!(!is_spec_file_name("a.json"));
    }
}
