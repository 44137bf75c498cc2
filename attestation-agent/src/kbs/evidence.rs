//! What the KBS client needs from an attester: the TEE type it reports as, and evidence carrying
//! given report data. Trustee's unsigned `sample` TEE is provided here for development against a
//! broker that accepts it.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use tsuba_protocols::evidence::{REPORT_DATA_LEN, ReportData};

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
/// the JSON shapes tsuba's broker verifies: `{"report", "cert_table"}` for SNP (standard base64
/// of the raw report and certificate table) and `{"quote"}` for TDX.
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
        ))
    }
}

fn evidence_json(evidence: &Evidence) -> Value {
    match evidence {
        Evidence::Snp { report, cert_table } => serde_json::json!({
            "report": STANDARD.encode(report),
            "cert_table": cert_table.as_ref().map(|table| STANDARD.encode(table)),
        }),
        Evidence::Tdx {
            quote,
            cc_eventlog: None,
        } => serde_json::json!({ "quote": STANDARD.encode(quote) }),
        Evidence::Tdx {
            quote,
            cc_eventlog: Some(log),
        } => serde_json::json!({
            "quote": STANDARD.encode(quote),
            "cc_eventlog": STANDARD.encode(log),
        }),
    }
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
    use super::*;
    use crate::attester::AttesterError;

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
                    report: vec![1, 2, 3],
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
            json,
            serde_json::json!({"report": "AQID", "cert_table": null})
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
            serde_json::json!({"quote": "BAU=", "cc_eventlog": "Bg=="})
        );
        // Without an event log, tsuba's original shape.
        assert_eq!(
            evidence_json(&Evidence::Tdx {
                quote: vec![4, 5],
                cc_eventlog: None
            }),
            serde_json::json!({"quote": "BAU="})
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
