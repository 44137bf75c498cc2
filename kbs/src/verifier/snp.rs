//! SEV-SNP evidence: the report's ECDSA P-384 signature under a VCEK or VLEK, that key's
//! certificate chained (RSA-PSS) to a trusted ARK, certificate validity dates, and the TCB and
//! chip-id extensions of the key's certificate against what the report claims (checks the `sev`
//! crate leaves out). Trusted roots are AMD's real Milan, Genoa and Turin ARK/ASK (built into the
//! `sev` crate), plus tee-sim's simulated roots only when the caller adds them.
//!
//! Evidence JSON (`primary_evidence`): tsuba's `{"report", "cert_table"?}` or guest-components'
//! `{"attestation_report", "cert_chain"}` (see `snp_evidence`). Without a VCEK in the
//! certificates the verifier looks in its local VCEK cache; it never goes to the network.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use sev::certs::snp::{Certificate as SevCertificate, Verifiable, builtin};
use tsuba_protocols::evidence::{
    GUID_ASK, GUID_VCEK, GUID_VLEK, SNP_SIG_ALGO_ECDSA_P384_SHA384, SNP_SIGNED_LEN, SigningKey,
    SnpCertTable, SnpClaims, SnpReport, TcbParts,
};
use x509_cert::der::Decode;

use super::snp_trust::{Revocations, SnpCrlError, SnpProduct, SnpRefusal, TcbRequirement};
use super::{Claims, Verifier, VerifierError};
use crate::binding::BindingDigest;

/// Largest certificate accepted (DER bytes).
const MAX_CERT_LEN: usize = 16 * 1024;
/// Most VEK certificates remembered as verified.
const MAX_VERIFIED_VEKS: usize = 4096;
/// Most certificates loaded from a VCEK cache directory.
const MAX_CACHE_ENTRIES: usize = 4096;

const OID_BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HW_ID: &str = "1.3.6.1.4.1.3704.1.4";

/// One trusted ARK/ASK pair.
#[derive(Clone)]
struct Root {
    name: &'static str,
    product: SnpProduct,
    ark: x509_cert::Certificate,
    ask: x509_cert::Certificate,
    simulated: bool,
}

impl Root {
    /// A root whose ARK is self-signed and signs its ASK; checked once, at setup.
    fn checked(
        name: &'static str,
        ark: x509_cert::Certificate,
        ask: x509_cert::Certificate,
        simulated: bool,
    ) -> Result<Self, SnpSetupError> {
        let ark_sev = SevCertificate::from(ark.clone());
        let ask_sev = SevCertificate::from(ask.clone());
        if (&ark_sev, &ark_sev).verify().is_err() || (&ark_sev, &ask_sev).verify().is_err() {
            return Err(SnpSetupError::Root { name });
        }
        let product = SnpProduct::of_ark(&ark).ok_or(SnpSetupError::Root { name })?;
        Ok(Self {
            name,
            product,
            ark,
            ask,
            simulated,
        })
    }
}

/// A certificate parsed once.
#[derive(Clone)]
struct Cert {
    x509: x509_cert::Certificate,
    /// SHA-256 of the DER: the key of the verified-chain cache, hashed once per parse.
    der_sha256: [u8; 32],
}

impl Cert {
    fn parse(der: &[u8], what: &'static str) -> Result<Self, VerifierError> {
        if der.len() > MAX_CERT_LEN {
            return Err(VerifierError::Certificate { what });
        }
        x509_cert::Certificate::from_der(der)
            .map(|x509| Self {
                x509,
                der_sha256: <sha2::Sha256 as sha2::Digest>::digest(der).into(),
            })
            .map_err(|_| VerifierError::Certificate { what })
    }

    fn extension(&self, oid: &str) -> Option<&[u8]> {
        self.x509
            .tbs_certificate
            .extensions
            .as_ref()?
            .iter()
            .find(|ext| ext.extn_id.to_string() == oid)
            .map(|ext| ext.extn_value.as_bytes())
    }
}

