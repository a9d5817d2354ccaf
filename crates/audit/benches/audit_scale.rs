//! The audit log at scale, on SQLite: a chain of 1,000,000 events, then
//! `echod audit verify`'s path (read every row from the database and verify
//! the chain) and filtered queries, with their p50 and p99.
//!
//! cargo bench -p echo-audit --bench audit_scale        (EVENTS=… to change the size)

use std::time::Instant;

use echo_audit::event::{Event, Level};
use echo_audit::store::{EventQuery, search_words};
use echo_audit::verify::verify_chain;
use serde_json::json;

const ACTIONS: [&str; 5] = [
    "auth.login.success",
    "auth.login.failure",
    "token.issued",
    "oauth.code.issued",
    "admin.user.created",
];
const SERVICES: [&str; 4] = ["identity", "gateway", "docs", "worker"];

fn event(n: usize) -> Event {
    Event {
        id: format!("ev-{n}"),
        time: 1_800_000_000_000 + n as i64 * 10,
        service: SERVICES[n % SERVICES.len()].into(),
        level: if n.is_multiple_of(50) {
            Level::Warn
        } else {
            Level::Info
        },
        action: ACTIONS[n % ACTIONS.len()].into(),
        actor: Some(format!("user-{}", n % 10_000)),
        outcome: Some(
            if n.is_multiple_of(50) {
                "failure"
            } else {
                "success"
            }
            .into(),
        ),
        ip: Some("127.0.0.1".into()),
        user_agent: Some("bench/1.0".into()),
        trace_id: None,
        message: format!("{} for user-{}", ACTIONS[n % ACTIONS.len()], n % 10_000),
        context: json!({"client_id": "web", "n": n}),
    }
}

/// CPU time this process has used (user + system, every thread), from
/// /proc/self/stat, in seconds: per-core throughput is events per CPU-second,
/// whatever else the machine runs.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line, in clock ticks (100 per second).
    let after = &stat[stat.rfind(')').expect("stat") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let total: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let store = rt
        .block_on(echo_audit::store::open(
            None,
            &echo_crypto::TrustedRoots::system(),
            dir.path(),
        ))
        .expect("store");

    let started = Instant::now();
    let cpu_started = cpu_seconds();
    for chunk in (0..total).collect::<Vec<_>>().chunks(1000) {
        let events: Vec<Event> = chunk.iter().map(|&n| event(n)).collect();
        rt.block_on(store.append(&events)).expect("append");
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_started;
    println!(
        "ingest   {total} events in batches of 1000: {secs:.1} s, {:.0} events/s; \
         {cpu:.1} CPU-s (all threads), {:.0} events per CPU-second",
        total as f64 / secs,
        total as f64 / cpu
    );

    // The fast pass splits the chain in two parts verified in parallel, so
    // this runtime has two workers (run unpinned to use both cores).
    let started = Instant::now();
    let head = rt.block_on(store.head()).expect("head");
    let verified = rt
        .block_on(verify_chain(store.clone(), vec![head]))
        .expect("intact");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "verify   {} events from the database: {secs:.2} s, {:.0} events/s",
        verified.events(),
        verified.events() as f64 / secs
    );

    // As the service's checkpointer does at each tick.
    rt.block_on(store.optimize()).expect("optimize");

    let base = EventQuery {
        limit: 100,
        ..Default::default()
    };
    let queries: Vec<(&str, EventQuery)> = vec![
        ("newest 100", base.clone()),
        (
            "service=gateway",
            EventQuery {
                service: Some("gateway".into()),
                ..base.clone()
            },
        ),
        (
            "action=auth.login.failure",
            EventQuery {
                action: Some("auth.login.failure".into()),
                ..base.clone()
            },
        ),
        (
            "actor=user-4242",
            EventQuery {
                actor: Some("user-4242".into()),
                ..base.clone()
            },
        ),
        (
            "level=warn outcome=failure",
            EventQuery {
                level: Some("warn".into()),
                outcome: Some("failure".into()),
                ..base.clone()
            },
        ),
        // One event every 10 ms: a minute holds 6,000 events, an hour 360,000.
        (
            "time range (1 min)",
            EventQuery {
                since: Some(1_800_000_000_000 + 3_000_000),
                until: Some(1_800_000_000_000 + 3_060_000),
                ..base.clone()
            },
        ),
        (
            "time range (1 h)",
            EventQuery {
                since: Some(1_800_000_000_000 + 3_000_000),
                until: Some(1_800_000_000_000 + 6_600_000),
                ..base.clone()
            },
        ),
        (
            "page deep (cursor at half)",
            EventQuery {
                before: Some(echo_audit::store::Cursor {
                    time: 1_800_000_000_000 + total as i64 * 5,
                    seq: total as i64 / 2,
                }),
                ..base.clone()
            },
        ),
        (
            "free text 'user-4242'",
            EventQuery {
                words: search_words("user-4242"),
                ..base.clone()
            },
        ),
        (
            "free text 'failure'",
            EventQuery {
                words: search_words("failure"),
                ..base.clone()
            },
        ),
        (
            "free text 'user'",
            EventQuery {
                words: search_words("user"),
                ..base.clone()
            },
        ),
        (
            "free text prefix 'fail*'",
            EventQuery {
                words: search_words("fail*"),
                ..base.clone()
            },
        ),
        (
            "free text + service",
            EventQuery {
                words: search_words("4242"),
                service: Some("docs".into()),
                ..base.clone()
            },
        ),
    ];
    println!("query    (limit 100; 200 runs each)");
    for (name, query) in queries {
        let runs = 200;
        let mut times = Vec::with_capacity(runs);
        let mut found = 0;
        for _ in 0..runs {
            let t = Instant::now();
            found = rt.block_on(store.query(&query)).expect("query").len();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "  {name:<28} {found:>4} rows  p50 {:7.2} ms  p99 {:7.2} ms",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
}
