//! `rakuda-soak` (`make soak`): the `make up` topology for `SOAK_MINUTES` (30) under
//! `SOAK_CLIENTS` (1000) resuming SSE clients through nginx and `SOAK_RATE` (200) events/s,
//! with a gateway restarted every `SOAK_RESTART_SECS` (120), one kill -9 and one Redis
//! `SHUTDOWN SAVE` + restart. Prints the report and writes it, the samples and `soak.png` to
//! `SOAK_DIR` (`target/soak/<unix time>`). Exits 1 when a target is missed.

mod balance;
mod client;
mod faults;
mod hist;
mod load;
mod memory;
mod plot;
mod report;
mod run;
mod topology;

#[tokio::main]
async fn main() {
    let settings = match run::Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rakuda-soak: {e}");
            std::process::exit(2);
        }
    };
    let dir = settings.dir.clone();
    let outcome = match run::soak(settings).await {
        Ok(o) => o,
        Err(e) => {
            eprintln!("rakuda-soak: {e}");
            std::process::exit(1);
        }
    };
    match outcome.write(&dir) {
        Ok(text) => println!("{text}\nreport, samples and soak.png in {}", dir.display()),
        Err(e) => eprintln!("rakuda-soak: writing the report to {}: {e}", dir.display()),
    }
    std::process::exit(if outcome.passed { 0 } else { 1 });
}
