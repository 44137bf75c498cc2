//! The agent policy: Rego that decides every request the host sends the guest agent.
//!
//! The policy comes in initdata (`policy.rego`), so its digest is part of the evidence. It is
//! `package agent_policy` and defines one rule per request message (`CreateContainerRequest`,
//! `ExecProcessRequest`, `ReadStreamRequest`...), named as in Kata's agent policy where the two
//! APIs overlap. The agent evaluates the request's rule with the request as `input`; anything but
//! `true` refuses it, with the strings of the policy's `reasons` set as the explanation.
//!
//! tsuba's rules (`rego/rules.rego`) read a `policy_data` object ([`PolicyData`]) that lists what
//! one pod may run; [`render_policy`] puts the two together, and `tsuba policy generate` fills
//! the data from a Pod YAML. A hand-written policy only has to define the rules.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The rules every generated policy carries, after its `policy_data`.
pub const AGENT_POLICY_RULES: &str = include_str!("../rego/rules.rego");

/// A policy that allows every request, exec and stdin included: for debugging only, and chosen
/// explicitly (it is in initdata, so the broker sees it).
pub const PERMISSIVE_POLICY: &str = include_str!("../rego/permissive.rego");

/// The largest policy text accepted. It travels in initdata ([`crate::MAX_INITDATA_LEN`]).
pub const MAX_AGENT_POLICY_LEN: usize = 192 * 1024;

/// The largest request input evaluated, as JSON (an OCI spec is at most 1 MiB on the API).
const MAX_INPUT_LEN: usize = 2 * 1024 * 1024;

/// The requests the agent decides by policy: one rule each, named as the request message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentRequest {
    /// `Container.CreateContainer`: the image and the full OCI spec.
    CreateContainer,
    /// `Container.StartContainer`.
    StartContainer,
    /// `Container.ExecProcess`: the OCI process, and the container it runs in.
    ExecProcess,
    /// `Container.SignalProcess`.
    SignalProcess,
    /// `Container.WaitProcess`.
    WaitProcess,
    /// `Container.ReadStdout` / `ReadStderr` (`input.stream` says which).
    ReadStream,
    /// `Container.WriteStdin` (`input.stream` is `stdin`).
    WriteStream,
    /// `Container.CloseStdin`.
    CloseStdin,
    /// `Container.TtyWinResize`.
    TtyWinResize,
    /// `Container.ListProcesses`.
    ListProcesses,
    /// `Container.StatsContainer`.
    StatsContainer,
    /// `Container.RemoveContainer`.
    RemoveContainer,
    /// `Container.GetOOMEvent`.
    GetOomEvent,
    /// `Image.Pull`.
    PullImage,
    /// `Attestation.GetDiagnosticReport`.
    DiagnosticReport,
}

impl AgentRequest {
    /// Every request, in the API's order.
    pub const ALL: [AgentRequest; 15] = [
        Self::CreateContainer,
        Self::StartContainer,
        Self::ExecProcess,
        Self::SignalProcess,
        Self::WaitProcess,
        Self::ReadStream,
        Self::WriteStream,
        Self::CloseStdin,
        Self::TtyWinResize,
        Self::ListProcesses,
        Self::StatsContainer,
        Self::RemoveContainer,
        Self::GetOomEvent,
        Self::PullImage,
        Self::DiagnosticReport,
    ];

    /// The rule's name: the request message's name.
    pub fn rule(self) -> &'static str {
        match self {
            Self::CreateContainer => "CreateContainerRequest",
            Self::StartContainer => "StartContainerRequest",
            Self::ExecProcess => "ExecProcessRequest",
            Self::SignalProcess => "SignalProcessRequest",
            Self::WaitProcess => "WaitProcessRequest",
            Self::ReadStream => "ReadStreamRequest",
            Self::WriteStream => "WriteStreamRequest",
            Self::CloseStdin => "CloseStdinRequest",
            Self::TtyWinResize => "TtyWinResizeRequest",
            Self::ListProcesses => "ListProcessesRequest",
            Self::StatsContainer => "StatsContainerRequest",
            Self::RemoveContainer => "RemoveContainerRequest",
            Self::GetOomEvent => "GetOOMEventRequest",
            Self::PullImage => "PullImageRequest",
            Self::DiagnosticReport => "DiagnosticReportRequest",
        }
    }

    /// The request named by its rule (`CreateContainerRequest`...).
    pub fn from_rule(rule: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.rule() == rule)
    }
}

