//! Building the broker's verifier set from operator options: AMD's and Intel's real roots
//! always; tee-sim's public roots (read from the file `tsuba sim export-roots` writes) only
//! under a trust that accepts simulated evidence, Trustee's `sample` TEE only under one that
//! accepts sample evidence, and neither in a build without the `insecure-sim` feature.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// PEM file with tee-sim's public roots (`tsuba sim export-roots`), trusted only when
    /// `trust` accepts simulated evidence.
    pub sim_roots: Option<PathBuf>,
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
            sim_roots: None,
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
    /// An insecure trust was asked of a build without simulation support.
    #[error(
        "this build has no simulation support (cargo feature insecure-sim): it never accepts \
         simulated or sample evidence; use a development build for simulated guests"
    )]
    SimulationNotBuilt,
    /// The simulated roots file could not be read.
    #[error("simulated roots file {path}")]
    SimRootsFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The simulated roots file has no simulated SNP ARK and ASK.
    #[error(
        "simulated roots file {path} has no snp ark and ask certificates: write it with \
         tsuba sim export-roots"
    )]
    NoSimSnpRoots {
        /// The file.
        path: PathBuf,
    },
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
    if options.trust.is_insecure() && !cfg!(feature = "insecure-sim") {
        return Err(SetupError::SimulationNotBuilt);
    }
    let mut set = VerifierSet::new(options.trust);
    let mut snp = SnpVerifier::with_amd_roots()?;
    if let Some(dir) = &options.snp_vcek_cache {
        snp = snp.with_vcek_cache(dir)?;
    }
    if let Some(path) = &options.sim_roots {
        if !options.trust.accepts_simulated_roots() {
            return Err(SetupError::SimulatedRoots(SimulatedRootsRefused::new(
                "snp",
            )));
        }
        snp = add_sim_roots(snp, path)?;
    }
    snp = match &options.snp_tcb {
        SnpTcbOption::InsecureAcceptAny => {
            tracing::warn!(
                "INSECURE: accepting SNP reports of any TCB, including firmware with known flaws"
            );
            set.mark_insecure("snp-accept-any-tcb");
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
    if let Some(path) = &options.sim_roots {
        // The trust was checked with the SNP roots above.
        tdx = add_sim_tdx_root(tdx, path)?;
    }
    for status in &options.tdx_accept_status {
        tdx = tdx.accept_tcb_status(status);
    }
    set.insert(kbs_types::Tee::Tdx, Box::new(tdx))?;
    Ok(set)
}

/// The certificates of the simulated roots file at `path` (`tsuba sim export-roots`), as DER
/// and parsed, read with a size bound.
#[cfg(feature = "insecure-sim")]
fn read_sim_roots(path: &Path) -> Result<Vec<(Vec<u8>, x509_cert::Certificate)>, SetupError> {
    use std::io::Read;

    use x509_cert::der::Decode;

    /// Largest simulated roots file read.
    const MAX_SIM_ROOTS_LEN: u64 = 1024 * 1024;

    let file_err = |source| SetupError::SimRootsFile {
        path: path.into(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_SIM_ROOTS_LEN).read_to_end(&mut bytes))
        .map_err(file_err)?;
    rustls_pemfile::certs(&mut &bytes[..])
        .map(|der| {
            let der = der?;
            let cert = x509_cert::Certificate::from_der(der.as_ref()).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "not a certificate")
            })?;
            Ok((der.as_ref().to_vec(), cert))
        })
        .collect::<Result<Vec<_>, std::io::Error>>()
        .map_err(file_err)
}

/// Trusts the simulated SNP ARK and ASK in the PEM file at `path`.
#[cfg(feature = "insecure-sim")]
fn add_sim_roots(snp: SnpVerifier, path: &Path) -> Result<SnpVerifier, SetupError> {
    let certs = read_sim_roots(path)?;
    let no_roots = || SetupError::NoSimSnpRoots { path: path.into() };
    let (ark_der, ark) = certs
        .iter()
        .find(|(_, cert)| {
            cert.tbs_certificate.issuer == cert.tbs_certificate.subject
                && SnpProduct::of_ark(cert).is_some()
        })
        .ok_or_else(no_roots)?;
    let (ask_der, _) = certs
        .iter()
        .find(|(_, cert)| {
            cert.tbs_certificate.issuer == ark.tbs_certificate.subject
                && cert.tbs_certificate.subject != ark.tbs_certificate.subject
        })
        .ok_or_else(no_roots)?;
    let snp = snp.insecure_add_simulated_root(ark_der, ask_der)?;
    tracing::warn!(path = %path.display(), "INSECURE: trusting tee-sim's simulated AMD roots");
    Ok(snp)
}

/// Without the `insecure-sim` feature there are no simulated roots to trust.
#[cfg(not(feature = "insecure-sim"))]
fn add_sim_roots(_snp: SnpVerifier, _path: &Path) -> Result<SnpVerifier, SetupError> {
    Err(SetupError::SimulationNotBuilt)
}

/// Trusts the simulated TDX root CA in the PEM file at `path` (the self-signed certificate that
/// is not an AMD ARK), when there is one. Its collateral comes from the collateral directory
/// (`tsuba sim export-roots --tdx-collateral-out`).
#[cfg(feature = "insecure-sim")]
fn add_sim_tdx_root(tdx: TdxVerifier, path: &Path) -> Result<TdxVerifier, SetupError> {
    let root = read_sim_roots(path)?
        .into_iter()
        .filter(|(_, cert)| {
            cert.tbs_certificate.issuer == cert.tbs_certificate.subject
                && SnpProduct::of_ark(cert).is_none()
        })
        .map(|(der, _)| der)
        .next_back();
    let Some(root) = root else {
        tracing::warn!(
            path = %path.display(),
            "no simulated TDX root in the simulated roots file: sim-tdx evidence is refused \
             (re-export it with tsuba sim export-roots)"
        );
        return Ok(tdx);
    };
    tracing::warn!(path = %path.display(), "INSECURE: trusting tee-sim's simulated TDX root");
    Ok(tdx.insecure_add_simulated_root(root))
}

