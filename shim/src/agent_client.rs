//! The host's client for the guest agent API.
//!
//! Over virtio-serial the host holds a connected stream from the moment QEMU starts, long before
//! the agent runs; over vsock it must retry connecting until the agent listens. Either way the
//! client waits for the agent's hello, within a deadline, before it sends a request; then the two
//! transports are the same ttrpc client.

use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tracing::debug;
use tsuba_protocols::agent::{
    AttestationClient, CheckRequest, CheckResponse, CloseStdinRequest, ContainerClient,
    CreateContainerRequest, CreateContainerResponse, DiagnosticReportRequest,
    DiagnosticReportResponse, ExecProcessRequest, GetOOMEventRequest, HELLO, HealthClient,
    ImageClient, InitdataClient, ListProcessesRequest, MAX_IMAGE_REFERENCE, MAX_OCI_SPEC,
    MAX_STDIO_CHUNK, OOMEvent, ProvideInitdataRequest, ProvideInitdataResponse, PullImageRequest,
    PullImageResponse, ReadStreamRequest, ReadStreamResponse, RemoveContainerRequest,
    SignalProcessRequest, StartContainerRequest, StatsContainerRequest, StatsContainerResponse,
    TtyWinResizeRequest, VersionRequest, VersionResponse, WaitProcessRequest, WaitProcessResponse,
    WriteStreamRequest,
};
use ttrpc::asynchronous::Client;
use ttrpc::asynchronous::transport::Socket;

/// Talking to the agent failed.
#[derive(Debug, Error)]
pub enum AgentClientError {
    /// The agent did not say hello in time.
    #[error("the guest agent did not come up within {0:?}")]
    Timeout(Duration),
    /// Something other than the agent answered.
    #[error("the peer is not a tsuba agent of this protocol version (it sent {0:?})")]
    BadHello(String),
    /// The connection closed before the hello.
    #[error("the agent connection closed before the agent said hello")]
    Closed,
    /// Reading or connecting failed.
    #[error("agent connection failed")]
    Io(#[source] std::io::Error),
    /// An image reference the agent would refuse anyway.
    #[error("image reference is empty or longer than {MAX_IMAGE_REFERENCE} bytes")]
    ImageReference,
    /// An OCI spec or process larger than the agent takes.
    #[error("the OCI spec is larger than {MAX_OCI_SPEC} bytes")]
    SpecTooLarge,
    /// A call failed.
    #[error("agent call {method} failed")]
    Rpc {
        /// The method.
        method: &'static str,
        /// ttrpc's error.
        #[source]
        source: ttrpc::Error,
    },
}

/// A connected agent.
#[derive(Clone)]
pub struct AgentClient {
    health: HealthClient,
    initdata: InitdataClient,
    attestation: AttestationClient,
    image: ImageClient,
    container: ContainerClient,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient").finish_non_exhaustive()
    }
}

impl AgentClient {
    /// Waits up to `timeout` for the agent's hello on an already connected `stream`, then
    /// returns a client over it.
    pub async fn handshake<S>(mut stream: S, timeout: Duration) -> Result<Self, AgentClientError>
    where
        S: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static,
    {
        let mut hello = [0u8; HELLO.len()];
        match tokio::time::timeout(timeout, stream.read_exact(&mut hello)).await {
            Err(_) => return Err(AgentClientError::Timeout(timeout)),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(AgentClientError::Closed);
            }
            Ok(Err(e)) => return Err(AgentClientError::Io(e)),
            Ok(Ok(_)) => {}
        }
        if &hello != HELLO {
            return Err(AgentClientError::BadHello(
                String::from_utf8_lossy(&hello).into_owned(),
            ));
        }
        debug!("agent said hello");
        let client = Client::new(Socket::new(stream));
        Ok(AgentClient {
            health: HealthClient::new(client.clone()),
            initdata: InitdataClient::new(client.clone()),
            attestation: AttestationClient::new(client.clone()),
            image: ImageClient::new(client.clone()),
            container: ContainerClient::new(client),
        })
    }

    /// Connects to the agent over vsock, retrying until it listens, all within `timeout`.
    pub async fn connect_vsock(
        cid: u32,
        port: u32,
        timeout: Duration,
    ) -> Result<Self, AgentClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let addr = tokio_vsock::VsockAddr::new(cid, port);
        let stream = loop {
            match tokio_vsock::VsockStream::connect(addr).await {
                Ok(stream) => break stream,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    debug!(%e, "last vsock connect attempt failed");
                    return Err(AgentClientError::Timeout(timeout));
                }
            }
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        Self::handshake(stream, left).await
    }

    /// `Health.Check`.
    pub async fn check(&self, timeout: Duration) -> Result<CheckResponse, AgentClientError> {
        self.health
            .check(context(timeout), &CheckRequest::new())
            .await
            .map_err(|source| AgentClientError::Rpc {
                method: "Health.Check",
                source,
            })
    }

    /// `Health.Version`.
    pub async fn version(&self, timeout: Duration) -> Result<VersionResponse, AgentClientError> {
        self.health
            .version(context(timeout), &VersionRequest::new())
            .await
            .map_err(|source| AgentClientError::Rpc {
                method: "Health.Version",
                source,
            })
    }
}

