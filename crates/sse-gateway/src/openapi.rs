//! The HTTP API as an OpenAPI 3.1 document. The paths are written by
//! hand (`openapi/paths.json`); the bodies' schemas are the project's `proto-schemas/` files,
//! compiled in and bundled as components, so the document and the schemas the tests hold the
//! code to are the same text. The dashboard's files are added from [`crate::dashboard`]'s table.
//! Served at `GET /api/openapi.json` ([`crate::http::status::openapi`]).

use serde_json::{json, Map, Value};

/// The hand-written part: info, paths, parameters, responses, the schemas of small answers.
const PATHS: &str = include_str!("openapi/paths.json");

/// The `proto-schemas/` files the HTTP API uses, by component name (the file name without
/// `.schema.json`). Every `$ref` between them must stay inside this list (a test checks).
pub const SCHEMAS: [(&str, &str); 20] = [
    ("envelope", include_str!("../../../proto-schemas/envelope.schema.json")),
    ("payload", include_str!("../../../proto-schemas/payload.schema.json")),
    ("error", include_str!("../../../proto-schemas/error.schema.json")),
    ("status", include_str!("../../../proto-schemas/status.schema.json")),
    (
        "connections",
        include_str!("../../../proto-schemas/connections.schema.json"),
    ),
    ("stats", include_str!("../../../proto-schemas/stats.schema.json")),
    (
        "stats-range",
        include_str!("../../../proto-schemas/stats-range.schema.json"),
    ),
    (
        "daily-stats",
        include_str!("../../../proto-schemas/daily-stats.schema.json"),
    ),
    (
        "publish-request",
        include_str!("../../../proto-schemas/publish-request.schema.json"),
    ),
    (
        "publish-response",
        include_str!("../../../proto-schemas/publish-response.schema.json"),
    ),
    (
        "notification",
        include_str!("../../../proto-schemas/notification.schema.json"),
    ),
    (
        "notification-create",
        include_str!("../../../proto-schemas/notification-create.schema.json"),
    ),
    (
        "notifications-page",
        include_str!("../../../proto-schemas/notifications-page.schema.json"),
    ),
    (
        "sse-group",
        include_str!("../../../proto-schemas/sse-group.schema.json"),
    ),
    (
        "sse-resync",
        include_str!("../../../proto-schemas/sse-resync.schema.json"),
    ),
    (
        "sse-notification-unread",
        include_str!("../../../proto-schemas/sse-notification-unread.schema.json"),
    ),
    (
        "notification-event",
        include_str!("../../../proto-schemas/notification-event.schema.json"),
    ),
    (
        "notification-read",
        include_str!("../../../proto-schemas/notification-read.schema.json"),
    ),
    (
        "sse-presence",
        include_str!("../../../proto-schemas/sse-presence.schema.json"),
    ),
    ("acks", include_str!("../../../proto-schemas/acks.schema.json")),
];

/// `$ref`s of the schema `name` made document-wide: `#/$defs/x` (its own) and
/// `other.schema.json#/$defs/x` (another file's) both point into `#/components/schemas/`.
fn rebase(value: &mut Value, name: &str) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(r) if key == "$ref" => {
                        let (file, fragment) = r.split_once('#').unwrap_or((r.as_str(), ""));
                        let target = if file.is_empty() {
                            name
                        } else {
                            file.strip_suffix(".schema.json").unwrap_or(file)
                        };
                        *r = format!("#/components/schemas/{target}{fragment}");
                    }
                    _ => rebase(v, name),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rebase(v, name)),
        _ => {}
    }
}

