//! How every service runs: [`Service`] (a listener and its router, or a
//! task without a socket), its [`Periodic`] jobs, and what to flush when
//! it stops. [`Service::run`] runs one; [`run_all`] runs several in one
//! process (`echod up`).
//!
//! Start-up prints `ready <address>` per listener once it accepts
//! connections (scripts wait for that line). A listener given a
//! [`ServerTls`] ([`Service::with_tls`]) speaks HTTPS (HTTP/2 or HTTP/1.1
//! by ALPN) and reloads its certificate when the files change
//! (`tls.rs`). Shutdown stops accepting,
//! lets requests in flight finish, stops the periodic jobs, then runs the
//! service's flushes (its audit writer) in order.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::{IncomingStream, Listener};
use echo_tls::ServerTls;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::front::{Door, Front, FrontDoor};
use crate::ops::{Check, KeptHandles, Ops};
use crate::{EdgeLayer, Gate, TrustedProxies};

/// How often the metrics recorder drops what it no longer needs to keep
/// (histogram samples already summed) when nobody scrapes.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// A boxed future of the runner's: a shutdown signal, a flush.
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A job run every `interval` while its service runs (purges, key
/// refreshes, checkpoints). A run that fails is logged with the job's name
/// and tried again at the next tick; never two runs at once. An interval
/// of zero turns the job off.
pub struct Periodic {
    name: &'static str,
    interval: Duration,
    /// Run once at start-up too, not only after the first interval.
    at_start: bool,
    run: Box<dyn FnMut() -> BoxFuture + Send>,
}

impl Periodic {
    /// `job` every `interval`, the first run one interval after start-up.
    pub fn every<F, Fut, E>(name: &'static str, interval: Duration, mut job: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        Self {
            name,
            interval,
            at_start: false,
            run: Box::new(move || {
                let run = job();
                Box::pin(async move {
                    if let Err(e) = run.await {
                        tracing::warn!(job = name, error = %e, "periodic job failed; retrying at the next interval");
                    }
                })
            }),
        }
    }

    /// Runs the first time at start-up rather than one interval later.
    pub fn at_start(mut self) -> Self {
        self.at_start = true;
        self
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        if self.interval.is_zero() {
            return;
        }
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if !self.at_start {
            tick.tick().await;
        }
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
            tracing::trace!(job = self.name, "periodic job");
            (self.run)().await;
        }
    }
}

/// What a service is made of.
enum Body {
    /// A socket and what answers on it.
    Http {
        listener: TcpListener,
        router: Router,
        /// What the router's requests and the front's go through.
        edge: EdgeLayer,
        tls: Option<ServerTls>,
        front: Option<Arc<FrontDoor>>,
    },
    /// Work without a socket of its own (the worker); ends when the future
    /// given the shutdown signal does. With a listener, its health
    /// endpoints answer there.
    Task {
        run: Box<dyn FnOnce(BoxFuture) -> BoxFuture + Send>,
        health: Option<TcpListener>,
    },
}

/// One service: what it serves, its periodic jobs, what it flushes last.
pub struct Service {
    name: &'static str,
    body: Body,
    jobs: Vec<Periodic>,
    flushes: Vec<BoxFuture>,
    ops: Ops,
}

impl Service {
    /// `router` on `listener` behind `edge`, each request in its trace
    /// (`trace.rs`), with the operations endpoints beside it (`/healthz`,
    /// `/readyz`, `/metrics`: `ops.rs`) and request metrics on every route.
    pub fn http(
        name: &'static str,
        listener: TcpListener,
        edge: EdgeLayer,
        router: Router,
    ) -> Self {
        let router =
            edge.clone()
                .wrap(router)
                .layer(axum::middleware::from_fn(move |request, next| {
                    crate::trace::traced(name, request, next)
                }));
        Self::of(
            name,
            Body::Http {
                listener,
                router,
                edge,
                tls: None,
                front: None,
            },
        )
    }

    /// Answers the requests `front` takes before the router, behind the
    /// same edge: see `front.rs`.
    pub fn with_front(mut self, front: Arc<dyn Front>) -> Self {
        if let Body::Http {
            front: slot, edge, ..
        } = &mut self.body
        {
            // The recorder first: the front door keeps its metric handles.
            crate::metrics::handle();
            *slot = Some(Arc::new(FrontDoor {
                service: self.name,
                front,
                edge: edge.clone(),
                metrics: KeptHandles::default(),
            }));
        }
        self
    }

