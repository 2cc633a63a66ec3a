//! `rakuda-bus`: look at and poke the bus from a shell.
//!
//! ```text
//! rakuda-bus tail [--from CURSOR] [CHANNEL...]      print events as JSON lines (all channels by default)
//! rakuda-bus publish CHANNEL TYPE ID ACTION [DATA]  publish one event, print its id
//! rakuda-bus head [CHANNEL...]                      print the cursor at the head of the channels
//! ```
//!
//! `REDIS_URL` selects Redis (unset: a memory bus, useful only for trying the commands);
//! `REALTIME_PREFIX` sets the key prefix. `tail` prints `{"cursor": ...}` lines after events
//! when `--cursors` is given, so a script can resume where it stopped.

use std::io::Write;

use event_bus::{connect, Action, Broker, BusConfig, Channel, Cursor, Delivery, EventType, NewEvent, Payload};

const USAGE: &str = "usage: rakuda-bus tail [--from CURSOR] [--cursors] [CHANNEL...]
       rakuda-bus publish CHANNEL TYPE ID created|updated|deleted [DATA_JSON]
       rakuda-bus head [CHANNEL...]";

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("rakuda-bus: {message}");
    std::process::exit(2);
}

fn channels(config: &BusConfig, names: &[String]) -> Vec<Channel> {
    if names.is_empty() {
        return config.channel_names();
    }
    names
        .iter()
        .map(|n| Channel::new(n.as_str()).unwrap_or_else(|e| fail(e)))
        .collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut config = BusConfig {
        redis_url: std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()),
        ..Default::default()
    };
    if let Ok(prefix) = std::env::var("REALTIME_PREFIX") {
        config.prefix = prefix;
    }
    let Some((command, rest)) = args.split_first() else {
        fail(USAGE)
    };
    let bus = connect(config.clone()).await.unwrap_or_else(|e| fail(e));
    match command.as_str() {
        "tail" => {
            let mut from = None;
            let mut print_cursors = false;
            let mut names = Vec::new();
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--from" => {
                        let text = it.next().unwrap_or_else(|| fail("--from needs a cursor"));
                        from = Some(text.parse::<Cursor>().unwrap_or_else(|e| fail(e)));
                    }
                    "--cursors" => print_cursors = true,
                    other => names.push(other.to_owned()),
                }
            }
            let channels = channels(&config, &names);
            let mut cursor = from.clone().unwrap_or_default();
            let mut sub = bus
                .subscribe(&channels, from.as_ref())
                .await
                .unwrap_or_else(|e| fail(e));
            // Tell a supervising script that the subscription is in place.
            eprintln!(
                "rakuda-bus: following {}",
                channels.iter().map(Channel::as_str).collect::<Vec<_>>().join(",")
            );
            while let Some(d) = sub.next().await {
                d.advance(&mut cursor);
                let line = match &d {
                    Delivery::Event(e) => e.to_json(),
                    Delivery::Resync { channel, resume_from } => {
                        format!(r#"{{"type":"RESYNC","channel":"{channel}","resume_from":"{resume_from}"}}"#)
                    }
                };
                let mut out = std::io::stdout().lock();
                let ok = writeln!(out, "{line}").is_ok()
                    && (!print_cursors || writeln!(out, r#"{{"cursor":"{cursor}"}}"#).is_ok())
                    && out.flush().is_ok();
                if !ok {
                    return;
                }
            }
        }
        "publish" => {
            let [channel, ty, id, action, data @ ..] = rest else {
                fail(USAGE)
            };
            let action = match action.as_str() {
                "created" => Action::Created,
                "updated" => Action::Updated,
                "deleted" => Action::Deleted,
                other => fail(format!("action {other:?}: expected created, updated or deleted")),
            };
            let mut payload = Payload::new(id.as_str(), action);
            if let Some(data) = data.first() {
                payload =
                    payload.with_data(serde_json::from_str(data).unwrap_or_else(|e| fail(format!("DATA_JSON: {e}"))));
            }
            let channel = Channel::new(channel.as_str()).unwrap_or_else(|e| fail(e));
            let ty = EventType::new(ty.as_str()).unwrap_or_else(|e| fail(e));
            let published = bus
                .publish(&channel, NewEvent::new(ty, payload))
                .await
                .unwrap_or_else(|e| fail(e));
            println!("{}", published.id);
        }
        "head" => {
            let head = bus.head(&channels(&config, rest)).await.unwrap_or_else(|e| fail(e));
            println!("{head}");
        }
        _ => fail(USAGE),
    }
}
