//! W3C Trace Context across Echo's hops: one trace id from the browser's
//! request at the gateway to the parser, in every log line and audit event
//! on the way.
//!
//! - Every HTTP service runs its requests in a span (`request`, with the
//!   fields `service`, `trace_id`, `method`, `path`, `status`), put there by
//!   [`crate::Service::http`]: the caller's
//!   `traceparent` is continued when it is valid, else a new trace starts.
//!   The log lines written while the request runs carry the span's fields.
//! - [`TraceContext::begin`] does the same for work without a request (the
//!   worker's jobs, whose `traceparent` travels in the job's payload).
//! - While the request or job runs, [`TraceContext::current`] is its trace
//!   (a task-local; [`carry`] takes it, and the span, into a spawned task):
//!   [`headers`] is the `traceparent` to send to the next
//!   hop, and [`stamp`] puts the trace id on an audit event that has none
//!   (the audit writers call it on every event they record).
//! - When traces are exported (an OpenTelemetry layer is installed, see
//!   `echod`'s telemetry), the span's OpenTelemetry ids are the trace's:
//!   the exported trace and the logged and audited trace id are one. Without
//!   that layer the ids are drawn here, and nothing else is done.

use std::future::Future;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use echo_core::audit::AuditEvent;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::origin::random_hex_id;

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// A version-00 `traceparent` is 55 characters; a longer value is refused
/// unread (with room for surrounding spaces).
const MAX_TRACEPARENT: usize = 64;

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// The trace a request or a job belongs to, and its own span in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// This hop's span: 16 lowercase hex digits, the `parent-id` the next
    /// hop is sent.
    pub span_id: String,
    /// The caller's span (the `parent-id` it sent), if it sent a valid one.
    pub parent_id: Option<String>,
    /// 2 lowercase hex digits (`01`: sampled).
    pub flags: String,
}

impl TraceContext {
    /// The caller's trace if its `traceparent` is valid, else a new
    /// sampled trace; ids drawn here (no span).
    pub fn continue_or_start(headers: &HeaderMap) -> Self {
        Self::continue_from(traceparent_of(headers))
    }

    /// The trace `traceparent` names if it is valid, else a new one.
    pub fn continue_from(traceparent: Option<&str>) -> Self {
        let parent = traceparent.and_then(parse_traceparent);
        Self {
            trace_id: parent.map_or_else(random_hex_id::<16>, |p| p.0.to_owned()),
            span_id: random_hex_id::<8>(),
            parent_id: parent.map(|p| p.1.to_owned()),
            flags: parent.map_or("01", |p| p.2).to_owned(),
        }
    }

    /// The trace of `span`, continuing `traceparent` when it is valid: the
    /// span's OpenTelemetry ids when traces are exported, else
    /// [`TraceContext::continue_from`]'s. Records `trace_id` on the span.
    pub fn begin(span: &Span, traceparent: Option<&str>) -> Self {
        let parent = traceparent.and_then(parse_traceparent);
        if let Some(remote) = parent.and_then(remote_span) {
            // Fails only without an OpenTelemetry layer, which is fine.
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        }
        let exported = span.context().span().span_context().clone();
        let trace = if exported.is_valid() {
            Self {
                trace_id: exported.trace_id().to_string(),
                span_id: exported.span_id().to_string(),
                parent_id: parent.map(|p| p.1.to_owned()),
                flags: format!("{:02x}", exported.trace_flags().to_u8()),
            }
        } else {
            Self::continue_from(traceparent)
        };
        span.record("trace_id", trace.trace_id.as_str());
        trace
    }

    /// W3C Trace Context §3.2: the `traceparent` for the next hop, the
    /// same trace with this hop's span as the parent.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }

    /// [`TraceContext::traceparent`] as a header value.
    pub fn next_hop(&self) -> HeaderValue {
        HeaderValue::from_str(&self.traceparent()).unwrap_or(HeaderValue::from_static("0"))
    }

    /// Runs `work` in this trace: inside `span`, with this trace as
    /// [`TraceContext::current`].
    pub async fn run<F: Future>(self, span: Span, work: F) -> F::Output {
        CURRENT.scope(self, work.instrument(span)).await
    }

    /// The trace of the request or job running on this task, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(TraceContext::clone).ok()
    }
}

/// `work` in the current request's or job's trace and span, for a task it
/// is spawned on (a spawned task inherits neither).
pub fn carry<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let trace = TraceContext::current();
    let span = Span::current();
    async move {
        match trace {
            Some(trace) => trace.run(span, work).await,
            None => work.instrument(span).await,
        }
    }
}

/// The headers an outgoing request of the current request or job carries:
/// its `traceparent` (none outside a trace). Add them to any request sent
/// to another service: `client.get(url).headers(trace::headers())`.
pub fn headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(value) = CURRENT.try_with(TraceContext::next_hop) {
        headers.insert(TRACEPARENT, value);
    }
    headers
}

