//! Slack incoming webhooks: `POST <webhook URL>` with `{text, blocks}`. About one message per
//! second per webhook; 429 with `Retry-After` (seconds); 404 `no_service`, 410
//! `channel_is_archived` and 403 `action_prohibited` mean the webhook is gone: disable it.
//!
//! The text is sent as literal text: `&`, `<` and `>` are escaped as Slack asks, so a value
//! that arrived in an event (an order id of `<!channel>` from a marketplace) can neither
//! mention anyone nor make a link.

use serde_json::json;

use super::{classify, json_request, Answer, Kind, Message, Outcome, Wire};
use crate::secret::Secret;

/// A Slack incoming webhook.
#[derive(Debug)]
pub struct Slack {
    /// The webhook URL (a credential: it is the only one).
    pub url: Secret,
}

impl Kind for Slack {
    fn kind(&self) -> &'static str {
        "slack"
    }

    fn request(&self, m: &Message) -> Result<Wire, String> {
        let text = escape(&m.text);
        let body = json!({
            "text": text,
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
        });
        Ok(Wire::Http(json_request(self.url.value()?, &body, Vec::new())))
    }

    fn outcome(&self, a: &Answer<'_>) -> Outcome {
        match a.status {
            404 | 410 => Outcome::Disable(format!("HTTP {}: the webhook is gone", a.status)),
            _ => classify(a),
        }
    }
}

/// Slack's control characters as entities (<https://api.slack.com/reference/surfaces/formatting#escaping>):
/// `<!channel>`, `<@U123>` and `<http://x|y>` stay text.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::samples::*;

    #[test]
    fn text_and_blocks_and_what_slack_answers() {
        let s = Slack {
            url: Secret::literal("http://127.0.0.1:9/services/T/B/x"),
        };
        let r = s.request(&message()).unwrap().http();
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["text"], "New order ord_81 on ebay: 129.5 USD");
        assert_eq!(body["blocks"][0]["text"]["text"], body["text"]);
        // What an event carries cannot mention anyone or make a link.
        let mut m = message();
        m.text = "New order <!channel> & <@U1> <http://evil|x> -> 3".into();
        let r = s.request(&m).unwrap().http();
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let shown = "New order &lt;!channel&gt; &amp; &lt;@U1&gt; &lt;http://evil|x&gt; -&gt; 3";
        assert_eq!(body["text"], shown);
        assert_eq!(body["blocks"][0]["text"]["text"], shown);
        assert!(matches!(
            s.outcome(&answer(410, &[], b"channel_is_archived")),
            Outcome::Disable(_)
        ));
        assert!(matches!(
            s.outcome(&answer(429, &h("retry-after", "1"), b"")),
            Outcome::Retry { after: Some(_), .. }
        ));
        assert!(matches!(
            s.outcome(&answer(400, &[], b"invalid_payload")),
            Outcome::DeadLetter(_)
        ));
    }
}
