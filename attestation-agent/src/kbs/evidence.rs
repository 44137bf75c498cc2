//! What the KBS client needs from an attester: the TEE type it reports as, and evidence carrying
//! given report data. Trustee's unsigned `sample` TEE is provided here for development against a
//! broker that accepts it.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;
use tsuba_protocols::evidence::{
    FirmwareVersion, GUID_ARK, GUID_ASK, GUID_CRL, GUID_VCEK, GUID_VLEK, REPORT_DATA_LEN,
    ReportData, SnpCertTable, SnpCertTableError, SnpReport, SnpReportError, TcbVersion,
};

use crate::attester::{Attester, AttesterKind, Evidence};

/// Produces evidence for the KBS protocol.
pub trait EvidenceProvider: Send + Sync {
    /// The TEE type named in the `auth` request (`snp`, `tdx`, `sample`).
    fn tee(&self) -> &'static str;

    /// Evidence (the `primary_evidence` JSON) whose report data carries `binding`, the 48-byte
    /// SHA-384 binding digest. TEEs with a 64-byte report data field zero-pad it.
    fn evidence(
        &self,
        binding: &[u8; 48],
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>>;
}

/// Evidence from one of the guest's [`Attester`]s (SNP, TDX, or their tee-sim counterparts), in
/// the JSON shapes guest-components' attesters send, so that Trustee's verifier and tsuba's
/// broker both read it:
///
/// - SNP: `{"attestation_report": <report>, "cert_chain": [<entry>, ...] | null}`, the serde form
///   of the `sev` crate's `AttestationReport` (6.x: named fields in ABI order, byte fields as
///   arrays of numbers, TCB versions as `{"fmc","bootloader","tee","snp","microcode"}`) and its
///   certificate entries `{"cert_type", "data"}`, sorted as `sev` sorts them;
/// - TDX: `{"cc_eventlog": <base64> | null, "quote": <base64>}` (standard base64, padded).
#[derive(Debug, Clone)]
pub struct AttesterEvidence {
    attester: Arc<dyn Attester>,
}

impl AttesterEvidence {
    /// Wraps `attester`.
    pub fn new(attester: Arc<dyn Attester>) -> Self {
        Self { attester }
    }
}

impl EvidenceProvider for AttesterEvidence {
    fn tee(&self) -> &'static str {
        match self.attester.kind() {
            AttesterKind::Snp | AttesterKind::SimSnp => "snp",
            AttesterKind::Tdx | AttesterKind::SimTdx => "tdx",
        }
    }

    fn evidence(
        &self,
        binding: &[u8; 48],
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let mut report_data = [0u8; REPORT_DATA_LEN];
        report_data[..binding.len()].copy_from_slice(binding);
        Ok(evidence_json(
            &self.attester.evidence(&ReportData(report_data))?,
        )?)
    }
}

