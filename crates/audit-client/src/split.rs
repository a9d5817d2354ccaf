//! A batch the service refuses for good, halved until the events it refuses
//! stand alone.
//!
//! The service refuses a whole batch (400, 413) for one malformed event, so
//! poisoning the batch would condemn up to [`MAX_BATCH_EVENTS`] − 1 good
//! events with it. Instead the batch is halved and each half sent again,
//! depth first and first half first, so the events the service takes still
//! arrive in the order they were recorded. A refused part of one event is
//! the culprit.
//!
//! A batch of n events is halved at most ⌈log₂ n⌉ times on the way to any
//! one event: a single bad event costs at most 2·⌈log₂ n⌉ requests more than
//! the batch itself (14 for 100 events), and a batch of nothing but bad
//! events 2n − 2.
//!
//! [`MAX_BATCH_EVENTS`]: crate::MAX_BATCH_EVENTS

use std::future::Future;
use std::ops::Range;

use crate::sender::Outcome;
use crate::wire::ndjson_to_json_array;

/// What became of a batch, halved as often as the service asked.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Every event is accounted for: the service holds `sent` of them
    /// (`duplicates` of those from an earlier attempt), the rest are in
    /// `refused`, one each.
    Settled {
        sent: u64,
        stored: u64,
        duplicates: u64,
        refused: Vec<Refused>,
    },
    /// A failure that may pass stopped delivery, perhaps half-way through
    /// the halving. The whole batch is to be retried: parts already taken
    /// are recognised by their ids when resent, and the refused events found
    /// so far are found again; returning them now would poison them twice.
    Transient { reason: String, misconfigured: bool },
}

/// One event the service refused even alone.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    /// Its NDJSON line.
    pub ndjson: Vec<u8>,
    pub status: u16,
    pub reason: String,
}

/// Sends the NDJSON batch `ndjson` with `send` (which takes the JSON array
/// body of one request), halving whatever the service refuses for good.
pub async fn deliver<F, Fut>(ndjson: &[u8], mut send: F) -> Delivery
where
    F: FnMut(Vec<u8>) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let bounds = event_bounds(ndjson);
    let bytes = |events: &Range<usize>| &ndjson[bounds[events.start]..bounds[events.end]];
    let (mut sent, mut stored, mut duplicates, mut refused) = (0, 0, 0, Vec::new());
    let events = bounds.len() - 1;
    // Parts still to send, as ranges of event indices, the next one last: a
    // stack, so each refused part is resolved before the parts after it. An
    // empty batch (a spool file emptied by hand) has nothing to send.
    let mut parts: Vec<Range<usize>> = Vec::new();
    if events > 0 {
        parts.push(0..events);
    }
    while let Some(part) = parts.pop() {
        match send(ndjson_to_json_array(bytes(&part))).await {
            Outcome::Delivered {
                stored: s,
                duplicates: d,
            } => {
                sent += part.len() as u64;
                stored += s;
                duplicates += d;
            }
            Outcome::Transient {
                reason,
                misconfigured,
            } => {
                return Delivery::Transient {
                    reason,
                    misconfigured,
                };
            }
            Outcome::Poison { status, reason } if part.len() == 1 => {
                refused.push(Refused {
                    ndjson: bytes(&part).to_vec(),
                    status,
                    reason,
                });
            }
            Outcome::Poison { .. } => {
                let middle = part.start + part.len() / 2;
                parts.push(middle..part.end);
                parts.push(part.start..middle);
            }
        }
    }
    Delivery::Settled {
        sent,
        stored,
        duplicates,
        refused,
    }
}