/// `event` with the current trace's id, unless it names one already.
pub fn stamp(event: AuditEvent) -> AuditEvent {
    if event.trace_id.is_some() {
        return event;
    }
    match CURRENT.try_with(|trace| trace.trace_id.clone()) {
        Ok(trace_id) => event.trace(Some(trace_id)),
        Err(_) => event,
    }
}

/// The middleware that runs each request of `service` in its trace (see
/// the module documentation); the trace is also put on the request for
/// the edge's [`crate::Origin`]. [`crate::Service::http`] adds it.
pub(crate) async fn traced(service: &'static str, mut request: Request, next: Next) -> Response {
    let (span, trace) = request_span(service, &request);
    request.extensions_mut().insert(trace.clone());
    let response = trace.run(span.clone(), next.run(request)).await;
    span.record("status", response.status().as_u16());
    response
}

/// The span of one request of `service` and its trace: the caller's
/// `traceparent` continued, or a new trace. The request runs in both
/// ([`TraceContext::run`]); its status goes on the span when answered.
pub(crate) fn request_span(service: &'static str, request: &Request) -> (Span, TraceContext) {
    let span = tracing::info_span!(
        "request",
        service,
        trace_id = tracing::field::Empty,
        method = %request.method(),
        path = request.uri().path(),
        status = tracing::field::Empty,
    );
    let trace = TraceContext::begin(&span, traceparent_of(request.headers()));
    (span, trace)
}

fn traceparent_of(headers: &HeaderMap) -> Option<&str> {
    headers.get(TRACEPARENT).and_then(|v| v.to_str().ok())
}

/// `(trace id, parent id, flags)` of a valid version-00 `traceparent`
/// (W3C Trace Context §3.2): lowercase hex, neither id all zeros, nothing
/// after the flags. Anything else, or anything longer, is `None`.
pub fn parse_traceparent(value: &str) -> Option<(&str, &str, &str)> {
    if value.len() > MAX_TRACEPARENT {
        return None;
    }
    let mut parts = value.trim().split('-');
    let (version, trace_id, parent_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    let valid = version == "00"
        && parts.next().is_none()
        && lower_hex(trace_id, 32)
        && nonzero(trace_id)
        && lower_hex(parent_id, 16)
        && nonzero(parent_id)
        && lower_hex(flags, 2);
    valid.then_some((trace_id, parent_id, flags))
}

/// The caller's span as OpenTelemetry's remote parent.
fn remote_span((trace_id, parent_id, flags): (&str, &str, &str)) -> Option<SpanContext> {
    Some(SpanContext::new(
        TraceId::from_hex(trace_id).ok()?,
        SpanId::from_hex(parent_id).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIVEN: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn with_traceparent(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn traceparent_continues_a_valid_trace_and_starts_one_otherwise() {
        let trace = TraceContext::continue_or_start(&with_traceparent(GIVEN));
        assert_eq!(trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(trace.parent_id.as_deref(), Some("00f067aa0ba902b7"));
        let next = trace.next_hop();
        let next = next.to_str().unwrap();
        assert_eq!(
            next,
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", trace.span_id)
        );
        assert_ne!(next, GIVEN, "this hop's span is the next hop's parent");
        assert!(parse_traceparent(next).is_some());
        let long = format!("{GIVEN}{}", " ".repeat(MAX_TRACEPARENT));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            long.as_str(),
            "garbage",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
            let fresh = TraceContext::continue_or_start(&with_traceparent(bad));
            assert!(fresh.parent_id.is_none());
            assert_ne!(fresh.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
            assert!(parse_traceparent(&fresh.traceparent()).is_some());
        }
    }

    #[tokio::test]
    async fn the_current_trace_goes_on_outgoing_headers_and_audit_events() {
        assert!(headers().is_empty(), "no trace outside a request");
        assert_eq!(stamp(AuditEvent::success("a.b")).trace_id, None);
        let trace = TraceContext::begin(&Span::none(), Some(GIVEN));
        assert_eq!(trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        let expected = trace.clone();
        trace
            .run(Span::none(), async move {
                assert_eq!(TraceContext::current(), Some(expected.clone()));
                let sent = headers();
                assert_eq!(sent[TRACEPARENT], expected.traceparent());
                let event = stamp(AuditEvent::success("a.b"));
                assert_eq!(event.trace_id.as_deref(), Some(expected.trace_id.as_str()));
                let named = stamp(AuditEvent::success("a.b").trace(Some("other".into())));
                assert_eq!(named.trace_id.as_deref(), Some("other"), "kept");
                let spawned = tokio::spawn(carry(async { TraceContext::current() }));
                assert_eq!(spawned.await.unwrap(), Some(expected), "carried");
            })
            .await;
    }
}
