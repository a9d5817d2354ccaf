//! HTTPS on a service's listener: HTTP/1.1 and HTTP/2 by ALPN, TLS 1.2 and
//! 1.3 only, certificates reloaded from their files without a restart (a
//! broken replacement keeps the old one), and mutual TLS.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use echo_edge::{CERT_CHECK_INTERVAL, EdgeLayer, Service, bind};
use echo_tls::rustls::pki_types::pem::PemObject;
use echo_tls::rustls::pki_types::{CertificateDer, ServerName};
use echo_tls::rustls::{self, ClientConfig, ProtocolVersion};
use echo_tls::{CertFiles, ClientTls, DevCa, ServerTls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A service answering `hi` at `/` over HTTPS, stopped on drop.
struct Running {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn serve(cert: Arc<CertFiles>, client_ca: Option<&Path>) -> Running {
    let listener = bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route("/", get(|| async { "hi" }));
    let tls = ServerTls::new(cert, client_ca).unwrap();
    let service = Service::http("hello", listener, EdgeLayer::api(), router).with_tls(tls);
    assert!(service.is_tls());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(service.run(async move {
        let _ = stopped.await;
    }));
    Running { addr, _stop: stop }
}

/// A CA in a temporary directory and a served certificate of it.
fn ca_and_cert() -> (tempfile::TempDir, DevCa, Arc<CertFiles>) {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::open_or_create(dir.path()).unwrap();
    let issued = ca.issue("svc").unwrap();
    let cert = CertFiles::load(&issued.cert, &issued.key).unwrap();
    (dir, ca, cert)
}

/// Trusts `ca` only, presenting `identity`, offering `alpn`.
fn client_config(
    ca: &DevCa,
    identity: Option<Arc<CertFiles>>,
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut config = ClientConfig::clone(
        &ClientTls::new(
            &echo_crypto::TrustedRoots::load(Some(&ca.ca_path())).unwrap(),
            identity,
        )
        .unwrap()
        .rustls_config(),
    );
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn handshake(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    TlsConnector::from(config).connect(name, tcp).await
}

/// The leaf certificate a new connection is served.
async fn served_leaf(addr: SocketAddr, ca: &DevCa) -> CertificateDer<'static> {
    let stream = handshake(addr, client_config(ca, None, &[])).await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

fn leaf_of(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// Replaces `path` whole, as a renewal tool does.
fn replace(path: &Path, text: &str) {
    let partial = path.with_extension("new");
    std::fs::write(&partial, text).unwrap();
    std::fs::rename(&partial, path).unwrap();
}

#[tokio::test]
async fn https_is_served_over_http1_and_h2_by_alpn() {
    let (_dir, ca, cert) = ca_and_cert();
    let server = serve(cert, None).await;

    let http = ClientTls::new(
        &echo_crypto::TrustedRoots::load(Some(&ca.ca_path())).unwrap(),
        None,
    )
    .unwrap()
    .http_client(Duration::from_secs(5));
    let response = http
        .get(format!("https://{}/", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.text().await.unwrap(), "hi");

    let stream = handshake(server.addr, client_config(&ca, None, &[b"h2", b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_3)
    );
    let (mut h2, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = axum::http::Request::builder()
        .uri(format!("https://localhost:{}/", server.addr.port()))
        .body(Body::empty())
        .unwrap();
    let response = h2.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), axum::http::Version::HTTP_2);
    let body = axum::body::to_bytes(Body::new(response.into_body()), 1024)
        .await
        .unwrap();
    assert_eq!(&body[..], b"hi");
}

/// A TLS 1.1 ClientHello (legacy version 3.2, no `supported_versions`),
/// offering two CBC suites of that era.
fn tls11_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x02];
    hello.extend([7u8; 32]); // random
    hello.push(0); // no session id
    hello.extend([0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // cipher suites
    hello.extend([0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00];
    handshake.extend(u16::try_from(hello.len()).unwrap().to_be_bytes());
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend(u16::try_from(handshake.len()).unwrap().to_be_bytes());
    record.extend(handshake);
    record
}

#[tokio::test]
async fn tls_1_1_is_refused_and_1_2_and_1_3_are_spoken() {
    let (_dir, ca, cert) = ca_and_cert();
    let server = serve(cert, None).await;

    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(&tls11_client_hello()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut answer)).await;
    // A fatal alert record, no ServerHello: handshake_failure (40), as
    // nothing a TLS 1.1 client can speak is offered, or protocol_version
    // (70).
    assert_eq!(
        answer.first(),
        Some(&0x15),
        "an alert, not a ServerHello: {answer:?}"
    );
    assert_eq!(answer[5], 2, "fatal: {answer:?}");
    assert!([40, 70].contains(&answer[6]), "{answer:?}");

    for (version, expected) in [
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(leaf_of(&std::fs::read_to_string(ca.ca_path()).unwrap()))
            .unwrap();
        let config = ClientConfig::builder_with_provider(echo_tls::provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let stream = handshake(server.addr, Arc::new(config)).await.unwrap();
        assert_eq!(stream.get_ref().1.protocol_version(), Some(expected));
    }
}

#[tokio::test]
async fn a_replaced_certificate_is_served_without_a_restart_and_a_broken_one_is_not() {
    let (_dir, ca, cert) = ca_and_cert();
    let (cert_path, key_path) = (
        cert.cert_path().to_owned(),
        cert.cert_path().with_extension("key"),
    );
    let server = serve(cert, None).await;
    let first = served_leaf(server.addr, &ca).await;

    let (renewed_pem, renewed_key) = ca.generate("svc").unwrap();
    let renewed = leaf_of(&renewed_pem);
    assert_ne!(renewed, first);
    replace(&key_path, &renewed_key);
    replace(&cert_path, &renewed_pem);
    let deadline = Instant::now() + CERT_CHECK_INTERVAL * 5;
    while served_leaf(server.addr, &ca).await != renewed {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    replace(&cert_path, "-----BEGIN CERTIFICATE-----\ncut short");
    tokio::time::sleep(CERT_CHECK_INTERVAL * 2 + Duration::from_millis(500)).await;
    assert_eq!(
        served_leaf(server.addr, &ca).await,
        renewed,
        "a broken file keeps the certificate in use"
    );
}

#[tokio::test]
async fn a_client_ca_requires_a_client_certificate_it_signed() {
    let (_dir, ca, cert) = ca_and_cert();
    let server = serve(cert, Some(&ca.ca_path())).await;
    let url = format!("https://{}/", server.addr);
    let get = |tls: ClientTls| {
        let url = url.clone();
        async move {
            tls.http_client(Duration::from_secs(5))
                .get(url)
                .send()
                .await
        }
    };

    let anonymous = ClientTls::new(
        &echo_crypto::TrustedRoots::load(Some(&ca.ca_path())).unwrap(),
        None,
    )
    .unwrap();
    assert!(get(anonymous).await.is_err(), "no client certificate");

    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger_ca = DevCa::open_or_create(stranger_dir.path()).unwrap();
    let stranger = stranger_ca.issue("stranger").unwrap();
    let stranger = CertFiles::load(&stranger.cert, &stranger.key).unwrap();
    let impostor = ClientTls::new(
        &echo_crypto::TrustedRoots::load(Some(&ca.ca_path())).unwrap(),
        Some(stranger),
    )
    .unwrap();
    assert!(get(impostor).await.is_err(), "a certificate of another CA");

    let caller = ca.issue("caller").unwrap();
    let caller = CertFiles::load(&caller.cert, &caller.key).unwrap();
    let known = ClientTls::new(
        &echo_crypto::TrustedRoots::load(Some(&ca.ca_path())).unwrap(),
        Some(caller),
    )
    .unwrap();
    let response = get(known).await.unwrap();
    assert_eq!(response.status(), 200);
}
