//! The agent's side of the runner: starts a process in a container through two stages of the
//! agent's own binary (see `stage.rs`), and holds it stopped before exec until started.
//!
//! The agent is multi-threaded, so it never forks itself to set up a container: it spawns its
//! own binary (`/proc/self/exe`) as stage 1, a fresh single-threaded process, which joins the
//! container's cgroup, unshares (create) or joins (exec) the namespaces and spawns stage 2, PID
//! 1 of the new PID namespace; stage 1 then exits and stage 2 is reparented to the agent (PID 1,
//! or a child subreaper in tests), whose reaper collects its status. Stage 2 sets up the root
//! and the process, reports ready, waits for the start byte and execs the program. The stages
//! talk to the agent over a Unix socket in a private folder, in framed messages.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;

use super::spec::{MountPlan, Namespaces, ProcessPlan};
use super::stdio::ChildStdio;
use crate::reaper::{Exit, Reaper};

/// argv[1] of the first stage.
pub(crate) const STAGE1_ARG: &str = "__tsuba-container-stage1";
/// argv[1] of the second stage.
pub(crate) const STAGE2_ARG: &str = "__tsuba-container-stage2";
/// Longest frame between the agent and a stage.
const MAX_FRAME: usize = 4 << 20;
/// How long the stages may take to set a process up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Frame kinds.
pub(crate) const FRAME_PLAN: u8 = b'P';
pub(crate) const FRAME_PID: u8 = b'I';
pub(crate) const FRAME_READY: u8 = b'R';
pub(crate) const FRAME_ERROR: u8 = b'E';
pub(crate) const FRAME_START: u8 = b'S';

/// Starting a process failed.
#[derive(Debug, Error)]
pub enum RunnerError {
    /// The control socket or the first stage could not be set up.
    #[error("cannot start the container runner")]
    Spawn(#[source] io::Error),
    /// A stage reported an error while setting the process up.
    #[error("setting up the process failed: {0}")]
    Stage(String),
    /// A stage stopped answering or broke the framing.
    #[error("the container runner stopped answering ({0})")]
    Protocol(&'static str),
    /// The stages took longer than allowed.
    #[error("setting up the process took more than {SETUP_TIMEOUT:?}")]
    Timeout,
}

/// What the first stage does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Stage1Plan {
    /// cgroup folder the process joins (its `cgroup.procs`).
    pub cgroup: PathBuf,
    /// The namespaces the container has beyond mount and PID.
    pub namespaces: Namespaces,
    /// For an exec: the container's init PID, whose namespaces are joined; `None` creates new
    /// ones.
    pub join: Option<i32>,
}

/// The container's root, set up by the second stage of an init process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RootPlan {
    /// The merged layer.
    pub rootfs: PathBuf,
    /// Spec mounts, checked.
    pub mounts: Vec<MountPlan>,
    /// Read-only root.
    pub readonly: bool,
    /// Masked paths.
    pub masked_paths: Vec<PathBuf>,
    /// Read-only paths.
    pub readonly_paths: Vec<PathBuf>,
    /// Hostname (UTS namespace).
    pub hostname: Option<String>,
    /// An empty folder on the root mount where the root is moved before it replaces `/`.
    pub holder: PathBuf,
}

/// What the second stage does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Stage2Plan {
    /// Set up this root (init), or `None` for an exec (joins `join`'s namespaces).
    pub root: Option<RootPlan>,
    /// The init PID whose namespaces an exec joins.
    pub join: Option<i32>,
    /// The namespaces the container has beyond mount and PID.
    pub namespaces: Namespaces,
    /// The program and its credentials.
    pub process: ProcessPlan,
    /// Installed right before the program is executed.
    pub seccomp: Option<super::seccomp::SeccompPlan>,
}

/// Writes one frame.
pub(crate) fn write_frame(out: &mut impl Write, kind: u8, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| io::Error::other("frame too large"))?;
    let mut head = [0u8; 5];
    head[0] = kind;
    head[1..].copy_from_slice(&len.to_le_bytes());
    out.write_all(&head)?;
    out.write_all(body)?;
    out.flush()
}

/// Reads one frame: `None` at end of file before a frame.
pub(crate) fn read_frame(input: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match input.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::other("frame too large"));
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body)?;
    Ok(Some((head[0], body)))
}

async fn write_frame_async(out: &mut UnixStream, kind: u8, body: &[u8]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(body.len() + 5);
    write_frame(&mut buf, kind, body)?;
    out.write_all(&buf).await
}

async fn read_frame_async(input: &mut UnixStream) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match input.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::other("frame too large"));
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body).await?;
    Ok(Some((head[0], body)))
}

/// A frame that must be `kind`; an error frame becomes [`RunnerError::Stage`].
async fn expect(input: &mut UnixStream, kind: u8) -> Result<Vec<u8>, RunnerError> {
    match read_frame_async(input).await {
        Ok(Some((k, body))) if k == kind => Ok(body),
        Ok(Some((FRAME_ERROR, body))) => Err(RunnerError::Stage(
            String::from_utf8_lossy(&body).chars().take(1000).collect(),
        )),
        Ok(Some(_)) => Err(RunnerError::Protocol("unexpected frame")),
        Ok(None) => Err(RunnerError::Protocol("a stage exited early")),
        Err(_) => Err(RunnerError::Protocol("control socket error")),
    }
}

/// Starts processes in containers.
#[derive(Debug)]
pub struct Runner {
    exe: PathBuf,
    control_dir: PathBuf,
    root_holder: PathBuf,
    reaper: Arc<Reaper>,
    next: AtomicU64,
}

