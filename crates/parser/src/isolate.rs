//! Running an extraction where a hostile file cannot hurt the service.
//!
//! `pdf-extract` panics on malformed PDFs by policy, and any parser may
//! loop or allocate without end on a crafted file. Two isolations:
//!
//! - [`Isolation::Process`] (what `echod serve parser` uses): one child
//!   process per parse, the same binary run as `echod parse-worker`. The
//!   child first lowers its own limits (address space
//!   [`Limits::worker_memory_bytes`], CPU time [`Limits::timeout`] + 1 s),
//!   then parses; the service kills it at the timeout. A panic, an abort on
//!   allocation failure or a signal ends the child, never the service.
//! - [`Isolation::Thread`]: a blocking thread with the panic caught. It
//!   cannot stop a parse that loops (the thread runs on, abandoned, holding
//!   its concurrency permit) nor bound its memory: for tests and embedding.
//!
//! Either way at most `concurrency` parses run at once and a request gives
//! up after [`Limits::timeout`].
//!
//! The worker protocol, on the child's stdin: one line of JSON
//! `{"kind", "limits"}`, then the file's bytes to end of input. On stdout:
//! one line of JSON, an [`Outcome`], last.

use std::ffi::OsString;
use std::io::{BufRead, Read, Write};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use axum::body::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::{Kind, Limits, ParseError, Parsed, extract};

/// Where extractions run.
#[derive(Debug, Clone)]
pub enum Isolation {
    /// A blocking thread, panics caught.
    Thread,
    /// A child process per parse: `program args…` speaking the worker
    /// protocol ([`run_worker`]).
    Process {
        program: PathBuf,
        args: Vec<OsString>,
    },
}

/// The first line a worker reads.
#[derive(Debug, Serialize, Deserialize)]
struct Job {
    kind: Kind,
    limits: Limits,
}

/// The last line a worker writes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Parsed(Parsed),
    Unsupported(String),
    Invalid(String),
    Crashed(String),
}

impl From<Result<Parsed, ParseError>> for Outcome {
    fn from(result: Result<Parsed, ParseError>) -> Self {
        match result {
            Ok(parsed) => Outcome::Parsed(parsed),
            Err(ParseError::Unsupported(m)) => Outcome::Unsupported(m),
            Err(ParseError::Invalid(m)) => Outcome::Invalid(m),
            Err(other) => Outcome::Crashed(other.to_string()),
        }
    }
}

impl From<Outcome> for Result<Parsed, ParseError> {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Parsed(parsed) => Ok(parsed),
            Outcome::Unsupported(m) => Err(ParseError::Unsupported(m)),
            Outcome::Invalid(m) => Err(ParseError::Invalid(m)),
            Outcome::Crashed(m) => Err(ParseError::Crashed(m)),
        }
    }
}

/// Runs extractions under an [`Isolation`], at most `concurrency` at once.
#[derive(Debug)]
pub struct Isolator {
    isolation: Isolation,
    permits: Arc<Semaphore>,
}

impl Isolator {
    pub fn new(isolation: Isolation, concurrency: usize) -> Self {
        Self {
            isolation,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    /// Extracts `bytes` as `kind` within `limits`.
    pub async fn run(
        &self,
        kind: Kind,
        bytes: Bytes,
        limits: &Limits,
    ) -> Result<Parsed, ParseError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ParseError::Internal(e.to_string()))?;
        match &self.isolation {
            Isolation::Thread => {
                let job_limits = limits.clone();
                let task = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    std::panic::catch_unwind(AssertUnwindSafe(|| {
                        extract(kind, &bytes, &job_limits)
                    }))
                });
                match tokio::time::timeout(limits.timeout, task).await {
                    Err(_) => Err(ParseError::TimedOut(limits.timeout)),
                    Ok(Err(e)) => Err(ParseError::Internal(e.to_string())),
                    Ok(Ok(Err(panic))) => Err(ParseError::Crashed(panic_message(&*panic))),
                    Ok(Ok(Ok(result))) => result,
                }
            }
            Isolation::Process { program, args } => {
                let result = in_process(program, args, kind, &bytes, limits).await;
                drop(permit);
                result
            }
        }
    }
}

