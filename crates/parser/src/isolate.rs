//! Running an extraction where a hostile file cannot hurt the service.
//!
//! `pdf-extract` panics on malformed PDFs by policy, and any parser may
//! loop or allocate without end on a crafted file. Two isolations:
//!
//! - [`Isolation::Process`] (what `echod serve parser` uses): parses run in
//!   child processes, the same binary run as `echod parse-worker`, started
//!   with none of the service's environment (which holds the master key,
//!   client secrets, the LLM key: a worker needs none of them), only what
//!   the caller names for it. A worker first closes every file descriptor it inherited but its stdin, stdout and
//!   stderr, and caps its open files ([`WORKER_OPEN_FILES`]); then, with
//!   its first job, its address space ([`Limits::worker_memory_bytes`]) and
//!   CPU time (for all the parses it may serve). It parses one file at a
//!   time; the service kills it at a parse's timeout. A panic, an abort on allocation failure or a signal
//!   ends the worker, never the service. A worker that answered is kept for
//!   the next parse, up to [`PARSES_PER_WORKER`], so a parse does not pay a
//!   process start; one that panicked, timed out or died is never reused.
//! - [`Isolation::Thread`]: a blocking thread with the panic caught. It
//!   cannot stop a parse that loops (the thread runs on, abandoned, holding
//!   its concurrency permit) nor bound its memory: for tests and embedding.
//!
//! Either way at most `concurrency` parses run at once and a request gives
//! up after [`Limits::timeout`].
//!
//! The worker protocol, on the child's stdin, per parse: one line of JSON, a
//! [`Job`] (`kind`, `limits`, the file's length, a fresh random `nonce`),
//! then the file's bytes. On stdout: a line `<nonce> <Outcome as JSON>`.
//! Anything else a parsing library prints is skipped, and it cannot forge
//! the answer: it never sees the nonce. End of input ends the worker.

use std::ffi::OsString;
use std::hash::{BuildHasher, RandomState};
use std::io::{BufRead, Read, Write};
use std::os::fd::RawFd;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::Stdio;

use echo_core::sync::lock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::Semaphore;

use echo_text::Kind;

use crate::{Limits, ParseError, Parsed, extract};

/// Where extractions run.
#[derive(Debug, Clone)]
pub enum Isolation {
    /// A blocking thread, panics caught.
    Thread,
    /// A child process per parse: `program args…` speaking the worker
    /// protocol ([`run_worker`]), with `env` as its whole environment
    /// (nothing of the service's is inherited).
    Process {
        program: PathBuf,
        args: Vec<OsString>,
        env: Vec<(OsString, OsString)>,
    },
}

/// Parses one worker process serves before it is replaced: a bound on what
/// a long-lived process could accumulate (heap fragmentation, CPU time).
pub const PARSES_PER_WORKER: u64 = 100;

/// The line that starts each job.
#[derive(Debug, Serialize, Deserialize)]
struct Job {
    kind: Kind,
    limits: Limits,
    /// The file's length: that many bytes follow the line.
    len: usize,
    /// Starts the answer's line; random per job.
    nonce: String,
}

/// The answer a worker writes.
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
    /// Process workers waiting for their next parse.
    idle: Mutex<Vec<Worker>>,
    /// Makes each job's nonce unpredictable (keys from the OS's randomness).
    nonces: RandomState,
    jobs: AtomicU64,
}

/// How a worker is started: program, arguments, whole environment.
type WorkerCommand<'a> = (&'a PathBuf, &'a [OsString], &'a [(OsString, OsString)]);

/// A parse worker process between or during parses.
#[derive(Debug)]
struct Worker {
    /// Killed when dropped.
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// What the worker limited itself to: it only takes jobs with the same.
    limits: Limits,
    parses: u64,
}

impl Isolator {
    pub fn new(isolation: Isolation, concurrency: usize) -> Self {
        Self {
            isolation,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            idle: Mutex::new(Vec::new()),
            nonces: RandomState::new(),
            jobs: AtomicU64::new(0),
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
            Isolation::Process { program, args, env } => {
                let command = (program, args.as_slice(), env.as_slice());
                let result = self.in_process(command, kind, &bytes, limits).await;
                drop(permit);
                result
            }
        }
    }

    /// One parse in a worker process (an idle one, or a new one), killed at
    /// the timeout.
    async fn in_process(
        &self,
        command: WorkerCommand<'_>,
        kind: Kind,
        bytes: &[u8],
        limits: &Limits,
    ) -> Result<Parsed, ParseError> {
        let mut worker = match self.idle_worker(limits) {
            Some(worker) => worker,
            None => Worker::start(command, limits)?,
        };
        let nonce = format!(
            "{:016x}",
            self.nonces
                .hash_one(self.jobs.fetch_add(1, Ordering::Relaxed))
        );
        let job = Job {
            kind,
            limits: limits.clone(),
            len: bytes.len(),
            nonce,
        };
        match tokio::time::timeout(limits.timeout, worker.parse(&job, bytes)).await {
            Err(_) => Err(ParseError::TimedOut(limits.timeout)),
            Ok(Some(outcome)) => {
                worker.parses += 1;
                let reusable = !matches!(outcome, Outcome::Crashed(_));
                if reusable && worker.parses < PARSES_PER_WORKER {
                    lock(&self.idle).push(worker);
                }
                outcome.into()
            }
            Ok(None) => Err(worker.died().await),
        }
    }

