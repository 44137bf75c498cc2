//! Evidence verifiers: one implementation per TEE behind one trait, picked by the TEE type the
//! guest named in its request. Simulated roots are only registered when the broker runs with
//! [`EvidenceTrust::InsecureAcceptSimulated`], Trustee's `sample` TEE only with
//! [`EvidenceTrust::InsecureAcceptSample`], and neither exists in a build without the
//! `insecure-sim` feature.

#[cfg(feature = "insecure-sim")]
mod sample;
mod snp;
mod snp_evidence;
mod snp_trust;
mod tdx;

use std::collections::HashMap;
use std::time::SystemTime;

use kbs_types::Tee;
use serde::Serialize;
use serde_json::Value;

use crate::binding::BindingDigest;

#[cfg(feature = "insecure-sim")]
pub(crate) use sample::SampleVerifier;
pub use snp::{SnpSetupError, SnpVerifier};
pub use snp_trust::{SnpCrlError, SnpMinTcbError, SnpProduct, SnpRefusal, parse_snp_min_tcb};
pub use tdx::{TdxSetupError, TdxVerifier};

/// Which evidence the broker trusts. There is no default: the caller chooses. Every variant but
/// [`Self::HardwareOnly`] needs the `insecure-sim` feature to accept anything more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidenceTrust {
    /// Only evidence chained to the hardware vendors' real roots.
    HardwareOnly,
    /// Also evidence signed by tee-sim's simulated roots. Every token is marked simulated.
    /// Never for production.
    InsecureAcceptSimulated,
    /// Also Trustee's unsigned `sample` TEE, whose measurement is whatever the client claims.
    /// Every token is marked simulated. Never for production.
    InsecureAcceptSample,
    /// Both of the above.
    InsecureAcceptSimulatedAndSample,
}

impl EvidenceTrust {
    /// The trust for the two insecure options.
    pub fn new(accept_simulated: bool, accept_sample: bool) -> Self {
        match (accept_simulated, accept_sample) {
            (false, false) => Self::HardwareOnly,
            (true, false) => Self::InsecureAcceptSimulated,
            (false, true) => Self::InsecureAcceptSample,
            (true, true) => Self::InsecureAcceptSimulatedAndSample,
        }
    }

    /// Whether verifiers trusting tee-sim's roots may be registered.
    pub fn accepts_simulated_roots(self) -> bool {
        matches!(
            self,
            Self::InsecureAcceptSimulated | Self::InsecureAcceptSimulatedAndSample
        )
    }

    /// Whether Trustee's `sample` TEE is accepted.
    pub fn accepts_sample(self) -> bool {
        matches!(
            self,
            Self::InsecureAcceptSample | Self::InsecureAcceptSimulatedAndSample
        )
    }

    /// Whether any insecure option is on.
    pub fn is_insecure(self) -> bool {
        self != Self::HardwareOnly
    }

    /// The insecure options that are on, by name (empty for hardware only).
    pub fn insecure_options(self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.accepts_simulated_roots() {
            names.push("accept-simulated-evidence");
        }
        if self.accepts_sample() {
            names.push("accept-sample-evidence");
        }
        names
    }
}

/// The verified, TEE-independent view of evidence that policies are evaluated over.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Claims {
    /// TEE type (`snp`, `tdx`, `sample`).
    pub tee: String,
    /// True when the evidence is signed by simulated roots or is sample evidence.
    pub simulated: bool,
    /// The launch measurement (SNP `MEASUREMENT`, TDX `MRTD`), lowercase hex.
    pub measurement: String,
    /// Whether the guest runs with debug enabled.
    pub debug: bool,
    /// The report data from the evidence, lowercase hex.
    pub report_data: String,
    /// Host-provided data bound at launch (SNP `HOST_DATA`, TDX `MRCONFIGID`), lowercase hex.
    pub host_data: String,
    /// TEE-specific details (TCB versions, policy bits, RTMRs, ...).
    pub details: Value,
    /// The same evidence under the names Trustee's verifier gives it, beside tsuba's own (SNP:
    /// `policy_debug_allowed`, `reported_tcb_snp`, `platform_smt_enabled`, `chip_id`...; TDX:
    /// `quote.header.*`, `quote.body.*`, `td_attributes.*`, `tcb_status`; sample: `svn`,
    /// `launch_digest`), so a policy that reads Trustee's claims reads them here too.
    #[serde(flatten)]
    pub trustee: serde_json::Map<String, Value>,
}

