//! `worker-emitter`: parse config (exit 64 if bad), check the queues' producers, process until
//! SIGTERM, let in-flight jobs finish.

use worker_emitter::{EmitterConfig, ENV_ALIASES};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = service_kit::start_or_exit(
        "worker-emitter",
        &EmitterConfig::default(),
        ENV_ALIASES,
        EmitterConfig::validate,
    );
    let r = worker_emitter::run(config, service_kit::shutdown_token()).await;
    service_kit::trace::shutdown();
    if let Err(e) = r {
        tracing::error!(error = %e, "worker-emitter cannot run");
        eprintln!("worker-emitter: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}
