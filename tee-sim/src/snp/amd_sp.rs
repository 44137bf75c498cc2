//! The simulated AMD secure processor: it holds the simulated ARK, ASK and VCEK and signs SNP
//! attestation reports as hardware does (ECDSA P-384 with SHA-384 over bytes 0x000-0x29F, r and s
//! little-endian in 72-byte fields), and returns the certificate table that SNP_GET_EXT_REPORT
//! returns beside the report.
//!
//! One VCEK key signs for every TCB (hardware derives one per TCB); the VCEK certificate for a
//! TCB is made on first use and cached, and its TCB extensions match the report's REPORTED_TCB.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use pkcs8::der::zeroize::Zeroizing;
use pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::RsaPrivateKey;
use sha2::{Digest, Sha384};
use thiserror::Error;
use tracing::info;
use tsuba_protocols::evidence::{
    CpuId, FirmwareVersion, GUID_ARK, GUID_ASK, GUID_VCEK, GuestPolicy, KeyInfo, ReportData,
    SNP_SIG_ALGO_ECDSA_P384_SHA384, SNP_SIGNED_LEN, SigningKey, SnpCertEntry, SnpCertTable,
    SnpCertTableError, SnpReport, SnpReportVersion, SnpSignature, TcbLayout, TcbParts, TcbVersion,
};

use super::certs::{self, CertError};
use crate::state::{self, StateError};

/// Size of the simulated ARK and ASK keys, as AMD's.
const RSA_BITS: usize = 4096;
const SUBDIR: &str = "snp";
const ARK_KEY: &str = "ark.key.pem";
const ASK_KEY: &str = "ask.key.pem";
const VCEK_KEY: &str = "vcek.key.pem";
const ARK_CERT: &str = "ark.der";
const ASK_CERT: &str = "ask.der";
const CHIP_ID: &str = "chip_id.bin";
/// Every simulated chip id starts with this, so it cannot be taken for a real one.
pub const SIM_CHIP_ID_PREFIX: &[u8; 24] = b"TSUBA-SIMULATED-CHIP-ID-";

/// The CPUID a simulated report claims: family 0x19 model 0x11 (Genoa), legacy TCB layout.
const SIM_CPUID: CpuId = CpuId {
    family: 0x19,
    model: 0x11,
    stepping: 1,
};
const SIM_FIRMWARE: FirmwareVersion = FirmwareVersion {
    major: 1,
    minor: 55,
    build: 40,
};
/// PLATFORM_INFO: SMT enabled.
const SIM_PLATFORM_INFO: u64 = 1;

/// The private keys checked into `tee-sim/testdata/`: anyone can sign with them, so they are
/// compiled in only for tests (feature `published-test-roots`).
#[cfg(any(test, feature = "published-test-roots"))]
const TEST_ARK_PEM: &str = include_str!("../../testdata/test-ark.key.pem");
#[cfg(any(test, feature = "published-test-roots"))]
const TEST_ASK_PEM: &str = include_str!("../../testdata/test-ask.key.pem");

