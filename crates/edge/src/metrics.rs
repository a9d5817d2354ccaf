//! The process's metrics registry. Every crate records through the
//! `metrics` facade (`metrics::counter!`, …), which has one recorder per
//! process; this is it, a Prometheus recorder without a listener of its
//! own: `/metrics` of each service renders it (`ops.rs`). In `echod up`
//! every service shares the process, so each one's `/metrics` shows the
//! whole process, and per-service series carry a `service` label (see
//! docs/operations.md).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Histogram buckets, in seconds: from a cached token check (a
/// millisecond) to a slow parse or job (minutes).
const BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use (`echod` calls this at
/// start, so nothing recorded before a service runs is lost).
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed: /metrics stays empty");
        }
        describe();
        handle
    })
}

/// What a metric is, for its `# HELP` line.
enum Kind {
    Counter,
    Gauge,
    Seconds,
}

/// Every metric Echo records, with its help text: the catalogue
/// docs/operations.md lists. A metric recorded under another name has no
/// `# HELP` line, which the ops test catches.
const CATALOGUE: &[(&str, Kind, &str)] = &[
    (
        "echo_http_requests_total",
        Kind::Counter,
        "HTTP requests answered, by service, method, route template and status.",
    ),
    (
        "echo_http_request_duration_seconds",
        Kind::Seconds,
        "Time to answer an HTTP request, by service, method, route template and status.",
    ),
    (
        "echo_identity_tokens_issued_total",
        Kind::Counter,
        "Access tokens issued, by grant type and client.",
    ),
    (
        "echo_identity_logins_total",
        Kind::Counter,
        "Password logins, by outcome.",
    ),
    (
        "echo_identity_lockouts_total",
        Kind::Counter,
        "Accounts locked after repeated failed logins.",
    ),
    (
        "echo_identity_mfa_total",
        Kind::Counter,
        "Second-factor checks, by outcome.",
    ),
    (
        "echo_identity_refresh_reuse_detected_total",
        Kind::Counter,
        "Spent refresh tokens presented again (their family revoked).",
    ),
    (
        "echo_jwks_fetches_total",
        Kind::Counter,
        "Fetches of the issuer's JWKS by token verifiers.",
    ),
    (
        "echo_jwks_fetch_failures_total",
        Kind::Counter,
        "JWKS fetches that failed.",
    ),
    (
        "echo_audit_writer_queue_depth",
        Kind::Gauge,
        "Audit events waiting in memory to be sent.",
    ),
    (
        "echo_audit_writer_spool_bytes",
        Kind::Gauge,
        "Bytes of audit events spooled to disk while the audit service is away.",
    ),
    (
        "echo_audit_writer_spooled_events",
        Kind::Gauge,
        "Audit events spooled to disk.",
    ),
    (
        "echo_audit_writer_events_sent_total",
        Kind::Counter,
        "Audit events the audit service accepted.",
    ),
    (
        "echo_audit_writer_events_dropped_total",
        Kind::Counter,
        "Audit events dropped (spool full).",
    ),
    (
        "echo_queue_pending_jobs",
        Kind::Gauge,
        "Jobs waiting in the queue.",
    ),
    (
        "echo_queue_dead_letters",
        Kind::Gauge,
        "Jobs in the dead-letter set.",
    ),
    (
        "echo_worker_jobs_total",
        Kind::Counter,
        "Jobs the worker finished, by result.",
    ),
    (
        "echo_worker_jobs_dead_lettered_total",
        Kind::Counter,
        "Jobs the worker gave up on.",
    ),
    (
        "echo_worker_job_duration_seconds",
        Kind::Seconds,
        "Time from taking a job to finishing it.",
    ),
    (
        "echo_gateway_upstream_duration_seconds",
        Kind::Seconds,
        "Time an upstream took to answer, by route.",
    ),
    (
        "echo_gateway_upstream_errors_total",
        Kind::Counter,
        "Upstream calls that failed or timed out, by route.",
    ),
    (
        "echo_gateway_live_sessions",
        Kind::Gauge,
        "Browser sessions alive at the gateway.",
    ),
];

fn describe() {
    for (name, kind, help) in CATALOGUE {
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, *help),
            Kind::Gauge => metrics::describe_gauge!(*name, *help),
            Kind::Seconds => metrics::describe_histogram!(*name, metrics::Unit::Seconds, *help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalogued(name: &str) -> bool {
        CATALOGUE.iter().any(|(known, _, _)| *known == name)
    }

    /// Names follow Prometheus's conventions: `echo_` first, counters in
    /// `_total`, histograms in a unit (`_seconds`), gauges in neither.
    #[test]
    fn every_name_follows_the_prometheus_conventions() {
        for (name, kind, help) in CATALOGUE {
            assert!(name.starts_with("echo_"), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
            let fits = match kind {
                Kind::Counter => name.ends_with("_total"),
                Kind::Seconds => name.ends_with("_seconds"),
                Kind::Gauge => !name.ends_with("_total") && !name.ends_with("_seconds"),
            };
            assert!(fits, "{name}: its suffix does not say its kind");
            assert!(help.ends_with('.') && help.len() > 10, "{name}: {help}");
        }
    }

    /// docs/operations.md's table lists every metric, and its alert rules
    /// name only metrics Echo records.
    #[test]
    fn the_operations_guide_lists_every_metric_and_alerts_on_real_ones() {
        let guide = include_str!("../../../docs/operations.md");
        for (name, _, _) in CATALOGUE {
            assert!(
                guide.contains(&format!("| `{name}` |")),
                "{name} is not in docs/operations.md's table"
            );
        }
        let rules = guide.lines().filter(|line| line.contains("expr:"));
        let mut named = 0;
        for line in rules {
            for word in line
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("echo_"))
            {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| word.strip_suffix(suffix))
                    .filter(|family| catalogued(family))
                    .unwrap_or(word);
                assert!(catalogued(family), "an alert rule names {word}");
                named += 1;
            }
        }
        assert!(named >= 10, "the alert rules name {named} metrics");
    }
}
