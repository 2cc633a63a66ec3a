//! `sse-gateway`: parse config (exit 64 if bad), log, serve until SIGTERM, drain.

use service_kit::{init_tracing, load_config, process_env, shutdown_token, LogFormat, EXIT_BAD_CONFIG};
use sse_gateway::{GatewayConfig, ENV_ALIASES};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = process_env();
    let config = LogFormat::from_env(&env)
        .map_err(|e| e.to_string())
        .and_then(|format| {
            init_tracing(format);
            load_config(&GatewayConfig::default(), ENV_ALIASES, &env).map_err(|e| e.to_string())
        })
        .and_then(|c| c.validate().map(|_| c));
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sse-gateway: bad configuration: {e}");
            std::process::exit(EXIT_BAD_CONFIG);
        }
    };
    sse_gateway::run(config, shutdown_token()).await
}
