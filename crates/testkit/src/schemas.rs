//! proto-schemas/ loaded into one registry, to validate what the code emits.

use std::path::PathBuf;

use serde_json::{json, Value};

/// The `$id` prefix of every schema.
pub const BASE: &str = "https://schemas.rakuda.dev/realtime/";

/// The proto-schemas/ folder of this workspace.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto-schemas")
}

/// Every schema of proto-schemas/, checked against the 2020-12 meta-schema.
#[derive(Debug)]
pub struct Schemas {
    registry: jsonschema::Registry<'static>,
}

impl Schemas {
    /// Loads every `*.schema.json`; panics with the file name if one is not a valid schema.
    pub fn load() -> Self {
        let mut registry = jsonschema::Registry::new();
        for entry in std::fs::read_dir(dir()).expect("proto-schemas/") {
            let path = entry.expect("dir entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            if name.ends_with(".schema.json") {
                let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read schema"))
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(
                    schema["$id"],
                    format!("{BASE}{name}"),
                    "{name}: $id must match its file name"
                );
                jsonschema::meta::validate(&schema).unwrap_or_else(|e| panic!("{name} is not a valid schema: {e}"));
                registry = registry.add(format!("{BASE}{name}"), schema).expect("add schema");
            }
        }
        Schemas {
            registry: registry.prepare().expect("schemas resolve"),
        }
    }

    /// A validator for one file (formats checked).
    pub fn validator(&self, file: &str) -> jsonschema::Validator {
        jsonschema::options()
            .with_registry(&self.registry)
            .should_validate_formats(true)
            .build(&json!({ "$ref": format!("{BASE}{file}") }))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
    }

    /// Panics, listing every error, unless `instance` is valid against `file`.
    pub fn assert_valid(&self, file: &str, instance: &Value) {
        let v = self.validator(file);
        let errors: Vec<String> = v
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{instance} is not valid against {file}: {errors:?}");
    }

    /// Panics if `instance` is valid against `file`.
    pub fn assert_invalid(&self, file: &str, instance: &Value) {
        assert!(
            !self.validator(file).is_valid(instance),
            "{instance} should be rejected by {file}"
        );
    }
}
