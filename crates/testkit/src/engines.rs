//! Engines a test starts of its own, to stop and start again while the
//! services under test run: a PostgreSQL cluster ([`PgCluster`]) and a NATS
//! server with JetStream ([`NatsServer`]), each on a free port of 127.0.0.1
//! with its data in a temporary directory, stopped when dropped. The
//! machine's own servers are shared by every test running in parallel, so
//! a test that takes an engine away takes away one of these. [`crate::tls`]
//! starts the same servers with TLS on.
//!
//! A program that is missing fails the test (`.ci/run` installs them).

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;

pub use crate::tls::free_port;
use crate::tls::{Process, program, temp_dir, wait_for_port};

/// The user PostgreSQL runs as when the tests run as root.
const POSTGRES_USER: &str = "postgres";

/// A throwaway PostgreSQL cluster on a free port, trusting every local
/// connection as `postgres`, with `fsync` off. PostgreSQL refuses to run as
/// root, so under root the cluster belongs to the `postgres` user and runs
/// as it (`runuser`). [`stop`](Self::stop) and [`start_again`](Self::start_again)
/// take it away and bring it back on the same port with the same data; it
/// is stopped and its directory removed when dropped, a failed test too.
#[derive(Debug)]
pub struct PgCluster {
    /// Its port.
    pub port: u16,
    pg_ctl: PathBuf,
    data: PathBuf,
    owner: Option<String>,
    /// The server's options (`pg_ctl -o`), kept for a restart.
    options: String,
    dir: TempDir,
}

impl PgCluster {
    /// Creates and starts a cluster listening on 127.0.0.1.
    ///
    /// # Panics
    /// When PostgreSQL is missing, or the cluster cannot be created or
    /// started (with its log).
    pub fn start(test: &str) -> Self {
        let mut cluster = Self::init(test);
        cluster.launch("-c listen_addresses=127.0.0.1");
        cluster
    }

