//! One trace through the platform: an upload from a signed-in browser
//! goes through the gateway, docs, the queue, the worker and the parser in
//! the trace the browser's `traceparent` names, and every service's audit
//! events and log lines carry its id; a malformed `traceparent` starts a
//! new trace instead. With `OTEL_EXPORTER_OTLP_ENDPOINT` the spans reach an
//! OTLP receiver, each service as its own resource.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use serde_json::Value;

use super::docs::{User, add_user};
use super::{echod, start_up, start_up_logging, up_on_free_ports};

/// The services an upload passes through, each of which audits it.
const PIPELINE: [&str; 4] = ["gateway", "docs", "worker", "parser"];

fn traceparent(trace_id: &str) -> String {
    format!("00-{trace_id}-b7ad6b7169203331-01")
}

fn is_trace_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id != "0".repeat(32)
}

/// Uploads `text` as a browser does (session cookie, CSRF header), with
/// the header `traceparent`: the new document's id.
async fn upload(user: &mut User, text: &str, traceparent: &str) -> String {
    let request = user
        .hop
        .http
        .post(format!("{}/api/documents?name=notes.txt", user.gateway))
        .header("x-echo-csrf", "1")
        .header("content-type", "text/plain")
        .header("traceparent", traceparent)
        .body(text.to_owned());
    let (status, _, body) = user.hop.send(request).await;
    assert_eq!(status, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    created["documents"][0]["id"].as_str().unwrap().to_owned()
}

/// The audit events stored so far (`echod audit tail`), once `done`
/// holds for them (within 30 s).
async fn events_once(dir: &Path, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tail = echod(dir)
            .args(["audit", "tail", "-n", "1000"])
            .output()
            .unwrap();
        let events: Vec<Value> = String::from_utf8_lossy(&tail.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        if done(&events) {
            return events;
        }
        assert!(Instant::now() < deadline, "no {what} in {events:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The event `action` of `service` in `events` about `document`.
fn event_about<'a>(
    events: &'a [Value],
    service: &str,
    action: &str,
    document: &str,
) -> Option<&'a Value> {
    events.iter().find(|e| {
        e["service"] == service
            && e["action"] == action
            && (e["context"]["document_id"] == document
                // The gateway's event names the route, not the document.
                || service == "gateway")
    })
}

#[tokio::test]
async fn one_upload_keeps_the_browsers_trace_from_the_gateway_to_the_parser() {
    let dir = echo_testkit::data_dir();
    add_user(dir.path(), "tracy");
    let logs = tempfile::tempdir().unwrap();
    let log_file = logs.path().join("echod.log");
    let mut cmd = up_on_free_ports(dir.path());
    cmd.env("ECHO_LOG", "info,echo_docs=debug,echo_parser=debug");
    let server = start_up_logging(cmd, std::fs::File::create(&log_file).unwrap());
    let mut user = User::sign_in(&server, "tracy").await;

    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let traced = upload(&mut user, "A traced document.", &traceparent(trace_id)).await;
    let forged = "1af7651916cd43dd8448eb211c80319c";
    let malformed = format!("00-{forged}-b7ad6b7169203331-1");
    let fresh = upload(&mut user, "A document in a new trace.", &malformed).await;
    for id in [&traced, &fresh] {
        let view = user.wait_for(id, Duration::from_secs(30)).await;
        assert_eq!(view["status"], "done", "{view}");
    }

    let in_trace = |events: &[Value], trace: &str| -> HashSet<String> {
        events
            .iter()
            .filter(|e| e["trace_id"] == trace)
            .filter_map(|e| e["service"].as_str().map(str::to_owned))
            .collect()
    };
    let events = events_once(dir.path(), "event of each service in the trace", |events| {
        PIPELINE
            .iter()
            .all(|s| in_trace(events, trace_id).contains(*s))
    })
    .await;
    for (service, action) in [
        ("gateway", "gateway.request.forwarded"),
        ("docs", "document.upload"),
        ("worker", "document.index"),
        ("parser", "document.parse"),
    ] {
        assert!(
            events.iter().any(|e| e["service"] == service
                && e["action"] == action
                && e["trace_id"] == trace_id),
            "{service} {action} in trace {trace_id}: {events:#?}"
        );
    }
    let upload_event = event_about(&events, "docs", "document.upload", &traced).unwrap();
    assert_eq!(upload_event["trace_id"], trace_id);
    let index_event = event_about(&events, "worker", "document.index", &traced).unwrap();
    assert_eq!(index_event["trace_id"], trace_id);
    assert_eq!(index_event["outcome"], "success");

    // The malformed traceparent was replaced, not trusted: a new trace,
    // which the worker and the parser continued all the same.
    let fresh_trace = event_about(&events, "docs", "document.upload", &fresh).unwrap()["trace_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(is_trace_id(&fresh_trace), "{fresh_trace}");
    assert_ne!(fresh_trace, forged);
    assert_ne!(fresh_trace, trace_id);
    events_once(
        dir.path(),
        "worker and parser events in the new trace",
        |events| {
            ["worker", "parser"]
                .iter()
                .all(|s| in_trace(events, &fresh_trace).contains(*s))
        },
    )
    .await;

    // Each service's log lines written while it served the upload carry
    // the trace id.
    let logged = std::fs::read_to_string(&log_file).unwrap();
    for (target, message) in [
        ("echo_worker", "job done"),
        ("echo_docs::service", "indexed"),
        ("echo_parser::http", "parse"),
    ] {
        assert!(
            logged
                .lines()
                .any(|l| l.contains(target) && l.contains(message) && l.contains(trace_id)),
            "no {target} line {message:?} with trace_id {trace_id}:\n{logged}"
        );
    }
    drop(server);
}

/// What an OTLP receiver was sent: (service.name, trace id, span name).
type Received = Arc<Mutex<Vec<(String, String, String)>>>;

/// `POST /v1/traces`: an OTLP/HTTP protobuf export.
async fn receive(State(received): State<Received>, body: Bytes) -> Response {
    let Ok(export) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut received = received.lock().unwrap();
    for resource_spans in export.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|value| match value {
                any_value::Value::StringValue(name) => name.clone(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            let trace_id: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
            received.push((service.clone(), trace_id, span.name));
        }
    }
    (
        [("content-type", "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_go_to_the_otlp_endpoint_one_resource_per_service() {
    let received = Received::default();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(receive))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = echo_testkit::data_dir();
    add_user(dir.path(), "otto");
    let mut cmd = up_on_free_ports(dir.path());
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let server = start_up(cmd);
    let mut user = User::sign_in(&server, "otto").await;
    let trace_id = "2af7651916cd43dd8448eb211c80319c";
    let id = upload(&mut user, "An exported document.", &traceparent(trace_id)).await;
    let view = user.wait_for(&id, Duration::from_secs(30)).await;
    assert_eq!(view["status"], "done", "{view}");

    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans: Vec<_> = received
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, trace, _)| trace == trace_id)
            .cloned()
            .collect();
        let services: HashSet<&str> = spans.iter().map(|(s, _, _)| s.as_str()).collect();
        if PIPELINE.iter().all(|s| services.contains(s)) {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "spans of trace {trace_id}: {spans:?}; all: {:?}",
            received.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let named = |service: &str, name: &str| spans.iter().any(|(s, _, n)| s == service && n == name);
    assert!(named("gateway", "POST /api/documents"), "{spans:?}");
    assert!(named("docs", "POST /v1/documents"), "{spans:?}");
    assert!(named("worker", "job index_document"), "{spans:?}");
    assert!(named("parser", "POST /v1/parse"), "{spans:?}");
    drop(server);
}

#[test]
fn an_unusable_otlp_endpoint_is_refused_at_start_with_its_name() {
    let dir = echo_testkit::data_dir();
    let out = echod(dir.path())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")
        .args(["serve", "parser", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot export traces") && stderr.contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "{stderr}"
    );
}
