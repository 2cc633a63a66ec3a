//! Stream tickets: a stream URL (`EventSource` cannot send headers) carries a ticket instead of
//! the token. `POST /api/realtime/ticket` turns the caller's token into one: it opens a stream
//! only within `auth.ticket_ttl_secs`, so one written to a proxy's log is worthless soon after,
//! and the stream it opens still ends at the token's own `exp`. Signed with a key of its own
//! (never accepted as a token), stateless, so any replica redeems what another issued.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{
    config::AuthConfig,
    principal::{AuthError, Grant, Principal},
};

/// What a ticket says.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// Always `stream-ticket`.
    typ: String,
    sub: String,
    /// `None`: every channel.
    channels: Option<Vec<String>>,
    role: Option<String>,
    /// The token's `exp` (the stream ends then).
    session_exp: Option<u64>,
    /// The ticket opens a stream until then, Unix seconds.
    use_by: u64,
}

const TYP: &str = "stream-ticket";

/// Issues and redeems tickets.
pub struct Tickets {
    encode: EncodingKey,
    decode: DecodingKey,
    ttl_secs: u64,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tickets")
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl Tickets {
    /// The tickets of `c`: signed with `auth.ticket_secret`, or else a key derived from the
    /// token secret (`token_secret`: HS256's, or dev mode's). None when there is neither (public
    /// keys only, no ticket secret): tickets are off.
    pub fn new(c: &AuthConfig, token_secret: Option<&str>) -> Result<Option<Tickets>, String> {
        if !(5..=600).contains(&c.ticket_ttl_secs) {
            return Err(format!(
                "auth.ticket_ttl_secs: {} is outside 5..=600",
                c.ticket_ttl_secs
            ));
        }
        let key = match (&c.ticket_secret, token_secret) {
            (Some(s), _) if s.len() < 32 => return Err("auth.ticket_secret: at least 32 characters".into()),
            (Some(s), _) => s.clone(),
            // A key of its own: a ticket never verifies as a token, nor a token as a ticket.
            (None, Some(s)) => format!("{s}\u{0}stream-ticket"),
            (None, None) => return Ok(None),
        };
        Ok(Some(Tickets {
            encode: EncodingKey::from_secret(key.as_bytes()),
            decode: DecodingKey::from_secret(key.as_bytes()),
            ttl_secs: c.ticket_ttl_secs,
        }))
    }

    /// A ticket for `p` and the time it can be used until (Unix seconds).
    pub fn issue(&self, p: &Principal, now: u64) -> (String, u64) {
        let use_by = now + self.ttl_secs;
        let claims = Claims {
            typ: TYP.into(),
            sub: p.sub.clone(),
            channels: match &p.channels {
                Grant::All => None,
                Grant::Some(list) => Some(list.iter().map(|c| c.to_string()).collect()),
            },
            role: p.role.clone(),
            session_exp: p.expires_at,
            use_by,
        };
        let ticket = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encode)
            .expect("HS256 signing does not fail");
        (ticket, use_by)
    }

    /// The caller a ticket stands for, if it is genuine and not used too late.
    pub fn redeem(&self, ticket: &str, now: u64) -> Result<Principal, AuthError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_exp = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        let c = jsonwebtoken::decode::<Claims>(ticket, &self.decode, &v)
            .map_err(|e| AuthError::Invalid(format!("not a stream ticket of this server ({e})")))?
            .claims;
        if c.typ != TYP {
            return Err(AuthError::Invalid("not a stream ticket".into()));
        }
        if c.use_by < now {
            return Err(AuthError::Invalid(format!(
                "the stream ticket could be used until {}; ask for a new one (POST /api/realtime/ticket)",
                c.use_by
            )));
        }
        if c.session_exp.is_some_and(|exp| exp < now) {
            return Err(AuthError::Expired);
        }
        let channels = match c.channels {
            None => Grant::All,
            Some(list) => Grant::Some(
                list.iter()
                    .map(|s| event_bus::Channel::new(s.as_str()).map_err(|e| AuthError::Invalid(e.to_string())))
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(Principal {
            sub: c.sub,
            channels,
            role: c.role,
            expires_at: c.session_exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-ticket-test-secret-of-32-characters";

    fn tickets() -> Tickets {
        Tickets::new(&AuthConfig::default(), Some(SECRET)).unwrap().unwrap()
    }

    fn ana() -> Principal {
        Principal {
            sub: "ana".into(),
            channels: Grant::Some(vec![event_bus::Channel::ORDERS]),
            role: None,
            expires_at: Some(10_000),
        }
    }

    #[test]
    fn a_ticket_stands_for_its_caller_until_its_use_by() {
        let t = tickets();
        let (ticket, use_by) = t.issue(&ana(), 1_000);
        assert_eq!(use_by, 1_030);
        assert_eq!(t.redeem(&ticket, 1_030).unwrap(), ana());
        assert!(matches!(t.redeem(&ticket, 1_031), Err(AuthError::Invalid(m)) if m.contains("ask for a new one")));
        // Past the token's own exp it opens nothing.
        let (late, _) = t.issue(&ana(), 9_990);
        assert!(matches!(t.redeem(&late, 10_001), Err(AuthError::Expired)));
    }

    #[test]
    fn tickets_and_tokens_do_not_stand_for_each_other() {
        let t = tickets();
        // A token signed with the token secret is not a ticket.
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"typ": TYP, "sub": "x", "use_by": u64::MAX}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(t.redeem(&token, 0).is_err());
        // A ticket does not verify with the token secret.
        let (ticket, _) = t.issue(&ana(), 0);
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_exp = false;
        v.required_spec_claims.clear();
        assert!(
            jsonwebtoken::decode::<serde_json::Value>(&ticket, &DecodingKey::from_secret(SECRET.as_bytes()), &v)
                .is_err()
        );
        // Tampered: refused.
        let mut bad = ticket.into_bytes();
        let n = bad.len();
        bad[n - 2] = if bad[n - 2] == b'A' { b'B' } else { b'A' };
        assert!(t.redeem(std::str::from_utf8(&bad).unwrap(), 0).is_err());
    }

    #[test]
    fn without_any_secret_tickets_are_off_and_bad_settings_name_the_key() {
        assert!(Tickets::new(&AuthConfig::default(), None).unwrap().is_none());
        let short = AuthConfig {
            ticket_secret: Some("short".into()),
            ..Default::default()
        };
        assert!(Tickets::new(&short, None).unwrap_err().contains("auth.ticket_secret"));
        let ttl = AuthConfig {
            ticket_ttl_secs: 0,
            ..Default::default()
        };
        assert!(Tickets::new(&ttl, Some(SECRET))
            .unwrap_err()
            .contains("auth.ticket_ttl_secs"));
    }
}
