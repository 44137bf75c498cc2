//! Intel TDX evidence: the quote verified with `dcap-qvl` against DCAP collateral read from a
//! local directory (no network at verification time), chained to Intel's real SGX root CA by
//! default. `dcap-qvl` reports the platform's TCB status; this verifier accepts only the statuses
//! it is configured with (default: `UpToDate`), so an out-of-date platform is refused.
//!
//! Evidence JSON (`primary_evidence`): tsuba's `{"quote": <base64 of the TD quote>}`, or
//! guest-components' `{"cc_eventlog": <base64> | null, "quote": <base64>}` (releases before
//! mid-2025 add `"aa_eventlog": <text> | null`). Any other member is refused. The event logs
//! are checked to be well-formed base64 or text, but not replayed against the RTMRs: claims
//! come from the quote alone.

use std::path::Path;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::verify::QuoteVerifier;
use serde::Deserialize;
use serde_json::Value;
use tsuba_protocols::evidence::{TDX_QUOTE_MAX_LEN, TdxClaims, TdxQuote};

use super::{Claims, Verifier, VerifierError};
use crate::binding::BindingDigest;

/// Most collateral files loaded from the collateral directory.
const MAX_COLLATERALS: usize = 256;
/// Largest collateral file accepted.
const MAX_COLLATERAL_LEN: u64 = 1024 * 1024;

/// Errors while setting up the TDX verifier.
#[derive(Debug, thiserror::Error)]
pub enum TdxSetupError {
    /// The collateral directory could not be read.
    #[error("collateral directory {path} could not be read")]
    Dir {
        /// The directory.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A collateral file is not DCAP collateral JSON.
    #[error("collateral file {path} is not dcap collateral json")]
    Collateral {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TdxEvidence {
    quote: String,
    /// guest-components: the CC event log (CCEL, with the attestation agent's events).
    #[serde(default)]
    cc_eventlog: Option<String>,
    /// guest-components before the AA event log moved into the CCEL.
    #[serde(default, rename = "aa_eventlog")]
    _aa_eventlog: Option<String>,
}

/// Verifier for TDX quotes.
pub struct TdxVerifier {
    root_ca_der: Option<Vec<u8>>,
    simulated: bool,
    collaterals: Vec<QuoteCollateralV3>,
    accepted_status: Vec<String>,
}

impl std::fmt::Debug for TdxVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TdxVerifier")
            .field("custom_root", &self.root_ca_der.is_some())
            .field("simulated", &self.simulated)
            .field("collaterals", &self.collaterals.len())
            .field("accepted_status", &self.accepted_status)
            .finish()
    }
}

impl TdxVerifier {
    /// A verifier trusting Intel's SGX root CA, with no collateral yet.
    pub fn with_intel_root() -> Self {
        Self {
            root_ca_der: None,
            simulated: false,
            collaterals: Vec::new(),
            accepted_status: vec!["UpToDate".into()],
        }
    }

    /// A verifier trusting tee-sim's simulated root CA instead of Intel's. Quotes it accepts are
    /// marked simulated. Only for a broker running with simulated evidence explicitly enabled.
    pub fn insecure_with_simulated_root(root_ca_der: Vec<u8>) -> Self {
        Self {
            root_ca_der: Some(root_ca_der),
            simulated: true,
            ..Self::with_intel_root()
        }
    }

    /// Adds one collateral set.
    pub fn with_collateral(mut self, collateral: QuoteCollateralV3) -> Self {
        self.collaterals.push(collateral);
        self
    }

    /// Loads every `*.json` DCAP collateral file in `dir`.
    pub fn with_collateral_dir(mut self, dir: &Path) -> Result<Self, TdxSetupError> {
        let io = |source| TdxSetupError::Dir {
            path: dir.into(),
            source,
        };
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .take(MAX_COLLATERALS)
            .collect();
        paths.sort();
        for path in paths {
            let file = std::fs::File::open(&path).map_err(io)?;
            let reader = std::io::Read::take(file, MAX_COLLATERAL_LEN);
            let collateral =
                serde_json::from_reader(reader).map_err(|source| TdxSetupError::Collateral {
                    path: path.clone(),
                    source,
                })?;
            self.collaterals.push(collateral);
        }
        Ok(self)
    }

