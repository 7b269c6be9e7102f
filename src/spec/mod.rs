//! The YAML model: the spec kinds, their validation and loading a directory into objects.
//!
//! Parsing is two-step: each document becomes a span-aware tree ([`yaml`]), then a typed
//! object ([`document`]), then every object is checked on its own and against the others
//! ([`validate`]). Every error carries the file, line, column and field path. Nothing here
//! touches the database or writes a file.

pub mod cache;
pub mod document;
pub mod error;
pub mod load;
pub mod model;
pub mod schema;
pub mod sql;
pub mod validate;
pub mod yaml;

pub use document::{Object, Source, API_VERSION};
pub use error::SpecError;
pub use load::{
    find_spec_files, is_spec_file_name, is_status_file_name, load_dir, load_snapshot, load_texts,
    snapshot_dir, Loaded, Snapshot,
};
pub use model::*;
