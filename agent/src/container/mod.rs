//! Containers in the guest: the pod's images pulled once each, a writable layer per container,
//! namespaces and a cgroup per container, processes started by the agent's own runner.

mod cgroup;
mod image_config;
mod rootfs;
mod runner;
mod seccomp;
mod spec;
mod stage;
mod stdio;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{Mutex, OnceCell, mpsc, watch};
use tracing::{info, warn};

pub use cgroup::{CGROUP_MOUNT, CGROUP_PARENT, CgroupError, CgroupRoot};
pub(crate) use cgroup::{Cgroup, CgroupStats};
pub use image_config::ImageDefaults;
pub use rootfs::RootfsError;
pub use runner::{Runner, RunnerError};

pub use spec::SpecError;
pub use stage::run_if_stage;
pub(crate) use stdio::{close_stdin, resize, write_stdin};

use crate::pull::{GuestPullError, GuestPuller};
use crate::reaper::Exit;
use runner::{Prepared, RootPlan, Stage1Plan, Stage2Plan};
use stdio::ProcessIo;

/// Containers one guest may hold at once.
pub(crate) const MAX_CONTAINERS: usize = 64;
/// Exec processes one container may hold at once (exited ones count until it is removed).
pub(crate) const MAX_EXECS: usize = 128;
/// How often a container's memory.events is read for OOM kills.
const OOM_POLL: Duration = Duration::from_millis(200);
/// OOM events kept until the host asks.
const OOM_QUEUE: usize = 256;

