//! The pod's initdata in the guest, and the gate every host request passes.
//!
//! The launcher bound the digest of the pod's initdata into the launch (SNP HOST_DATA, TDX
//! MRCONFIGID); the host hands the document itself over the agent API (`Initdata.Provide`). The
//! agent reads the binding from its own attestation report and takes the document only when its
//! digest is that binding. Then, and only then, the document's broker settings configure image
//! pulls and its `policy.rego` decides every request. Until then every request but Health is
//! refused; a document that does not match locks the agent for good, since a host that sends
//! one has shown what it is.
//!
//! A guest without a TEE has no binding to check: nothing about it is confidential, so the gate
//! is open and a document, if given, is taken as it is.

use std::sync::{Arc, RwLock};

use serde_json::Value;
use tracing::{info, warn};
use tsuba_attestation_agent::attester::Attester;
use tsuba_policy::agent::{PERMISSIVE_POLICY, default_policy_text};
use tsuba_policy::{
    AgentPolicy, AgentRequest, GuestSettings, Initdata, POLICY_REGO, PolicyRefusal,
};
use tsuba_protocols::agent::diagnostic_report_data;
use tsuba_protocols::evidence::ReportData;

use crate::config::PullConfig;
use crate::pull::GuestPuller;

/// The nonce of the report the agent reads its own binding from: a fixed, domain-separated
/// value, so this report can never stand in for one of the broker's.
const SELF_CHECK_NONCE: &[u8] = b"tsuba initdata self-check";

/// Which policy the agent enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySource {
    /// The document's `policy.rego`.
    Initdata,
    /// The document has no policy: the default of a confidential launch (no container runs).
    Default,
    /// The document's policy is the permissive debugging one.
    Permissive,
    /// A guest without a TEE, without initdata: nothing is decided (nothing is confidential).
    Open,
}

impl PolicySource {
    /// The name the API answers (`Initdata.Provide`'s `policy`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initdata => "initdata",
            Self::Default => "default",
            Self::Permissive => "permissive",
            Self::Open => "open",
        }
    }
}

/// What the gate holds once initdata was taken.
#[derive(Debug)]
struct Admitted {
    /// None: a guest without a TEE and without initdata.
    policy: Option<AgentPolicy>,
    source: PolicySource,
}

#[derive(Debug)]
enum State {
    /// A TEE guest waiting for its initdata.
    Waiting,
    /// The initdata was refused: the agent is locked.
    Locked(String),
    /// Requests are decided by the policy.
    Admitted(Arc<Admitted>),
}

/// A request the gate did not let through.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// No initdata yet, in a TEE guest.
    #[error(
        "the pod's initdata has not been given: a confidential guest runs nothing until the host \
         provides the document whose digest the launch bound (Initdata.Provide)"
    )]
    Waiting,
    /// The initdata was refused earlier; the agent refuses everything but health.
    #[error("this guest refused its initdata and serves nothing but health: {0}")]
    Locked(String),
    /// The initdata was already taken.
    #[error("the pod's initdata was already given; it cannot change while the guest runs")]
    AlreadyGiven,
    /// The policy refused the request.
    #[error(transparent)]
    Policy(#[from] PolicyRefusal),
}

impl GateError {
    /// The ttrpc status of this refusal.
    pub fn to_status(&self) -> ttrpc::Error {
        let code = match self {
            Self::Waiting | Self::Locked(_) => ttrpc::Code::FAILED_PRECONDITION,
            Self::AlreadyGiven => ttrpc::Code::ALREADY_EXISTS,
            Self::Policy(_) => ttrpc::Code::PERMISSION_DENIED,
        };
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, self.to_string()))
    }
}

/// What `Initdata.Provide` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provided {
    /// The binding in the evidence (hex), empty without a TEE.
    pub binding: String,
    /// The document's digest algorithm.
    pub algorithm: &'static str,
    /// The policy now enforced.
    pub policy: PolicySource,
}

/// The gate: initdata state, and the policy that decides each request.
#[derive(Debug)]
pub struct Gate {
    attester: Result<Arc<dyn Attester>, String>,
    puller: Arc<GuestPuller>,
    state: RwLock<State>,
    /// Serialises `provide` (one document, checked once).
    providing: tokio::sync::Mutex<()>,
}

