//! A process's stdio: pipes or a pty, the output held in bounded buffers that the host drains
//! with long-poll reads, and stdin writes.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::Notify;

/// Bytes of output held per stream before the process's writes block (back-pressure).
pub(crate) const STREAM_CAPACITY: usize = 1 << 20;
/// Bytes the pump reads at once.
const CHUNK: usize = 32 << 10;

#[derive(Debug, Default)]
struct StreamState {
    data: VecDeque<u8>,
    /// The writer side is gone: after the data, end of file.
    closed: bool,
    /// Nobody will read any more (the process is removed): the pump drops what it reads.
    abandoned: bool,
}

/// One output stream of a process: filled by a pump thread, drained by long-poll reads.
#[derive(Debug, Default)]
pub(crate) struct StreamBuffer {
    state: Mutex<StreamState>,
    readable: Notify,
    writable: Condvar,
}

impl StreamBuffer {
    /// An empty, open stream.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// An already closed stream (stderr of a terminal process).
    pub(crate) fn closed() -> Arc<Self> {
        let stream = Self::default();
        stream.close();
        Arc::new(stream)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StreamState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends `bytes`, waiting while the buffer is full (the process then blocks on its write,
    /// as with a pipe nobody reads).
    pub(crate) fn push_blocking(&self, mut bytes: &[u8]) {
        let mut state = self.lock();
        while !bytes.is_empty() {
            if state.abandoned {
                return;
            }
            let room = STREAM_CAPACITY.saturating_sub(state.data.len());
            if room == 0 {
                state = self
                    .writable
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            let n = room.min(bytes.len());
            state.data.extend(&bytes[..n]);
            bytes = &bytes[n..];
            self.readable.notify_waiters();
        }
    }

    /// The writer is gone: readers get what is left, then end of file.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.readable.notify_waiters();
    }

    /// Nobody reads any more: drop the data and let the pump drain the process freely.
    pub(crate) fn abandon(&self) {
        let mut state = self.lock();
        state.abandoned = true;
        state.data.clear();
        self.writable.notify_all();
        drop(state);
        self.readable.notify_waiters();
    }

    /// Waits until there are bytes (returns up to `max` of them) or the stream is closed and
    /// drained (returns `None`).
    pub(crate) async fn read(&self, max: usize) -> Option<Vec<u8>> {
        loop {
            let notified = self.readable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                if !state.data.is_empty() {
                    let n = max.min(state.data.len());
                    let out: Vec<u8> = state.data.drain(..n).collect();
                    self.writable.notify_all();
                    return Some(out);
                }
                if state.closed || state.abandoned {
                    return None;
                }
            }
            notified.await;
        }
    }
}

/// Copies `source` into `stream` on a thread of its own until end of file (or EIO, a pty whose
/// last slave closed), then closes the stream.
pub(crate) fn pump(mut source: File, stream: Arc<StreamBuffer>) {
    let spawned = std::thread::Builder::new()
        .name("stdio-pump".into())
        .spawn(move || {
            let mut buf = vec![0u8; CHUNK];
            loop {
                match source.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => stream.push_blocking(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            stream.close();
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start a stdio pump");
    }
}

/// Where the host's stdin bytes go.
#[derive(Debug)]
pub(crate) enum StdinWriter {
    /// The write end of the process's stdin pipe.
    Pipe(tokio::net::unix::pipe::Sender),
    /// The pty master (writes are typed at the terminal).
    Tty(Arc<File>),
}

/// The agent's ends of a process's stdio.
#[derive(Debug)]
pub(crate) struct ProcessIo {
    /// stdin, until closed.
    pub stdin: tokio::sync::Mutex<Option<StdinWriter>>,
    /// stdout, or the terminal's output.
    pub stdout: Arc<StreamBuffer>,
    /// stderr (closed at once for a terminal).
    pub stderr: Arc<StreamBuffer>,
    /// The pty master, for resizes.
    pub tty: Option<Arc<File>>,
}

/// The process's ends, given to the runner's first stage as its stdin, stdout and stderr.
#[derive(Debug)]
pub(crate) struct ChildStdio {
    /// stdin.
    pub stdin: Stdio,
    /// stdout.
    pub stdout: Stdio,
    /// stderr.
    pub stderr: Stdio,
}

/// Makes the stdio of a new process: three pipes, or a pty when `terminal`. Must run inside
/// the runtime (the stdin pipe registers with it).
pub(crate) fn make(terminal: bool) -> io::Result<(ProcessIo, ChildStdio)> {
    if terminal {
        return make_tty();
    }
    let (stdin_r, stdin_w) = io::pipe()?;
    let (stdout_r, stdout_w) = io::pipe()?;
    let (stderr_r, stderr_w) = io::pipe()?;
    let stdout = StreamBuffer::new();
    let stderr = StreamBuffer::new();
    pump(File::from(OwnedFd::from(stdout_r)), Arc::clone(&stdout));
    pump(File::from(OwnedFd::from(stderr_r)), Arc::clone(&stderr));
    let sender = tokio::net::unix::pipe::Sender::from_owned_fd(OwnedFd::from(stdin_w))?;
    Ok((
        ProcessIo {
            stdin: tokio::sync::Mutex::new(Some(StdinWriter::Pipe(sender))),
            stdout,
            stderr,
            tty: None,
        },
        ChildStdio {
            stdin: Stdio::from(stdin_r),
            stdout: Stdio::from(stdout_w),
            stderr: Stdio::from(stderr_w),
        },
    ))
}

fn make_tty() -> io::Result<(ProcessIo, ChildStdio)> {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY)
        .open(std::ffi::OsStr::from_bytes(name.as_bytes()))?;
    let master = File::from(master);
    let stdout = StreamBuffer::new();
    pump(master.try_clone()?, Arc::clone(&stdout));
    let master = Arc::new(master);
    Ok((
        ProcessIo {
            stdin: tokio::sync::Mutex::new(Some(StdinWriter::Tty(Arc::clone(&master)))),
            stdout,
            stderr: StreamBuffer::closed(),
            tty: Some(master),
        },
        ChildStdio {
            stdin: Stdio::from(slave.try_clone()?),
            stdout: Stdio::from(slave.try_clone()?),
            stderr: Stdio::from(slave),
        },
    ))
}

use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::OpenOptionsExt as _;

/// Writes host bytes to the process's stdin; returns how many were taken (`None`: closed).
pub(crate) async fn write_stdin(stdio: &ProcessIo, data: &[u8]) -> io::Result<Option<usize>> {
    use tokio::io::AsyncWriteExt as _;
    let mut stdin = stdio.stdin.lock().await;
    match stdin.as_mut() {
        None => Ok(None),
        Some(StdinWriter::Pipe(sender)) => {
            // Whatever the pipe takes now: a process that does not read cannot hold the call.
            Ok(Some(sender.write(data).await?))
        }
        Some(StdinWriter::Tty(master)) => {
            let master = Arc::clone(master);
            let data = data.to_vec();
            let n = data.len();
            tokio::task::spawn_blocking(move || (&*master).write_all(&data))
                .await
                .map_err(io::Error::other)??;
            Ok(Some(n))
        }
    }
}

/// Closes stdin: the pipe's write end goes (the reader sees end of file); on a terminal, the
/// end-of-file character is typed.
pub(crate) async fn close_stdin(stdio: &ProcessIo) -> io::Result<()> {
    let mut stdin = stdio.stdin.lock().await;
    if let Some(StdinWriter::Tty(master)) = stdin.take() {
        let master = Arc::clone(&master);
        tokio::task::spawn_blocking(move || (&*master).write_all(&[0x04]))
            .await
            .map_err(io::Error::other)??;
    }
    Ok(())
}

/// Sets the terminal's window size (the process gets SIGWINCH).
pub(crate) fn resize(stdio: &ProcessIo, rows: u16, columns: u16) -> io::Result<bool> {
    let Some(master) = &stdio.tty else {
        return Ok(false);
    };
    rustix::termios::tcsetwinsize(
        &**master,
        rustix::termios::Winsize {
            ws_row: rows,
            ws_col: columns,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_returns_what_is_there_then_eof_after_close() {
        let stream = StreamBuffer::new();
        stream.push_blocking(b"hello ");
        stream.push_blocking(b"world");
        assert_eq!(stream.read(3).await.unwrap(), b"hel");
        assert_eq!(stream.read(100).await.unwrap(), b"lo world");
        stream.close();
        assert_eq!(stream.read(100).await, None);
        assert_eq!(stream.read(100).await, None);
    }

    #[tokio::test]
    async fn a_long_poll_waits_for_data() {
        let stream = StreamBuffer::new();
        let writer = Arc::clone(&stream);
        let reader = tokio::spawn(async move { stream.read(10).await });
        tokio::task::yield_now().await;
        assert!(!reader.is_finished());
        std::thread::spawn(move || writer.push_blocking(b"late"))
            .join()
            .unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.unwrap(), b"late");
    }

    #[tokio::test]
    async fn data_written_before_close_is_still_read() {
        let stream = StreamBuffer::new();
        stream.push_blocking(b"last words");
        stream.close();
        assert_eq!(stream.read(100).await.unwrap(), b"last words");
        assert_eq!(stream.read(100).await, None);
    }

    #[tokio::test]
    async fn a_full_buffer_blocks_the_writer_until_read() {
        let stream = StreamBuffer::new();
        let writer = Arc::clone(&stream);
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&done);
        let thread = std::thread::spawn(move || {
            writer.push_blocking(&vec![7u8; STREAM_CAPACITY + 10]);
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!done.load(std::sync::atomic::Ordering::SeqCst));
        let first = stream.read(STREAM_CAPACITY).await.unwrap();
        assert_eq!(first.len(), STREAM_CAPACITY);
        thread.join().unwrap();
        assert_eq!(stream.read(100).await.unwrap(), vec![7u8; 10]);
    }

    #[tokio::test]
    async fn an_abandoned_stream_unblocks_its_writer_and_ends_reads() {
        let stream = StreamBuffer::new();
        let writer = Arc::clone(&stream);
        let thread =
            std::thread::spawn(move || writer.push_blocking(&vec![1u8; STREAM_CAPACITY * 2]));
        std::thread::sleep(std::time::Duration::from_millis(50));
        stream.abandon();
        thread.join().unwrap();
        assert_eq!(stream.read(10).await, None);
    }

    #[tokio::test]
    async fn pipes_carry_stdout_and_stdin() {
        let (io, child) = make(false).unwrap();
        let ChildStdio { stdout, .. } = child;
        // The child's stdout end, written by "the process".
        drop(stdout);
        assert_eq!(
            tokio::time::timeout(std::time::Duration::from_secs(5), io.stdout.read(10))
                .await
                .unwrap(),
            None
        );
        assert_eq!(write_stdin(&io, b"abc").await.unwrap(), Some(3));
        close_stdin(&io).await.unwrap();
        assert_eq!(write_stdin(&io, b"x").await.unwrap(), None);
        assert!(!resize(&io, 10, 20).unwrap());
    }

    #[tokio::test]
    async fn a_tty_has_one_output_stream_and_resizes() {
        let (io, _child) = make(true).unwrap();
        assert_eq!(io.stderr.read(10).await, None);
        assert!(resize(&io, 33, 101).unwrap());
        let size = rustix::termios::tcgetwinsize(&**io.tty.as_ref().unwrap()).unwrap();
        assert_eq!((size.ws_row, size.ws_col), (33, 101));
    }
}