/// Errors while setting up the SNP verifier.
#[derive(Debug, thiserror::Error)]
pub enum SnpSetupError {
    /// A built-in or configured root certificate could not be read.
    #[error("snp root certificate {name} is invalid")]
    Root {
        /// Which root.
        name: &'static str,
    },
    /// The VCEK cache directory could not be read.
    #[error("vcek cache {path} could not be read")]
    Cache {
        /// The directory.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A revocation list was refused.
    #[error("snp revocation list refused")]
    Crl(#[from] SnpCrlError),
}

/// Verifier for SEV-SNP reports. It refuses every report until it is given a minimum TCB for
/// the report's product ([`Self::with_min_tcb`]) or told to accept any
/// ([`Self::insecure_accept_any_tcb`]).
pub struct SnpVerifier {
    roots: Vec<Root>,
    vcek_cache: Vec<Cert>,
    tcb: TcbRequirement,
    revocations: Revocations,
    /// SHA-256 of a VEK certificate whose signature by a root's ASK verified, and that root's
    /// index: the RSA check is done once per VEK, the dates on every report.
    verified_veks: std::sync::Mutex<std::collections::HashMap<[u8; 32], usize>>,
}

impl std::fmt::Debug for SnpVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnpVerifier")
            .field(
                "roots",
                &self.roots.iter().map(|r| r.name).collect::<Vec<_>>(),
            )
            .field("vcek_cache", &self.vcek_cache.len())
            .field("tcb", &self.tcb)
            .field("revocations", &self.revocations)
            .finish()
    }
}

/// A report whose signature and chain verified.
#[derive(Debug)]
pub(crate) struct VerifiedReport {
    pub(crate) report: SnpReport,
    pub(crate) simulated: bool,
    pub(crate) root: &'static str,
    pub(crate) product: SnpProduct,
}

impl SnpVerifier {
    /// A verifier trusting AMD's real ARK/ASK for Milan, Genoa and Turin.
    pub fn with_amd_roots() -> Result<Self, SnpSetupError> {
        let mut roots = Vec::new();
        for (name, ark, ask) in [
            ("milan", builtin::milan::ARK, builtin::milan::ASK),
            ("genoa", builtin::genoa::ARK, builtin::genoa::ASK),
            ("turin", builtin::turin::ARK, builtin::turin::ASK),
        ] {
            let parse = |pem: &[u8]| {
                SevCertificate::from_pem(pem)
                    .map(x509_cert::Certificate::from)
                    .map_err(|_| SnpSetupError::Root { name })
            };
            roots.push(Root::checked(name, parse(ark)?, parse(ask)?, false)?);
        }
        Ok(Self {
            roots,
            vcek_cache: Vec::new(),
            tcb: TcbRequirement::Unset,
            revocations: Revocations::default(),
            verified_veks: std::sync::Mutex::default(),
        })
    }

    /// Also trusts tee-sim's simulated ARK/ASK (DER). Reports chained to them are marked
    /// simulated. Only for a broker running with simulated evidence explicitly enabled, and only
    /// in a build with the `insecure-sim` feature.
    #[cfg(feature = "insecure-sim")]
    pub fn insecure_add_simulated_root(
        mut self,
        ark_der: &[u8],
        ask_der: &[u8],
    ) -> Result<Self, SnpSetupError> {
        let parse = |der: &[u8]| {
            x509_cert::Certificate::from_der(der).map_err(|_| SnpSetupError::Root { name: "sim" })
        };
        self.roots.push(Root::checked(
            "tee-sim",
            parse(ark_der)?,
            parse(ask_der)?,
            true,
        )?);
        Ok(self)
    }

    /// Loads VCEK certificates (DER files) from a local cache directory, for reports whose
    /// evidence carries no certificate table.
    pub fn with_vcek_cache(mut self, dir: &Path) -> Result<Self, SnpSetupError> {
        let io = |source| SnpSetupError::Cache {
            path: dir.into(),
            source,
        };
        for entry in std::fs::read_dir(dir).map_err(io)?.take(MAX_CACHE_ENTRIES) {
            let path = entry.map_err(io)?.path();
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            match Cert::parse(&bytes, "cached vcek") {
                Ok(cert) => self.vcek_cache.push(cert),
                Err(_) => tracing::warn!(path = %path.display(), "skipping unreadable vcek"),
            }
        }
        Ok(self)
    }

    /// Accepts reports of `product` whose reported TCB is at least `min` in every component
    /// (`fmc` only when `min` has one). Products without a minimum stay refused.
    pub fn with_min_tcb(mut self, product: SnpProduct, min: TcbParts) -> Self {
        self.tcb = std::mem::take(&mut self.tcb).with(product, min);
        self
    }

    /// Accepts reports with any TCB, including firmware with known flaws a hypervisor can
    /// exploit. Never in production.
    pub fn insecure_accept_any_tcb(mut self) -> Self {
        self.tcb = TcbRequirement::InsecureAny;
        self
    }

