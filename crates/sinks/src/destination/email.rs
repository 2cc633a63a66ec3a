//! Email over SMTP (the alert manager's users): one plain-text message per delivery, sent to a
//! relay with STARTTLS (port 587, the default), implicit TLS (465), or plain SMTP to a loopback
//! relay only (a local MTA, a test's stand-in). Its `Message-ID` is the (event, destination)
//! key and its `Date` the event's, so a message sent again after a lost answer is the same one,
//! byte for byte. The reply
//! code decides: 2xx taken, 4xx again later, 530/534/535 (authentication) disable, other 5xx
//! dead-letter.

use lettre::message::{header, Mailbox};

pub use super::wire::{Mail, Relay, SmtpTls};
use super::{Answer, Kind, Message, Outcome, Wire};

/// The longest subject, in characters (the rest of the text is in the body).
const MAX_SUBJECT: usize = 120;

/// An email destination.
#[derive(Debug)]
pub struct Email {
    /// The relay.
    pub relay: Relay,
    /// The sender.
    pub from: Mailbox,
    /// The recipients.
    pub to: Vec<Mailbox>,
    /// Put before each subject.
    pub subject_prefix: String,
}

/// An address (`Ops <ops@example.com>` or `ops@example.com`), or what is wrong with it.
pub fn mailbox(s: &str) -> Result<Mailbox, String> {
    s.parse().map_err(|e| format!("{s:?} is not an email address: {e}"))
}

impl Kind for Email {
    fn kind(&self) -> &'static str {
        "email"
    }

    fn request(&self, m: &Message) -> Result<Wire, String> {
        let first = m.text.lines().next().unwrap_or_default();
        let mut subject: String = self.subject_prefix.clone();
        subject.extend(first.chars().take(MAX_SUBJECT));
        let e = &m.event;
        let body = format!(
            "{}\n\n-- \n{} {} on {} (event {}, {})\n",
            m.text, e.event_type, e.payload.id, e.channel, e.id, e.timestamp.0
        );
        let mut b = lettre::Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .message_id(Some(format!("<{}@rakuda-realtime>", m.key)))
            // The event's time, not the attempt's: every attempt is the same message.
            .date(std::time::SystemTime::from(e.timestamp.0))
            .header(header::ContentType::TEXT_PLAIN);
        for to in &self.to {
            b = b.to(to.clone());
        }
        let message = b.body(body).map_err(|e| format!("the message: {e}"))?;
        Ok(Wire::Mail(Mail {
            relay: self.relay.clone(),
            message,
        }))
    }

    fn outcome(&self, a: &Answer<'_>) -> Outcome {
        let why = || format!("SMTP {}: {}", a.status, String::from_utf8_lossy(a.body));
        match a.status {
            200..=299 => Outcome::Accepted { pause: None },
            400..=499 => Outcome::Retry {
                after: None,
                why: why(),
            },
            530 | 534 | 535 => Outcome::Disable(why()),
            _ => Outcome::DeadLetter(why()),
        }
    }
}

/// Sends `mail`: the relay's reply code and text, or why there was none (a retry).
pub async fn send(mail: Mail, timeout: std::time::Duration) -> Result<(u16, Vec<u8>), String> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
    let r = &mail.relay;
    let builder = match r.tls {
        #[cfg(feature = "tls")]
        SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&r.host),
        #[cfg(feature = "tls")]
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&r.host),
        #[cfg(not(feature = "tls"))]
        SmtpTls::Starttls | SmtpTls::Tls => return Err("this build of the sinks has no TLS (feature tls)".into()),
        SmtpTls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&r.host)),
    }
    .map_err(|e: lettre::transport::smtp::Error| format!("the relay: {e}"))?;
    let mut builder = builder.port(r.port).timeout(Some(timeout));
    if let (Some(user), Some(password)) = (&r.username, &r.password) {
        builder = builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
            user.clone(),
            password.value()?,
        ));
    }
    let transport = builder.build();
    let sent = tokio::time::timeout(timeout * 2, transport.send(mail.message)).await;
    match sent {
        Err(_) => Err("the relay did not answer in time".into()),
        Ok(Ok(reply)) => Ok((
            u16::from(reply.code()),
            reply.message().collect::<Vec<_>>().join(" ").into_bytes(),
        )),
        Ok(Err(e)) => match e.status() {
            Some(code) => Ok((u16::from(code), e.to_string().into_bytes())),
            None => Err(format!("SMTP: {e}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::samples::*;

    fn email() -> Email {
        Email {
            relay: Relay {
                host: "127.0.0.1".into(),
                port: 2525,
                tls: SmtpTls::None,
                username: None,
                password: None,
            },
            from: mailbox("Rakuda <alerts@example.com>").unwrap(),
            to: vec![mailbox("ops@example.com").unwrap()],
            subject_prefix: "[rakuda] ".into(),
        }
    }

    #[test]
    fn a_plain_message_whose_id_is_the_key() {
        let m = message();
        let Wire::Mail(mail) = email().request(&m).unwrap() else {
            panic!("a mail")
        };
        let text = String::from_utf8(mail.message.formatted()).unwrap();
        assert!(
            text.contains(&format!("Message-ID: <{}@rakuda-realtime>", m.key)),
            "{text}"
        );
        assert!(
            text.contains("Subject: [rakuda] New order ord_81 on ebay: 129.5 USD"),
            "{text}"
        );
        assert!(text.contains("To: ops@example.com"), "{text}");
        let env = mail.message.envelope();
        assert_eq!(env.to().len(), 1);
        assert_eq!(env.from().map(|a| a.to_string()), Some("alerts@example.com".into()));
    }

    #[test]
    fn reply_codes() {
        let e = email();
        assert!(matches!(e.outcome(&answer(250, &[], b"ok")), Outcome::Accepted { .. }));
        assert!(matches!(
            e.outcome(&answer(451, &[], b"later")),
            Outcome::Retry { after: None, .. }
        ));
        assert!(matches!(e.outcome(&answer(535, &[], b"auth")), Outcome::Disable(_)));
        assert!(
            matches!(e.outcome(&answer(550, &[], b"no such user")), Outcome::DeadLetter(w) if w.contains("no such user"))
        );
    }
}
