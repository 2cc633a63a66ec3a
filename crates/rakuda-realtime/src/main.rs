//! `rakuda-realtime`: the whole system in one process (`make run`).

use rakuda_realtime::{Config, ENV_ALIASES};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = service_kit::start_or_exit("rakuda-realtime", &Config::default(), ENV_ALIASES, Config::validate);
    let r = rakuda_realtime::run(config, service_kit::shutdown_token()).await;
    service_kit::trace::shutdown();
    r
}