/// A process set up and waiting for its start byte.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// Its PID as the agent sees it.
    pub pid: i32,
    /// Resolves when it exits.
    pub exit: oneshot::Receiver<Exit>,
    control: UnixStream,
}

impl Runner {
    /// A runner that spawns `exe` (the agent binary) for its stages, with control sockets in
    /// `control_dir`; `root_holder` is an empty folder directly on the root mount (see
    /// `stage::enter_root`), created if missing.
    pub fn new(
        exe: PathBuf,
        control_dir: PathBuf,
        root_holder: PathBuf,
        reaper: Arc<Reaper>,
    ) -> Self {
        Runner {
            exe,
            control_dir,
            root_holder,
            reaper,
            next: AtomicU64::new(0),
        }
    }

    /// Sets a process up (stage 1 then stage 2) and returns it stopped before exec.
    /// The folder a container's root passes through.
    pub(crate) fn root_holder(&self) -> &Path {
        &self.root_holder
    }

    pub(crate) async fn prepare(
        &self,
        stage1: &Stage1Plan,
        stage2: &Stage2Plan,
        stdio: ChildStdio,
    ) -> Result<Prepared, RunnerError> {
        super::rootfs::create_private_dir(&self.control_dir).map_err(RunnerError::Spawn)?;
        super::rootfs::create_private_dir(&self.root_holder).map_err(RunnerError::Spawn)?;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let socket = self.control_dir.join(format!("{n}.sock"));
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).map_err(RunnerError::Spawn)?;
        let result = tokio::time::timeout(
            SETUP_TIMEOUT,
            self.run_stages(&listener, &socket, stage1, stage2, stdio),
        )
        .await;
        let _ = std::fs::remove_file(&socket);
        result.map_err(|_| RunnerError::Timeout)?
    }

    async fn run_stages(
        &self,
        listener: &UnixListener,
        socket: &Path,
        stage1: &Stage1Plan,
        stage2: &Stage2Plan,
        stdio: ChildStdio,
    ) -> Result<Prepared, RunnerError> {
        let child = Command::new(&self.exe)
            .arg(STAGE1_ARG)
            .arg(socket)
            .stdin(stdio.stdin)
            .stdout(stdio.stdout)
            .stderr(stdio.stderr)
            .env_clear()
            .spawn()
            .map_err(RunnerError::Spawn)?;
        let stage1_pid = i32::try_from(child.id()).map_err(|_| RunnerError::Protocol("pid"))?;
        let stage1_exit = self.reaper.watch(stage1_pid);
        tracing::debug!(stage1_pid, "runner stage 1 started");
        drop(child);
        let (mut first, _) = listener.accept().await.map_err(RunnerError::Spawn)?;
        let plan = serde_json::to_vec(stage1).map_err(|e| RunnerError::Spawn(e.into()))?;
        write_frame_async(&mut first, FRAME_PLAN, &plan)
            .await
            .map_err(RunnerError::Spawn)?;
        let pid = expect(&mut first, FRAME_PID).await?;
        let pid: i32 = std::str::from_utf8(&pid)
            .ok()
            .and_then(|p| p.parse().ok())
            .ok_or(RunnerError::Protocol("bad pid"))?;
        let exit = self.reaper.watch(pid);
        tracing::debug!(pid, "runner stage 2 started");
        match stage1_exit.await {
            Ok(Exit::Code(0)) => {}
            _ => return Err(RunnerError::Protocol("stage 1 failed")),
        }
        let (mut second, _) = listener.accept().await.map_err(RunnerError::Spawn)?;
        let plan = serde_json::to_vec(stage2).map_err(|e| RunnerError::Spawn(e.into()))?;
        write_frame_async(&mut second, FRAME_PLAN, &plan)
            .await
            .map_err(RunnerError::Spawn)?;
        if let Err(error) = expect(&mut second, FRAME_READY).await {
            // It failed while setting up: it exits on its own; make sure.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            return Err(error);
        }
        Ok(Prepared {
            pid,
            exit,
            control: second,
        })
    }
}

impl Prepared {
    /// Lets the process exec its program; returns once it did (or could not).
    pub(crate) async fn start(mut self) -> Result<oneshot::Receiver<Exit>, RunnerError> {
        write_frame_async(&mut self.control, FRAME_START, &[])
            .await
            .map_err(|_| RunnerError::Protocol("the process is gone"))?;
        // The control socket closes on exec; an error frame says why exec failed.
        let answer = tokio::time::timeout(SETUP_TIMEOUT, read_frame_async(&mut self.control))
            .await
            .map_err(|_| RunnerError::Timeout)?;
        match answer {
            Ok(None) => Ok(self.exit),
            Ok(Some((FRAME_ERROR, body))) => Err(RunnerError::Stage(
                String::from_utf8_lossy(&body).chars().take(1000).collect(),
            )),
            _ => Err(RunnerError::Protocol("unexpected answer to start")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_are_bounded() {
        let mut buf = Vec::new();
        write_frame(&mut buf, FRAME_PID, b"42").unwrap();
        write_frame(&mut buf, FRAME_READY, b"").unwrap();
        let mut input = &buf[..];
        assert_eq!(
            read_frame(&mut input).unwrap(),
            Some((FRAME_PID, b"42".to_vec()))
        );
        assert_eq!(read_frame(&mut input).unwrap(), Some((FRAME_READY, vec![])));
        assert_eq!(read_frame(&mut input).unwrap(), None);
        let huge = [FRAME_PLAN, 0xff, 0xff, 0xff, 0xff];
        assert!(read_frame(&mut &huge[..]).is_err());
        let truncated = [FRAME_PLAN, 4, 0, 0, 0, b'a'];
        assert!(read_frame(&mut &truncated[..]).is_err());
    }
}
