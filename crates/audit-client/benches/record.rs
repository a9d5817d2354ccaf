//! What `AuditWriter::record` costs: the caller's time per event (encoding,
//! the journal's append, the hand-over to the writer's task), while the
//! task delivers the batches to a stand-in for the audit service that
//! answers every request at once. The stand-in keeps the figure to the
//! writer's own work; the service's ingest has its own bench
//! (`echo-audit`, `ingest`).
//!
//! taskset -c 0 cargo bench -p echo-audit-client --bench record

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use echo_audit_client::{AuditWriter, WriterConfig};
use echo_core::audit::{AuditEvent, AuditSink};
use echo_edge::TokenSource;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::runtime::Runtime;

/// Events recorded per measured iteration.
const EVENTS: u64 = 10_000;

struct Token;

#[async_trait]
impl TokenSource for Token {
    async fn token(&self) -> Result<String, String> {
        Ok("bench".into())
    }
}

/// An HTTP/1.1 server answering every request `200 {"stored":0}`, keeping
/// connections open; its address.
async fn stand_in() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut read = BufReader::new(read);
                loop {
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if read.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                                   content-length: 12\r\n\r\n{\"stored\":0}";
                    if write.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

fn event(i: u64) -> AuditEvent {
    AuditEvent::success("token.issued")
        .actor(format!("client-{}", i % 100))
        .origin(Some("127.0.0.1".into()), Some("bench".into()))
        .detail("n", i)
}

fn record(c: &mut Criterion) {
    let runtime = Runtime::new().unwrap();
    let endpoint = runtime.block_on(stand_in());
    let spool = tempfile::tempdir().unwrap();
    let mut config = WriterConfig::new(&endpoint, spool.path());
    // Room for every event in memory: the overflow file is another path.
    config.queue_capacity = 1 << 20;
    let writer = runtime
        .block_on(async { AuditWriter::start(config, Arc::new(Token)) })
        .unwrap();
    let mut group = c.benchmark_group("audit_writer");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(20);
    group.bench_function("record", |b| {
        b.iter_custom(|iterations| {
            let mut spent = Duration::ZERO;
            for _ in 0..iterations {
                let before = writer.metrics().sent;
                let started = Instant::now();
                for i in 0..EVENTS {
                    writer.record(event(i));
                }
                spent += started.elapsed();
                // Delivered before the next round, so rounds do not pile up.
                while writer.metrics().sent < before + EVENTS {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            spent
        });
    });
    group.finish();
    runtime.block_on(writer.shutdown());
}

criterion_group!(benches, record);
criterion_main!(benches);