/// Without the `insecure-sim` feature there are no simulated roots to trust.
#[cfg(not(feature = "insecure-sim"))]
fn add_sim_tdx_root(_tdx: TdxVerifier, _path: &Path) -> Result<TdxVerifier, SetupError> {
    Err(SetupError::SimulationNotBuilt)
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
        options.sim_roots = Some(dir.path().join("roots.pem"));
        assert!(matches!(
            build_verifiers(&options),
            Err(SetupError::SimulatedRoots(_))
        ));
        // Sample evidence alone does not let simulated roots in either.
        options.trust = EvidenceTrust::InsecureAcceptSample;
        if cfg!(feature = "insecure-sim") {
            assert!(matches!(
                build_verifiers(&options),
                Err(SetupError::SimulatedRoots(_))
            ));
        }
    }

    #[cfg(not(feature = "insecure-sim"))]
    #[test]
    fn a_build_without_simulation_refuses_every_insecure_trust() {
        for trust in [
            EvidenceTrust::InsecureAcceptSimulated,
            EvidenceTrust::InsecureAcceptSample,
            EvidenceTrust::InsecureAcceptSimulatedAndSample,
        ] {
            let mut options = VerifierOptions::hardware_only();
            options.trust = trust;
            let err = build_verifiers(&options).unwrap_err();
            assert!(matches!(err, SetupError::SimulationNotBuilt), "{err:?}");
            assert!(err.to_string().contains("cargo feature insecure-sim"));
        }
        // Even a set built by hand for sample evidence has no sample verifier.
        assert!(!VerifierSet::new(EvidenceTrust::InsecureAcceptSample).accepts(Tee::Sample));
    }

    #[cfg(feature = "insecure-sim")]
    #[test]
    fn sim_roots_come_from_the_exported_public_pem() {
        let sim_dir = tempfile::tempdir().unwrap();
        let sp = tsuba_tee_sim::SimAmdSp::open_or_create_with_published_test_roots(sim_dir.path())
            .unwrap();
        let pem = |der: &[u8]| {
            x509_cert::der::pem::encode_string(
                "CERTIFICATE",
                x509_cert::der::pem::LineEnding::LF,
                der,
            )
            .unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let roots = dir.path().join("roots.pem");
        std::fs::write(&roots, pem(sp.ark_der()) + &pem(sp.ask_der())).unwrap();
        let mut options = VerifierOptions::hardware_only();
        options.trust = EvidenceTrust::InsecureAcceptSimulated;
        options.sim_roots = Some(roots.clone());
        let set = build_verifiers(&options).unwrap();
        assert!(set.accepts(Tee::Snp) && !set.accepts(Tee::Sample));
        // Only the ARK: no chain to trust.
        std::fs::write(&roots, pem(sp.ark_der())).unwrap();
        assert!(matches!(
            build_verifiers(&options),
            Err(SetupError::NoSimSnpRoots { path }) if path == roots
        ));
        std::fs::write(&roots, "not pem").unwrap();
        assert!(matches!(
            build_verifiers(&options),
            Err(SetupError::NoSimSnpRoots { .. })
        ));
        options.sim_roots = Some(dir.path().join("missing.pem"));
        assert!(matches!(
            build_verifiers(&options),
            Err(SetupError::SimRootsFile { .. })
        ));
    }

    #[cfg(feature = "insecure-sim")]
    #[test]
    fn the_simulated_tdx_root_comes_from_the_same_pem_when_it_has_one() {
        let sim_dir = tempfile::tempdir().unwrap();
        let sp = tsuba_tee_sim::SimAmdSp::open_or_create_with_published_test_roots(sim_dir.path())
            .unwrap();
        let tdx = tsuba_tee_sim::SimTdx::open_or_create(sim_dir.path()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let roots = dir.path().join("roots.pem");
        let snp_only = sp.public_roots_pem().unwrap();
        let mut options = VerifierOptions::hardware_only();
        options.trust = EvidenceTrust::InsecureAcceptSimulated;
        options.sim_roots = Some(roots.clone());
        // An older export with the SNP roots only: the TDX verifier trusts Intel's root alone.
        std::fs::write(&roots, &snp_only).unwrap();
        let set = build_verifiers(&options).unwrap();
        assert!(!set.get(Tee::Tdx).unwrap().trusts_simulated_roots());
        // With the TDX root too.
        std::fs::write(&roots, snp_only + &tdx.public_root_pem().unwrap()).unwrap();
        let set = build_verifiers(&options).unwrap();
        assert!(set.get(Tee::Tdx).unwrap().trusts_simulated_roots());
        assert!(set.get(Tee::Snp).unwrap().trusts_simulated_roots());
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

    #[cfg(feature = "insecure-sim")]
    #[test]
    fn only_the_sample_option_adds_sample() {
        let mut options = VerifierOptions::hardware_only();
        options.trust = EvidenceTrust::InsecureAcceptSimulated;
        assert!(!build_verifiers(&options).unwrap().accepts(Tee::Sample));
        options.trust = EvidenceTrust::InsecureAcceptSample;
        assert!(build_verifiers(&options).unwrap().accepts(Tee::Sample));
        options.trust = EvidenceTrust::InsecureAcceptSimulatedAndSample;
        assert!(build_verifiers(&options).unwrap().accepts(Tee::Sample));
    }
}