    /// Refuses certificates listed in `crl` (PEM or DER), a revocation list that a trusted
    /// ARK or ASK signed (AMD publishes one per product). Returns the verifier and how many
    /// entries the list held.
    pub fn with_crl(mut self, crl: &[u8]) -> Result<(Self, usize), SnpSetupError> {
        let signers: Vec<&x509_cert::Certificate> = self
            .roots
            .iter()
            .flat_map(|root| [&root.ark, &root.ask])
            .collect();
        let count = self.revocations.add(crl, &signers)?;
        Ok((self, count))
    }

    /// Verifies a raw report with an optional certificate table at `now`: signature, chain,
    /// dates, TCB. Does not look at the report data.
    pub(crate) fn verify_report(
        &self,
        raw: &[u8],
        cert_table: Option<&SnpCertTable>,
        now: SystemTime,
    ) -> Result<VerifiedReport, VerifierError> {
        let report = SnpReport::parse(raw).map_err(|_| VerifierError::Malformed {
            what: "snp report is not a valid attestation report",
        })?;
        if report.signature_algo != SNP_SIG_ALGO_ECDSA_P384_SHA384 {
            return Err(VerifierError::Malformed {
                what: "snp report signature algorithm",
            });
        }
        let (guid, what) = match report.key_info.signing_key() {
            SigningKey::Vcek => (GUID_VCEK, "vcek"),
            SigningKey::Vlek => (GUID_VLEK, "vlek"),
            _ => {
                return Err(VerifierError::Malformed {
                    what: "snp report is not signed",
                });
            }
        };
        let table_key = cert_table.and_then(|table| table.get(&guid));
        let vek = match table_key {
            Some(der) => Cert::parse(der, what)?,
            None if guid == GUID_VCEK => self
                .vcek_cache
                .iter()
                .find(|cert| hw_id_matches(cert, &report.chip_id))
                .cloned()
                .ok_or(VerifierError::MissingCertificate { what })?,
            None => return Err(VerifierError::MissingCertificate { what }),
        };
        check_dates(&vek.x509, what, now)?;
        // The report signature first: cheap to fail on a wrong key.
        verify_report_signature(raw, &report, &vek)?;
        let table_ask = cert_table.and_then(|table| table.get(&GUID_ASK));
        let root = self.chain_cached(&vek, table_ask, what, now)?;
        check_tcb(&vek, &report, guid == GUID_VCEK)?;
        let refused = VerifierError::SnpRefused;
        self.revocations.check(&vek.x509, what).map_err(refused)?;
        self.revocations.check(&root.ask, "ask").map_err(refused)?;
        if report.policy.migrate_ma() {
            return Err(refused(SnpRefusal::MigrationAgentAllowed));
        }
        self.tcb
            .check(root.product, report.reported_tcb.parts(report.tcb_layout()))
            .map_err(refused)?;
        Ok(VerifiedReport {
            report,
            simulated: root.simulated,
            root: root.name,
            product: root.product,
        })
    }