/// Errors of the simulated AMD-SP.
#[derive(Debug, Error)]
pub enum AmdSpError {
    /// The state directory could not be read or written.
    #[error("snp state")]
    State(#[from] StateError),
    /// A stored key is malformed.
    #[error("stored snp key {0} is malformed")]
    Key(&'static str, #[source] pkcs8::Error),
    /// A key could not be encoded for storage.
    #[error("encoding snp key")]
    KeyEncoding(#[source] pkcs8::Error),
    /// RSA key generation failed.
    #[error("generating rsa key")]
    Rsa(#[source] rsa::Error),
    /// A certificate could not be built.
    #[error("building certificate")]
    Cert(#[from] CertError),
    /// The stored chip id has the wrong length.
    #[error("stored chip id is malformed")]
    ChipId,
    /// The certificate table could not be built.
    #[error("certificate table")]
    CertTable(#[from] SnpCertTableError),
    /// ECDSA signing failed.
    #[error("signing the report")]
    Sign,
    /// The requested report version is not one the simulator produces.
    #[error("the simulator produces report versions 3 and 5, not {0:?}")]
    Version(SnpReportVersion),
}

/// What goes into one report. The launcher fills everything but `report_data`, which is the
/// guest's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpReportRequest {
    /// Report layout (3 or 5).
    pub version: SnpReportVersion,
    /// Launch measurement.
    pub measurement: [u8; 48],
    /// HOST_DATA given at launch.
    pub host_data: [u8; 32],
    /// Guest policy.
    pub policy: GuestPolicy,
    /// The platform TCB (current, committed, launch and reported all take this value).
    pub tcb: TcbParts,
    /// VMPL the guest asked from.
    pub vmpl: u32,
    /// The guest's 64 bytes.
    pub report_data: ReportData,
    /// Family id of the ID block.
    pub family_id: [u8; 16],
    /// Image id of the ID block.
    pub image_id: [u8; 16],
    /// Guest SVN.
    pub guest_svn: u32,
}

/// Guest policy of a launch without options: SMT allowed, bit 17 set, debug off.
pub const SIM_DEFAULT_POLICY: GuestPolicy =
    GuestPolicy(GuestPolicy::SMT | GuestPolicy::RESERVED_MUST_BE_ONE);

/// TCB of the simulated platform unless a request says otherwise.
pub const SIM_DEFAULT_TCB: TcbParts = TcbParts {
    fmc: None,
    bootloader: 10,
    tee: 0,
    snp: 23,
    microcode: 84,
};

impl SnpReportRequest {
    /// A version 3 request with the default policy and TCB, VMPL 0.
    pub fn new(measurement: [u8; 48], host_data: [u8; 32], report_data: ReportData) -> Self {
        Self {
            version: SnpReportVersion::V3,
            measurement,
            host_data,
            policy: SIM_DEFAULT_POLICY,
            tcb: SIM_DEFAULT_TCB,
            vmpl: 0,
            report_data,
            family_id: [0; 16],
            image_id: [0; 16],
            guest_svn: 0,
        }
    }
}

/// A signed report and the certificate table that comes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedSnpReport {
    /// The 1184-byte ATTESTATION_REPORT.
    pub report: Vec<u8>,
    /// The certificate table (ARK, ASK, VCEK, DER).
    pub cert_table: Vec<u8>,
}

/// The simulated AMD secure processor.
pub struct SimAmdSp {
    ark_der: Vec<u8>,
    ask_der: Vec<u8>,
    ask_key: RsaPrivateKey,
    vcek_key: p384::ecdsa::SigningKey,
    vcek_signer: ring::signature::EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
    chip_id: [u8; 64],
    vcek_certs: Mutex<HashMap<u64, Vec<u8>>>,
}

impl std::fmt::Debug for SimAmdSp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimAmdSp").finish_non_exhaustive()
    }
}

impl SimAmdSp {
    /// Open the simulated AMD-SP kept under `state_dir/snp`, generating its keys and certificates
    /// on first use (RSA-4096 generation takes seconds in release builds, minutes in debug).
    pub fn open_or_create(state_dir: &Path) -> Result<Self, AmdSpError> {
        Self::open_with(state_dir, || {
            let mut rng = rand_core::OsRng;
            let ark = RsaPrivateKey::new(&mut rng, RSA_BITS).map_err(AmdSpError::Rsa)?;
            let ask = RsaPrivateKey::new(&mut rng, RSA_BITS).map_err(AmdSpError::Rsa)?;
            Ok((ark, ask))
        })
    }

    /// Like [`Self::open_or_create`], but a new state directory gets the ARK and ASK keys that
    /// are published in tsuba's source tree. Anyone can sign with those keys: use this only in
    /// tests, to skip RSA-4096 generation (feature `published-test-roots`).
    #[cfg(any(test, feature = "published-test-roots"))]
    pub fn open_or_create_with_published_test_roots(state_dir: &Path) -> Result<Self, AmdSpError> {
        Self::open_with(state_dir, || {
            let ark = RsaPrivateKey::from_pkcs8_pem(TEST_ARK_PEM)
                .map_err(|e| AmdSpError::Key("test ark", e))?;
            let ask = RsaPrivateKey::from_pkcs8_pem(TEST_ASK_PEM)
                .map_err(|e| AmdSpError::Key("test ask", e))?;
            Ok((ark, ask))
        })
    }

    fn open_with(
        state_dir: &Path,
        roots: impl FnOnce() -> Result<(RsaPrivateKey, RsaPrivateKey), AmdSpError>,
    ) -> Result<Self, AmdSpError> {
        if !state_dir.join(SUBDIR).is_dir() {
            let (ark, ask) = roots()?;
            let new = NewState::generate(&ark, &ask)?;
            state::create_once(state_dir, SUBDIR, |dir| new.write(dir))?;
            info!(dir = %state_dir.display(), "created simulated AMD-SP keys (SIMULATED roots)");
        }
        Self::load(&state_dir.join(SUBDIR))
    }

    fn load(dir: &Path) -> Result<Self, AmdSpError> {
        let pem = |name: &'static str| -> Result<String, AmdSpError> {
            let bytes = state::read(&dir.join(name))?;
            String::from_utf8(bytes).map_err(|_| AmdSpError::Key(name, pkcs8::Error::KeyMalformed))
        };
        let ask_key = RsaPrivateKey::from_pkcs8_pem(&pem(ASK_KEY)?)
            .map_err(|e| AmdSpError::Key(ASK_KEY, e))?;
        let vcek_key = p384::ecdsa::SigningKey::from_pkcs8_pem(&pem(VCEK_KEY)?)
            .map_err(|e| AmdSpError::Key(VCEK_KEY, e))?;
        let rng = ring::rand::SystemRandom::new();
        let vcek_der = vcek_key.to_pkcs8_der().map_err(AmdSpError::KeyEncoding)?;
        let vcek_signer = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            vcek_der.as_bytes(),
            &rng,
        )
        .map_err(|_| AmdSpError::Key(VCEK_KEY, pkcs8::Error::KeyMalformed))?;
        let chip_id = state::read(&dir.join(CHIP_ID))?
            .try_into()
            .map_err(|_| AmdSpError::ChipId)?;
        Ok(Self {
            ark_der: state::read(&dir.join(ARK_CERT))?,
            ask_der: state::read(&dir.join(ASK_CERT))?,
            ask_key,
            vcek_key,
            vcek_signer,
            rng,
            chip_id,
            vcek_certs: Mutex::new(HashMap::new()),
        })
    }

