//! `sse-gateway`: parse config (exit 64 if bad), log, serve until SIGTERM, drain.

use sse_gateway::{GatewayConfig, ENV_ALIASES};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = service_kit::start_or_exit(
        "sse-gateway",
        &GatewayConfig::default(),
        ENV_ALIASES,
        GatewayConfig::validate,
    );
    let r = sse_gateway::run(config, service_kit::shutdown_token()).await;
    service_kit::trace::shutdown();
    r
}