/// The path item of one embedded file: 200 with its content type, 304 for a matching ETag.
fn file_item(content_type: &str) -> Value {
    let media = content_type.split(';').next().unwrap_or(content_type).trim();
    json!({"get": {
        "tags": ["files"],
        "summary": "An embedded file, with an ETag (Cache-Control: no-cache)",
        "security": [{}],
        "parameters": [{"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}],
        "responses": {
            "200": {"description": "The file.", "content": {media: {"schema": {"type": "string"}}}},
            "304": {"description": "Unchanged since the ETag sent."}
        }
    }})
}

/// The channels a publisher may name, each with its types (empty: any), into the publish and
/// test-event bodies: a request the document calls valid is one this gateway takes.
fn configured(schemas: &mut Map<String, Value>, channels: &[(&str, Vec<&str>)]) {
    let event = schemas["publish-request"]["$defs"]["event"].clone();
    let per_channel: Vec<Value> = channels
        .iter()
        .map(|(name, types)| {
            let mut e = event.clone();
            e["properties"]["channel"] = json!({"const": name});
            if !types.is_empty() {
                e["properties"]["type"] = json!({"enum": types});
            }
            e
        })
        .collect();
    schemas["publish-request"]["$defs"]["event"] = json!({"anyOf": per_channel});
    let names: Vec<&str> = channels.iter().map(|(n, _)| *n).collect();
    schemas["test-request"]["properties"]["channel"]["enum"] = json!(names);
}

/// The whole document for a gateway whose cookie is `cookie_name` (`auth.cookie_name`) and
/// whose publishable channels are `channels` (name, types; the private one left out).
pub fn document(cookie_name: &str, channels: &[(&str, Vec<&str>)]) -> Value {
    let mut doc: Value = serde_json::from_str(PATHS).expect("openapi/paths.json is JSON");
    let schemas = doc["components"]["schemas"]
        .as_object_mut()
        .expect("components.schemas");
    for (name, text) in SCHEMAS {
        let mut schema: Value = serde_json::from_str(text).expect("a proto-schema is JSON");
        let map: &mut Map<String, Value> = schema.as_object_mut().expect("a schema is an object");
        map.remove("$schema");
        map.remove("$id");
        rebase(&mut schema, name);
        schemas.insert(name.to_owned(), schema);
    }
    configured(schemas, channels);
    let names: Vec<&str> = channels.iter().map(|(n, _)| *n).collect();
    for param in ["ackChannel", "presenceChannel"] {
        doc["components"]["parameters"][param]["schema"]["enum"] = json!(names);
    }
    doc["components"]["securitySchemes"]["cookie"]["name"] = json!(cookie_name);
    let paths = doc["paths"].as_object_mut().expect("paths");
    for (path, content_type, _) in crate::dashboard::ASSETS {
        paths.insert(path.to_owned(), file_item(content_type));
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` of the document, where it is.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => m.iter().for_each(|(k, v)| match v {
                Value::String(r) if k == "$ref" => out.push(r),
                _ => refs(v, out),
            }),
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves_inside_the_document() {
        let doc = document("rakuda_token", &[("orders", vec!["ORDER_RECEIVED"]), ("tasks", vec![])]);
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 50, "{} refs", all.len());
        for r in all {
            let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{r}: not local"));
            assert!(doc.pointer(pointer).is_some(), "{r} resolves to nothing");
        }
    }

    #[test]
    fn the_cookie_is_the_configured_one_and_the_files_are_listed() {
        let doc = document("sid", &[]);
        assert_eq!(doc["components"]["securitySchemes"]["cookie"]["name"], "sid");
        assert_eq!(doc["openapi"], "3.1.0");
        let js = &doc["paths"]["/realtime-client.js"]["get"]["responses"]["200"]["content"];
        assert!(js.get("text/javascript").is_some(), "{js}");
    }

    #[test]
    fn a_publishable_event_names_a_configured_channel_and_type() {
        let doc = document("t", &[("orders", vec!["ORDER_RECEIVED"]), ("tasks", vec![])]);
        let event = &doc["components"]["schemas"]["publish-request"]["$defs"]["event"]["anyOf"];
        assert_eq!(event[0]["properties"]["channel"], json!({"const": "orders"}));
        assert_eq!(event[0]["properties"]["type"], json!({"enum": ["ORDER_RECEIVED"]}));
        assert!(event[1]["properties"]["type"]["pattern"].is_string(), "{}", event[1]);
        assert_eq!(event[1]["required"], json!(["channel", "type", "payload"]));
        let test = &doc["components"]["schemas"]["test-request"]["properties"]["channel"];
        assert_eq!(test["enum"], json!(["orders", "tasks"]));
    }
}
