//! Signed webhook deliveries verify with the Standard Webhooks reference library (npm
//! `standardwebhooks`, `tests/node/standard-webhooks-verify.mjs`), as a receiver checks them:
//! under the current secret and under the previous one during a rotation; a changed body or an
//! unknown secret does not.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use event_bus::{Action, Channel, Envelope, EventId, EventType, Payload, Timestamp};
use serde_json::{json, Value};
use sinks::{
    config::Secret,
    destination::{webhook::Webhook, Kind, Message},
};
use testkit::node::NodeScript;

const CURRENT: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PREVIOUS: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const UNKNOWN: &str = "whsec_dW5rbm93bi1zZWNyZXQtb2YtMzItYnl0ZXMhIQ==";

#[test]
fn the_reference_library_verifies_every_configured_secret() {
    let event = Envelope {
        id: EventId::new(1_732_330_000_123, 0),
        event_type: EventType::INVENTORY_CHANGE,
        channel: Channel::INVENTORY,
        payload: Payload::new("prod_7", Action::Updated).with_data(json!({"isAvailable": false})),
        timestamp: Timestamp::now(),
        traceparent: None,
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let m = Message {
        text: "Stock prod_7: out".into(),
        key: sinks::key::of(&event.channel, event.id, "hook"),
        event,
        count: 1,
        sent_at: now,
    };
    let hook = Webhook {
        url: "http://127.0.0.1:9/hook".into(),
        secrets: vec![Secret::literal(CURRENT), Secret::literal(PREVIOUS)],
    };
    let sinks::destination::Wire::Http(r) = hook.request(&m).unwrap() else {
        panic!("an HTTP request")
    };
    let headers: serde_json::Map<String, Value> = r.headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let body = String::from_utf8(r.body.clone()).unwrap();
    let case = |secret: &str, body: &str| json!({"secret": secret, "headers": headers, "body": body});
    let cases = json!([
        case(CURRENT, &body),
        case(PREVIOUS, &body),
        case(UNKNOWN, &body),
        case(CURRENT, &body.replace("prod_7", "prod_8")),
    ]);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), cases.to_string()).unwrap();
    let out = NodeScript::start("standard-webhooks-verify.mjs", &[file.path().to_str().unwrap()], &[])
        .finish(Duration::from_secs(30));
    assert_eq!(out[0]["ok"], true, "{out}");
    assert_eq!(out[0]["payload"]["data"]["payload"]["id"], "prod_7", "{out}");
    assert_eq!(out[1]["ok"], true, "the previous secret still verifies: {out}");
    assert_eq!(out[2]["ok"], false, "{out}");
    assert_eq!(out[3]["ok"], false, "a changed body: {out}");
}
