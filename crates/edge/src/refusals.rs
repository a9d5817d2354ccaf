//! [`RefusalLog`]: every refused caller, audited once, under one name,
//! without letting a flood of bad tokens flood the audit log.
//!
//! The first refusal of a kind (client address, reason, and the token's
//! subject when its signature was valid) in a window is
//! recorded at once, with `count` 1. Further refusals of that kind within
//! the window are only counted; when the window has passed, one more event
//! carries how many there were (`count`, `aggregated: true`). So 1,000 bad
//! tokens from one address make two events, not 1,000, and a new address
//! or a new reason is still seen at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use echo_core::audit::{AuditEvent, AuditSink};
use echo_core::sync::lock;

/// The one event name of a refused caller, in every service.
pub const ACCESS_DENIED: &str = "access.denied";

/// How long refusals of one kind are counted into one event by default.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// Most kinds tracked at once; past it, refusals of new kinds share one
/// overflow entry (still counted, still audited).
const MAX_KINDS: usize = 10_000;

/// Who was refused, as far as the token says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefusedSubject {
    /// The token's `sub`: only when its signature was valid.
    pub sub: Option<String>,
    /// The token's `client_id`: only when its signature was valid.
    pub client_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Kind {
    ip: Option<IpAddr>,
    reason: &'static str,
    /// A verified subject: refusals of two users are told apart.
    sub: Option<String>,
}

/// The user agent and trace of a refusal counted, not recorded.
#[derive(Debug, Default)]
struct Seen {
    user_agent: Option<String>,
    trace_id: Option<String>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    /// Refusals counted since the first, not yet recorded.
    unrecorded: u64,
    /// The last of them.
    last: Seen,
}

/// A window's count, to record.
struct Count {
    kind: Kind,
    count: u64,
    last: Seen,
}

/// Records refusals of one service to an audit sink (see the module).
pub struct RefusalLog {
    service: &'static str,
    audit: Arc<dyn AuditSink>,
    window: Duration,
    windows: Mutex<HashMap<Kind, Window>>,
}

