//! The provider's periodic jobs (purge, key refresh): each runs on its own
//! interval until the server stops and aborts it.

use std::future::Future;
use std::time::Duration;

use crate::Result;

/// Runs `job` every `seconds` seconds, forever (never when `seconds` is 0).
/// A failed run is logged and tried again at the next tick.
pub(crate) async fn every<F, Fut>(seconds: u64, what: &'static str, job: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    if seconds == 0 {
        return;
    }
    let mut ticks = tokio::time::interval(Duration::from_secs(seconds));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(e) = job().await {
            tracing::warn!(error = %e, "{what} failed; retrying at the next interval");
        }
    }
}