impl fmt::Display for AgentRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.rule())
    }
}

/// What one pod may run: the data the rules of [`AGENT_POLICY_RULES`] compare requests with.
///
/// Field order is the output order, so one Pod YAML always gives the same policy bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyData {
    /// The containers the pod may create.
    pub containers: Vec<ContainerPolicy>,
    /// Whether the host may read the containers' stdout.
    pub read_stdout: bool,
    /// Whether the host may read the containers' stderr.
    pub read_stderr: bool,
    /// Whether the host may write to the containers' stdin.
    pub write_stdin: bool,
}

impl Default for PolicyData {
    /// The default of a confidential launch: no container, output readable, no stdin.
    fn default() -> Self {
        Self {
            containers: Vec::new(),
            read_stdout: true,
            read_stderr: true,
            write_stdin: false,
        }
    }
}

/// One container the pod may create, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerPolicy {
    /// The CRI container name (`io.kubernetes.cri.container-name`); without CRI, containers
    /// are matched by image.
    pub name: String,
    /// The image reference, `name@sha256:<digest>` unless `signed`.
    pub image: String,
    /// The image is covered by the signature policy in initdata: any tag or digest of its
    /// repository is allowed, the signature policy decides which manifests are accepted.
    pub signed: bool,
    /// The process's exact arguments; empty allows only the image's own entrypoint and command.
    pub args: Vec<String>,
    /// Environment entries (`NAME=value`) allowed exactly.
    pub env: Vec<String>,
    /// Environment variables allowed with any value (set by the runtime, e.g. `HOSTNAME`).
    pub env_any_value: Vec<String>,
    /// The working directory required, or empty for any.
    pub cwd: String,
    /// The user ID required, or none for any.
    pub uid: Option<u32>,
    /// Capabilities the process may hold, in any of its sets.
    pub capabilities: Vec<String>,
    /// Mounts the spec may have.
    pub mounts: Vec<MountPolicy>,
    /// The spec must carry a seccomp profile that does not allow every system call.
    pub seccomp_required: bool,
    /// The process must run with `noNewPrivileges`.
    pub no_new_privileges: bool,
    /// Commands (exact arguments) the host may exec in the container; empty forbids exec.
    pub exec: Vec<Vec<String>>,
}

/// A mount the spec may have, matched exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountPolicy {
    /// Where it is mounted in the container.
    pub destination: String,
    /// The file system type (`proc`, `tmpfs`...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The mount's source.
    pub source: String,
}

/// The policy text for `data`: the package, the data, then [`AGENT_POLICY_RULES`].
pub fn render_policy(data: &PolicyData) -> String {
    // serde_json cannot fail on these types (string keys, no maps with other keys).
    let json = serde_json::to_string_pretty(data).unwrap_or_else(|_| "{}".to_owned());
    format!(
        "package agent_policy\n\n# What this pod may run (tsuba policy generate).\npolicy_data := {json}\n\n{AGENT_POLICY_RULES}"
    )
}

/// The policy a confidential launch applies when its initdata carries none: no container runs.
pub fn default_policy_text() -> String {
    render_policy(&PolicyData::default())
}

/// A policy that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AgentPolicyError {
    /// The text is larger than [`MAX_AGENT_POLICY_LEN`].
    #[error("agent policy is {len} bytes, the limit is {MAX_AGENT_POLICY_LEN}")]
    TooLarge {
        /// Length offered.
        len: usize,
    },
    /// The text is not Rego, or not `package agent_policy`, or fails on an empty request.
    #[error("agent policy does not compile: {0}")]
    Compile(String),
}

/// A request the policy refused: the rule, and the policy's reasons.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyRefusal {
    /// The rule that refused (the request message's name).
    pub rule: &'static str,
    /// The policy's reasons, or what went wrong when the rule could not be evaluated.
    pub reasons: Vec<String>,
}

impl fmt::Display for PolicyRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused by the agent policy (rule {})", self.rule)?;
        if !self.reasons.is_empty() {
            write!(f, ": {}", self.reasons.join("; "))?;
        }
        Ok(())
    }
}

/// A compiled agent policy.
#[derive(Clone)]
pub struct AgentPolicy {
    engine: regorus::Engine,
    len: usize,
    /// The requests whose rule the policy defines, in [`AgentRequest::ALL`]'s order.
    defined: [bool; AgentRequest::ALL.len()],
}

