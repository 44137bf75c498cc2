//! The runtime-neutral model of one pod: its VM, its containers and their processes.
//!
//! The containerd task API (v2 today, [`crate::task_v2`]; v3 later) is a thin adapter over
//! [`Pod`]: it converts requests into these calls and [`Event`]s into its own event messages.
//! Nothing here knows about containerd's wire types.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tracing::{info, warn};
use tsuba_protocols::agent::{StatsContainerResponse, is_valid_id, millis};
use tsuba_vmm_tee::{HostVirt, LaunchOptions};

use crate::agent_client::{AgentClient, AgentClientError};
use crate::annotations::{self, Role, Settings};
use crate::config::{DEFAULT_CONFIG_PATH, RuntimeConfig, Timeouts};
use crate::sandbox::{Sandbox, SandboxError};
use crate::state::{self, StateDir};

/// Timeout of the short agent calls (start, signal, resize...).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an exit waits for the process's output to be copied out.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest stdout/stderr chunk asked for at once.
const READ_CHUNK: u32 = 64 * 1024;
/// Exit status of a process whose VM died under it.
pub const VM_LOST_STATUS: u32 = 255;
/// Largest bundle `config.json` read (the agent takes at most this much).
const MAX_SPEC: u64 = tsuba_protocols::agent::MAX_OCI_SPEC as u64;

/// A request the pod refuses or cannot carry out. Each maps to one status code of the task API.
#[derive(Debug, Error)]
pub enum PodError {
    /// No such container or process.
    #[error("{0} not found")]
    NotFound(String),
    /// It exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The request is invalid (bad annotation, config, spec).
    #[error("{0}")]
    InvalidArgument(String),
    /// The request does not fit the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The key broker refused the guest's evidence.
    #[error("attestation refused: {0}")]
    AttestationRefused(String),
    /// The pod's VM is gone or never came up.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

fn agent_error(what: &str, e: &AgentClientError) -> PodError {
    use ttrpc::Code;
    match e.status() {
        Some((Code::PERMISSION_DENIED, msg)) if what == "create" => {
            PodError::AttestationRefused(msg.to_owned())
        }
        Some((Code::NOT_FOUND, msg)) => PodError::NotFound(msg.to_owned()),
        Some((Code::INVALID_ARGUMENT, msg)) => {
            PodError::InvalidArgument(format!("the guest agent refused the {what}: {msg}"))
        }
        Some((Code::ALREADY_EXISTS, msg)) => PodError::AlreadyExists(msg.to_owned()),
        Some((Code::FAILED_PRECONDITION, msg)) => PodError::FailedPrecondition(msg.to_owned()),
        Some((_, msg)) => PodError::Internal(format!("the guest agent failed the {what}: {msg}")),
        None => PodError::Unavailable(format!("{what}: {}", error_chain(e))),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Where a process's stdio goes on the host: containerd's fifos (empty: none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stdio {
    /// stdin fifo.
    pub stdin: String,
    /// stdout fifo.
    pub stdout: String,
    /// stderr fifo.
    pub stderr: String,
    /// Whether the process has a terminal.
    pub terminal: bool,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit code, or 128 + signal.
    pub status: u32,
    /// When.
    pub at: SystemTime,
}

/// A process's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited.
    Stopped,
}

/// What the task API's State returns.
#[derive(Debug, Clone)]
pub struct ProcessState {
    /// Guest PID (QEMU's for a CRI sandbox).
    pub pid: u32,
    /// Status.
    pub status: Status,
    /// Its stdio.
    pub stdio: Stdio,
    /// Its exit, once stopped.
    pub exit: Option<Exit>,
    /// The container's bundle.
    pub bundle: PathBuf,
}

/// Something containerd must hear about. Exec id empty: the container's init process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A container was created.
    Create {
        /// Container.
        container_id: String,
        /// Its bundle.
        bundle: PathBuf,
        /// Its stdio.
        stdio: Stdio,
        /// Init pid.
        pid: u32,
    },
    /// A container's init process started.
    Start {
        /// Container.
        container_id: String,
        /// Init pid.
        pid: u32,
    },
    /// A process exited.
    Exit {
        /// Container.
        container_id: String,
        /// Exec id (the container id for the init process, as containerd expects).
        id: String,
        /// Pid.
        pid: u32,
        /// Exit.
        exit: Exit,
    },
    /// An exec process was added.
    ExecAdded {
        /// Container.
        container_id: String,
        /// Exec.
        exec_id: String,
    },
    /// An exec process started.
    ExecStarted {
        /// Container.
        container_id: String,
        /// Exec.
        exec_id: String,
        /// Pid.
        pid: u32,
    },
    /// The OOM killer hit a process of the container.
    Oom {
        /// Container.
        container_id: String,
    },
    /// A container was deleted.
    Delete {
        /// Container.
        container_id: String,
        /// Init pid.
        pid: u32,
        /// Its exit.
        exit: Exit,
    },
}

/// What a container create needs.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// Container id.
    pub id: String,
    /// Bundle folder (holds `config.json`).
    pub bundle: PathBuf,
    /// Stdio.
    pub stdio: Stdio,
    /// The runtime config path from containerd's options, if any.
    pub config_path: Option<PathBuf>,
    /// Whether the host prepared a rootfs (it is ignored either way).
    pub host_rootfs: bool,
}

struct Proc {
    pid: u32,
    status: Status,
    stdio: Stdio,
    exit: watch::Sender<Option<Exit>>,
    close_stdin: Arc<Notify>,
    /// An exec's process object, until it is started.
    pending: Option<Vec<u8>>,
}

impl Proc {
    fn new(pid: u32, stdio: Stdio) -> Self {
        Proc {
            pid,
            status: Status::Created,
            stdio,
            exit: watch::channel(None).0,
            close_stdin: Arc::new(Notify::new()),
            pending: None,
        }
    }
}

struct Container {
    bundle: PathBuf,
    role: Role,
    init: Proc,
    execs: HashMap<String, Proc>,
}

struct Vm {
    agent: AgentClient,
    qemu_pid: u32,
    stop: Option<oneshot::Sender<()>>,
    stopped: watch::Receiver<bool>,
    state: StateDir,
    timeouts: Timeouts,
}

#[derive(Default)]
struct PodState {
    vm: Option<Vm>,
    /// Why the VM is gone, once it is.
    vm_lost: Option<String>,
    containers: HashMap<String, Container>,
    /// A create in progress holds its id here.
    creating: Option<String>,
}

/// One pod: a VM and the containers in it.
#[derive(Clone)]
pub struct Pod {
    state: Arc<Mutex<PodState>>,
    events: mpsc::UnboundedSender<Event>,
}

impl std::fmt::Debug for Pod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pod").finish_non_exhaustive()
    }
}

