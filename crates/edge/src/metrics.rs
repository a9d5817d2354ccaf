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
        handle
    })
}
