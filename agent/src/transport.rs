//! The agent's side of the transport: a virtio-serial port or vsock, turned into a ttrpc
//! [`Listener`] so that one ttrpc server serves both.
//!
//! Every connection starts with the agent writing [`HELLO`]: over virtio-serial the host cannot
//! see when the guest opens its end, so it waits for these bytes before sending a request.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::StreamExt as _;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use thiserror::Error;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};
use tsuba_protocols::agent::{HELLO, SERIAL_PORT_NAME, VSOCK_PORT};
use ttrpc::asynchronous::transport::Listener;

use crate::config::Transport;

/// How long the agent waits for its virtio-serial port to appear after boot.
const PORT_APPEAR_TIMEOUT: Duration = Duration::from_secs(30);
const PORT_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Pause before reopening a port whose open or hello failed, so a persistent fault cannot spin.
const REOPEN_BACKOFF: Duration = Duration::from_millis(200);

/// Setting up the transport failed.
#[derive(Debug, Error)]
pub enum TransportError {
    /// No virtio-serial port with the agent's name showed up.
    #[error(
        "no virtio-serial port named {name:?} appeared within {timeout:?}; \
         does the launcher add the agent port?"
    )]
    PortMissing {
        /// The port name searched for.
        name: String,
        /// How long the agent waited.
        timeout: Duration,
    },
    /// sysfs could not be read while looking for the port.
    #[error("cannot list virtio-serial ports under {0}")]
    Sysfs(PathBuf, #[source] io::Error),
    /// Binding the vsock listener failed.
    #[error("cannot listen on vsock port {port}")]
    Vsock {
        /// The vsock port.
        port: u32,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Finds the device node of the virtio-serial port called `name`, by its sysfs `name` attribute.
///
/// Returns `Ok(None)` while no such port exists yet.
pub fn find_serial_port(sys_root: &Path, name: &str) -> Result<Option<PathBuf>, TransportError> {
    let class = sys_root.join("class/virtio-ports");
    let entries = match std::fs::read_dir(&class) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TransportError::Sysfs(class, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| TransportError::Sysfs(class.clone(), e))?;
        let Ok(port_name) = std::fs::read_to_string(entry.path().join("name")) else {
            continue;
        };
        if port_name.trim_end() == name {
            return Ok(Some(Path::new("/dev").join(entry.file_name())));
        }
    }
    Ok(None)
}

/// Builds the ttrpc listener for `transport`.
pub async fn listener(transport: Transport) -> Result<Listener, TransportError> {
    match transport {
        Transport::Serial => {
            let device = wait_for_serial_port(Path::new("/sys"), SERIAL_PORT_NAME).await?;
            info!(device = %device.display(), "agent API on virtio-serial");
            Ok(serial_listener(device))
        }
        Transport::Vsock => {
            let addr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, VSOCK_PORT);
            let listener =
                tokio_vsock::VsockListener::bind(addr).map_err(|source| TransportError::Vsock {
                    port: VSOCK_PORT,
                    source,
                })?;
            info!(port = VSOCK_PORT, "agent API on vsock");
            Ok(vsock_listener(listener))
        }
    }
}

async fn wait_for_serial_port(sys_root: &Path, name: &str) -> Result<PathBuf, TransportError> {
    let deadline = tokio::time::Instant::now() + PORT_APPEAR_TIMEOUT;
    loop {
        if let Some(device) = find_serial_port(sys_root, name)? {
            return Ok(device);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TransportError::PortMissing {
                name: name.to_owned(),
                timeout: PORT_APPEAR_TIMEOUT,
            });
        }
        tokio::time::sleep(PORT_POLL_INTERVAL).await;
    }
}

