//! HTTPS on a service's listener: handshakes (concurrent, time-limited)
//! in front of axum, and the job that reloads certificates whose files
//! changed. The configurations themselves are `echo_tls`'s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use echo_tls::{CertFiles, ServerTls};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::Periodic;

/// How often certificate files are looked at (a `stat` of each).
pub const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Completed handshakes waiting for the server to take them.
const BACKLOG: usize = 128;

/// The job that puts renewed certificate files in use (`files` of a
/// listener, or a caller's client certificate); a replacement that does not
/// load is logged and the pair in use kept.
pub fn cert_reload_job(files: Arc<CertFiles>) -> Periodic {
    Periodic::every("tls certificate reload", CERT_CHECK_INTERVAL, move || {
        let files = files.clone();
        async move {
            match files.reload_if_changed() {
                Ok(true) => {
                    tracing::info!(cert = %files.cert_path().display(), "TLS certificate reloaded");
                }
                Ok(false) => {}
                Err(e) => tracing::error!(
                    error = %e,
                    "the new TLS certificate does not load; the one in use is kept"
                ),
            }
            Ok::<(), std::convert::Infallible>(())
        }
    })
}

/// A listener that yields connections whose TLS handshake completed. The
/// handshakes run in their own tasks, so a slow client delays no other;
/// one that fails (an old protocol version, no client certificate where
/// one is required) is logged at debug and dropped.
pub(crate) struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accepting: JoinHandle<()>,
}

impl TlsListener {
    pub(crate) fn new(listener: TcpListener, tls: &ServerTls) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(tls.config());
        let (sender, ready) = mpsc::channel(BACKLOG);
        let accepting = tokio::spawn(accept_loop(listener, acceptor, sender));
        Ok(Self {
            local,
            ready,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // The server stopped accepting: so does the socket.
        self.accepting.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accepting task ended, which it does only when aborted,
            // after the server stopped asking.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
