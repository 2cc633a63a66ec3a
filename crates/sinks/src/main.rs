//! `sinks`: route events to outside destinations until SIGTERM; or `sinks dead-letters <d>`,
//! `sinks replay <d>`, `sinks enable <d>` for an operator.

use sinks::{SinksConfig, ENV_ALIASES};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
                "sinks: unknown command {other:?}\nusage: sinks [run] | dead-letters <d> | replay <d> | enable <d>"
            );
            std::process::exit(2);
        }
    }
}
