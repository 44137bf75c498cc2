//! What the KBS client needs from an attester: the TEE type it reports as, and evidence carrying
//! given report data. Trustee's unsigned `sample` TEE is provided here for development against a
//! broker that accepts it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

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
