//! The loop every sinks task runs (a channel's reader, a destination's deliverer, a route's
//! escalations): a step, then the wait it asks for, until stopped.

use std::time::Duration;

/// How long a failed step waits before the next.
pub const AFTER_FAILURE: Duration = Duration::from_millis(500);

/// `repeat!(stop, step, |e| log)`: evaluates `step` (an expression of the task's async fn, a
/// `Result<Duration, String>`: how long to wait before the next step, zero for at once, or why
/// it failed, having undone what it held) until the `CancellationToken` `stop` fires. The first
/// failure in a row is logged by `log`, and the next step comes [`AFTER_FAILURE`] later. A
/// macro, not a function taking an async closure: the tasks are spawned, and such a closure's
/// future is not `Send` for every lifetime it borrows.
macro_rules! repeat {
    ($stop:expr, $step:expr, |$e:ident| $log:expr) => {{
        let mut logged = false;
        while !$stop.is_cancelled() {
            let wait: std::time::Duration = match $step {
                Ok(w) => {
                    logged = false;
                    w
                }
                Err($e) => {
                    if !logged {
                        $log;
                        logged = true;
                    }
                    $crate::pace::AFTER_FAILURE
                }
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = $stop.cancelled() => break,
                }
            }
        }
    }};
}
pub(crate) use repeat;