/// Why an attester's output could not be put in guest-components' evidence shape.
#[derive(Debug, Error)]
pub enum EvidenceShapeError {
    /// The SNP report is not one this crate reads (wrong length or unknown version).
    #[error("the attester's snp report cannot be read; check the guest's SNP firmware")]
    SnpReport(#[source] SnpReportError),
    /// The SNP certificate table is malformed or too large.
    #[error("the attester's snp certificate table cannot be read; check the host's certificates")]
    SnpCertTable(#[source] SnpCertTableError),
    /// JSON encoding failed.
    #[error("encoding the evidence as json failed")]
    Json(#[source] serde_json::Error),
}

fn evidence_json(evidence: &Evidence) -> Result<Value, EvidenceShapeError> {
    match evidence {
        Evidence::Snp { report, cert_table } => {
            let report = SnpReport::parse(report).map_err(EvidenceShapeError::SnpReport)?;
            let table = cert_table
                .as_deref()
                .map(SnpCertTable::parse)
                .transpose()
                .map_err(EvidenceShapeError::SnpCertTable)?;
            serde_json::to_value(GcSnpEvidence::new(&report, table.as_ref()))
                .map_err(EvidenceShapeError::Json)
        }
        Evidence::Tdx { quote, cc_eventlog } => {
            let evidence = GcTdxEvidence {
                cc_eventlog: cc_eventlog.as_ref().map(|log| STANDARD.encode(log)),
                quote: STANDARD.encode(quote),
            };
            serde_json::to_value(&evidence).map_err(EvidenceShapeError::Json)
        }
    }
}

/// guest-components' TDX evidence: the event log first, `null` when there is none.
#[derive(Serialize)]
struct GcTdxEvidence {
    cc_eventlog: Option<String>,
    quote: String,
}

#[derive(Serialize)]
struct GcSnpEvidence<'a> {
    attestation_report: GcReport<'a>,
    cert_chain: Option<Vec<GcCertEntry<'a>>>,
}

impl<'a> GcSnpEvidence<'a> {
    fn new(report: &'a SnpReport, table: Option<&'a SnpCertTable>) -> Self {
        Self {
            attestation_report: GcReport::new(report),
            cert_chain: table.map(gc_cert_chain),
        }
    }
}

/// The `sev` 6.x `AttestationReport` serde form; the field order is the struct's.
#[derive(Serialize)]
struct GcReport<'a> {
    version: u32,
    guest_svn: u32,
    policy: u64,
    family_id: &'a [u8],
    image_id: &'a [u8],
    vmpl: u32,
    sig_algo: u32,
    current_tcb: GcTcb,
    plat_info: u64,
    key_info: u32,
    report_data: &'a [u8],
    measurement: &'a [u8],
    host_data: &'a [u8],
    id_key_digest: &'a [u8],
    author_key_digest: &'a [u8],
    report_id: &'a [u8],
    report_id_ma: &'a [u8],
    reported_tcb: GcTcb,
    cpuid_fam_id: Option<u8>,
    cpuid_mod_id: Option<u8>,
    cpuid_step: Option<u8>,
    chip_id: &'a [u8],
    committed_tcb: GcTcb,
    current: GcVersion,
    committed: GcVersion,
    launch_tcb: GcTcb,
    launch_mit_vector: Option<u64>,
    current_mit_vector: Option<u64>,
    signature: GcSignature<'a>,
}

/// A TCB version as `sev` writes it: `fmc` is `null` before Turin.
#[derive(Serialize)]
struct GcTcb {
    fmc: Option<u8>,
    bootloader: u8,
    tee: u8,
    snp: u8,
    microcode: u8,
}

#[derive(Serialize)]
struct GcVersion {
    major: u8,
    minor: u8,
    build: u8,
}

#[derive(Serialize)]
struct GcSignature<'a> {
    r: &'a [u8],
    s: &'a [u8],
}

impl<'a> GcReport<'a> {
    fn new(report: &'a SnpReport) -> Self {
        let layout = report.tcb_layout();
        let tcb = |tcb: TcbVersion| {
            let parts = tcb.parts(layout);
            GcTcb {
                fmc: parts.fmc,
                bootloader: parts.bootloader,
                tee: parts.tee,
                snp: parts.snp,
                microcode: parts.microcode,
            }
        };
        let version = |v: FirmwareVersion| GcVersion {
            major: v.major,
            minor: v.minor,
            build: v.build,
        };
        Self {
            version: report.version.number(),
            guest_svn: report.guest_svn,
            policy: report.policy.0,
            family_id: &report.family_id,
            image_id: &report.image_id,
            vmpl: report.vmpl,
            sig_algo: report.signature_algo,
            current_tcb: tcb(report.current_tcb),
            plat_info: report.platform_info,
            key_info: report.key_info.0,
            report_data: &report.report_data,
            measurement: &report.measurement,
            host_data: &report.host_data,
            id_key_digest: &report.id_key_digest,
            author_key_digest: &report.author_key_digest,
            report_id: &report.report_id,
            report_id_ma: &report.report_id_ma,
            reported_tcb: tcb(report.reported_tcb),
            cpuid_fam_id: report.cpuid.map(|c| c.family),
            cpuid_mod_id: report.cpuid.map(|c| c.model),
            cpuid_step: report.cpuid.map(|c| c.stepping),
            chip_id: &report.chip_id,
            committed_tcb: tcb(report.committed_tcb),
            current: version(report.current_version),
            committed: version(report.committed_version),
            launch_tcb: tcb(report.launch_tcb),
            launch_mit_vector: report.launch_mit_vector,
            current_mit_vector: report.current_mit_vector,
            signature: GcSignature {
                r: &report.signature.r,
                s: &report.signature.s,
            },
        }
    }
}

#[derive(Serialize)]
struct GcCertEntry<'a> {
    cert_type: GcCertType,
    data: &'a [u8],
}

