//! Intel TDX evidence: the quote verified with `dcap-qvl` against DCAP collateral read from a
//! local directory (no network at verification time), chained to Intel's real SGX root CA by
//! default. `dcap-qvl` reports the platform's TCB status; this verifier accepts only the statuses
//! it is configured with (default: `UpToDate`), so an out-of-date platform is refused.
//!
//! Evidence JSON (`primary_evidence`): tsuba's `{"quote": <base64 of the TD quote>}`, or
//! guest-components' `{"cc_eventlog": <base64> | null, "quote": <base64>}` (releases before
//! mid-2025 add `"aa_eventlog": <text> | null`; tsuba's own evidence may carry `cc_eventlog` as
//! well). Any other member is refused.
//!
//! The CC event log (the TCG2 log of the CCEL ACPI table) is parsed and replayed: a log whose
//! RTMR0..2 do not match the quote's is refused, naming the register. The claims then carry the
//! quote's four RTMRs and the kernel, initrd and command-line digests read from the log's events
//! (`details.rtmr`, `details.event_log`); the default attestation policy compares them with the
//! reference values. RTMR3 is extended at run time by the guest's attestation agent and is not
//! replayed. The `aa_eventlog` text is ignored.

use std::path::Path;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::verify::QuoteVerifier;
use serde::Deserialize;
use serde_json::Value;
use tsuba_protocols::evidence::ccel::{BOOT_RTMRS, EventLog, EventLogError, MAX_EVENT_LOG_LEN};
use tsuba_protocols::evidence::{TDX_QUOTE_MAX_LEN, TdxClaims, TdxQuote, TdxQuoteVersion};

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

/// A simulated root CA trusted besides the primary one (its collateral is among the loaded
/// ones, e.g. written by `tsuba sim export-roots --tdx-collateral-out` into the collateral
/// directory).
struct SimulatedRoot {
    root_ca_der: Vec<u8>,
}

/// Verifier for TDX quotes.
pub struct TdxVerifier {
    root_ca_der: Option<Vec<u8>>,
    simulated: bool,
    collaterals: Vec<QuoteCollateralV3>,
    accepted_status: Vec<String>,
    extra_simulated_root: Option<SimulatedRoot>,
}

impl std::fmt::Debug for TdxVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TdxVerifier")
            .field("custom_root", &self.root_ca_der.is_some())
            .field("simulated", &self.simulated)
            .field("collaterals", &self.collaterals.len())
            .field("accepted_status", &self.accepted_status)
            .field("extra_simulated_root", &self.extra_simulated_root.is_some())
            .finish()
    }
}

/// A verified quote, whether a simulated root signed it, and its replayed event log.
pub(crate) struct VerifiedTdx {
    pub(crate) quote: TdxQuote,
    pub(crate) simulated: bool,
    pub(crate) event_log: Option<EventLog>,
    /// The platform's TCB status as the collateral gives it (`UpToDate`, ...).
    pub(crate) tcb_status: String,
}

impl TdxVerifier {
    /// A verifier trusting Intel's SGX root CA, with no collateral yet.
    pub fn with_intel_root() -> Self {
        Self {
            root_ca_der: None,
            simulated: false,
            collaterals: Vec::new(),
            accepted_status: vec!["UpToDate".into()],
            extra_simulated_root: None,
        }
    }

