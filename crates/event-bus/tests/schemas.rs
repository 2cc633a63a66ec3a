//! What event-bus serialises validates against proto-schemas/, and the examples there do too.

use event_bus::{Action, Channel, EventType, MemoryBus, NewEvent, Payload};
use event_bus::{Broker, BusConfig, Delivery};
use serde_json::{json, Value};

use testkit::schemas::{dir as schema_dir, Schemas};

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
