//! The scale-out topology of issue 16 (docs/scale-out.md), each replica its
//! own `echod serve …` process: identity, audit, gateway and docs replicas
//! behind HAProxy (health-checked on `/readyz`), one parser and the
//! workers, all on shared PostgreSQL, Redis and a job queue.
//!
//! Each replica runs in a network namespace of its own on a bridge of the
//! test's own ([`echo_testkit::netns`]), so its traffic crosses real
//! interfaces: it listens on its namespace's address, HAProxy's frontends
//! on the host's address on the bridge, and the engines (on the host's
//! loopback) are reached through relays on the bridge. Where the machine
//! refuses namespaces (no root, no `ip`), the test says why and runs every
//! replica on loopback instead.
//!
//! - `engines_going_away_answer_503_and_recover_by_themselves`: one replica
//!   of each on a PostgreSQL cluster and a NATS server of the test's own,
//!   stopped and started again under the running services.
//! - `replicas_behind_haproxy_survive_losing_one_of_each_under_load` (the
//!   job queue in PostgreSQL, on the machine's engines) and
//!   `…_with_the_queue_on_nats_…` (on JetStream, on a PostgreSQL cluster
//!   and a NATS server of the test's own): two of each behind HAProxy;
//!   10,000 audit events through both audit replicas make one chain; then
//!   a steady mixed load while one replica of each service in turn is
//!   SIGKILLed and restarted, and, on the test's own engines, PostgreSQL
//!   and then NATS are restarted under the same load. Each operation of
//!   the load runs in a trace of its own, so its audit events are counted
//!   per operation; each failure is matched to the kill it was in flight
//!   at, or to the engine's absence it was refused in (a `503`); each
//!   job's attempts are read from the queue.
//!
//! What two replicas agree on (tokens, sessions, lockout, rate limits,
//! documents) is `replicas.rs`' and `docs_replicas.rs`'.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use echo_queue::{JobId, JobQueue, JobState, JobStatus, QueueConfig};
use echo_testkit::engines::{NatsServer, PgCluster, free_port};
use echo_testkit::netns::{Namespace, Network};
use echo_testkit::{PgTestDb, RedisKeys, TempDir};
use serde_json::{Value, json};
use sqlx::{Connection as _, PgConnection};

use super::audit::{post_events, verify_by};
use super::{
    Hop, SECRET, Server, echod, run_with_stdin, start_logging, start_up, unanswered,
    up_on_free_ports,
};

/// The users of the load, each with password `<name>'s long password`.
const USERS: [&str; 2] = ["ann", "ben"];
/// The client the load's token grants authenticate as.
const LOAD_CLIENT: &str = "load";
/// A client no replica has seen yet: its first grant reads its
/// registration from the database (a known one is cached).
const COLD_CLIENT: &str = "cold";
/// How long a worker holds a job before another may take it: a killed
/// worker's job is taken again after this.
const LEASE: Duration = Duration::from_secs(2);
/// How long the load's client waits for an answer: an operation that
/// takes this long hung.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A service of the topology; every one but the parser and the worker
/// is replicated behind HAProxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Identity,
    Audit,
    Gateway,
    Docs,
    Parser,
    Worker,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Identity => "identity",
            Kind::Audit => "audit",
            Kind::Gateway => "gateway",
            Kind::Docs => "docs",
            Kind::Parser => "parser",
            Kind::Worker => "worker",
        }
    }

    /// Behind HAProxy, with a frontend of its own.
    fn balanced(self) -> bool {
        !matches!(self, Kind::Parser | Kind::Worker)
    }
}

/// Where the services keep their state.
struct Engines {
    identity_db: String,
    audit_db: String,
    docs_db: String,
    /// The job queue's variable and URL (`ECHO_NATS_URL` or
    /// `ECHO_QUEUE_URL`).
    queue: (&'static str, String),
    redis: RedisKeys,
}

/// One `echod serve <kind>` on a port of its own (the same after a
/// restart, where HAProxy looks for it), in a network namespace of its own
/// where the machine allows it, with a data directory of its own (its
/// audit spool) holding copies of the shared keys and secrets.
struct Replica {
    kind: Kind,
    index: usize,
    /// Where it listens: its namespace's address, or loopback.
    address: String,
    port: u16,
    namespace: Option<Namespace>,
    dir: TempDir,
    process: Option<Server>,
}

impl Replica {
    fn name(&self) -> String {
        format!("{}{}", self.kind.name(), self.index)
    }

