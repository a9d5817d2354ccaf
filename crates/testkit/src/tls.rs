//! TLS for tests: a throwaway certificate authority ([`TestCa`]), and the
//! servers tests start with TLS on and stop when dropped: a PostgreSQL
//! cluster ([`TlsPostgres`]), a Redis ([`TlsRedis`]) and a NATS with
//! JetStream ([`TlsNats`]), each on a free port of 127.0.0.1 with its data
//! in a temporary directory.
//!
//! A server whose program is missing skips the test (it says so), except
//! under `CI=true`, where that fails: a CI run never passes a TLS test that
//! did not run.

use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server may take to accept connections.
const STARTUP: Duration = Duration::from_secs(30);

/// A certificate authority of one test (an [`echo_tls::DevCa`] with a
/// name of its own) and a server certificate it signed for
/// [`echo_tls::DEV_NAMES`], as PEM files in a temporary directory.
#[derive(Debug)]
pub struct TestCa {
    /// The CA's certificate: what a client that trusts this CA is given.
    pub ca_file: PathBuf,
    /// The server's certificate, signed by the CA.
    pub cert_file: PathBuf,
    /// The server certificate's private key.
    pub key_file: PathBuf,
    _dir: TempDir,
}

impl TestCa {
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("echo-test-ca-")
            .tempdir()
            .expect("temporary directory");
        let name = format!("Echo test CA {}", crate::unique_suffix());
        let ca = echo_tls::DevCa::open_or_create_named(dir.path(), &name).expect("test CA");
        let server = ca.issue("server").expect("server certificate");
        Self {
            ca_file: ca.ca_path(),
            cert_file: server.cert,
            key_file: server.key,
            _dir: dir,
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// `program` on the `PATH` or in one of `also_in`.
///
/// # Panics
/// When it is nowhere: the test fails rather than pass without having run.
fn program(test: &str, program: &str, also_in: &[PathBuf]) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(also_in.iter().cloned())
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file());
    found.unwrap_or_else(|| panic!("{test}: {program} is not installed (.ci/run installs it)"))
}

/// A port of 127.0.0.1 no one listens on now.
#[allow(clippy::expect_used)]
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Waits until something accepts connections on `port`, or panics with
/// the server's log when `child` exits or [`STARTUP`] passes.
pub(crate) fn wait_for_port(name: &str, port: u16, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + STARTUP;
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{name} did not start on port {port} ({exited:?}):\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn temp_dir(prefix: &str) -> TempDir {
    #[allow(clippy::expect_used)]
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temporary directory")
}

/// A server process of one test, killed when dropped.
#[derive(Debug)]
pub(crate) struct Process(pub(crate) Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `redis-server` with TLS only (`--port 0`), on a free port, trusting no
/// client certificate (`--tls-auth-clients no`), keeping nothing on disk.
#[derive(Debug)]
pub struct TlsRedis {
    /// Its TLS port on 127.0.0.1.
    pub port: u16,
    _process: Process,
    _dir: TempDir,
}

impl TlsRedis {
    /// Starts it with `ca`'s server certificate; `None` when `redis-server`
    /// is missing outside CI.
    pub fn start(test: &str, ca: &TestCa) -> Self {
        let redis_server = program(test, "redis-server", &[]);
        let dir = temp_dir("echo-test-redis-");
        let log = dir.path().join("redis.log");
        let port = free_port();
        #[allow(clippy::expect_used)]
        let mut child = Command::new(redis_server)
            .args(["--port", "0", "--bind", "127.0.0.1"])
            .arg("--tls-port")
            .arg(port.to_string())
            .arg("--tls-cert-file")
            .arg(&ca.cert_file)
            .arg("--tls-key-file")
            .arg(&ca.key_file)
            .arg("--tls-ca-cert-file")
            .arg(&ca.ca_file)
            .args(["--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        wait_for_port("redis-server", port, &mut child, &log);
        Self {
            port,
            _process: Process(child),
            _dir: dir,
        }
    }

    /// `rediss://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

/// `nats-server` with JetStream, TLS required, on a free port, its store
/// in a temporary directory.
#[derive(Debug)]
pub struct TlsNats {
    /// Its port on 127.0.0.1.
    pub port: u16,
    _process: Process,
    _dir: TempDir,
}

impl TlsNats {
    /// Starts it with `ca`'s server certificate; `None` when `nats-server`
    /// is missing outside CI.
    pub fn start(test: &str, ca: &TestCa) -> Self {
        let nats_server = program(test, "nats-server", &[PathBuf::from("/usr/sbin")]);
        let dir = temp_dir("echo-test-nats-");
        let log = dir.path().join("nats.log");
        let port = free_port();
        #[allow(clippy::expect_used)]
        let mut child = Command::new(nats_server)
            .args(["-a", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .arg("-js")
            .arg("-sd")
            .arg(dir.path().join("jetstream"))
            .args(["--tls", "--tlscert"])
            .arg(&ca.cert_file)
            .arg("--tlskey")
            .arg(&ca.key_file)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        wait_for_port("nats-server", port, &mut child, &log);
        Self {
            port,
            _process: Process(child),
            _dir: dir,
        }
    }

    /// `tls://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.port)
    }
}

/// A throwaway PostgreSQL cluster with `ssl=on` and `ca`'s server
/// certificate, on a free port of 127.0.0.1 and 127.0.0.2 (an address its
/// certificate does not name), trusting every local connection. PostgreSQL
/// refuses to run as root, so under root the cluster belongs to the
/// `postgres` user and runs as it (`runuser`). The server is stopped and
/// its directory removed when this is dropped, a failed test too.
#[derive(Debug)]
pub struct TlsPostgres {
    /// Its port.
    pub port: u16,
    pg_ctl: PathBuf,
    data: PathBuf,
    owner: Option<String>,
    dir: TempDir,
}

/// The user PostgreSQL runs as when the tests run as root.
const POSTGRES_USER: &str = "postgres";

impl TlsPostgres {
    /// Creates and starts the cluster; `None` when PostgreSQL is missing
    /// outside CI.
    ///
    /// # Panics
    /// When the cluster cannot be created or started (with its log).
    #[allow(clippy::expect_used)]
    pub fn start(test: &str, ca: &TestCa) -> Self {
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
        // PostgreSQL wants its key its own and private.
        let cert = cluster.data.join("server.crt");
        let key = cluster.data.join("server.key");
        std::fs::copy(&ca.cert_file, &cert).expect("copy the server certificate");
        std::fs::copy(&ca.key_file, &key).expect("copy the server key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .expect("chmod the server key");
        cluster.give_to_owner(&cert);
        cluster.give_to_owner(&key);
        let options = format!(
            "-p {port} -k {socket} -c listen_addresses=127.0.0.1,127.0.0.2 -c ssl=on \
             -c ssl_cert_file={cert} -c ssl_key_file={key} -c fsync=off",
            port = cluster.port,
            socket = cluster.dir.path().display(),
            cert = cert.display(),
            key = key.display(),
        );
        cluster.run(
            cluster
                .as_owner(&cluster.pg_ctl)
                .arg("-D")
                .arg(&cluster.data)
                .arg("-l")
                .arg(cluster.log())
                .arg("-o")
                .arg(options)
                .args(["-w", "-t", "30", "start"]),
            "pg_ctl start",
        );
        cluster
    }

    /// `postgres://postgres@<host>:<port>/postgres?<query>`, e.g.
    /// `url("127.0.0.1", "sslmode=require")`.
    pub fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
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

    fn give_to_owner(&self, path: &Path) {
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

impl Drop for TlsPostgres {
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
