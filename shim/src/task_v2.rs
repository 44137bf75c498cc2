//! containerd's shim task API v2 (containerd 1.6/1.7) over the runtime-neutral [`Pod`].
//!
//! Requests become [`Pod`] calls; [`Event`]s become containerd's task events; [`PodError`]s
//! become ttrpc status codes. A task API v3 adapter would be a sibling of this module.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::asynchronous::{ExitSignal, Shim, spawn};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{MessageDyn, MessageField};
use containerd_shim::protos::shim::shim::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest,
    CreateTaskResponse, DeleteRequest, DeleteResponse, ExecProcessRequest, KillRequest,
    PauseRequest, PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::{self, Code, Status as TtrpcStatus};
use containerd_shim::protos::types::empty::Empty;
use containerd_shim::protos::types::task::{ProcessInfo, Status as TaskStatus};
use containerd_shim::{Config, Flags, StartOpts, Task, TtrpcContext};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::annotations;
use crate::config::config_path_from_options;
use crate::pod::{CreateRequest, Event, Exit, Pod, PodError, Status, Stdio};
use crate::state;

/// The shim's runtime id as containerd names it.
pub const RUNTIME_ID: &str = "io.containerd.tsuba.v2";

fn status(code: Code, message: String) -> ttrpc::Error {
    let mut s = TtrpcStatus::new();
    s.set_code(code);
    s.set_message(message);
    ttrpc::Error::RpcStatus(s)
}

/// The ttrpc status for a pod error.
pub fn to_ttrpc(e: PodError) -> ttrpc::Error {
    let code = match &e {
        PodError::NotFound(_) => Code::NOT_FOUND,
        PodError::AlreadyExists(_) => Code::ALREADY_EXISTS,
        PodError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
        PodError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
        PodError::AttestationRefused(_) => Code::PERMISSION_DENIED,
        PodError::Unavailable(_) => Code::UNAVAILABLE,
        PodError::Internal(_) => Code::INTERNAL,
    };
    status(code, e.to_string())
}

fn unsupported(what: &str) -> ttrpc::Error {
    status(
        Code::UNIMPLEMENTED,
        format!(
            "{what} is not supported by tsuba: a confidential VM's tasks cannot be {what}d from the host"
        ),
    )
}

fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    ts.nanos = i32::try_from(d.subsec_nanos()).unwrap_or(0);
    ts
}

/// The containerd topic and message of a pod event.
pub fn event_message(e: Event) -> (&'static str, Box<dyn MessageDyn>) {
    match e {
        Event::Create {
            container_id,
            bundle,
            stdio,
            pid,
        } => {
            let mut io = TaskIO::new();
            io.stdin = stdio.stdin;
            io.stdout = stdio.stdout;
            io.stderr = stdio.stderr;
            io.terminal = stdio.terminal;
            let mut m = TaskCreate::new();
            m.container_id = container_id;
            m.bundle = bundle.display().to_string();
            m.io = MessageField::some(io);
            m.pid = pid;
            (topics::TASK_CREATE_EVENT_TOPIC, Box::new(m))
        }
        Event::Start { container_id, pid } => {
            let mut m = TaskStart::new();
            m.container_id = container_id;
            m.pid = pid;
            (topics::TASK_START_EVENT_TOPIC, Box::new(m))
        }
        Event::Exit {
            container_id,
            id,
            pid,
            exit,
        } => {
            let mut m = TaskExit::new();
            m.container_id = container_id;
            m.id = id;
            m.pid = pid;
            m.exit_status = exit.status;
            m.exited_at = MessageField::some(timestamp(exit.at));
            (topics::TASK_EXIT_EVENT_TOPIC, Box::new(m))
        }
        Event::ExecAdded {
            container_id,
            exec_id,
        } => {
            let mut m = TaskExecAdded::new();
            m.container_id = container_id;
            m.exec_id = exec_id;
            (topics::TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(m))
        }
        Event::ExecStarted {
            container_id,
            exec_id,
            pid,
        } => {
            let mut m = TaskExecStarted::new();
            m.container_id = container_id;
            m.exec_id = exec_id;
            m.pid = pid;
            (topics::TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(m))
        }
        Event::Oom { container_id } => {
            let mut m = TaskOOM::new();
            m.container_id = container_id;
            (topics::TASK_OOM_EVENT_TOPIC, Box::new(m))
        }
        Event::Delete {
            container_id,
            pid,
            exit,
        } => {
            let mut m = TaskDelete::new();
            m.id = container_id.clone();
            m.container_id = container_id;
            m.pid = pid;
            m.exit_status = exit.status;
            m.exited_at = MessageField::some(timestamp(exit.at));
            (topics::TASK_DELETE_EVENT_TOPIC, Box::new(m))
        }
    }
}