    fn log(&self) -> std::path::PathBuf {
        self.dir.path().join("echod.log")
    }
}

/// HAProxy with a generated configuration, in the foreground, killed when
/// dropped.
struct Haproxy {
    stats_port: u16,
    child: Child,
    /// Its configuration and its log: each server's changes of state, with
    /// the reason and how long the check took.
    dir: TempDir,
    /// How much of the log was written when every replica was first up.
    settled: usize,
}

impl Haproxy {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    /// The servers HAProxy took out since every replica was first up.
    fn taken_out_since_settled(&self) -> Vec<String> {
        let log = self.log();
        log.get(self.settled..)
            .unwrap_or_default()
            .lines()
            // The log's lines (`<level>…`), not the same news as a warning.
            .filter(|line| line.starts_with('<') && line.contains(" is DOWN"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A topology: the replicas, HAProxy in front (when replicated), and the
/// URLs services and tests reach each service by.
struct Topology {
    engines: Engines,
    /// The bootstrap data directory: master key, audit signing key, the
    /// first-party clients' secrets.
    shared: TempDir,
    /// Each balanced service's URL: HAProxy's frontend, or the single
    /// replica when there is no HAProxy.
    urls: BTreeMap<Kind, String>,
    replicas: Vec<Replica>,
    haproxy: Option<Haproxy>,
    /// The gateway's configuration: its routes to docs.
    config: std::path::PathBuf,
    /// Each engine's URL (as in [`Engines`]) as the replicas reach it: a
    /// relay's on the bridge when they run in namespaces.
    reached: HashMap<String, String>,
    /// The bridge and the namespaces, if the machine allows them, held to
    /// be removed when the topology is dropped: last, so after the
    /// processes in them.
    _network: Option<Network>,
}

/// A namespace on a new bridge for each of `replicas` (kind, index); or
/// why the machine refuses them.
fn isolate(replicas: &[(Kind, usize)]) -> Result<(Network, Vec<Namespace>), String> {
    let mut network = Network::create()?;
    let namespaces = replicas
        .iter()
        .map(|(kind, index)| network.namespace(&format!("{}{index}", kind.name())))
        .collect::<Result<_, _>>()?;
    Ok((network, namespaces))
}

impl Topology {
    /// Starts `replicas` of identity, audit, gateway, docs and worker (one
    /// parser), behind HAProxy when `replicas` > 1.
    fn start(engines: Engines, replicas: usize) -> Self {
        let shared = echo_testkit::data_dir();
        let balanced = [Kind::Identity, Kind::Audit, Kind::Gateway, Kind::Docs];
        let mut slots: Vec<(Kind, usize)> = Vec::new();
        for kind in balanced.into_iter().chain([Kind::Worker]) {
            for index in 0..replicas {
                slots.push((kind, index));
            }
        }
        slots.push((Kind::Parser, 0));
        let (mut network, namespaces) = match isolate(&slots) {
            Ok((network, namespaces)) => {
                println!(
                    "replicas in network namespaces, HAProxy and the engines' relays on {}",
                    network.host()
                );
                (Some(network), namespaces.into_iter().map(Some).collect())
            }
            Err(reason) => {
                println!("replicas on loopback: the machine refuses network namespaces ({reason})");
                (None, vec![None; slots.len()])
            }
        };
        // Where HAProxy's frontends listen: where every replica reaches them.
        let host = network
            .as_ref()
            .map_or_else(|| "127.0.0.1".to_owned(), |n| n.host().to_string());
        let places: Vec<(Kind, usize, Option<Namespace>, u16)> = slots
            .into_iter()
            .zip(namespaces)
            .map(|((kind, index), namespace)| (kind, index, namespace, free_port()))
            .collect();
        let mut urls = BTreeMap::new();
        for kind in balanced.into_iter().chain([Kind::Parser]) {
            let url = if replicas > 1 && kind.balanced() {
                format!("http://{host}:{}", free_port())
            } else {
                let (_, _, namespace, port) =
                    places.iter().find(|(k, _, _, _)| *k == kind).unwrap();
                format!("http://{}:{port}", address_of(namespace.as_ref()))
            };
            urls.insert(kind, url);
        }
        let config = shared.path().join("echo.toml");
        std::fs::write(&config, routes_to(&urls[&Kind::Docs])).unwrap();
        let reached = [
            &engines.identity_db,
            &engines.audit_db,
            &engines.docs_db,
            &engines.queue.1,
            &engines.redis.url,
        ]
        .into_iter()
        .map(|url| {
            let there = network
                .as_mut()
                .map_or_else(|| url.clone(), |n| n.reach(url));
            (url.clone(), there)
        })
        .collect();
        let mut topology = Self {
            engines,
            shared,
            urls,
            replicas: Vec::new(),
            haproxy: None,
            config,
            reached,
            _network: network,
        };
        topology.bootstrap();
        topology.replicas = places
            .into_iter()
            .map(|(kind, index, namespace, port)| topology.replica(kind, index, namespace, port))
            .collect();
        if replicas > 1 {
            topology.haproxy = Some(topology.start_haproxy());
        }
        // Audit first: the others' writers deliver to it.
        for kind in [
            Kind::Identity,
            Kind::Audit,
            Kind::Parser,
            Kind::Docs,
            Kind::Gateway,
            Kind::Worker,
        ] {
            for i in 0..topology.replicas.len() {
                if topology.replicas[i].kind == kind {
                    topology.restart(i);
                }
            }
        }
        if topology.haproxy.is_some() {
            for replica in 0..topology.replicas.len() {
                if topology.replicas[replica].kind.balanced() {
                    topology.wait_for_state(replica, "UP", Duration::from_secs(30));
                }
            }
            if let Some(haproxy) = topology.haproxy.as_mut() {
                haproxy.settled = haproxy.log().len();
            }
        }
        topology
    }

    fn url(&self, kind: Kind) -> &str {
        &self.urls[&kind]
    }

    /// `echod up` once on the shared databases: the master key, the
    /// audit signing key and the first-party clients (the gateway's
    /// redirect URI at the gateway's URL); then the test's client and
    /// users.
    fn bootstrap(&self) {
        let mut up = up_on_free_ports(self.shared.path());
        self.on_engines(&mut up, false)
            .args(["--gateway-public-url", &self.urls[&Kind::Gateway]])
            .arg("--no-worker");
        drop(start_up(up));
        for client in [LOAD_CLIENT, COLD_CLIENT] {
            let mut add = self.admin();
            add.args([
                "client",
                "add",
                client,
                "--secret-stdin",
                "--grant",
                "client_credentials",
                "--audience",
                "audit",
                "--scope",
                "audit.write",
            ]);
            let out = run_with_stdin(add, &format!("{SECRET}\n"));
            assert!(out.status.success(), "{out:?}");
        }
        for user in USERS {
            let mut add = self.admin();
            add.args(["user", "add", user, "--password-stdin"]);
            let out = run_with_stdin(add, &format!("{user}'s long password\n"));
            assert!(out.status.success(), "{out:?}");
        }
    }

    /// `echod` on the shared data directory and databases (on the host).
    fn admin(&self) -> Command {
        let mut cmd = echod(self.shared.path());
        self.on_engines(&mut cmd, false);
        cmd
    }

    /// `cmd` with every store on the engines, reached from a replica's
    /// namespace when `from_namespace`, else from the host.
    fn on_engines<'a>(&self, cmd: &'a mut Command, from_namespace: bool) -> &'a mut Command {
        let engines = &self.engines;
        let at = |url: &String| {
            if from_namespace {
                self.reached[url].clone()
            } else {
                url.clone()
            }
        };
        cmd.env("ECHO_DATABASE_URL", at(&engines.identity_db))
            .env("ECHO_AUDIT_DATABASE_URL", at(&engines.audit_db))
            .env("ECHO_DOCS_DATABASE_URL", at(&engines.docs_db))
            .env("ECHO_DOCS_BLOB_URL", at(&engines.docs_db))
            .env("ECHO_DOCS_SEARCH", "postgres")
            .env(engines.queue.0, at(&engines.queue.1))
            .env("ECHO_REDIS_URL", at(&engines.redis.url))
            .env("ECHO_REDIS_PREFIX", &engines.redis.prefix)
            .env("ECHO_RATE_LIMIT_URL", at(&engines.redis.url))
            .env("ECHO_RATE_LIMIT_PREFIX", &engines.redis.prefix)
            .env("ECHO_WORKER_LEASE", format!("{}s", LEASE.as_secs()))
    }

    /// A replica's data directory: copies of the shared keys and secrets.
    fn replica(
        &self,
        kind: Kind,
        index: usize,
        namespace: Option<Namespace>,
        port: u16,
    ) -> Replica {
        let dir = echo_testkit::data_dir();
        for entry in std::fs::read_dir(self.shared.path()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".key") || name.ends_with(".secret") {
                std::fs::copy(entry.path(), dir.path().join(&name)).unwrap();
            }
        }
        Replica {
            kind,
            index,
            address: address_of(namespace.as_ref()),
            port,
            namespace,
            dir,
            process: None,
        }
    }

    /// `echod serve …` for replica `i`, in its namespace if it has one.
    fn command(&self, i: usize) -> Command {
        let replica = &self.replicas[i];
        let mut cmd = echod(replica.dir.path());
        self.on_engines(&mut cmd, replica.namespace.is_some());
        let listen = format!("{}:{}", replica.address, replica.port);
        let issuer = self.url(Kind::Identity);
        let audit = self.url(Kind::Audit);
        cmd.env("ECHO_CONFIG", &self.config)
            .args(["serve", replica.kind.name()]);
        match replica.kind {
            Kind::Identity => cmd.args(["--listen", &listen, "--issuer", issuer]),
            Kind::Audit | Kind::Docs | Kind::Parser => {
                cmd.args(["--listen", &listen, "--issuer", issuer])
            }
            Kind::Gateway => cmd.args([
                "--listen",
                &listen,
                "--issuer",
                issuer,
                "--public-url",
                self.url(Kind::Gateway),
            ]),
            Kind::Worker => cmd.args([
                "--health-listen",
                &listen,
                "--issuer",
                issuer,
                "--docs-url",
                self.url(Kind::Docs),
                "--parser-url",
                self.url(Kind::Parser),
            ]),
        };
        if replica.kind != Kind::Audit {
            cmd.args(["--audit-url", audit]);
        }
        match &replica.namespace {
            Some(namespace) => namespace.command(&cmd),
            None => cmd,
        }
    }

    /// (Re)starts replica `i` on its port; returns when it printed `ready`.
    /// Its warnings (failed readiness checks among them) are appended to
    /// its log, shown when HAProxy does not see it as expected.
    fn restart(&mut self, i: usize) {
        self.replicas[i].process = None;
        let cmd = self.command(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.replicas[i].log())
            .unwrap();
        let started =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| start_logging(cmd, 1, log)));
        match started {
            Ok(server) => self.replicas[i].process = Some(server),
            Err(_) => {
                let log = std::fs::read_to_string(self.replicas[i].log()).unwrap_or_default();
                panic!("{} did not start; its log:\n{log}", self.replicas[i].name());
            }
        }
    }

    /// SIGKILLs replica `i`.
    fn kill(&mut self, i: usize) {
        self.replicas[i].process = None;
    }

    /// Sends `signal` (`STOP`, `CONT`) to replica `i`'s process.
    fn signal(&self, i: usize, signal: &str) {
        let pid = self.replicas[i].process.as_ref().expect("running").pid();
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {}", self.replicas[i].name());
    }

    /// The errors each replica logged (its `ERROR` lines), to show why an
    /// operation failed.
    fn errors_logged(&self) -> String {
        let mut errors = String::new();
        for replica in &self.replicas {
            let log = std::fs::read_to_string(replica.log()).unwrap_or_default();
            for line in log.lines().filter(|line| line.contains("ERROR")) {
                errors.push_str(&format!("{}: {line}\n", replica.name()));
            }
        }
        errors
    }

    fn index_of(&self, kind: Kind, index: usize) -> usize {
        self.replicas
            .iter()
            .position(|r| r.kind == kind && r.index == index)
            .unwrap()
    }

