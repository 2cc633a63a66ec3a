//! Entry points of the fuzz targets (`fuzz/`, `make fuzz`) and of their corpus replay in
//! `make test`: each feeds arbitrary bytes to one parser or check of the gateway and panics
//! when an invariant fails. Not an API for anything else.

use axum::http::{HeaderMap, HeaderValue};
use event_bus::{BusConfig, Cursor};

use crate::{
    auth::{config::AuthConfig, origin, ticket::Tickets, token, Verifier},
    http::publish,
    stream::frame::{Encoder, Frame},
    transport::{lean, sse::SseEncoder, ws},
};

/// The parts of `data` between `0xff` bytes (at most `n`).
fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    data.splitn(n, |b| *b == 0xff).collect()
}

/// The lean path's request reader and parser: the first byte says how the rest arrives (in
/// pieces of 1 to 256 bytes). Whatever the split, the head completes at the first piece whose
/// bytes end it, is never kept past its limit, and parses or is refused.
pub fn lean_head(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    lean::fuzz_head(rest, usize::from(split) + 1);
}

/// WebSocket commands: parsed or answered with why, never a panic.
pub fn ws_command(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let (_, _) = ws::command::parse(text);
    }
}

/// Where a token is, its verification, stream tickets and `Origin` checks, on arbitrary
/// headers, cookies and query strings: nothing a client sends is accepted without the key,
/// and nothing panics.
pub fn credentials(data: &[u8]) {
    const SECRET: &str = "a-fuzzing-only-secret-of-32-characters";
    let p = parts(data, 4);
    let text = |i: usize| {
        p.get(i)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    let mut headers = HeaderMap::new();
    for (name, i) in [("authorization", 0), ("cookie", 1), ("origin", 2), ("host", 3)] {
        if let Ok(v) = HeaderValue::from_bytes(p.get(i).copied().unwrap_or_default()) {
            headers.insert(name, v);
        }
    }
    let query = token::from_query(Some(&text(3)));
    // Built once: the keys are not what is fuzzed.
    static KEYS: std::sync::OnceLock<(Verifier, Tickets)> = std::sync::OnceLock::new();
    let (verifier, tickets) = KEYS.get_or_init(|| {
        let config = AuthConfig {
            hs256_secret: Some(SECRET.into()),
            ..Default::default()
        };
        let verifier = Verifier::new(&config).expect("a valid configuration");
        let tickets = Tickets::new(&config, Some(SECRET)).unwrap().expect("tickets on");
        (verifier, tickets)
    });
    assert!(
        verifier.authenticate(&headers, query.as_deref()).is_err(),
        "a forged credential was accepted"
    );
    if let Ok(t) = verifier.token(&headers, query.as_deref()) {
        assert!(verifier.verify(&t).is_err());
    }
    assert!(tickets.redeem(&text(0), 0).is_err(), "a forged ticket was accepted");
    let _ = origin::permitted(&headers, &[], true);
    let _ = origin::check_allowed(&text(2));
    let _ = token::redact(&text(3));
}

/// Publish bodies: decoded and checked against the bus's rules, or refused with a 4xx and a
/// stable code, never a panic.
pub fn publish_body(data: &[u8]) {
    let config = BusConfig::default();
    match publish::decode(data) {
        Ok((events, _)) => {
            assert!(!events.is_empty() && events.len() <= 1000);
            for (channel, event) in &events {
                let _ = event_bus::fuzzing::check_publish(&config, channel, event);
            }
        }
        Err(e) => assert!(e.status.is_client_error(), "{}", e.code),
    }
}

/// Framing: a message of one line (`data` as the bus writes it: JSON, never a raw line
/// break) is read back by an SSE parser as exactly that data, id and event; a JSON one is one
/// WebSocket frame whose `data` is that JSON.
pub fn framing(data: &[u8]) {
    let p = parts(data, 3);
    let cursor = std::str::from_utf8(p[0]).ok().and_then(|t| t.parse::<Cursor>().ok());
    let event = p
        .get(1)
        .and_then(|e| std::str::from_utf8(e).ok())
        .filter(|e| event_bus::EventType::new(*e).is_ok());
    let body = p.last().copied().unwrap_or_default();
    if body.contains(&b'\n') || body.contains(&b'\r') || std::str::from_utf8(body).is_err() {
        return;
    }
    let text = cursor.as_ref().map(|c| c.to_string());
    let frame = Frame::Message {
        cursor: text.as_deref().map(str::as_bytes),
        event: event.unwrap_or("E"),
        data: body,
    };
    let mut sse = SseEncoder::new(true);
    sse.encode(frame);
    let text = String::from_utf8(sse.take().to_vec()).expect("SSE is text");
    let (block, after) = text.split_once("\n\n").expect("a message ends with a blank line");
    assert!(after.is_empty(), "one message, one block: {text:?}");
    let (mut id, mut ev, mut got) = (None, None, None);
    for line in block.split('\n') {
        let (field, value) = line.split_once(':').expect("every line is a field");
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.to_owned()),
            "event" => ev = Some(value.to_owned()),
            "data" => {
                assert!(got.is_none(), "one data line");
                got = Some(value.to_owned());
            }
            other => panic!("unexpected field {other:?}"),
        }
    }
    assert_eq!(got.as_deref().map(str::as_bytes), Some(body));
    assert_eq!(id, cursor.as_ref().map(|c| c.to_string()));
    assert_eq!(ev.as_deref(), Some(event.unwrap_or("E")));
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        let mut wsenc = ws::encoder::WsEncoder::default();
        wsenc.encode(frame);
        let bytes = wsenc.take();
        let bytes = bytes.to_vec();
        let frames = ws::encoder::frames(&bytes).expect("whole frames");
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].0, 0x81, "a message is a text frame");
        let v: serde_json::Value = serde_json::from_slice(frames[0].1).expect("a frame is JSON");
        assert_eq!(v["data"], json);
    }
}