/// One parse in a child process, killed at the timeout.
async fn in_process(
    program: &PathBuf,
    args: &[OsString],
    kind: Kind,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Parsed, ParseError> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ParseError::Internal(format!("cannot start the parse worker: {e}")))?;
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(ParseError::Internal("the parse worker has no pipes".into()));
    };
    let mut header = serde_json::to_vec(&Job {
        kind,
        limits: limits.clone(),
    })
    .map_err(|e| ParseError::Internal(e.to_string()))?;
    header.push(b'\n');
    // Room for the text with every character escaped, plus metadata.
    let cap = (limits.max_output_chars as u64).saturating_mul(6) + (1 << 20);
    let exchange = async {
        let write = async {
            // A worker that dies early closes the pipe: its exit says why.
            let _ = stdin.write_all(&header).await;
            let _ = stdin.write_all(bytes).await;
            drop(stdin);
        };
        let read = async {
            let mut out = Vec::new();
            stdout.take(cap).read_to_end(&mut out).await.map(|_| out)
        };
        let ((), out) = tokio::join!(write, read);
        (out, child.wait().await)
    };
    let (out, status) = match tokio::time::timeout(limits.timeout, exchange).await {
        Ok(done) => done,
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(ParseError::TimedOut(limits.timeout));
        }
    };
    let outcome = out.ok().and_then(|out| {
        out.split(|&b| b == b'\n')
            .rfind(|line| !line.is_empty())
            .and_then(|line| serde_json::from_slice::<Outcome>(line).ok())
    });
    match (outcome, status) {
        (Some(outcome), _) => outcome.into(),
        (None, Ok(status)) => Err(ParseError::Crashed(format!(
            "the worker ended without an answer ({status}; out of memory or CPU time?)"
        ))),
        (None, Err(e)) => Err(ParseError::Internal(format!("parse worker: {e}"))),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".into());
    format!("it panicked ({message})")
}

/// The worker side (`echod parse-worker`): reads a job from stdin, limits
/// its own memory and CPU time, parses, and writes the [`Outcome`] as the
/// last line of stdout. Blocking; meant to be the whole life of a process.
pub fn run_worker() -> std::io::Result<()> {
    let mut input = std::io::stdin().lock();
    let mut line = Vec::new();
    (&mut input).take(64 * 1024).read_until(b'\n', &mut line)?;
    let job: Job = serde_json::from_slice(&line).map_err(std::io::Error::other)?;
    limit_self(&job.limits)?;
    let mut bytes = Vec::new();
    input
        .take(job.limits.max_input_bytes as u64 + 1)
        .read_to_end(&mut bytes)?;
    let result = if bytes.len() > job.limits.max_input_bytes {
        Err(ParseError::TooLarge {
            max: job.limits.max_input_bytes,
        })
    } else {
        std::panic::catch_unwind(AssertUnwindSafe(|| extract(job.kind, &bytes, &job.limits)))
            .unwrap_or_else(|panic| Err(ParseError::Crashed(panic_message(&*panic))))
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(b"\n")?;
    serde_json::to_writer(&mut stdout, &Outcome::from(result)).map_err(std::io::Error::other)?;
    stdout.write_all(b"\n")?;
    stdout.flush()
}

/// Lowers this process's address space and CPU time to the job's limits.
fn limit_self(limits: &Limits) -> std::io::Result<()> {
    let memory = limits.worker_memory_bytes;
    rlimit::setrlimit(rlimit::Resource::AS, memory, memory)?;
    let cpu = limits.timeout.as_secs() + 1;
    rlimit::setrlimit(rlimit::Resource::CPU, cpu, cpu + 1)
}
