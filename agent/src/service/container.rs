//! `Container`: the pod's containers, created from images the guest pulls itself.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tracing::warn;
use tsuba_protocols::agent::{
    CloseStdinRequest, Container, CreateContainerRequest, CreateContainerResponse, Empty,
    ExecProcessRequest, ExecProcessResponse, GetOOMEventRequest, ListProcessesRequest,
    ListProcessesResponse, MAX_STDIO_CHUNK, OOMEvent, ReadStreamRequest, ReadStreamResponse,
    RemoveContainerRequest, SignalProcessRequest, StartContainerRequest, StatsContainerRequest,
    StatsContainerResponse, TtyWinResizeRequest, WaitProcessRequest, WaitProcessResponse,
    WriteStreamRequest, WriteStreamResponse,
};
use ttrpc::asynchronous::TtrpcContext;

use super::image::{chain, to_status as pull_status};
use crate::container::{ContainerError, Containers};
use crate::initdata::Gate;
use tsuba_policy::AgentRequest;

/// Longest RemoveContainer grace period honoured.
const MAX_REMOVE_TIMEOUT: u32 = 300;

/// What the policy admitted a container as, for the requests that name it later (an exec is
/// decided by the container it runs in).
#[derive(Debug, Clone, Default)]
struct Admitted {
    /// The CRI container name (`io.kubernetes.cri.container-name`), empty without CRI.
    name: String,
    /// The image reference the container was created from.
    image: String,
}

/// The `Container` service.
#[derive(Debug, Clone)]
pub struct ContainerService {
    containers: Arc<Containers>,
    gate: Arc<Gate>,
    admitted: Arc<std::sync::Mutex<std::collections::HashMap<String, Admitted>>>,
}

impl ContainerService {
    /// A service over the pod's containers, each request decided by `gate`.
    pub fn new(containers: Containers, gate: Arc<Gate>) -> Self {
        ContainerService {
            containers: Arc::new(containers),
            gate,
            admitted: Arc::default(),
        }
    }

