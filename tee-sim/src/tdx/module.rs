//! The simulated TDX module and quoting enclave: TD quotes (v4 and v5) signed by an attestation
//! key that a simulated QE report binds, the QE report signed by a simulated PCK key, and the
//! matching DCAP collateral (TCB info, QE identity, CRLs, issuer chains), each signed, so that a
//! standard DCAP verifier given the simulated root CA accepts the quote.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use pkcs8::der::zeroize::Zeroizing;
use pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tracing::info;
use tsuba_protocols::evidence::{
    ATTESTATION_KEY_ECDSA_P256, CERT_TYPE_PCK_CHAIN, CertificationData, EnclaveReport,
    INTEL_QE_VENDOR_ID, QeReportCertData, QuoteHeader, QuoteSignature, ReportData, TEE_TYPE_TDX,
    TdReport, TdxQuote, TdxQuoteError, TdxQuoteVersion,
};

use super::pki::{self, PlatformTcb};
use crate::snp::CertError;
use crate::state::{self, StateError};

const SUBDIR: &str = "tdx";
const KEYS: [&str; 5] = [
    "root.key.pem",
    "platform_ca.key.pem",
    "pck.key.pem",
    "tcb_signing.key.pem",
    "attestation.key.pem",
];
const CERTS: [&str; 4] = ["root.der", "platform_ca.der", "pck.der", "tcb_signing.der"];

