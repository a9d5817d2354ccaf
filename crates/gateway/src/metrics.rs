//! The gateway's metrics (docs/operations.md), recorded through the
//! `metrics` facade into the process's registry. Routes are labelled by
//! their configured prefix (bounded by the route table), never by the
//! request's path.

use std::time::Duration;

use metrics::SharedString;

/// An upstream call of the route at `prefix`: its outcome (`2xx` … `5xx`,
/// `timeout`, `unavailable`) and how long the answer's head took. A
/// timeout, an unreachable upstream and a 5xx also count as errors.
pub(crate) fn upstream(prefix: &str, outcome: &'static str, took: Duration) {
    let labels = [
        ("route", SharedString::from(prefix.to_owned())),
        ("outcome", SharedString::const_str(outcome)),
    ];
    metrics::histogram!("echo_gateway_upstream_duration_seconds", &labels)
        .record(took.as_secs_f64());
    if matches!(outcome, "5xx" | "timeout" | "unavailable") {
        metrics::counter!("echo_gateway_upstream_errors_total", &labels).increment(1);
    }
}

/// Sessions alive now (as the session store counts them).
pub(crate) fn live_sessions(count: u64) {
    metrics::gauge!("echo_gateway_live_sessions").set(count as f64);
}