impl std::fmt::Debug for RefusalLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefusalLog")
            .field("service", &self.service)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl RefusalLog {
    pub fn new(service: &'static str, audit: Arc<dyn AuditSink>, window: Duration) -> Self {
        Self {
            service,
            audit,
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// A caller was refused for `reason`, from `origin`.
    pub fn refused(
        &self,
        reason: &'static str,
        subject: &RefusedSubject,
        origin: &crate::Origin,
        now: Instant,
    ) {
        let kind = Kind {
            ip: origin.client_ip,
            reason,
            sub: subject.sub.clone(),
        };
        let mut due: Option<Count> = None;
        let first = {
            let mut windows = lock(&self.windows);
            let kind = if windows.len() >= MAX_KINDS && !windows.contains_key(&kind) {
                Kind {
                    ip: None,
                    reason,
                    sub: None,
                }
            } else {
                kind
            };
            match windows.get_mut(&kind) {
                Some(window) if now.duration_since(window.started) < self.window => {
                    window.unrecorded += 1;
                    window.last = Seen {
                        user_agent: origin.user_agent.clone(),
                        trace_id: Some(origin.trace.trace_id.clone()),
                    };
                    false
                }
                previous => {
                    if let Some(ended) = previous
                        && ended.unrecorded > 0
                    {
                        due = Some(Count {
                            kind: kind.clone(),
                            count: ended.unrecorded,
                            last: std::mem::take(&mut ended.last),
                        });
                    }
                    windows.insert(
                        kind,
                        Window {
                            started: now,
                            unrecorded: 0,
                            last: Seen::default(),
                        },
                    );
                    true
                }
            }
        };
        if let Some(count) = due {
            self.audit.record(self.summary(count));
        }
        if first {
            let mut event = AuditEvent::refused(ACCESS_DENIED, reason, subject.sub.as_deref())
                .detail("service", self.service)
                .detail("count", 1);
            if let Some(client_id) = &subject.client_id {
                event = event.detail("client_id", client_id.as_str());
            }
            self.audit.record(origin.stamp(event));
        }
    }

    /// Records the counts of every window that has ended, and forgets
    /// those windows; run periodically (every window) and at shutdown
    /// (`now` far enough ahead to end them all).
    pub fn flush(&self, now: Instant) {
        let ended: Vec<Count> = {
            let mut windows = lock(&self.windows);
            let mut ended = Vec::new();
            windows.retain(|kind, window| {
                if now.duration_since(window.started) < self.window {
                    return true;
                }
                if window.unrecorded > 0 {
                    ended.push(Count {
                        kind: kind.clone(),
                        count: window.unrecorded,
                        last: std::mem::take(&mut window.last),
                    });
                }
                false
            });
            ended
        };
        for count in ended {
            self.audit.record(self.summary(count));
        }
    }

    /// Records every count now, ended window or not.
    pub fn flush_all(&self) {
        self.flush(Instant::now() + self.window);
    }

    fn summary(&self, Count { kind, count, last }: Count) -> AuditEvent {
        AuditEvent::refused(ACCESS_DENIED, kind.reason, kind.sub.as_deref())
            .detail("service", self.service)
            .detail("count", count)
            .detail("aggregated", true)
            .detail("window_seconds", self.window.as_secs())
            .origin(kind.ip.map(crate::ip_text), last.user_agent)
            .trace(last.trace_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Origin;
    use axum::http::HeaderMap;
    use echo_core::audit::MemoryAuditSink;

    fn origin(ip: &str) -> Origin {
        Origin::of(
            Some(ip.parse().unwrap()),
            &HeaderMap::new(),
            &Default::default(),
        )
    }

    fn log(window: u64) -> (Arc<MemoryAuditSink>, RefusalLog) {
        let sink = Arc::new(MemoryAuditSink::default());
        let log = RefusalLog::new("svc", sink.clone(), Duration::from_secs(window));
        (sink, log)
    }

    #[test]
    fn a_flood_from_one_address_makes_one_event_and_one_count() {
        let (sink, log) = log(60);
        let start = Instant::now();
        let from = origin("192.0.2.1");
        for i in 0..1000 {
            log.refused(
                "malformed",
                &RefusedSubject::default(),
                &from,
                start + Duration::from_millis(i),
            );
        }
        assert_eq!(sink.events().len(), 1, "the first, at once");
        log.flush(start + Duration::from_secs(30));
        assert_eq!(sink.events().len(), 1, "the window has not ended");
        log.flush(start + Duration::from_secs(61));
        let events = sink.events();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].details["count"], 1);
        assert_eq!(events[1].details["count"], 999);
        assert_eq!(events[1].details["aggregated"], true);
        assert_eq!(events[1].ip.as_deref(), Some("192.0.2.1"));
        assert!(events.iter().all(|e| e.action == ACCESS_DENIED));
        log.flush(start + Duration::from_secs(200));
        assert_eq!(sink.events().len(), 2, "nothing left to record");
    }

    #[test]
    fn new_addresses_and_reasons_are_recorded_at_once() {
        let (sink, log) = log(60);
        let now = Instant::now();
        let subject = RefusedSubject {
            sub: Some("alice".into()),
            client_id: Some("web".into()),
        };
        log.refused(
            "expired",
            &RefusedSubject::default(),
            &origin("192.0.2.1"),
            now,
        );
        log.refused(
            "malformed",
            &RefusedSubject::default(),
            &origin("192.0.2.1"),
            now,
        );
        log.refused("wrong_kind", &subject, &origin("192.0.2.2"), now);
        let events = sink.events();
        assert_eq!(events.len(), 3);
        assert_eq!(events[2].actor.as_deref(), Some("alice"));
        assert_eq!(events[2].details["client_id"], "web");
        assert_eq!(events[2].details["service"], "svc");
        assert_eq!(events[1].details["reason"], "malformed");
    }

    #[test]
    fn a_new_window_records_the_last_ones_count_first() {
        let (sink, log) = log(10);
        let now = Instant::now();
        let from = origin("192.0.2.1");
        let none = RefusedSubject::default();
        log.refused("expired", &none, &from, now);
        log.refused("expired", &none, &from, now + Duration::from_secs(1));
        log.refused("expired", &none, &from, now + Duration::from_secs(11));
        let counts: Vec<_> = sink
            .events()
            .iter()
            .map(|e| e.details["count"].as_u64().unwrap())
            .collect();
        assert_eq!(
            counts,
            [1, 1, 1],
            "first, the summary of one, the next first"
        );
        assert_eq!(sink.events()[1].details["aggregated"], true);
    }
}