/// Why evidence was refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    /// The evidence JSON does not have the shape this TEE's evidence has.
    #[error("evidence is malformed: {what}")]
    Malformed {
        /// What was wrong.
        what: &'static str,
    },
    /// The evidence JSON did not parse into this TEE's evidence type.
    #[error("evidence is malformed")]
    Json(#[source] serde_json::Error),
    /// The report data does not carry the binding of this session's nonce and key.
    #[error("report data does not bind this session's nonce and tee key")]
    ReportDataMismatch,
    /// A signature over the evidence or a certificate does not verify.
    #[error("{what} signature does not verify")]
    Signature {
        /// What was signed.
        what: &'static str,
    },
    /// A certificate is not valid at the verification time.
    #[error("{what} certificate is not valid at this time")]
    CertificateDates {
        /// Which certificate.
        what: &'static str,
    },
    /// The reported TCB does not match what the signing certificate certifies.
    #[error("reported tcb does not match the certificate's tcb: {what}")]
    TcbMismatch {
        /// Which component.
        what: String,
    },
    /// No certificate to verify the evidence with.
    #[error("no {what} certificate available for this evidence")]
    MissingCertificate {
        /// Which certificate.
        what: &'static str,
    },
    /// A certificate could not be parsed.
    #[error("{what} certificate is malformed")]
    Certificate {
        /// Which certificate.
        what: &'static str,
    },
    /// The platform's TCB level is not up to date or the collateral is not valid.
    #[error("platform tcb is not acceptable: {status}")]
    TcbStatus {
        /// The status reported by the quote verification.
        status: String,
    },
    /// The SNP report is authentic but the broker's SNP requirements (minimum TCB, no
    /// migration agent, revocation) refuse it.
    #[error("snp report refused")]
    SnpRefused(#[source] SnpRefusal),
    /// Quote verification failed.
    #[error("quote verification failed")]
    Quote(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The CC event log is not a well-formed TCG event log.
    #[error("cc event log is malformed")]
    EventLog(#[source] tsuba_protocols::evidence::ccel::EventLogError),
    /// The CC event log does not replay to the quote's RTMRs: it does not describe this TD's boot.
    #[error("cc event log does not replay to the quote's rtmr{register}")]
    EventLogMismatch {
        /// The first RTMR (0 to 2) whose replayed value differs from the quote's.
        register: usize,
    },
}

/// Verifies one TEE's evidence.
pub trait Verifier: Send + Sync {
    /// Verifies `evidence` (the `primary_evidence` JSON) at time `now`: signature, certificate
    /// chain, TCB, and that its report data carries `binding`. Returns the claims on success.
    fn verify(
        &self,
        evidence: &Value,
        binding: &BindingDigest,
        now: SystemTime,
    ) -> Result<Claims, VerifierError>;

    /// Whether this verifier trusts any simulated root. Such a verifier can only join a
    /// [`VerifierSet`] whose trust accepts simulated roots.
    fn trusts_simulated_roots(&self) -> bool {
        false
    }
}

/// A verifier trusting simulated roots was offered to a hardware-only broker.
#[derive(Debug, thiserror::Error)]
#[error("verifier for {tee} trusts simulated roots but the broker accepts hardware evidence only")]
pub struct SimulatedRootsRefused {
    tee: String,
}

impl SimulatedRootsRefused {
    pub(crate) fn new(tee: &str) -> Self {
        Self {
            tee: tee.to_owned(),
        }
    }
}

/// The verifiers this broker runs, by TEE type.
pub struct VerifierSet {
    trust: EvidenceTrust,
    /// Insecure options of the verifiers besides `trust` (e.g. any SNP TCB).
    insecure_marks: Vec<&'static str>,
    verifiers: HashMap<Tee, Box<dyn Verifier>>,
}

impl std::fmt::Debug for VerifierSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifierSet")
            .field("trust", &self.trust)
            .field("tees", &self.verifiers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl VerifierSet {
    /// A set for `trust`: empty, except for the `sample` verifier when `trust` accepts sample
    /// evidence and this build has the `insecure-sim` feature.
    pub fn new(trust: EvidenceTrust) -> Self {
        #[cfg_attr(
            not(feature = "insecure-sim"),
            expect(unused_mut, reason = "only the sample verifier is inserted here")
        )]
        let mut verifiers: HashMap<Tee, Box<dyn Verifier>> = HashMap::new();
        #[cfg(feature = "insecure-sim")]
        if trust.accepts_sample() {
            verifiers.insert(Tee::Sample, Box::new(SampleVerifier));
        }
        Self {
            trust,
            insecure_marks: Vec::new(),
            verifiers,
        }
    }

    /// Records that a verifier runs with the insecure option `name`, so that the broker's trust
    /// mode (and with it the token signing key) changes when the option does.
    pub fn mark_insecure(&mut self, name: &'static str) {
        if !self.insecure_marks.contains(&name) {
            self.insecure_marks.push(name);
        }
    }

    /// Every insecure option this set runs with, by name.
    pub fn insecure_options(&self) -> Vec<&'static str> {
        let mut names = self.trust.insecure_options();
        names.extend(&self.insecure_marks);
        names
    }

    /// Which evidence this set trusts.
    pub fn trust(&self) -> EvidenceTrust {
        self.trust
    }

    /// Adds or replaces the verifier for `tee`. A verifier that trusts simulated roots is
    /// refused unless the set was built for [`EvidenceTrust::InsecureAcceptSimulated`].
    pub fn insert(
        &mut self,
        tee: Tee,
        verifier: Box<dyn Verifier>,
    ) -> Result<(), SimulatedRootsRefused> {
        if verifier.trusts_simulated_roots() && !self.trust.accepts_simulated_roots() {
            return Err(SimulatedRootsRefused {
                tee: tee.to_string(),
            });
        }
        self.verifiers.insert(tee, verifier);
        Ok(())
    }

    /// The verifier for `tee`, if the broker accepts that TEE.
    pub fn get(&self, tee: Tee) -> Option<&dyn Verifier> {
        self.verifiers.get(&tee).map(Box::as_ref)
    }

    /// Whether `tee` is accepted.
    pub fn accepts(&self, tee: Tee) -> bool {
        self.verifiers.contains_key(&tee)
    }
}