/// QE identity values the simulated QE reports (TD_QE product id 2).
const QE_ISV_PROD_ID: u16 = 2;
const QE_ISV_SVN: u16 = 4;
const QE_ATTRIBUTES: [u8; 16] = [0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const QE_SVN: u16 = 4;
const SIM_TCB: PlatformTcb = PlatformTcb {
    ppid: [0; 16],
    cpu_svn: [2, 2, 2, 2, 3, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0],
    pce_svn: 11,
    pce_id: [0, 0],
    // "5157" marks the simulated platform family in its FMSPC.
    fmspc: [0x51, 0x57, 0x00, 0x00, 0x00, 0x00],
};
/// Default TEE TCB SVN: TDX module SVN 5, minor 0, microcode 2.
pub const SIM_TEE_TCB_SVN: [u8; 16] = [5, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// Default TD attributes: SEPT_VE_DISABLE (bit 28), no debug.
pub const SIM_TD_ATTRIBUTES: u64 = 1 << 28;
/// Default XFAM: x87, SSE, AVX, AVX-512, PKRU, AMX state as a typical TD.
pub const SIM_XFAM: u64 = 0x0006_1AE7;

/// Errors of the simulated TDX module.
#[derive(Debug, Error)]
pub enum TdxSimError {
    /// The state directory could not be read or written.
    #[error("tdx state")]
    State(#[from] StateError),
    /// A stored key is malformed.
    #[error("stored tdx key {0} is malformed")]
    Key(&'static str, #[source] pkcs8::Error),
    /// A key could not be encoded for storage.
    #[error("encoding tdx key")]
    KeyEncoding(#[source] pkcs8::Error),
    /// A certificate or CRL could not be built.
    #[error("building tdx pki")]
    Cert(#[from] CertError),
    /// The quote could not be serialised.
    #[error("building tdx quote")]
    Quote(#[from] TdxQuoteError),
    /// The collateral could not be serialised.
    #[error("building tdx collateral")]
    Json(#[from] serde_json::Error),
}

/// What goes into one quote. The launcher fills everything but `report_data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxQuoteRequest {
    /// Quote version.
    pub version: TdxQuoteVersion,
    /// MRTD.
    pub mr_td: [u8; 48],
    /// MRCONFIGID (tsuba: the initdata digest).
    pub mr_config_id: [u8; 48],
    /// MROWNER.
    pub mr_owner: [u8; 48],
    /// MROWNERCONFIG.
    pub mr_owner_config: [u8; 48],
    /// RTMR 0 to 3.
    pub rtmr: [[u8; 48]; 4],
    /// The guest's 64 bytes.
    pub report_data: ReportData,
    /// TEE TCB SVN.
    pub tee_tcb_svn: [u8; 16],
    /// TD attributes.
    pub td_attributes: u64,
    /// XFAM.
    pub xfam: u64,
}

impl TdxQuoteRequest {
    /// A v4 request with default attributes and TCB, zero owner fields and RTMRs.
    pub fn new(mr_td: [u8; 48], mr_config_id: [u8; 48], report_data: ReportData) -> Self {
        Self {
            version: TdxQuoteVersion::V4,
            mr_td,
            mr_config_id,
            mr_owner: [0; 48],
            mr_owner_config: [0; 48],
            rtmr: [[0; 48]; 4],
            report_data,
            tee_tcb_svn: SIM_TEE_TCB_SVN,
            td_attributes: SIM_TD_ATTRIBUTES,
            xfam: SIM_XFAM,
        }
    }
}

/// DCAP collateral for the simulated platform, the fields of Intel's PCCS answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTdxCollateral {
    /// PEM chain of the PCK CRL's issuer (platform CA, root).
    pub pck_crl_issuer_chain: String,
    /// Root CA CRL (DER).
    pub root_ca_crl: Vec<u8>,
    /// PCK platform CA CRL (DER).
    pub pck_crl: Vec<u8>,
    /// PEM chain of the TCB info signer (TCB signing, root).
    pub tcb_info_issuer_chain: String,
    /// The TCB info JSON (the exact signed bytes).
    pub tcb_info: String,
    /// ECDSA P-256 signature of `tcb_info` (r || s).
    pub tcb_info_signature: Vec<u8>,
    /// PEM chain of the QE identity signer.
    pub qe_identity_issuer_chain: String,
    /// The QE identity JSON (the exact signed bytes).
    pub qe_identity: String,
    /// ECDSA P-256 signature of `qe_identity` (r || s).
    pub qe_identity_signature: Vec<u8>,
}

impl SimTdxCollateral {
    /// JSON in the layout of dcap-qvl's `QuoteCollateralV3` (byte fields as hex), as in
    /// `testdata/real-evidence/tdx/dcapqvl-tdx_quote_collateral.json`.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(&serde_json::json!({
            "pck_crl_issuer_chain": self.pck_crl_issuer_chain,
            "root_ca_crl": hex(&self.root_ca_crl),
            "pck_crl": hex(&self.pck_crl),
            "tcb_info_issuer_chain": self.tcb_info_issuer_chain,
            "tcb_info": self.tcb_info,
            "tcb_info_signature": hex(&self.tcb_info_signature),
            "qe_identity_issuer_chain": self.qe_identity_issuer_chain,
            "qe_identity": self.qe_identity,
            "qe_identity_signature": hex(&self.qe_identity_signature),
        }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// The simulated TDX module and quoting enclave.
pub struct SimTdx {
    root_der: Vec<u8>,
    platform_ca_der: Vec<u8>,
    pck_der: Vec<u8>,
    tcb_signing_der: Vec<u8>,
    root_crl: Vec<u8>,
    pck_crl: Vec<u8>,
    tcb_signing_key: SigningKey,
    attestation_key: SigningKey,
    qe: QeReportCertData,
}

impl std::fmt::Debug for SimTdx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTdx").finish_non_exhaustive()
    }
}

impl SimTdx {
    /// Open the simulated TDX module kept under `state_dir/tdx`, generating its keys and
    /// certificates on first use (P-256 only, so this is quick).
    pub fn open_or_create(state_dir: &Path) -> Result<Self, TdxSimError> {
        if !state_dir.join(SUBDIR).is_dir() {
            let keys: [SigningKey; KEYS.len()] =
                std::array::from_fn(|_| SigningKey::random(&mut rand_core::OsRng));
            let [root, platform_ca, pck, tcb_signing, _] = &keys;
            let certs = [
                pki::root_cert(root)?,
                pki::platform_ca_cert(root, platform_ca)?,
                pki::pck_cert(platform_ca, pck, &SIM_TCB)?,
                pki::tcb_signing_cert(root, tcb_signing)?,
            ];
            let pems = keys
                .iter()
                .map(|k| {
                    k.to_pkcs8_pem(LineEnding::LF)
                        .map_err(TdxSimError::KeyEncoding)
                })
                .collect::<Result<Vec<Zeroizing<String>>, _>>()?;
            state::create_once(state_dir, SUBDIR, |dir| {
                for (name, pem) in KEYS.iter().zip(&pems) {
                    state::write_private(&dir.join(name), pem.as_bytes())?;
                }
                for (name, der) in CERTS.iter().zip(&certs) {
                    state::write_private(&dir.join(name), der)?;
                }
                Ok(())
            })?;
            info!(dir = %state_dir.display(), "created simulated TDX keys (SIMULATED roots)");
        }
        Self::load(&state_dir.join(SUBDIR))
    }

    fn load(dir: &Path) -> Result<Self, TdxSimError> {
        let key = |name: &'static str| -> Result<SigningKey, TdxSimError> {
            let pem = String::from_utf8(state::read(&dir.join(name))?)
                .map_err(|_| TdxSimError::Key(name, pkcs8::Error::KeyMalformed))?;
            SigningKey::from_pkcs8_pem(&pem).map_err(|e| TdxSimError::Key(name, e))
        };
        let [root_k, ca_k, pck_k, tcb_k, att_k] = KEYS;
        let root = key(root_k)?;
        let platform_ca = key(ca_k)?;
        let pck = key(pck_k)?;
        let [root_c, ca_c, pck_c, tcb_c] = CERTS;
        let root_der = state::read(&dir.join(root_c))?;
        let platform_ca_der = state::read(&dir.join(ca_c))?;
        let pck_der = state::read(&dir.join(pck_c))?;
        let attestation_key = key(att_k)?;
        let qe = qe_certification(
            &pck,
            &attestation_key,
            &pck_der,
            &platform_ca_der,
            &root_der,
        )?;
        Ok(Self {
            root_crl: pki::crl(&root, pki::ROOT_SUBJECT)?,
            pck_crl: pki::crl(&platform_ca, pki::PLATFORM_CA_SUBJECT)?,
            tcb_signing_der: state::read(&dir.join(tcb_c))?,
            tcb_signing_key: key(tcb_k)?,
            root_der,
            platform_ca_der,
            pck_der,
            attestation_key,
            qe,
        })
    }

    /// The simulated root CA certificate (DER): the trust anchor a verifier must be given.
    pub fn root_ca_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The simulated root CA certificate as PEM: public, for `tsuba sim export-roots`.
    pub fn public_root_pem(&self) -> Result<String, TdxSimError> {
        der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &self.root_der)
            .map_err(|e| TdxSimError::Cert(CertError::Der(der::Error::from(e))))
    }

    /// Build and sign a quote.
    pub fn quote(&self, req: &TdxQuoteRequest) -> Result<Vec<u8>, TdxSimError> {
        let mut user_data = [0u8; 20];
        user_data[..16].copy_from_slice(b"tsuba-sim-td-qe\0");
        let mut quote = TdxQuote {
            header: QuoteHeader {
                version: req.version,
                attestation_key_type: ATTESTATION_KEY_ECDSA_P256,
                tee_type: TEE_TYPE_TDX,
                qe_svn: QE_SVN,
                pce_svn: SIM_TCB.pce_svn,
                qe_vendor_id: INTEL_QE_VENDOR_ID,
                user_data,
            },
            body: TdReport {
                tee_tcb_svn: req.tee_tcb_svn,
                mr_seam: SimMeasurements::mr_seam(),
                mr_signer_seam: [0; 48],
                seam_attributes: [0; 8],
                td_attributes: req.td_attributes.to_le_bytes(),
                xfam: req.xfam.to_le_bytes(),
                mr_td: req.mr_td,
                mr_config_id: req.mr_config_id,
                mr_owner: req.mr_owner,
                mr_owner_config: req.mr_owner_config,
                rtmr: req.rtmr,
                report_data: req.report_data.0,
                v15: None,
            },
            signature: QuoteSignature {
                signature: [0; 64],
                attestation_key: raw_public_key(&self.attestation_key),
                qe: self.qe.clone(),
            },
        };
        let sig: Signature = self.attestation_key.sign(&quote.signed_bytes()?);
        quote.signature.signature = sig.to_bytes().into();
        Ok(quote.to_bytes()?)
    }

    /// Collateral valid from an hour ago for 30 days.
    pub fn collateral(&self) -> Result<SimTdxCollateral, TdxSimError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let issue = rfc3339(now.saturating_sub(3600));
        let next = rfc3339(now.saturating_add(30 * 24 * 3600));
        let tcb_info = serde_json::to_string(&tcb_info_json(&issue, &next))?;
        let qe_identity = serde_json::to_string(&qe_identity_json(&issue, &next))?;
        let sign = |text: &str| -> Vec<u8> {
            let sig: Signature = self.tcb_signing_key.sign(text.as_bytes());
            sig.to_bytes().to_vec()
        };
        let signer_chain = pki::pem_chain(&[&self.tcb_signing_der, &self.root_der])?;
        Ok(SimTdxCollateral {
            pck_crl_issuer_chain: pki::pem_chain(&[&self.platform_ca_der, &self.root_der])?,
            root_ca_crl: self.root_crl.clone(),
            pck_crl: self.pck_crl.clone(),
            tcb_info_issuer_chain: signer_chain.clone(),
            tcb_info_signature: sign(&tcb_info),
            tcb_info,
            qe_identity_issuer_chain: signer_chain,
            qe_identity_signature: sign(&qe_identity),
            qe_identity,
        })
    }

    /// The PCK certificate (DER).
    pub fn pck_der(&self) -> &[u8] {
        &self.pck_der
    }
}

/// Fixed simulated measurements of the simulated TDX module and QE.
struct SimMeasurements;

impl SimMeasurements {
    fn mr_seam() -> [u8; 48] {
        let mut out = [0u8; 48];
        let d = Sha256::digest(b"tsuba tee-sim SIMULATED TDX module");
        out[..32].copy_from_slice(&d);
        out
    }

    fn qe_mr_signer() -> [u8; 32] {
        Sha256::digest(b"tsuba tee-sim SIMULATED TD quoting enclave signer").into()
    }

    fn qe_mr_enclave() -> [u8; 32] {
        Sha256::digest(b"tsuba tee-sim SIMULATED TD quoting enclave").into()
    }
}

fn raw_public_key(key: &SigningKey) -> [u8; 64] {
    let point = key.verifying_key().to_encoded_point(false);
    let mut out = [0u8; 64];
    // Uncompressed SEC1: 0x04 || x || y.
    if let Some(xy) = point.as_bytes().get(1..65) {
        out.copy_from_slice(xy);
    }
    out
}

/// The QE report binding the attestation key, signed by the PCK, with the PCK chain.
fn qe_certification(
    pck: &SigningKey,
    attestation_key: &SigningKey,
    pck_der: &[u8],
    platform_ca_der: &[u8],
    root_der: &[u8],
) -> Result<QeReportCertData, TdxSimError> {
    let qe_auth_data: Vec<u8> = (0u8..32).collect();
    let hash = Sha256::new()
        .chain_update(raw_public_key(attestation_key))
        .chain_update(&qe_auth_data)
        .finalize();
    let mut report_data = [0u8; 64];
    report_data[..32].copy_from_slice(&hash);
    let qe_report = EnclaveReport {
        cpu_svn: SIM_TCB.cpu_svn,
        misc_select: 0,
        reserved1: [0; 28],
        attributes: QE_ATTRIBUTES,
        mr_enclave: SimMeasurements::qe_mr_enclave(),
        reserved2: [0; 32],
        mr_signer: SimMeasurements::qe_mr_signer(),
        reserved3: [0; 96],
        isv_prod_id: QE_ISV_PROD_ID,
        isv_svn: QE_ISV_SVN,
        reserved4: [0; 60],
        report_data,
    };
    let sig: Signature = pck.sign(&qe_report.to_bytes());
    Ok(QeReportCertData {
        qe_report,
        qe_report_signature: sig.to_bytes().into(),
        qe_auth_data,
        certification: CertificationData {
            cert_type: CERT_TYPE_PCK_CHAIN,
            data: pki::pem_chain(&[pck_der, platform_ca_der, root_der])?.into_bytes(),
        },
    })
}

fn tcb_info_json(issue: &str, next: &str) -> serde_json::Value {
    let components = |svns: &[u8]| -> Vec<serde_json::Value> {
        svns.iter()
            .map(|s| serde_json::json!({ "svn": s }))
            .collect()
    };
    serde_json::json!({
        "id": "TDX",
        "version": 3,
        "issueDate": issue,
        "nextUpdate": next,
        "fmspc": hex_upper(&SIM_TCB.fmspc),
        "pceId": hex_upper(&SIM_TCB.pce_id),
        "tcbType": 0,
        "tcbEvaluationDataNumber": 1,
        "tdxModule": {
            "mrsigner": hex_upper(&[0; 48]),
            "attributes": "0000000000000000",
            "attributesMask": "FFFFFFFFFFFFFFFF",
        },
        "tdxModuleIdentities": [],
        "tcbLevels": [{
            "tcb": {
                "sgxtcbcomponents": components(&SIM_TCB.cpu_svn),
                "pcesvn": SIM_TCB.pce_svn,
                "tdxtcbcomponents": components(&SIM_TEE_TCB_SVN),
            },
            "tcbDate": "2025-01-01T00:00:00Z",
            "tcbStatus": "UpToDate",
        }],
    })
}

fn qe_identity_json(issue: &str, next: &str) -> serde_json::Value {
    serde_json::json!({
        "id": "TD_QE",
        "version": 2,
        "issueDate": issue,
        "nextUpdate": next,
        "tcbEvaluationDataNumber": 1,
        "miscselect": "00000000",
        "miscselectMask": "FFFFFFFF",
        "attributes": hex_upper(&QE_ATTRIBUTES),
        "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
        "mrsigner": hex_upper(&SimMeasurements::qe_mr_signer()),
        "isvprodid": QE_ISV_PROD_ID,
        "tcbLevels": [{
            "tcb": { "isvsvn": QE_ISV_SVN },
            "tcbDate": "2025-01-01T00:00:00Z",
            "tcbStatus": "UpToDate",
        }],
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (proleptic Gregorian calendar).
fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), shifted so eras start on 0000-03-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One simulator per test binary.
#[cfg(test)]
pub(crate) fn shared_test_tdx() -> &'static std::sync::Arc<SimTdx> {
    static SIM: std::sync::OnceLock<(tempfile::TempDir, std::sync::Arc<SimTdx>)> =
        std::sync::OnceLock::new();
    let (_dir, sim) = SIM.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = SimTdx::open_or_create(dir.path()).expect("sim tdx");
        (dir, std::sync::Arc::new(sim))
    });
    sim
}