    /// A new cluster's data directory, not started yet: the caller may put
    /// files in [`data`](Self::data) (given to the owner with
    /// [`give_to_owner`](Self::give_to_owner)) before [`launch`](Self::launch).
    pub(crate) fn init(test: &str) -> Self {
        // Debian keeps the server's programs off the PATH; newest first.
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|dirs| dirs.flatten().map(|d| d.path().join("bin")).collect())
            .unwrap_or_default();
        versions.sort_by(|a, b| b.cmp(a));
        let initdb = program(test, "initdb", &versions);
        let running_as_root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let dir = temp_dir("echo-test-postgres-");
        let cluster = Self {
            port: free_port(),
            pg_ctl: initdb.with_file_name("pg_ctl"),
            data: dir.path().join("data"),
            owner: running_as_root.then(|| POSTGRES_USER.to_owned()),
            options: String::new(),
            dir,
        };
        cluster.give_to_owner(cluster.dir.path());
        cluster.run(
            cluster
                .as_owner(&initdb)
                .arg("-D")
                .arg(&cluster.data)
                .args(["-A", "trust", "-U", "postgres", "--no-sync"]),
            "initdb",
        );
        cluster
    }

    /// The cluster's data directory.
    pub(crate) fn data(&self) -> &Path {
        &self.data
    }

    /// Starts the server with `options` (`-c name=value …`) beside its
    /// port, socket directory and `fsync=off`.
    pub(crate) fn launch(&mut self, options: &str) {
        self.options = format!(
            "-p {port} -k {socket} -c fsync=off {options}",
            port = self.port,
            socket = self.dir.path().display(),
        );
        self.start_again();
    }

    /// Stops the server at once (`-m immediate`: connections are cut, as
    /// when a server dies), keeping its data.
    ///
    /// # Panics
    /// When it does not stop.
    pub fn stop(&self) {
        self.run(
            self.as_owner(&self.pg_ctl).arg("-D").arg(&self.data).args([
                "-m",
                "immediate",
                "-w",
                "stop",
            ]),
            "pg_ctl stop",
        );
    }

    /// Starts the server again on the same port with the same data, and
    /// waits until it accepts connections.
    ///
    /// # Panics
    /// When it does not start (with its log).
    pub fn start_again(&self) {
        self.run(
            self.as_owner(&self.pg_ctl)
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(self.log())
                .arg("-o")
                .arg(&self.options)
                .args(["-w", "-t", "30", "start"]),
            "pg_ctl start",
        );
    }

    /// `postgres://postgres@<host>:<port>/<database>?<query>` (no `?`
    /// when `query` is empty), e.g. `url("127.0.0.1", "postgres",
    /// "sslmode=require")`.
    pub fn url(&self, host: &str, database: &str, query: &str) -> String {
        let url = format!("postgres://postgres@{host}:{}/{database}", self.port);
        if query.is_empty() {
            url
        } else {
            format!("{url}?{query}")
        }
    }

    /// Creates `database` and answers its URL (on 127.0.0.1, no TLS).
    ///
    /// # Panics
    /// When the server does not answer or the database exists.
    pub async fn create_database(&self, database: &str) -> String {
        use sqlx::{AssertSqlSafe, Connection as _, Executor as _};
        let mut admin = sqlx::PgConnection::connect(&self.url("127.0.0.1", "postgres", ""))
            .await
            .unwrap_or_else(|e| panic!("the test's PostgreSQL on port {}: {e}", self.port));
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE {database}")))
            .await
            .unwrap_or_else(|e| panic!("cannot create database {database}: {e}"));
        self.url("127.0.0.1", database, "")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// `program` run as the cluster's owner.
    fn as_owner(&self, program: &Path) -> Command {
        let mut command = match &self.owner {
            Some(user) => {
                let mut runuser = Command::new("runuser");
                runuser.args(["-u", user, "--"]).arg(program);
                runuser
            }
            None => Command::new(program),
        };
        command.stdin(Stdio::null());
        command
    }

    /// Gives `path` to the user the server runs as.
    pub(crate) fn give_to_owner(&self, path: &Path) {
        if let Some(user) = &self.owner {
            chown_to(path, user);
        }
    }

    /// Runs `command`; panics with its output and the server's log when it
    /// fails.
    fn run(&self, command: &mut Command, what: &str) {
        let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        if !output.status.success() {
            let log = std::fs::read_to_string(self.log()).unwrap_or_default();
            panic!(
                "{what} failed ({}):\n{}{}\n{log}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
            );
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Immediate: the cluster is thrown away, nothing needs flushing.
        let _ = self
            .as_owner(&self.pg_ctl)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// Gives `path` to `user` (the temporary directory the cluster lives in).
#[allow(clippy::expect_used)]
fn chown_to(path: &Path, user: &str) {
    let (uid, gid) = user_ids(user).unwrap_or_else(|| panic!("no user {user} to run PostgreSQL"));
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
}

/// `user`'s uid and gid, from `/etc/passwd`.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == user).then_some(())?;
        let _password = fields.next()?;
        Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
    })
}

/// `nats-server -js` on a free port of 127.0.0.1, its JetStream store in a
/// temporary directory. [`kill`](Self::kill) and
/// [`start_again`](Self::start_again) take it away (SIGKILL: nothing is
/// flushed beyond what JetStream already wrote) and bring it back on the
/// same port with the same store.
#[derive(Debug)]
pub struct NatsServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    program: PathBuf,
    /// What the server is started with besides its port, store and log.
    extra: Vec<OsString>,
    process: Option<Process>,
    dir: TempDir,
}

impl NatsServer {
    /// Starts it, without TLS.
    ///
    /// # Panics
    /// When `nats-server` is missing or does not start (with its log).
    pub fn start(test: &str) -> Self {
        Self::start_with(test, Vec::new())
    }

    /// Starts it with `extra` arguments (TLS options).
    pub(crate) fn start_with(test: &str, extra: Vec<OsString>) -> Self {
        let mut server = Self {
            port: free_port(),
            program: program(test, "nats-server", &[PathBuf::from("/usr/sbin")]),
            extra,
            process: None,
            dir: temp_dir("echo-test-nats-"),
        };
        server.start_again();
        server
    }

    /// Kills the server (SIGKILL), keeping its store.
    pub fn kill(&mut self) {
        self.process = None;
    }

    /// Starts the server (again) on its port with its store, and waits
    /// until it accepts connections.
    ///
    /// # Panics
    /// When it does not start (with its log).
    #[allow(clippy::expect_used)]
    pub fn start_again(&mut self) {
        self.kill();
        let log = self.dir.path().join("nats.log");
        let mut child = Command::new(&self.program)
            .args(["-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-js")
            .arg("-sd")
            .arg(self.dir.path().join("jetstream"))
            .args(&self.extra)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        wait_for_port("nats-server", self.port, &mut child, &log);
        self.process = Some(Process(child));
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}
