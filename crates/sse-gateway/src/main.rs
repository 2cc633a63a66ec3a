//! `sse-gateway`: parse config (exit 64 if bad), log, serve until SIGTERM, drain.

use sse_gateway::{GatewayConfig, ENV_ALIASES};

fn main() -> anyhow::Result<()> {
    let config = service_kit::start_or_exit(
        "sse-gateway",
        &GatewayConfig::default(),
        ENV_ALIASES,
        GatewayConfig::validate,
    );
    let (main, _) = sse_gateway::edge::threads(config.main_threads, config.edge_threads);
    let runtime = sse_gateway::edge::main_runtime(main)?;
    // In the runtime: the shutdown token's signal listener is a task.
    let r = runtime.block_on(async { sse_gateway::run(config, service_kit::shutdown_token()).await });
    service_kit::trace::shutdown();
    r
}
