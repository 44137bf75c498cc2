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

/// How long past the grace period a shutdown waits for the server before abandoning it.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(2);

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

    /// Stops accepting, lets in-flight requests finish for up to `grace`.
    pub fn shutdown(&self, grace: Duration) {
        self.handle.graceful_shutdown(Some(grace));
    }

    /// Serves until `signal` completes (or the server fails), then shuts down gracefully: stops
    /// accepting connections at once, lets requests in flight finish for up to `grace`, then
    /// closes what is left. Returns when the server has stopped.
    pub async fn run_until(
        mut self,
        signal: impl std::future::Future<Output = ()>,
        grace: Duration,
    ) -> std::io::Result<()> {
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        tokio::select! {
            result = &mut task => return result.unwrap_or(Ok(())),
            () = signal => {}
        }
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutting down: no new connections, finishing requests in flight"
        );
        self.shutdown(grace);
        // The server closes leftover connections when `grace` ends; bound the wait regardless.
        match tokio::time::timeout(grace.saturating_add(SHUTDOWN_SLACK), &mut task).await {
            Ok(result) => {
                tracing::info!("key broker stopped");
                result.unwrap_or(Ok(()))
            }
            Err(_) => {
                tracing::warn!("server did not stop in time; abandoning remaining connections");
                task.abort();
                Ok(())
            }
        }
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
    // The peer address reaches handlers as `ConnectInfo`: sessions are counted per client.
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::routing::get;
    use tokio::sync::{mpsc, oneshot};

    use super::*;

    /// A server whose `/slow` handler reports when it starts and answers when released.
    fn slow_server() -> (RunningServer, mpsc::Receiver<oneshot::Sender<()>>) {
        let (started, requests) = mpsc::channel::<oneshot::Sender<()>>(4);
        let app = Router::new().route(
            "/slow",
            get(move || {
                let started = started.clone();
                async move {
                    let (release, released) = oneshot::channel();
                    let _ = started.send(release).await;
                    let _ = released.await;
                    "done"
                }
            }),
        );
        let server = serve(
            "127.0.0.1:0".parse().unwrap(),
            Transport::InsecurePlainHttpLoopbackOnly,
            app,
        )
        .unwrap();
        (server, requests)
    }

    async fn refuses_connections(addr: SocketAddr) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn shutdown_finishes_requests_in_flight_and_stops_accepting() {
        let (server, mut requests) = slow_server();
        let addr = server.local_addr();
        let url = format!("http://{addr}/slow");
        let in_flight = tokio::spawn(async move { reqwest::get(url).await?.text().await });
        let release = tokio::time::timeout(Duration::from_secs(10), requests.recv())
            .await
            .unwrap()
            .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(server.run_until(
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(10),
        ));
        stop.send(()).unwrap();
        assert!(refuses_connections(addr).await, "still accepting");
        assert!(
            !running.is_finished(),
            "stopped before the request finished"
        );
        release.send(()).unwrap();
        let body = tokio::time::timeout(Duration::from_secs(10), in_flight)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(body, "done");
        tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn shutdown_is_bounded_by_the_grace_period() {
        let (server, mut requests) = slow_server();
        let url = format!("http://{}/slow", server.local_addr());
        let stuck = tokio::spawn(async move { reqwest::get(url).await });
        let _never_released = tokio::time::timeout(Duration::from_secs(10), requests.recv())
            .await
            .unwrap()
            .unwrap();
        let start = Instant::now();
        server
            .run_until(async {}, Duration::from_millis(200))
            .await
            .unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        // The stuck request was cut off rather than answered.
        let outcome = tokio::time::timeout(Duration::from_secs(10), stuck)
            .await
            .unwrap()
            .unwrap();
        assert!(outcome.is_err(), "{outcome:?}");
    }
}