impl Pod {
    /// A pod with no VM yet; its events go to `events`.
    pub fn new(events: mpsc::UnboundedSender<Event>) -> Self {
        Pod {
            state: Arc::default(),
            events,
        }
    }

    fn lock(&self) -> MutexGuard<'_, PodState> {
        // A panic while holding the lock leaves plain data; keep serving.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn agent(&self) -> Result<(AgentClient, Timeouts), PodError> {
        let st = self.lock();
        match (&st.vm, &st.vm_lost) {
            (_, Some(why)) => Err(PodError::Unavailable(why.clone())),
            (Some(vm), None) => Ok((vm.agent.clone(), vm.timeouts)),
            (None, None) => Err(PodError::FailedPrecondition(
                "the pod has no VM: create its sandbox first".into(),
            )),
        }
    }

    /// Creates a container: boots the VM for a sandbox or standalone container, and for a
    /// workload container has the guest pull its image and create it. Returns the init pid.
    pub async fn create(&self, req: CreateRequest) -> Result<u32, PodError> {
        if !is_valid_id(&req.id) {
            return Err(PodError::InvalidArgument(format!(
                "container id {:?} is not a containerd identifier",
                req.id
            )));
        }
        {
            let mut st = self.lock();
            if st.containers.contains_key(&req.id) || st.creating.is_some() {
                return Err(PodError::AlreadyExists(format!("container {}", req.id)));
            }
            st.creating = Some(req.id.clone());
        }
        let result = self.create_inner(&req).await;
        self.lock().creating = None;
        result
    }

    async fn create_inner(&self, req: &CreateRequest) -> Result<u32, PodError> {
        let spec_bytes = read_spec(&req.bundle)?;
        let spec: serde_json::Value = serde_json::from_slice(&spec_bytes).map_err(|e| {
            PodError::InvalidArgument(format!("the bundle's config.json is not JSON: {e}"))
        })?;
        let annotations: HashMap<String, String> = spec
            .get("annotations")
            .and_then(|a| serde_json::from_value(a.clone()).ok())
            .unwrap_or_default();
        let role = annotations::role(&annotations)
            .map_err(|e| PodError::InvalidArgument(e.to_string()))?;
        if req.host_rootfs {
            info!(id = %req.id, "the host prepared a rootfs; tsuba ignores it and never mounts it");
        }

        let config_path = req
            .config_path
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
        let config = RuntimeConfig::read(&config_path)
            .map_err(|e| PodError::InvalidArgument(error_chain(&e)))?;
        let mut settings = Settings {
            vm: config.file.vm.clone(),
            timeouts: config.file.timeouts,
        };
        annotations::apply_overrides(
            &annotations,
            &mut settings,
            config.file.allow_measured_overrides,
        )
        .map_err(|e| PodError::InvalidArgument(e.to_string()))?;
        let image = match role {
            Role::Sandbox => None,
            _ => Some(
                annotations::image(&annotations)
                    .map_err(|e| PodError::InvalidArgument(e.to_string()))?,
            ),
        };
        let sandbox_id = role.sandbox_id(&req.id).to_owned();

        if role.owns_vm() {
            if self.lock().vm.is_some() {
                return Err(PodError::FailedPrecondition(format!(
                    "this shim already runs the VM of sandbox {sandbox_id}"
                )));
            }
            let mut launch = config
                .launch_config(&settings.vm)
                .map_err(|e| PodError::InvalidArgument(error_chain(&e)))?;
            // The pod's own initdata wins over the runtime config's: each is bound into the
            // launch and checked by the guest all the same.
            if let Some(doc) = annotations::initdata(&annotations)
                .map_err(|e| PodError::InvalidArgument(e.to_string()))?
            {
                launch.initdata = Some(doc);
            }
            self.boot(
                &config,
                &launch,
                &sandbox_id,
                settings.timeouts,
                &req.bundle,
            )
            .await?;
        }

        let pid = match image {
            None => self.lock().vm.as_ref().map_or(0, |vm| vm.qemu_pid),
            Some(image) => {
                let (agent, _) = self.agent()?;
                let asked = Instant::now();
                let created = agent
                    .create_container(
                        &req.id,
                        &sandbox_id,
                        &image,
                        spec_bytes,
                        settings.timeouts.create(),
                    )
                    .await;
                match created {
                    Ok(r) => {
                        // The phases a user waits for (docs/shim.md; `make demo` and
                        // bench/ctr-run.sh print them). The guest's own split: the policy's
                        // decision, attestation, the pull (keys, decryption, unpacking), the
                        // container's set-up.
                        info!(
                            id = %req.id,
                            image = %image,
                            create_ms = millis(asked.elapsed()),
                            pulled = r.pulled,
                            attest_ms = r.attest_ms,
                            pull_ms = r.pull_ms,
                            setup_ms = r.setup_ms,
                            policy_us = r.policy_us,
                            "the guest attested, pulled its image and created the container"
                        );
                        r.pid
                    }
                    Err(e) => {
                        let err = agent_error("create", &e);
                        if role.owns_vm() {
                            self.stop_vm().await;
                        }
                        return Err(err);
                    }
                }
            }
        };

        let proc = Proc::new(pid, req.stdio.clone());
        let exit_rx = proc.exit.subscribe();
        let close_stdin = proc.close_stdin.clone();
        self.lock().containers.insert(
            req.id.clone(),
            Container {
                bundle: req.bundle.clone(),
                role: role.clone(),
                init: proc,
                execs: HashMap::new(),
            },
        );
        if !matches!(role, Role::Sandbox) {
            self.spawn_process_io(&req.id, "", pid, &req.stdio, close_stdin);
        }
        drop(exit_rx);
        self.emit(Event::Create {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            stdio: req.stdio.clone(),
            pid,
        });
        Ok(pid)
    }

    async fn boot(
        &self,
        config: &RuntimeConfig,
        launch: &tsuba_vmm_tee::LaunchConfig,
        sandbox_id: &str,
        timeouts: Timeouts,
        bundle: &Path,
    ) -> Result<(), PodError> {
        let booting = Instant::now();
        let state = StateDir::create(&config.state_root(), sandbox_id)
            .map_err(|e| PodError::Internal(error_chain(&e)))?;
        state
            .mark_bundle(bundle)
            .map_err(|e| PodError::Internal(error_chain(&e)))?;
        let defaults = LaunchOptions::for_this_host();
        let options = LaunchOptions {
            qemu: config.file.qemu.clone().unwrap_or(defaults.qemu),
            run_dir_parent: state.path().to_owned(),
            host: HostVirt::probe(),
            tee_sim_state: config
                .file
                .tee_sim_state
                .clone()
                .unwrap_or(defaults.tee_sim_state),
            vsock_cid: 3u32.saturating_add(std::process::id()),
        };
        let started = Sandbox::start_with(launch, &options, timeouts.agent_ready(), |vm| {
            if let Some(pid) = vm.pid()
                && let Err(e) = state.record_qemu(pid)
            {
                warn!(error = %e, "cannot record QEMU's pid; a crashed shim's cleanup will miss it");
            }
        })
        .await;
        let sandbox = match started {
            Ok(s) => s,
            Err(e) => {
                let _ = state::cleanup(state.path());
                return Err(match e {
                    SandboxError::Launch(_) => PodError::Internal(shorten(&error_chain(&e))),
                    _ => PodError::Unavailable(shorten(&error_chain(&e))),
                });
            }
        };
        let (agent, mut vm) = sandbox.into_parts();
        let qemu_pid = vm.pid().unwrap_or(0);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (stopped_tx, stopped_rx) = watch::channel(false);
        {
            let mut st = self.lock();
            st.vm = Some(Vm {
                agent: agent.clone(),
                qemu_pid,
                stop: Some(stop_tx),
                stopped: stopped_rx,
                state: state.clone(),
                timeouts,
            });
            st.vm_lost = None;
        }
        // The VM's owner: waits for QEMU to exit or for a stop, then fails every task.
        let pod = self.clone();
        let state_path = state.path().to_owned();
        tokio::spawn(async move {
            let why = tokio::select! {
                status = vm.wait_exit() => {
                    let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                    let why = shorten(&format!(
                        "the pod's VM exited ({status}); last guest console lines:\n{}",
                        vm.console_tail()
                    ));
                    warn!("{why}");
                    why
                }
                _ = stop_rx => "the pod's VM was stopped".to_owned(),
            };
            let _ = vm.shutdown().await;
            if let Err(e) = state::cleanup(&state_path) {
                warn!(error = %e, "cannot remove the sandbox state");
            }
            pod.vm_gone(why);
            let _ = stopped_tx.send(true);
        });
        // Health checks: a guest that stops answering is killed.
        let pod = self.clone();
        let watchdog_agent = agent.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(timeouts.health_interval()).await;
                if pod.lock().vm_lost.is_some() {
                    return;
                }
                if let Err(e) = watchdog_agent.check(timeouts.unresponsive()).await {
                    warn!(
                        error = %error_chain(&e),
                        "the guest agent did not answer a health check in {:?}; killing the VM",
                        timeouts.unresponsive()
                    );
                    pod.lock().vm_lost = Some(format!(
                        "the guest stopped answering (no health check answer in {:?}) and was killed",
                        timeouts.unresponsive()
                    ));
                    pod.stop_vm().await;
                    return;
                }
            }
        });
        // OOM events.
        let pod = self.clone();
        tokio::spawn(async move {
            while let Ok(ev) = agent.get_oom_event().await {
                pod.emit(Event::Oom {
                    container_id: ev.container_id,
                });
            }
        });
        info!(
            sandbox_id = %sandbox_id,
            qemu_pid,
            boot_ms = millis(booting.elapsed()),
            "sandbox VM ready: booted, and its agent answered"
        );
        Ok(())
    }

    /// Marks the VM gone and ends every process still running.
    fn vm_gone(&self, why: String) {
        let mut ended = Vec::new();
        {
            let mut st = self.lock();
            let why = st.vm_lost.get_or_insert(why).clone();
            let now = SystemTime::now();
            for (cid, c) in &mut st.containers {
                // A CRI sandbox task is the VM itself: it ends as QEMU did.
                let procs = std::iter::once((cid.clone(), &mut c.init))
                    .chain(c.execs.iter_mut().map(|(e, p)| (e.clone(), p)));
                for (id, p) in procs {
                    if p.exit.borrow().is_some() {
                        continue;
                    }
                    let exit = Exit {
                        status: VM_LOST_STATUS,
                        at: now,
                    };
                    p.status = Status::Stopped;
                    let _ = p.exit.send(Some(exit));
                    ended.push(Event::Exit {
                        container_id: cid.clone(),
                        id,
                        pid: p.pid,
                        exit,
                    });
                }
            }
            if !ended.is_empty() {
                warn!(tasks = ended.len(), "{why}");
            }
        }
        for e in ended {
            self.emit(e);
        }
    }

    /// Stops the VM (if running) and waits until it is gone.
    async fn stop_vm(&self) {
        let (stop, mut stopped) = {
            let mut st = self.lock();
            match &mut st.vm {
                Some(vm) => (vm.stop.take(), vm.stopped.clone()),
                None => return,
            }
        };
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        let _ = stopped.wait_for(|s| *s).await;
    }

    /// Copies stdio and waits for the process's exit in the background.
    fn spawn_process_io(
        &self,
        cid: &str,
        eid: &str,
        pid: u32,
        stdio: &Stdio,
        close_stdin: Arc<Notify>,
    ) {
        let Ok((agent, _)) = self.agent() else {
            return;
        };
        let mut outputs = Vec::new();
        if !stdio.stdout.is_empty() {
            outputs.push(tokio::spawn(copy_out(
                agent.clone(),
                cid.to_owned(),
                eid.to_owned(),
                false,
                stdio.stdout.clone(),
            )));
        }
        if !stdio.stderr.is_empty() && !stdio.terminal {
            outputs.push(tokio::spawn(copy_out(
                agent.clone(),
                cid.to_owned(),
                eid.to_owned(),
                true,
                stdio.stderr.clone(),
            )));
        }
        if !stdio.stdin.is_empty() {
            tokio::spawn(copy_in(
                agent.clone(),
                cid.to_owned(),
                eid.to_owned(),
                stdio.stdin.clone(),
                close_stdin,
            ));
        }
        let pod = self.clone();
        let (cid, eid) = (cid.to_owned(), eid.to_owned());
        tokio::spawn(async move {
            let status = match agent.wait_process(&cid, &eid).await {
                Ok(r) => {
                    // The agent's OOM long-poll can miss a kill when the container is removed
                    // right after it; the exit status says it too. A second event for the same
                    // kill is harmless: containerd records the reason, not a count.
                    if r.oom_killed {
                        pod.emit(Event::Oom {
                            container_id: cid.clone(),
                        });
                    }
                    u32::try_from(r.exit_status).unwrap_or(VM_LOST_STATUS)
                }
                Err(e) => {
                    warn!(container = %cid, exec = %eid, error = %error_chain(&e), "waiting for the process failed");
                    VM_LOST_STATUS
                }
            };
            for o in outputs {
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, o).await;
            }
            pod.process_exited(&cid, &eid, pid, status);
        });
    }

    fn process_exited(&self, cid: &str, eid: &str, pid: u32, status: u32) {
        let exit = Exit {
            status,
            at: SystemTime::now(),
        };
        {
            let mut st = self.lock();
            let Some(c) = st.containers.get_mut(cid) else {
                return;
            };
            let p = if eid.is_empty() {
                &mut c.init
            } else {
                match c.execs.get_mut(eid) {
                    Some(p) => p,
                    None => return,
                }
            };
            if p.exit.borrow().is_some() {
                return;
            }
            p.status = Status::Stopped;
            let _ = p.exit.send(Some(exit));
        }
        self.emit(Event::Exit {
            container_id: cid.to_owned(),
            id: if eid.is_empty() { cid } else { eid }.to_owned(),
            pid,
            exit,
        });
    }

    fn with_proc<T>(
        &self,
        cid: &str,
        eid: &str,
        f: impl FnOnce(&mut Container, Option<&str>) -> Result<T, PodError>,
    ) -> Result<T, PodError> {
        let mut st = self.lock();
        let c = st
            .containers
            .get_mut(cid)
            .ok_or_else(|| PodError::NotFound(format!("container {cid}")))?;
        if !eid.is_empty() && !c.execs.contains_key(eid) {
            return Err(PodError::NotFound(format!("exec {eid} of container {cid}")));
        }
        f(c, (!eid.is_empty()).then_some(eid))
    }

    /// Starts the init process, or a registered exec. Returns its pid.
    pub async fn start(&self, cid: &str, eid: &str) -> Result<u32, PodError> {
        let (role, pending) = self.with_proc(cid, eid, |c, e| {
            let p = match e {
                Some(e) => c
                    .execs
                    .get_mut(e)
                    .ok_or_else(|| PodError::NotFound(e.into()))?,
                None => &mut c.init,
            };
            if p.status != Status::Created {
                return Err(PodError::FailedPrecondition(format!(
                    "process {cid}/{eid} was started already"
                )));
            }
            Ok((c.role.clone(), p.pending.take()))
        })?;
        if eid.is_empty() && matches!(role, Role::Sandbox) {
            // The CRI sandbox task is the VM: it runs already.
            let pid = self.with_proc(cid, "", |c, _| {
                c.init.status = Status::Running;
                Ok(c.init.pid)
            })?;
            self.emit(Event::Start {
                container_id: cid.to_owned(),
                pid,
            });
            return Ok(pid);
        }
        let (agent, _) = self.agent()?;
        if eid.is_empty() {
            let asked = Instant::now();
            agent
                .start_container(cid, CALL_TIMEOUT)
                .await
                .map_err(|e| agent_error("start", &e))?;
            info!(
                id = %cid,
                start_ms = millis(asked.elapsed()),
                "the container started in the guest"
            );
            let pid = self.with_proc(cid, "", |c, _| {
                c.init.status = Status::Running;
                Ok(c.init.pid)
            })?;
            self.emit(Event::Start {
                container_id: cid.to_owned(),
                pid,
            });
            Ok(pid)
        } else {
            let process = pending.ok_or_else(|| {
                PodError::FailedPrecondition(format!("exec {eid} has no process to start"))
            })?;
            let pid = agent
                .exec_process(cid, eid, process, CALL_TIMEOUT)
                .await
                .map_err(|e| agent_error("exec", &e))?;
            let (stdio, close) = self.with_proc(cid, eid, |c, _| {
                let p = c
                    .execs
                    .get_mut(eid)
                    .ok_or_else(|| PodError::NotFound(eid.into()))?;
                p.pid = pid;
                p.status = Status::Running;
                Ok((p.stdio.clone(), p.close_stdin.clone()))
            })?;
            self.spawn_process_io(cid, eid, pid, &stdio, close);
            self.emit(Event::ExecStarted {
                container_id: cid.to_owned(),
                exec_id: eid.to_owned(),
                pid,
            });
            Ok(pid)
        }
    }

    /// Registers an exec process (started by [`Pod::start`]). `process` is the OCI process JSON.
    pub fn exec(
        &self,
        cid: &str,
        eid: &str,
        stdio: Stdio,
        process: Vec<u8>,
    ) -> Result<(), PodError> {
        if !is_valid_id(eid) {
            return Err(PodError::InvalidArgument(format!(
                "exec id {eid:?} is not a containerd identifier"
            )));
        }
        if process.len() > tsuba_protocols::agent::MAX_OCI_SPEC {
            return Err(PodError::InvalidArgument(
                "the exec process spec is larger than 1 MiB".into(),
            ));
        }
        self.with_proc(cid, "", |c, _| {
            if matches!(c.role, Role::Sandbox) {
                return Err(PodError::FailedPrecondition(format!(
                    "{cid} is a pod sandbox: exec into a container of the pod"
                )));
            }
            if c.execs.contains_key(eid) {
                return Err(PodError::AlreadyExists(format!("exec {eid}")));
            }
            let mut p = Proc::new(0, stdio);
            p.pending = Some(process);
            c.execs.insert(eid.to_owned(), p);
            Ok(())
        })?;
        self.emit(Event::ExecAdded {
            container_id: cid.to_owned(),
            exec_id: eid.to_owned(),
        });
        Ok(())
    }

    /// Sends `signal` to a process (or all of the container's with `all`).
    pub async fn kill(&self, cid: &str, eid: &str, signal: u32, all: bool) -> Result<(), PodError> {
        let (role, exited) = self.with_proc(cid, eid, |c, e| {
            let p = match e {
                Some(e) => &c.execs[e],
                None => &c.init,
            };
            Ok((c.role.clone(), p.exit.borrow().is_some()))
        })?;
        if exited {
            return Err(PodError::NotFound(format!(
                "process {cid}/{eid} already finished"
            )));
        }
        if eid.is_empty() && matches!(role, Role::Sandbox) {
            self.stop_vm().await;
            return Ok(());
        }
        let (agent, _) = self.agent()?;
        agent
            .signal_process(cid, eid, signal, all, CALL_TIMEOUT)
            .await
            .map_err(|e| agent_error("signal", &e))
    }

    /// Waits for a process to exit.
    pub async fn wait(&self, cid: &str, eid: &str) -> Result<Exit, PodError> {
        let mut rx = self.with_proc(cid, eid, |c, e| {
            Ok(match e {
                Some(e) => c.execs[e].exit.subscribe(),
                None => c.init.exit.subscribe(),
            })
        })?;
        let exit = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| PodError::NotFound(format!("process {cid}/{eid} was deleted")))?;
        exit.ok_or_else(|| PodError::Internal("exit missing".into()))
    }

    /// The state of a process.
    pub fn state(&self, cid: &str, eid: &str) -> Result<ProcessState, PodError> {
        self.with_proc(cid, eid, |c, e| {
            let p = match e {
                Some(e) => &c.execs[e],
                None => &c.init,
            };
            Ok(ProcessState {
                pid: p.pid,
                status: p.status,
                stdio: p.stdio.clone(),
                exit: *p.exit.borrow(),
                bundle: c.bundle.clone(),
            })
        })
    }

    /// Deletes an exec (returns its exit) or a container (removes it in the guest; stops the VM
    /// when the container owns it).
    pub async fn delete(&self, cid: &str, eid: &str) -> Result<(u32, Exit), PodError> {
        let (pid, exit, role) = self.with_proc(cid, eid, |c, e| {
            let p = match e {
                Some(e) => &c.execs[e],
                None => &c.init,
            };
            let exit = *p.exit.borrow();
            if exit.is_none() && p.status == Status::Running {
                return Err(PodError::FailedPrecondition(format!(
                    "process {cid}/{eid} is running: kill it first"
                )));
            }
            Ok((p.pid, exit, c.role.clone()))
        })?;
        let exit = exit.unwrap_or(Exit {
            status: 0,
            at: SystemTime::now(),
        });
        if !eid.is_empty() {
            self.with_proc(cid, eid, |c, _| {
                c.execs.remove(eid);
                Ok(())
            })?;
            return Ok((pid, exit));
        }
        if !matches!(role, Role::Sandbox)
            && let Ok((agent, _)) = self.agent()
            && let Err(e) = agent.remove_container(cid, 0, CALL_TIMEOUT).await
        {
            warn!(container = cid, error = %error_chain(&e), "removing the container in the guest failed");
        }
        if role.owns_vm() {
            self.stop_vm().await;
        }
        self.lock().containers.remove(cid);
        self.emit(Event::Delete {
            container_id: cid.to_owned(),
            pid,
            exit,
        });
        Ok((pid, exit))
    }

    /// Guest PIDs of a container's processes.
    pub async fn pids(&self, cid: &str) -> Result<Vec<u32>, PodError> {
        let (role, pid) = self.with_proc(cid, "", |c, _| Ok((c.role.clone(), c.init.pid)))?;
        if matches!(role, Role::Sandbox) {
            return Ok(vec![pid]);
        }
        let (agent, _) = self.agent()?;
        agent
            .list_processes(cid, CALL_TIMEOUT)
            .await
            .map_err(|e| agent_error("process list", &e))
    }

    /// Resource use of a container.
    pub async fn stats(&self, cid: &str) -> Result<StatsContainerResponse, PodError> {
        self.with_proc(cid, "", |_, _| Ok(()))?;
        let (agent, _) = self.agent()?;
        agent
            .stats_container(cid, CALL_TIMEOUT)
            .await
            .map_err(|e| agent_error("stats", &e))
    }

    /// Resizes a process's terminal.
    pub async fn resize(&self, cid: &str, eid: &str, cols: u32, rows: u32) -> Result<(), PodError> {
        self.with_proc(cid, eid, |_, _| Ok(()))?;
        let (agent, _) = self.agent()?;
        agent
            .tty_win_resize(cid, eid, rows, cols, CALL_TIMEOUT)
            .await
            .map_err(|e| agent_error("resize", &e))
    }

    /// Closes a process's stdin once what was written so far is delivered.
    pub fn close_stdin(&self, cid: &str, eid: &str) -> Result<(), PodError> {
        let notify = self.with_proc(cid, eid, |c, e| {
            Ok(match e {
                Some(e) => c.execs[e].close_stdin.clone(),
                None => c.init.close_stdin.clone(),
            })
        })?;
        notify.notify_one();
        Ok(())
    }

    /// QEMU's pid and the container's init pid.
    pub fn pids_for_connect(&self, cid: &str) -> Result<u32, PodError> {
        self.with_proc(cid, "", |c, _| Ok(c.init.pid))
    }

    /// Whether no container is left.
    pub fn is_empty(&self) -> bool {
        let st = self.lock();
        st.containers.is_empty() && st.creating.is_none()
    }

    /// Stops the VM, if any (shim shutdown).
    pub async fn shutdown(&self) {
        self.stop_vm().await;
    }

    /// The sandbox's state folder, while the VM runs.
    pub fn state_dir(&self) -> Option<PathBuf> {
        self.lock().vm.as_ref().map(|vm| vm.state.path().to_owned())
    }
}

