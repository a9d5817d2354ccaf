//! The job queue the docs service enqueues to and the worker takes from,
//! chosen the same way for `serve docs`, `serve worker` and `up`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use echo_crypto::TrustedRoots;
use echo_edge::{Check, Periodic};
use echo_queue::{JobQueue, QueueConfig};

use crate::settings::{ensure_data_dir, url_setting};

/// Where jobs are kept: NATS JetStream when `ECHO_NATS_URL` is set, else
/// the PostgreSQL database of `ECHO_QUEUE_URL`, else SQLite
/// `<data>/queue.db` (each URL may instead be read from the file its
/// `_FILE` variable names).
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// NATS JetStream server of the job queue (`nats://host:port`, or
    /// `tls://host:port` for TLS); wins over `--queue-url`.
    #[arg(long = "nats-url", env = "ECHO_NATS_URL")]
    pub nats_url: Option<String>,
    /// PostgreSQL database of the job queue (`postgres://…`, its own
    /// database); without it and NATS, SQLite `<data>/queue.db`.
    #[arg(long = "queue-url", env = "ECHO_QUEUE_URL")]
    pub queue_url: Option<String>,
    /// NATS only: the stream's name (also the prefix of its subjects, dead
    /// letters and status bucket).
    #[arg(
        long = "queue-name",
        env = "ECHO_QUEUE_NAME",
        default_value = "ECHO_JOBS"
    )]
    pub name: String,
    /// How long a worker holds a job without renewing it (e.g. `30s`); a
    /// job whose worker died is taken again after it. On NATS it is the
    /// consumer's ack wait, set by whichever process creates the consumer
    /// first: give docs and workers the same value.
    #[arg(long = "lease", env = "ECHO_WORKER_LEASE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease: Duration,
}

impl QueueArgs {
    /// Opens the queue these arguments name, its TLS trusting `roots`.
    pub async fn open(
        &self,
        data_dir: &Path,
        roots: &TrustedRoots,
    ) -> anyhow::Result<Arc<dyn JobQueue>> {
        let config = QueueConfig {
            nats_lease: self.lease,
            nats_name: self.name.clone(),
            ..QueueConfig::default()
        };
        let nats_url = url_setting(self.nats_url.as_deref(), "ECHO_NATS_URL")?;
        let queue_url = url_setting(self.queue_url.as_deref(), "ECHO_QUEUE_URL")?;
        let (url, named_by) = match (nats_url, queue_url) {
            (Some(url), _) => (Some(url), "ECHO_NATS_URL"),
            (None, Some(url)) => (Some(url), "ECHO_QUEUE_URL"),
            (None, None) => {
                ensure_data_dir(data_dir)?;
                (None, "")
            }
        };
        echo_queue::open_queue(url.as_deref(), roots, data_dir, config)
            .await
            .with_context(|| match url {
                Some(_) => format!("cannot open the job queue named by {named_by}"),
                None => format!("cannot open the job queue in {}", data_dir.display()),
            })
    }
}

/// How often the queue's gauges are brought up to date.
const DEPTH_INTERVAL: Duration = Duration::from_secs(5);

/// What a service using `queue` adds to itself (docs, the worker): the job
/// that keeps the queue's gauges up to date, and its readiness check.
pub fn observed(queue: &Arc<dyn JobQueue>) -> (Periodic, Check) {
    let watched = queue.clone();
    let job = Periodic::every("queue depth", DEPTH_INTERVAL, move || {
        let queue = watched.clone();
        async move { echo_queue::observe(&*queue).await.map(drop) }
    })
    .at_start();
    let probed = queue.clone();
    let check = Check::new("queue", move || {
        let queue = probed.clone();
        async move {
            echo_queue::observe(&*queue)
                .await
                .map(|_| "ok")
                .map_err(|e| e.to_string())
        }
    });
    (job, check)
}