/// Where each event's line starts in `ndjson`, then `ndjson.len()`: event
/// `i` is `ndjson[bounds[i]..bounds[i + 1]]`, its newline (and any blank
/// lines after it, which [`ndjson_to_json_array`] skips) included.
fn event_bounds(ndjson: &[u8]) -> Vec<usize> {
    let mut bounds = Vec::new();
    let mut start = 0;
    for line in ndjson.split(|&b| b == b'\n') {
        if !line.iter().all(u8::is_ascii_whitespace) {
            bounds.push(start);
        }
        start += line.len() + 1;
    }
    bounds.push(ndjson.len());
    bounds
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::future::ready;

    use super::*;

    /// `n` one-line events `{"n":i}`.
    fn batch(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| format!("{{\"n\":{i}}}\n"))
            .collect::<String>()
            .into_bytes()
    }

    /// The `n` of each event in a JSON array body.
    fn numbers(body: &[u8]) -> Vec<u64> {
        let events: Vec<serde_json::Value> = serde_json::from_slice(body).unwrap();
        events.iter().map(|e| e["n"].as_u64().unwrap()).collect()
    }

    /// A service that refuses (400) any batch holding one of `bad`, answers
    /// `transient_on` with a 503, and records every batch it took.
    struct Service {
        bad: Vec<u64>,
        transient_on: Option<usize>,
        requests: RefCell<usize>,
        taken: RefCell<Vec<u64>>,
    }

    impl Service {
        fn new(bad: &[u64]) -> Self {
            Self {
                bad: bad.to_vec(),
                transient_on: None,
                requests: RefCell::new(0),
                taken: RefCell::new(Vec::new()),
            }
        }

        fn send(&self, body: Vec<u8>) -> std::future::Ready<Outcome> {
            let request = {
                let mut requests = self.requests.borrow_mut();
                *requests += 1;
                *requests
            };
            let events = numbers(&body);
            ready(if Some(request) == self.transient_on {
                Outcome::Transient {
                    reason: "503".into(),
                    misconfigured: false,
                }
            } else if events.iter().any(|n| self.bad.contains(n)) {
                Outcome::Poison {
                    status: 400,
                    reason: "bad event".into(),
                }
            } else {
                self.taken.borrow_mut().extend(&events);
                Outcome::Delivered {
                    stored: events.len() as u64,
                    duplicates: 0,
                }
            })
        }

        async fn deliver(&self, ndjson: &[u8]) -> Delivery {
            deliver(ndjson, |body| self.send(body)).await
        }
    }

    fn refused_numbers(delivery: &Delivery) -> Vec<u64> {
        match delivery {
            Delivery::Settled { refused, .. } => refused
                .iter()
                .flat_map(|r| numbers(&ndjson_to_json_array(&r.ndjson)))
                .collect(),
            Delivery::Transient { .. } => panic!("not settled: {delivery:?}"),
        }
    }

    #[tokio::test]
    async fn a_taken_batch_is_one_request() {
        let service = Service::new(&[]);
        let delivery = service.deliver(&batch(100)).await;
        assert_eq!(
            delivery,
            Delivery::Settled {
                sent: 100,
                stored: 100,
                duplicates: 0,
                refused: vec![]
            }
        );
        assert_eq!(*service.requests.borrow(), 1);
    }

    #[tokio::test]
    async fn one_bad_event_is_isolated_in_log2_rounds_and_the_rest_taken_in_order() {
        for (n, bad) in [(100, 37), (100, 0), (100, 99), (1000, 500), (2, 1), (3, 1)] {
            let service = Service::new(&[bad]);
            let delivery = service.deliver(&batch(n as usize)).await;
            assert_eq!(refused_numbers(&delivery), vec![bad], "{n}/{bad}");
            let Delivery::Settled { sent, refused, .. } = &delivery else {
                unreachable!()
            };
            assert_eq!(*sent, n - 1);
            assert_eq!(refused[0].status, 400);
            assert_eq!(refused[0].ndjson, format!("{{\"n\":{bad}}}\n").into_bytes());
            let expected: Vec<u64> = (0..n).filter(|&i| i != bad).collect();
            assert_eq!(*service.taken.borrow(), expected, "in order");
            let levels = (n as f64).log2().ceil() as usize;
            let requests = *service.requests.borrow();
            assert!(requests <= 1 + 2 * levels, "{n}/{bad}: {requests} requests");
        }
    }

    #[tokio::test]
    async fn several_bad_events_are_each_refused_alone() {
        let service = Service::new(&[3, 4, 50, 99]);
        let delivery = service.deliver(&batch(100)).await;
        assert_eq!(refused_numbers(&delivery), vec![3, 4, 50, 99]);
        let expected: Vec<u64> = (0..100).filter(|i| ![3, 4, 50, 99].contains(i)).collect();
        assert_eq!(*service.taken.borrow(), expected);
    }

    #[tokio::test]
    async fn a_batch_of_nothing_but_bad_events_is_bounded() {
        let all: Vec<u64> = (0..64).collect();
        let service = Service::new(&all);
        let delivery = service.deliver(&batch(64)).await;
        assert_eq!(refused_numbers(&delivery), all);
        assert_eq!(*service.requests.borrow(), 2 * 64 - 1);
    }

    #[tokio::test]
    async fn a_transient_failure_mid_split_gives_the_whole_batch_back() {
        let mut service = Service::new(&[70]);
        // First the batch, then its halves: the second half fails.
        service.transient_on = Some(3);
        let delivery = service.deliver(&batch(100)).await;
        assert!(
            matches!(delivery, Delivery::Transient { .. }),
            "{delivery:?}"
        );
        assert_eq!(*service.taken.borrow(), (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn events_are_found_by_their_lines() {
        assert_eq!(event_bounds(b"{}\n{}\n"), vec![0, 3, 6]);
        // Blank lines belong to the event before them; a last line may lack
        // its newline.
        assert_eq!(event_bounds(b"\n{}\n\n  \n{\"a\":1}"), vec![1, 8, 15]);
        assert_eq!(event_bounds(b""), vec![0]);
    }

    #[tokio::test]
    async fn an_empty_batch_needs_no_request() {
        let service = Service::new(&[]);
        let delivery = service.deliver(b"\n").await;
        assert!(matches!(delivery, Delivery::Settled { sent: 0, .. }));
        assert_eq!(*service.requests.borrow(), 0);
    }
}