/// The task service.
#[derive(Clone)]
pub struct TaskService {
    pod: Pod,
    exit: Arc<ExitSignal>,
}

impl std::fmt::Debug for TaskService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskService").finish_non_exhaustive()
    }
}

fn stdio(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> Stdio {
    Stdio {
        stdin: stdin.to_owned(),
        stdout: stdout.to_owned(),
        stderr: stderr.to_owned(),
        terminal,
    }
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        if !req.checkpoint.is_empty() || !req.parent_checkpoint.is_empty() {
            return Err(unsupported("checkpoint"));
        }
        let config_path = match req.options.as_ref() {
            Some(any) => config_path_from_options(&any.type_url, &any.value)
                .map_err(|m| status(Code::INVALID_ARGUMENT, m))?,
            None => None,
        };
        let pid = self
            .pod
            .create(CreateRequest {
                id: req.id.clone(),
                bundle: PathBuf::from(&req.bundle),
                stdio: stdio(&req.stdin, &req.stdout, &req.stderr, req.terminal),
                config_path,
                host_rootfs: !req.rootfs.is_empty(),
            })
            .await
            .map_err(|e| {
                warn!(id = %req.id, error = %e, "create failed");
                to_ttrpc(e)
            })?;
        let mut resp = CreateTaskResponse::new();
        resp.pid = pid;
        Ok(resp)
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        let pid = self
            .pod
            .start(&req.id, &req.exec_id)
            .await
            .map_err(to_ttrpc)?;
        let mut resp = StartResponse::new();
        resp.pid = pid;
        Ok(resp)
    }

    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        let s = self.pod.state(&req.id, &req.exec_id).map_err(to_ttrpc)?;
        let mut resp = StateResponse::new();
        resp.id = if req.exec_id.is_empty() {
            req.id.clone()
        } else {
            req.exec_id.clone()
        };
        resp.exec_id = req.exec_id;
        resp.bundle = s.bundle.display().to_string();
        resp.pid = s.pid;
        resp.status = match s.status {
            Status::Created => TaskStatus::CREATED,
            Status::Running => TaskStatus::RUNNING,
            Status::Stopped => TaskStatus::STOPPED,
        }
        .into();
        resp.stdin = s.stdio.stdin;
        resp.stdout = s.stdio.stdout;
        resp.stderr = s.stdio.stderr;
        resp.terminal = s.stdio.terminal;
        if let Some(exit) = s.exit {
            resp.exit_status = exit.status;
            resp.exited_at = MessageField::some(timestamp(exit.at));
        }
        Ok(resp)
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        let pids = self.pod.pids(&req.id).await.map_err(to_ttrpc)?;
        let mut resp = PidsResponse::new();
        resp.processes = pids
            .into_iter()
            .map(|pid| {
                let mut p = ProcessInfo::new();
                p.pid = pid;
                p
            })
            .collect();
        Ok(resp)
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        self.pod
            .kill(&req.id, &req.exec_id, req.signal, req.all)
            .await
            .map_err(to_ttrpc)?;
        Ok(Empty::new())
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        let exit = self
            .pod
            .wait(&req.id, &req.exec_id)
            .await
            .map_err(to_ttrpc)?;
        let mut resp = WaitResponse::new();
        resp.exit_status = exit.status;
        resp.exited_at = MessageField::some(timestamp(exit.at));
        Ok(resp)
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: DeleteRequest,
    ) -> ttrpc::Result<DeleteResponse> {
        let (pid, exit) = self
            .pod
            .delete(&req.id, &req.exec_id)
            .await
            .map_err(to_ttrpc)?;
        Ok(delete_response(pid, exit))
    }

    async fn exec(
        &self,
        _ctx: &TtrpcContext,
        req: ExecProcessRequest,
    ) -> ttrpc::Result<containerd_shim::protos::types::empty::Empty> {
        let process = req
            .spec
            .as_ref()
            .map(|s| s.value.clone())
            .unwrap_or_default();
        self.pod
            .exec(
                &req.id,
                &req.exec_id,
                stdio(&req.stdin, &req.stdout, &req.stderr, req.terminal),
                process,
            )
            .map_err(to_ttrpc)?;
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        self.pod
            .resize(&req.id, &req.exec_id, req.width, req.height)
            .await
            .map_err(to_ttrpc)?;
        Ok(Empty::new())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        if req.stdin {
            self.pod
                .close_stdin(&req.id, &req.exec_id)
                .map_err(to_ttrpc)?;
        }
        Ok(Empty::new())
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        use containerd_shim::protos::cgroups_v2::metrics::{
            CPUStat, MemoryStat, Metrics, PidsStat,
        };
        use containerd_shim::protos::protobuf::Message as _;
        let s = self.pod.stats(&req.id).await.map_err(to_ttrpc)?;
        let mut m = Metrics::new();
        let mut pids = PidsStat::new();
        pids.current = s.pids;
        m.pids = MessageField::some(pids);
        let mut cpu = CPUStat::new();
        cpu.usage_usec = s.cpu_usage_usec;
        cpu.user_usec = s.cpu_user_usec;
        cpu.system_usec = s.cpu_system_usec;
        m.cpu = MessageField::some(cpu);
        let mut mem = MemoryStat::new();
        mem.usage = s.memory_usage_bytes;
        mem.usage_limit = s.memory_limit_bytes;
        m.memory = MessageField::some(mem);
        let mut any = Any::new();
        any.type_url = "io.containerd.cgroups.v2.Metrics".to_owned();
        any.value = m
            .write_to_bytes()
            .map_err(|e| status(Code::INTERNAL, format!("encoding stats: {e}")))?;
        let mut resp = StatsResponse::new();
        resp.stats = MessageField::some(any);
        Ok(resp)
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: ConnectRequest,
    ) -> ttrpc::Result<ConnectResponse> {
        let mut resp = ConnectResponse::new();
        resp.shim_pid = std::process::id();
        resp.task_pid = self.pod.pids_for_connect(&req.id).unwrap_or(0);
        resp.version = env!("CARGO_PKG_VERSION").to_owned();
        Ok(resp)
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> ttrpc::Result<Empty> {
        // containerd asks after each delete; the shim serves until its last container is gone.
        if self.pod.is_empty() {
            self.pod.shutdown().await;
            self.exit.signal();
        }
        Ok(Empty::new())
    }

    async fn pause(&self, _ctx: &TtrpcContext, _req: PauseRequest) -> ttrpc::Result<Empty> {
        Err(unsupported("pause"))
    }

    async fn resume(&self, _ctx: &TtrpcContext, _req: ResumeRequest) -> ttrpc::Result<Empty> {
        Err(unsupported("resume"))
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: CheckpointTaskRequest,
    ) -> ttrpc::Result<Empty> {
        Err(unsupported("checkpoint"))
    }

    async fn update(&self, _ctx: &TtrpcContext, _req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        Err(unsupported("update"))
    }
}