/// Keeps an error with a console tail readable in `ctr`'s one-line output: its first line and
/// its last [`ERROR_TAIL_LINES`] lines.
fn shorten(msg: &str) -> String {
    const ERROR_TAIL_LINES: usize = 25;
    let lines: Vec<&str> = msg.lines().collect();
    if lines.len() <= ERROR_TAIL_LINES + 1 {
        return msg.to_owned();
    }
    let mut out = lines[0].to_owned();
    out.push_str("\n[...]\n");
    out.push_str(&lines[lines.len() - ERROR_TAIL_LINES..].join("\n"));
    out
}

fn read_spec(bundle: &Path) -> Result<Vec<u8>, PodError> {
    use std::io::Read as _;
    let path = bundle.join("config.json");
    let file = std::fs::File::open(&path)
        .map_err(|e| PodError::InvalidArgument(format!("cannot read {}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(MAX_SPEC + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| PodError::InvalidArgument(format!("cannot read {}: {e}", path.display())))?;
    if bytes.len() > tsuba_protocols::agent::MAX_OCI_SPEC {
        return Err(PodError::InvalidArgument(format!(
            "{} is larger than the agent takes (1 MiB)",
            path.display()
        )));
    }
    Ok(bytes)
}

/// Copies a process's stdout or stderr from the agent to containerd's fifo.
async fn copy_out(agent: AgentClient, cid: String, eid: String, stderr: bool, fifo: String) {
    let mut out = match tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(&fifo)
    {
        Ok(o) => o,
        Err(e) => {
            warn!(%fifo, error = %e, "cannot open the output fifo");
            return;
        }
    };
    loop {
        match agent.read_stream(&cid, &eid, stderr, READ_CHUNK).await {
            Ok(r) if r.eof => break,
            Ok(r) => {
                if let Err(e) = out.write_all(&r.data).await {
                    warn!(%fifo, error = %e, "writing the output fifo failed");
                    break;
                }
            }
            Err(e) => {
                warn!(container = %cid, exec = %eid, error = %error_chain(&e), "reading the process output failed");
                break;
            }
        }
    }
}

/// Copies containerd's stdin fifo to the process, and closes its stdin when containerd says
/// so (CloseIO) once what was written is delivered.
async fn copy_in(agent: AgentClient, cid: String, eid: String, fifo: String, close: Arc<Notify>) {
    // Read-write, so that no writer yet (or for a while) is not an end of file.
    let mut input = match tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&fifo)
    {
        Ok(i) => i,
        Err(e) => {
            warn!(%fifo, error = %e, "cannot open the stdin fifo");
            return;
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut closing = false;
    loop {
        let n = if closing {
            // Drain what is buffered, then stop.
            match tokio::time::timeout(Duration::from_millis(50), input.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => 0,
            }
        } else {
            tokio::select! {
                r = input.read(&mut buf) => r.unwrap_or(0),
                () = close.notified() => { closing = true; continue; }
            }
        };
        if n == 0 {
            break;
        }
        let mut data = &buf[..n];
        while !data.is_empty() {
            match agent.write_stdin(&cid, &eid, data, CALL_TIMEOUT).await {
                Ok(0) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok(taken) => data = &data[taken.min(data.len())..],
                Err(e) => {
                    warn!(container = %cid, exec = %eid, error = %error_chain(&e), "writing stdin failed");
                    return;
                }
            }
        }
    }
    if let Err(e) = agent.close_stdin(&cid, &eid, CALL_TIMEOUT).await {
        warn!(container = %cid, exec = %eid, error = %error_chain(&e), "closing stdin failed");
    }
}