    /// The simulated ARK certificate (DER): the trust anchor a verifier must be given.
    pub fn ark_der(&self) -> &[u8] {
        &self.ark_der
    }

    /// The simulated ASK certificate (DER).
    pub fn ask_der(&self) -> &[u8] {
        &self.ask_der
    }

    /// The simulated ARK and ASK certificates as PEM: the public trust anchors a development
    /// broker is given (`tsuba sim export-roots`). No private key is in it.
    pub fn public_roots_pem(&self) -> Result<String, AmdSpError> {
        let mut pem = String::new();
        for der in [&self.ark_der, &self.ask_der] {
            pem.push_str(
                &der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, der)
                    .map_err(|e| AmdSpError::Cert(CertError::Der(der::Error::from(e))))?,
            );
        }
        Ok(pem)
    }

    /// The simulated chip id (it starts with [`SIM_CHIP_ID_PREFIX`]).
    pub fn chip_id(&self) -> &[u8; 64] {
        &self.chip_id
    }

    /// The VCEK certificate (DER) for a TCB.
    pub fn vcek_der(&self, tcb: TcbParts) -> Result<Vec<u8>, AmdSpError> {
        let raw = TcbVersion::from_parts(tcb, TcbLayout::Legacy).0;
        let mut cache = self
            .vcek_certs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(der) = cache.get(&raw) {
            return Ok(der.clone());
        }
        let cert = certs::vcek_cert(
            &self.ask_key,
            self.vcek_key.verifying_key(),
            tcb,
            &self.chip_id,
        )?;
        let der = certs::to_der(&cert)?;
        cache.insert(raw, der.clone());
        Ok(der)
    }

    /// Build and sign a report (no certificates).
    pub fn sign_report(&self, req: &SnpReportRequest) -> Result<Vec<u8>, AmdSpError> {
        if req.version == SnpReportVersion::V2 {
            return Err(AmdSpError::Version(req.version));
        }
        let tcb = TcbVersion::from_parts(req.tcb, TcbLayout::Legacy);
        let mut report = SnpReport {
            version: req.version,
            guest_svn: req.guest_svn,
            policy: req.policy,
            family_id: req.family_id,
            image_id: req.image_id,
            vmpl: req.vmpl,
            signature_algo: SNP_SIG_ALGO_ECDSA_P384_SHA384,
            current_tcb: tcb,
            platform_info: SIM_PLATFORM_INFO,
            key_info: KeyInfo::new(SigningKey::Vcek, false, false),
            report_data: req.report_data.0,
            measurement: req.measurement,
            host_data: req.host_data,
            id_key_digest: [0; 48],
            author_key_digest: [0; 48],
            report_id: report_id(req),
            report_id_ma: [0xFF; 32],
            reported_tcb: tcb,
            cpuid: Some(SIM_CPUID),
            chip_id: self.chip_id,
            committed_tcb: tcb,
            current_version: SIM_FIRMWARE,
            committed_version: SIM_FIRMWARE,
            launch_tcb: tcb,
            launch_mit_vector: None,
            current_mit_vector: None,
            signature: SnpSignature::default(),
        };
        if req.version == SnpReportVersion::V5 {
            report.launch_mit_vector = Some(0);
            report.current_mit_vector = Some(0);
        }
        let mut raw = report.to_bytes();
        let signed = raw.get(..SNP_SIGNED_LEN).unwrap_or_default();
        // Fixed-size signature: r then s, 48 bytes each, big-endian.
        let sig = self
            .vcek_signer
            .sign(&self.rng, signed)
            .map_err(|_| AmdSpError::Sign)?;
        let (r, s) = sig.as_ref().split_at(48);
        let (Ok(r), Ok(s)) = (<[u8; 48]>::try_from(r), <[u8; 48]>::try_from(s)) else {
            return Err(AmdSpError::Sign);
        };
        let sig = SnpSignature::from_p384_be(&r, &s);
        if let Some(dst) = raw.get_mut(SNP_SIGNED_LEN..SNP_SIGNED_LEN + 144) {
            dst[..72].copy_from_slice(&sig.r);
            dst[72..].copy_from_slice(&sig.s);
        }
        Ok(raw)
    }

    /// Build and sign a report, with the certificate table (ARK, ASK, VCEK for its TCB).
    pub fn report(&self, req: &SnpReportRequest) -> Result<SignedSnpReport, AmdSpError> {
        let report = self.sign_report(req)?;
        let table = SnpCertTable {
            entries: vec![
                SnpCertEntry {
                    guid: GUID_ARK,
                    data: self.ark_der.clone(),
                },
                SnpCertEntry {
                    guid: GUID_ASK,
                    data: self.ask_der.clone(),
                },
                SnpCertEntry {
                    guid: GUID_VCEK,
                    data: self.vcek_der(req.tcb)?,
                },
            ],
        };
        Ok(SignedSnpReport {
            report,
            cert_table: table.to_bytes()?,
        })
    }
}

