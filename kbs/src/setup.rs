//! Building the broker's verifier set from operator options: AMD's and Intel's real roots
//! always; tee-sim's roots and Trustee's `sample` TEE only under
//! [`EvidenceTrust::InsecureAcceptSimulated`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use tsuba_protocols::evidence::TcbParts;

use crate::verifier::{
    EvidenceTrust, SimulatedRootsRefused, SnpProduct, SnpSetupError, SnpVerifier, TdxSetupError,
    TdxVerifier, VerifierSet,
};

/// The TCB the broker requires of SNP reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnpTcbOption {
    /// At least these SVNs per product; reports of other products are refused. Empty: every
    /// SNP report is refused, saying that no minimum is configured.
    Minimum(BTreeMap<SnpProduct, TcbParts>),
    /// INSECURE: any TCB, including firmware with flaws a hypervisor can exploit.
    InsecureAcceptAny,
}

/// Where the verifiers find their trust anchors and collateral.
#[derive(Debug, Clone)]
pub struct VerifierOptions {
    /// Which evidence is trusted.
    pub trust: EvidenceTrust,
    /// tee-sim's state directory, whose simulated AMD roots are trusted (only with
    /// [`EvidenceTrust::InsecureAcceptSimulated`]).
    pub sim_state_dir: Option<PathBuf>,
    /// Directory of VCEK certificates (DER) for SNP reports without a certificate table.
    pub snp_vcek_cache: Option<PathBuf>,
    /// The minimum SNP TCB.
    pub snp_tcb: SnpTcbOption,
    /// AMD certificate revocation lists (PEM or DER, each signed by a trusted ARK or ASK).
    pub snp_crls: Vec<PathBuf>,
    /// Directory of DCAP collateral JSON files for TDX quotes.
    pub tdx_collateral_dir: Option<PathBuf>,
    /// TDX TCB statuses accepted besides `UpToDate`.
    pub tdx_accept_status: Vec<String>,
}

impl VerifierOptions {
    /// Hardware evidence only, no caches.
    pub fn hardware_only() -> Self {
        Self {
            trust: EvidenceTrust::HardwareOnly,
            sim_state_dir: None,
            snp_vcek_cache: None,
            snp_tcb: SnpTcbOption::Minimum(BTreeMap::new()),
            snp_crls: Vec::new(),
            tdx_collateral_dir: None,
            tdx_accept_status: Vec::new(),
        }
    }
}

/// Errors while building the verifiers.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The SNP verifier could not be set up.
    #[error("snp verifier")]
    Snp(#[from] SnpSetupError),
    /// The TDX verifier could not be set up.
    #[error("tdx verifier")]
    Tdx(#[from] TdxSetupError),
    /// tee-sim's state could not be opened.
    #[error("tee-sim state")]
    Sim(#[from] tsuba_tee_sim::AmdSpError),
    /// A revocation list could not be read.
    #[error("snp revocation list {path}")]
    CrlFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A revocation list was refused.
    #[error("snp revocation list {path}")]
    Crl {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: SnpSetupError,
    },
    /// Simulated roots were asked for without the insecure option.
    #[error("simulated roots need the insecure option")]
    SimulatedRoots(#[from] SimulatedRootsRefused),
}

/// Builds the verifier set for `options`.
pub fn build_verifiers(options: &VerifierOptions) -> Result<VerifierSet, SetupError> {
    let mut set = VerifierSet::new(options.trust);
    let mut snp = SnpVerifier::with_amd_roots()?;
    if let Some(dir) = &options.snp_vcek_cache {
        snp = snp.with_vcek_cache(dir)?;
    }
    if let Some(dir) = &options.sim_state_dir {
        if options.trust != EvidenceTrust::InsecureAcceptSimulated {
            return Err(SetupError::SimulatedRoots(SimulatedRootsRefused::new(
                "snp",
            )));
        }
        let sp = tsuba_tee_sim::SimAmdSp::open_or_create(dir)?;
        snp = snp.insecure_add_simulated_root(sp.ark_der(), sp.ask_der())?;
        tracing::warn!(dir = %dir.display(), "INSECURE: trusting tee-sim's simulated AMD roots");
    }
    snp = match &options.snp_tcb {
        SnpTcbOption::InsecureAcceptAny => {
            tracing::warn!(
                "INSECURE: accepting SNP reports of any TCB, including firmware with known flaws"
            );
            snp.insecure_accept_any_tcb()
        }
        SnpTcbOption::Minimum(floors) => {
            if floors.is_empty() {
                tracing::warn!(
                    "no minimum SNP TCB is configured (--snp-min-tcb): every SNP report is refused"
                );
            }
            floors.iter().fold(snp, |snp, (product, min)| {
                tracing::info!(%product, ?min, "minimum SNP TCB");
                snp.with_min_tcb(*product, *min)
            })
        }
    };
    for path in &options.snp_crls {
        let bytes = std::fs::read(path).map_err(|source| SetupError::CrlFile {
            path: path.clone(),
            source,
        })?;
        let (with_crl, revoked) = snp.with_crl(&bytes).map_err(|source| SetupError::Crl {
            path: path.clone(),
            source,
        })?;
        snp = with_crl;
        tracing::info!(path = %path.display(), revoked, "SNP revocation list loaded");
    }
    set.insert(kbs_types::Tee::Snp, Box::new(snp))?;
    let mut tdx = TdxVerifier::with_intel_root();
    if let Some(dir) = &options.tdx_collateral_dir {
        tdx = tdx.with_collateral_dir(dir)?;
    }
    for status in &options.tdx_accept_status {
        tdx = tdx.accept_tcb_status(status);
    }
    set.insert(kbs_types::Tee::Tdx, Box::new(tdx))?;
    Ok(set)
}

#[cfg(test)]
mod tests {
    use kbs_types::Tee;

    use super::*;

    #[test]
    fn hardware_only_has_snp_and_tdx_but_not_sample() {
        let set = build_verifiers(&VerifierOptions::hardware_only()).unwrap();
        assert!(set.accepts(Tee::Snp) && set.accepts(Tee::Tdx));
        assert!(!set.accepts(Tee::Sample));
    }

    #[test]
    fn sim_roots_need_the_insecure_option() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = VerifierOptions::hardware_only();
        options.sim_state_dir = Some(dir.path().into());
        assert!(matches!(
            build_verifiers(&options),
            Err(SetupError::SimulatedRoots(_))
        ));
        // Nothing was created in the sim directory either.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn unreadable_or_unsigned_revocation_lists_stop_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = VerifierOptions::hardware_only();
        options.snp_crls = vec![dir.path().join("missing.crl")];
        assert!(matches!(
            build_verifiers(&options),
            Err(SetupError::CrlFile { path, .. }) if path == dir.path().join("missing.crl")
        ));
        std::fs::write(dir.path().join("junk.crl"), b"junk").unwrap();
        options.snp_crls = vec![dir.path().join("junk.crl")];
        assert!(matches!(
            build_verifiers(&options),
            Err(SetupError::Crl {
                source: SnpSetupError::Crl(crate::SnpCrlError::Format),
                ..
            })
        ));
    }

    #[test]
    fn insecure_option_adds_sample() {
        let mut options = VerifierOptions::hardware_only();
        options.trust = EvidenceTrust::InsecureAcceptSimulated;
        let set = build_verifiers(&options).unwrap();
        assert!(set.accepts(Tee::Sample));
    }
}
