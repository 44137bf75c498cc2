//! Serving the router: HTTPS with rustls, or plain HTTP only on a loopback address and only when
//! asked for by name.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use hyper_util::rt::TokioTimer;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Longest time a client may take to send request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How the broker talks to clients.
#[derive(Debug)]
pub enum Transport {
    /// HTTPS with this certificate chain and key.
    Https {
        /// Server certificate first, then intermediates.
        cert_chain: Vec<CertificateDer<'static>>,
        /// The server's private key.
        key: PrivateKeyDer<'static>,
    },
    /// Plain HTTP. Refused unless the address is a loopback address.
    InsecurePlainHttpLoopbackOnly,
}

/// Errors while starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Plain HTTP was asked for on a non-loopback address.
    #[error("plain http is only allowed on a loopback address, not {addr}")]
    PlainHttpNotLoopback {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// Binding the listener failed.
    #[error("bind {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration was refused.
    #[error("tls configuration is invalid")]
    Tls(#[source] rustls::Error),
    /// A PEM file could not be read.
    #[error("pem input is invalid")]
    Pem(#[source] std::io::Error),
    /// The PEM input has no private key.
    #[error("pem input has no private key")]
    NoKey,
}

/// A running server; dropping it shuts the server down.
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    handle: Handle,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl RunningServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits until the server stops (for a foreground `serve`).
    pub async fn wait(mut self) -> std::io::Result<()> {
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }

    /// Stops accepting, lets in-flight requests finish for up to `grace`.
    pub fn shutdown(&self, grace: Duration) {
        self.handle.graceful_shutdown(Some(grace));
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

/// Reads a PEM certificate chain and private key.
pub fn load_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ServerError> {
    let certs = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(ServerError::Pem)?;
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(ServerError::Pem)?
        .ok_or(ServerError::NoKey)?;
    Ok((certs, key))
}

/// Binds `addr` and serves `router` over `transport` on the current tokio runtime.
pub fn serve(
    addr: SocketAddr,
    transport: Transport,
    router: Router,
) -> Result<RunningServer, ServerError> {
    if matches!(transport, Transport::InsecurePlainHttpLoopbackOnly) && !addr.ip().is_loopback() {
        return Err(ServerError::PlainHttpNotLoopback { addr });
    }
    let listener = TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
    let bind_err = |source| ServerError::Bind { addr, source };
    listener.set_nonblocking(true).map_err(bind_err)?;
    let local_addr = listener.local_addr().map_err(bind_err)?;
    let handle = Handle::new();
    let service = router.into_make_service();
    let task = match transport {
        Transport::InsecurePlainHttpLoopbackOnly => {
            tracing::warn!(%local_addr, "serving plain http on loopback");
            let mut server = axum_server::from_tcp(listener).handle(handle.clone());
            server
                .http_builder()
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            tokio::spawn(server.serve(service))
        }
        Transport::Https { cert_chain, key } => {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(ServerError::Tls)?
                .with_no_client_auth()
                .with_single_cert(cert_chain, key)
                .map_err(ServerError::Tls)?;
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let mut server =
                axum_server::from_tcp_rustls(listener, RustlsConfig::from_config(Arc::new(config)))
                    .handle(handle.clone());
            server
                .http_builder()
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            tokio::spawn(server.serve(service))
        }
    };
    tracing::info!(%local_addr, "key broker listening");
    Ok(RunningServer {
        local_addr,
        handle,
        task: Some(task),
    })
}