impl fmt::Debug for AgentPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentPolicy")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Refusal reasons are cut to this many, each to this many characters: they go back to the
/// host in an error message.
const MAX_REASONS: usize = 16;
const MAX_REASON_LEN: usize = 512;

impl AgentPolicy {
    /// Compiles `text`, which must be `package agent_policy`.
    pub fn compile(text: &str) -> Result<Self, AgentPolicyError> {
        if text.len() > MAX_AGENT_POLICY_LEN {
            return Err(AgentPolicyError::TooLarge { len: text.len() });
        }
        let mut engine = regorus::Engine::new();
        let package = engine
            .add_policy("policy.rego".into(), text.into())
            .map_err(|e| AgentPolicyError::Compile(e.to_string()))?;
        if package != "data.agent_policy" {
            return Err(AgentPolicyError::Compile(format!(
                "the package is {package}, an agent policy is package agent_policy"
            )));
        }
        // Which rules exist (regorus errs on a path that names no rule). A rule that errs on an
        // empty request otherwise (a conflict, a bad builtin call) would refuse every request at
        // run time: refuse the policy now instead.
        // The probes run on the engine itself, not a clone: the first evaluation prepares it
        // (rule analysis, scheduling), and the clone each decision starts from then inherits
        // that instead of preparing again (about 0.45 ms a decision on this machine).
        let mut defined = [false; AgentRequest::ALL.len()];
        engine.set_input(regorus::Value::from(serde_json::json!({})));
        for (slot, request) in defined.iter_mut().zip(AgentRequest::ALL) {
            match engine.eval_rule(format!("data.agent_policy.{}", request.rule())) {
                Ok(_) => *slot = true,
                Err(e) if e.to_string().contains("not a valid rule path") => {}
                Err(e) => {
                    return Err(AgentPolicyError::Compile(format!(
                        "{}: {e}",
                        request.rule()
                    )));
                }
            }
        }
        Ok(Self {
            engine,
            len: text.len(),
            defined,
        })
    }

    /// Decides `request` with `input` (the request as JSON). Fails closed: an undefined rule, a
    /// non-boolean or an evaluation error is a refusal.
    pub fn decide(&self, request: AgentRequest, input: &Value) -> Result<(), PolicyRefusal> {
        let refusal = |reasons: Vec<String>| PolicyRefusal {
            rule: request.rule(),
            reasons,
        };
        let encoded_len = serde_json::to_vec(input).map_or(usize::MAX, |v| v.len());
        if encoded_len > MAX_INPUT_LEN {
            return Err(refusal(vec![format!(
                "the request is larger than {MAX_INPUT_LEN} bytes"
            )]));
        }
        let index = AgentRequest::ALL
            .iter()
            .position(|r| *r == request)
            .unwrap_or(0);
        if !self.defined[index] {
            return Err(refusal(vec![format!(
                "the policy defines no rule {} (an undefined rule refuses)",
                request.rule()
            )]));
        }
        let mut engine = self.engine.clone();
        engine.set_input(regorus::Value::from(input.clone()));
        let decision = engine
            .eval_rule(format!("data.agent_policy.{}", request.rule()))
            .map_err(|e| refusal(vec![format!("the policy could not be evaluated: {e}")]))?;
        if decision == regorus::Value::from(true) {
            return Ok(());
        }
        let mut reasons = reasons(&mut engine);
        if reasons.is_empty() && decision != regorus::Value::from(false) {
            reasons.push(format!(
                "{} is not true or false for this request",
                request.rule()
            ));
        }
        Err(refusal(reasons))
    }
}

/// The policy's `reasons`, sorted, bounded; none when it defines none.
fn reasons(engine: &mut regorus::Engine) -> Vec<String> {
    let Ok(value) = engine.eval_rule("data.agent_policy.reasons".into()) else {
        return Vec::new();
    };
    let Ok(json) = value.to_json_str() else {
        return Vec::new();
    };
    let mut reasons: Vec<String> = serde_json::from_str::<Vec<Value>>(&json)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.as_str().map(|s| s.chars().take(MAX_REASON_LEN).collect()))
        .collect();
    reasons.sort();
    reasons.truncate(MAX_REASONS);
    reasons
}

#[cfg(test)]
mod tests;