    /// Also accepts these TCB statuses (e.g. `SWHardeningNeeded`); `UpToDate` is always accepted.
    pub fn accept_tcb_status(mut self, status: &str) -> Self {
        self.accepted_status.push(status.to_owned());
        self
    }

    /// Verifies a raw quote at `now`: signatures, chain, collateral validity and TCB status.
    pub(crate) fn verify_quote(
        &self,
        raw: &[u8],
        now: SystemTime,
    ) -> Result<TdxQuote, VerifierError> {
        if raw.len() > TDX_QUOTE_MAX_LEN {
            return Err(VerifierError::Malformed {
                what: "tdx quote too large",
            });
        }
        let quote = TdxQuote::parse(raw).map_err(|_| VerifierError::Malformed {
            what: "tdx quote is not a valid quote",
        })?;
        let now_secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let verifier = match &self.root_ca_der {
            Some(root) => QuoteVerifier::new(root.clone()),
            None => QuoteVerifier::new_prod(),
        };
        let mut last_error = None;
        for collateral in &self.collaterals {
            match verifier.verify(raw, collateral, now_secs) {
                Ok(report) => {
                    if !self.accepted_status.contains(&report.status) {
                        return Err(VerifierError::TcbStatus {
                            status: report.status,
                        });
                    }
                    return Ok(quote);
                }
                Err(err) => last_error = Some(err),
            }
        }
        match last_error {
            Some(err) => Err(VerifierError::Quote(err.into())),
            None => Err(VerifierError::MissingCertificate {
                what: "dcap collateral",
            }),
        }
    }
}

impl TdxVerifier {
    /// Verifies evidence JSON in either shape at `now`, everything but the report data.
    pub(crate) fn verify_evidence(
        &self,
        evidence: &Value,
        now: SystemTime,
    ) -> Result<TdxQuote, VerifierError> {
        let evidence = TdxEvidence::deserialize(evidence).map_err(VerifierError::Json)?;
        let raw = STANDARD
            .decode(&evidence.quote)
            .map_err(|_| VerifierError::Malformed {
                what: "quote is not base64",
            })?;
        if let Some(log) = &evidence.cc_eventlog
            && STANDARD.decode(log).is_err()
        {
            return Err(VerifierError::Malformed {
                what: "cc_eventlog is not base64",
            });
        }
        self.verify_quote(&raw, now)
    }
}

impl Verifier for TdxVerifier {
    fn verify(
        &self,
        evidence: &Value,
        binding: &BindingDigest,
        now: SystemTime,
    ) -> Result<Claims, VerifierError> {
        let quote = self.verify_evidence(evidence, now)?;
        let claims = TdxClaims::from(&quote);
        if claims.report_data.as_bytes() != &binding.padded() {
            return Err(VerifierError::ReportDataMismatch);
        }
        Ok(tdx_claims(&quote, &claims, self.simulated))
    }

