//! `sinks`: route events to outside destinations until SIGTERM; or `sinks dead-letters <d>`,
//! `sinks replay <d>`, `sinks enable <d>`, `sinks vapid-keys` for an operator.

use sinks::{SinksConfig, ENV_ALIASES};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("vapid-keys") {
        let (private, public) = sinks::destination::web_push::new_keys();
        println!("vapid_private_key = \"{private}\"  # the sinks' web_push destination: a secret\nnotifications.push.public_key = \"{public}\"  # the gateway's");
        return Ok(());
    }
    let config = service_kit::start_or_exit("sinks", &SinksConfig::default(), ENV_ALIASES, SinksConfig::validate);
    match args.first().map(String::as_str) {
        None | Some("run") => sinks::run(config, service_kit::shutdown_token()).await,
        Some(cmd @ ("dead-letters" | "replay" | "enable")) => match args.get(1) {
            Some(d) if config.destinations.contains_key(d) => sinks::admin(&config, cmd, d).await,
            _ => {
                eprintln!(
                    "sinks {cmd} <destination>: one of {:?}",
                    config.destinations.keys().collect::<Vec<_>>()
                );
                std::process::exit(2);
            }
        },
        Some(other) => {
            eprintln!(
                "sinks: unknown command {other:?}\nusage: sinks [run] | dead-letters <d> | replay <d> | enable <d> | vapid-keys"
            );
            std::process::exit(2);
        }
    }
}