/// A listener that yields one connection at a time over a virtio-serial port: the port can be
/// open only once, so the next connection is opened when the previous one is dropped.
pub(crate) fn serial_listener(device: PathBuf) -> Listener {
    let one_at_a_time = Arc::new(Semaphore::new(1));
    let connections = futures::stream::unfold(
        (device, one_at_a_time),
        |(device, one_at_a_time)| async move {
            loop {
                let Ok(permit) = Arc::clone(&one_at_a_time).acquire_owned().await else {
                    return None;
                };
                match SerialPort::open(&device, permit).await {
                    Ok(port) => return Some((Ok(port), (device, one_at_a_time))),
                    Err(error) => {
                        warn!(device = %device.display(), %error, "cannot open agent port");
                        tokio::time::sleep(REOPEN_BACKOFF).await;
                    }
                }
            }
        },
    );
    Listener::new(connections)
}

fn vsock_listener(listener: tokio_vsock::VsockListener) -> Listener {
    let connections = futures::stream::unfold(listener, |listener| async move {
        loop {
            match listener.accept().await {
                Ok((mut stream, peer)) => match stream.write_all(HELLO).await {
                    Ok(()) => return Some((Ok(stream), listener)),
                    Err(error) => warn!(%peer, %error, "host left before the hello"),
                },
                Err(error) => {
                    warn!(%error, "vsock accept failed");
                    tokio::time::sleep(REOPEN_BACKOFF).await;
                }
            }
        }
    });
    Listener::new(connections.boxed())
}

/// An open virtio-serial port as a non-blocking byte stream. Holding it holds the port's permit.
pub(crate) struct SerialPort {
    fd: AsyncFd<OwnedFd>,
    _permit: OwnedSemaphorePermit,
}

impl SerialPort {
    async fn open(device: &Path, permit: OwnedSemaphorePermit) -> io::Result<Self> {
        let flags = OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
        let fd = open(device, flags, Mode::empty())?;
        #[allow(
            deprecated,
            reason = "AsyncFd::register is unsafe and this crate forbids unsafe; the deprecation \
                      is about fds closed behind tokio's back, which cannot happen here because \
                      AsyncFd owns the OwnedFd and closes it only after deregistering"
        )]
        let fd = AsyncFd::new(fd)?;
        let mut port = SerialPort {
            fd,
            _permit: permit,
        };
        port.write_all(HELLO).await?;
        Ok(port)
    }
}

impl AsyncRead for SerialPort {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let mut guard = ready!(this.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| Ok(nix::unistd::read(fd.get_ref(), unfilled)?)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(error)) => return Poll::Ready(Err(error)),
                Err(_would_block) => {}
            }
        }
    }
}

impl AsyncWrite for SerialPort {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            let mut guard = ready!(this.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| Ok(nix::unistd::write(fd.get_ref(), buf)?)) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => {}
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_port(sys: &Path, vport: &str, name: &str) {
        let dir = sys.join("class/virtio-ports").join(vport);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("name"), format!("{name}\n")).unwrap();
    }

    #[test]
    fn finds_the_port_by_its_name_not_its_number() {
        let sys = tempfile::tempdir().unwrap();
        fake_port(sys.path(), "vport0p1", "tsuba.teesim");
        fake_port(sys.path(), "vport0p2", "tsuba.agent");
        let found = find_serial_port(sys.path(), "tsuba.agent").unwrap();
        assert_eq!(found, Some(PathBuf::from("/dev/vport0p2")));
    }

    #[test]
    fn no_port_yet_is_none_not_an_error() {
        let sys = tempfile::tempdir().unwrap();
        assert_eq!(find_serial_port(sys.path(), "tsuba.agent").unwrap(), None);
        fake_port(sys.path(), "vport0p1", "other");
        assert_eq!(find_serial_port(sys.path(), "tsuba.agent").unwrap(), None);
    }

    #[tokio::test]
    async fn waiting_for_a_port_that_never_comes_times_out() {
        tokio::time::pause();
        let sys = tempfile::tempdir().unwrap();
        let err = wait_for_serial_port(sys.path(), "tsuba.agent")
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::PortMissing { .. }), "{err}");
    }
}
