//! Logs, and traces exported by OTLP.
//!
//! Logs go to stderr: `ECHO_LOG` (or `RUST_LOG`) filters them,
//! `ECHO_LOG_FORMAT=json` makes them JSON lines. A line written while a
//! request or a job runs carries its span's fields (`service`, `trace_id`;
//! see `echo_edge::trace`).
//!
//! Traces are exported only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: every request and job span
//! of the services this process runs goes by OTLP over HTTP (protobuf) to
//! `<endpoint>/v1/traces`, in batches, whatever `ECHO_LOG` says. Each
//! service is its own OpenTelemetry resource (`service.name` = `gateway`,
//! `identity`, …, `service.namespace` = `echo`), also inside `echod up`,
//! where one exporter per service, sharing one HTTP client, sends each
//! span with its own service's resource. The SDK's own variables apply
//! (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
//! `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_TRACES_SAMPLER`,
//! `OTEL_RESOURCE_ATTRIBUTES`, …). Without the variable no exporter, no
//! OpenTelemetry layer and no thread exist: nothing is slowed.

use std::io::IsTerminal;

use anyhow::Context;
use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanKind, TracerProvider as _};
use opentelemetry_otlp::WithHttpConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// The variables that turn the export on.
const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
];

/// The resource of spans that belong to no service (none today).
const PROCESS: &str = "echod";

/// The longest one export may take (the OTLP default).
const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What must be flushed before the process ends.
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered. Call it outside the async runtime
    /// (the exporter's client blocks).
    pub fn shutdown(self) {
        if let Some(traces) = self.traces
            && let Err(e) = traces.shutdown()
        {
            eprintln!("warning: cannot send the last traces: {e}");
        }
    }
}

/// Installs the logs, and the trace export for `services` when it is
/// configured. Call it before the async runtime starts.
pub fn init(services: &[&'static str]) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_env(crate::settings::LOG_FILTER_VAR)
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let logs: Box<dyn Layer<Registry> + Send + Sync> =
        if std::env::var(crate::settings::LOG_FORMAT_VAR).is_ok_and(|f| f == "json") {
            logs.json().boxed()
        } else {
            logs.boxed()
        };
    let traces = exporting().then(|| tracer_provider(services)).transpose()?;
    let export = traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("echod"))
            .with_filter(LevelFilter::INFO)
    });
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(export)
        .init();
    Ok(Telemetry { traces })
}

fn exporting() -> bool {
    ENDPOINT_VARS
        .iter()
        .any(|var| std::env::var(var).is_ok_and(|v| !v.trim().is_empty()))
}

/// One batch processor whose exporter sends each service's spans with
/// that service's resource.
fn tracer_provider(services: &[&'static str]) -> anyhow::Result<SdkTracerProvider> {
    // Built on a thread of its own: reqwest's blocking client must not be
    // made inside an async runtime.
    let client = std::thread::spawn(|| {
        reqwest::blocking::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("cannot build the OTLP HTTP client"))?
    .context("cannot build the OTLP HTTP client")?;
    let exporter = |service: &'static str| -> anyhow::Result<_> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client.clone())
            .build()
            .context("cannot export traces (check OTEL_EXPORTER_OTLP_ENDPOINT)")?;
        exporter.set_resource(&resource(service));
        Ok((service, exporter))
    };
    let by_service = ByService {
        exporters: std::iter::once(PROCESS)
            .chain(services.iter().copied())
            .map(exporter)
            .collect::<anyhow::Result<_>>()?,
    };
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(by_service)
        .build())
}

fn resource(service: &'static str) -> Resource {
    Resource::builder()
        .with_service_name(service)
        .with_attribute(KeyValue::new("service.namespace", "echo"))
        .build()
}

/// Sends each span, [`named`], to the exporter of the service its
/// `service` attribute names (the first, the process's own, when none
/// matches).
#[derive(Debug)]
struct ByService {
    exporters: Vec<(&'static str, opentelemetry_otlp::SpanExporter)>,
}

impl ByService {
    fn index_of(&self, span: &SpanData) -> usize {
        let service = span
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == "service")
            .map(|kv| kv.value.as_str());
        service
            .and_then(|name| self.exporters.iter().position(|(s, _)| name == *s))
            .unwrap_or(0)
    }
}

/// `span` as OpenTelemetry names it: a request (`echo_edge::trace`) as
/// `<METHOD> <path>`, a server span; a worker's job as `job <kind>`, a
/// consumer span.
fn named(mut span: SpanData) -> SpanData {
    let attribute = |key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.as_str().into_owned())
    };
    let (name, kind) = match span.name.as_ref() {
        "request" => match (attribute("method"), attribute("path")) {
            (Some(method), Some(path)) => (format!("{method} {path}"), SpanKind::Server),
            _ => return span,
        },
        "job" => match attribute("kind") {
            Some(kind) => (format!("job {kind}"), SpanKind::Consumer),
            None => return span,
        },
        _ => return span,
    };
    span.name = name.into();
    span.span_kind = kind;
    span
}

impl SpanExporter for ByService {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut groups: Vec<Vec<SpanData>> = self.exporters.iter().map(|_| Vec::new()).collect();
        for span in batch {
            groups[self.index_of(&span)].push(named(span));
        }
        let mut result = Ok(());
        for ((_, exporter), spans) in self.exporters.iter().zip(groups) {
            if !spans.is_empty()
                && let Err(e) = exporter.export(spans).await
            {
                result = Err(e);
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.exporters
            .iter()
            .map(|(_, e)| e.shutdown_with_timeout(timeout))
            .fold(Ok(()), Result::and)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.exporters
            .iter()
            .map(|(_, e)| e.force_flush())
            .fold(Ok(()), Result::and)
    }

    // Each exporter keeps its own service's resource, not the provider's.
    fn set_resource(&mut self, _: &Resource) {}
}