fn report_id(req: &SnpReportRequest) -> [u8; 32] {
    let digest = Sha384::new()
        .chain_update(b"tsuba-sim report id")
        .chain_update(req.measurement)
        .chain_update(req.host_data)
        .finalize();
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest[..32]);
    out
}

fn to_pem(key: &impl EncodePrivateKey) -> Result<Zeroizing<String>, AmdSpError> {
    key.to_pkcs8_pem(LineEnding::LF)
        .map_err(AmdSpError::KeyEncoding)
}

/// Everything a new state directory holds, made before anything is written.
struct NewState {
    ark_pem: Zeroizing<String>,
    ask_pem: Zeroizing<String>,
    vcek_pem: Zeroizing<String>,
    ark_der: Vec<u8>,
    ask_der: Vec<u8>,
    chip_id: [u8; 64],
}

impl NewState {
    fn generate(ark: &RsaPrivateKey, ask: &RsaPrivateKey) -> Result<Self, AmdSpError> {
        let vcek = p384::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let mut chip_id = [0u8; 64];
        let (prefix, rest) = chip_id.split_at_mut(SIM_CHIP_ID_PREFIX.len());
        prefix.copy_from_slice(SIM_CHIP_ID_PREFIX);
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, rest);
        Ok(Self {
            ark_pem: to_pem(ark)?,
            ask_pem: to_pem(ask)?,
            vcek_pem: to_pem(&vcek)?,
            ark_der: certs::to_der(&certs::ark_cert(ark)?)?,
            ask_der: certs::to_der(&certs::ask_cert(ark, ask)?)?,
            chip_id,
        })
    }

    fn write(&self, dir: &Path) -> Result<(), StateError> {
        state::write_private(&dir.join(ARK_KEY), self.ark_pem.as_bytes())?;
        state::write_private(&dir.join(ASK_KEY), self.ask_pem.as_bytes())?;
        state::write_private(&dir.join(VCEK_KEY), self.vcek_pem.as_bytes())?;
        state::write_private(&dir.join(ARK_CERT), &self.ark_der)?;
        state::write_private(&dir.join(ASK_CERT), &self.ask_der)?;
        state::write_private(&dir.join(CHIP_ID), &self.chip_id)
    }
}