    /// Finds the trusted root whose ASK signed `vek` or, for a VLEK, whose ARK signed the
    /// intermediate (ASVK) from the certificate table that signed `vek`. Candidates are picked
    /// by issuer name, so only matching signatures are checked.
    fn chain_cached(
        &self,
        vek: &Cert,
        table_intermediate: Option<&[u8]>,
        what: &'static str,
        now: SystemTime,
    ) -> Result<&Root, VerifierError> {
        let key = vek.der_sha256;
        let lock = || {
            self.verified_veks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        let cached = lock().get(&key).copied();
        if let Some(root) = cached.and_then(|index| self.roots.get(index)) {
            check_dates(&root.ark, "ark", now)?;
            check_dates(&root.ask, "ask", now)?;
            return Ok(root);
        }
        let (root, via_root_ask) = self.chain(vek, table_intermediate, what, now)?;
        // Cache only chains through a root's own ASK (a table intermediate is re-checked).
        if let Some(index) = self.roots.iter().position(|r| std::ptr::eq(r, root))
            && via_root_ask
        {
            let mut cache = lock();
            if cache.len() >= MAX_VERIFIED_VEKS {
                cache.clear();
            }
            cache.insert(key, index);
        }
        Ok(root)
    }

    fn chain(
        &self,
        vek: &Cert,
        table_intermediate: Option<&[u8]>,
        what: &'static str,
        now: SystemTime,
    ) -> Result<(&Root, bool), VerifierError> {
        let vek_sev = SevCertificate::from(vek.x509.clone());
        let issuer = &vek.x509.tbs_certificate.issuer;
        for root in &self.roots {
            if root.ask.tbs_certificate.subject != *issuer {
                continue;
            }
            if (&SevCertificate::from(root.ask.clone()), &vek_sev)
                .verify()
                .is_ok()
            {
                check_dates(&root.ark, "ark", now)?;
                check_dates(&root.ask, "ask", now)?;
                return Ok((root, true));
            }
        }
        if let Some(der) = table_intermediate {
            let intermediate = Cert::parse(der, "ask")?;
            let inter_sev = SevCertificate::from(intermediate.x509.clone());
            if intermediate.x509.tbs_certificate.subject == *issuer
                && (&inter_sev, &vek_sev).verify().is_ok()
            {
                self.revocations
                    .check(&intermediate.x509, "ask")
                    .map_err(VerifierError::SnpRefused)?;
                for root in &self.roots {
                    if root.ark.tbs_certificate.subject != intermediate.x509.tbs_certificate.issuer
                    {
                        continue;
                    }
                    if (&SevCertificate::from(root.ark.clone()), &inter_sev)
                        .verify()
                        .is_ok()
                    {
                        check_dates(&root.ark, "ark", now)?;
                        check_dates(&intermediate.x509, "ask", now)?;
                        return Ok((root, false));
                    }
                }
            }
        }
        Err(VerifierError::Signature { what })
    }
}

impl SnpVerifier {
    /// Verifies evidence JSON in either shape at `now`, everything but the report data.
    pub(crate) fn verify_evidence(
        &self,
        evidence: &Value,
        now: SystemTime,
    ) -> Result<VerifiedReport, VerifierError> {
        let parts = super::snp_evidence::parse(evidence)?;
        self.verify_report(&parts.report, parts.cert_table.as_ref(), now)
    }
}

impl Verifier for SnpVerifier {
    fn verify(
        &self,
        evidence: &Value,
        binding: &BindingDigest,
        now: SystemTime,
    ) -> Result<Claims, VerifierError> {
        let verified = self.verify_evidence(evidence, now)?;
        if verified.report.report_data != binding.padded() {
            return Err(VerifierError::ReportDataMismatch);
        }
        Ok(claims(&verified))
    }