impl AgentClient {
    /// `Initdata.Provide`: gives the guest the document whose digest its launch bound. A guest
    /// that finds another digest in its report refuses, with the reason, and serves nothing but
    /// health from then on.
    pub async fn provide_initdata(
        &self,
        document: &[u8],
        timeout: Duration,
    ) -> Result<ProvideInitdataResponse, AgentClientError> {
        let mut req = ProvideInitdataRequest::new();
        req.document = document.to_vec();
        self.initdata
            .provide(context(timeout), &req)
            .await
            .map_err(|source| AgentClientError::Rpc {
                method: "Initdata.Provide",
                source,
            })
    }

    /// `Attestation.GetDiagnosticReport`: the guest's evidence for `nonce` (report data derived
    /// by [`tsuba_protocols::agent::diagnostic_report_data`]).
    pub async fn diagnostic_report(
        &self,
        nonce: &[u8],
        timeout: Duration,
    ) -> Result<DiagnosticReportResponse, AgentClientError> {
        let mut req = DiagnosticReportRequest::new();
        req.nonce = nonce.to_vec();
        self.attestation
            .get_diagnostic_report(context(timeout), &req)
            .await
            .map_err(|source| AgentClientError::Rpc {
                method: "Attestation.GetDiagnosticReport",
                source,
            })
    }
}

impl AgentClient {
    /// `Image.Pull`: the guest attests to its (measured) key broker, then pulls, verifies,
    /// decrypts and unpacks `image` in guest memory. The answer says what was unpacked, never
    /// its content. A broker refusal is an [`AgentClientError::Rpc`] whose status is
    /// `PERMISSION_DENIED` with the broker's reason.
    pub async fn pull_image(
        &self,
        image: &str,
        timeout: Duration,
    ) -> Result<PullImageResponse, AgentClientError> {
        if image.is_empty() || image.len() > MAX_IMAGE_REFERENCE {
            return Err(AgentClientError::ImageReference);
        }
        let mut req = PullImageRequest::new();
        image.clone_into(&mut req.image);
        self.image
            .pull(context(timeout), &req)
            .await
            .map_err(|source| AgentClientError::Rpc {
                method: "Image.Pull",
                source,
            })
    }
}

/// A call with no deadline, for the long-polls and waits that last as long as a process.
fn no_deadline() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(0)
}

macro_rules! rpc {
    ($self:ident, $method:ident, $name:literal, $ctx:expr, $req:expr) => {
        $self
            .container
            .$method($ctx, &$req)
            .await
            .map_err(|source| AgentClientError::Rpc {
                method: $name,
                source,
            })
    };
}

/// The `Container` service: the pod's containers and their processes. Calls that last as long
/// as a process (wait, stdio reads, OOM events) have no deadline; the others take `timeout`.
impl AgentClient {
    /// `Container.CreateContainer`: pulls `image` (attesting first) if the pod has not, and
    /// creates the container's init process, stopped. A refused attestation is an
    /// [`AgentClientError::Rpc`] with `PERMISSION_DENIED` and the broker's reason.
    pub async fn create_container(
        &self,
        container_id: &str,
        sandbox_id: &str,
        image: &str,
        oci_spec: Vec<u8>,
        timeout: Duration,
    ) -> Result<CreateContainerResponse, AgentClientError> {
        if image.is_empty() || image.len() > MAX_IMAGE_REFERENCE {
            return Err(AgentClientError::ImageReference);
        }
        if oci_spec.len() > MAX_OCI_SPEC {
            return Err(AgentClientError::SpecTooLarge);
        }
        let mut req = CreateContainerRequest::new();
        container_id.clone_into(&mut req.container_id);
        sandbox_id.clone_into(&mut req.sandbox_id);
        image.clone_into(&mut req.image);
        req.oci_spec = oci_spec;
        rpc!(
            self,
            create_container,
            "Container.CreateContainer",
            context(timeout),
            req
        )
    }