impl Gate {
    /// The gate of a guest with `attester` (an error: no TEE) whose pulls `puller` makes once
    /// the initdata configures it.
    pub fn new(attester: Result<Arc<dyn Attester>, String>, puller: Arc<GuestPuller>) -> Self {
        let state = if attester.is_ok() {
            State::Waiting
        } else {
            State::Admitted(Arc::new(Admitted {
                policy: None,
                source: PolicySource::Open,
            }))
        };
        Self {
            attester,
            puller,
            state: RwLock::new(state),
            providing: tokio::sync::Mutex::new(()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set(&self, state: State) {
        *self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = state;
    }

    /// Why the agent does not serve, if it does not: for Health.
    pub fn not_serving(&self) -> Option<String> {
        match &*self.read() {
            State::Waiting => Some(GateError::Waiting.to_string()),
            State::Locked(why) => Some(GateError::Locked(why.clone()).to_string()),
            State::Admitted(_) => self.puller.unusable(),
        }
    }

    /// Decides `request`; `input` builds the policy input (only called when a policy decides).
    pub fn admit(
        &self,
        request: AgentRequest,
        input: impl FnOnce() -> Value,
    ) -> Result<(), GateError> {
        let admitted = match &*self.read() {
            State::Waiting => return Err(GateError::Waiting),
            State::Locked(why) => return Err(GateError::Locked(why.clone())),
            State::Admitted(a) => Arc::clone(a),
        };
        let Some(policy) = &admitted.policy else {
            return Ok(());
        };
        policy.decide(request, &input()).map_err(|refusal| {
            warn!(rule = refusal.rule, reasons = ?refusal.reasons, "agent policy refused a request");
            GateError::Policy(refusal)
        })
    }

    /// Takes the pod's initdata: checks its digest against the guest's own evidence, then
    /// configures pulls and the policy from it. Any failure locks the agent (TEE guests).
    pub async fn provide(&self, document: &[u8]) -> Result<Provided, GateError> {
        let _one = self.providing.lock().await;
        match &*self.read() {
            State::Locked(why) => return Err(GateError::Locked(why.clone())),
            State::Admitted(a) if a.source != PolicySource::Open => {
                return Err(GateError::AlreadyGiven);
            }
            State::Admitted(_) | State::Waiting => {}
        }
        let tee = self.attester.is_ok();
        match self.take(document).await {
            Ok((provided, admitted)) => {
                info!(
                    binding = %provided.binding,
                    policy = provided.policy.as_str(),
                    "initdata accepted"
                );
                if provided.policy == PolicySource::Permissive {
                    warn!("INSECURE: the initdata's agent policy is the permissive one");
                }
                self.set(State::Admitted(Arc::new(admitted)));
                Ok(provided)
            }
            Err(why) if tee => {
                warn!(%why, "initdata refused: the agent is locked");
                self.set(State::Locked(why.clone()));
                Err(GateError::Locked(why))
            }
            // No TEE: a broken document is refused, and the open gate stays as it was.
            Err(why) => Err(GateError::Locked(why)),
        }
    }

    async fn take(&self, document: &[u8]) -> Result<(Provided, Admitted), String> {
        let doc = Initdata::from_bytes(document).map_err(|e| format!("{e}"))?;
        let binding = match &self.attester {
            Ok(attester) => self_binding(Arc::clone(attester), &doc).await?,
            Err(_) => {
                warn!("no TEE: the initdata is taken unchecked (nothing binds it)");
                String::new()
            }
        };
        let settings = GuestSettings::from_initdata(&doc).map_err(|e| e.to_string())?;
        let pull = PullConfig::from_settings(&settings).map_err(|e| e.to_string())?;
        let (text, source) = match doc.get(POLICY_REGO) {
            Some(text) if text == PERMISSIVE_POLICY => (text.to_owned(), PolicySource::Permissive),
            Some(text) => (text.to_owned(), PolicySource::Initdata),
            None => (default_policy_text(), PolicySource::Default),
        };
        let policy = AgentPolicy::compile(&text).map_err(|e| format!("initdata's {e}"))?;
        if !self.puller.configure(pull, Some(doc.clone())) {
            return Err("image pulls were configured already".to_owned());
        }
        Ok((
            Provided {
                binding,
                algorithm: doc.algorithm().name(),
                policy: source,
            },
            Admitted {
                policy: Some(policy),
                source,
            },
        ))
    }
}

/// Reads the binding from the guest's own report and compares the document with it.
async fn self_binding(attester: Arc<dyn Attester>, doc: &Initdata) -> Result<String, String> {
    let report_data = ReportData(diagnostic_report_data(SELF_CHECK_NONCE));
    let kind = attester.kind();
    let evidence = tokio::task::spawn_blocking(move || attester.evidence(&report_data))
        .await
        .map_err(|e| format!("the attester task failed: {e}"))?
        .map_err(|e| format!("the {kind} attester gave no report to check initdata with: {e}"))?;
    let claims = evidence
        .claims()
        .map_err(|e| format!("the {kind} report could not be read: {e}"))?;
    let reported = claims.init_data_binding();
    let checked = if let Ok(host_data) = <&[u8; tsuba_policy::HOST_DATA_LEN]>::try_from(reported) {
        doc.verify_host_data(host_data)
    } else if let Ok(mr) = <&[u8; tsuba_policy::MR_CONFIG_ID_LEN]>::try_from(reported) {
        doc.verify_mr_config_id(mr)
    } else {
        return Err(format!(
            "the {kind} report's initdata binding is {} bytes",
            reported.len()
        ));
    };
    checked.map_err(|e| {
        format!(
            "{e}: the document's digest is not {} in this guest's report; the host gave another \
             document than the one the pod was launched with",
            hex::encode(reported)
        )
    })?;
    Ok(hex::encode(reported))
}

#[cfg(test)]
mod tests {
    use tsuba_attestation_agent::attester::{AttesterError, AttesterKind, Evidence};
    use tsuba_policy::{InitdataAlgorithm, PolicyData, render_initdata, render_policy};

    use super::*;

    /// An SNP attester whose reports carry `host_data` (the launch's binding).
    #[derive(Debug)]
    struct FakeSnp {
        host_data: [u8; 32],
    }

    impl Attester for FakeSnp {
        fn kind(&self) -> AttesterKind {
            AttesterKind::Snp
        }

        fn evidence(&self, _report_data: &ReportData) -> Result<Evidence, AttesterError> {
            let mut report = vec![0u8; tsuba_protocols::evidence::SNP_REPORT_LEN];
            report[0] = 3;
            report[0xC0..0xE0].copy_from_slice(&self.host_data);
            Ok(Evidence::Snp {
                report,
                cert_table: None,
            })
        }
    }

    fn document(policy: Option<&str>, marker: &str) -> Initdata {
        let mut data = std::collections::BTreeMap::new();
        data.insert("marker".to_owned(), marker.to_owned());
        if let Some(policy) = policy {
            data.insert(POLICY_REGO.to_owned(), policy.to_owned());
        }
        render_initdata(InitdataAlgorithm::Sha384, &data).unwrap()
    }

    fn gate_for(launched: &Initdata) -> Gate {
        let attester: Arc<dyn Attester> = Arc::new(FakeSnp {
            host_data: *launched.host_data().as_bytes(),
        });
        let puller = Arc::new(GuestPuller::unconfigured(
            Ok(Arc::clone(&attester)),
            std::env::temp_dir(),
        ));
        Gate::new(Ok(attester), puller)
    }

    fn start() -> Value {
        serde_json::json!({"container_id": "c1", "exec_id": ""})
    }

    #[tokio::test]
    async fn a_tee_guest_refuses_everything_until_its_own_initdata_is_given() {
        let doc = document(Some(&render_policy(&PolicyData::default())), "a");
        let gate = gate_for(&doc);
        assert!(matches!(
            gate.admit(AgentRequest::StartContainer, start),
            Err(GateError::Waiting)
        ));
        assert!(
            gate.not_serving()
                .unwrap()
                .contains("initdata has not been given")
        );
        let provided = gate.provide(doc.as_str().as_bytes()).await.unwrap();
        assert_eq!(provided.binding, doc.host_data().to_hex());
        assert_eq!(provided.algorithm, "sha384");
        assert_eq!(provided.policy, PolicySource::Initdata);
        assert_eq!(gate.not_serving(), None);
        gate.admit(AgentRequest::StartContainer, start).unwrap();
        // The generated shape with no container: creating one is refused by the policy.
        assert!(matches!(
            gate.admit(
                AgentRequest::CreateContainer,
                || serde_json::json!({"image": "x", "oci": {}})
            ),
            Err(GateError::Policy(_))
        ));
        // Once given, it cannot change.
        assert!(matches!(
            gate.provide(doc.as_str().as_bytes()).await,
            Err(GateError::AlreadyGiven)
        ));
    }

    #[tokio::test]
    async fn another_document_than_the_launched_one_locks_the_agent_and_says_why() {
        let launched = document(None, "launched");
        let swapped = document(Some(PERMISSIVE_POLICY), "swapped");
        let gate = gate_for(&launched);
        let err = gate.provide(swapped.as_str().as_bytes()).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("does not match the one bound into the launch (HOST_DATA)"),
            "{text}"
        );
        assert!(text.contains(&launched.host_data().to_hex()), "{text}");
        // Locked for good: the right document later changes nothing, and health says why.
        assert!(matches!(
            gate.provide(launched.as_str().as_bytes()).await,
            Err(GateError::Locked(_))
        ));
        assert!(matches!(
            gate.admit(AgentRequest::StartContainer, start),
            Err(GateError::Locked(why)) if why.contains("HOST_DATA")
        ));
        assert!(gate.not_serving().unwrap().contains("refused its initdata"));
        let status = GateError::Locked("x".into()).to_status();
        assert!(
            matches!(status, ttrpc::Error::RpcStatus(s) if s.code() == ttrpc::Code::FAILED_PRECONDITION)
        );
    }

    #[tokio::test]
    async fn malformed_documents_and_policies_lock_a_tee_guest() {
        let launched = document(None, "launched");
        for junk in [
            &b"not toml"[..],
            &[0xFF, 0xFE][..],
            &vec![b'#'; 300 * 1024][..],
        ] {
            let gate = gate_for(&launched);
            assert!(matches!(
                gate.provide(junk).await,
                Err(GateError::Locked(_))
            ));
            assert!(gate.admit(AgentRequest::StartContainer, start).is_err());
        }
        // The right digest but a policy that does not compile: locked, naming the policy.
        let broken = document(Some("package agent_policy\nallow if {"), "broken");
        let gate = gate_for(&broken);
        let err = gate.provide(broken.as_str().as_bytes()).await.unwrap_err();
        assert!(
            err.to_string().contains("agent policy does not compile"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn without_a_policy_nothing_runs_and_the_permissive_one_is_reported() {
        let bare = document(None, "bare");
        let gate = gate_for(&bare);
        assert_eq!(
            gate.provide(bare.as_str().as_bytes()).await.unwrap().policy,
            PolicySource::Default
        );
        assert!(
            gate.admit(
                AgentRequest::PullImage,
                || serde_json::json!({"image": "a:1"})
            )
            .is_err()
        );
        let debug = document(Some(PERMISSIVE_POLICY), "debug");
        let gate = gate_for(&debug);
        assert_eq!(
            gate.provide(debug.as_str().as_bytes())
                .await
                .unwrap()
                .policy,
            PolicySource::Permissive
        );
        gate.admit(AgentRequest::ExecProcess, || serde_json::json!({}))
            .unwrap();
    }

    #[tokio::test]
    async fn a_guest_without_a_tee_is_open_and_takes_a_document_unchecked() {
        let puller = Arc::new(GuestPuller::unconfigured(
            Err("no tee".into()),
            std::env::temp_dir(),
        ));
        let gate = Gate::new(Err("no tee".into()), puller);
        gate.admit(AgentRequest::ExecProcess, || serde_json::json!({}))
            .unwrap();
        let doc = document(Some(&render_policy(&PolicyData::default())), "x");
        let provided = gate.provide(doc.as_str().as_bytes()).await.unwrap();
        assert_eq!(provided.binding, "");
        // From then on its policy decides.
        assert!(
            gate.admit(AgentRequest::ExecProcess, || serde_json::json!({}))
                .is_err()
        );
    }
}