/// `sev`'s `CertType`: the known GUIDs by name, any other as `{"OTHER": <uuid>}`.
#[derive(Serialize)]
enum GcCertType {
    #[serde(rename = "ARK")]
    Ark,
    #[serde(rename = "VCEK")]
    Vcek,
    #[serde(rename = "VLEK")]
    Vlek,
    #[serde(rename = "ASK")]
    Ask,
    #[serde(rename = "CRL")]
    Crl,
    #[serde(rename = "OTHER")]
    Other(String),
}

impl GcCertType {
    fn of(guid: &[u8; 16]) -> Self {
        match *guid {
            GUID_ARK => Self::Ark,
            GUID_ASK => Self::Ask,
            GUID_VCEK => Self::Vcek,
            GUID_VLEK => Self::Vlek,
            GUID_CRL => Self::Crl,
            _ => Self::Other(uuid_string(guid)),
        }
    }

    /// The position `sev` sorts this kind into: ARK, VCEK, VLEK, ASK, CRL, then the others.
    fn rank(&self) -> u8 {
        match self {
            Self::Ark => 0,
            Self::Vcek => 1,
            Self::Vlek => 2,
            Self::Ask => 3,
            Self::Crl => 4,
            Self::Other(_) => 5,
        }
    }
}

/// The entries as `sev` returns an extended report's table: up to the first zero GUID, then
/// sorted by kind (stable; entries of another kind by GUID).
fn gc_cert_chain(table: &SnpCertTable) -> Vec<GcCertEntry<'_>> {
    let mut entries: Vec<(&[u8; 16], GcCertEntry<'_>)> = table
        .entries
        .iter()
        .take_while(|entry| entry.guid != [0; 16])
        .map(|entry| {
            (
                &entry.guid,
                GcCertEntry {
                    cert_type: GcCertType::of(&entry.guid),
                    data: &entry.data,
                },
            )
        })
        .collect();
    entries.sort_by(|(a_guid, a), (b_guid, b)| {
        a.cert_type.rank().cmp(&b.cert_type.rank()).then_with(|| {
            match (&a.cert_type, &b.cert_type) {
                (GcCertType::Other(_), GcCertType::Other(_)) => a_guid.cmp(b_guid),
                _ => std::cmp::Ordering::Equal,
            }
        })
    });
    entries.into_iter().map(|(_, entry)| entry).collect()
}