    /// An idle worker for `limits` that is still alive (one may have been
    /// killed while it waited, by the OOM killer say).
    fn idle_worker(&self, limits: &Limits) -> Option<Worker> {
        let mut idle = lock(&self.idle);
        idle.retain_mut(|w| matches!(w.child.try_wait(), Ok(None)));
        let at = idle.iter().position(|w| &w.limits == limits)?;
        Some(idle.swap_remove(at))
    }
}

impl Worker {
    fn start((program, args, env): WorkerCommand<'_>, limits: &Limits) -> Result<Self, ParseError> {
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ParseError::Internal(format!("cannot start the parse worker: {e}")))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(ParseError::Internal("the parse worker has no pipes".into()));
        };
        Ok(Self {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            limits: limits.clone(),
            parses: 0,
        })
    }

    /// Sends the job and reads its answer; `None` if the worker ended (or
    /// wrote more than an answer can be) first.
    async fn parse(&mut self, job: &Job, bytes: &[u8]) -> Option<Outcome> {
        let mut header = serde_json::to_vec(job).ok()?;
        header.push(b'\n');
        // Room for the text with every character escaped, plus metadata.
        let mut budget = (job.limits.max_output_chars as u64).saturating_mul(6) + (1 << 20);
        let write = async {
            // A worker that dies early closes the pipe: the read sees it.
            let _ = self.stdin.write_all(&header).await;
            let _ = self.stdin.write_all(bytes).await;
            let _ = self.stdin.flush().await;
        };
        let read = async {
            let mut line = Vec::new();
            loop {
                line.clear();
                let read = (&mut self.stdout)
                    .take(budget)
                    .read_until(b'\n', &mut line)
                    .await
                    .ok()?;
                if read == 0 || !line.ends_with(b"\n") {
                    return None;
                }
                budget -= read as u64;
                if let Some(answer) = line.strip_prefix(job.nonce.as_bytes()) {
                    return serde_json::from_slice::<Outcome>(answer.trim_ascii()).ok();
                }
            }
        };
        let ((), outcome) = tokio::join!(write, read);
        outcome
    }

    /// Why a worker ended without an answer.
    async fn died(mut self) -> ParseError {
        let _ = self.child.start_kill();
        match self.child.wait().await {
            Ok(status) => ParseError::Crashed(format!(
                "the worker ended without an answer ({status}; out of memory or CPU time?)"
            )),
            Err(e) => ParseError::Internal(format!("parse worker: {e}")),
        }
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

/// The worker side (`echod parse-worker`): limits its own memory and CPU
/// time, then parses the jobs on stdin one after the other, writing each
/// [`Outcome`] on a line of its own after the job's nonce. Blocking; meant to
/// be the whole life of a process. Ends at end of input, after a panic, or
/// after [`PARSES_PER_WORKER`] jobs.
pub fn run_worker() -> std::io::Result<()> {
    close_inherited_files()?;
    rlimit::setrlimit(
        rlimit::Resource::NOFILE,
        WORKER_OPEN_FILES,
        WORKER_OPEN_FILES,
    )?;
    let mut input = std::io::stdin().lock();
    let mut limited = false;
    for _ in 0..PARSES_PER_WORKER {
        let mut line = Vec::new();
        if (&mut input).take(64 * 1024).read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let job: Job = serde_json::from_slice(&line).map_err(std::io::Error::other)?;
        if !limited {
            limit_self(&job.limits)?;
            limited = true;
        }
        // An oversize file is refused unread, so the worker cannot go on.
        let too_large = job.len > job.limits.max_input_bytes;
        let result = if too_large {
            Err(ParseError::TooLarge {
                max: job.limits.max_input_bytes,
            })
        } else {
            let mut bytes = Vec::with_capacity(job.len);
            (&mut input).take(job.len as u64).read_to_end(&mut bytes)?;
            if bytes.len() < job.len {
                return Ok(());
            }
            std::panic::catch_unwind(AssertUnwindSafe(|| extract(job.kind, &bytes, &job.limits)))
                .unwrap_or_else(|panic| Err(ParseError::Crashed(panic_message(&*panic))))
        };
        let outcome = Outcome::from(result);
        let mut stdout = std::io::stdout().lock();
        // A new line first: a library may have left a partial one.
        write!(stdout, "\n{} ", job.nonce)?;
        serde_json::to_writer(&mut stdout, &outcome).map_err(std::io::Error::other)?;
        stdout.write_all(b"\n")?;
        stdout.flush()?;
        if too_large || matches!(outcome, Outcome::Crashed(_)) {
            return Ok(());
        }
    }
    Ok(())
}

/// Files a parse worker may have open: stdin, stdout, stderr and a few
/// for the runtime. A parse reads from memory and opens nothing.
pub const WORKER_OPEN_FILES: u64 = 16;

/// Closes every file descriptor but 0, 1 and 2: what the service's own
/// parent left open without close-on-exec (a socket, a database file, a
/// jobserver pipe) is not the worker's business.
fn close_inherited_files() -> std::io::Result<()> {
    let inherited: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in inherited {
        // The listing's own descriptor is among them, closed already: an
        // EBADF for it is expected.
        let _ = nix::unistd::close(fd);
    }
    Ok(())
}

/// Lowers this process's address space to the job's limit, and its CPU
/// time to what all its parses may take.
fn limit_self(limits: &Limits) -> std::io::Result<()> {
    let memory = limits.worker_memory_bytes;
    rlimit::setrlimit(rlimit::Resource::AS, memory, memory)?;
    let cpu = (limits.timeout.as_secs() + 1) * PARSES_PER_WORKER;
    rlimit::setrlimit(rlimit::Resource::CPU, cpu, cpu + 1)
}
