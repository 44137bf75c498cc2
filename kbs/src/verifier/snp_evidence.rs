//! The JSON shapes SNP evidence arrives in, reduced to one form: the raw 1184-byte report and an
//! optional certificate table. Two shapes are accepted, told apart by their keys, each strictly
//! (unknown members refused):
//!
//! - tsuba's own: `{"report": <base64 report>, "cert_table": <base64 SNP certificate table>?}`;
//! - guest-components' SNP attester (as Trustee's verifier reads it):
//!   `{"attestation_report": <report>, "cert_chain": [<entry>, ...] | null}`, where the report is
//!   the serde form of the `sev` crate's `AttestationReport` (6.x and later: named fields, byte
//!   arrays as JSON arrays of numbers, bit-field words as numbers, TCB versions as
//!   `{"fmc","bootloader","tee","snp","microcode"}`, firmware versions as
//!   `{"major","minor","build"}`, the signature as `{"r","s"}` of 72 little-endian bytes each)
//!   and an entry is `{"cert_type": "ARK"|"ASK"|"VCEK"|"VLEK"|"CRL"|"Empty"|{"OTHER": <uuid>},
//!   "data": [<bytes>]}`.
//!
//! The `sev` form leaves out the report's reserved bytes, so the report is rebuilt in the ABI
//! layout with them zero (as the `sev` crate itself writes it back) and then verified exactly
//! like a raw report: its signature covers the rebuilt bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::Value;
use tsuba_protocols::evidence::{
    CpuId, FirmwareVersion, GUID_ARK, GUID_ASK, GUID_CRL, GUID_VCEK, GUID_VLEK, GuestPolicy,
    KeyInfo, SNP_CERT_TABLE_MAX_ENTRIES, SNP_CERT_TABLE_MAX_LEN, SNP_SIG_COMPONENT_LEN,
    SnpCertEntry, SnpCertTable, SnpReport, SnpReportVersion, SnpSignature, TcbLayout, TcbParts,
    TcbVersion,
};

use super::VerifierError;

/// Evidence reduced to what the verifier checks.
#[derive(Debug)]
pub(super) struct SnpEvidenceParts {
    /// The report in the ABI layout.
    pub(super) report: Vec<u8>,
    /// The certificates that came with it.
    pub(super) cert_table: Option<SnpCertTable>,
}