    /// Also trusts tee-sim's simulated root CA (DER) besides the primary root, with the same
    /// collateral set (which must hold the simulated platform's). Quotes that only it verifies
    /// are marked simulated. Only in a build with the `insecure-sim` feature, for a broker
    /// running with simulated evidence explicitly enabled.
    #[cfg(feature = "insecure-sim")]
    pub fn insecure_add_simulated_root(mut self, root_ca_der: Vec<u8>) -> Self {
        self.extra_simulated_root = Some(SimulatedRoot { root_ca_der });
        self
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
    /// Returns the quote and whether a simulated root signed it.
    #[cfg(test)]
    pub(crate) fn verify_quote(
        &self,
        raw: &[u8],
        now: SystemTime,
    ) -> Result<(TdxQuote, bool), VerifierError> {
        self.verify_quote_status(raw, now)
            .map(|(quote, simulated, _)| (quote, simulated))
    }

    /// Verifies a raw quote at `now`: signatures, chain, collateral validity and TCB status.
    /// Returns the quote, whether a simulated root signed it, and the platform's TCB status.
    fn verify_quote_status(
        &self,
        raw: &[u8],
        now: SystemTime,
    ) -> Result<(TdxQuote, bool, String), VerifierError> {
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
        let primary = self.verify_with(&verifier, &self.collaterals, raw, now_secs);
        match (primary, &self.extra_simulated_root) {
            (Ok(status), _) => Ok((quote, self.simulated, status)),
            (Err(err @ VerifierError::TcbStatus { .. }), _) | (Err(err), None) => Err(err),
            (Err(err), Some(sim)) => {
                let verifier = QuoteVerifier::new(sim.root_ca_der.clone());
                match self.verify_with(&verifier, &self.collaterals, raw, now_secs) {
                    Ok(status) => Ok((quote, true, status)),
                    // Not signed by the simulated root either: report the primary root's error.
                    Err(VerifierError::Quote(_)) => Err(err),
                    Err(sim_err) => Err(sim_err),
                }
            }
        }
    }

    fn verify_with(
        &self,
        verifier: &QuoteVerifier,
        collaterals: &[QuoteCollateralV3],
        raw: &[u8],
        now_secs: u64,
    ) -> Result<String, VerifierError> {
        let mut last_error = None;
        for collateral in collaterals {
            match verifier.verify(raw, collateral, now_secs) {
                Ok(report) => {
                    if !self.accepted_status.contains(&report.status) {
                        return Err(VerifierError::TcbStatus {
                            status: report.status,
                        });
                    }
                    return Ok(report.status);
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

/// The longest base64 text of an event log of at most [`MAX_EVENT_LOG_LEN`] bytes.
const MAX_EVENT_LOG_B64_LEN: usize = MAX_EVENT_LOG_LEN.div_ceil(3) * 4;

/// Decodes, parses and replays a CC event log against the quote's RTMR0..2.
fn replayed_event_log(b64: &str, quote: &TdxQuote) -> Result<EventLog, VerifierError> {
    if b64.len() > MAX_EVENT_LOG_B64_LEN {
        return Err(VerifierError::EventLog(EventLogError::TooLarge {
            len: b64.len(),
        }));
    }
    let bytes = STANDARD.decode(b64).map_err(|_| VerifierError::Malformed {
        what: "cc_eventlog is not base64",
    })?;
    let log = EventLog::parse(&bytes).map_err(VerifierError::EventLog)?;
    log.verify(&quote.body.rtmr, BOOT_RTMRS)
        .map_err(|err| match err {
            EventLogError::RtmrMismatch(register) => VerifierError::EventLogMismatch { register },
            other => VerifierError::EventLog(other),
        })?;
    Ok(log)
}

impl TdxVerifier {
    /// Verifies evidence JSON in either shape at `now`, everything but the report data: the
    /// quote, and the event log (when there is one) against the quote's RTMRs.
    pub(crate) fn verify_evidence(
        &self,
        evidence: &Value,
        now: SystemTime,
    ) -> Result<VerifiedTdx, VerifierError> {
        let evidence = TdxEvidence::deserialize(evidence).map_err(VerifierError::Json)?;
        let raw = STANDARD
            .decode(&evidence.quote)
            .map_err(|_| VerifierError::Malformed {
                what: "quote is not base64",
            })?;
        let (quote, simulated, tcb_status) = self.verify_quote_status(&raw, now)?;
        let event_log = evidence
            .cc_eventlog
            .as_deref()
            .map(|log| replayed_event_log(log, &quote))
            .transpose()?;
        Ok(VerifiedTdx {
            quote,
            simulated,
            event_log,
            tcb_status,
        })
    }
}

impl Verifier for TdxVerifier {
    fn verify(
        &self,
        evidence: &Value,
        binding: &BindingDigest,
        now: SystemTime,
    ) -> Result<Claims, VerifierError> {
        let verified = self.verify_evidence(evidence, now)?;
        let claims = TdxClaims::from(&verified.quote);
        if claims.report_data.as_bytes() != &binding.padded() {
            return Err(VerifierError::ReportDataMismatch);
        }
        let mut claims = tdx_claims(
            &verified.quote,
            &claims,
            verified.simulated,
            verified.event_log.as_ref(),
        );
        claims
            .trustee
            .insert("tcb_status".into(), verified.tcb_status.into());
        // Trustee's "0": the collateral had not expired. This verifier refuses a quote whose
        // collateral has, so every claim it gives says so.
        claims
            .trustee
            .insert("collateral_expiration_status".into(), "0".into());
        Ok(claims)
    }

    fn trusts_simulated_roots(&self) -> bool {
        self.simulated || self.extra_simulated_root.is_some()
    }
}

fn tdx_claims(
    quote: &TdxQuote,
    c: &TdxClaims,
    simulated: bool,
    event_log: Option<&EventLog>,
) -> Claims {
    let event_log = event_log.map(|log| {
        let boot = log.boot_components();
        serde_json::json!({
            "kernel": boot.kernel.map(hex::encode),
            "initrd": boot.initrd.map(hex::encode),
            "cmdline": boot.cmdline.map(hex::encode),
            "events": log.events().len(),
        })
    });
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
            "event_log": event_log,
        }),
        trustee: trustee_claims(quote),
    }
}

/// TD_ATTRIBUTES bits Trustee's verifier names (`deps/verifier/src/tdx/claims.rs`).
const TD_ATTRIBUTE_FLAGS: [(&str, u32); 5] = [
    ("debug", 0),
    ("septve_disable", 28),
    ("protection_keys", 30),
    ("key_locker", 31),
    ("perfmon", 63),
];

/// The quote's claims as Trustee's TDX verifier names them: `quote.header` and `quote.body`
/// (every field as lowercase hex of its bytes in the quote, TD 1.5 fields and the v5 `type` and
/// `size` when present) and `td_attributes` as named flags. `tcb_status` is added by the
/// verifier with `collateral_expiration_status`; `report_data` and `init_data` are tsuba's own fields (the first under the same name
/// and value), and Trustee's parsed `uefi_event_logs` are not given (tsuba's replayed
/// components are in `details.event_log`).
fn trustee_claims(quote: &TdxQuote) -> serde_json::Map<String, Value> {
    let h = &quote.header;
    let b = &quote.body;
    let mut reserved = [0u8; 4];
    reserved[..2].copy_from_slice(&h.qe_svn.to_le_bytes());
    reserved[2..].copy_from_slice(&h.pce_svn.to_le_bytes());
    let mut header = serde_json::Map::new();
    for (name, bytes) in [
        ("version", &h.version.number().to_le_bytes()[..]),
        ("att_key_type", &h.attestation_key_type.to_le_bytes()[..]),
        ("tee_type", &h.tee_type.to_le_bytes()[..]),
        ("reserved", &reserved[..]),
        ("vendor_id", &h.qe_vendor_id[..]),
        ("user_data", &h.user_data[..]),
    ] {
        header.insert(name.into(), hex::encode(bytes).into());
    }
    let mut body = serde_json::Map::new();
    let rtmr_names = ["rtmr_0", "rtmr_1", "rtmr_2", "rtmr_3"];
    let mut fields: Vec<(&str, &[u8])> = vec![
        ("tcb_svn", &b.tee_tcb_svn),
        ("mr_seam", &b.mr_seam),
        ("mrsigner_seam", &b.mr_signer_seam),
        ("seam_attributes", &b.seam_attributes),
        ("td_attributes", &b.td_attributes),
        ("xfam", &b.xfam),
        ("mr_td", &b.mr_td),
        ("mr_config_id", &b.mr_config_id),
        ("mr_owner", &b.mr_owner),
        ("mr_owner_config", &b.mr_owner_config),
    ];
    fields.extend(rtmr_names.iter().zip(&b.rtmr).map(|(n, r)| (*n, &r[..])));
    fields.push(("report_data", &b.report_data));
    if let Some(v15) = &b.v15 {
        fields.push(("tee_tcb_svn2", &v15.tee_tcb_svn2));
        fields.push(("mr_servicetd", &v15.mr_servicetd));
    }
    for (name, bytes) in fields {
        body.insert(name.into(), hex::encode(bytes).into());
    }
    let mut quote_claims = serde_json::Map::new();
    quote_claims.insert("header".into(), Value::Object(header));
    quote_claims.insert("body".into(), Value::Object(body));
    if h.version == TdxQuoteVersion::V5 {
        // The v5 body's type (2: TDX 1.0, 3: TDX 1.5) and size, as in the quote.
        let (kind, size): (u16, u32) = if b.v15.is_some() { (3, 648) } else { (2, 584) };
        quote_claims.insert("type".into(), hex::encode(kind.to_le_bytes()).into());
        quote_claims.insert("size".into(), hex::encode(size.to_le_bytes()).into());
    }
    let attributes = u64::from_le_bytes(b.td_attributes);
    let flags = TD_ATTRIBUTE_FLAGS
        .iter()
        .map(|(name, bit)| {
            (
                (*name).to_owned(),
                Value::from(attributes & (1 << bit) != 0),
            )
        })
        .collect();
    let mut claims = serde_json::Map::new();
    claims.insert("quote".into(), Value::Object(quote_claims));
    claims.insert("td_attributes".into(), Value::Object(flags));
    claims
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// Real TDX evidence (see testdata/real-evidence/PROVENANCE.md).
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
    fn real_quote_verifies_with_intel_root_and_claims_match_dcap_qvls_parse() {
        let raw = std::fs::read(dir().join("dcapqvl-tdx_quote")).unwrap();
        let (quote, simulated) = verifier().verify_quote(&raw, at(INSIDE)).unwrap();
        assert!(!simulated);
        let claims = tdx_claims(&quote, &TdxClaims::from(&quote), simulated, None);
        // dcap-qvl's own verified report is the independent parse to compare with.
        let report = QuoteVerifier::new_prod()
            .verify(
                &raw,
                &collateral("dcapqvl-tdx_quote_collateral.json"),
                INSIDE,
            )
            .unwrap();
        let td = report.report.as_td10().unwrap();
        assert_eq!(report.status, "UpToDate");
        assert_eq!(claims.measurement, hex::encode(td.mr_td));
        assert_eq!(claims.host_data, hex::encode(td.mr_config_id));
        assert_eq!(claims.report_data, hex::encode(td.report_data));
        assert_eq!(
            claims.details["rtmr"],
            serde_json::json!([td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3].map(hex::encode))
        );
        assert!(!claims.simulated);
        assert!(claims.details["event_log"].is_null());
    }

    fn trustee_expected() -> Value {
        serde_json::from_slice(
            &std::fs::read(dir().join("trustee-parse_tdx_claims_expected.json")).unwrap(),
        )
        .unwrap()
    }

    /// Trustee's test quote (`tdx_quote_4.dat`).
    fn trustees_quote() -> TdxQuote {
        TdxQuote::parse(&std::fs::read(dir().join("trustee-tdx_quote_4.dat")).unwrap()).unwrap()
    }

    /// The claims tsuba makes of Trustee's test quote, without an event log.
    fn trustees_quote_claims() -> Claims {
        let quote = trustees_quote();
        tdx_claims(&quote, &TdxClaims::from(&quote), false, None)
    }

    #[test]
    fn trustee_quote_claims_match_trustees_parse() {
        let claims = trustees_quote_claims();
        let expected = trustee_expected();
        let body = &expected["quote"]["body"];
        assert_eq!(claims.measurement, body["mr_td"].as_str().unwrap());
        assert_eq!(claims.host_data, body["mr_config_id"].as_str().unwrap());
        assert_eq!(claims.report_data, body["report_data"].as_str().unwrap());
        for i in 0..4 {
            assert_eq!(
                claims.details["rtmr"][i],
                body[format!("rtmr_{i}")],
                "rtmr{i}"
            );
        }
        assert_eq!(
            claims.debug,
            expected["td_attributes"]["debug"].as_bool().unwrap()
        );
    }

    /// Trustee's own names for the same quote, field for field as its verifier printed them.
    #[test]
    fn trustees_tdx_claim_names_are_trustees_parse_of_the_same_quote() {
        let claims = trustees_quote_claims();
        let expected = trustee_expected();
        assert_eq!(claims.trustee["quote"], expected["quote"]);
        assert_eq!(claims.trustee["td_attributes"], expected["td_attributes"]);
        // Beside tsuba's own, at the top of the claims a policy reads; the report data under
        // both names is the same value.
        let json = serde_json::to_value(&claims).unwrap();
        assert_eq!(json["quote"]["body"]["mr_td"], json["measurement"]);
        assert_eq!(json["report_data"], expected["report_data"]);
    }

    #[test]
    fn trustee_cc_event_log_parses_into_trustees_events() {
        let bytes = std::fs::read(dir().join("trustee-CCEL_data")).unwrap();
        let log = EventLog::parse(&bytes).unwrap();
        let expected = trustee_expected();
        let expected = expected["uefi_event_logs"].as_array().unwrap();
        assert_eq!(log.events().len(), expected.len());
        for (i, (ours, theirs)) in log.events().iter().zip(expected).enumerate() {
            use sha2::Digest;
            assert_eq!(
                Some(u64::try_from(ours.rtmr + 1).unwrap()),
                theirs["index"].as_u64(),
                "event {i}"
            );
            assert_eq!(
                tsuba_protocols::evidence::ccel::event_type_name(ours.event_type),
                theirs["type_name"].as_str().unwrap(),
                "event {i}"
            );
            assert_eq!(theirs["digests"][0]["alg"], "SHA-384", "event {i}");
            assert_eq!(
                hex::encode(ours.digest),
                theirs["digests"][0]["digest"].as_str().unwrap(),
                "event {i}"
            );
            assert_eq!(
                STANDARD.encode(&ours.data),
                theirs["event"].as_str().unwrap(),
                "event {i}"
            );
            assert_eq!(
                sha2::Sha384::digest(&ours.data)[..] == ours.digest[..],
                theirs["digest_matches_event"].as_bool().unwrap(),
                "event {i}"
            );
        }
    }

    #[test]
    fn trustee_cc_event_log_does_not_replay_to_its_quote() {
        // The log Trustee pairs with tdx_quote_4.dat comes from another td-shim boot: RTMR0 and
        // RTMR1 differ, RTMR2 and RTMR3 (zero in both) agree. See the PROVENANCE.md of
        // testdata/real-evidence.
        let quote = trustees_quote();
        let log =
            EventLog::parse(&std::fs::read(dir().join("trustee-CCEL_data")).unwrap()).unwrap();
        let replayed = log.replay();
        assert_eq!(
            hex::encode(replayed[0]),
            "2dc712306a963eadb894ad47dbaa17df44814151555aee11cbb843becca88950ffd079664902e6f22c66f7c8213543f4"
        );
        assert_eq!(
            hex::encode(quote.body.rtmr[0]),
            "e940da7c2712d2790e2961e00484f4fa8e6f9eed71361655ae22699476b14f9e63867eb41edd4b480fef0c59f496b288"
        );
        assert_eq!(
            hex::encode(replayed[1]),
            "0fa3be56af61208bbd179dc7b124988eb929319154663c539d6f46445ecac2fec287075047ff7bd1922829fec28cd3cf"
        );
        assert_eq!(
            hex::encode(quote.body.rtmr[1]),
            "559cfcf42716ed6c40a48a73d5acb7da255435012f0a9f00fbe8c1c57612ede486a5684c4c9ff3ddf52315fcdca3a596"
        );
        assert_eq!(replayed[2..], quote.body.rtmr[2..]);
        assert_eq!(replayed[2], [0; 48]);
        let b64 = STANDARD.encode(std::fs::read(dir().join("trustee-CCEL_data")).unwrap());
        assert!(matches!(
            replayed_event_log(&b64, &quote),
            Err(VerifierError::EventLogMismatch { register: 0 })
        ));
    }

    #[test]
    fn ovmf_cc_event_log_has_the_shape_of_the_tdvf_boot_model() {
        // Trustee's OVMF log: a real TDVF direct kernel boot. Its RTMR1 and RTMR2 events are, in
        // order and type, exactly the ones tee-sim and `tsuba measure` model.
        use tsuba_protocols::evidence::ccel::{BootComponents, TdvfBoot, event_type_name};
        let bytes = std::fs::read(dir().join("trustee-CCEL_data_ovmf")).unwrap();
        let real = EventLog::parse(&bytes).unwrap();
        let model = TdvfBoot {
            kernel_authenticode: [1; 48],
            kernel_len: 1,
            initrd: Some([2; 48]),
            cmdline: Some("x".into()),
        }
        .event_log();
        let shape = |log: &EventLog| -> Vec<(usize, &'static str, Vec<u8>)> {
            log.events()
                .iter()
                .filter(|e| e.rtmr == 1 || e.rtmr == 2)
                .map(|e| {
                    // Action strings and event tags are what identifies an event; the kernel's
                    // image-load record differs per launch.
                    let id = match event_type_name(e.event_type) {
                        "EV_EFI_ACTION" => e.data.clone(),
                        "EV_EVENT_TAG" => e.data.get(..4).unwrap_or_default().to_vec(),
                        _ => Vec::new(),
                    };
                    (e.rtmr, event_type_name(e.event_type), id)
                })
                .collect()
        };
        let real_shape = shape(&real);
        let model_shape = shape(&model);
        // The model has the kernel application first; the real log too.
        assert_eq!(real_shape, model_shape);
        // The digests of the kernel, load-options and initrd events (first 8 bytes, as listed
        // by an independent dump of the log).
        let parts = real.boot_components();
        let prefix = |d: Option<[u8; 48]>| d.map(|d| hex::encode(&d[..8]));
        assert_eq!(prefix(parts.kernel).as_deref(), Some("a2ccae1e7d6c668c"));
        assert_eq!(prefix(parts.cmdline).as_deref(), Some("4230f84885a6f3f3"));
        assert_eq!(prefix(parts.initrd).as_deref(), Some("b15af9286108d3d8"));
        assert_ne!(parts, BootComponents::default());
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
        for evidence in [
            // tsuba's own shape.
            serde_json::json!({ "quote": quote }),
            // guest-components today, without an event log.
            serde_json::json!({ "cc_eventlog": null, "quote": quote }),
            // guest-components before the AA event log moved into the CCEL.
            serde_json::json!({ "cc_eventlog": null, "quote": quote, "aa_eventlog": "INIT sha384/00\n" }),
            serde_json::json!({ "cc_eventlog": null, "quote": quote, "aa_eventlog": null }),
        ] {
            let verified = verifier().verify_evidence(&evidence, at(INSIDE)).unwrap();
            assert!(!verified.quote.body.debug(), "{evidence}");
            assert!(verified.event_log.is_none(), "{evidence}");
        }
        let binding = BindingDigest::compute("nonce", &serde_json::json!({"kty": "EC"}), "");
        let gc = serde_json::json!({ "cc_eventlog": null, "quote": quote });
        assert!(matches!(
            verifier().verify(&gc, &binding, at(INSIDE)),
            Err(VerifierError::ReportDataMismatch)
        ));
        // A well-formed log that is not this quote's boot (here: Trustee's td-shim log).
        let foreign = STANDARD.encode(std::fs::read(dir().join("trustee-CCEL_data")).unwrap());
        let with_log = serde_json::json!({ "cc_eventlog": foreign, "quote": quote });
        assert!(matches!(
            verifier().verify_evidence(&with_log, at(INSIDE)),
            Err(VerifierError::EventLogMismatch { register: 0 })
        ));
    }

    /// tee-sim's TDX module, a verifier trusting Intel's root plus tee-sim's, and a boot.
    #[cfg(feature = "insecure-sim")]
    fn sim() -> (tempfile::TempDir, tsuba_tee_sim::SimTdx, TdxVerifier) {
        let dir = tempfile::tempdir().unwrap();
        let sim = tsuba_tee_sim::SimTdx::open_or_create(dir.path()).unwrap();
        let collateral =
            serde_json::from_str(&sim.collateral().unwrap().to_json().unwrap()).unwrap();
        let verifier = TdxVerifier::with_intel_root()
            .with_collateral(collateral)
            .insecure_add_simulated_root(sim.root_ca_der().to_vec());
        (dir, sim, verifier)
    }

    #[cfg(feature = "insecure-sim")]
    fn boot(initrd: &[u8], cmdline: &str) -> tsuba_protocols::evidence::ccel::TdvfBoot {
        use sha2::Digest;
        tsuba_protocols::evidence::ccel::TdvfBoot {
            kernel_authenticode: sha2::Sha384::digest(b"kernel").into(),
            kernel_len: 6,
            initrd: Some(sha2::Sha384::digest(initrd).into()),
            cmdline: Some(cmdline.into()),
        }
    }

    #[cfg(feature = "insecure-sim")]
    fn sim_evidence(
        sim: &tsuba_tee_sim::SimTdx,
        booted: &tsuba_protocols::evidence::ccel::TdvfBoot,
        logged: &tsuba_protocols::evidence::ccel::TdvfBoot,
        binding: &BindingDigest,
    ) -> Value {
        use tsuba_protocols::evidence::ReportData;
        let launch = tsuba_tee_sim::TdxLaunch::new([0x11; 48], [0; 48]).with_boot(booted);
        let mut req = tsuba_tee_sim::TdxQuoteRequest::new(
            launch.mr_td,
            launch.mr_config_id,
            ReportData(binding.padded()),
        );
        req.rtmr = launch.rtmr;
        let quote = sim.quote(&req).unwrap();
        serde_json::json!({
            "quote": STANDARD.encode(quote),
            "cc_eventlog": STANDARD.encode(logged.event_log().to_bytes()),
        })
    }

    #[cfg(feature = "insecure-sim")]
    #[test]
    fn sim_quote_with_its_event_log_gives_boot_claims() {
        let (_dir, sim, verifier) = sim();
        let binding = BindingDigest::compute("nonce", &serde_json::json!({"kty": "EC"}), "");
        let good = boot(b"initrd", "console=hvc0");
        let evidence = sim_evidence(&sim, &good, &good, &binding);
        let claims = verifier
            .verify(&evidence, &binding, SystemTime::now())
            .unwrap();
        assert!(claims.simulated);
        assert_eq!(claims.measurement, hex::encode([0x11; 48]));
        let rtmr = good.event_log().replay();
        assert_eq!(
            claims.details["rtmr"],
            serde_json::json!(rtmr.map(hex::encode))
        );
        let parts = good.event_log().boot_components();
        assert_eq!(
            claims.details["event_log"],
            serde_json::json!({
                "kernel": parts.kernel.map(hex::encode),
                "initrd": parts.initrd.map(hex::encode),
                "cmdline": parts.cmdline.map(hex::encode),
                "events": 7,
            })
        );
        assert_eq!(
            claims.details["event_log"]["initrd"],
            hex::encode(<sha2::Sha384 as sha2::Digest>::digest(b"initrd"))
        );
    }

    #[cfg(feature = "insecure-sim")]
    #[test]
    fn sim_event_log_that_does_not_match_the_quote_is_refused_naming_the_rtmr() {
        let (_dir, sim, verifier) = sim();
        let binding = BindingDigest::compute("nonce", &serde_json::json!({"kty": "EC"}), "");
        let booted = boot(b"evil initrd", "console=hvc0");
        // The host booted its own initrd but sends the log of the genuine one.
        let genuine = boot(b"initrd", "console=hvc0");
        let evidence = sim_evidence(&sim, &booted, &genuine, &binding);
        let err = verifier
            .verify(&evidence, &binding, SystemTime::now())
            .unwrap_err();
        assert!(
            matches!(err, VerifierError::EventLogMismatch { register: 2 }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "cc event log does not replay to the quote's rtmr2"
        );
        // A changed command line: also RTMR2.
        let evidence = sim_evidence(&sim, &boot(b"initrd", "init=/bin/sh"), &genuine, &binding);
        assert!(matches!(
            verifier.verify(&evidence, &binding, SystemTime::now()),
            Err(VerifierError::EventLogMismatch { register: 2 })
        ));
        // A tampered log: truncated, not base64, a garbage header, too large.
        let mut evidence = sim_evidence(&sim, &genuine, &genuine, &binding);
        let full = genuine.event_log().to_bytes();
        for (log, expect) in [
            (STANDARD.encode(&full[..full.len() - 5]), "truncated"),
            ("%%%".to_owned(), "base64"),
            (
                STANDARD.encode(b"not an event log at all, really"),
                "header",
            ),
            ("A".repeat(MAX_EVENT_LOG_B64_LEN + 4), "large"),
        ] {
            evidence["cc_eventlog"] = serde_json::json!(log);
            let err = verifier
                .verify(&evidence, &binding, SystemTime::now())
                .unwrap_err();
            let ok = match expect {
                "truncated" => matches!(
                    err,
                    VerifierError::EventLog(EventLogError::Truncated { .. })
                ),
                "base64" => matches!(
                    err,
                    VerifierError::Malformed {
                        what: "cc_eventlog is not base64"
                    }
                ),
                "header" => matches!(
                    err,
                    VerifierError::EventLog(
                        EventLogError::BadHeader | EventLogError::Truncated { .. }
                    )
                ),
                _ => matches!(err, VerifierError::EventLog(EventLogError::TooLarge { .. })),
            };
            assert!(ok, "{expect}: {err:?}");
        }
    }

    #[cfg(feature = "insecure-sim")]
    #[test]
    fn sim_quote_is_refused_without_the_simulated_root() {
        let (_dir, sim, _) = sim();
        let binding = BindingDigest::compute("nonce", &serde_json::json!({"kty": "EC"}), "");
        let good = boot(b"initrd", "console=hvc0");
        let evidence = sim_evidence(&sim, &good, &good, &binding);
        let hardware_only = TdxVerifier::with_intel_root()
            .with_collateral(collateral("dcapqvl-tdx_quote_collateral.json"));
        assert!(!hardware_only.trusts_simulated_roots());
        assert!(matches!(
            hardware_only.verify(&evidence, &binding, SystemTime::now()),
            Err(VerifierError::Quote(_))
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
        // The quote is checked before the log: a bad quote with a bad log fails on the quote.
        let both = serde_json::json!({ "cc_eventlog": "%%%", "quote": flipped });
        assert!(matches!(
            verifier().verify_evidence(&both, at(INSIDE)),
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