#[cfg(test)]
mod tests {
    use dcap_qvl::QuoteCollateralV3;
    use dcap_qvl::verify::QuoteVerifier;

    use super::*;

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn dcap(c: &SimTdxCollateral) -> QuoteCollateralV3 {
        QuoteCollateralV3 {
            pck_crl_issuer_chain: c.pck_crl_issuer_chain.clone(),
            root_ca_crl: c.root_ca_crl.clone(),
            pck_crl: c.pck_crl.clone(),
            tcb_info_issuer_chain: c.tcb_info_issuer_chain.clone(),
            tcb_info: c.tcb_info.clone(),
            tcb_info_signature: c.tcb_info_signature.clone(),
            qe_identity_issuer_chain: c.qe_identity_issuer_chain.clone(),
            qe_identity: c.qe_identity.clone(),
            qe_identity_signature: c.qe_identity_signature.clone(),
            pck_certificate_chain: None,
        }
    }

    fn request(version: TdxQuoteVersion) -> TdxQuoteRequest {
        let mut req = TdxQuoteRequest::new([0x11; 48], [0x22; 48], ReportData([0x33; 64]));
        req.version = version;
        req.rtmr[2] = [0x44; 48];
        req
    }

    #[test]
    fn sim_quote_verifies_with_dcap_qvl_and_the_sim_root() {
        let sim = shared_test_tdx();
        let collateral = dcap(&sim.collateral().unwrap());
        for version in [TdxQuoteVersion::V4, TdxQuoteVersion::V5] {
            let quote = sim.quote(&request(version)).unwrap();
            let verifier = QuoteVerifier::new(sim.root_ca_der().to_vec());
            let report = verifier.verify(&quote, &collateral, now()).unwrap();
            assert_eq!(report.status, "UpToDate");
            let td = report.report.as_td10().unwrap();
            assert_eq!(td.mr_td, [0x11; 48]);
            assert_eq!(td.mr_config_id, [0x22; 48]);
            assert_eq!(td.rt_mr2, [0x44; 48]);
            assert_eq!(td.report_data, [0x33; 64]);
            let parsed = TdxQuote::parse(&quote).unwrap();
            assert_eq!(parsed.header.version, version);
        }
    }