    fn trusts_simulated_roots(&self) -> bool {
        self.roots.iter().any(|root| root.simulated)
    }
}

fn claims(verified: &VerifiedReport) -> Claims {
    let r = &verified.report;
    let c = SnpClaims::from(r);
    let tcb = |t: TcbParts| serde_json::json!({"fmc": t.fmc, "bootloader": t.bootloader, "tee": t.tee, "snp": t.snp, "microcode": t.microcode});
    Claims {
        tee: "snp".into(),
        simulated: verified.simulated,
        measurement: hex::encode(c.measurement),
        debug: c.policy.debug(),
        report_data: hex::encode(c.report_data.as_bytes()),
        host_data: hex::encode(c.host_data),
        details: serde_json::json!({
            "version": r.version.number(),
            "root": verified.root,
            "product": verified.product.name(),
            "policy": c.policy.0,
            "vmpl": c.vmpl,
            "guest_svn": c.guest_svn,
            "signing_key": if c.signing_key == SigningKey::Vlek { "vlek" } else { "vcek" },
            "reported_tcb": tcb(c.reported_tcb),
            "current_tcb": tcb(c.current_tcb),
            "committed_tcb": tcb(c.committed_tcb),
            "launch_tcb": tcb(c.launch_tcb),
            "family_id": hex::encode(c.family_id),
            "image_id": hex::encode(c.image_id),
            "id_key_digest": hex::encode(c.id_key_digest),
            "chip_id": c.chip_id.map(hex::encode),
        }),
        trustee: trustee_claims(r),
    }
}

/// PLATFORM_INFO bits (SEV-SNP ABI, table "ATTESTATION_REPORT structure").
const PLATFORM_SMT_EN: u64 = 1 << 0;
const PLATFORM_TSME_EN: u64 = 1 << 1;

/// The report's claims as Trustee's SNP verifier names them (`deps/verifier/src/snp`:
/// `parse_tee_evidence`), without the two tsuba already gives under the same name and value
/// (`measurement`, `report_data`) and `init_data`, which the broker shows only for a document
/// the guest presented.
fn trustee_claims(r: &SnpReport) -> serde_json::Map<String, serde_json::Value> {
    let policy = r.policy;
    let tcb = r.reported_tcb.parts(r.tcb_layout());
    let json = serde_json::json!({
        "policy_abi_major": policy.abi_major(),
        "policy_abi_minor": policy.abi_minor(),
        "policy_smt_allowed": policy.smt(),
        "policy_migrate_ma": policy.migrate_ma(),
        "policy_debug_allowed": policy.debug(),
        "policy_single_socket": policy.single_socket(),
        "reported_tcb_bootloader": tcb.bootloader,
        "reported_tcb_tee": tcb.tee,
        "reported_tcb_snp": tcb.snp,
        "reported_tcb_microcode": tcb.microcode,
        "platform_smt_enabled": r.platform_info & PLATFORM_SMT_EN != 0,
        "platform_tsme_enabled": r.platform_info & PLATFORM_TSME_EN != 0,
        "chip_id": hex::encode(r.chip_id),
    });
    match json {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

fn verify_report_signature(
    raw: &[u8],
    report: &SnpReport,
    vek: &Cert,
) -> Result<(), VerifierError> {
    let bad = VerifierError::Signature { what: "snp report" };
    let spki = &vek.x509.tbs_certificate.subject_public_key_info;
    let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes())
        .map_err(|_| VerifierError::Certificate {
            what: "vek public key",
        })?;
    let (r, s) = report
        .signature
        .to_p384_be()
        .ok_or(VerifierError::Signature { what: "snp report" })?;
    let signature = p384::ecdsa::Signature::from_scalars(r, s)
        .map_err(|_| VerifierError::Signature { what: "snp report" })?;
    let signed = raw.get(..SNP_SIGNED_LEN).ok_or(VerifierError::Malformed {
        what: "snp report length",
    })?;
    // `p384` parsed and range-checked the key and the signature above; the check itself goes
    // through `ring` (same ECDSA P-384/SHA-384 verification, about twice as fast), with the key
    // as an uncompressed point and the signature as r || s.
    let point = key.to_encoded_point(false);
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P384_SHA384_FIXED,
        point.as_bytes(),
    )
    .verify(signed, &signature.to_bytes())
    .map_err(|_| bad)
}

fn check_dates(
    cert: &x509_cert::Certificate,
    what: &'static str,
    now: SystemTime,
) -> Result<(), VerifierError> {
    let validity = &cert.tbs_certificate.validity;
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    if now < validity.not_before.to_unix_duration() || now > validity.not_after.to_unix_duration() {
        return Err(VerifierError::CertificateDates { what });
    }
    Ok(())
}

/// A DER INTEGER from 0 to 255, as AMD encodes SPL extensions.
fn der_u8(value: &[u8]) -> Option<u8> {
    match value {
        [0x02, 0x01, v] if *v < 0x80 => Some(*v),
        [0x02, 0x02, 0x00, v] if *v >= 0x80 => Some(*v),
        _ => None,
    }
}

fn hw_id_matches(cert: &Cert, chip_id: &[u8; 64]) -> bool {
    match cert.extension(OID_HW_ID) {
        // Turin certifies only the first 8 bytes of the chip id.
        Some(hw_id) if hw_id.len() == 8 => {
            chip_id[..8] == *hw_id && chip_id[8..].iter().all(|b| *b == 0)
        }
        Some(hw_id) => hw_id == chip_id.as_slice(),
        None => false,
    }
}

fn check_tcb(vek: &Cert, report: &SnpReport, is_vcek: bool) -> Result<(), VerifierError> {
    let tcb = report.reported_tcb.parts(report.tcb_layout());
    let mut checks = vec![
        (OID_BL_SPL, "bootloader", tcb.bootloader),
        (OID_TEE_SPL, "tee", tcb.tee),
        (OID_SNP_SPL, "snp", tcb.snp),
        (OID_UCODE_SPL, "microcode", tcb.microcode),
    ];
    if let Some(fmc) = tcb.fmc {
        checks.push((OID_FMC_SPL, "fmc", fmc));
    }
    for (oid, name, reported) in checks {
        let certified =
            vek.extension(oid)
                .and_then(der_u8)
                .ok_or_else(|| VerifierError::TcbMismatch {
                    what: format!("{name} extension missing"),
                })?;
        if certified != reported {
            return Err(VerifierError::TcbMismatch {
                what: format!("{name}: certificate {certified}, report {reported}"),
            });
        }
    }
    let masked = report.key_info.mask_chip_key() || report.chip_id.iter().all(|b| *b == 0);
    if is_vcek && !masked && !hw_id_matches(vek, &report.chip_id) {
        return Err(VerifierError::TcbMismatch {
            what: "chip id is not the certificate's hwid".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn data(name: &str) -> Vec<u8> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/real-evidence/snp");
        std::fs::read(dir.join(name)).unwrap()
    }

    /// The reported TCB of `trustee-test-report.bin` (a Milan).
    const TRUSTEE_TCB: TcbParts = TcbParts {
        fmc: None,
        bootloader: 3,
        tee: 0,
        snp: 8,
        microcode: 0x73,
    };

    /// A verifier of AMD's roots for tests about other things than the TCB.
    fn any_tcb() -> SnpVerifier {
        SnpVerifier::with_amd_roots()
            .unwrap()
            .insecure_accept_any_tcb()
    }

    fn table(vek_guid: [u8; 16], der: Vec<u8>) -> SnpCertTable {
        SnpCertTable {
            entries: vec![tsuba_protocols::evidence::SnpCertEntry {
                guid: vek_guid,
                data: der,
            }],
        }
    }

    /// 2025-06-01: inside every real certificate's validity window.
    fn inside() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_748_736_000)
    }

    #[test]
    fn real_milan_report_verifies_against_amd_roots() {
        let verifier = any_tcb();
        let verified = verifier
            .verify_report(
                &data("trustee-test-report.bin"),
                Some(&table(GUID_VCEK, data("trustee-test-vcek.der"))),
                inside(),
            )
            .unwrap();
        assert_eq!(verified.root, "milan");
        assert!(!verified.simulated);
        let claims = claims(&verified);
        assert_eq!(claims.details["reported_tcb"]["snp"], 8);
        assert_eq!(claims.details["reported_tcb"]["microcode"], 0x73);
        assert!(!claims.debug);
    }

    /// Trustee's names, with the values Trustee's verifier reads from the same report through
    /// the `sev` crate it parses reports with (6.x, the dev-dependency `sev-gc`).
    #[test]
    fn trustees_snp_claim_names_carry_the_reports_values() {
        let raw = data("trustee-test-report.bin");
        let verified = any_tcb()
            .verify_report(
                &raw,
                Some(&table(GUID_VCEK, data("trustee-test-vcek.der"))),
                inside(),
            )
            .unwrap();
        let claims = claims(&verified);
        let theirs = sev_gc::firmware::guest::AttestationReport::from_bytes(&raw).unwrap();
        let expected = serde_json::json!({
            "policy_abi_major": theirs.policy.abi_major(),
            "policy_abi_minor": theirs.policy.abi_minor(),
            "policy_smt_allowed": theirs.policy.smt_allowed(),
            "policy_migrate_ma": theirs.policy.migrate_ma_allowed(),
            "policy_debug_allowed": theirs.policy.debug_allowed(),
            "policy_single_socket": theirs.policy.single_socket_required(),
            "reported_tcb_bootloader": theirs.reported_tcb.bootloader,
            "reported_tcb_tee": theirs.reported_tcb.tee,
            "reported_tcb_snp": theirs.reported_tcb.snp,
            "reported_tcb_microcode": theirs.reported_tcb.microcode,
            "platform_tsme_enabled": theirs.plat_info.tsme_enabled(),
            "platform_smt_enabled": theirs.plat_info.smt_enabled(),
            "chip_id": hex::encode(&theirs.chip_id[..]),
        });
        assert_eq!(serde_json::Value::Object(claims.trustee.clone()), expected);
        // Beside tsuba's own names, at the top of the claims a policy reads.
        let json = serde_json::to_value(&claims).unwrap();
        assert_eq!(json["policy_debug_allowed"], false);
        assert_eq!(json["reported_tcb_snp"], 8);
        assert_eq!(json["measurement"], hex::encode(&theirs.measurement[..]));
        assert_eq!(json["details"]["reported_tcb"]["snp"], 8);
    }

    #[test]
    fn second_real_milan_report_verifies() {
        let raw = hex::decode(
            String::from_utf8(data("sev-report_milan.hex"))
                .unwrap()
                .trim(),
        )
        .unwrap();
        let verifier = any_tcb();
        let verified = verifier
            .verify_report(
                &raw,
                Some(&table(GUID_VCEK, data("sev-vcek_milan.der"))),
                inside(),
            )
            .unwrap();
        assert_eq!(verified.root, "milan");
    }

    #[test]
    fn vcek_from_local_cache() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("other.der"), data("sev-vcek_milan.der")).unwrap();
        std::fs::write(dir.path().join("vcek.der"), data("trustee-test-vcek.der")).unwrap();
        std::fs::write(dir.path().join("junk.der"), b"junk").unwrap();
        let verifier = any_tcb().with_vcek_cache(dir.path()).unwrap();
        verifier
            .verify_report(&data("trustee-test-report.bin"), None, inside())
            .unwrap();
        let no_cache = any_tcb();
        assert!(matches!(
            no_cache.verify_report(&data("trustee-test-report.bin"), None, inside()),
            Err(VerifierError::MissingCertificate { what: "vcek" })
        ));
    }

    #[test]
    fn wrong_vcek_is_refused() {
        let verifier = any_tcb();
        for wrong in [
            "trustee-test-vcek-invalid-legacy.der",
            "trustee-test-vcek-invalid-new.der",
            "sev-vcek_milan.der",
            "sev-vcek_turin.der",
        ] {
            let result = verifier.verify_report(
                &data("trustee-test-report.bin"),
                Some(&table(GUID_VCEK, data(wrong))),
                inside(),
            );
            assert!(
                matches!(
                    result,
                    Err(VerifierError::Signature { .. })
                        | Err(VerifierError::CertificateDates { .. })
                ),
                "{wrong}: {result:?}"
            );
        }
    }

    #[test]
    fn flipped_byte_is_refused() {
        let verifier = any_tcb();
        let good = data("trustee-test-report.bin");
        // Measurement, report data, the TCB and the signature itself.
        for offset in [0x90, 0x50, 0x180, 0x2A0] {
            let mut raw = good.clone();
            raw[offset] ^= 0x01;
            let result = verifier.verify_report(
                &raw,
                Some(&table(GUID_VCEK, data("trustee-test-vcek.der"))),
                inside(),
            );
            assert!(result.is_err(), "offset {offset:#x}");
        }
        let truncated = &good[..1000];
        assert!(matches!(
            verifier.verify_report(
                truncated,
                Some(&table(GUID_VCEK, data("trustee-test-vcek.der"))),
                inside()
            ),
            Err(VerifierError::Malformed { .. })
        ));
    }

    #[test]
    fn expired_or_not_yet_valid_vcek_is_refused() {
        let verifier = any_tcb();
        let t = table(GUID_VCEK, data("trustee-test-vcek.der"));
        let after = SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000); // 2030-03
        let before = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000); // 2020-09
        for when in [after, before] {
            assert!(matches!(
                verifier.verify_report(&data("trustee-test-report.bin"), Some(&t), when),
                Err(VerifierError::CertificateDates { what: "vcek" })
            ));
        }
    }

    #[test]
    fn real_reports_are_refused_below_the_minimum_tcb_and_accepted_at_it() {
        let t = table(GUID_VCEK, data("trustee-test-vcek.der"));
        let report = data("trustee-test-report.bin");
        let verify = |verifier: SnpVerifier| {
            verifier
                .verify_report(&report, Some(&t), inside())
                .map(|_| ())
                .map_err(|err| match err {
                    VerifierError::SnpRefused(refusal) => refusal,
                    other => panic!("{other:?}"),
                })
        };
        let roots = || SnpVerifier::with_amd_roots().unwrap();
        // At its own TCB and below it: accepted.
        assert_eq!(
            verify(roots().with_min_tcb(SnpProduct::Milan, TRUSTEE_TCB)),
            Ok(())
        );
        let lower = TcbParts {
            microcode: 0x72,
            snp: 7,
            ..TRUSTEE_TCB
        };
        assert_eq!(
            verify(roots().with_min_tcb(SnpProduct::Milan, lower)),
            Ok(())
        );
        // One component above: refused, naming that component.
        let above = [
            (
                "bootloader",
                3,
                TcbParts {
                    bootloader: 4,
                    ..TRUSTEE_TCB
                },
            ),
            (
                "tee",
                0,
                TcbParts {
                    tee: 1,
                    ..TRUSTEE_TCB
                },
            ),
            (
                "snp",
                8,
                TcbParts {
                    snp: 9,
                    ..TRUSTEE_TCB
                },
            ),
            (
                "microcode",
                0x73,
                TcbParts {
                    microcode: 0x74,
                    ..TRUSTEE_TCB
                },
            ),
        ];
        for (component, reported, min) in above {
            let refusal = verify(roots().with_min_tcb(SnpProduct::Milan, min)).unwrap_err();
            assert_eq!(
                refusal,
                SnpRefusal::TcbBelowMinimum {
                    product: SnpProduct::Milan,
                    component,
                    reported,
                    minimum: reported + 1,
                }
            );
            assert_eq!(
                refusal.to_string(),
                format!(
                    "milan reported tcb {component} svn {reported} is below the minimum {}",
                    reported + 1
                )
            );
        }
        // No minimum at all, or only another product's: refused, saying what to configure.
        let refusal = verify(roots()).unwrap_err();
        assert_eq!(
            refusal,
            SnpRefusal::NoMinimumTcb {
                product: SnpProduct::Milan
            }
        );
        assert!(
            refusal
                .to_string()
                .contains("--snp-min-tcb milan=bootloader:N,tee:N,snp:N,microcode:N"),
            "{refusal}"
        );
        // A Genoa floor does not apply to a report whose chain ends at Milan's ARK.
        let genoa_only = roots().with_min_tcb(SnpProduct::Genoa, lower);
        assert_eq!(
            verify(genoa_only),
            Err(SnpRefusal::NoMinimumTcb {
                product: SnpProduct::Milan
            })
        );
    }

    #[test]
    fn second_real_report_is_held_to_its_own_tcb() {
        let raw = hex::decode(
            String::from_utf8(data("sev-report_milan.hex"))
                .unwrap()
                .trim(),
        )
        .unwrap();
        let report = SnpReport::parse(&raw).unwrap();
        let tcb = report.reported_tcb.parts(report.tcb_layout());
        // Another machine than Trustee's, at the same TCB level.
        assert_eq!(tcb, TRUSTEE_TCB);
        let t = table(GUID_VCEK, data("sev-vcek_milan.der"));
        let roots = || SnpVerifier::with_amd_roots().unwrap();
        roots()
            .with_min_tcb(SnpProduct::Milan, tcb)
            .verify_report(&raw, Some(&t), inside())
            .unwrap();
        let above = TcbParts {
            snp: tcb.snp + 1,
            ..tcb
        };
        assert!(matches!(
            roots()
                .with_min_tcb(SnpProduct::Milan, above)
                .verify_report(&raw, Some(&t), inside()),
            Err(VerifierError::SnpRefused(SnpRefusal::TcbBelowMinimum {
                component: "snp",
                ..
            }))
        ));
    }

    #[test]
    fn vlek_report_signature_verifies_but_needs_the_asvk() {
        let verifier = any_tcb();
        let vlek = data("trustee-test-vlek.der");
        // Inside the VLEK's one-year window.
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_740_000_000);
        let raw = data("trustee-test-vlek-report.bin");
        let report = SnpReport::parse(&raw).unwrap();
        verify_report_signature(&raw, &report, &Cert::parse(&vlek, "vlek").unwrap()).unwrap();
        // AMD's ASVK is not among the built-in roots and not in this table: no chain.
        assert!(matches!(
            verifier.verify_report(&raw, Some(&table(GUID_VLEK, vlek.clone())), when),
            Err(VerifierError::Signature { what: "vlek" })
        ));
        // Offered as a VCEK, the VLEK-signed report is refused: the key kind must match.
        assert!(matches!(
            verifier.verify_report(&raw, Some(&table(GUID_VCEK, vlek)), when),
            Err(VerifierError::MissingCertificate { what: "vlek" })
        ));
    }

    #[test]
    fn remembered_vcek_still_gets_signature_and_date_checks() {
        let verifier = any_tcb();
        let t = table(GUID_VCEK, data("trustee-test-vcek.der"));
        let good = data("trustee-test-report.bin");
        verifier.verify_report(&good, Some(&t), inside()).unwrap();
        assert_eq!(verifier.verified_veks.lock().unwrap().len(), 1);
        verifier.verify_report(&good, Some(&t), inside()).unwrap();
        let mut flipped = good.clone();
        flipped[0x90] ^= 1;
        assert!(
            verifier
                .verify_report(&flipped, Some(&t), inside())
                .is_err()
        );
        let after = SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        assert!(matches!(
            verifier.verify_report(&good, Some(&t), after),
            Err(VerifierError::CertificateDates { .. })
        ));
    }

    #[test]
    fn tcb_extension_parsing() {
        assert_eq!(der_u8(&[0x02, 0x01, 0x73]), Some(0x73));
        assert_eq!(der_u8(&[0x02, 0x02, 0x00, 0xd9]), Some(0xd9));
        assert_eq!(der_u8(&[0x02, 0x02, 0x01, 0x00]), None);
        assert_eq!(der_u8(&[0x02, 0x01, 0x80]), None);
        assert_eq!(der_u8(&[0x04, 0x01, 0x01]), None);
        assert_eq!(der_u8(&[]), None);
    }
}
