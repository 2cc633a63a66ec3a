//! `stats-aggregator`: aggregate until SIGTERM; or `stats-aggregator report --date D [--to D2]
//! [--json]` to print statistics.

use stats_aggregator::{AggregatorConfig, ENV_ALIASES};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = service_kit::start_or_exit(
        "stats-aggregator",
        &AggregatorConfig::default(),
        ENV_ALIASES,
        AggregatorConfig::validate,
    );
    match args.first().map(String::as_str) {
        None | Some("run") => stats_aggregator::run(config, service_kit::shutdown_token()).await,
        Some("report") => match stats_aggregator::report::main(config, &args[1..]).await {
            Ok(text) => {
                print!("{text}");
                Ok(())
            }
            Err(e) => {
                eprintln!("stats-aggregator report: {e}");
                std::process::exit(2);
            }
        },
        Some(other) => {
            eprintln!("stats-aggregator: unknown command {other:?}\nusage: stats-aggregator [run]\n       stats-aggregator report --date YYYY-MM-DD [--to YYYY-MM-DD] [--json]");
            std::process::exit(2);
        }
    }
}
