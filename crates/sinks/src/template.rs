//! Messages from events. A template is text with `{field}` placeholders, each a dotted path into
//! the envelope (`{payload.id}`, `{payload.data.newPrice}`); `{{` and `}}` are braces. A field
//! that is absent renders as `?`. A digest (several events of one route's window) is one line:
//! `13 price changes (latest: Price lst_33: 191.24 -> 209.48 USD)`.

use event_bus::{Envelope, EventType};
use serde_json::Value;

/// The message of an event type when its route names no template.
pub fn builtin(event_type: &EventType) -> &'static str {
    match event_type.as_str() {
        "INVENTORY_CHANGE" => {
            "Stock {payload.id}: available {payload.data.isAvailable}, {payload.data.price} {payload.data.currency}"
        }
        "ORDER_RECEIVED" => {
            "New order {payload.id} on {payload.data.marketplace}: {payload.data.total} {payload.data.currency}"
        }
        "PRICE_CHANGE" => {
            "Price {payload.id}: {payload.data.oldPrice} → {payload.data.newPrice} {payload.data.currency}"
        }
        "LISTING_UPDATE" => "Listing {payload.id}: {payload.data.previousStatus} → {payload.data.status}",
        _ => "{type} {payload.id} {payload.action}",
    }
}

/// A template's pieces: text and field paths.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(Vec<String>),
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

impl Template {
    /// Parses `text`; the error says where it is wrong.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let rest = &text[i + 1..];
                    let end = rest
                        .find('}')
                        .ok_or_else(|| format!("{text:?}: the {{ at {i} is not closed"))?;
                    let field = &rest[..end];
                    let path: Vec<String> = field.split('.').map(str::to_owned).collect();
                    let root_ok = matches!(path[0].as_str(), "type" | "channel" | "id" | "timestamp" | "payload");
                    if path.iter().any(String::is_empty) || !root_ok {
                        return Err(format!(
                            "{text:?}: {{{field}}} is not type, channel, id, timestamp or payload.<...>"
                        ));
                    }
                    if !lit.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut lit)));
                    }
                    pieces.push(Piece::Field(path));
                    for _ in 0..=field.chars().count() {
                        chars.next();
                    }
                }
                '}' => {
                    return Err(format!(
                        "{text:?}: the }} at {i} closes nothing (write }}}} for a brace)"
                    ))
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            pieces.push(Piece::Text(lit));
        }
        Ok(Template(pieces))
    }

    /// The message of `event`.
    pub fn render(&self, event: &Envelope) -> String {
        let json = serde_json::to_value(event).unwrap_or(Value::Null);
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(path) => match path.iter().try_fold(&json, |v, k| v.get(k)) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(Value::Null) | None => out.push('?'),
                    Some(v) => out.push_str(&v.to_string()),
                },
            }
        }
        out
    }
}

/// How a digest names several events of a type.
fn noun(event_type: &str, n: usize) -> String {
    let (one, many) = match event_type {
        "PRICE_CHANGE" => ("price change", "price changes"),
        "ORDER_RECEIVED" => ("new order", "new orders"),
        "INVENTORY_CHANGE" => ("stock change", "stock changes"),
        "LISTING_UPDATE" => ("listing update", "listing updates"),
        other => return format!("{n} {other} event{}", if n == 1 { "" } else { "s" }),
    };
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One message for a window of events: `counts` per type in the order they first came (at
/// least one), and the last event's message.
pub fn digest(counts: &[(EventType, usize)], latest: &str) -> String {
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    let parts: Vec<String> = counts.iter().map(|(t, n)| noun(t.as_str(), *n)).collect();
    let head = if parts.len() == 1 {
        parts[0].clone()
    } else {
        format!("{total} events: {}", parts.join(", "))
    };
    format!("{head} (latest: {latest})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_bus::{Action, Channel, EventId, Payload, Timestamp};
    use serde_json::json;

    fn price(id: &str, old: f64, new: f64) -> Envelope {
        Envelope {
            id: EventId::new(1, 0),
            event_type: EventType::PRICE_CHANGE,
            channel: Channel::PRICING,
            payload: Payload::new(id, Action::Updated)
                .with_data(json!({"oldPrice": old, "newPrice": new, "currency": "USD"})),
            timestamp: Timestamp::now(),
            traceparent: None,
        }
    }

    #[test]
    fn fields_render_and_missing_ones_say_so() {
        let t = Template::parse(
            "{{{type}}} {payload.id}: {payload.data.oldPrice} -> {payload.data.newPrice} ({payload.data.none})",
        )
        .unwrap();
        assert_eq!(
            t.render(&price("lst_33", 191.24, 209.48)),
            "{PRICE_CHANGE} lst_33: 191.24 -> 209.48 (?)"
        );
        let builtin = Template::parse(builtin(&EventType::PRICE_CHANGE)).unwrap();
        assert_eq!(
            builtin.render(&price("lst_33", 191.24, 209.48)),
            "Price lst_33: 191.24 → 209.48 USD"
        );
        for t in ["{payload.id", "a } b", "{secret}", "{payload.}", "{}"] {
            assert!(Template::parse(t).is_err(), "{t}");
        }
    }

    #[test]
    fn a_digest_counts_and_names_the_latest() {
        assert_eq!(
            digest(&[(EventType::PRICE_CHANGE, 13)], "Price lst_12: 1 -> 2 USD"),
            "13 price changes (latest: Price lst_12: 1 -> 2 USD)"
        );
        assert_eq!(
            digest(&[(EventType::PRICE_CHANGE, 2), (EventType::ORDER_RECEIVED, 1)], "x"),
            "3 events: 2 price changes, 1 new order (latest: x)"
        );
        assert_eq!(
            digest(&[(EventType::PRICE_CHANGE, 1)], "x"),
            "1 price change (latest: x)"
        );
    }
}
