//! What event-bus serialises validates against proto-schemas/, and the examples there do too.

use std::path::PathBuf;

use event_bus::{Action, Channel, EventType, MemoryBus, NewEvent, Payload};
use event_bus::{Bus, BusConfig, Delivery};
use serde_json::{json, Value};

const BASE: &str = "https://schemas.rakuda.dev/realtime/";

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto-schemas")
}

/// Every schema in proto-schemas/, loaded into one registry; validators by file name.
struct Schemas {
    registry: jsonschema::Registry<'static>,
}

impl Schemas {
    fn load() -> Self {
        let mut registry = jsonschema::Registry::new();
        for entry in std::fs::read_dir(schema_dir()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if name.ends_with(".schema.json") {
                let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                assert_eq!(
                    schema["$id"],
                    format!("{BASE}{name}"),
                    "{name}: $id must match its file name"
                );
                jsonschema::meta::validate(&schema).unwrap_or_else(|e| panic!("{name} is not a valid schema: {e}"));
                registry = registry.add(format!("{BASE}{name}"), schema).unwrap();
            }
        }
        Schemas {
            registry: registry.prepare().unwrap(),
        }
    }

    fn validator(&self, file: &str) -> jsonschema::Validator {
        jsonschema::options()
            .with_registry(&self.registry)
            .should_validate_formats(true)
            .build(&json!({ "$ref": format!("{BASE}{file}") }))
            .unwrap()
    }

    fn assert_valid(&self, file: &str, instance: &Value) {
        let v = self.validator(file);
        let errors: Vec<String> = v
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{instance} is not valid against {file}: {errors:?}");
    }

    fn assert_invalid(&self, file: &str, instance: &Value) {
        assert!(
            !self.validator(file).is_valid(instance),
            "{instance} should be rejected by {file}"
        );
    }
}

fn schema_for(ty: &EventType) -> &'static str {
    match ty.as_str() {
        "INVENTORY_CHANGE" => "inventory-change.schema.json",
        "ORDER_RECEIVED" => "order-received.schema.json",
        "PRICE_CHANGE" => "price-change.schema.json",
        "LISTING_UPDATE" => "listing-update.schema.json",
        other => panic!("no schema for {other}"),
    }
}

#[test]
fn examples_are_valid() {
    let s = Schemas::load();
    let mut n = 0;
    for entry in std::fs::read_dir(schema_dir().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let example: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let schema = path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .replace(".json", ".schema.json");
        s.assert_valid("envelope.schema.json", &example);
        s.assert_valid(&schema, &example);
        // And the Rust types read them back unchanged.
        let env: event_bus::Envelope = serde_json::from_value(example.clone()).unwrap();
        assert_eq!(serde_json::to_value(&env).unwrap(), example);
        n += 1;
    }
    assert_eq!(n, 4, "one example per built-in type");
}

#[tokio::test]
async fn what_the_bus_emits_is_valid() {
    let s = Schemas::load();
    let bus = MemoryBus::new(BusConfig::default()).unwrap();
    let mut sub = bus.subscribe(&bus_channels(), None).await.unwrap();
    let events = vec![
        (
            Channel::INVENTORY,
            NewEvent::new(
                EventType::INVENTORY_CHANGE,
                Payload::new("prod_1", Action::Updated)
                    .with_data(json!({"isAvailable": false, "wasAvailable": true, "priceChanged": false})),
            ),
        ),
        (
            Channel::ORDERS,
            NewEvent::new(
                EventType::ORDER_RECEIVED,
                Payload::new("ord_1", Action::Created).with_data(json!({"marketplace": "ebay", "total": 129.5})),
            ),
        ),
        (
            Channel::PRICING,
            NewEvent::new(
                EventType::PRICE_CHANGE,
                Payload::new("lst_1", Action::Updated).with_data(json!({"oldPrice": 10.0, "newPrice": 9.5})),
            ),
        ),
        (
            Channel::LISTINGS,
            NewEvent::new(
                EventType::LISTING_UPDATE,
                Payload::new("lst_1", Action::Updated).with_data(json!({"status": "ended"})),
            ),
        ),
    ];
    bus.publish_batch(events).await.unwrap();
    for _ in 0..4 {
        let Some(Delivery::Event(env)) = sub.next().await else {
            panic!("expected an event")
        };
        let json: Value = serde_json::from_str(&env.to_json()).unwrap();
        s.assert_valid("envelope.schema.json", &json);
        s.assert_valid(schema_for(&env.event_type), &json);
    }
}

#[test]
fn schemas_reject_what_the_contract_forbids() {
    let s = Schemas::load();
    let good: Value =
        serde_json::from_str(&std::fs::read_to_string(schema_dir().join("examples/order-received.json")).unwrap())
            .unwrap();
    let mutate = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        v
    };
    s.assert_invalid(
        "envelope.schema.json",
        &mutate(&|v| v["payload"]["action"] = json!("exploded")),
    );
    s.assert_invalid("envelope.schema.json", &mutate(&|v| v["id"] = json!("abc")));
    s.assert_invalid(
        "envelope.schema.json",
        &mutate(&|v| v["timestamp"] = json!("yesterday")),
    );
    s.assert_invalid("envelope.schema.json", &mutate(&|v| v["secret"] = json!("x")));
    s.assert_invalid(
        "order-received.schema.json",
        &mutate(&|v| v["channel"] = json!("pricing")),
    );
    s.assert_invalid(
        "order-received.schema.json",
        &mutate(&|v| v["payload"]["data"]["total"] = json!("lots")),
    );
}

fn bus_channels() -> Vec<Channel> {
    BusConfig::default().channel_names()
}
