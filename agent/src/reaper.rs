//! Reaping: as PID 1 the agent inherits every orphan and must collect its exit status.

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{debug, warn};

/// Reaps exited children whenever SIGCHLD arrives. Runs until the runtime stops.
pub async fn reap_children() {
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(stream) => stream,
        Err(error) => {
            warn!(%error, "cannot watch SIGCHLD; exited children will not be reaped");
            return;
        }
    };
    while sigchld.recv().await.is_some() {
        reap_exited();
    }
}

/// Collects every child that has exited so far, without blocking.
fn reap_exited() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
            Ok(status) => debug!(?status, "reaped child"),
            Err(error) => {
                warn!(%error, "waitpid failed");
                return;
            }
        }
    }
}
