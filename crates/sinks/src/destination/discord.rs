//! Discord webhooks: `POST <webhook URL>?wait=true` with `{content, allowed_mentions}`. A 429's
//! body says `retry_after` (float seconds) and whether the limit is `global`; `X-RateLimit-
//! Remaining: 0` with `X-RateLimit-Reset-After` asks for a pause before the next request; 404
//! means the webhook was deleted: disable, never retry. 401 and 403 disable too, so an invalid
//! configuration never spends Discord's invalid-request budget (10,000 per 10 minutes per IP,
//! past which the IP is banned); and each destination stops for the rest of a 10-minute window
//! once it had `delivery.invalid_budget` 401/403/429 answers in it (a 429 of scope `shared` is
//! not counted, as Discord does not).

use std::time::Duration;

use serde_json::json;

use super::{classify, json_request, Answer, Kind, Message, Outcome, Wire};
use crate::secret::Secret;

/// Discord's limit on a message's content, in characters.
const MAX_CONTENT: usize = 2000;

/// A Discord webhook.
#[derive(Debug)]
pub struct Discord {
    /// `https://discord.com/api/webhooks/{id}/{token}` (the token makes it a credential).
    pub url: Secret,
}

fn seconds(v: Option<f64>) -> Option<Duration> {
    v.filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
}

impl Kind for Discord {
    fn kind(&self) -> &'static str {
        "discord"
    }

    fn request(&self, m: &Message) -> Result<Wire, String> {
        let mut url = self.url.value()?;
        url.push_str(if url.contains('?') { "&wait=true" } else { "?wait=true" });
        let content: String = m.text.chars().take(MAX_CONTENT).collect();
        // No @everyone or role pings from an event's text.
        let body = json!({"content": content, "allowed_mentions": {"parse": []}});
        Ok(Wire::Http(json_request(url, &body, Vec::new())))
    }

    fn outcome(&self, a: &Answer<'_>) -> Outcome {
        match a.status {
            200..=299 => {
                let empty = a.header("x-ratelimit-remaining").map(str::trim) == Some("0");
                let reset = seconds(a.header("x-ratelimit-reset-after").and_then(|v| v.trim().parse().ok()));
                Outcome::Accepted {
                    pause: if empty { reset } else { None },
                }
            }
            429 => {
                let body: serde_json::Value = serde_json::from_slice(a.body).unwrap_or_default();
                let after = seconds(body["retry_after"].as_f64()).or_else(|| a.retry_after());
                let scope = if body["global"] == true { "global" } else { "per-route" };
                Outcome::Retry {
                    after,
                    why: format!("HTTP 429: {scope} rate limit"),
                }
            }
            404 => Outcome::Disable("HTTP 404: the webhook was deleted".into()),
            _ => classify(a),
        }
    }

    fn counts_as_invalid(&self, a: &Answer<'_>) -> bool {
        // Discord does not count a 429 of a limit shared with others.
        matches!(a.status, 401 | 403) || a.status == 429 && a.header("x-ratelimit-scope") != Some("shared")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::samples::*;

    #[test]
    fn a_shared_limit_does_not_count_against_the_budget() {
        let d = Discord {
            url: Secret::literal("https://discord.com/api/webhooks/1/t"),
        };
        let shared = h("x-ratelimit-scope", "shared");
        let user = h("x-ratelimit-scope", "user");
        assert!(!d.counts_as_invalid(&answer(429, &shared, b"{}")));
        assert!(d.counts_as_invalid(&answer(429, &user, b"{}")));
        assert!(d.counts_as_invalid(&answer(401, &[], b"")));
        assert!(!d.counts_as_invalid(&answer(404, &[], b"")));
    }

    #[test]
    fn content_wait_and_what_discord_answers() {
        let d = Discord {
            url: Secret::literal("http://127.0.0.1:9/api/webhooks/1/tok"),
        };
        let mut m = message();
        m.text = "@everyone ".to_owned() + &"x".repeat(3000);
        let r = d.request(&m).unwrap().http();
        assert!(r.url.ends_with("/api/webhooks/1/tok?wait=true"));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["content"].as_str().unwrap().chars().count(), 2000);
        assert_eq!(body["allowed_mentions"]["parse"], json!([]));
        let limited = d.outcome(&answer(
            429,
            &[],
            br#"{"message":"You are being rate limited.","retry_after":1.5,"global":false}"#,
        ));
        assert_eq!(
            limited,
            Outcome::Retry {
                after: Some(Duration::from_millis(1500)),
                why: "HTTP 429: per-route rate limit".into()
            }
        );
        let headers = [
            ("x-ratelimit-remaining".to_owned(), "0".to_owned()),
            ("x-ratelimit-reset-after".to_owned(), "0.25".to_owned()),
        ];
        assert_eq!(
            d.outcome(&answer(200, &headers, b"{}")),
            Outcome::Accepted {
                pause: Some(Duration::from_millis(250))
            }
        );
        assert!(matches!(d.outcome(&answer(404, &[], b"")), Outcome::Disable(_)));
        assert!(matches!(d.outcome(&answer(401, &[], b"")), Outcome::Disable(_)));
    }
}
