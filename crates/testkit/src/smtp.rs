//! An SMTP relay of a test's own on loopback (RFC 5321, plain text, `AUTH PLAIN`), standing in
//! for the alert manager's mail relay: it records every message and answers the end of each
//! `DATA` with what the test's function says (250, or a failure such as 451 or 550). At most
//! 256 connections, each read with a deadline; it lives as long as the test process.

use std::{
    io::{BufRead, BufReader, Write},
    sync::{Arc, Mutex},
    time::Duration,
};

/// One message as received.
#[derive(Clone, Debug, Default)]
pub struct Mail {
    /// `MAIL FROM`.
    pub from: String,
    /// `RCPT TO`, each.
    pub to: Vec<String>,
    /// The user of `AUTH PLAIN`, with its password.
    pub auth: Option<(String, String)>,
    /// The message as sent (headers and body, dot-unstuffed).
    pub data: String,
}

impl Mail {
    /// A header's value (the first), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with([' ', '\t']) {
                    v.push_str(line.trim_start());
                    continue;
                }
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case(name) {
                    value = Some(v.trim().to_owned());
                }
            }
        }
        value
    }
}

type Answer = dyn Fn(&Mail, usize) -> (u16, String) + Send + Sync;

/// A running relay.
#[derive(Clone)]
pub struct Relay {
    /// Its port on 127.0.0.1.
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("port", &self.port).finish()
    }
}

impl Relay {
    /// Starts one; `answer(mail, n)` is the reply to the end of the `n`th message's data (from
    /// 0): every message is recorded, whatever the answer.
    pub fn start(answer: impl Fn(&Mail, usize) -> (u16, String) + Send + Sync + 'static) -> Relay {
        let mails = Arc::new(Mutex::new(Vec::new()));
        let store = mails.clone();
        let port = crate::receiver::accept(move |conn| serve(conn, &store, &answer));
        Relay { port, mails }
    }

    /// Every message so far, in arrival order.
    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

fn plain(b64: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let mut parts = raw.split(|b| *b == 0).map(|p| String::from_utf8_lossy(p).into_owned());
    let _authzid = parts.next()?;
    Some((parts.next()?, parts.next()?))
}

fn serve(conn: std::net::TcpStream, store: &Mutex<Vec<Mail>>, answer: &Answer) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = conn.set_nodelay(true);
    let Ok(read) = conn.try_clone() else { return };
    let mut reader = BufReader::new(read);
    let mut conn = conn;
    let mut say = |s: &str| conn.write_all(format!("{s}\r\n").as_bytes()).is_ok();
    if !say("220 127.0.0.1 test relay") {
        return;
    }
    let mut mail = Mail::default();
    let mut auth = None;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.len() > 4096 {
            return;
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        let ok = if upper.starts_with("EHLO") {
            say("250-127.0.0.1\r\n250-AUTH PLAIN\r\n250-8BITMIME\r\n250 SMTPUTF8")
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            say("250 ok")
        } else if let Some(b64) = upper.starts_with("AUTH PLAIN ").then(|| &command[11..]) {
            auth = plain(b64);
            say(if auth.is_some() {
                "235 2.7.0 ok"
            } else {
                "501 5.5.2 bad"
            })
        } else if upper.starts_with("MAIL FROM:") {
            mail = Mail {
                from: command[10..]
                    .trim()
                    .trim_matches(['<', '>'])
                    .split('>')
                    .next()
                    .unwrap_or("")
                    .to_owned(),
                auth: auth.clone(),
                ..Mail::default()
            };
            say("250 2.1.0 ok")
        } else if upper.starts_with("RCPT TO:") {
            mail.to.push(command[8..].trim().trim_matches(['<', '>']).to_owned());
            say("250 2.1.5 ok")
        } else if upper == "DATA" {
            if !say("354 end with <CRLF>.<CRLF>") {
                return;
            }
            let mut data = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || data.len() > 16 << 20 {
                    return;
                }
                if line == ".\r\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            mail.data = data;
            let n = {
                let mut all = store.lock().unwrap();
                all.push(mail.clone());
                all.len() - 1
            };
            let (code, text) = answer(&mail, n);
            say(&format!("{code} {text}"))
        } else if upper == "RSET" {
            mail = Mail::default();
            say("250 ok")
        } else if upper == "QUIT" {
            let _ = say("221 bye");
            return;
        } else {
            say("502 5.5.1 not implemented")
        };
        if !ok {
            return;
        }
    }
}
