//! The gateway's metrics (docs/operations.md), recorded through the
//! `metrics` facade into the process's registry. Routes are labelled by
//! their configured prefix (bounded by the route table), never by the
//! request's path.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram, SharedString};

/// A route's upstream calls: by outcome (`2xx` … `5xx`, `timeout`,
/// `unavailable`), how long the answer's head took; a timeout, an
/// unreachable upstream and a 5xx also count as errors. The handles are
/// made on a route's first call of each outcome (the recorder is installed
/// by then) and kept, so a call is not a registry lookup.
pub(crate) struct UpstreamMetrics {
    /// The route's label: its configured prefix.
    route: SharedString,
    by_outcome: [OnceLock<(Histogram, Option<Counter>)>; OUTCOMES.len()],
}

/// Every outcome an upstream call has.
const OUTCOMES: [&str; 7] = ["1xx", "2xx", "3xx", "4xx", "5xx", "timeout", "unavailable"];

impl UpstreamMetrics {
    /// The metrics of the route at `prefix`.
    pub(crate) fn of_route(prefix: &str) -> Self {
        Self {
            route: SharedString::from(prefix.to_owned()),
            by_outcome: Default::default(),
        }
    }

    /// A call that ended as `outcome` (one of [`OUTCOMES`]) after `took`.
    pub(crate) fn record(&self, outcome: &'static str, took: Duration) {
        let Some(at) = OUTCOMES.iter().position(|known| *known == outcome) else {
            return;
        };
        let (duration, errors) = self.by_outcome[at].get_or_init(|| {
            let labels = [
                ("route", self.route.clone()),
                ("outcome", SharedString::const_str(outcome)),
            ];
            let errors = matches!(outcome, "5xx" | "timeout" | "unavailable")
                .then(|| metrics::counter!("echo_gateway_upstream_errors_total", &labels));
            (
                metrics::histogram!("echo_gateway_upstream_duration_seconds", &labels),
                errors,
            )
        });
        duration.record(took.as_secs_f64());
        if let Some(errors) = errors {
            errors.increment(1);
        }
    }
}

/// Sessions alive now (as the session store counts them).
pub(crate) fn live_sessions(count: u64) {
    metrics::gauge!("echo_gateway_live_sessions").set(count as f64);
}