fn delete_response(pid: u32, exit: Exit) -> DeleteResponse {
    let mut resp = DeleteResponse::new();
    resp.pid = pid;
    resp.exit_status = exit.status;
    resp.exited_at = MessageField::some(timestamp(exit.at));
    resp
}

/// The shim process: `start` (spawn or join the pod's shim), `delete` (cleanup after a crash),
/// and serving the task service.
pub struct TsubaShim {
    id: String,
    namespace: String,
    address: String,
    bundle: PathBuf,
    exit: Arc<ExitSignal>,
}

impl std::fmt::Debug for TsubaShim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsubaShim")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The annotations of the bundle's `config.json` (none if unreadable).
fn bundle_annotations(bundle: &Path) -> std::collections::HashMap<String, String> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    let ok = std::fs::File::open(bundle.join("config.json"))
        .and_then(|f| {
            f.take(tsuba_protocols::agent::MAX_OCI_SPEC as u64)
                .read_to_end(&mut bytes)
        })
        .is_ok();
    if !ok {
        return Default::default();
    }
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("annotations").cloned())
        .and_then(|a| serde_json::from_value(a).ok())
        .unwrap_or_default()
}

#[async_trait]
impl Shim for TsubaShim {
    type T = TaskService;

    async fn new(_runtime_id: &str, args: &Flags, config: &mut Config) -> Self {
        // QEMU is a tokio child of the shim: the library's SIGCHLD reaper would steal its exit.
        config.no_reaper = true;
        config.no_sub_reaper = true;
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&args.bundle)
        };
        TsubaShim {
            id: args.id.clone(),
            namespace: args.namespace.clone(),
            address: args.address.clone(),
            bundle,
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let grouping = annotations::grouping_id(&opts.id, &bundle_annotations(&self.bundle));
        let address = spawn(opts, &grouping, Vec::new()).await?;
        std::fs::write(self.bundle.join("address"), &address).map_err(|e| {
            containerd_shim::Error::Other(format!("cannot write the shim address: {e}"))
        })?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        // containerd runs this after a shim died: stop the VM it left and remove its state.
        match state::state_of_bundle(&self.bundle) {
            Ok(Some(dir)) => match state::cleanup(&dir) {
                Ok(cleaned) => {
                    info!(?cleaned, dir = %dir.display(), "cleaned up after a dead shim")
                }
                Err(e) => warn!(error = %e, "cleanup after a dead shim failed"),
            },
            Ok(None) => {}
            Err(e) => warn!(error = %e, "cleanup after a dead shim refused"),
        }
        // The dead shim's socket, when it served this container's pod alone.
        let annotations = bundle_annotations(&self.bundle);
        if annotations::role(&annotations).is_ok_and(|r| r.owns_vm()) {
            let socket = containerd_shim::socket_address(&self.address, &self.namespace, &self.id);
            let path = socket.strip_prefix("unix://").unwrap_or(&socket);
            match std::fs::remove_file(path) {
                Ok(()) => info!(path, "removed the dead shim's socket"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warn!(path, error = %e, "cannot remove the dead shim's socket"),
            }
        }
        Ok(delete_response(
            0,
            Exit {
                status: 128 + 9,
                at: SystemTime::now(),
            },
        ))
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let pod = Pod::new(tx);
        let namespace = self.namespace.clone();
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                let (topic, msg) = event_message(e);
                if let Err(err) = publisher
                    .publish(ttrpc::context::Context::default(), topic, &namespace, msg)
                    .await
                {
                    warn!(topic, error = %err, "publishing an event failed");
                }
            }
        });
        TaskService {
            pod,
            exit: self.exit.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::Message as _;

    fn exit() -> Exit {
        Exit {
            status: 7,
            at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
        }
    }

    #[test]
    fn events_map_to_containerds_topics_and_messages() {
        let (topic, msg) = event_message(Event::Exit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid: 42,
            exit: exit(),
        });
        assert_eq!(topic, "/tasks/exit");
        let m = TaskExit::parse_from_bytes(&msg.write_to_bytes_dyn().unwrap()).unwrap();
        assert_eq!(
            (m.container_id.as_str(), m.id.as_str(), m.pid, m.exit_status),
            ("c1", "c1", 42, 7)
        );
        assert_eq!(m.exited_at.seconds, 1_700_000_000);

        let (topic, msg) = event_message(Event::Create {
            container_id: "c1".into(),
            bundle: "/b".into(),
            stdio: stdio("/i", "/o", "/e", true),
            pid: 9,
        });
        assert_eq!(topic, "/tasks/create");
        let m = TaskCreate::parse_from_bytes(&msg.write_to_bytes_dyn().unwrap()).unwrap();
        assert_eq!(
            (
                m.bundle.as_str(),
                m.pid,
                m.io.stdout.as_str(),
                m.io.terminal
            ),
            ("/b", 9, "/o", true)
        );

        let cases: Vec<(Event, &str)> = vec![
            (
                Event::Start {
                    container_id: "c".into(),
                    pid: 1,
                },
                "/tasks/start",
            ),
            (
                Event::ExecAdded {
                    container_id: "c".into(),
                    exec_id: "e".into(),
                },
                "/tasks/exec-added",
            ),
            (
                Event::ExecStarted {
                    container_id: "c".into(),
                    exec_id: "e".into(),
                    pid: 2,
                },
                "/tasks/exec-started",
            ),
            (
                Event::Oom {
                    container_id: "c".into(),
                },
                "/tasks/oom",
            ),
            (
                Event::Delete {
                    container_id: "c".into(),
                    pid: 1,
                    exit: exit(),
                },
                "/tasks/delete",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(event_message(e).0, want);
        }
        let (_, msg) = event_message(Event::Delete {
            container_id: "c".into(),
            pid: 1,
            exit: exit(),
        });
        let m = TaskDelete::parse_from_bytes(&msg.write_to_bytes_dyn().unwrap()).unwrap();
        assert_eq!(
            (m.container_id.as_str(), m.id.as_str(), m.exit_status),
            ("c", "c", 7)
        );
    }

    #[test]
    fn pod_errors_map_to_status_codes() {
        let cases = [
            (PodError::NotFound("x".into()), Code::NOT_FOUND),
            (
                PodError::InvalidArgument("x".into()),
                Code::INVALID_ARGUMENT,
            ),
            (
                PodError::AttestationRefused("measurement mismatch".into()),
                Code::PERMISSION_DENIED,
            ),
            (PodError::Unavailable("x".into()), Code::UNAVAILABLE),
        ];
        for (e, code) in cases {
            let ttrpc::Error::RpcStatus(s) = to_ttrpc(e) else {
                panic!()
            };
            assert_eq!(s.code(), code);
        }
        let ttrpc::Error::RpcStatus(s) =
            to_ttrpc(PodError::AttestationRefused("measurement mismatch".into()))
        else {
            panic!()
        };
        assert_eq!(s.message(), "attestation refused: measurement mismatch");
        let ttrpc::Error::RpcStatus(s) = unsupported("pause") else {
            panic!()
        };
        assert_eq!(s.code(), Code::UNIMPLEMENTED);
        assert!(s.message().starts_with("pause is not supported by tsuba"));
    }
}