    fn start_haproxy(&self) -> Haproxy {
        let dir = echo_testkit::data_dir();
        let stats_port = free_port();
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(&config, self.haproxy_config(stats_port)).unwrap();
        let check = Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&config)
            .output()
            .expect("haproxy is installed (.ci/run installs it)");
        assert!(check.status.success(), "{check:?}");
        let log_path = dir.path().join("haproxy.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", stats_port)).is_err() {
            // Why, when it does not start: its own words.
            let said = || std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(exit) = child.try_wait().unwrap() {
                panic!("haproxy exited at start ({exit}):\n{}", said());
            }
            assert!(
                Instant::now() < deadline,
                "haproxy did not start:\n{}",
                said()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Haproxy {
            stats_port,
            child,
            dir,
            settled: 0,
        }
    }

    /// The configuration: a frontend per balanced service, its replicas
    /// checked on `/readyz` every 250 ms (out after 2 failures, back after
    /// 2 successes), a connection refused retried on another replica, and
    /// the replica that answered named in `x-echo-replica`.
    fn haproxy_config(&self, stats_port: u16) -> String {
        let mut config = format!(
            "global\n    maxconn 4096\n    log stderr format short local0 info\n\n\
             defaults\n    mode http\n    timeout connect 1s\n    timeout client 60s\n    \
             timeout server 60s\n    timeout check 3s\n    retries 3\n    option redispatch 1\n    \
             option httpchk GET /readyz\n    \
             default-server check inter 250ms fastinter 250ms downinter 250ms fall 2 rise 2\n\n\
             frontend stats\n    bind 127.0.0.1:{stats_port}\n    stats enable\n    stats uri /stats\n\n"
        );
        for (kind, url) in &self.urls {
            if !kind.balanced() {
                continue;
            }
            let name = kind.name();
            let bind = url.trim_start_matches("http://");
            config.push_str(&format!(
                "frontend {name}\n    bind {bind}\n    default_backend {name}\n\n\
                 backend {name}\n    balance roundrobin\n    http-response set-header x-echo-replica %s\n    \
                 log global\n    option log-health-checks\n"
            ));
            for replica in self.replicas.iter().filter(|r| r.kind == *kind) {
                config.push_str(&format!(
                    "    server {} {}:{}\n",
                    replica.name(),
                    replica.address,
                    replica.port
                ));
            }
            config.push('\n');
        }
        config
    }

    /// HAProxy's state of each server (`UP`, `DOWN`, …) by name.
    fn haproxy_states(&self) -> HashMap<String, String> {
        let haproxy = self.haproxy.as_ref().expect("haproxy");
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", haproxy.stats_port)).unwrap();
        use std::io::{Read as _, Write as _};
        write!(stream, "GET /stats;csv HTTP/1.0\r\nHost: stats\r\n\r\n").unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text.lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(',').collect();
                (fields.len() > 17).then(|| (fields[1].to_owned(), fields[17].to_owned()))
            })
            .collect()
    }

    /// Waits until HAProxy reports replica `i` in `state` (`UP`, `DOWN`);
    /// how long that took.
    fn wait_for_state(&self, i: usize, state: &str, within: Duration) -> Duration {
        let started = Instant::now();
        let name = self.replicas[i].name();
        loop {
            let states = self.haproxy_states();
            if states.get(&name).is_some_and(|s| s.starts_with(state)) {
                return started.elapsed();
            }
            if started.elapsed() >= within {
                let log = std::fs::read_to_string(self.replicas[i].log()).unwrap_or_default();
                let haproxy = self.haproxy.as_ref().map(Haproxy::log).unwrap_or_default();
                panic!(
                    "{name} not {state} after {within:?}: {states:?}\n\
                     HAProxy's log:\n{haproxy}\n{name}'s log:\n{log}"
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// Where a replica in `namespace` (or on loopback) listens.
fn address_of(namespace: Option<&Namespace>) -> String {
    namespace.map_or_else(|| "127.0.0.1".to_owned(), |n| n.address.to_string())
}

/// The gateway's configuration: its routes to docs at `docs`, and rate
/// limits above what the load sends (all of it from one address, two
/// users).
fn routes_to(docs: &str) -> String {
    let limits = "[gateway.rate_limit]\nper_ip = { per_second = 500.0, burst = 1000 }\n\
                  per_user = { per_second = 200.0, burst = 400 }\n\n";
    let routes: String = ["/api/documents:/v1/documents", "/api/query:/v1/query"]
        .iter()
        .map(|route| {
            let (prefix, path) = route.split_once(':').unwrap();
            format!(
                "[[gateway.routes]]\nprefix = \"{prefix}\"\nupstream = \"{docs}{path}\"\n\
                 audience = \"docs\"\nstrip_prefix = true\ntimeout = \"60s\"\n\n"
            )
        })
        .collect();
    format!("{limits}{routes}")
}

/// A token of [`LOAD_CLIENT`] from identity at `identity`: the response's
/// status, the replica that answered and the body.
async fn grant(http: &reqwest::Client, identity: &str) -> Result<(u16, String, Value), String> {
    grant_as(http, identity, LOAD_CLIENT).await
}

/// [`grant`] as `client`.
async fn grant_as(
    http: &reqwest::Client,
    identity: &str,
    client: &str,
) -> Result<(u16, String, Value), String> {
    let response = http
        .post(format!("{identity}/token"))
        .basic_auth(client, Some(SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .map_err(unanswered)?;
    let status = response.status().as_u16();
    let replica = replica_of(&response);
    let body = response.json().await.unwrap_or(Value::Null);
    Ok((status, replica, body))
}

fn replica_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-echo-replica")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A user signed in through the gateway at `gateway` (identity at
/// `identity`): the callback's status, or why it failed.
async fn sign_in(hop: &mut Hop, gateway: &str, identity: &str, user: &str) -> Result<(), String> {
    let (status, authorize, body) = hop
        .try_send(hop.http.get(format!("{gateway}/login")))
        .await
        .map_err(|e| format!("/login: {e}"))?;
    if !authorize.starts_with(&format!("{identity}/authorize?")) {
        return Err(format!("/login: {status} {authorize} {body}"));
    }
    let (status, callback, body) = hop
        .try_log_in_at_identity(
            identity,
            &authorize,
            user,
            &format!("{user}'s long password"),
        )
        .await
        .map_err(|e| format!("login: {e}"))?;
    if !callback.starts_with(&format!("{gateway}/callback?")) {
        return Err(format!("login: {status} {callback} {body}"));
    }
    let (status, _, body) = hop
        .try_send(hop.http.get(&callback))
        .await
        .map_err(|e| format!("callback: {e}"))?;
    if status != 303 {
        return Err(format!("callback: {status} {body}"));
    }
    Ok(())
}

/// `method /api/<path>` through the gateway with the session of `hop`:
/// (status, replica of the gateway, JSON body).
async fn api(
    hop: &Hop,
    gateway: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, String, Value), String> {
    let cookie: Vec<String> = hop
        .cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut request = hop
        .http
        .request(method, format!("{gateway}/api/{path}"))
        .header("x-echo-csrf", "1")
        .header("cookie", cookie.join("; "));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(unanswered)?;
    let status = response.status().as_u16();
    let replica = replica_of(&response);
    let text = response.text().await.map_err(unanswered)?;
    Ok((
        status,
        replica,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Uploads one text file: the created document's id, or why not.
async fn upload(hop: &Hop, gateway: &str, name: &str, text: &str) -> Result<String, String> {
    let boundary = "echo-topology-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: text/plain\r\n\r\n{text}\r\n--{boundary}--\r\n"
    );
    let cookie: Vec<String> = hop
        .cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let response = hop
        .http
        .post(format!("{gateway}/api/documents"))
        .header("x-echo-csrf", "1")
        .header("cookie", cookie.join("; "))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .map_err(unanswered)?;
    let status = response.status();
    let text = response.text().await.map_err(unanswered)?;
    if status != 201 {
        return Err(format!("{status} {text}"));
    }
    let created: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    Ok(created["documents"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// Waits until every document of `ids` is `done` (seen through the
/// gateway with `hop`'s session).
async fn wait_until_done(hop: &Hop, gateway: &str, ids: &[String], within: Duration) {
    let deadline = Instant::now() + within;
    for id in ids {
        loop {
            let view = api(
                hop,
                gateway,
                reqwest::Method::GET,
                &format!("documents/{id}"),
                None,
            )
            .await;
            if let Ok((200, _, view)) = &view {
                assert_ne!(view["status"], "failed", "{view}");
                if view["status"] == "done" {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "{id} not done: {view:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Every document's chunks are there once: no job indexed a document
/// twice.
async fn assert_indexed_once(docs_db: &str, ids: &[String]) {
    let mut db = PgConnection::connect(docs_db).await.unwrap();
    let doubled: Vec<(String, i64)> = sqlx::query_as(
        "SELECT document_id, position FROM docs_chunks \
         GROUP BY document_id, position HAVING count(*) > 1",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert!(doubled.is_empty(), "chunks indexed twice: {doubled:?}");
    for id in ids {
        let (chunks,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM docs_chunks WHERE document_id = $1")
                .bind(id)
                .fetch_one(&mut db)
                .await
                .unwrap();
        assert!(chunks > 0, "{id} has no chunk");
    }
}

/// Polls `probe` every 100 ms until it answers `true`; how long it took.
async fn time_until<F, Fut>(within: Duration, what: &str, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if probe().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status_of(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.map_or(0, |r| r.status().as_u16())
}

/// One replica of each service on a PostgreSQL cluster and a NATS server
/// of the test's own. PostgreSQL stopped (`-m immediate`): identity's
/// OAuth endpoints answer `503 temporarily_unavailable`, audit and docs a
/// `503` problem, every `/readyz` fails; started again, every one answers
/// within 5 s, unrestarted. NATS killed and started again: the uploads
/// refused meanwhile say so (503), and every job accepted before is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_going_away_answer_503_and_recover_by_themselves() {
    let pg = PgCluster::start("engines_going_away_answer_503_and_recover_by_themselves");
    let mut nats = NatsServer::start("engines_going_away_answer_503_and_recover_by_themselves");
    let engines = Engines {
        identity_db: pg.create_database("identity").await,
        audit_db: pg.create_database("audit").await,
        docs_db: pg.create_database("docs").await,
        queue: ("ECHO_NATS_URL", nats.url()),
        redis: RedisKeys::new(),
    };
    let topology = Topology::start(engines, 1);
    let (identity, audit, gateway, docs) = (
        topology.url(Kind::Identity).to_owned(),
        topology.url(Kind::Audit).to_owned(),
        topology.url(Kind::Gateway).to_owned(),
        topology.url(Kind::Docs).to_owned(),
    );
    let http = reqwest::Client::new();
    let mut hop = Hop::default();
    sign_in(&mut hop, &gateway, &identity, USERS[0])
        .await
        .unwrap();
    let (status, _, token) = grant(&http, &identity).await.unwrap();
    assert_eq!(status, 200, "{token}");
    let token = token["access_token"].as_str().unwrap().to_owned();
    let event = |n: u32| json!([{"id": format!("away-{n}"), "level": "info", "action": "test.event", "message": "m"}]);
    let (status, _, listing) = api(&hop, &gateway, reqwest::Method::GET, "documents", None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{listing}");

    pg.stop();
    // A client identity has cached still gets tokens; one it must read
    // is refused for now.
    let (status, _, body) = grant(&http, &identity).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = grant_as(&http, &identity, COLD_CLIENT).await.unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable")),
        "{body}"
    );
    let response = http
        .post(format!("{audit}/v1/events"))
        .bearer_auth(&token)
        .json(&event(1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:echo:problem:unavailable", "{problem}");
    let (status, _, problem) = api(&hop, &gateway, reqwest::Method::GET, "documents", None)
        .await
        .unwrap();
    assert_eq!(
        (status, &problem["type"]),
        (503, &json!("urn:echo:problem:unavailable")),
        "{problem}"
    );
    for service in [&identity, &audit, &docs] {
        let ready = status_of(http.get(format!("{service}/readyz"))).await;
        assert_eq!(
            ready, 503,
            "{service} is not ready while PostgreSQL is away"
        );
    }

    pg.start_again();
    let back = Instant::now();
    time_until(Duration::from_secs(5), "identity grants again", || {
        let (http, identity) = (&http, &identity);
        async move { matches!(grant_as(http, identity, COLD_CLIENT).await, Ok((200, _, _))) }
    })
    .await;
    let mut n = 1;
    time_until(Duration::from_secs(5), "audit takes events again", || {
        n += 1;
        let request = http
            .post(format!("{audit}/v1/events"))
            .bearer_auth(&token)
            .json(&event(n));
        async move { status_of(request).await == 200 }
    })
    .await;
    time_until(Duration::from_secs(5), "docs lists again", || {
        let (hop, gateway) = (&hop, &gateway);
        async move {
            matches!(
                api(hop, gateway, reqwest::Method::GET, "documents", None).await,
                Ok((200, _, _))
            )
        }
    })
    .await;
    for service in [&identity, &audit, &docs] {
        time_until(Duration::from_secs(5), "ready again", || {
            let request = http.get(format!("{service}/readyz"));
            async move { status_of(request).await == 200 }
        })
        .await;
    }
    let recovered = back.elapsed();
    assert!(recovered < Duration::from_secs(5), "{recovered:?}");
    println!("PostgreSQL back: every service answering again after {recovered:?}");

    // NATS, the job queue: jobs accepted before it goes away are done
    // after it is back; uploads meanwhile are refused, not lost.
    let mut accepted = Vec::new();
    for n in 0..3 {
        let text = format!("The harbour log {n} counts seventeen ships.");
        accepted.push(
            upload(&hop, &gateway, &format!("before-{n}.txt"), &text)
                .await
                .unwrap(),
        );
    }
    nats.kill();
    let refused = upload(&hop, &gateway, "during.txt", "Nothing to see.").await;
    let refusal = refused.expect_err("an upload while the queue is away is refused");
    assert!(refusal.starts_with("503"), "{refusal}");
    nats.start_again();
    let back = Instant::now();
    loop {
        let after = upload(
            &hop,
            &gateway,
            "after.txt",
            "The harbour log after counts ships.",
        );
        match after.await {
            Ok(id) => {
                println!("NATS back: uploads taken again after {:?}", back.elapsed());
                break accepted.push(id);
            }
            Err(e) => assert!(
                back.elapsed() < Duration::from_secs(30),
                "no upload within 30 s of NATS' return: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_until_done(&hop, &gateway, &accepted, Duration::from_secs(60)).await;
    assert_indexed_once(&topology.engines.docs_db, &accepted).await;
}

/// An operation of the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    SignIn,
    Upload,
    Grant,
    List,
    Question,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::SignIn => "sign-in",
            Op::Upload => "upload",
            Op::Grant => "grant",
            Op::List => "list",
            Op::Question => "question",
        }
    }

    /// The services its requests go through. A docs call's token is
    /// exchanged at identity when the gateway has none cached; audit (the
    /// writers spool) and the worker are behind no request.
    fn touches(self) -> &'static [Kind] {
        match self {
            Op::SignIn => &[Kind::Gateway, Kind::Identity],
            Op::Grant => &[Kind::Identity],
            Op::Upload | Op::List | Op::Question => &[Kind::Gateway, Kind::Docs, Kind::Identity],
        }
    }

    /// The audit events (successes) one that succeeded leaves, each once,
    /// in its trace: the upload's indexing job continues the upload's.
    fn audited(self) -> &'static [&'static str] {
        match self {
            Op::SignIn => &["auth.login.success", "gateway.login.success"],
            Op::Grant => &["token.issued"],
            Op::Upload => &[
                "document.upload",
                "gateway.request.forwarded",
                "document.index",
            ],
            Op::Question => &["gateway.request.forwarded"],
            // A GET changes nothing: not audited.
            Op::List => &[],
        }
    }
}

/// What one operation of the load did.
#[derive(Debug, Clone)]
struct Outcome {
    op: Op,
    /// Its W3C trace id, the `traceparent` of each of its requests: the
    /// audit events it caused carry it.
    trace: String,
    started: Instant,
    ended: Instant,
    /// The replica that answered (HAProxy's `x-echo-replica`), if any.
    replica: String,
    /// Why it failed, or `None`.
    failure: Option<String>,
}

/// The trace id of loop `task`'s `step`th operation in its `n`th round:
/// unique in a run, never all zeros.
fn trace_id(task: usize, n: u32, step: usize) -> String {
    format!(
        "{:032x}",
        (1u128 << 120) | ((task as u128) << 64) | (u128::from(n) << 8) | step as u128
    )
}

/// A client, not following redirects (as [`Hop`]'s), that sends each
/// request in trace `trace`.
fn traced(trace: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "traceparent",
        format!("00-{trace}-00f067aa0ba902b7-01").parse().unwrap(),
    );
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .timeout(CLIENT_TIMEOUT)
        .build()
        .unwrap()
}

/// A JSON answer as an outcome: the replica, and why it failed unless
/// it is a 200.
fn answered(answer: Result<(u16, String, Value), String>) -> (String, Option<String>) {
    match answer {
        Ok((200, replica, _)) => (replica, None),
        Ok((status, replica, body)) => (replica, Some(format!("{status} {body}"))),
        Err(e) => (String::new(), Some(e)),
    }
}

/// A load of `tasks` loops through HAProxy, each with a session of its
/// own, recording every operation's outcome until `stop` is set.
struct Load {
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    uploaded: Arc<Mutex<Vec<String>>>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Four loops: sign-ins then an upload (every 2 s); token grants;
    /// listings and questions; token grants and listings. Each operation
    /// in a trace of its own.
    async fn start(identity: &str, gateway: &str) -> Self {
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let uploaded = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for task in 0..4usize {
            let (identity, gateway) = (identity.to_owned(), gateway.to_owned());
            let (outcomes, uploaded, stopped) =
                (outcomes.clone(), uploaded.clone(), stopped.clone());
            let mut session = Hop::default();
            sign_in(&mut session, &gateway, &identity, USERS[task % 2])
                .await
                .unwrap();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u32;
                while !*stopped.borrow() {
                    n += 1;
                    let ops: &[Op] = match task {
                        0 => &[Op::SignIn, Op::Upload],
                        1 => &[Op::Grant],
                        2 => &[Op::List, Op::Question],
                        _ => &[Op::Grant, Op::List],
                    };
                    for (step, &op) in ops.iter().enumerate() {
                        let trace = trace_id(task, n, step);
                        let http = traced(&trace);
                        let hop = Hop {
                            http: http.clone(),
                            cookies: session.cookies.clone(),
                        };
                        let started = Instant::now();
                        let (replica, failure) = match op {
                            Op::SignIn => {
                                let mut fresh = Hop {
                                    http,
                                    cookies: HashMap::new(),
                                };
                                let user = USERS[n as usize % 2];
                                (
                                    String::new(),
                                    sign_in(&mut fresh, &gateway, &identity, user).await.err(),
                                )
                            }
                            Op::Upload => {
                                let text = format!(
                                    "Load note {task}-{n}: the ferry leaves at {n} past nine."
                                );
                                match upload(&hop, &gateway, &format!("load-{task}-{n}.txt"), &text)
                                    .await
                                {
                                    Ok(id) => {
                                        uploaded.lock().unwrap().push(id);
                                        (String::new(), None)
                                    }
                                    Err(e) => (String::new(), Some(e)),
                                }
                            }
                            Op::Grant => answered(grant(&http, &identity).await),
                            Op::List => answered(
                                api(&hop, &gateway, reqwest::Method::GET, "documents", None).await,
                            ),
                            Op::Question => {
                                let question = json!({"question": "When does the ferry leave?"});
                                answered(
                                    api(
                                        &hop,
                                        &gateway,
                                        reqwest::Method::POST,
                                        "query",
                                        Some(question),
                                    )
                                    .await,
                                )
                            }
                        };
                        outcomes.lock().unwrap().push(Outcome {
                            op,
                            trace,
                            started,
                            ended: Instant::now(),
                            replica,
                            failure,
                        });
                    }
                    let pause = if task == 0 { 2000 } else { 50 };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }));
        }
        Self {
            outcomes,
            uploaded,
            stop,
            tasks,
        }
    }

    async fn finish(self) -> (Vec<Outcome>, Vec<String>) {
        self.stop.send_replace(true);
        for task in self.tasks {
            task.await.unwrap();
        }
        let outcomes = self.outcomes.lock().unwrap().clone();
        let uploaded = self.uploaded.lock().unwrap().clone();
        (outcomes, uploaded)
    }
}

/// One replica SIGKILLed under the load.
#[derive(Debug)]
struct Kill {
    kind: Kind,
    /// Just before the signal was sent.
    killed: Instant,
    /// When its process was reaped: nothing it answered after that.
    dead: Instant,
    /// From `killed` until HAProxy reported it DOWN (balanced services).
    out: Duration,
    /// The jobs processing just before and just after the kill: the
    /// killed worker's among them, and any whose call to the killed
    /// replica was in flight.
    caught: BTreeSet<String>,
}

/// The documents' jobs, as the queue (either backend) reports them.
struct Jobs {
    queue: Arc<dyn JobQueue>,
    docs_db: PgConnection,
}

impl Jobs {
    async fn open(topology: &Topology) -> Self {
        let engines = &topology.engines;
        let config = QueueConfig {
            nats_lease: LEASE,
            ..QueueConfig::default()
        };
        let queue = echo_queue::open_queue(
            Some(&engines.queue.1),
            &echo_crypto::TrustedRoots::system(),
            topology.shared.path(),
            config,
        )
        .await
        .unwrap();
        let docs_db = PgConnection::connect(&engines.docs_db).await.unwrap();
        Self { queue, docs_db }
    }

    /// The jobs done (`true`) or not yet (queued, waiting for a retry or
    /// processing).
    async fn done(&mut self, done: bool) -> BTreeSet<String> {
        self.all()
            .await
            .into_iter()
            .filter(|(_, status)| (status.state == JobState::Done) == done)
            .map(|(_, status)| status.id.to_string())
            .collect()
    }

    /// Every document's job (those of uploads whose answer was lost at a
    /// kill included): (document, status).
    async fn all(&mut self) -> Vec<(String, JobStatus)> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT id, job_id FROM docs_documents WHERE job_id IS NOT NULL")
                .fetch_all(&mut self.docs_db)
                .await
                .unwrap();
        let ids: Vec<JobId> = rows.iter().map(|(_, job)| job.clone().into()).collect();
        let statuses = self.queue.statuses(&ids).await.unwrap();
        rows.into_iter()
            .map(|(document, job)| {
                let status = statuses.iter().find(|s| s.id.to_string() == job);
                let status = status.unwrap_or_else(|| panic!("{document}: no job {job}"));
                (document, status.clone())
            })
            .collect()
    }

    /// The jobs being processed now.
    async fn processing(&mut self) -> BTreeSet<String> {
        self.all()
            .await
            .into_iter()
            .filter(|(_, status)| status.state == JobState::Processing)
            .map(|(_, status)| status.id.to_string())
            .collect()
    }
}

/// Has worker replica `worker` hold a job: the other workers paused
/// between jobs (holding none, so no lease of theirs expires meanwhile),
/// then the parser, so the next job is `worker`'s and waits on the parser.
/// Returns the replicas to resume.
async fn hold_a_job(topology: &Topology, worker: usize, jobs: &mut Jobs) -> Vec<usize> {
    let others: Vec<usize> = (0..topology.replicas.len())
        .filter(|&j| j != worker && topology.replicas[j].kind == Kind::Worker)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if jobs.processing().await.is_empty() {
            others.iter().for_each(|&j| topology.signal(j, "STOP"));
            if jobs.processing().await.is_empty() {
                break;
            }
            others.iter().for_each(|&j| topology.signal(j, "CONT"));
        }
        assert!(Instant::now() < deadline, "the workers are never idle");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let parser = topology.index_of(Kind::Parser, 0);
    topology.signal(parser, "STOP");
    while jobs.processing().await.is_empty() {
        assert!(Instant::now() < deadline, "no upload's job was taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    others.into_iter().chain([parser]).collect()
}

/// How many success events of each (action, trace) of `actions` the
/// audit log holds (`token.issued` only [`LOAD_CLIENT`]'s).
async fn audited_by_trace(
    audit_db: &mut PgConnection,
    actions: &[&str],
) -> HashMap<(String, String), i64> {
    let actions: Vec<String> = actions.iter().map(|a| (*a).to_owned()).collect();
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT action, trace_id, count(*) FROM audit_events \
         WHERE outcome = 'success' AND action = ANY($1) AND trace_id IS NOT NULL \
         AND (action <> 'token.issued' OR actor = $2) GROUP BY action, trace_id",
    )
    .bind(&actions)
    .bind(LOAD_CLIENT)
    .fetch_all(audit_db)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(action, trace, n)| ((action, trace), n))
        .collect()
}

/// An engine taken away under the load and started again.
#[derive(Debug)]
struct Outage {
    engine: &'static str,
    /// Just before it was stopped.
    stopped: Instant,
    /// When it accepted connections again.
    back: Instant,
    /// When every service answered again.
    recovered: Instant,
    /// How many jobs were not done at the stop.
    queued: usize,
    /// The jobs done before the stop; every other one, accepted before
    /// [`Outage::settle`] read them, may have been attempted again.
    done_before: BTreeSet<String>,
    /// The jobs not done at the stop or accepted until the engine had
    /// been back a while: those may have been attempted again.
    unfinished: BTreeSet<String>,
}

impl Outage {
    /// Reads the jobs not done at the stop, those accepted since
    /// included, once the engine has been back a while; `jobs` opened
    /// anew (the old connections went with the engine).
    async fn settle(&mut self, topology: &Topology, jobs: &mut Jobs) {
        *jobs = Jobs::open(topology).await;
        let all = jobs
            .all()
            .await
            .into_iter()
            .map(|(_, job)| job.id.to_string());
        self.unfinished = all.filter(|id| !self.done_before.contains(id)).collect();
    }

    /// Whether the engine's absence accounts for `outcome`'s failure: a
    /// `503` answered between the stop and the recovery, or a connection
    /// cut under a request in flight at the stop; never a hang.
    fn explains(&self, outcome: &Outcome) -> bool {
        let Some(failure) = outcome.failure.as_deref() else {
            return false;
        };
        let within = outcome.started <= self.recovered && outcome.ended >= self.stopped;
        let hung = outcome.ended - outcome.started >= CLIENT_TIMEOUT;
        within
            && !hung
            && match status_in(failure) {
                Some(status) => status == 503,
                None => cut(failure) && outcome.started <= self.stopped,
            }
    }
}

/// The HTTP status a failure reports: its first three-digit word (each
/// failure's text starts with the status, after the step's name).
fn status_in(failure: &str) -> Option<u16> {
    failure
        .split_whitespace()
        .find_map(|word| (word.len() == 3).then(|| word.parse().ok()).flatten())
}

/// A request that got no answer: the connection refused or closed under
/// it (a timeout reads the same, so [`Outage::explains`] checks the time).
fn cut(failure: &str) -> bool {
    [
        "error sending request",
        "error decoding response body",
        "connection closed",
    ]
    .iter()
    .any(|cause| failure.contains(cause))
}

/// Each replica's `/readyz` (the workers' on their health listener): the
/// kind and the URL.
fn readiness(topology: &Topology) -> Vec<(Kind, String)> {
    topology
        .replicas
        .iter()
        .map(|r| (r.kind, format!("http://{}:{}/readyz", r.address, r.port)))
        .collect()
}

/// A session of the load's first user (whose documents the test reads)
/// through the gateway, whose requests give up after [`CLIENT_TIMEOUT`].
async fn timed_session(gateway: &str, identity: &str) -> Hop {
    let mut hop = Hop {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(CLIENT_TIMEOUT)
            .build()
            .unwrap(),
        cookies: HashMap::new(),
    };
    sign_in(&mut hop, gateway, identity, USERS[0])
        .await
        .unwrap();
    hop
}

/// Uploads `name` until one is taken, for at most `within`: the document.
async fn upload_until_taken(hop: &Hop, gateway: &str, name: &str, within: Duration) -> String {
    let started = Instant::now();
    loop {
        match upload(
            hop,
            gateway,
            name,
            &format!("{name}: the tide turns at four."),
        )
        .await
        {
            Ok(id) => return id,
            Err(e) => assert!(started.elapsed() < within, "{name} not taken: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// PostgreSQL stopped (`-m immediate`) under the load and started again
/// 2 s later. While it is away, a client identity must read is refused,
/// a listing too, and identity's, audit's and docs' `/readyz` fail, each a
/// `503`; once it is back, grants, listings and uploads through HAProxy
/// and every replica's `/readyz` answer again within 5 s, no replica
/// restarted. The upload taken is added to `uploaded`.
async fn restart_postgres(
    pg: &PgCluster,
    topology: &Topology,
    hop: &Hop,
    jobs: &mut Jobs,
    uploaded: &mut Vec<String>,
) -> Outage {
    let (identity, gateway) = (topology.url(Kind::Identity), topology.url(Kind::Gateway));
    let ready = readiness(topology);
    let http = reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .unwrap();
    let done_before = jobs.done(true).await;
    let queued = jobs.done(false).await.len();
    let stopped = Instant::now();
    tokio::task::block_in_place(|| pg.stop());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _, body) = grant_as(&http, identity, COLD_CLIENT).await.unwrap();
    assert_eq!(status, 503, "a grant reading the database: {body}");
    let (status, _, body) = api(hop, gateway, reqwest::Method::GET, "documents", None)
        .await
        .unwrap();
    assert_eq!(status, 503, "a listing: {body}");
    for (kind, url) in &ready {
        if matches!(kind, Kind::Identity | Kind::Audit | Kind::Docs) {
            assert_eq!(status_of(http.get(url)).await, 503, "{url}");
        }
    }
    tokio::time::sleep(
        (stopped + Duration::from_secs(2)).saturating_duration_since(Instant::now()),
    )
    .await;
    tokio::task::block_in_place(|| pg.start_again());
    let back = Instant::now();
    let within = Duration::from_secs(5);
    time_until(within, "identity grants again", || {
        let http = &http;
        async move { matches!(grant_as(http, identity, COLD_CLIENT).await, Ok((200, _, _))) }
    })
    .await;
    time_until(within, "docs lists again", || async move {
        matches!(
            api(hop, gateway, reqwest::Method::GET, "documents", None).await,
            Ok((200, _, _))
        )
    })
    .await;
    uploaded.push(upload_until_taken(hop, gateway, "after-postgres.txt", within).await);
    for (_, url) in &ready {
        time_until(within, url, || {
            let request = http.get(url);
            async move { status_of(request).await == 200 }
        })
        .await;
    }
    let recovered = Instant::now();
    assert!(recovered - back < within, "{:?}", recovered - back);
    Outage {
        engine: "PostgreSQL",
        stopped,
        back,
        recovered,
        queued,
        done_before,
        unfinished: BTreeSet::new(),
    }
}

/// NATS (the job queue) killed under the load with jobs queued and held:
/// the workers paused (SIGSTOP) while uploads queue three jobs, NATS
/// killed, the workers resumed, NATS started again 2 s later. While it is
/// away an upload is refused with a `503`; once it is back, uploads are
/// taken again (within 30 s, as `engines_going_away_…` allows) and every
/// replica is ready. The uploads taken are added to `uploaded`.
async fn restart_nats(
    nats: &mut NatsServer,
    topology: &Topology,
    hop: &Hop,
    jobs: &mut Jobs,
    uploaded: &mut Vec<String>,
) -> Outage {
    let gateway = topology.url(Kind::Gateway);
    let ready = readiness(topology);
    let http = reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .unwrap();
    let workers: Vec<usize> = (0..topology.replicas.len())
        .filter(|&i| topology.replicas[i].kind == Kind::Worker)
        .collect();
    workers.iter().for_each(|&w| topology.signal(w, "STOP"));
    for n in 0..3 {
        let name = format!("queued-{n}.txt");
        uploaded.push(upload_until_taken(hop, gateway, &name, Duration::ZERO).await);
    }
    let done_before = jobs.done(true).await;
    let queued = jobs.done(false).await.len();
    assert!(queued >= 3, "{queued} jobs queued at the stop");
    let stopped = Instant::now();
    nats.kill();
    workers.iter().for_each(|&w| topology.signal(w, "CONT"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Instant::now();
    let refused = upload(hop, gateway, "during-nats.txt", "Nothing to see.").await;
    let refusal = refused.expect_err("an upload while the queue is away is refused");
    assert!(
        refusal.starts_with("503"),
        "after {:?}: {refusal}",
        sent.elapsed()
    );
    tokio::time::sleep(
        (stopped + Duration::from_secs(2)).saturating_duration_since(Instant::now()),
    )
    .await;
    tokio::task::block_in_place(|| nats.start_again());
    let back = Instant::now();
    let within = Duration::from_secs(30);
    uploaded.push(upload_until_taken(hop, gateway, "after-nats.txt", within).await);
    for (_, url) in &ready {
        time_until(within, url, || {
            let request = http.get(url);
            async move { status_of(request).await == 200 }
        })
        .await;
    }
    Outage {
        engine: "NATS",
        stopped,
        back,
        recovered: Instant::now(),
        queued,
        done_before,
        unfinished: BTreeSet::new(),
    }
}

/// Two of each behind HAProxy on the machine's PostgreSQL and Redis, the
/// job queue in PostgreSQL: see [`survive_losing_one_of_each`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_behind_haproxy_survive_losing_one_of_each_under_load() {
    survive_losing_one_of_each(
        "replicas_behind_haproxy_survive_losing_one_of_each_under_load",
        false,
    )
    .await;
}

/// The same with the job queue on NATS JetStream, on a PostgreSQL cluster
/// and a NATS server of the test's own, each then restarted under the
/// load: see [`restart_postgres`] and [`restart_nats`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_behind_haproxy_with_the_queue_on_nats_survive_losing_one_of_each_under_load() {
    survive_losing_one_of_each(
        "replicas_behind_haproxy_with_the_queue_on_nats_survive_losing_one_of_each_under_load",
        true,
    )
    .await;
}

/// One replicated topology at a time: each is two dozen processes.
static ONE_TOPOLOGY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Two of each behind HAProxy on the machine's Redis, the job queue on
/// NATS JetStream (`on_nats`: with a PostgreSQL cluster and a NATS server
/// of the test's own) or in the machine's PostgreSQL. First
/// 10,000 audit events posted concurrently
/// through HAProxy to both audit replicas: one chain `echod audit verify`
/// accepts, each event once. Then a steady mixed load (sign-ins, token
/// grants, listings, uploads, questions) while one replica of each
/// service in turn is SIGKILLed: HAProxy takes it out within 2 s; the
/// only operations that fail went through the killed service and were in
/// flight when it died; it rejoins when restarted. On the test's own
/// engines, PostgreSQL then NATS restarted under the same load: the only
/// other failures are `503`s while one was away (or connections cut
/// under requests in flight at its stop), none hung. Every job is done,
/// run twice only if a kill caught it processing, or again if it was not
/// done when an engine went away; every operation that succeeded is
/// audited once (in its trace), one that failed at most once.
async fn survive_losing_one_of_each(test: &str, on_nats: bool) {
    let _alone = ONE_TOPOLOGY.lock().await;
    // On NATS, engines of the test's own, to restart under the load.
    let mut own = on_nats.then(|| (PgCluster::start(test), NatsServer::start(test)));
    let mut dbs = Vec::new();
    let engines = match &own {
        Some((pg, nats)) => Engines {
            identity_db: pg.create_database("identity").await,
            audit_db: pg.create_database("audit").await,
            docs_db: pg.create_database("docs").await,
            queue: ("ECHO_NATS_URL", nats.url()),
            redis: RedisKeys::new(),
        },
        None => {
            for _ in 0..4 {
                dbs.push(PgTestDb::create(test).await);
            }
            Engines {
                identity_db: dbs[0].url.clone(),
                audit_db: dbs[1].url.clone(),
                docs_db: dbs[2].url.clone(),
                queue: ("ECHO_QUEUE_URL", dbs[3].url.clone()),
                redis: RedisKeys::new(),
            }
        }
    };
    let mut topology = Topology::start(engines, 2);
    let identity = topology.url(Kind::Identity).to_owned();
    let audit = topology.url(Kind::Audit).to_owned();
    let gateway = topology.url(Kind::Gateway).to_owned();
    let http = reqwest::Client::new();

    // 10,000 events, 8 writers, batches of 50, through both replicas.
    let (_, _, token) = grant(&http, &identity).await.unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let served = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let (http, audit, token, served) =
                (http.clone(), audit.clone(), token.clone(), served.clone());
            tokio::spawn(async move {
                for batch in 0..25 {
                    let events: Vec<Value> = (0..50)
                        .map(|i| {
                            json!({"id": format!("bulk-{writer}-{batch}-{i}"), "level": "info",
                                   "action": "test.bulk", "message": "m"})
                        })
                        .collect();
                    let response = post_events(&http, &audit, &token, &events).await;
                    assert_eq!(response.status(), 200);
                    *served
                        .lock()
                        .unwrap()
                        .entry(replica_of(&response))
                        .or_default() += 1;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let served = served.lock().unwrap().clone();
    assert!(
        served.get("audit0") > Some(&0) && served.get("audit1") > Some(&0),
        "both replicas took events: {served:?}"
    );
    let mut audit_db = PgConnection::connect(&topology.engines.audit_db)
        .await
        .unwrap();
    let (total, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT id) FROM audit_events WHERE action = 'test.bulk'",
    )
    .fetch_one(&mut audit_db)
    .await
    .unwrap();
    assert_eq!((total, distinct), (10_000, 10_000));
    let (verified, out) = verify_by(topology.admin(), &[]);
    assert!(verified, "{out}");
    // Busy is not dead: 10,000 events through two replicas took none of
    // them out of HAProxy's rotation.
    let haproxy = topology.haproxy.as_ref().unwrap();
    let flapped = haproxy.taken_out_since_settled();
    assert!(flapped.is_empty(), "{flapped:#?}\n{}", haproxy.log());

    // The load, and one replica of each service killed in turn.
    let mut jobs = Jobs::open(&topology).await;
    let load = Load::start(&identity, &gateway).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut kills: Vec<Kill> = Vec::new();
    for kind in [
        Kind::Identity,
        Kind::Gateway,
        Kind::Docs,
        Kind::Audit,
        Kind::Worker,
    ] {
        let i = topology.index_of(kind, 0);
        // The killed worker holds a job: it must be taken again.
        let paused = if kind == Kind::Worker {
            hold_a_job(&topology, i, &mut jobs).await
        } else {
            Vec::new()
        };
        let mut caught = jobs.processing().await;
        let killed = Instant::now();
        topology.kill(i);
        let dead = Instant::now();
        caught.extend(jobs.processing().await);
        paused.iter().for_each(|&j| topology.signal(j, "CONT"));
        let mut out = Duration::ZERO;
        if kind.balanced() {
            tokio::task::block_in_place(|| {
                topology.wait_for_state(i, "DOWN", Duration::from_secs(5))
            });
            out = killed.elapsed();
            assert!(out <= Duration::from_secs(2), "{kind:?} out after {out:?}");
        }
        kills.push(Kill {
            kind,
            killed,
            dead,
            out,
            caught,
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        tokio::task::block_in_place(|| topology.restart(i));
        if kind.balanced() {
            tokio::task::block_in_place(|| {
                topology.wait_for_state(i, "UP", Duration::from_secs(5))
            });
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // Only the killed replicas were taken out, each once.
    let taken_out = topology.haproxy.as_ref().unwrap().taken_out_since_settled();

    // Then each engine of the test's own restarted under the load.
    let mut outages: Vec<Outage> = Vec::new();
    let mut engine_uploads = Vec::new();
    if let Some((pg, nats)) = own.as_mut() {
        let hop = timed_session(&gateway, &identity).await;
        for postgres in [true, false] {
            let mut outage = if postgres {
                restart_postgres(pg, &topology, &hop, &mut jobs, &mut engine_uploads).await
            } else {
                restart_nats(nats, &topology, &hop, &mut jobs, &mut engine_uploads).await
            };
            tokio::time::sleep(Duration::from_secs(3)).await;
            outage.settle(&topology, &mut jobs).await;
            outages.push(outage);
        }
        audit_db = PgConnection::connect(&topology.engines.audit_db)
            .await
            .unwrap();
    }
    let (outcomes, mut uploaded) = load.finish().await;
    // The servers HAProxy took out while the engines were away.
    let taken_out_by_engines: Vec<String> =
        topology.haproxy.as_ref().unwrap().taken_out_since_settled()[taken_out.len()..]
            .iter()
            .filter_map(|line| line.split(" is DOWN").next()?.rsplit(' ').next())
            .map(str::to_owned)
            .collect();
    let killed: Vec<String> = kills
        .iter()
        .filter(|kill| kill.kind.balanced())
        .map(|kill| format!("{0}/{0}0 is DOWN", kill.kind.name()))
        .collect();
    assert!(
        taken_out.len() == killed.len()
            && killed
                .iter()
                .all(|k| taken_out.iter().any(|line| line.contains(k.as_str()))),
        "taken out: {taken_out:#?}, killed: {killed:?}"
    );
    let ops: BTreeMap<&str, usize> = outcomes.iter().fold(BTreeMap::new(), |mut ops, o| {
        *ops.entry(o.op.name()).or_default() += 1;
        ops
    });
    assert!(
        ops.len() == 5 && ops.values().all(|n| *n >= 5),
        "every kind of operation ran: {ops:?}"
    );

    // Only operations in flight on a killed replica failed: each went
    // through the killed service, was sent before the replica died and
    // ended after the signal. Each loop has one operation in flight, so
    // at most four per kill. While an engine was away, operations could
    // also be refused with a 503 (or cut, if in flight at its stop), never
    // hang; every other operation succeeded.
    let mut failed_at = vec![BTreeMap::<&str, usize>::new(); kills.len()];
    let mut refused_in = vec![BTreeMap::<(&str, &str), usize>::new(); outages.len()];
    for failure in outcomes.iter().filter(|o| o.failure.is_some()) {
        let kill = kills.iter().position(|kill| {
            failure.op.touches().contains(&kill.kind)
                && failure.started <= kill.dead
                && failure.ended >= kill.killed
        });
        if let Some(kill) = kill {
            *failed_at[kill].entry(failure.op.name()).or_default() += 1;
            continue;
        }
        let outage = outages.iter().position(|outage| outage.explains(failure));
        let outage = outage.unwrap_or_else(|| {
            panic!(
                "{failure:?} failed but was neither in flight on a killed replica nor refused \
                 while an engine was away ({kills:#?} {outages:#?})\nerrors logged:\n{}",
                topology.errors_logged()
            )
        });
        let how = if status_in(failure.failure.as_deref().unwrap_or_default()) == Some(503) {
            "503"
        } else {
            "cut"
        };
        *refused_in[outage]
            .entry((failure.op.name(), how))
            .or_default() += 1;
    }
    assert!(
        failed_at.iter().all(|ops| ops.values().sum::<usize>() <= 4),
        "{failed_at:?}"
    );
    let out: Vec<Duration> = kills.iter().map(|kill| kill.out).collect();
    println!("HAProxy took the killed replicas out after {out:?}");
    let replicas: BTreeMap<&str, usize> = outcomes.iter().fold(BTreeMap::new(), |mut seen, o| {
        *seen.entry(o.replica.as_str()).or_default() += 1;
        seen
    });
    let failed: usize = failed_at.iter().flat_map(|ops| ops.values()).sum();
    println!(
        "load: {} operations {ops:?} answered by {replicas:?}; {failed} failed, all in flight \
         on the killed replica:",
        outcomes.len(),
    );
    for (kill, failed) in kills.iter().zip(&failed_at) {
        println!("  {}0 killed: {failed:?}", kill.kind.name());
    }
    for (outage, refused) in outages.iter().zip(&refused_in) {
        let refusals: usize = refused.values().sum();
        println!(
            "  {} away {:?}, every service answering {:?} after its return; \
             {refusals} operations refused meanwhile {refused:?}",
            outage.engine,
            outage.back - outage.stopped,
            outage.recovered - outage.back,
        );
    }
    if !outages.is_empty() {
        println!("  HAProxy took out while the engines were away: {taken_out_by_engines:?}");
    }

    // No job lost or doubled: every job is done (those of uploads whose
    // answer was lost at a kill included), each taken once but those a
    // kill caught processing (the killed worker's, taken again when its
    // lease expired, or one whose call to a killed replica failed), and
    // those at most twice. Chunks can't tell: indexing replaces them.
    uploaded.extend(engine_uploads);
    let mut reader = Hop::default();
    sign_in(&mut reader, &gateway, &identity, USERS[0])
        .await
        .unwrap();
    wait_until_done(&reader, &gateway, &uploaded, Duration::from_secs(60)).await;
    assert_indexed_once(&topology.engines.docs_db, &uploaded).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let all = loop {
        let all = jobs.all().await;
        let ended = all
            .iter()
            .all(|(_, job)| matches!(job.state, JobState::Done | JobState::Failed));
        if ended || Instant::now() >= deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for id in &uploaded {
        assert!(
            all.iter().any(|(document, _)| document == id),
            "no job for {id}: {all:#?}"
        );
    }
    let mut taken_again = Vec::new();
    for (document, job) in &all {
        assert_eq!(job.state, JobState::Done, "{document}: {job:?}");
        if job.attempts == 1 {
            continue;
        }
        let id = job.id.to_string();
        // Not done when an engine went away: retried (each attempt
        // counted) until it came back, then done once.
        if let Some(outage) = outages.iter().find(|o| o.unfinished.contains(&id)) {
            taken_again.push(format!(
                "{id} ({} attempts, {} away)",
                job.attempts, outage.engine
            ));
            continue;
        }
        let kill = kills.iter().find(|kill| kill.caught.contains(&id));
        let kill = kill.unwrap_or_else(|| {
            panic!("{document}: {job:?}, no kill or engine's absence caught it")
        });
        assert_eq!(job.attempts, 2, "{document}: {job:?}");
        taken_again.push(format!("{id} ({}0 killed)", kill.kind.name()));
    }
    // The killed worker's jobs (the only ones processing then, the other
    // worker paused) were taken again.
    let held = &kills
        .iter()
        .find(|kill| kill.kind == Kind::Worker)
        .unwrap()
        .caught;
    assert!(!held.is_empty(), "the killed worker held no job");
    for id in held {
        let attempts = all
            .iter()
            .find(|(_, job)| job.id.to_string() == *id)
            .map(|(_, job)| job.attempts);
        // Retried again if an engine went away before it was done.
        let after_outage = outages.iter().any(|o| o.unfinished.contains(id));
        assert!(
            attempts == Some(2) || (after_outage && attempts > Some(2)),
            "job {id} held by the killed worker: {attempts:?} attempts"
        );
    }
    let queued: Vec<usize> = outages.iter().map(|o| o.queued).collect();
    println!(
        "jobs: {} done ({} uploads answered), not done at each engine's stop: {queued:?}, \
         taken again: {taken_again:?}",
        all.len(),
        uploaded.len()
    );

    // No audit event lost or doubled: every operation that succeeded left
    // each of its events once, in its trace (those the killed identity
    // replica answered just before the kill included: its writer's
    // journal is resent when it restarts). One that failed at a kill may
    // have done its work before its answer was lost: at most once. Spooled
    // events arrive with the writers' backoff.
    let actions: BTreeSet<&str> = outcomes
        .iter()
        .flat_map(|o| o.op.audited().iter().copied())
        .collect();
    let actions: Vec<&str> = actions.into_iter().collect();
    let expected: Vec<(&str, &Outcome)> = outcomes
        .iter()
        .filter(|o| o.failure.is_none())
        .flat_map(|o| o.op.audited().iter().map(move |action| (*action, o)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let audited = loop {
        let audited = audited_by_trace(&mut audit_db, &actions).await;
        let arrived = expected
            .iter()
            .filter(|(action, o)| audited.contains_key(&((*action).to_owned(), o.trace.clone())))
            .count();
        if arrived == expected.len() || Instant::now() >= deadline {
            break audited;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Per action: (succeeded and audited once, failed yet audited).
    let mut reconciled = BTreeMap::<&str, (usize, usize)>::new();
    for o in &outcomes {
        for &action in o.op.audited() {
            let n = audited
                .get(&(action.to_owned(), o.trace.clone()))
                .copied()
                .unwrap_or(0);
            let counts = reconciled.entry(action).or_default();
            if o.failure.is_none() {
                assert_eq!(n, 1, "{action} of {o:?}");
                counts.0 += 1;
            } else {
                assert!(n <= 1, "{action} {n} times for {o:?}");
                counts.1 += usize::try_from(n).unwrap();
            }
        }
    }
    println!("audit: (succeeded and audited once, failed yet audited) {reconciled:?}");
    let (verified, out) = verify_by(topology.admin(), &[]);
    assert!(verified, "{out}");

    drop(jobs);
    drop(topology);
    // The test's own engines, stopped once nothing uses them.
    drop(own);
    for db in dbs {
        db.drop_db().await;
    }
}