/// Reads either shape of SNP evidence.
pub(super) fn parse(evidence: &Value) -> Result<SnpEvidenceParts, VerifierError> {
    let object = evidence.as_object().ok_or(VerifierError::Malformed {
        what: "snp evidence is not a json object",
    })?;
    if object.contains_key("attestation_report") {
        let evidence = GcEvidence::deserialize(evidence).map_err(VerifierError::Json)?;
        Ok(SnpEvidenceParts {
            report: evidence.attestation_report.into_report()?.to_bytes(),
            cert_table: evidence.cert_chain.map(cert_table).transpose()?,
        })
    } else {
        let evidence = TsubaEvidence::deserialize(evidence).map_err(VerifierError::Json)?;
        let report = STANDARD
            .decode(&evidence.report)
            .map_err(|_| VerifierError::Malformed {
                what: "report is not base64",
            })?;
        let cert_table = evidence
            .cert_table
            .map(|b64| {
                let bytes = STANDARD.decode(b64).map_err(|_| VerifierError::Malformed {
                    what: "cert_table is not base64",
                })?;
                SnpCertTable::parse(&bytes).map_err(|_| VerifierError::Malformed {
                    what: "cert_table is not a certificate table",
                })
            })
            .transpose()?;
        Ok(SnpEvidenceParts { report, cert_table })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TsubaEvidence {
    report: String,
    #[serde(default)]
    cert_table: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GcEvidence {
    attestation_report: GcReport,
    cert_chain: Option<Vec<GcCertEntry>>,
}

/// The `sev` crate's `AttestationReport` serde form, field for field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GcReport {
    version: u32,
    guest_svn: u32,
    policy: u64,
    family_id: Vec<u8>,
    image_id: Vec<u8>,
    vmpl: u32,
    sig_algo: u32,
    current_tcb: GcTcb,
    plat_info: u64,
    key_info: u32,
    report_data: Vec<u8>,
    measurement: Vec<u8>,
    host_data: Vec<u8>,
    id_key_digest: Vec<u8>,
    author_key_digest: Vec<u8>,
    report_id: Vec<u8>,
    report_id_ma: Vec<u8>,
    reported_tcb: GcTcb,
    cpuid_fam_id: Option<u8>,
    cpuid_mod_id: Option<u8>,
    cpuid_step: Option<u8>,
    chip_id: Vec<u8>,
    committed_tcb: GcTcb,
    current: GcVersion,
    committed: GcVersion,
    launch_tcb: GcTcb,
    launch_mit_vector: Option<u64>,
    current_mit_vector: Option<u64>,
    signature: GcSignature,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GcTcb {
    fmc: Option<u8>,
    bootloader: u8,
    tee: u8,
    snp: u8,
    microcode: u8,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GcVersion {
    major: u8,
    minor: u8,
    build: u8,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GcSignature {
    r: Vec<u8>,
    s: Vec<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GcCertEntry {
    cert_type: GcCertType,
    data: Vec<u8>,
}

#[derive(Deserialize)]
enum GcCertType {
    Empty,
    #[serde(rename = "ARK")]
    Ark,
    #[serde(rename = "ASK")]
    Ask,
    #[serde(rename = "VCEK")]
    Vcek,
    #[serde(rename = "VLEK")]
    Vlek,
    #[serde(rename = "CRL")]
    Crl,
    /// A certificate kind named by its GUID; not used by the verifier.
    #[serde(rename = "OTHER")]
    Other(String),
}

fn fixed<const N: usize>(bytes: Vec<u8>, what: &'static str) -> Result<[u8; N], VerifierError> {
    <[u8; N]>::try_from(bytes).map_err(|_| VerifierError::Malformed { what })
}

impl GcReport {
    /// The report this form stands for, refusing combinations the `sev` crate never produces
    /// (CPUID fields on a version 2 report, an FMC version on a pre-Turin TCB, ...).
    fn into_report(self) -> Result<SnpReport, VerifierError> {
        let malformed = |what| VerifierError::Malformed { what };
        let version = match self.version {
            2 => SnpReportVersion::V2,
            3 => SnpReportVersion::V3,
            5 => SnpReportVersion::V5,
            _ => return Err(malformed("unsupported snp report version")),
        };
        let cpuid = match (
            version,
            self.cpuid_fam_id,
            self.cpuid_mod_id,
            self.cpuid_step,
        ) {
            (SnpReportVersion::V2, None, None, None) => None,
            (SnpReportVersion::V3 | SnpReportVersion::V5, Some(family), Some(model), Some(s)) => {
                Some(CpuId {
                    family,
                    model,
                    stepping: s,
                })
            }
            _ => return Err(malformed("cpuid fields do not match the report version")),
        };
        let (launch_mit_vector, current_mit_vector) =
            match (version, self.launch_mit_vector, self.current_mit_vector) {
                (SnpReportVersion::V5, Some(launch), Some(current)) => {
                    (Some(launch), Some(current))
                }
                (SnpReportVersion::V2 | SnpReportVersion::V3, None, None) => (None, None),
                _ => {
                    return Err(malformed(
                        "mitigation vectors do not match the report version",
                    ));
                }
            };
        let mut report = SnpReport {
            version,
            guest_svn: self.guest_svn,
            policy: GuestPolicy(self.policy),
            family_id: fixed(self.family_id, "family_id length")?,
            image_id: fixed(self.image_id, "image_id length")?,
            vmpl: self.vmpl,
            signature_algo: self.sig_algo,
            current_tcb: TcbVersion::default(),
            platform_info: self.plat_info,
            key_info: KeyInfo(self.key_info),
            report_data: fixed(self.report_data, "report_data length")?,
            measurement: fixed(self.measurement, "measurement length")?,
            host_data: fixed(self.host_data, "host_data length")?,
            id_key_digest: fixed(self.id_key_digest, "id_key_digest length")?,
            author_key_digest: fixed(self.author_key_digest, "author_key_digest length")?,
            report_id: fixed(self.report_id, "report_id length")?,
            report_id_ma: fixed(self.report_id_ma, "report_id_ma length")?,
            reported_tcb: TcbVersion::default(),
            cpuid,
            chip_id: fixed(self.chip_id, "chip_id length")?,
            committed_tcb: TcbVersion::default(),
            current_version: self.current.into(),
            committed_version: self.committed.into(),
            launch_tcb: TcbVersion::default(),
            launch_mit_vector,
            current_mit_vector,
            signature: SnpSignature {
                r: fixed::<SNP_SIG_COMPONENT_LEN>(self.signature.r, "signature r length")?,
                s: fixed::<SNP_SIG_COMPONENT_LEN>(self.signature.s, "signature s length")?,
            },
        };
        // The TCB layout follows from the CPUID family or the chip id, as `sev` decides it.
        let layout = report.tcb_layout();
        report.current_tcb = self.current_tcb.into_tcb(layout)?;
        report.reported_tcb = self.reported_tcb.into_tcb(layout)?;
        report.committed_tcb = self.committed_tcb.into_tcb(layout)?;
        report.launch_tcb = self.launch_tcb.into_tcb(layout)?;
        Ok(report)
    }
}

impl GcTcb {
    fn into_tcb(self, layout: TcbLayout) -> Result<TcbVersion, VerifierError> {
        if self.fmc.is_some() != (layout == TcbLayout::Turin) {
            return Err(VerifierError::Malformed {
                what: "tcb fmc field does not match the processor generation",
            });
        }
        let parts = TcbParts {
            fmc: self.fmc,
            bootloader: self.bootloader,
            tee: self.tee,
            snp: self.snp,
            microcode: self.microcode,
        };
        Ok(TcbVersion::from_parts(parts, layout))
    }
}

impl From<GcVersion> for FirmwareVersion {
    fn from(v: GcVersion) -> Self {
        Self {
            major: v.major,
            minor: v.minor,
            build: v.build,
        }
    }
}

/// The certificate list as a table keyed by GUID. Entries the verifier has no use for (empty,
/// `OTHER`) are dropped; the sizes are bounded as for the binary table.
fn cert_table(entries: Vec<GcCertEntry>) -> Result<SnpCertTable, VerifierError> {
    if entries.len() > SNP_CERT_TABLE_MAX_ENTRIES {
        return Err(VerifierError::Malformed {
            what: "cert_chain has too many entries",
        });
    }
    let total: usize = entries.iter().map(|entry| entry.data.len()).sum();
    if total > SNP_CERT_TABLE_MAX_LEN {
        return Err(VerifierError::Malformed {
            what: "cert_chain is too large",
        });
    }
    let mut table = SnpCertTable::default();
    for entry in entries {
        let guid = match entry.cert_type {
            GcCertType::Ark => GUID_ARK,
            GcCertType::Ask => GUID_ASK,
            GcCertType::Vcek => GUID_VCEK,
            GcCertType::Vlek => GUID_VLEK,
            GcCertType::Crl => GUID_CRL,
            GcCertType::Empty => continue,
            GcCertType::Other(uuid) if is_uuid(&uuid) => continue,
            GcCertType::Other(_) => {
                return Err(VerifierError::Malformed {
                    what: "cert_chain entry type is not a uuid",
                });
            }
        };
        table.entries.push(SnpCertEntry {
            guid,
            data: entry.data,
        });
    }
    Ok(table)
}

/// Whether `text` is a hyphenated UUID, as the `uuid` crate writes one.
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|group| group.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|group| group.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::{Duration, SystemTime};

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde_json::json;
    use sev_gc::firmware::guest::AttestationReport;
    use sev_gc::firmware::host::{CertTableEntry, CertType};
    use tsuba_protocols::evidence::{SNP_REPORT_LEN, SNP_SIGNED_LEN};

    use super::*;
    use crate::binding::BindingDigest;
    use crate::verifier::{SnpVerifier, Verifier};

    fn data(name: &str) -> Vec<u8> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/real-evidence/snp");
        std::fs::read(dir.join(name)).unwrap()
    }

    fn milan_hex_report() -> Vec<u8> {
        hex::decode(
            String::from_utf8(data("sev-report_milan.hex"))
                .unwrap()
                .trim(),
        )
        .unwrap()
    }

    /// 2025-06-01: inside every real certificate's validity window.
    fn inside() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_748_736_000)
    }

    /// Evidence exactly as guest-components' SNP attester builds it: the `sev` 6.3.1 report
    /// parsed from the hardware's bytes, and the extended report's certificate entries.
    fn gc_evidence(raw: &[u8], certs: Option<Vec<CertTableEntry>>) -> Value {
        let report = AttestationReport::from_bytes(raw).unwrap();
        json!({ "attestation_report": report, "cert_chain": certs })
    }

    fn vcek_entry(der: Vec<u8>) -> Option<Vec<CertTableEntry>> {
        Some(vec![CertTableEntry {
            cert_type: CertType::VCEK,
            data: der,
        }])
    }

    fn trustee_gc() -> Value {
        gc_evidence(
            &data("trustee-test-report.bin"),
            vcek_entry(data("trustee-test-vcek.der")),
        )
    }

    #[test]
    fn sev_serde_form_is_what_this_parser_expects() {
        let evidence = trustee_gc();
        let report = &evidence["attestation_report"];
        // Byte arrays are arrays of numbers, bit-field words plain numbers.
        assert_eq!(report["measurement"].as_array().unwrap().len(), 48);
        assert!(report["policy"].is_u64());
        assert!(report["reported_tcb"]["fmc"].is_null());
        assert_eq!(report["signature"]["r"].as_array().unwrap().len(), 72);
        assert_eq!(evidence["cert_chain"][0]["cert_type"], "VCEK");
        assert!(evidence["cert_chain"][0]["data"].is_array());
    }

    #[test]
    fn rebuilt_report_is_the_hardware_report() {
        for raw in [data("trustee-test-report.bin"), milan_hex_report()] {
            let parts = parse(&gc_evidence(&raw, None)).unwrap();
            assert_eq!(parts.report.len(), SNP_REPORT_LEN);
            assert_eq!(parts.report[..SNP_SIGNED_LEN], raw[..SNP_SIGNED_LEN]);
            let sig = SNP_SIGNED_LEN..SNP_SIGNED_LEN + 2 * SNP_SIG_COMPONENT_LEN;
            assert_eq!(parts.report[sig.clone()], raw[sig]);
            assert!(parts.cert_table.is_none());
        }
    }

    #[test]
    fn guest_components_evidence_verifies_like_tsuba_evidence() {
        let verifier = SnpVerifier::with_amd_roots()
            .unwrap()
            .insecure_accept_any_tcb();
        let theirs = verifier.verify_evidence(&trustee_gc(), inside()).unwrap();
        assert_eq!(theirs.root, "milan");
        let mut table = Vec::new();
        table.extend_from_slice(&GUID_VCEK);
        table.extend_from_slice(&48u32.to_le_bytes());
        let vcek = data("trustee-test-vcek.der");
        table.extend_from_slice(&u32::try_from(vcek.len()).unwrap().to_le_bytes());
        table.extend_from_slice(&[0; 24]);
        table.extend_from_slice(&vcek);
        let ours = json!({
            "report": STANDARD.encode(data("trustee-test-report.bin")),
            "cert_table": STANDARD.encode(&table),
        });
        let ours = verifier.verify_evidence(&ours, inside()).unwrap();
        assert_eq!(ours.report, theirs.report);

        let verifier = SnpVerifier::with_amd_roots()
            .unwrap()
            .insecure_accept_any_tcb();
        let second = gc_evidence(&milan_hex_report(), vcek_entry(data("sev-vcek_milan.der")));
        assert_eq!(
            verifier.verify_evidence(&second, inside()).unwrap().root,
            "milan"
        );
    }

    #[test]
    fn guest_components_evidence_goes_through_the_binding_check() {
        let verifier = SnpVerifier::with_amd_roots()
            .unwrap()
            .insecure_accept_any_tcb();
        let binding = BindingDigest::compute("nonce", &json!({"kty": "EC"}), "");
        assert!(matches!(
            verifier.verify(&trustee_gc(), &binding, inside()),
            Err(VerifierError::ReportDataMismatch)
        ));
    }

    #[test]
    fn extra_entries_are_ignored_and_the_cache_serves_a_null_chain() {
        let verifier = SnpVerifier::with_amd_roots()
            .unwrap()
            .insecure_accept_any_tcb();
        let uuid = "11111111-2222-3333-4444-555555555555".parse().unwrap();
        let chain = vec![
            CertTableEntry {
                cert_type: CertType::OTHER(uuid),
                data: vec![1, 2, 3],
            },
            CertTableEntry {
                cert_type: CertType::Empty,
                data: Vec::new(),
            },
            CertTableEntry {
                cert_type: CertType::VCEK,
                data: data("trustee-test-vcek.der"),
            },
        ];
        let evidence = gc_evidence(&data("trustee-test-report.bin"), Some(chain));
        assert_eq!(
            evidence["cert_chain"][0]["cert_type"]["OTHER"],
            uuid.to_string()
        );
        verifier.verify_evidence(&evidence, inside()).unwrap();

        let null_chain = gc_evidence(&data("trustee-test-report.bin"), None);
        assert!(matches!(
            verifier.verify_evidence(&null_chain, inside()),
            Err(VerifierError::MissingCertificate { what: "vcek" })
        ));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vcek.der"), data("trustee-test-vcek.der")).unwrap();
        let cached = SnpVerifier::with_amd_roots()
            .unwrap()
            .insecure_accept_any_tcb()
            .with_vcek_cache(dir.path())
            .unwrap();
        cached.verify_evidence(&null_chain, inside()).unwrap();
    }

    /// Sets `report[field][index] ^= 1` in guest-components evidence.
    fn flip(evidence: &mut Value, path: &[&str], index: usize) {
        let mut value = &mut evidence["attestation_report"];
        for key in path {
            value = &mut value[*key];
        }
        let byte = value[index].as_u64().unwrap();
        value[index] = json!(byte ^ 1);
    }

    #[test]
    fn tampered_guest_components_evidence_is_refused() {
        let verifier = SnpVerifier::with_amd_roots()
            .unwrap()
            .insecure_accept_any_tcb();
        for (path, index) in [
            (&["measurement"][..], 0),
            (&["report_data"][..], 5),
            (&["host_data"][..], 31),
            (&["chip_id"][..], 0),
            (&["signature", "r"][..], 0),
            (&["signature", "s"][..], 47),
        ] {
            let mut evidence = trustee_gc();
            flip(&mut evidence, path, index);
            let result = verifier.verify_evidence(&evidence, inside());
            assert!(
                matches!(
                    result,
                    Err(VerifierError::Signature { .. } | VerifierError::TcbMismatch { .. })
                ),
                "{path:?}: {result:?}"
            );
        }
        let mut debug = trustee_gc();
        let policy = debug["attestation_report"]["policy"].as_u64().unwrap();
        debug["attestation_report"]["policy"] = json!(policy | GuestPolicy::DEBUG);
        assert!(matches!(
            verifier.verify_evidence(&debug, inside()),
            Err(VerifierError::Signature { .. })
        ));
        let mut tcb = trustee_gc();
        tcb["attestation_report"]["reported_tcb"]["snp"] = json!(9);
        assert!(verifier.verify_evidence(&tcb, inside()).is_err());

        for wrong in [
            "trustee-test-vcek-invalid-new.der",
            "sev-vcek_milan.der",
            "sev-vcek_turin.der",
        ] {
            let evidence = gc_evidence(&data("trustee-test-report.bin"), vcek_entry(data(wrong)));
            assert!(
                verifier.verify_evidence(&evidence, inside()).is_err(),
                "{wrong}"
            );
        }
        let after = SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        assert!(matches!(
            verifier.verify_evidence(&trustee_gc(), after),
            Err(VerifierError::CertificateDates { .. })
        ));
    }

    /// A change to a piece of evidence.
    type Edit = fn(&mut Value);

    #[test]
    fn malformed_guest_components_evidence_is_refused() {
        let verifier = SnpVerifier::with_amd_roots()
            .unwrap()
            .insecure_accept_any_tcb();
        let edits: Vec<(&str, Edit)> = vec![
            ("extra top-level member", |e| e["extra"] = json!(1)),
            ("both shapes at once", |e| e["report"] = json!("AAAA")),
            ("extra report member", |e| {
                e["attestation_report"]["reserved"] = json!(0)
            }),
            ("missing report member", |e| {
                e["attestation_report"]
                    .as_object_mut()
                    .unwrap()
                    .remove("host_data");
            }),
            ("short measurement", |e| {
                e["attestation_report"]["measurement"]
                    .as_array_mut()
                    .unwrap()
                    .pop();
            }),
            ("long signature", |e| {
                e["attestation_report"]["signature"]["r"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!(0));
            }),
            ("byte out of range", |e| {
                e["attestation_report"]["measurement"][0] = json!(256)
            }),
            ("byte as string", |e| {
                e["attestation_report"]["measurement"] = json!("00")
            }),
            ("fmc on a milan tcb", |e| {
                e["attestation_report"]["launch_tcb"]["fmc"] = json!(1)
            }),
            ("unknown version", |e| {
                e["attestation_report"]["version"] = json!(4)
            }),
            ("cpuid on a version 2 report", |e| {
                e["attestation_report"]["cpuid_fam_id"] = json!(0x19)
            }),
            ("mitigation vector on a version 2 report", |e| {
                e["attestation_report"]["launch_mit_vector"] = json!(0)
            }),
            ("unknown certificate type", |e| {
                e["cert_chain"][0]["cert_type"] = json!("PEK")
            }),
            ("other certificate type without a uuid", |e| {
                e["cert_chain"][0]["cert_type"] = json!({"OTHER": "vcek"})
            }),
            ("certificate data as base64", |e| {
                e["cert_chain"][0]["data"] = json!("MIIB")
            }),
            ("report as base64", |e| {
                e["attestation_report"] = json!(STANDARD.encode([0u8; SNP_REPORT_LEN]))
            }),
        ];
        for (name, edit) in edits {
            let mut evidence = trustee_gc();
            edit(&mut evidence);
            let result = verifier.verify_evidence(&evidence, inside());
            assert!(
                matches!(
                    result,
                    Err(VerifierError::Json(_) | VerifierError::Malformed { .. })
                ),
                "{name}: {result:?}"
            );
        }
        assert!(matches!(
            parse(&json!([1, 2, 3])),
            Err(VerifierError::Malformed { .. })
        ));
        let entry = json!({"cert_type": "VCEK", "data": [1]});
        let mut many = trustee_gc();
        many["cert_chain"] = Value::Array(vec![entry; SNP_CERT_TABLE_MAX_ENTRIES + 1]);
        assert!(matches!(
            parse(&many),
            Err(VerifierError::Malformed {
                what: "cert_chain has too many entries"
            })
        ));
        let mut big = trustee_gc();
        big["cert_chain"] =
            json!([{"cert_type": "VCEK", "data": vec![0u8; SNP_CERT_TABLE_MAX_LEN + 1]}]);
        assert!(matches!(
            parse(&big),
            Err(VerifierError::Malformed {
                what: "cert_chain is too large"
            })
        ));
    }
}
