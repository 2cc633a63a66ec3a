//! What a delivery puts on the wire: an HTTP [`Request`] or a [`Mail`] for an SMTP relay.

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// An HTTP request to send.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    /// `POST`, always, today.
    pub method: &'static str,
    /// Where: from configuration only, never from an event.
    pub url: String,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Request {
    /// URLs (Slack's and Discord's carry their token) and credentials are not printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &"<redacted>")
            .field("headers", &names)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// What a delivery puts on the wire.
#[derive(Debug)]
pub enum Wire {
    /// An HTTP request.
    Http(Request),
    /// A message for an SMTP relay.
    Mail(Mail),
}

#[cfg(test)]
impl Wire {
    /// The HTTP request (a test's shortcut).
    pub fn http(self) -> Request {
        match self {
            Wire::Http(r) => r,
            Wire::Mail(_) => panic!("a mail, not an HTTP request"),
        }
    }
}

/// How the connection to the relay is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// STARTTLS, required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// None: only to a loopback relay.
    None,
}

/// An SMTP relay and the account on it.
#[derive(Clone, Debug, PartialEq)]
pub struct Relay {
    /// Its host name.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// How the connection is protected.
    pub tls: SmtpTls,
    /// The account, if the relay wants one.
    pub username: Option<String>,
    /// Its password.
    pub password: Option<Secret>,
}

/// A message ready for a relay.
#[derive(Debug)]
pub struct Mail {
    /// Where it is sent.
    pub relay: Relay,
    /// The message, with its envelope.
    pub message: lettre::Message,
}