/// A GUID in RFC 4122 byte order, written as the `uuid` crate writes it (lowercase, hyphenated).
fn uuid_string(guid: &[u8; 16]) -> String {
    let hex = hex::encode(guid);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Trustee's `sample` TEE: unsigned evidence that only a broker running with simulated evidence
/// explicitly enabled accepts. Never use it for real secrets.
#[derive(Debug, Clone, Default)]
pub struct InsecureSampleEvidence {
    launch_digest: Option<String>,
}

impl InsecureSampleEvidence {
    /// Sample evidence naming `launch_digest` as its measurement (the broker reports `abcde`
    /// when none is named, as Trustee's does).
    pub fn with_launch_digest(launch_digest: impl Into<String>) -> Self {
        Self {
            launch_digest: Some(launch_digest.into()),
        }
    }
}

impl EvidenceProvider for InsecureSampleEvidence {
    fn tee(&self) -> &'static str {
        "sample"
    }

    fn evidence(
        &self,
        binding: &[u8; 48],
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let mut evidence = serde_json::json!({"report_data": STANDARD.encode(binding), "svn": "1"});
        if let Some(digest) = &self.launch_digest {
            evidence["launch_digest"] = Value::String(digest.clone());
        }
        Ok(evidence)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;
    use sev_gc::firmware::guest::AttestationReport;
    use sev_gc::firmware::host::CertTableEntry;
    use tsuba_protocols::evidence::{CpuId, SNP_REPORT_LEN, SnpCertEntry, SnpReportVersion};

    use super::*;
    use crate::attester::AttesterError;

    fn data(name: &str) -> Vec<u8> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/real-evidence/snp");
        std::fs::read(dir.join(name)).unwrap()
    }

    /// The real reports: two from Trustee's tests (VCEK- and VLEK-signed), one from `sev`'s.
    fn real_reports() -> Vec<(&'static str, Vec<u8>)> {
        let milan = String::from_utf8(data("sev-report_milan.hex")).unwrap();
        vec![
            ("trustee vcek", data("trustee-test-report.bin")),
            ("trustee vlek", data("trustee-test-vlek-report.bin")),
            ("sev milan", hex::decode(milan.trim()).unwrap()),
        ]
    }

    /// The real reports, and each rewritten into the other layouts `sev` reads: version 3 on
    /// Milan and on Turin (the CPUID family picks the TCB layout), version 5 with mitigation
    /// vectors, and version 2 with a Turin-shaped chip id. Signatures no longer verify; the
    /// shape is what is compared.
    fn reports() -> Vec<(String, Vec<u8>)> {
        let mut all = Vec::new();
        for (name, raw) in real_reports() {
            let parsed = SnpReport::parse(&raw).unwrap();
            let mut v3 = parsed.clone();
            v3.version = SnpReportVersion::V3;
            v3.cpuid = Some(CpuId {
                family: 0x19,
                model: 0x01,
                stepping: 0x01,
            });
            let mut turin = v3.clone();
            turin.cpuid = Some(CpuId {
                family: 0x1A,
                model: 0x02,
                stepping: 0x00,
            });
            let mut v5 = turin.clone();
            v5.version = SnpReportVersion::V5;
            v5.launch_mit_vector = Some(0x0102_0304_0506_0708);
            v5.current_mit_vector = Some(u64::MAX);
            let mut turin_chip = parsed.clone();
            turin_chip.chip_id = [0; 64];
            turin_chip.chip_id[..8].copy_from_slice(&[7; 8]);
            all.push((name.to_string(), raw));
            for (variant, report) in [
                ("v3 milan", v3),
                ("v3 turin", turin),
                ("v5 turin", v5),
                ("v2 turin chip id", turin_chip),
            ] {
                all.push((format!("{name}, {variant}"), report.to_bytes()));
            }
        }
        all
    }

    /// Certificate tables as a host may hand them out, in table order.
    fn tables() -> Vec<Option<SnpCertTable>> {
        let entry = |guid, data: &[u8]| SnpCertEntry {
            guid,
            data: data.to_vec(),
        };
        let other_a = *b"\x11\x11\x11\x11\x22\x22\x33\x33\x44\x44\x55\x55\x55\x55\x55\x55";
        let other_b = *b"\x01\x11\x11\x11\x22\x22\x33\x33\x44\x44\x55\x55\x55\x55\x55\xAA";
        vec![
            None,
            Some(SnpCertTable::default()),
            Some(SnpCertTable {
                entries: vec![entry(GUID_VCEK, &data("trustee-test-vcek.der"))],
            }),
            Some(SnpCertTable {
                entries: vec![
                    entry(other_a, &[9, 9]),
                    entry(GUID_CRL, &[8]),
                    entry(GUID_ASK, &[1, 2]),
                    entry(GUID_VLEK, &[3]),
                    entry(other_b, &[]),
                    entry(GUID_VCEK, &[4, 5, 6]),
                    entry(GUID_ARK, &[7]),
                    entry(GUID_VCEK, &[0xff]),
                ],
            }),
        ]
    }

    /// What guest-components' SNP attester sends for `raw` and `table`: the `sev` 6.3.1 report,
    /// and the table parsed and sorted as `sev`'s `get_ext_report` does it.
    fn guest_components(raw: &[u8], table: Option<&SnpCertTable>) -> Vec<u8> {
        let report = AttestationReport::from_bytes(raw).unwrap();
        let certs = table.map(|table| {
            let mut bytes = table.to_bytes().unwrap();
            let mut certs = CertTableEntry::vec_bytes_to_cert_table(&mut bytes).unwrap();
            certs.sort();
            certs
        });
        serde_json::to_vec(&json!({"attestation_report": report, "cert_chain": certs})).unwrap()
    }

    #[test]
    fn snp_evidence_is_byte_for_byte_what_guest_components_sends() {
        let mut compared = 0;
        for (name, raw) in reports() {
            for table in tables() {
                let evidence = Evidence::Snp {
                    report: raw.clone(),
                    cert_table: table.as_ref().map(|t| t.to_bytes().unwrap()),
                };
                let ours = serde_json::to_vec(&evidence_json(&evidence).unwrap()).unwrap();
                let theirs = guest_components(&raw, table.as_ref());
                assert_eq!(
                    String::from_utf8(ours).unwrap(),
                    String::from_utf8(theirs).unwrap(),
                    "{name}, {} certificates",
                    table.map_or(0, |t| t.entries.len())
                );
                compared += 1;
            }
        }
        assert_eq!(compared, 3 * 5 * 4);
    }

    /// guest-components' evidence as its attester's struct serialises straight to text.
    #[derive(serde::Serialize)]
    struct TheirSnpEvidence {
        attestation_report: AttestationReport,
        cert_chain: Option<Vec<CertTableEntry>>,
    }

    #[test]
    fn snp_evidence_keeps_sevs_field_order_and_forms() {
        // Through `Value`, key order follows serde_json's `preserve_order` feature in the build
        // (the comparison above holds either way); serialised directly, it is the structs'.
        for (name, raw) in reports() {
            for table in tables() {
                let parsed = SnpReport::parse(&raw).unwrap();
                let ours =
                    serde_json::to_string(&GcSnpEvidence::new(&parsed, table.as_ref())).unwrap();
                let theirs = TheirSnpEvidence {
                    attestation_report: AttestationReport::from_bytes(&raw).unwrap(),
                    cert_chain: table.as_ref().map(|table| {
                        let mut bytes = table.to_bytes().unwrap();
                        let mut certs =
                            CertTableEntry::vec_bytes_to_cert_table(&mut bytes).unwrap();
                        certs.sort();
                        certs
                    }),
                };
                assert_eq!(ours, serde_json::to_string(&theirs).unwrap(), "{name}");
            }
        }
        let raw = data("trustee-test-report.bin");
        let parsed = SnpReport::parse(&raw).unwrap();
        let text = serde_json::to_string(&GcSnpEvidence::new(&parsed, None)).unwrap();
        assert!(
            text.starts_with(
                r#"{"attestation_report":{"version":2,"guest_svn":4,"policy":196639,"#
            ),
            "{text}"
        );
        assert!(text.ends_with(r#",0,0]}},"cert_chain":null}"#), "{text}");
        let json = evidence_json(&Evidence::Snp {
            report: raw,
            cert_table: None,
        })
        .unwrap();
        let report = &json["attestation_report"];
        assert_eq!(report["measurement"].as_array().unwrap().len(), 48);
        assert_eq!(report["signature"]["r"].as_array().unwrap().len(), 72);
        assert_eq!(report["reported_tcb"]["fmc"], Value::Null);
        assert_eq!(report["cpuid_fam_id"], Value::Null);
        assert_eq!(report["launch_mit_vector"], Value::Null);
        assert_eq!(report["report_data"], json!(parsed.report_data.to_vec()));
    }

    #[test]
    fn snp_certificates_are_named_and_sorted_as_sev_does() {
        let other = [0xAB; 16];
        let table = SnpCertTable {
            entries: vec![
                SnpCertEntry {
                    guid: other,
                    data: vec![1],
                },
                SnpCertEntry {
                    guid: GUID_ASK,
                    data: vec![2],
                },
                SnpCertEntry {
                    guid: GUID_VCEK,
                    data: vec![3],
                },
                SnpCertEntry {
                    guid: GUID_ARK,
                    data: vec![4],
                },
            ],
        };
        let json = evidence_json(&Evidence::Snp {
            report: data("trustee-test-report.bin"),
            cert_table: Some(table.to_bytes().unwrap()),
        })
        .unwrap();
        assert_eq!(
            json["cert_chain"],
            json!([
                {"cert_type": "ARK", "data": [4]},
                {"cert_type": "VCEK", "data": [3]},
                {"cert_type": "ASK", "data": [2]},
                {"cert_type": {"OTHER": "abababab-abab-abab-abab-abababababab"}, "data": [1]},
            ])
        );
    }

    #[test]
    fn unreadable_snp_evidence_is_an_error_not_a_panic() {
        let raw = data("trustee-test-report.bin");
        let shaped =
            |report: Vec<u8>, cert_table| evidence_json(&Evidence::Snp { report, cert_table });
        assert!(matches!(
            shaped(raw[..SNP_REPORT_LEN - 1].to_vec(), None),
            Err(EvidenceShapeError::SnpReport(SnpReportError::Length(1183)))
        ));
        assert!(matches!(
            shaped(Vec::new(), None),
            Err(EvidenceShapeError::SnpReport(SnpReportError::Length(0)))
        ));
        let mut v4 = raw.clone();
        v4[0] = 4;
        assert!(matches!(
            shaped(v4, None),
            Err(EvidenceShapeError::SnpReport(
                SnpReportError::UnsupportedVersion(4)
            ))
        ));
        // A table without its terminating entry, and one whose entry points past the end.
        assert!(matches!(
            shaped(raw.clone(), Some(vec![1; 10])),
            Err(EvidenceShapeError::SnpCertTable(
                SnpCertTableError::Unterminated
            ))
        ));
        let mut outside = SnpCertTable {
            entries: vec![SnpCertEntry {
                guid: GUID_VCEK,
                data: vec![1; 4],
            }],
        }
        .to_bytes()
        .unwrap();
        outside.truncate(outside.len() - 1);
        assert!(matches!(
            shaped(raw.clone(), Some(outside)),
            Err(EvidenceShapeError::SnpCertTable(
                SnpCertTableError::OutOfBounds(0)
            ))
        ));
        let mut huge = vec![0u8; tsuba_protocols::evidence::SNP_CERT_TABLE_MAX_LEN + 1];
        huge[0] = 1;
        assert!(matches!(
            shaped(raw, Some(huge)),
            Err(EvidenceShapeError::SnpCertTable(
                SnpCertTableError::Oversized(_)
            ))
        ));
    }

    #[test]
    fn tdx_evidence_is_guest_components_shape() {
        let text =
            |evidence: &Evidence| serde_json::to_string(&evidence_json(evidence).unwrap()).unwrap();
        assert_eq!(
            text(&Evidence::Tdx {
                quote: vec![4, 5],
                cc_eventlog: Some(vec![6]),
            }),
            r#"{"cc_eventlog":"Bg==","quote":"BAU="}"#
        );
        assert_eq!(
            text(&Evidence::Tdx {
                quote: vec![0xfb, 0xff],
                cc_eventlog: None,
            }),
            r#"{"cc_eventlog":null,"quote":"+/8="}"#
        );
    }

    #[derive(Debug)]
    struct Fixed(AttesterKind, std::sync::Mutex<Option<ReportData>>);

    impl Attester for Fixed {
        fn kind(&self) -> AttesterKind {
            self.0
        }

        fn evidence(&self, report_data: &ReportData) -> Result<Evidence, AttesterError> {
            *self.1.lock().unwrap() = Some(*report_data);
            Ok(match self.0 {
                AttesterKind::Snp | AttesterKind::SimSnp => Evidence::Snp {
                    report: data("trustee-test-report.bin"),
                    cert_table: None,
                },
                _ => Evidence::Tdx {
                    quote: vec![4, 5],
                    cc_eventlog: Some(vec![6]),
                },
            })
        }
    }

    #[test]
    fn attester_evidence_pads_the_binding_and_shapes_the_json() {
        let binding = [0xab; 48];
        let snp = Arc::new(Fixed(AttesterKind::SimSnp, std::sync::Mutex::new(None)));
        let provider = AttesterEvidence::new(snp.clone());
        assert_eq!(provider.tee(), "snp");
        let json = provider.evidence(&binding).unwrap();
        assert_eq!(
            serde_json::to_vec(&json).unwrap(),
            guest_components(&data("trustee-test-report.bin"), None)
        );
        let asked = snp.1.lock().unwrap().unwrap();
        assert_eq!(&asked.0[..48], &binding);
        assert!(asked.0[48..].iter().all(|b| *b == 0));

        let tdx = AttesterEvidence::new(Arc::new(Fixed(
            AttesterKind::Tdx,
            std::sync::Mutex::new(None),
        )));
        assert_eq!(tdx.tee(), "tdx");
        assert_eq!(
            tdx.evidence(&binding).unwrap(),
            json!({"cc_eventlog": "Bg==", "quote": "BAU="})
        );
    }

    #[test]
    fn sample_evidence_carries_the_binding() {
        let json = InsecureSampleEvidence::with_launch_digest("ff")
            .evidence(&[1; 48])
            .unwrap();
        assert_eq!(json["report_data"], STANDARD.encode([1u8; 48]));
        assert_eq!(json["launch_digest"], "ff");
        assert_eq!(InsecureSampleEvidence::default().tee(), "sample");
    }
}
