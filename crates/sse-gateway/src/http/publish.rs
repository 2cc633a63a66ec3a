//! `POST /api/realtime/publish` (publisher) and `POST /api/realtime/test` (admin).

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use event_bus::{Action, Broker, Channel, EventType, NewEvent, Payload, Timestamp, Traceparent};
use serde::Deserialize;
use serde_json::{json, Value};
use service_kit::trace::{Hop, Kind};

use super::{
    auth::caller,
    body::{rate_limited, read_body},
};
use crate::{app::AppState, auth::principal::Principal, error::ApiError};

/// One event in a publish request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishItem {
    channel: String,
    #[serde(rename = "type")]
    event_type: String,
    payload: Payload,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    timestamp: Option<Timestamp>,
}

impl PublishItem {
    /// `at` prefixes error messages: "" for a single event, "item N: " in an array.
    fn into_event(self, at: &str) -> Result<(Channel, NewEvent), ApiError> {
        let channel =
            Channel::new(self.channel).map_err(|e| ApiError::bad_request("unknown_channel", format!("{at}{e}")))?;
        let event_type =
            EventType::new(self.event_type).map_err(|e| ApiError::bad_request("bad_type", format!("{at}{e}")))?;
        Ok((
            channel,
            NewEvent {
                event_type,
                payload: self.payload,
                timestamp: self.timestamp.unwrap_or_else(Timestamp::now),
                idempotency_key: self.idempotency_key,
                traceparent: None,
            },
        ))
    }
}

/// A publish body: one event or an array of 1 to [`crate::limit::MAX_PUBLISH_BATCH`], as channels and events (checked
/// against the bus's rules only when published); `true` for a single event.
pub fn decode(body: &[u8]) -> Result<(Vec<(Channel, NewEvent)>, bool), ApiError> {
    // Straight into the items when the body is right (one pass, no `Value`); a body that is
    // not is read again, item by item, for an error that names the item.
    let single = body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'[');
    let items = if single {
        serde_json::from_slice::<PublishItem>(body).map(|i| vec![i])
    } else {
        serde_json::from_slice::<Vec<PublishItem>>(body)
    };
    match items {
        Ok(items) if (1..=crate::limit::MAX_PUBLISH_BATCH).contains(&items.len()) => {
            let events = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| item.into_event(&if single { String::new() } else { format!("item {i}: ") }))
                .collect::<Result<_, _>>()?;
            Ok((events, single))
        }
        _ => decode_slowly(body),
    }
}

/// [`decode`] through a `Value`, so that a wrong item is named in the error.
fn decode_slowly(body: &[u8]) -> Result<(Vec<(Channel, NewEvent)>, bool), ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("bad_json", format!("the body is not JSON: {e}")))?;
    let (items, single) = match value {
        Value::Array(items) => (items, false),
        other => (vec![other], true),
    };
    if items.is_empty() || items.len() > crate::limit::MAX_PUBLISH_BATCH {
        return Err(ApiError::bad_request("bad_batch", "send 1 to 1000 events"));
    }
    let mut events = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = if single { String::new() } else { format!("item {i}: ") };
        let item: PublishItem = serde_json::from_value(item).map_err(|e| {
            ApiError::bad_request(
                "bad_event",
                format!("{at}{e} (expected {{\"channel\", \"type\", \"payload\": {{\"id\", \"action\", \"data\"?}}, \"idempotency_key\"?}})"),
            )
        })?;
        events.push(item.into_event(&at)?);
    }
    Ok((events, single))
}

/// The hop of a publishing request: it continues the request's W3C `traceparent` (a malformed
/// one is ignored, as the recommendation says) or starts a trace; its events carry it on.
pub(crate) fn request_hop(name: &'static str, headers: &axum::http::HeaderMap) -> (Hop, Traceparent) {
    let parent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Traceparent>().ok())
        .map(|t| (t.trace_id(), t.span_id()));
    let hop = Hop::start(name, Kind::Server, parent, &[]);
    let (trace, span) = hop.ids();
    let tp = Traceparent::from_ids(trace, span, true).expect("a hop's ids are not zero");
    (hop, tp)
}

/// What the trace log says of each event, taken only while it is on.
type Described = Option<Vec<(Channel, EventType)>>;

fn describe(events: &[(Channel, NewEvent)]) -> Described {
    tracing::enabled!(target: "rakuda::trace", tracing::Level::DEBUG)
        .then(|| events.iter().map(|(c, e)| (c.clone(), e.event_type.clone())).collect())
}

