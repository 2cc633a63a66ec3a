//! `rakuda-realtime`: the whole system in one process (`make run`).

use service_kit::{init_tracing, load_config, process_env, shutdown_token, LogFormat, EXIT_BAD_CONFIG};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = process_env();
    let config = LogFormat::from_env(&env)
        .map_err(|e| e.to_string())
        .and_then(|format| {
            init_tracing(format);
            load_config(&rakuda_realtime::Config::default(), rakuda_realtime::ENV_ALIASES, &env)
                .map_err(|e| e.to_string())
        })
        .and_then(|c| c.validate().map(|_| c));
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rakuda-realtime: bad configuration: {e}");
            std::process::exit(EXIT_BAD_CONFIG);
        }
    };
    rakuda_realtime::run(config, shutdown_token()).await
}
