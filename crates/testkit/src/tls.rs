//! TLS for tests: a throwaway certificate authority ([`TestCa`]), and the
//! servers tests start with TLS on and stop when dropped: a PostgreSQL
//! cluster ([`TlsPostgres`]), a Redis ([`TlsRedis`]) and a NATS with
//! JetStream ([`TlsNats`]), each on a free port of 127.0.0.1 with its data
//! in a temporary directory.
//!
//! A server whose program is missing fails the test, naming the program:
//! a TLS test never passes without having run.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
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
pub(crate) fn program(test: &str, program: &str, also_in: &[PathBuf]) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(also_in.iter().cloned())
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file());
    found.unwrap_or_else(|| panic!("{test}: {program} is not installed (.ci/run installs it)"))
}

/// A port of 127.0.0.1 no one listens on now.
#[allow(clippy::expect_used)]
pub fn free_port() -> u16 {
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
    /// Starts it with `ca`'s server certificate.
    ///
    /// # Panics
    /// When `redis-server` is missing or does not start (with its log).
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
    _server: crate::engines::NatsServer,
}

impl TlsNats {
    /// Starts it with `ca`'s server certificate.
    pub fn start(test: &str, ca: &TestCa) -> Self {
        let server = crate::engines::NatsServer::start_with(
            test,
            vec![
                "--tls".into(),
                "--tlscert".into(),
                ca.cert_file.clone().into(),
                "--tlskey".into(),
                ca.key_file.clone().into(),
            ],
        );
        Self {
            port: server.port,
            _server: server,
        }
    }

    /// `tls://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.port)
    }
}

/// A throwaway PostgreSQL cluster ([`PgCluster`](crate::engines::PgCluster)) with `ssl=on` and
/// `ca`'s server certificate, on a free port of 127.0.0.1 and 127.0.0.2 (an
/// address its certificate does not name), trusting every local
/// connection.
#[derive(Debug)]
pub struct TlsPostgres {
    /// Its port.
    pub port: u16,
    cluster: crate::engines::PgCluster,
}

impl TlsPostgres {
    /// Creates and starts the cluster.
    ///
    /// # Panics
    /// When PostgreSQL is missing, or the cluster cannot be created or
    /// started (with its log).
    #[allow(clippy::expect_used)]
    pub fn start(test: &str, ca: &TestCa) -> Self {
        let mut cluster = crate::engines::PgCluster::init(test);
        // PostgreSQL wants its key its own and private.
        let cert = cluster.data().join("server.crt");
        let key = cluster.data().join("server.key");
        std::fs::copy(&ca.cert_file, &cert).expect("copy the server certificate");
        std::fs::copy(&ca.key_file, &key).expect("copy the server key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .expect("chmod the server key");
        cluster.give_to_owner(&cert);
        cluster.give_to_owner(&key);
        cluster.launch(&format!(
            "-c listen_addresses=127.0.0.1,127.0.0.2 -c ssl=on \
             -c ssl_cert_file={cert} -c ssl_key_file={key}",
            cert = cert.display(),
            key = key.display(),
        ));
        Self {
            port: cluster.port,
            cluster,
        }
    }

    /// `postgres://postgres@<host>:<port>/postgres?<query>`, e.g.
    /// `url("127.0.0.1", "sslmode=require")`.
    pub fn url(&self, host: &str, query: &str) -> String {
        self.cluster.url(host, "postgres", query)
    }
}