/// Logs each stored event of a request under its trace (`rakuda::trace`, debug).
fn traced(hop: &mut Hop, described: Described, published: &[event_bus::Published]) {
    if let Some(described) = described {
        let trace_id = hop.trace_id_hex();
        for ((channel, event_type), p) in described.iter().zip(published) {
            tracing::debug!(target: "rakuda::trace", %trace_id, event_id = %p.id, %channel, %event_type, duplicate = p.duplicate, "published");
        }
    }
    if hop.exported() {
        let ids: Vec<String> = published.iter().map(|p| p.id.to_string()).collect();
        hop.set("rakuda.event_ids", ids.join(","));
    }
}

/// `POST /api/realtime/publish`: one event or an array; answers `{"id"}` or a list of them.
pub async fn publish(
    State(state): State<AppState>,
    principal: Option<axum::Extension<Principal>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let principal = caller(&state, &principal)?;
    let body = read_body(state.config(), body).await?;
    let (events, single) = decode(&body)?;
    if let Some(n) = state.notifications() {
        if events.iter().any(|(c, _)| c == &n.config().channel) {
            return Err(ApiError::forbidden(
                "private_channel",
                format!(
                    "{} is the per-user notification channel: create notifications with POST /api/notifications",
                    n.config().channel
                ),
            ));
        }
    }
    let refused: Vec<&str> = events
        .iter()
        .filter(|(c, _)| !principal.allows(c))
        .map(|(c, _)| c.as_str())
        .collect();
    if !refused.is_empty() {
        return Err(ApiError::forbidden(
            "forbidden_channel",
            format!("the token does not grant publishing to: {}", refused.join(", ")),
        ));
    }
    // Per caller: the user or service; in AUTH_MODE=none, the client's address.
    let caller = if state.auth().mode().uses_tokens() {
        principal.sub.clone()
    } else {
        peer.map(|p| p.0 .0.ip().to_string()).unwrap_or_default()
    };
    if let Err(wait) = state.publish_limiter().take(&caller, events.len() as f64) {
        return Err(rate_limited(
            state.config().auth.publish_rate_per_sec,
            events.len(),
            wait,
        ));
    }
    if !state.config().realtime_enabled {
        return Ok((StatusCode::ACCEPTED, Json(json!({"disabled": true, "published": 0}))).into_response());
    }
    let (mut hop, tp) = request_hop("publish", &headers);
    let events: Vec<(Channel, NewEvent)> = events
        .into_iter()
        .map(|(c, e)| (c, e.with_traceparent(Some(tp))))
        .collect();
    let described = describe(&events);
    let published = state.bus().publish_batch(events).await.map_err(|e| {
        hop.fail(&e.to_string());
        ApiError::from_bus(e)
    })?;
    traced(&mut hop, described, &published);
    let answer = |p: &event_bus::Published| json!({"id": p.id, "duplicate": p.duplicate});
    Ok(if single {
        Json(answer(&published[0])).into_response()
    } else {
        Json(Value::Array(published.iter().map(answer).collect())).into_response()
    })
}

/// Body of `POST /api/realtime/test` (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    channel: Option<String>,
    message: Option<String>,
}

/// `POST /api/realtime/test` (admin): publishes a test event on a channel (default: the first).
pub async fn test_event(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let body = read_body(state.config(), body).await?;
    let req: TestRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TestRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request("bad_json", format!("{e}")))?
    };
    let config = &state.config().bus;
    let spec = match &req.channel {
        None => &config.channels[0],
        Some(name) => config
            .channels
            .iter()
            .filter(|c| state.notifications().is_none_or(|n| n.config().channel != c.name))
            .find(|c| c.name.as_str() == name)
            .ok_or_else(|| ApiError::bad_request("unknown_channel", format!("unknown channel {name:?}")))?,
    };
    let event_type = spec
        .types
        .first()
        .cloned()
        .unwrap_or_else(|| EventType::new("TEST").expect("valid"));
    let n = state.next_test();
    let payload = Payload::new(format!("test-{n}"), Action::Updated)
        .with_data(json!({"test": true, "message": req.message.unwrap_or_else(|| "test event".into())}));
    let (mut hop, tp) = request_hop("publish", &headers);
    let event = NewEvent::new(event_type, payload).with_traceparent(Some(tp));
    let described = describe(std::slice::from_ref(&(spec.name.clone(), event.clone())));
    let p = state
        .bus()
        .publish(&spec.name, event)
        .await
        .map_err(ApiError::from_bus)?;
    traced(&mut hop, described, std::slice::from_ref(&p));
    Ok(Json(json!({"id": p.id, "channel": spec.name})).into_response())
}