/// A container request that failed.
#[derive(Debug, Error)]
pub enum ContainerError {
    /// The spec or process is refused or malformed.
    #[error("the OCI spec is not accepted")]
    Spec(#[from] SpecError),
    /// A container or exec ID does not follow containerd's identifier rule.
    #[error("{0} is not a valid ID (1 to 76 bytes of [A-Za-z0-9_.-], starting alphanumeric)")]
    BadId(&'static str),
    /// A request field is out of bounds.
    #[error("{0}")]
    BadRequest(String),
    /// The container ID is taken.
    #[error("container {0} already exists")]
    Exists(String),
    /// No such container or process.
    #[error("no container {0}")]
    NoContainer(String),
    /// No such exec.
    #[error("container {0} has no process {1}")]
    NoProcess(String, String),
    /// The exec ID is taken in the container.
    #[error("container {0} already has a process {1}")]
    ExecExists(String, String),
    /// The request does not fit the process's state.
    #[error("{0}")]
    State(String),
    /// Too many containers or execs.
    #[error("{0}")]
    Exhausted(String),
    /// The image could not be pulled.
    #[error("pulling the container's image failed")]
    Pull(#[source] GuestPullError),
    /// The guest cannot run containers (cgroup v2 setup failed at boot).
    #[error("containers cannot run in this guest: {0}")]
    Unavailable(String),
    /// The cgroup could not be made or used.
    #[error("the container's cgroup failed")]
    Cgroup(#[from] CgroupError),
    /// The writable layer could not be made.
    #[error("the container's root failed")]
    Rootfs(#[from] RootfsError),
    /// The runner failed to set the process up.
    #[error("the container's process could not start")]
    Runner(#[from] RunnerError),
    /// Stdio could not be set up or used.
    #[error("the process's stdio failed")]
    Stdio(#[source] std::io::Error),
    /// A task failed.
    #[error("an agent task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// A pulled image the pod's containers share (read-only lower layer).
#[derive(Debug)]
pub struct PulledImage {
    /// Manifest digest.
    pub manifest_digest: String,
    /// The unpacked rootfs.
    pub rootfs: PathBuf,
    /// Entrypoint, command, env, working dir, user.
    pub defaults: ImageDefaults,
    /// Where the pull's time went.
    pub timings: crate::PullTimings,
}

/// How a process ended, as WaitProcess answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Code, or 128 + signal.
    pub status: i32,
    /// Killed by the OOM killer.
    pub oom_killed: bool,
}

/// A process of a container (init or exec).
#[derive(Debug)]
pub struct Process {
    /// Its PID as the agent sees it.
    pub pid: i32,
    /// Its stdio.
    pub(crate) io: ProcessIo,
    exit: watch::Receiver<Option<ExitInfo>>,
}

impl Process {
    /// Waits for the exit.
    pub async fn wait(&self) -> ExitInfo {
        let mut rx = self.exit.clone();
        loop {
            if let Some(info) = *rx.borrow_and_update() {
                return info;
            }
            if rx.changed().await.is_err() {
                return ExitInfo {
                    status: 255,
                    oom_killed: false,
                };
            }
        }
    }

    /// The exit, if it happened.
    pub fn exited(&self) -> Option<ExitInfo> {
        *self.exit.borrow()
    }
}

/// One container.
#[derive(Debug)]
pub(crate) struct Container {
    id: String,
    cgroup: Cgroup,
    layer: rootfs::Layer,
    namespaces: spec::Namespaces,
    /// The spec's seccomp profile, for the init process and every exec.
    seccomp: Option<seccomp::SeccompPlan>,
    init: Arc<Process>,
    pending: Mutex<Option<(Prepared, watch::Sender<Option<ExitInfo>>)>>,
    execs: std::sync::Mutex<HashMap<String, Arc<Process>>>,
    manifest_digest: String,
}

/// Everything about the pod's containers.
pub struct Containers {
    puller: Arc<GuestPuller>,
    images: Mutex<HashMap<String, Arc<OnceCell<Arc<PulledImage>>>>>,
    containers: std::sync::Mutex<HashMap<String, Arc<Container>>>,
    runner: Runner,
    cgroups: Result<CgroupRoot, String>,
    state_dir: PathBuf,
    oom_tx: mpsc::Sender<String>,
    oom_rx: Mutex<mpsc::Receiver<String>>,
    pull_hook: Option<PullHook>,
}

/// Stands in for the registry pull (tests of the runner on the host).
pub type PullHook = Arc<dyn Fn(&str) -> Result<PulledImage, GuestPullError> + Send + Sync>;

impl std::fmt::Debug for Containers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containers")
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

/// The result of CreateContainer.
#[derive(Debug, Clone)]
pub struct Created {
    /// Init PID.
    pub pid: u32,
    /// Manifest digest of the image.
    pub manifest_digest: String,
    /// Whether this call pulled the image.
    pub pulled: bool,
    /// The pull's timings when this call pulled the image, else zero.
    pub pull_timings: crate::PullTimings,
    /// The container's layer, cgroup, namespaces and stopped init process.
    pub setup: std::time::Duration,
}

fn check_id(what: &'static str, id: &str) -> Result<(), ContainerError> {
    if tsuba_protocols::agent::is_valid_id(id) {
        Ok(())
    } else {
        Err(ContainerError::BadId(what))
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Containers {
    /// The pod's container state: layers and control sockets under `state_dir`, cgroups under
    /// `cgroups` (the error says why containers cannot run), images pulled with `puller`.
    pub fn new(
        puller: Arc<GuestPuller>,
        runner: Runner,
        cgroups: Result<CgroupRoot, String>,
        state_dir: PathBuf,
    ) -> Self {
        let (oom_tx, oom_rx) = mpsc::channel(OOM_QUEUE);
        Containers {
            puller,
            images: Mutex::new(HashMap::new()),
            containers: std::sync::Mutex::new(HashMap::new()),
            runner,
            cgroups,
            state_dir,
            oom_tx,
            oom_rx: Mutex::new(oom_rx),
            pull_hook: None,
        }
    }

    /// Replaces registry pulls by `hook` (host tests of the runner: no broker, no registry).
    pub fn with_pull_hook(mut self, hook: PullHook) -> Self {
        self.pull_hook = Some(hook);
        self
    }

    fn get(&self, id: &str) -> Result<Arc<Container>, ContainerError> {
        check_id("container_id", id)?;
        lock(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| ContainerError::NoContainer(id.to_owned()))
    }

    fn process(&self, id: &str, exec_id: &str) -> Result<Arc<Process>, ContainerError> {
        let container = self.get(id)?;
        if exec_id.is_empty() {
            return Ok(Arc::clone(&container.init));
        }
        check_id("exec_id", exec_id)?;
        lock(&container.execs)
            .get(exec_id)
            .cloned()
            .ok_or_else(|| ContainerError::NoProcess(id.to_owned(), exec_id.to_owned()))
    }

    /// The image, pulled once per reference: concurrent creates wait for one pull; a failed
    /// pull is not remembered (the next create tries again).
    async fn image(&self, reference: &str) -> Result<(Arc<PulledImage>, bool), ContainerError> {
        let cell = {
            let mut images = self.images.lock().await;
            Arc::clone(images.entry(reference.to_owned()).or_default())
        };
        let mut pulled = false;
        let image = cell
            .get_or_try_init(|| async {
                pulled = true;
                self.pull(reference).await.map(Arc::new)
            })
            .await?;
        Ok((Arc::clone(image), pulled))
    }

    async fn pull(&self, reference: &str) -> Result<PulledImage, ContainerError> {
        if let Some(hook) = &self.pull_hook {
            return hook(reference).map_err(ContainerError::Pull);
        }
        // The pull future is not `Send` (see the Image service): it runs on a blocking thread.
        let puller = Arc::clone(&self.puller);
        let runtime = tokio::runtime::Handle::current();
        let image = reference.to_owned();
        let summary = tokio::task::spawn_blocking(move || runtime.block_on(puller.pull(&image)))
            .await
            .map_err(ContainerError::Task)?
            .map_err(ContainerError::Pull)?;
        Ok(PulledImage {
            manifest_digest: summary.manifest_digest,
            rootfs: summary.rootfs,
            defaults: ImageDefaults::from_config(&summary.image_config.extra),
            timings: summary.timings,
        })
    }

    /// CreateContainer: pull, layer, cgroup, init process stopped before exec.
    pub async fn create(
        &self,
        id: &str,
        image: &str,
        oci_spec: &[u8],
    ) -> Result<Created, ContainerError> {
        check_id("container_id", id)?;
        let plan = spec::parse_container_spec(oci_spec)?;
        let cgroups = self
            .cgroups
            .as_ref()
            .map_err(|why| ContainerError::Unavailable(why.clone()))?;
        {
            let containers = lock(&self.containers);
            if containers.contains_key(id) {
                return Err(ContainerError::Exists(id.to_owned()));
            }
            if containers.len() >= MAX_CONTAINERS {
                return Err(ContainerError::Exhausted(format!(
                    "this guest already runs {MAX_CONTAINERS} containers"
                )));
            }
        }
        let (pulled_image, pulled) = self.image(image).await?;
        let setting_up = std::time::Instant::now();
        let dir = self.state_dir.join("containers").join(id);
        if dir.exists() {
            return Err(ContainerError::Exists(id.to_owned()));
        }
        let layer = rootfs::mount_layer(&pulled_image.rootfs, &dir)?;
        let cleanup_layer = |layer: &rootfs::Layer| {
            if let Err(error) = rootfs::remove_layer(layer) {
                warn!(%error, "cannot remove a failed container's layer");
            }
        };
        let process = match image_config::apply_defaults(
            plan.process.clone(),
            &pulled_image.defaults,
            &layer.rootfs,
        ) {
            Ok(p) => p,
            Err(e) => {
                cleanup_layer(&layer);
                return Err(e.into());
            }
        };
        let cgroup = match cgroups.create(id, &plan.limits) {
            Ok(c) => c,
            Err(e) => {
                cleanup_layer(&layer);
                return Err(e.into());
            }
        };
        let result = self.prepare_init(&plan, process, &layer, &cgroup).await;
        let (prepared, io) = match result {
            Ok(ok) => ok,
            Err(e) => {
                let _ = cgroup.kill_all();
                cleanup_layer(&layer);
                let _ = cgroup.remove();
                return Err(e);
            }
        };
        let (exit_tx, exit_rx) = watch::channel(None);
        let pid = prepared.pid;
        let container = Arc::new(Container {
            id: id.to_owned(),
            cgroup,
            layer,
            namespaces: plan.namespaces,
            seccomp: plan.seccomp.clone(),
            init: Arc::new(Process {
                pid,
                io,
                exit: exit_rx,
            }),
            pending: Mutex::new(Some((prepared, exit_tx))),
            execs: std::sync::Mutex::new(HashMap::new()),
            manifest_digest: pulled_image.manifest_digest.clone(),
        });
        lock(&self.containers).insert(id.to_owned(), Arc::clone(&container));
        info!(container = id, pid, pulled, "container created");
        Ok(Created {
            pid: u32::try_from(pid).unwrap_or(0),
            manifest_digest: pulled_image.manifest_digest.clone(),
            pulled,
            pull_timings: if pulled {
                pulled_image.timings
            } else {
                crate::PullTimings::default()
            },
            setup: setting_up.elapsed(),
        })
    }

    async fn prepare_init(
        &self,
        plan: &spec::ContainerPlan,
        process: spec::ProcessPlan,
        layer: &rootfs::Layer,
        cgroup: &Cgroup,
    ) -> Result<(Prepared, ProcessIo), ContainerError> {
        let (io, child) = stdio::make(process.terminal).map_err(ContainerError::Stdio)?;
        let stage1 = Stage1Plan {
            cgroup: cgroup.path().to_owned(),
            namespaces: plan.namespaces,
            join: None,
        };
        let stage2 = Stage2Plan {
            root: Some(RootPlan {
                rootfs: layer.rootfs.clone(),
                mounts: plan.mounts.clone(),
                readonly: plan.readonly_root,
                masked_paths: plan.masked_paths.clone(),
                readonly_paths: plan.readonly_paths.clone(),
                hostname: plan.hostname.clone(),
                holder: self.runner.root_holder().to_owned(),
            }),
            join: None,
            namespaces: plan.namespaces,
            process,
            seccomp: plan.seccomp.clone(),
        };
        let prepared = self.runner.prepare(&stage1, &stage2, child).await?;
        Ok((prepared, io))
    }

    /// StartContainer: the init process execs its program.
    pub async fn start(&self, id: &str) -> Result<(), ContainerError> {
        let container = self.get(id)?;
        let Some((prepared, exit_tx)) = container.pending.lock().await.take() else {
            return Err(ContainerError::State(format!(
                "container {id} was already started"
            )));
        };
        let exit = prepared.start().await?;
        self.watch_exit(&container, exit, exit_tx);
        self.watch_oom(&container);
        Ok(())
    }

    /// Delivers the exit of a process of `container` to its waiters (with the OOM verdict).
    fn watch_exit(
        &self,
        container: &Arc<Container>,
        exit: tokio::sync::oneshot::Receiver<Exit>,
        tx: watch::Sender<Option<ExitInfo>>,
    ) {
        let cgroup = container.cgroup.clone();
        tokio::spawn(async move {
            let exit = exit.await.unwrap_or(Exit::Code(255));
            // SIGKILLed (or a shell reporting its child's SIGKILL as 137) in a cgroup where the
            // OOM killer ran.
            let oom_killed = exit.status() == 128 + nix::libc::SIGKILL && cgroup.oom_kills() > 0;
            let _ = tx.send(Some(ExitInfo {
                status: exit.status(),
                oom_killed,
            }));
        });
    }

    /// Reports each new OOM kill in the container's cgroup until its init has exited and the
    /// last count was read.
    fn watch_oom(&self, container: &Arc<Container>) {
        let container = Arc::clone(container);
        let tx = self.oom_tx.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            loop {
                let done = container.init.exited().is_some();
                let kills = container.cgroup.oom_kills();
                if kills > seen {
                    seen = kills;
                    info!(container = %container.id, kills, "OOM kill in the container");
                    if tx.try_send(container.id.clone()).is_err() {
                        warn!(container = %container.id, "OOM event queue full, event dropped");
                    }
                }
                if done {
                    return;
                }
                tokio::time::sleep(OOM_POLL).await;
            }
        });
    }

    /// ExecProcess: another process in the container's namespaces and cgroup.
    pub async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process_json: &[u8],
    ) -> Result<u32, ContainerError> {
        let container = self.get(id)?;
        check_id("exec_id", exec_id)?;
        let process = spec::parse_exec_process(process_json)?;
        if container.pending.lock().await.is_some() || container.init.exited().is_some() {
            return Err(ContainerError::State(format!(
                "container {id} is not running"
            )));
        }
        {
            let execs = lock(&container.execs);
            if execs.contains_key(exec_id) {
                return Err(ContainerError::ExecExists(
                    id.to_owned(),
                    exec_id.to_owned(),
                ));
            }
            if execs.len() >= MAX_EXECS {
                return Err(ContainerError::Exhausted(format!(
                    "container {id} already has {MAX_EXECS} exec processes"
                )));
            }
        }
        let mut process = process;
        if !process.env.iter().any(|e| e.starts_with("PATH=")) {
            process
                .env
                .push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        if process.cwd.is_empty() {
            process.cwd = "/".into();
        }
        let (io, child) = stdio::make(process.terminal).map_err(ContainerError::Stdio)?;
        let stage1 = Stage1Plan {
            cgroup: container.cgroup.path().to_owned(),
            namespaces: container.namespaces,
            join: Some(container.init.pid),
        };
        let stage2 = Stage2Plan {
            root: None,
            join: Some(container.init.pid),
            namespaces: container.namespaces,
            process,
            seccomp: container.seccomp.clone(),
        };
        let prepared = self.runner.prepare(&stage1, &stage2, child).await?;
        let pid = prepared.pid;
        let (exit_tx, exit_rx) = watch::channel(None);
        let exec = Arc::new(Process {
            pid,
            io,
            exit: exit_rx,
        });
        {
            let mut execs = lock(&container.execs);
            if execs.contains_key(exec_id) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                return Err(ContainerError::ExecExists(
                    id.to_owned(),
                    exec_id.to_owned(),
                ));
            }
            execs.insert(exec_id.to_owned(), exec);
        }
        let exit = prepared.start().await?;
        self.watch_exit(&container, exit, exit_tx);
        info!(container = id, exec = exec_id, pid, "exec started");
        Ok(u32::try_from(pid).unwrap_or(0))
    }

    /// SignalProcess.
    pub async fn signal(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> Result<(), ContainerError> {
        let signal = i32::try_from(signal)
            .ok()
            .and_then(|s| nix::sys::signal::Signal::try_from(s).ok())
            .ok_or_else(|| ContainerError::BadRequest(format!("{signal} is not a signal")))?;
        let container = self.get(id)?;
        if all {
            container.cgroup.signal_all(signal)?;
            return Ok(());
        }
        let process = self.process(id, exec_id)?;
        if process.exited().is_some() {
            return Err(ContainerError::State(format!(
                "process {exec_id:?} of container {id} has exited"
            )));
        }
        if exec_id.is_empty() && container.pending.lock().await.is_some() {
            // Not started: the stage would die before exec; a kill ends it for good.
            if signal == nix::sys::signal::Signal::SIGKILL {
                container.cgroup.kill_all()?;
            }
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(process.pid), signal)
            .map_err(|e| ContainerError::State(format!("cannot signal the process: {e}")))
    }

    /// WaitProcess.
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<ExitInfo, ContainerError> {
        let process = self.process(id, exec_id)?;
        Ok(process.wait().await)
    }

    /// A process's stdio.
    pub fn io(&self, id: &str, exec_id: &str) -> Result<Arc<Process>, ContainerError> {
        self.process(id, exec_id)
    }

    /// ListProcesses.
    pub fn pids(&self, id: &str) -> Result<Vec<u32>, ContainerError> {
        Ok(self.get(id)?.cgroup.procs()?)
    }

    /// StatsContainer.
    pub(crate) fn stats(&self, id: &str) -> Result<CgroupStats, ContainerError> {
        Ok(self.get(id)?.cgroup.stats())
    }

    /// GetOOMEvent: the next container with an OOM kill.
    pub async fn next_oom(&self) -> Option<String> {
        self.oom_rx.lock().await.recv().await
    }

    /// RemoveContainer: waits up to `timeout` for the processes to exit, then kills them all;
    /// removes the layer (the container's writes leave guest memory) and the cgroup.
    pub async fn remove(&self, id: &str, timeout: Duration) -> Result<(), ContainerError> {
        let container = self.get(id)?;
        let started = container.pending.lock().await.take().is_none();
        let procs_empty = |c: &Container| c.cgroup.procs().map(|p| p.is_empty()).unwrap_or(true);
        let deadline = tokio::time::Instant::now() + timeout;
        while !procs_empty(&container) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !procs_empty(&container) {
            container.cgroup.kill_all()?;
        }
        if started {
            let _ = tokio::time::timeout(Duration::from_secs(10), container.init.wait()).await;
        }
        for _ in 0..200 {
            if procs_empty(&container) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        for process in std::iter::once(&container.init).chain(lock(&container.execs).values()) {
            process.io.stdout.abandon();
            process.io.stderr.abandon();
        }
        let cgroup = container.cgroup.clone();
        let layer = container.layer.clone();
        tokio::task::spawn_blocking(move || -> Result<(), ContainerError> {
            rootfs::remove_layer(&layer)?;
            cgroup.remove()?;
            Ok(())
        })
        .await
        .map_err(ContainerError::Task)??;
        lock(&self.containers).remove(id);
        info!(container = id, "container removed");
        Ok(())
    }

    /// Digest of the container's image.
    pub fn manifest_digest(&self, id: &str) -> Result<String, ContainerError> {
        Ok(self.get(id)?.manifest_digest.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn containers(pulls: Arc<AtomicU32>, dir: &std::path::Path) -> Containers {
        let puller = Arc::new(GuestPuller::new(
            crate::PullConfig::default(),
            Err("no attester".into()),
        ));
        let runner = Runner::new(
            "/nonexistent".into(),
            dir.join("control"),
            dir.join("holder"),
            crate::Reaper::new(),
        );
        let rootfs = dir.to_owned();
        Containers::new(puller, runner, Err("not needed".into()), dir.to_owned()).with_pull_hook(
            Arc::new(move |reference| {
                let n = pulls.fetch_add(1, Ordering::SeqCst);
                // A slow pull, so that the second create arrives while it runs.
                std::thread::sleep(Duration::from_millis(200));
                if reference == "flaky" && n == 0 {
                    return Err(GuestPullError::BadReference);
                }
                Ok(PulledImage {
                    manifest_digest: format!("sha256:{reference}"),
                    rootfs: rootfs.clone(),
                    defaults: ImageDefaults::default(),
                    timings: crate::PullTimings::default(),
                })
            }),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_creates_of_one_image_wait_for_one_pull() {
        let dir = tempfile::tempdir().unwrap();
        let pulls = Arc::new(AtomicU32::new(0));
        let c = containers(Arc::clone(&pulls), dir.path());
        let (a, b) = tokio::join!(c.image("app:1"), c.image("app:1"));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(pulls.load(Ordering::SeqCst), 1);
        assert!(a.1 ^ b.1, "exactly one of the two pulled");
        assert_eq!(a.0.manifest_digest, "sha256:app:1");
        let (again, pulled) = c.image("app:1").await.unwrap();
        assert!(!pulled);
        assert_eq!(again.manifest_digest, "sha256:app:1");
        assert_eq!(pulls.load(Ordering::SeqCst), 1);
        c.image("other:1").await.unwrap();
        assert_eq!(
            pulls.load(Ordering::SeqCst),
            2,
            "another reference is its own pull"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_pull_is_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let pulls = Arc::new(AtomicU32::new(0));
        let c = containers(Arc::clone(&pulls), dir.path());
        assert!(matches!(
            c.image("flaky").await,
            Err(ContainerError::Pull(GuestPullError::BadReference))
        ));
        let (_, pulled) = c.image("flaky").await.unwrap();
        assert!(pulled);
        assert_eq!(pulls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn requests_for_unknown_or_invalid_ids_are_refused_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let c = containers(Arc::new(AtomicU32::new(0)), dir.path());
        assert!(matches!(
            c.start("nope").await,
            Err(ContainerError::NoContainer(id)) if id == "nope"
        ));
        assert!(matches!(
            c.wait("../etc", "").await,
            Err(ContainerError::BadId("container_id"))
        ));
        // A spec check comes before the pull and before the (here unavailable) cgroups.
        let err = c.create("c1", "app:1", b"{}").await.unwrap_err();
        assert!(
            matches!(err, ContainerError::Spec(SpecError::Invalid(_))),
            "{err}"
        );
        let spec =
            br#"{"ociVersion":"1.0.0","linux":{"namespaces":[{"type":"pid"},{"type":"mount"}]}}"#;
        let err = c.create("c1", "app:1", spec).await.unwrap_err();
        assert!(
            matches!(&err, ContainerError::Unavailable(why) if why == "not needed"),
            "{err}"
        );
    }
}