    /// `Container.StartContainer`.
    pub async fn start_container(
        &self,
        container_id: &str,
        timeout: Duration,
    ) -> Result<(), AgentClientError> {
        let mut req = StartContainerRequest::new();
        container_id.clone_into(&mut req.container_id);
        rpc!(
            self,
            start_container,
            "Container.StartContainer",
            context(timeout),
            req
        )
        .map(drop)
    }

    /// `Container.ExecProcess`: `process` is the OCI process object as JSON.
    pub async fn exec_process(
        &self,
        container_id: &str,
        exec_id: &str,
        process: Vec<u8>,
        timeout: Duration,
    ) -> Result<u32, AgentClientError> {
        if process.len() > MAX_OCI_SPEC {
            return Err(AgentClientError::SpecTooLarge);
        }
        let mut req = ExecProcessRequest::new();
        container_id.clone_into(&mut req.container_id);
        exec_id.clone_into(&mut req.exec_id);
        req.process = process;
        rpc!(
            self,
            exec_process,
            "Container.ExecProcess",
            context(timeout),
            req
        )
        .map(|r| r.pid)
    }

    /// `Container.SignalProcess`.
    pub async fn signal_process(
        &self,
        container_id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
        timeout: Duration,
    ) -> Result<(), AgentClientError> {
        let mut req = SignalProcessRequest::new();
        container_id.clone_into(&mut req.container_id);
        exec_id.clone_into(&mut req.exec_id);
        req.signal = signal;
        req.all = all;
        rpc!(
            self,
            signal_process,
            "Container.SignalProcess",
            context(timeout),
            req
        )
        .map(drop)
    }

    /// `Container.WaitProcess`: returns when the process exits.
    pub async fn wait_process(
        &self,
        container_id: &str,
        exec_id: &str,
    ) -> Result<WaitProcessResponse, AgentClientError> {
        let mut req = WaitProcessRequest::new();
        container_id.clone_into(&mut req.container_id);
        exec_id.clone_into(&mut req.exec_id);
        rpc!(
            self,
            wait_process,
            "Container.WaitProcess",
            no_deadline(),
            req
        )
    }