/// One simulator per test binary, with the published test roots (no RSA generation).
#[cfg(test)]
pub(crate) fn shared_test_sim() -> &'static std::sync::Arc<SimAmdSp> {
    static SIM: std::sync::OnceLock<(tempfile::TempDir, std::sync::Arc<SimAmdSp>)> =
        std::sync::OnceLock::new();
    let (_dir, sp) = SIM.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let sp = SimAmdSp::open_or_create_with_published_test_roots(dir.path()).expect("sim");
        (dir, std::sync::Arc::new(sp))
    });
    sp
}

#[cfg(test)]
mod tests {
    use p384::ecdsa::signature::Verifier;
    use sev::certs::snp::{Certificate, Chain, Verifiable, builtin, ca};
    use sev::firmware::guest::AttestationReport;
    use sev::parser::ByteParser;
    use x509_cert::der::Decode;

    use super::*;

    fn sim() -> &'static SimAmdSp {
        shared_test_sim()
    }

    fn request(version: SnpReportVersion) -> SnpReportRequest {
        let mut req = SnpReportRequest::new([0x11; 48], [0x22; 32], ReportData([0x33; 64]));
        req.version = version;
        req
    }

    fn sev_chain(signed: &SignedSnpReport) -> Chain {
        let table = SnpCertTable::parse(&signed.cert_table).unwrap();
        Chain {
            ca: ca::Chain {
                ark: Certificate::from_der(table.get(&GUID_ARK).unwrap()).unwrap(),
                ask: Certificate::from_der(table.get(&GUID_ASK).unwrap()).unwrap(),
            },
            vek: Certificate::from_der(table.get(&GUID_VCEK).unwrap()).unwrap(),
        }
    }

    fn vcek_verifying_key(signed: &SignedSnpReport) -> p384::ecdsa::VerifyingKey {
        let table = SnpCertTable::parse(&signed.cert_table).unwrap();
        let cert = x509_cert::Certificate::from_der(table.get(&GUID_VCEK).unwrap()).unwrap();
        let spki = cert.tbs_certificate.subject_public_key_info;
        p384::ecdsa::VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes()).unwrap()
    }

    /// Verify over the raw bytes, as a verifier must.
    fn raw_verify(key: &p384::ecdsa::VerifyingKey, raw: &[u8]) -> bool {
        let report = SnpReport::parse(raw).unwrap();
        let Some((r, s)) = report.signature.to_p384_be() else {
            return false;
        };
        let Ok(sig) = p384::ecdsa::Signature::from_scalars(r, s) else {
            return false;
        };
        key.verify(&raw[..SNP_SIGNED_LEN], &sig).is_ok()
    }

    #[test]
    fn sim_report_verifies_with_the_sev_crate_and_sim_roots() {
        for version in [SnpReportVersion::V3, SnpReportVersion::V5] {
            let signed = sim().report(&request(version)).unwrap();
            let chain = sev_chain(&signed);
            let report = AttestationReport::from_bytes(&signed.report).unwrap();
            (&chain, &report).verify().unwrap();
            assert_eq!(report.measurement, [0x11; 48]);
            assert_eq!(report.host_data, [0x22; 32]);
            assert_eq!(report.report_data, [0x33; 64]);
            assert_eq!(report.chip_id, *sim().chip_id());
            assert_eq!(report.version, version.number());
            assert_eq!(
                report.launch_mit_vector.is_some(),
                version == SnpReportVersion::V5
            );
        }
    }

    #[test]
    fn sim_report_fails_with_amds_real_roots() {
        let signed = sim().report(&request(SnpReportVersion::V3)).unwrap();
        let report = AttestationReport::from_bytes(&signed.report).unwrap();
        let sim_chain = sev_chain(&signed);
        for (ark, ask) in [
            (
                builtin::milan::ark().unwrap(),
                builtin::milan::ask().unwrap(),
            ),
            (
                builtin::genoa::ark().unwrap(),
                builtin::genoa::ask().unwrap(),
            ),
        ] {
            // Real ARK and ASK with the sim VCEK: the ASK did not sign it.
            let chain = Chain {
                ca: ca::Chain {
                    ark: ark.clone(),
                    ask,
                },
                vek: sim_chain.vek.clone(),
            };
            assert!((&chain, &report).verify().is_err());
            // Real ARK as anchor over the sim ASK.
            let chain = Chain {
                ca: ca::Chain {
                    ark,
                    ask: sim_chain.ca.ask.clone(),
                },
                vek: sim_chain.vek.clone(),
            };
            assert!((&chain, &report).verify().is_err());
        }
    }

    #[test]
    fn flipping_any_byte_of_the_signed_region_fails() {
        let signed = sim().report(&request(SnpReportVersion::V5)).unwrap();
        let key = vcek_verifying_key(&signed);
        assert!(raw_verify(&key, &signed.report));
        for i in 0..SNP_SIGNED_LEN {
            let mut bad = signed.report.clone();
            bad[i] ^= 0x01;
            // Flipping the version byte makes an unknown layout: that must not parse at all.
            match SnpReport::parse(&bad) {
                Ok(_) => assert!(!raw_verify(&key, &bad), "flip at {i:#x} still verifies"),
                Err(_) => assert!(i < 4, "flip at {i:#x} broke parsing"),
            }
        }
        // And through the sev crate, for the fields it re-encodes.
        let chain = sev_chain(&signed);
        for offset in [0x08, 0x30, 0x50, 0x90, 0xC0, 0x180, 0x1A0, 0x1F8] {
            let mut bad = signed.report.clone();
            bad[offset] ^= 0x04;
            let report = AttestationReport::from_bytes(&bad).unwrap();
            assert!((&chain, &report).verify().is_err(), "offset {offset:#x}");
        }
    }

    #[test]
    fn signature_fields_are_little_endian_and_zero_extended() {
        let signed = sim().report(&request(SnpReportVersion::V3)).unwrap();
        let sig = &signed.report[SNP_SIGNED_LEN..];
        assert!(sig[48..72].iter().all(|b| *b == 0), "r zero-extended");
        assert!(sig[120..144].iter().all(|b| *b == 0), "s zero-extended");
        assert!(sig[144..].iter().all(|b| *b == 0), "reserved");
        // Reading r as big-endian instead must not verify.
        let key = vcek_verifying_key(&signed);
        let mut r: [u8; 48] = sig[..48].try_into().unwrap();
        let mut s: [u8; 48] = sig[72..120].try_into().unwrap();
        if let Ok(wrong) = p384::ecdsa::Signature::from_scalars(r, s) {
            assert!(
                key.verify(&signed.report[..SNP_SIGNED_LEN], &wrong)
                    .is_err()
            );
        }
        r.reverse();
        s.reverse();
        let right = p384::ecdsa::Signature::from_scalars(r, s).unwrap();
        key.verify(&signed.report[..SNP_SIGNED_LEN], &right)
            .unwrap();
    }

    #[test]
    fn vcek_carries_the_reported_tcb_and_hwid() {
        let mut req = request(SnpReportVersion::V3);
        req.tcb = TcbParts {
            fmc: None,
            bootloader: 3,
            tee: 0,
            snp: 200,
            microcode: 0x73,
        };
        let signed = sim().report(&req).unwrap();
        let report = SnpReport::parse(&signed.report).unwrap();
        assert_eq!(report.reported_tcb.parts(TcbLayout::Legacy), req.tcb);
        let table = SnpCertTable::parse(&signed.cert_table).unwrap();
        let cert = x509_cert::Certificate::from_der(table.get(&GUID_VCEK).unwrap()).unwrap();
        let ext = |oid: &str| {
            cert.tbs_certificate
                .extensions
                .as_ref()
                .unwrap()
                .iter()
                .find(|e| e.extn_id.to_string() == oid)
                .map(|e| e.extn_value.as_bytes().to_vec())
                .unwrap()
        };
        assert_eq!(ext("1.3.6.1.4.1.3704.1.3.1"), vec![2, 1, 3]);
        assert_eq!(ext("1.3.6.1.4.1.3704.1.3.3"), vec![2, 2, 0, 200]);
        assert_eq!(ext("1.3.6.1.4.1.3704.1.3.8"), vec![2, 1, 0x73]);
        assert_eq!(ext("1.3.6.1.4.1.3704.1.4"), sim().chip_id().to_vec());
        assert!(
            cert.tbs_certificate
                .subject
                .to_string()
                .contains("SIMULATED")
        );
        // The sev chain still verifies for this TCB's certificate.
        let parsed = AttestationReport::from_bytes(&signed.report).unwrap();
        (&sev_chain(&signed), &parsed).verify().unwrap();
    }

    #[test]
    fn state_is_persisted_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = SimAmdSp::open_or_create_with_published_test_roots(dir.path()).unwrap();
        let b = SimAmdSp::open_or_create(dir.path()).unwrap();
        assert_eq!(
            a.ark_der(),
            b.ark_der(),
            "second open loads, never regenerates"
        );
        assert_eq!(a.chip_id(), b.chip_id());
        assert!(a.chip_id().starts_with(SIM_CHIP_ID_PREFIX));
        for entry in std::fs::read_dir(dir.path().join(SUBDIR)).unwrap() {
            let mode = entry.unwrap().metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Reports by the reopened simulator verify against the first one's roots.
        let signed = b.report(&request(SnpReportVersion::V3)).unwrap();
        let table = SnpCertTable::parse(&signed.cert_table).unwrap();
        assert_eq!(table.get(&GUID_ARK), Some(a.ark_der()));
    }

    #[test]
    fn corrupt_state_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        SimAmdSp::open_or_create_with_published_test_roots(dir.path()).unwrap();
        let key = dir.path().join(SUBDIR).join(VCEK_KEY);
        std::fs::remove_file(&key).unwrap();
        std::fs::write(&key, b"not a key").unwrap();
        assert!(matches!(
            SimAmdSp::open_or_create(dir.path()),
            Err(AmdSpError::Key(VCEK_KEY, _))
        ));
        let chip = dir.path().join(SUBDIR).join(CHIP_ID);
        std::fs::remove_file(&chip).unwrap();
        assert!(matches!(
            SimAmdSp::open_or_create(dir.path()),
            Err(AmdSpError::State(_) | AmdSpError::Key(..))
        ));
    }

    #[test]
    fn version_2_is_not_produced() {
        assert!(matches!(
            sim().sign_report(&request(SnpReportVersion::V2)),
            Err(AmdSpError::Version(SnpReportVersion::V2))
        ));
    }
}