    fn trusts_simulated_roots(&self) -> bool {
        self.simulated
    }
}

fn tdx_claims(quote: &TdxQuote, c: &TdxClaims, simulated: bool) -> Claims {
    Claims {
        tee: "tdx".into(),
        simulated,
        measurement: hex::encode(c.mr_td),
        debug: quote.body.debug(),
        report_data: hex::encode(c.report_data.as_bytes()),
        host_data: hex::encode(c.mr_config_id),
        details: serde_json::json!({
            "rtmr": c.rtmr.iter().map(hex::encode).collect::<Vec<_>>(),
            "mr_owner": hex::encode(c.mr_owner),
            "mr_owner_config": hex::encode(c.mr_owner_config),
            "mr_seam": hex::encode(c.mr_seam),
            "td_attributes": c.td_attributes,
            "xfam": c.xfam,
            "tee_tcb_svn": hex::encode(c.tee_tcb_svn),
            "qe_svn": c.qe_svn,
            "pce_svn": c.pce_svn,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/real-evidence/tdx")
    }

    fn collateral(name: &str) -> QuoteCollateralV3 {
        serde_json::from_slice(&std::fs::read(dir().join(name)).unwrap()).unwrap()
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// 2025-07-01, inside the first quote's collateral window (2025-06-19 to 2025-07-19).
    const INSIDE: u64 = 1_751_328_000;

    fn verifier() -> TdxVerifier {
        TdxVerifier::with_intel_root()
            .with_collateral(collateral("dcapqvl-tdx_quote_collateral.json"))
    }

    #[test]
    fn real_quote_verifies_with_intel_root() {
        let raw = std::fs::read(dir().join("dcapqvl-tdx_quote")).unwrap();
        let quote = verifier().verify_quote(&raw, at(INSIDE)).unwrap();
        let claims = tdx_claims(&quote, &TdxClaims::from(&quote), false);
        assert_eq!(claims.measurement.len(), 96);
        assert!(!claims.simulated);
    }

    #[test]
    fn expired_collateral_is_refused() {
        let raw = std::fs::read(dir().join("dcapqvl-tdx_quote")).unwrap();
        // 2025-09-01: after the TCB info's next update.
        assert!(matches!(
            verifier().verify_quote(&raw, at(1_756_684_800)),
            Err(VerifierError::Quote(_))
        ));
    }

    #[test]
    fn flipped_byte_and_truncation_are_refused() {
        let raw = std::fs::read(dir().join("dcapqvl-tdx_quote")).unwrap();
        // MRTD in the TD report body, report data, and inside the signature data.
        for offset in [48 + 136, 48 + 520, raw.len() - 100] {
            let mut bad = raw.clone();
            bad[offset] ^= 1;
            assert!(
                verifier().verify_quote(&bad, at(INSIDE)).is_err(),
                "offset {offset}"
            );
        }
        assert!(matches!(
            verifier().verify_quote(&raw[..600], at(INSIDE)),
            Err(VerifierError::Malformed { .. })
        ));
    }

    #[test]
    fn out_of_date_tcb_is_refused() {
        // This platform's TCB is below every level in its (genuine, in-window) TCB info, so no
        // level matches and dcap-qvl refuses it; the same collateral and time are otherwise fine
        // (its own tests only pass this quote with a TCB override).
        let raw = std::fs::read(dir().join("dcapqvl-tdx_quote_outdated")).unwrap();
        let verifier = TdxVerifier::with_intel_root()
            .with_collateral(collateral("dcapqvl-tdx_quote_outdated_collateral.json"))
            .accept_tcb_status("OutOfDate");
        // 2026-03-01, inside that collateral's window.
        let result = verifier.verify_quote(&raw, at(1_772_323_200));
        assert!(
            matches!(&result, Err(VerifierError::Quote(err)) if err.to_string().contains("TCB level")),
            "{result:?}"
        );
    }

    #[test]
    fn wrong_collateral_or_root_is_refused() {
        let raw = std::fs::read(dir().join("dcapqvl-tdx_quote")).unwrap();
        let other = TdxVerifier::with_intel_root()
            .with_collateral(collateral("dcapqvl-tdx_quote_outdated_collateral.json"));
        assert!(other.verify_quote(&raw, at(INSIDE)).is_err());
        let none = TdxVerifier::with_intel_root();
        assert!(matches!(
            none.verify_quote(&raw, at(INSIDE)),
            Err(VerifierError::MissingCertificate { .. })
        ));
        // A root that is not Intel's (here: AMD's Milan ARK, DER) cannot anchor the chain.
        let ark =
            sev::certs::snp::Certificate::from_pem(sev::certs::snp::builtin::milan::ARK).unwrap();
        let foreign = TdxVerifier::insecure_with_simulated_root(ark.to_der().unwrap())
            .with_collateral(collateral("dcapqvl-tdx_quote_collateral.json"));
        assert!(foreign.verify_quote(&raw, at(INSIDE)).is_err());
    }

    fn quote_b64(name: &str) -> String {
        STANDARD.encode(std::fs::read(dir().join(name)).unwrap())
    }

    #[test]
    fn guest_components_evidence_is_accepted() {
        let quote = quote_b64("dcapqvl-tdx_quote");
        let ccel = STANDARD.encode(b"CCEL\x01\x00\x00\x00event log bytes");
        for evidence in [
            // tsuba's own shape.
            serde_json::json!({ "quote": quote }),
            // guest-components today, with and without an event log.
            serde_json::json!({ "cc_eventlog": ccel, "quote": quote }),
            serde_json::json!({ "cc_eventlog": null, "quote": quote }),
            // guest-components before the AA event log moved into the CCEL.
            serde_json::json!({ "cc_eventlog": ccel, "quote": quote, "aa_eventlog": "INIT sha384/00\n" }),
            serde_json::json!({ "cc_eventlog": null, "quote": quote, "aa_eventlog": null }),
        ] {
            let quote = verifier().verify_evidence(&evidence, at(INSIDE)).unwrap();
            assert!(!quote.body.debug(), "{evidence}");
        }
        let binding = BindingDigest::compute("nonce", &serde_json::json!({"kty": "EC"}), "");
        let gc = serde_json::json!({ "cc_eventlog": null, "quote": quote });
        assert!(matches!(
            verifier().verify(&gc, &binding, at(INSIDE)),
            Err(VerifierError::ReportDataMismatch)
        ));
    }

    #[test]
    fn malformed_or_tampered_guest_components_evidence_is_refused() {
        let quote = quote_b64("dcapqvl-tdx_quote");
        let mut raw = std::fs::read(dir().join("dcapqvl-tdx_quote")).unwrap();
        raw[48 + 136] ^= 1;
        let flipped = STANDARD.encode(&raw);
        let cases = [
            serde_json::json!({ "cc_eventlog": null, "quote": flipped }),
            serde_json::json!({ "cc_eventlog": "not base64!", "quote": quote }),
            serde_json::json!({ "cc_eventlog": 5, "quote": quote }),
            serde_json::json!({ "cc_eventlog": null, "quote": quote, "extra": 1 }),
            serde_json::json!({ "cc_eventlog": null }),
            serde_json::json!({ "quote": [1, 2, 3] }),
            serde_json::json!({ "quote": "%%%" }),
            serde_json::json!("just a string"),
        ];
        for evidence in cases {
            assert!(
                verifier().verify_evidence(&evidence, at(INSIDE)).is_err(),
                "{evidence}"
            );
        }
        let expired = serde_json::json!({ "cc_eventlog": null, "quote": quote });
        assert!(matches!(
            verifier().verify_evidence(&expired, at(1_756_684_800)),
            Err(VerifierError::Quote(_))
        ));
    }

    #[test]
    fn collateral_directory_loads_json_files() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::copy(
            dir().join("dcapqvl-tdx_quote_collateral.json"),
            tmp.path().join("a.json"),
        )
        .unwrap();
        std::fs::write(tmp.path().join("notes.txt"), b"ignored").unwrap();
        let verifier = TdxVerifier::with_intel_root()
            .with_collateral_dir(tmp.path())
            .unwrap();
        let raw = std::fs::read(dir().join("dcapqvl-tdx_quote")).unwrap();
        verifier.verify_quote(&raw, at(INSIDE)).unwrap();
        std::fs::write(tmp.path().join("b.json"), b"{broken").unwrap();
        assert!(matches!(
            TdxVerifier::with_intel_root().with_collateral_dir(tmp.path()),
            Err(TdxSetupError::Collateral { .. })
        ));
    }
}