    fn of(name: &'static str, body: Body) -> Self {
        let upkeep = Periodic::every("metrics upkeep", METRICS_UPKEEP, || async {
            crate::metrics::handle().run_upkeep();
            Ok::<(), std::convert::Infallible>(())
        });
        Self {
            name,
            body,
            jobs: vec![upkeep],
            flushes: Vec::new(),
            ops: Ops::default(),
        }
    }

    /// A service without a socket: `run` gets the shutdown signal and
    /// returns when it has stopped.
    pub fn task<F, Fut>(name: &'static str, run: F) -> Self
    where
        F: FnOnce(BoxFuture) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self::of(
            name,
            Body::Task {
                run: Box::new(move |stop| Box::pin(run(stop))),
                health: None,
            },
        )
    }

    /// Answers `/healthz`, `/readyz` and `/metrics` on `listener` (a task's
    /// `--health-listen`; a service with a socket has them there already).
    pub fn with_health_listener(mut self, listener: TcpListener) -> Self {
        if let Body::Task { health, .. } = &mut self.body {
            *health = Some(listener);
        }
        self
    }

    /// A readiness check of `/readyz`.
    pub fn with_check(mut self, check: Check) -> Self {
        self.ops.checks.push(check);
        self
    }

    pub fn with_checks(mut self, checks: impl IntoIterator<Item = Check>) -> Self {
        self.ops.checks.extend(checks);
        self
    }

    /// Lets a service token of `gate`'s audience with the `metrics.read`
    /// scope read `/metrics` from elsewhere than loopback; the client
    /// address is found behind `trusted` proxies.
    pub fn with_metrics_gate(mut self, gate: Arc<Gate>, trusted: TrustedProxies) -> Self {
        self.ops.metrics_gate = Some((gate, trusted));
        self
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The address it listens on, if it has a socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.body {
            Body::Http { listener, .. } => listener.local_addr().ok(),
            Body::Task { health, .. } => health.as_ref().and_then(|l| l.local_addr().ok()),
        }
    }

    /// Serves HTTPS with `tls` (a service without a socket has nothing
    /// to serve it on), reloading its certificate when the files change.
    pub fn with_tls(mut self, tls: ServerTls) -> Self {
        if let Body::Http { tls: slot, .. } = &mut self.body {
            let reload = crate::tls::cert_reload_job(tls.cert().clone());
            *slot = Some(tls);
            self.jobs.push(reload);
        }
        self
    }

    /// Whether it serves HTTPS.
    pub fn is_tls(&self) -> bool {
        matches!(&self.body, Body::Http { tls: Some(_), .. })
    }

    pub fn with_job(mut self, job: Periodic) -> Self {
        self.jobs.push(job);
        self
    }

    pub fn with_jobs(mut self, jobs: impl IntoIterator<Item = Periodic>) -> Self {
        self.jobs.extend(jobs);
        self
    }

    /// Runs `flush` after the service stopped (an audit writer's
    /// shutdown, which sends what it holds or spools it).
    pub fn on_stop(mut self, flush: impl Future<Output = ()> + Send + 'static) -> Self {
        self.flushes.push(Box::pin(flush));
        self
    }

    /// Prints `ready <address>` (nothing without a socket).
    pub fn announce(&self) -> std::io::Result<()> {
        if let Some(addr) = self.local_addr() {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "ready {addr}")?;
            stdout.flush()?;
        }
        Ok(())
    }

    /// Serves until `shutdown` resolves, without announcing itself (tests,
    /// and the libraries' own `serve`).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop, stopped) = watch::channel(false);
        let signal = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        let (served, ()) = tokio::join!(self.serve(stopped), signal);
        served
    }

    async fn serve(self, stopped: watch::Receiver<bool>) -> std::io::Result<()> {
        let Service {
            name,
            body,
            jobs,
            flushes,
            ops,
        } = self;
        let mut running = JoinSet::new();
        for job in jobs {
            running.spawn(job.run(stopped.clone()));
        }
        let until_stopped = || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            }
        };
        let served = match body {
            Body::Http {
                listener,
                router,
                tls,
                front,
                ..
            } => {
                let router = ops.wrap(name, router);
                serve_http(listener, tls, router, front, until_stopped()).await
            }
            Body::Task { run, health: None } => {
                run(Box::pin(until_stopped())).await;
                Ok(())
            }
            Body::Task {
                run,
                health: Some(listener),
            } => {
                let health = serve_http(
                    listener,
                    None,
                    crate::ops::health_router(name, ops),
                    None,
                    until_stopped(),
                );
                let ((), served) = tokio::join!(run(Box::pin(until_stopped())), health);
                served
            }
        };
        // The jobs end at the stop signal; wait so none runs during the
        // flushes.
        while running.join_next().await.is_some() {}
        for flush in flushes {
            flush.await;
        }
        tracing::info!(service = name, "stopped");
        served
    }
}

