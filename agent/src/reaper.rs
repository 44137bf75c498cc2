//! Reaping: as PID 1 the agent inherits every orphan and must collect its exit status. Exits of
//! the processes the agent waits for (container processes, the runner's stages) are delivered
//! to their waiters, never lost: a status that arrives before anyone asks is kept until asked.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;
use tracing::{debug, warn};

/// Statuses of exited processes nobody asked for yet that are kept (the oldest go first).
const MAX_UNCLAIMED: usize = 1024;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl Exit {
    /// The shell's convention: the code, or 128 + the signal number.
    pub fn status(self) -> i32 {
        match self {
            Exit::Code(code) => code,
            Exit::Signal(signal) => 128 + signal,
        }
    }
}

#[derive(Debug, Default)]
struct Waits {
    waiting: HashMap<i32, oneshot::Sender<Exit>>,
    unclaimed: VecDeque<(i32, Exit)>,
}

/// Hands exit statuses from the reaping loop to whoever waits for a PID.
#[derive(Debug, Default)]
pub struct Reaper {
    waits: Mutex<Waits>,
}

impl Reaper {
    /// A reaper with no waiters.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waits> {
        self.waits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Resolves when `pid` exits (at once if it already did and was reaped).
    pub fn watch(&self, pid: i32) -> oneshot::Receiver<Exit> {
        let (tx, rx) = oneshot::channel();
        let mut waits = self.lock();
        if let Some(at) = waits.unclaimed.iter().position(|(p, _)| *p == pid) {
            if let Some((_, exit)) = waits.unclaimed.remove(at) {
                let _ = tx.send(exit);
            }
        } else {
            waits.waiting.insert(pid, tx);
        }
        rx
    }

    fn deliver(&self, pid: i32, exit: Exit) {
        let mut waits = self.lock();
        match waits.waiting.remove(&pid) {
            Some(tx) => {
                let _ = tx.send(exit);
            }
            None => {
                if waits.unclaimed.len() >= MAX_UNCLAIMED {
                    waits.unclaimed.pop_front();
                }
                waits.unclaimed.push_back((pid, exit));
            }
        }
    }

    /// Collects every child that has exited so far, without blocking.
    pub fn reap_exited(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
                Ok(WaitStatus::Exited(pid, code)) => {
                    debug!(pid = pid.as_raw(), code, "reaped child");
                    self.deliver(pid.as_raw(), Exit::Code(code));
                }
                Ok(WaitStatus::Signaled(pid, signal, _)) => {
                    debug!(pid = pid.as_raw(), ?signal, "reaped child");
                    self.deliver(pid.as_raw(), Exit::Signal(signal as i32));
                }
                Ok(status) => debug!(?status, "child status"),
                Err(error) => {
                    warn!(%error, "waitpid failed");
                    return;
                }
            }
        }
    }
}

/// Reaps exited children whenever SIGCHLD arrives and delivers their statuses through
/// `reaper`. Runs until the runtime stops.
pub async fn reap_children(reaper: Arc<Reaper>) {
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(stream) => stream,
        Err(error) => {
            warn!(%error, "cannot watch SIGCHLD; exited children will not be reaped");
            return;
        }
    };
    // Children that exited before the handler was installed.
    reaper.reap_exited();
    while sigchld.recv().await.is_some() {
        reaper.reap_exited();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_shell_convention() {
        assert_eq!(Exit::Code(7).status(), 7);
        assert_eq!(Exit::Signal(15).status(), 143);
        assert_eq!(Exit::Signal(9).status(), 137);
    }

    #[tokio::test]
    async fn an_exit_before_the_watch_is_kept_and_one_after_is_delivered() {
        let reaper = Reaper::new();
        reaper.deliver(10, Exit::Code(3));
        assert_eq!(reaper.watch(10).await.unwrap(), Exit::Code(3));
        let later = reaper.watch(11);
        reaper.deliver(11, Exit::Signal(9));
        assert_eq!(later.await.unwrap(), Exit::Signal(9));
        // Claimed once: a second watch of the same PID waits for a new process.
        let mut again = reaper.watch(10);
        assert!(again.try_recv().is_err());
    }

    #[test]
    fn unclaimed_statuses_are_bounded() {
        let reaper = Reaper::new();
        for pid in 0..i32::try_from(MAX_UNCLAIMED + 5).unwrap() {
            reaper.deliver(pid, Exit::Code(0));
        }
        assert_eq!(reaper.lock().unclaimed.len(), MAX_UNCLAIMED);
        assert_eq!(reaper.lock().unclaimed.front().unwrap().0, 5);
    }
}