    /// `Container.WriteStdin`: at most [`MAX_STDIO_CHUNK`] bytes; returns how many were taken.
    pub async fn write_stdin(
        &self,
        container_id: &str,
        exec_id: &str,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, AgentClientError> {
        let mut req = WriteStreamRequest::new();
        container_id.clone_into(&mut req.container_id);
        exec_id.clone_into(&mut req.exec_id);
        req.data = data[..data.len().min(MAX_STDIO_CHUNK)].to_vec();
        let len = rpc!(
            self,
            write_stdin,
            "Container.WriteStdin",
            context(timeout),
            req
        )?
        .len;
        Ok(usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(req_len(data)))
    }

    /// `Container.CloseStdin`.
    pub async fn close_stdin(
        &self,
        container_id: &str,
        exec_id: &str,
        timeout: Duration,
    ) -> Result<(), AgentClientError> {
        let mut req = CloseStdinRequest::new();
        container_id.clone_into(&mut req.container_id);
        exec_id.clone_into(&mut req.exec_id);
        rpc!(
            self,
            close_stdin,
            "Container.CloseStdin",
            context(timeout),
            req
        )
        .map(drop)
    }

    /// `Container.ReadStdout` (or `ReadStderr` when `stderr`): a long-poll.
    pub async fn read_stream(
        &self,
        container_id: &str,
        exec_id: &str,
        stderr: bool,
        max_len: u32,
    ) -> Result<ReadStreamResponse, AgentClientError> {
        let mut req = ReadStreamRequest::new();
        container_id.clone_into(&mut req.container_id);
        exec_id.clone_into(&mut req.exec_id);
        req.max_len = max_len;
        if stderr {
            rpc!(
                self,
                read_stderr,
                "Container.ReadStderr",
                no_deadline(),
                req
            )
        } else {
            rpc!(
                self,
                read_stdout,
                "Container.ReadStdout",
                no_deadline(),
                req
            )
        }
    }

    /// `Container.TtyWinResize`.
    pub async fn tty_win_resize(
        &self,
        container_id: &str,
        exec_id: &str,
        rows: u32,
        columns: u32,
        timeout: Duration,
    ) -> Result<(), AgentClientError> {
        let mut req = TtyWinResizeRequest::new();
        container_id.clone_into(&mut req.container_id);
        exec_id.clone_into(&mut req.exec_id);
        req.rows = rows;
        req.columns = columns;
        rpc!(
            self,
            tty_win_resize,
            "Container.TtyWinResize",
            context(timeout),
            req
        )
        .map(drop)
    }

    /// `Container.ListProcesses`: guest PIDs.
    pub async fn list_processes(
        &self,
        container_id: &str,
        timeout: Duration,
    ) -> Result<Vec<u32>, AgentClientError> {
        let mut req = ListProcessesRequest::new();
        container_id.clone_into(&mut req.container_id);
        rpc!(
            self,
            list_processes,
            "Container.ListProcesses",
            context(timeout),
            req
        )
        .map(|r| r.pids)
    }

    /// `Container.StatsContainer`.
    pub async fn stats_container(
        &self,
        container_id: &str,
        timeout: Duration,
    ) -> Result<StatsContainerResponse, AgentClientError> {
        let mut req = StatsContainerRequest::new();
        container_id.clone_into(&mut req.container_id);
        rpc!(
            self,
            stats_container,
            "Container.StatsContainer",
            context(timeout),
            req
        )
    }

    /// `Container.RemoveContainer`.
    pub async fn remove_container(
        &self,
        container_id: &str,
        timeout_secs: u32,
        timeout: Duration,
    ) -> Result<(), AgentClientError> {
        let mut req = RemoveContainerRequest::new();
        container_id.clone_into(&mut req.container_id);
        req.timeout_secs = timeout_secs;
        rpc!(
            self,
            remove_container,
            "Container.RemoveContainer",
            context(timeout),
            req
        )
        .map(drop)
    }

    /// `Container.GetOOMEvent`: a long-poll.
    pub async fn get_oom_event(&self) -> Result<OOMEvent, AgentClientError> {
        rpc!(
            self,
            get_oom_event,
            "Container.GetOOMEvent",
            no_deadline(),
            GetOOMEventRequest::new()
        )
    }
}

fn req_len(data: &[u8]) -> usize {
    data.len().min(MAX_STDIO_CHUNK)
}

impl AgentClientError {
    /// The ttrpc status code and message, when the agent answered with an error status.
    pub fn status(&self) -> Option<(ttrpc::Code, &str)> {
        match self {
            AgentClientError::Rpc {
                source: ttrpc::Error::RpcStatus(s),
                ..
            } => Some((s.code(), s.message())),
            _ => None,
        }
    }
}

fn context(timeout: Duration) -> ttrpc::context::Context {
    ttrpc::context::with_timeout(i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[tokio::test]
    async fn times_out_when_no_hello_comes() {
        let (host, _guest) = tokio::io::duplex(64);
        let err = AgentClient::handshake(host, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(err, AgentClientError::Timeout(_)), "{err}");
    }

    #[tokio::test]
    async fn refuses_a_peer_that_is_not_the_agent() {
        let (host, mut guest) = tokio::io::duplex(64);
        guest.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await.unwrap();
        let err = AgentClient::handshake(host, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, AgentClientError::BadHello(ref got) if got.starts_with("SSH-2.0")));
    }

    #[tokio::test]
    async fn pull_refuses_references_the_agent_would_refuse_without_a_call() {
        // No agent on the other end: a call would hang until the timeout, so a quick error
        // shows the request was never sent.
        let (host, mut guest) = tokio::io::duplex(4096);
        guest.write_all(HELLO).await.unwrap();
        let client = AgentClient::handshake(host, Duration::from_secs(5))
            .await
            .unwrap();
        let long = "r/".to_owned() + &"a".repeat(MAX_IMAGE_REFERENCE);
        for bad in ["", long.as_str()] {
            let err = client
                .pull_image(bad, Duration::from_secs(30))
                .await
                .unwrap_err();
            assert!(matches!(err, AgentClientError::ImageReference), "{err}");
        }
    }

    #[tokio::test]
    async fn a_closed_connection_is_not_a_timeout() {
        let (host, guest) = tokio::io::duplex(64);
        drop(guest);
        let err = AgentClient::handshake(host, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, AgentClientError::Closed), "{err}");
    }

    #[tokio::test]
    async fn a_partial_hello_then_close_is_closed() {
        let (host, mut guest) = tokio::io::duplex(64);
        guest.write_all(&HELLO[..5]).await.unwrap();
        drop(guest);
        let err = AgentClient::handshake(host, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, AgentClientError::Closed), "{err}");
    }
}