/// Serves `router` on `listener`, over TLS when given one, with `front`
/// before it.
async fn serve_http(
    listener: TcpListener,
    tls: Option<ServerTls>,
    router: Router,
    front: Option<Arc<FrontDoor>>,
    until_stopped: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        None => {
            axum::serve(listener, doors(router, front))
                .with_graceful_shutdown(until_stopped)
                .await
        }
        Some(tls) => {
            let listener = crate::tls::TlsListener::new(listener, &tls)?;
            axum::serve(listener, doors(router, front))
                .with_graceful_shutdown(until_stopped)
                .await
        }
    }
}

/// What makes each connection's [`Door`], knowing its peer.
fn doors<L>(
    router: Router,
    front: Option<Arc<FrontDoor>>,
) -> impl for<'a> tower::Service<
    IncomingStream<'a, L>,
    Response = Door,
    Error = Infallible,
    Future = std::future::Ready<Result<Door, Infallible>>,
> + Send
+ 'static
where
    L: Listener<Addr = SocketAddr>,
{
    tower::service_fn(move |stream: IncomingStream<'_, L>| {
        std::future::ready(Ok(Door {
            router: router.clone(),
            front: front.clone(),
            peer: *stream.remote_addr(),
        }))
    })
}

/// Runs `services` in one process: announces each (in order), calls
/// `started`, and serves them all until `shutdown` resolves; then each
/// stops and flushes. The first error is returned, after every service
/// stopped.
pub async fn run_all(
    services: Vec<Service>,
    started: impl FnOnce() -> std::io::Result<()>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    for service in &services {
        service.announce()?;
    }
    started()?;
    let (stop, stopped) = watch::channel(false);
    let mut running = JoinSet::new();
    for service in services {
        running.spawn(service.serve(stopped.clone()));
    }
    let signal = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    tokio::pin!(signal);
    let mut first_error = None;
    let mut signalled = false;
    loop {
        tokio::select! {
            () = &mut signal, if !signalled => signalled = true,
            done = running.join_next() => match done {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => { first_error.get_or_insert(e); }
                Some(Err(e)) => { first_error.get_or_insert(std::io::Error::other(e)); }
            },
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Runs one service until SIGINT or SIGTERM (`echod serve <service>`):
/// announced, then served, stopped and flushed.
pub async fn run_until_signalled(service: Service) -> std::io::Result<()> {
    run_all(vec![service], || Ok(()), shutdown_signal()).await
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// Binds `address`, saying which on failure.
pub async fn bind(address: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {address}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn periodic_jobs_run_on_time_and_stop_with_the_service() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let flushed = Arc::new(AtomicUsize::new(0));
        let flush = flushed.clone();
        let job = Periodic::every("count", Duration::from_secs(10), move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok::<(), std::convert::Infallible>(())
            }
        });
        let service = Service::task("idle", |stop| stop)
            .with_job(job)
            .on_stop(async move {
                flush.fetch_add(1, Ordering::SeqCst);
            });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(service.run(async move {
            let _ = stopped.await;
        }));
        tokio::time::sleep(Duration::from_secs(35)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "at 10, 20 and 30 s");
        let _ = stop.send(());
        running.await.unwrap().unwrap();
        assert_eq!(
            flushed.load(Ordering::SeqCst),
            1,
            "flushed once, at the end"
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "no run after the stop");
    }

    #[tokio::test]
    async fn services_serve_until_the_shutdown_and_then_flush() {
        let listener = bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/", axum::routing::get(|| async { "hi" }));
        let flushed = Arc::new(AtomicUsize::new(0));
        let flush = flushed.clone();
        let service =
            Service::http("hello", listener, EdgeLayer::api(), router).on_stop(async move {
                flush.fetch_add(1, Ordering::SeqCst);
            });
        assert_eq!(service.local_addr(), Some(addr));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(run_all(vec![service], || Ok(()), async move {
            let _ = stopped.await;
        }));
        let body = reqwest::get(format!("http://{addr}/"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "hi");
        let _ = stop.send(());
        running.await.unwrap().unwrap();
        assert_eq!(flushed.load(Ordering::SeqCst), 1);
        assert!(
            reqwest::get(format!("http://{addr}/")).await.is_err(),
            "stopped"
        );
    }
}
