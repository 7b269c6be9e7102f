//! The checked-in JSON Schemas under schemas/ must be what `pgsched schema --out schemas`
//! writes today, and every example must point editors at them.

use pgsched::spec::schema::all_schemas;
use std::path::Path;

#[test]
fn checked_in_schemas_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let mut stale = Vec::new();
    for (name, text) in all_schemas() {
        match std::fs::read_to_string(dir.join(&name)) {
            Ok(on_disk) if on_disk == text => {}
            _ => stale.push(name),
        }
    }
    assert!(
        stale.is_empty(),
        "schemas/ is stale ({}): run `cargo run -- schema --out schemas` and commit the result",
        stale.join(", ")
    );
}

#[test]
fn schemas_describe_fields_and_reject_unknown_ones() {
    for (name, text) in all_schemas() {
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value["$schema"], "http://json-schema.org/draft-07/schema#",
            "{name}"
        );
        if name != "pgsched.schema.json" {
            assert_eq!(value["additionalProperties"], false, "{name}");
            assert_eq!(
                value["properties"]["spec"]["additionalProperties"], false,
                "{name}"
            );
        }
    }
    let job: serde_json::Value = serde_json::from_str(
        &all_schemas()
            .into_iter()
            .find(|(n, _)| n == "job.schema.json")
            .unwrap()
            .1,
    )
    .unwrap();
    let schedule = &job["properties"]["spec"]["properties"]["schedule"];
    assert!(schedule["description"].as_str().unwrap().contains("cron"));
}

#[test]
fn every_example_starts_with_the_schema_modeline() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/specs");
    let mut checked = 0;
    for entry in walk(&examples) {
        let text = std::fs::read_to_string(&entry).unwrap();
        let first = text.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("# yaml-language-server: $schema=")
                && first.ends_with("schemas/pgsched.schema.json"),
            "{} does not start with the yaml-language-server modeline",
            entry.display()
        );
        let target = first.split("$schema=").nth(1).unwrap();
        assert!(
            entry.parent().unwrap().join(target).exists(),
            "{}: {target} does not exist",
            entry.display()
        );
        checked += 1;
    }
    assert!(checked >= 4);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml")
            && !path.to_string_lossy().ends_with(".status.yaml")
        {
            out.push(path);
        }
    }
    out
}

/// The specs inside the Kubernetes examples' ConfigMaps are specs like any other: they must
/// stay valid as the format moves on.
#[test]
fn the_specs_in_the_kubernetes_examples_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kubernetes");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for doc in docs.iter().filter(|d| d["kind"] == "ConfigMap") {
            let texts: Vec<(std::path::PathBuf, String)> = doc["data"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.into(), v.as_str().unwrap().to_string()))
                .collect();
            let loaded = pgsched::spec::load_texts(&path, &texts);
            assert!(loaded.is_valid(), "{}: {:?}", path.display(), loaded.errors);
            checked += loaded.objects.len();
        }
    }
    assert!(checked >= 1);
}

/// Every property of every object in every schema (the documents, their specs and every
/// definition they refer to) says what it is for: editors show it on hover, and a field without
/// it is a field users must guess at.
#[test]
fn every_property_in_every_schema_has_a_description() {
    fn walk(at: &str, value: &serde_json::Value, missing: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Object(properties)) = map.get("properties") {
                    for (name, property) in properties {
                        let described = property
                            .get("description")
                            .and_then(|d| d.as_str())
                            .is_some_and(|d| !d.trim().is_empty());
                        if !described {
                            missing.push(format!("{at}/properties/{name}"));
                        }
                    }
                }
                // An `if` only matches documents (`kind: Job`); it declares no field.
                for (key, child) in map.iter().filter(|(key, _)| *key != "if") {
                    walk(&format!("{at}/{key}"), child, missing);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(&format!("{at}/{i}"), child, missing);
                }
            }
            _ => {}
        }
    }
    let mut missing = Vec::new();
    for (name, text) in all_schemas() {
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        walk(&name, &value, &mut missing);
    }
    assert!(
        missing.is_empty(),
        "{} properties have no description (add a doc comment to the field):\n{}",
        missing.len(),
        missing.join("\n")
    );
}
