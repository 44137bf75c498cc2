//! Trustee's `sample` TEE: evidence with no signature at all, used by Confidential Containers'
//! clients in development mode. Only ever registered under
//! [`EvidenceTrust::InsecureAcceptSimulated`](super::EvidenceTrust).

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::Value;

use super::{Claims, Verifier, VerifierError};
use crate::binding::BindingDigest;

/// The launch digest Trustee's sample verifier reports when the evidence names none.
const DEFAULT_LAUNCH_DIGEST: &str = "abcde";

/// Longest `launch_digest` accepted from sample evidence.
const MAX_DIGEST_LEN: usize = 256;

#[derive(Debug, Deserialize)]
struct SampleEvidence {
    report_data: String,
    svn: String,
    #[serde(default)]
    launch_digest: Option<String>,
}

/// Verifier for the unsigned `sample` TEE: checks only the report-data binding.
#[derive(Debug, Default)]
pub(crate) struct SampleVerifier;

impl Verifier for SampleVerifier {
    fn verify(
        &self,
        evidence: &Value,
        binding: &BindingDigest,
        _now: SystemTime,
    ) -> Result<Claims, VerifierError> {
        let evidence = SampleEvidence::deserialize(evidence).map_err(VerifierError::Json)?;
        let report_data =
            STANDARD
                .decode(&evidence.report_data)
                .map_err(|_| VerifierError::Malformed {
                    what: "report_data is not base64",
                })?;
        let binds = report_data.as_slice() == binding.as_bytes().as_slice()
            || report_data.as_slice() == binding.padded().as_slice();
        if !binds {
            return Err(VerifierError::ReportDataMismatch);
        }
        let measurement = evidence
            .launch_digest
            .unwrap_or_else(|| DEFAULT_LAUNCH_DIGEST.to_owned());
        if measurement.len() > MAX_DIGEST_LEN || evidence.svn.len() > MAX_DIGEST_LEN {
            return Err(VerifierError::Malformed {
                what: "field too long",
            });
        }
        Ok(Claims {
            tee: "sample".into(),
            simulated: true,
            measurement: measurement.clone(),
            debug: false,
            report_data: hex::encode(report_data),
            host_data: String::new(),
            details: serde_json::json!({"svn": evidence.svn}),
            // Trustee's sample verifier's names for the same two fields.
            trustee: serde_json::Map::from_iter([
                ("svn".to_owned(), evidence.svn.clone().into()),
                ("launch_digest".to_owned(), measurement.into()),
            ]),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn binding() -> BindingDigest {
        BindingDigest::compute("nonce", &json!({"kty": "EC"}), "")
    }

    #[test]
    fn accepts_bound_evidence() {
        let evidence = json!({"report_data": STANDARD.encode(binding().as_bytes()), "svn": "1"});
        let claims = SampleVerifier
            .verify(&evidence, &binding(), SystemTime::now())
            .unwrap();
        assert!(claims.simulated);
        assert_eq!(claims.measurement, "abcde");
        assert_eq!(claims.report_data, hex::encode(binding().as_bytes()));
    }

    #[test]
    fn refuses_evidence_for_another_nonce_and_malformed_evidence() {
        let other = BindingDigest::compute("other nonce", &json!({"kty": "EC"}), "");
        let evidence = json!({"report_data": STANDARD.encode(other.as_bytes()), "svn": "1"});
        assert!(matches!(
            SampleVerifier.verify(&evidence, &binding(), SystemTime::now()),
            Err(VerifierError::ReportDataMismatch)
        ));
        for bad in [
            json!({}),
            json!({"report_data": "***", "svn": "1"}),
            json!("text"),
            json!({"report_data": 1, "svn": "1"}),
        ] {
            assert!(
                SampleVerifier
                    .verify(&bad, &binding(), SystemTime::now())
                    .is_err(),
                "{bad}"
            );
        }
    }
}