    #[test]
    fn sim_quote_fails_with_intels_real_root() {
        let sim = shared_test_tdx();
        let collateral = dcap(&sim.collateral().unwrap());
        let quote = sim.quote(&request(TdxQuoteVersion::V4)).unwrap();
        assert!(
            QuoteVerifier::new_prod()
                .verify(&quote, &collateral, now())
                .is_err()
        );
        // Nor with the real collateral's Intel chain and the sim quote.
        let real = std::fs::read_to_string(format!(
            "{}/testdata/real-evidence/tdx/dcapqvl-tdx_quote_collateral.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let real: QuoteCollateralV3 = serde_json::from_str(&real).unwrap();
        assert!(
            QuoteVerifier::new_prod()
                .verify(&quote, &real, now())
                .is_err()
        );
    }

    #[test]
    fn tampering_and_expiry_are_refused() {
        let sim = shared_test_tdx();
        let collateral = dcap(&sim.collateral().unwrap());
        let quote = sim.quote(&request(TdxQuoteVersion::V4)).unwrap();
        let verifier = QuoteVerifier::new(sim.root_ca_der().to_vec());
        // Any byte of the signed header and body.
        for offset in [0x08, 48 + 136, 48 + 184, 48 + 472, 48 + 520, 48 + 583] {
            let mut bad = quote.clone();
            bad[offset] ^= 1;
            assert!(
                verifier.verify(&bad, &collateral, now()).is_err(),
                "{offset}"
            );
        }
        // A tampered TCB info.
        let mut bad = collateral.clone();
        bad.tcb_info = bad.tcb_info.replace("UpToDate", "OutOfDate");
        assert!(verifier.verify(&quote, &bad, now()).is_err());
        // Collateral past its next update.
        assert!(
            verifier
                .verify(&quote, &collateral, now() + 40 * 24 * 3600)
                .is_err()
        );
    }

    #[test]
    fn collateral_json_has_the_sample_layout() {
        let collateral = shared_test_tdx().collateral().unwrap();
        let parsed: QuoteCollateralV3 =
            serde_json::from_str(&collateral.to_json().unwrap()).unwrap();
        assert_eq!(parsed, dcap(&collateral));
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_750_328_163), "2025-06-19T10:16:03Z");
    }
}
