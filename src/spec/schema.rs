//! JSON Schemas of the spec kinds, for editors (yaml-language-server) and CI linters.
//! One schema per kind and an umbrella schema that switches on `kind`.

use super::document::API_VERSION;
use super::model::{ChainSpec, ConnectionSpec, JobSpec, Kind, Metadata, TimeoutSpec};
use schemars::{generate::SchemaSettings, JsonSchema};
use serde_json::{json, Value};
use std::path::Path;

const API_VERSION_DOC: &str = "The version of pgsched's spec format: `pgsched/v1`.";
const KIND_DOC: &str = "What this document declares: `Job`, `Chain`, `Timeout` or `Connection`.";

fn spec_schema<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::draft07().into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    describe_builtin_names(&mut schema);
    schema
}

/// The built-ins are an internally tagged enum: schemars writes each variant's `name` tag as a
/// bare constant. Say what it is, so that every property of the schema is described.
fn describe_builtin_names(schema: &mut Value) {
    let Some(Value::Array(variants)) = schema.pointer_mut("/definitions/Builtin/oneOf") else {
        return;
    };
    for variant in variants {
        if let Some(Value::Object(name)) = variant.pointer_mut("/properties/name") {
            let which = name
                .get("const")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            name.insert(
                "description".into(),
                Value::String(format!("Which built-in task: `{which}`.")),
            );
        }
    }
}

/// The full document schema for one kind: envelope plus that kind's spec.
pub fn kind_schema(kind: Kind) -> Value {
    let spec = match kind {
        Kind::Job => spec_schema::<JobSpec>(),
        Kind::Chain => spec_schema::<ChainSpec>(),
        Kind::Timeout => spec_schema::<TimeoutSpec>(),
        Kind::Connection => spec_schema::<ConnectionSpec>(),
    };
    let metadata = spec_schema::<Metadata>();
    let mut definitions = serde_json::Map::new();
    for schema in [&spec, &metadata] {
        if let Some(Value::Object(defs)) = schema.get("definitions") {
            for (k, v) in defs {
                definitions.insert(k.clone(), v.clone());
            }
        }
    }
    let strip = |mut v: Value| {
        if let Value::Object(map) = &mut v {
            map.remove("definitions");
            map.remove("$schema");
        }
        v
    };
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": format!("pgsched {}", kind.as_str()),
        "type": "object",
        "additionalProperties": false,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": API_VERSION, "description": API_VERSION_DOC},
            "kind": {"const": kind.as_str(), "description": KIND_DOC},
            "metadata": strip(metadata),
            "spec": strip(spec),
        },
        "definitions": definitions,
    })
}

/// One schema for any document: `if kind == X then X's schema`. This is the one the examples'
/// modeline points at. Self-contained (no references to other files), so editors need
/// nothing but this one file.
pub fn umbrella_schema() -> Value {
    let mut definitions = serde_json::Map::new();
    let branches: Vec<Value> = Kind::ALL
        .iter()
        .map(|k| {
            let mut schema = kind_schema(*k);
            if let Value::Object(map) = &mut schema {
                map.remove("$schema");
                if let Some(Value::Object(defs)) = map.remove("definitions") {
                    definitions.extend(defs);
                }
            }
            json!({
                "if": {"properties": {"kind": {"const": k.as_str()}}, "required": ["kind"]},
                "then": schema
            })
        })
        .collect();
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "pgsched spec document",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": API_VERSION, "description": API_VERSION_DOC},
            "kind": {"enum": Kind::ALL.map(Kind::as_str), "description": KIND_DOC},
        },
        "allOf": branches,
        "definitions": definitions,
    })
}

/// Every schema file by name, in a stable order: `job.schema.json`, ..., `pgsched.schema.json`.
pub fn all_schemas() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Kind::ALL
        .iter()
        .map(|k| {
            (
                format!("{}.schema.json", k.slug()),
                pretty(&kind_schema(*k)),
            )
        })
        .collect();
    out.push(("pgsched.schema.json".into(), pretty(&umbrella_schema())));
    out
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("a JSON value always serialises");
    s.push('\n');
    s
}

/// Writes every schema into `dir`, creating it; returns the files written.
pub fn write_schemas(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, text) in all_schemas() {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        written.push(path);
    }
    Ok(written)
}
