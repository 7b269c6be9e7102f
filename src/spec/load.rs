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
    /// Every object that parsed, whether or not checks on it failed.
    pub objects: Vec<Object>,
    /// Every problem found, in every file; empty means the directory may be applied.
    pub errors: Vec<SpecError>,
    /// Relative paths of every spec file found, sorted.
    pub files: Vec<PathBuf>,
}

impl Loaded {
    /// Whether no error was found at all.
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
        && !is_status_file_name(name)
}

/// Is this one of pgsched's status files by its name: `NAME.status.yaml` (or `.yml`) beside a
/// spec (see [`crate::status`]), or the temporary file one is written through
/// (`.NAME.status.yaml.PID.tmp`)? Neither is a spec, nor a change of the specs.
pub fn is_status_file_name(name: &str) -> bool {
    name.ends_with(".status.yaml")
        || name.ends_with(".status.yml")
        || (name.starts_with('.') && name.ends_with(".tmp") && name.contains(".status."))
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
                    .map_or_else(|| dir.to_path_buf(), Path::to_path_buf);
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

/// The spec files of a directory as read at one moment: their texts, what could not be read,
/// and a fingerprint of it all, so the sidecar can tell "nothing changed" without parsing.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Relative paths of every spec file found, sorted.
    pub files: Vec<PathBuf>,
    /// (relative path, text) of every file that could be read as UTF-8.
    pub texts: Vec<(PathBuf, String)>,
    /// Files that could not be listed or read.
    pub errors: Vec<SpecError>,
    /// SHA-256 over every file's path and content (and every read error).
    pub fingerprint: [u8; 32],
}

/// Reads every spec file below `dir`.
///
/// Files are read on every core, each worker reading its own files: read one after the other
/// on the calling thread, 1,000 files took 6 to 20 ms.
pub fn snapshot_dir(dir: &Path) -> Snapshot {
    use sha2::{Digest, Sha256};
    let (files, mut errors) = find_spec_files(dir);
    let chunks = parallel_chunks(&files, |chunk| {
        let mut texts = Vec::with_capacity(chunk.len());
        let mut errors = Vec::new();
        for relative in chunk {
            let shown = shown_path(dir, relative);
            match std::fs::read(dir.join(relative)) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => texts.push((relative.clone(), text)),
                    Err(_) => errors.push(SpecError::new(shown, "not UTF-8 text")),
                },
                Err(e) => errors.push(SpecError::new(shown, format!("cannot read: {e}"))),
            }
        }
        (texts, errors)
    });
    let mut texts = Vec::with_capacity(files.len());
    for (mut t, mut e) in chunks {
        texts.append(&mut t);
        errors.append(&mut e);
    }
    let mut hash = Sha256::new();
    for (path, text) in &texts {
        hash.update(path.to_string_lossy().as_bytes());
        hash.update([0]);
        hash.update((text.len() as u64).to_le_bytes());
        hash.update(text.as_bytes());
    }
    for e in &errors {
        hash.update(e.to_string().as_bytes());
        hash.update([0]);
    }
    Snapshot {
        files,
        texts,
        errors,
        fingerprint: hash.finalize().into(),
    }
}

/// Parses and validates a snapshot.
pub fn load_snapshot(dir: &Path, snapshot: &Snapshot) -> Loaded {
    let mut loaded = load_texts(dir, &snapshot.texts);
    loaded.errors.extend(snapshot.errors.iter().cloned());
    sort_errors(&mut loaded.errors);
    loaded.files = snapshot.files.clone();
    loaded
}

/// Loads and validates every spec file below `dir`.
pub fn load_dir(dir: &Path) -> Loaded {
    load_snapshot(dir, &snapshot_dir(dir))
}

/// Parses and validates spec texts given as (relative path, content); `dir` only shapes the
/// file names shown in errors. Used by tests that need no files.
pub fn load_texts(dir: &Path, texts: &[(PathBuf, String)]) -> Loaded {
    let chunks = parallel_chunks(texts, |chunk| {
        let mut parsed = Parsed::default();
        for (relative, text) in chunk {
            parsed.file(relative, &shown_path(dir, relative), text);
        }
        parsed
    });
    let mut loaded = validated(chunks);
    sort_errors(&mut loaded.errors);
    loaded.files = texts.iter().map(|(p, _)| p.clone()).collect();
    loaded
}

/// The objects of some files, each with the file name shown in messages, and their errors.
#[derive(Default)]
pub(crate) struct Parsed {
    pub(crate) objects: Vec<(Object, PathBuf)>,
    pub(crate) errors: Vec<SpecError>,
}

impl Parsed {
    /// Parses one file's documents into objects.
    pub(crate) fn file(&mut self, relative: &Path, shown: &Path, text: &str) {
        match parse_documents(text) {
            Err(e) => self
                .errors
                .push(SpecError::new(shown, format!("invalid YAML: {}", e.message)).at(e.position)),
            Ok(docs) => {
                for doc in docs {
                    match object_from_document(&doc, shown, relative) {
                        Ok(object) => self.objects.push((object, shown.to_path_buf())),
                        Err(mut e) => self.errors.append(&mut e),
                    }
                }
            }
        }
    }
}

/// Joins the parsed chunks (in file order) and checks the objects on their own and together.
fn validated(chunks: Vec<Parsed>) -> Loaded {
    let mut errors = Vec::new();
    let mut parsed = Vec::with_capacity(chunks.iter().map(|c| c.objects.len()).sum());
    for mut chunk in chunks {
        parsed.append(&mut chunk.objects);
        errors.append(&mut chunk.errors);
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
        files: Vec::new(),
    }
}

/// Runs `work` over contiguous chunks of `items` on scoped threads, one per core (the calling
/// thread being one of them), and returns the results in the order of the chunks. Small
/// inputs stay on the calling thread.
///
/// There are a few chunks per thread, handed out as threads become free, so that one slow
/// chunk (a large file, a thread the OS runs less) does not leave the other cores idle.
pub(crate) fn parallel_chunks<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(&[T]) -> R + Sync,
) -> Vec<R> {
    const MIN_PER_THREAD: usize = 64;
    const CHUNKS_PER_THREAD: usize = 4;
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(items.len() / MIN_PER_THREAD)
        .max(1);
    if threads == 1 {
        return vec![work(items)];
    }
    let size = items
        .len()
        .div_ceil(threads * CHUNKS_PER_THREAD)
        .max(MIN_PER_THREAD / CHUNKS_PER_THREAD);
    let chunks: Vec<&[T]> = items.chunks(size).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let run = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(chunk) = chunks.get(i) else {
                return done;
            };
            done.push((i, work(chunk)));
        }
    };
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(run)).collect();
        let mut results = run();
        for helper in helpers {
            results.extend(helper.join().expect("a spec loading thread panicked"));
        }
        results
    });
    results.sort_unstable_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Reading order: by file, then line. The sort is stable, so errors without a line keep
/// the order they were found in.
pub(crate) fn sort_errors(errors: &mut [SpecError]) {
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