    fn admitted(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Admitted>> {
        self.admitted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decides a request by the policy; `input` is the request as the policy sees it.
    fn admit(&self, request: AgentRequest, input: impl FnOnce() -> Value) -> ttrpc::Result<()> {
        self.gate.admit(request, input).map_err(|e| e.to_status())
    }

    /// The policy input of a request that names a container and a process.
    fn named(&self, container_id: &str, exec_id: &str) -> Value {
        json!({"container_id": container_id, "exec_id": exec_id})
    }
}

/// Parses JSON the host sent (bounded by the API) for the policy's input; malformed JSON is the
/// handlers' to refuse, so it becomes null here (and the policy refuses a null spec).
fn parsed(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

/// The one place container errors become ttrpc codes.
fn to_status(error: &ContainerError) -> ttrpc::Error {
    use ttrpc::Code;
    let code = match error {
        ContainerError::Pull(pull) => return pull_status(pull),
        ContainerError::Spec(_) | ContainerError::BadId(_) | ContainerError::BadRequest(_) => {
            Code::INVALID_ARGUMENT
        }
        ContainerError::Exists(_) | ContainerError::ExecExists(..) => Code::ALREADY_EXISTS,
        ContainerError::NoContainer(_) | ContainerError::NoProcess(..) => Code::NOT_FOUND,
        ContainerError::State(_) => Code::FAILED_PRECONDITION,
        ContainerError::Exhausted(_) => Code::RESOURCE_EXHAUSTED,
        ContainerError::Unavailable(_) => Code::UNAVAILABLE,
        ContainerError::Cgroup(crate::container::CgroupError::NoController(_)) => {
            Code::FAILED_PRECONDITION
        }
        ContainerError::Runner(crate::container::RunnerError::Stage(_)) => {
            Code::FAILED_PRECONDITION
        }
        ContainerError::Cgroup(_)
        | ContainerError::Rootfs(_)
        | ContainerError::Runner(_)
        | ContainerError::Stdio(_)
        | ContainerError::Task(_) => Code::INTERNAL,
    };
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, chain(error)))
}

fn status<T>(result: Result<T, ContainerError>, rpc: &'static str) -> ttrpc::Result<T> {
    result.map_err(|error| {
        warn!(rpc, error = %chain(&error), "container request failed");
        to_status(&error)
    })
}

fn bad(what: String) -> ttrpc::Error {
    to_status(&ContainerError::BadRequest(what))
}

#[async_trait]
impl Container for ContainerService {
    async fn create_container(
        &self,
        _ctx: &TtrpcContext,
        req: CreateContainerRequest,
    ) -> ttrpc::Result<CreateContainerResponse> {
        if !req.sandbox_id.is_empty() && !tsuba_protocols::agent::is_valid_id(&req.sandbox_id) {
            return Err(to_status(&ContainerError::BadId("sandbox_id")));
        }
        if req.oci_spec.len() > tsuba_protocols::agent::MAX_OCI_SPEC {
            return Err(bad(format!(
                "the OCI spec is {} bytes, more than {}",
                req.oci_spec.len(),
                tsuba_protocols::agent::MAX_OCI_SPEC
            )));
        }
        let spec = parsed(&req.oci_spec);
        let name = spec["annotations"]["io.kubernetes.cri.container-name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let deciding = std::time::Instant::now();
        self.admit(AgentRequest::CreateContainer, || {
            json!({
                "container_id": req.container_id,
                "sandbox_id": req.sandbox_id,
                "image": req.image,
                "oci": spec,
            })
        })?;
        let policy_us = u64::try_from(deciding.elapsed().as_micros()).unwrap_or(u64::MAX);
        let created = status(
            self.containers
                .create(&req.container_id, &req.image, &req.oci_spec)
                .await,
            "CreateContainer",
        )?;
        self.admitted().insert(
            req.container_id.clone(),
            Admitted {
                name,
                image: req.image.clone(),
            },
        );
        let mut resp = CreateContainerResponse::new();
        resp.pid = created.pid;
        resp.manifest_digest = created.manifest_digest;
        resp.pulled = created.pulled;
        resp.attest_ms = tsuba_protocols::agent::millis(created.pull_timings.attest);
        resp.pull_ms = tsuba_protocols::agent::millis(created.pull_timings.pull);
        resp.setup_ms = tsuba_protocols::agent::millis(created.setup);
        resp.policy_us = policy_us;
        Ok(resp)
    }

    async fn start_container(
        &self,
        _ctx: &TtrpcContext,
        req: StartContainerRequest,
    ) -> ttrpc::Result<Empty> {
        self.admit(AgentRequest::StartContainer, || {
            self.named(&req.container_id, "")
        })?;
        status(
            self.containers.start(&req.container_id).await,
            "StartContainer",
        )?;
        Ok(Empty::new())
    }

    async fn exec_process(
        &self,
        _ctx: &TtrpcContext,
        req: ExecProcessRequest,
    ) -> ttrpc::Result<ExecProcessResponse> {
        if req.process.len() > tsuba_protocols::agent::MAX_OCI_SPEC {
            return Err(bad("the exec's process is larger than 1 MiB".into()));
        }
        let container = self
            .admitted()
            .get(&req.container_id)
            .cloned()
            .unwrap_or_default();
        self.admit(AgentRequest::ExecProcess, || {
            json!({
                "container_id": req.container_id,
                "exec_id": req.exec_id,
                "process": parsed(&req.process),
                "container": {"name": container.name, "image": container.image},
            })
        })?;
        let pid = status(
            self.containers
                .exec(&req.container_id, &req.exec_id, &req.process)
                .await,
            "ExecProcess",
        )?;
        let mut resp = ExecProcessResponse::new();
        resp.pid = pid;
        Ok(resp)
    }

    async fn signal_process(
        &self,
        _ctx: &TtrpcContext,
        req: SignalProcessRequest,
    ) -> ttrpc::Result<Empty> {
        self.admit(AgentRequest::SignalProcess, || {
            json!({"container_id": req.container_id, "exec_id": req.exec_id,
                   "signal": req.signal, "all": req.all})
        })?;
        status(
            self.containers
                .signal(&req.container_id, &req.exec_id, req.signal, req.all)
                .await,
            "SignalProcess",
        )?;
        Ok(Empty::new())
    }

    async fn wait_process(
        &self,
        _ctx: &TtrpcContext,
        req: WaitProcessRequest,
    ) -> ttrpc::Result<WaitProcessResponse> {
        self.admit(AgentRequest::WaitProcess, || {
            self.named(&req.container_id, &req.exec_id)
        })?;
        let exit = status(
            self.containers.wait(&req.container_id, &req.exec_id).await,
            "WaitProcess",
        )?;
        let mut resp = WaitProcessResponse::new();
        resp.exit_status = exit.status;
        resp.oom_killed = exit.oom_killed;
        Ok(resp)
    }

    async fn write_stdin(
        &self,
        _ctx: &TtrpcContext,
        req: WriteStreamRequest,
    ) -> ttrpc::Result<WriteStreamResponse> {
        if req.data.len() > MAX_STDIO_CHUNK {
            return Err(bad(format!(
                "stdin write of {} bytes, more than {MAX_STDIO_CHUNK}",
                req.data.len()
            )));
        }
        self.admit(AgentRequest::WriteStream, || {
            json!({"container_id": req.container_id, "exec_id": req.exec_id,
                   "stream": "stdin", "len": req.data.len()})
        })?;
        let process = status(
            self.containers.io(&req.container_id, &req.exec_id),
            "WriteStdin",
        )?;
        let written = crate::container::write_stdin(&process.io, &req.data)
            .await
            .map_err(ContainerError::Stdio);
        let written = status(written, "WriteStdin")?
            .ok_or_else(|| to_status(&ContainerError::State("stdin is closed".into())))?;
        let mut resp = WriteStreamResponse::new();
        resp.len = u32::try_from(written).unwrap_or(u32::MAX);
        Ok(resp)
    }

    async fn close_stdin(
        &self,
        _ctx: &TtrpcContext,
        req: CloseStdinRequest,
    ) -> ttrpc::Result<Empty> {
        self.admit(AgentRequest::CloseStdin, || {
            self.named(&req.container_id, &req.exec_id)
        })?;
        let process = status(
            self.containers.io(&req.container_id, &req.exec_id),
            "CloseStdin",
        )?;
        status(
            crate::container::close_stdin(&process.io)
                .await
                .map_err(ContainerError::Stdio),
            "CloseStdin",
        )?;
        Ok(Empty::new())
    }

    async fn read_stdout(
        &self,
        _ctx: &TtrpcContext,
        req: ReadStreamRequest,
    ) -> ttrpc::Result<ReadStreamResponse> {
        self.read(req, false).await
    }

    async fn read_stderr(
        &self,
        _ctx: &TtrpcContext,
        req: ReadStreamRequest,
    ) -> ttrpc::Result<ReadStreamResponse> {
        self.read(req, true).await
    }

    async fn tty_win_resize(
        &self,
        _ctx: &TtrpcContext,
        req: TtyWinResizeRequest,
    ) -> ttrpc::Result<Empty> {
        let (Ok(rows), Ok(columns)) = (u16::try_from(req.rows), u16::try_from(req.columns)) else {
            return Err(bad("rows and columns must fit in 16 bits".into()));
        };
        self.admit(AgentRequest::TtyWinResize, || {
            self.named(&req.container_id, &req.exec_id)
        })?;
        let process = status(
            self.containers.io(&req.container_id, &req.exec_id),
            "TtyWinResize",
        )?;
        let resized = status(
            crate::container::resize(&process.io, rows, columns).map_err(ContainerError::Stdio),
            "TtyWinResize",
        )?;
        if !resized {
            return Err(to_status(&ContainerError::State(
                "the process has no terminal".into(),
            )));
        }
        Ok(Empty::new())
    }

    async fn list_processes(
        &self,
        _ctx: &TtrpcContext,
        req: ListProcessesRequest,
    ) -> ttrpc::Result<ListProcessesResponse> {
        self.admit(AgentRequest::ListProcesses, || {
            self.named(&req.container_id, "")
        })?;
        let pids = status(self.containers.pids(&req.container_id), "ListProcesses")?;
        let mut resp = ListProcessesResponse::new();
        resp.pids = pids;
        Ok(resp)
    }

    async fn stats_container(
        &self,
        _ctx: &TtrpcContext,
        req: StatsContainerRequest,
    ) -> ttrpc::Result<StatsContainerResponse> {
        self.admit(AgentRequest::StatsContainer, || {
            self.named(&req.container_id, "")
        })?;
        let stats = status(self.containers.stats(&req.container_id), "StatsContainer")?;
        let mut resp = StatsContainerResponse::new();
        resp.memory_usage_bytes = stats.memory_usage;
        resp.memory_limit_bytes = stats.memory_limit;
        resp.oom_kills = stats.oom_kills;
        resp.cpu_usage_usec = stats.cpu_usage_usec;
        resp.cpu_user_usec = stats.cpu_user_usec;
        resp.cpu_system_usec = stats.cpu_system_usec;
        resp.pids = stats.pids;
        Ok(resp)
    }

    async fn remove_container(
        &self,
        _ctx: &TtrpcContext,
        req: RemoveContainerRequest,
    ) -> ttrpc::Result<Empty> {
        self.admit(AgentRequest::RemoveContainer, || {
            self.named(&req.container_id, "")
        })?;
        let timeout = Duration::from_secs(u64::from(req.timeout_secs.min(MAX_REMOVE_TIMEOUT)));
        status(
            self.containers.remove(&req.container_id, timeout).await,
            "RemoveContainer",
        )?;
        self.admitted().remove(&req.container_id);
        Ok(Empty::new())
    }

    async fn get_oom_event(
        &self,
        _ctx: &TtrpcContext,
        _req: GetOOMEventRequest,
    ) -> ttrpc::Result<OOMEvent> {
        self.admit(AgentRequest::GetOomEvent, || json!({}))?;
        let id = self.containers.next_oom().await.ok_or_else(|| {
            to_status(&ContainerError::Unavailable("the OOM watch stopped".into()))
        })?;
        let mut event = OOMEvent::new();
        event.container_id = id;
        Ok(event)
    }
}

impl ContainerService {
    async fn read(
        &self,
        req: ReadStreamRequest,
        stderr: bool,
    ) -> ttrpc::Result<ReadStreamResponse> {
        let max = req.max_len as usize;
        if max == 0 || max > MAX_STDIO_CHUNK {
            return Err(bad(format!(
                "max_len {max} is not within 1..={MAX_STDIO_CHUNK}"
            )));
        }
        self.admit(AgentRequest::ReadStream, || {
            json!({"container_id": req.container_id, "exec_id": req.exec_id,
                   "stream": if stderr { "stderr" } else { "stdout" }})
        })?;
        let process = status(
            self.containers.io(&req.container_id, &req.exec_id),
            if stderr { "ReadStderr" } else { "ReadStdout" },
        )?;
        let stream = if stderr {
            &process.io.stderr
        } else {
            &process.io.stdout
        };
        let mut resp = ReadStreamResponse::new();
        match stream.read(max).await {
            Some(data) => resp.data = data,
            None => resp.eof = true,
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::SpecError;

    fn code(error: &ContainerError) -> (ttrpc::Code, String) {
        match to_status(error) {
            ttrpc::Error::RpcStatus(status) => (status.code(), status.message),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_refused_spec_is_invalid_argument_naming_what() {
        let (c, message) = code(&ContainerError::Spec(SpecError::Refused(
            "bind mount of \"/etc\" on /host".into(),
        )));
        assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT);
        assert_eq!(
            message,
            "the OCI spec is not accepted: refused: bind mount of \"/etc\" on /host"
        );
    }

    #[test]
    fn lookups_and_states_get_their_codes() {
        assert_eq!(
            code(&ContainerError::NoContainer("c1".into())),
            (ttrpc::Code::NOT_FOUND, "no container c1".into())
        );
        assert_eq!(
            code(&ContainerError::Exists("c1".into())).0,
            ttrpc::Code::ALREADY_EXISTS
        );
        assert_eq!(
            code(&ContainerError::BadId("exec_id")).0,
            ttrpc::Code::INVALID_ARGUMENT
        );
        assert_eq!(
            code(&ContainerError::Pull(
                crate::pull::GuestPullError::BadReference
            ))
            .0,
            ttrpc::Code::INVALID_ARGUMENT
        );
    }
}
