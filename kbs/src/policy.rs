//! Attestation and resource policies in Rego, evaluated with regorus.
//!
//! Both policies live in `package policy` and define `allow` (a boolean) and may define `reasons`
//! (a set of strings saying why a request was refused; they end up in the refusal the guest sees).
//!
//! * The attestation policy sees `input.claims` (the verified [`Claims`](crate::Claims)),
//!   `input.expected_report_data`, `input.init_data` and `input.init_data_claims`;
//!   `data.reference_values` holds the reference values.
//! * The resource policy sees what Trustee's resource policies see: `input` is the attestation
//!   token's claims, an EAR (`input.submods.cpu0["ear.status"]`, its trustworthiness vector,
//!   and the verified evidence under `"ear.veraison.annotated-evidence"`: the TEE's claims under
//!   its name, `init_data`, `init_data_claims`; [`crate::token`]), and `data.plugin` is
//!   `"resource"`, `data["resource-path"]` the requested `[repo, type, tag]`, `data.query` the
//!   request's query (always empty: the broker takes none). tsuba adds its simulated mark,
//!   `input.submods.cpu0["tsuba.simulated"]`, and the administrator's opt-in to releasing
//!   resources to simulated guests, `data.broker.insecure_release_to_simulated`.
//!
//! `init_data` and `init_data_claims` are named and shaped as in Trustee's attestation service.
//! When the guest presented its initdata document in the attestation request and its digest is
//! the one the evidence binds, `init_data` is that binding (SNP `HOST_DATA`, 32 bytes, or TDX
//! `MRCONFIGID`, 48 bytes; lowercase hex) and `init_data_claims` is the document's `[data]` table
//! (`aa.toml` and `cdh.toml` as JSON, the agent policy's data as `agent_policy_claims`, other
//! files as text). Without a document both are `null`; a document that does not match is refused
//! before any policy runs. A resource policy that releases only to guests launched with one
//! initdata document says
//! `input.submods.cpu0["ear.veraison.annotated-evidence"].init_data == "<hex>"`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::broker::PolicyKind;
use crate::store::ResourcePath;

/// Default attestation policy: the measurement must be a reference value, debug must be off and
/// the report data must carry this session's binding. With `init_data` reference values (the
/// HOST_DATA / MRCONFIGID hex `tsuba policy generate` prints), the guest's initdata binding must
/// be one of them.
///
/// TDX: MRTD covers only the firmware, so a TDX quote is refused unless the RTMRs that hold the
/// kernel (RTMR1) and the initrd and command line (RTMR2) are reference values too
/// (`tdx_rtmr1`, `tdx_rtmr2`, from `tsuba measure --tee tdx`). `tdx_rtmr0` and the component
/// digests read from the replayed event log (`tdx_kernel`, `tdx_initrd`, `tdx_cmdline`) are
/// checked when configured; each refusal names the register or component that failed.
pub const DEFAULT_ATTESTATION_POLICY: &str = r#"package policy

default allow := false

measurement_ok if {
    input.claims.measurement in data.reference_values.measurement
}

report_data_ok if {
    input.claims.report_data == input.expected_report_data
}

tdx if input.claims.tee == "tdx"

tdx_boot_configured if {
    count(data.reference_values.tdx_rtmr1) > 0
    count(data.reference_values.tdx_rtmr2) > 0
}

tdx_failures contains "tdx: no rtmr1 and rtmr2 reference values (tdx_rtmr1, tdx_rtmr2) are configured, so the kernel, initrd and command line are unchecked" if {
    tdx
    not tdx_boot_configured
}

tdx_failures contains "rtmr0 is not a reference value" if {
    tdx
    count(data.reference_values.tdx_rtmr0) > 0
    not input.claims.details.rtmr[0] in data.reference_values.tdx_rtmr0
}

tdx_failures contains "rtmr1 (kernel) is not a reference value" if {
    tdx
    tdx_boot_configured
    not input.claims.details.rtmr[1] in data.reference_values.tdx_rtmr1
}

tdx_failures contains "rtmr2 (initrd and command line) is not a reference value" if {
    tdx
    tdx_boot_configured
    not input.claims.details.rtmr[2] in data.reference_values.tdx_rtmr2
}

tdx_failures contains "kernel digest in rtmr1's event log is not a reference value" if {
    tdx
    count(data.reference_values.tdx_kernel) > 0
    not input.claims.details.event_log.kernel in data.reference_values.tdx_kernel
}

tdx_failures contains "initrd digest in rtmr2's event log is not a reference value" if {
    tdx
    count(data.reference_values.tdx_initrd) > 0
    not input.claims.details.event_log.initrd in data.reference_values.tdx_initrd
}

tdx_failures contains "command line digest in rtmr2's event log is not a reference value" if {
    tdx
    count(data.reference_values.tdx_cmdline) > 0
    not input.claims.details.event_log.cmdline in data.reference_values.tdx_cmdline
}

# The launch measurement no longer covers a pod's own settings (its initdata: broker, agent
# policy): with `init_data` reference values configured, only guests launched with one of those
# documents pass, so a host cannot start a pod under an initdata of its own (say a permissive
# agent policy) and still get its keys.
init_data_configured if count(data.reference_values.init_data) > 0

init_data_ok if not init_data_configured

init_data_ok if {
    init_data_configured
    input.init_data in data.reference_values.init_data
}

allow if {
    measurement_ok
    not input.claims.debug
    report_data_ok
    count(tdx_failures) == 0
    init_data_ok
}

reasons contains reason if some reason in tdx_failures
reasons contains "init_data is not a reference value (the guest was launched with another initdata, or none)" if not init_data_ok
reasons contains "measurement is not a reference value" if not measurement_ok
reasons contains "debug is enabled" if input.claims.debug
reasons contains "report data does not match" if not report_data_ok
"#;

/// Default resource policy: the resource plugin releases to any guest whose token's CPU
/// appraisal is affirming (it passed the attestation policy on real hardware with debug off).
/// A token marked simulated (simulated or sample evidence, or a broker running with an insecure
/// evidence option) is refused unless the broker was started with
/// `--insecure-release-resources-to-simulated`.
pub const DEFAULT_RESOURCE_POLICY: &str = r#"package policy

default allow := false

cpu := input.submods.cpu0

simulated if cpu["tsuba.simulated"]

allow if {
    data.plugin == "resource"
    not simulated
    cpu["ear.status"] == "affirming"
}

allow if {
    data.plugin == "resource"
    simulated
    data.broker.insecure_release_to_simulated
}

reasons contains "the guest's evidence is simulated and this broker does not release resources to simulated guests" if {
    simulated
    not data.broker.insecure_release_to_simulated
}

reasons contains sprintf("the guest's appraisal is %v, not affirming", [cpu["ear.status"]]) if {
    not simulated
    cpu["ear.status"] != "affirming"
}
"#;

/// A resource request as the resource policy sees it in `data`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResourceRequest<'a> {
    /// The resource asked for.
    pub(crate) path: &'a ResourcePath,
    /// The administrator's opt-in to releasing resources to simulated guests.
    pub(crate) insecure_release_to_simulated: bool,
}

impl ResourceRequest<'_> {
    /// Trustee's `data.plugin`, `data["resource-path"]` and `data.query`, and tsuba's
    /// `data.broker`.
    fn data(&self) -> Value {
        serde_json::json!({
            "plugin": "resource",
            "resource-path": [self.path.repo(), self.path.kind(), self.path.tag()],
            "query": {},
            "broker": {"insecure_release_to_simulated": self.insecure_release_to_simulated},
        })
    }
}

/// Largest policy text accepted.
pub(crate) const MAX_POLICY_LEN: usize = 64 * 1024;

/// Errors while loading or evaluating a policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy text does not compile.
    #[error("policy does not compile")]
    Compile(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The upload's envelope is wrong (Trustee's `type` or `policy_id` name something this
    /// broker does not have).
    #[error("policy upload is not valid: {0}")]
    Upload(String),
    /// The policy has no `allow` rule in `package policy`.
    #[error(
        "the policy defines no rule data.policy.allow (package policy, rule allow); an \
         attestation policy written for Trustee computes trust_claims instead, which this broker \
         does not read (docs/interop.md)"
    )]
    NoAllow,
    /// The policy is larger than [`MAX_POLICY_LEN`].
    #[error("policy is larger than {MAX_POLICY_LEN} bytes")]
    TooLarge,
    /// Evaluation failed (a runtime error in the policy, or `allow` is not a boolean).
    #[error("policy evaluation failed")]
    Eval(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// `allow` is not a boolean for a well-formed input: the policy leaves inputs undecided.
    #[error(
        "allow is {found} for a representative {kind} input, not true or false: a policy must \
         decide every input (add `default allow := false`); policies written for Trustee read \
         other input fields (docs/interop.md)"
    )]
    Undecided {
        /// `attestation` or `resource`.
        kind: &'static str,
        /// What `allow` evaluated to.
        found: String,
    },
    /// The policy input or data could not be converted.
    #[error("policy input could not be converted")]
    Input(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The outcome of a policy evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The policy allows.
    Allow,
    /// The policy refuses, with the reasons it gave (possibly none).
    Deny(Vec<String>),
}

/// A compiled policy. Cloning the prepared engine per evaluation keeps evaluations independent.
#[derive(Clone)]
pub(crate) struct Policy {
    engine: regorus::Engine,
    text: String,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("len", &self.text.len())
            .finish()
    }
}

impl Policy {
    /// Compiles `text` with `reference_values` as `data.reference_values`.
    pub(crate) fn compile(
        text: &str,
        reference_values: &BTreeMap<String, Vec<String>>,
    ) -> Result<Self, PolicyError> {
        if text.len() > MAX_POLICY_LEN {
            return Err(PolicyError::TooLarge);
        }
        let mut engine = regorus::Engine::new();
        engine
            .add_policy("policy.rego".into(), text.into())
            .map_err(|err| PolicyError::Compile(err.into()))?;
        let data = serde_json::json!({ "reference_values": reference_values });
        engine
            .add_data(regorus::Value::from(data))
            .map_err(|err| PolicyError::Input(err.into()))?;
        // Evaluate once with an empty input so a policy that fails to compile is refused at load.
        // On the engine itself: that prepares it once, and every evaluation's clone inherits it
        // instead of preparing again.
        engine.set_input(regorus::Value::from(serde_json::json!({})));
        engine
            .eval_rule("data.policy.allow".into())
            .map_err(|err| {
                // regorus's words for a rule that does not exist (pinned release; tested below).
                if err.to_string().contains("not a valid rule path") {
                    PolicyError::NoAllow
                } else {
                    PolicyError::Compile(err.into())
                }
            })?;
        Ok(Self {
            engine,
            text: text.into(),
        })
    }

    /// Refuses a policy whose `allow` is undefined (or not a boolean) for a well-formed input of
    /// `kind`, at upload: such a policy would deny every request silently, for want of a rule
    /// that matches this broker's input (a policy written for Trustee's input does that).
    pub(crate) fn check_decides(&self, kind: PolicyKind) -> Result<(), PolicyError> {
        let (name, input) = representative_input(kind);
        let path =
            ResourcePath::parse("default/key/1").map_err(|err| PolicyError::Input(err.into()))?;
        let request = ResourceRequest {
            path: &path,
            insecure_release_to_simulated: false,
        };
        let data = matches!(kind, PolicyKind::Resource).then(|| request.data());
        let (_, allow) = self.allow_over(input, data)?;
        if allow == regorus::Value::from(true) || allow == regorus::Value::from(false) {
            return Ok(());
        }
        let found = match allow {
            regorus::Value::Undefined => "undefined".to_owned(),
            other => format!(
                "{:.40}",
                other.to_json_str().unwrap_or_else(|_| "a value".into())
            ),
        };
        Err(PolicyError::Undecided { kind: name, found })
    }

    /// The policy text.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// A fresh engine over `input` and, for a request that brings its own, `data` beside the
    /// reference values (evaluations stay independent), with `allow` evaluated.
    fn allow_over(
        &self,
        input: Value,
        data: Option<Value>,
    ) -> Result<(regorus::Engine, regorus::Value), PolicyError> {
        let mut engine = self.engine.clone();
        if let Some(data) = data {
            // Trustee's resource policies read the request in data, not in input. Added data
            // makes the engine prepare again: the load bench's resource step pays it
            // (docs/performance.md).
            engine
                .add_data(regorus::Value::from(data))
                .map_err(|err| PolicyError::Input(err.into()))?;
        }
        engine.set_input(regorus::Value::from(input));
        let allow = engine
            .eval_rule("data.policy.allow".into())
            .map_err(|err| PolicyError::Eval(err.into()))?;
        Ok((engine, allow))
    }

    /// Evaluates an attestation policy over `input`.
    pub(crate) fn evaluate(&self, input: Value) -> Result<Decision, PolicyError> {
        self.decide(input, None)
    }

    /// Evaluates a resource policy over a token's claims (`input`) for `request`.
    pub(crate) fn evaluate_resource(
        &self,
        input: Value,
        request: &ResourceRequest<'_>,
    ) -> Result<Decision, PolicyError> {
        self.decide(input, Some(request.data()))
    }

    fn decide(&self, input: Value, data: Option<Value>) -> Result<Decision, PolicyError> {
        let (mut engine, allow) = self.allow_over(input, data)?;
        if allow == regorus::Value::from(true) {
            return Ok(Decision::Allow);
        }
        if allow != regorus::Value::from(false) {
            return Err(PolicyError::Eval("allow is not a boolean".into()));
        }
        let reasons = engine
            .eval_rule("data.policy.reasons".into())
            .ok()
            .and_then(|value| value.to_json_str().ok())
            .and_then(|json| serde_json::from_str::<Vec<String>>(&json).ok())
            .unwrap_or_default();
        Ok(Decision::Deny(reasons))
    }
}

/// An input of the shape the broker gives `kind`'s policy (`broker.rs`: `attest` and
/// `resource`), for a well-formed SNP guest.
fn representative_input(kind: PolicyKind) -> (&'static str, Value) {
    let claims = serde_json::json!({
        "tee": "snp",
        "simulated": false,
        "measurement": "00".repeat(48),
        "debug": false,
        "report_data": "00".repeat(64),
        "host_data": "00".repeat(32),
        "details": {},
    });
    match kind {
        PolicyKind::Attestation => (
            "attestation",
            serde_json::json!({
                "claims": claims,
                "expected_report_data": "00".repeat(64),
                "init_data": null,
                "init_data_claims": null,
            }),
        ),
        PolicyKind::Resource => (
            "resource",
            serde_json::json!({
                "eat_profile": crate::token::EAR_PROFILE,
                "iat": 0,
                "exp": 1,
                "iss": crate::token::ISSUER,
                "ear.verifier-id": {"developer": "tsuba", "build": "tsuba-kbs"},
                "submods": {"cpu0": {
                    "ear.status": "affirming",
                    "ear.trustworthiness-vector": {"executables": 3, "hardware": 2, "configuration": 2},
                    "ear.appraisal-policy-id": "default",
                    "tsuba.simulated": false,
                    "ear.veraison.annotated-evidence": {
                        "snp": claims,
                        "init_data": null,
                        "init_data_claims": null,
                        "report_data": "00".repeat(64),
                        "runtime_data_claims": {"tee-pubkey": {}, "nonce": ""},
                    },
                }},
            }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn refs() -> BTreeMap<String, Vec<String>> {
        BTreeMap::from([(
            "measurement".to_owned(),
            vec!["aa".to_owned(), "bb".to_owned()],
        )])
    }

    fn input(measurement: &str, debug: bool, report_data: &str) -> Value {
        json!({
            "claims": {"measurement": measurement, "debug": debug, "report_data": report_data},
            "expected_report_data": "0102",
        })
    }

    #[test]
    fn default_attestation_policy_allows_reference_measurement() {
        let policy = Policy::compile(DEFAULT_ATTESTATION_POLICY, &refs()).unwrap();
        assert_eq!(
            policy.evaluate(input("bb", false, "0102")).unwrap(),
            Decision::Allow
        );
    }

    #[test]
    fn default_attestation_policy_explains_each_refusal() {
        let policy = Policy::compile(DEFAULT_ATTESTATION_POLICY, &refs()).unwrap();
        assert_eq!(
            policy.evaluate(input("cc", false, "0102")).unwrap(),
            Decision::Deny(vec!["measurement is not a reference value".into()])
        );
        assert_eq!(
            policy.evaluate(input("aa", true, "0102")).unwrap(),
            Decision::Deny(vec!["debug is enabled".into()])
        );
        assert_eq!(
            policy.evaluate(input("aa", false, "0103")).unwrap(),
            Decision::Deny(vec!["report data does not match".into()])
        );
        // init_data reference values, when configured, bind the pod's initdata.
        let mut with_init_data = refs();
        with_init_data.insert("init_data".into(), vec!["ab12".into()]);
        let bound = Policy::compile(DEFAULT_ATTESTATION_POLICY, &with_init_data).unwrap();
        let mut launched = input("aa", false, "0102");
        launched["init_data"] = json!("ab12");
        assert_eq!(bound.evaluate(launched.clone()).unwrap(), Decision::Allow);
        for other in [json!("cd34"), Value::Null] {
            launched["init_data"] = other;
            assert_eq!(
                bound.evaluate(launched.clone()).unwrap(),
                Decision::Deny(vec![
                    "init_data is not a reference value (the guest was launched with another \
                     initdata, or none)"
                        .into()
                ])
            );
        }
        let empty = Policy::compile(DEFAULT_ATTESTATION_POLICY, &BTreeMap::new()).unwrap();
        assert!(matches!(
            empty.evaluate(input("aa", false, "0102")).unwrap(),
            Decision::Deny(_)
        ));
    }

    fn tdx_refs(extra: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
        let mut refs = refs();
        refs.insert("tdx_rtmr1".into(), vec!["r1".into()]);
        refs.insert("tdx_rtmr2".into(), vec!["r2".into()]);
        for (key, value) in extra {
            refs.insert((*key).into(), vec![(*value).into()]);
        }
        refs
    }

    fn tdx_input(rtmr: [&str; 3], event_log: Value) -> Value {
        json!({
            "claims": {
                "tee": "tdx",
                "measurement": "aa",
                "debug": false,
                "report_data": "0102",
                "details": { "rtmr": [rtmr[0], rtmr[1], rtmr[2], "r3"], "event_log": event_log },
            },
            "expected_report_data": "0102",
        })
    }

    fn deny(reasons: &[&str]) -> Decision {
        Decision::Deny(reasons.iter().map(|r| (*r).to_owned()).collect())
    }

    #[test]
    fn tdx_is_refused_without_rtmr_reference_values() {
        // The MRTD alone is a reference value: that is not enough.
        let policy = Policy::compile(DEFAULT_ATTESTATION_POLICY, &refs()).unwrap();
        assert_eq!(
            policy
                .evaluate(tdx_input(["r0", "r1", "r2"], Value::Null))
                .unwrap(),
            deny(&[
                "tdx: no rtmr1 and rtmr2 reference values (tdx_rtmr1, tdx_rtmr2) are configured, so the kernel, initrd and command line are unchecked"
            ])
        );
        // Only rtmr1 configured: still refused.
        let mut one = refs();
        one.insert("tdx_rtmr1".into(), vec!["r1".into()]);
        let policy = Policy::compile(DEFAULT_ATTESTATION_POLICY, &one).unwrap();
        assert!(matches!(
            policy.evaluate(tdx_input(["r0", "r1", "r2"], Value::Null)).unwrap(),
            Decision::Deny(reasons) if reasons.len() == 1 && reasons[0].starts_with("tdx: no rtmr1")
        ));
        // SNP evidence is not affected by the TDX rules.
        let policy = Policy::compile(DEFAULT_ATTESTATION_POLICY, &refs()).unwrap();
        let mut snp = input("aa", false, "0102");
        snp["claims"]["tee"] = json!("snp");
        assert_eq!(policy.evaluate(snp).unwrap(), Decision::Allow);
    }

    #[test]
    fn tdx_refusals_name_the_register_or_component() {
        let policy = Policy::compile(DEFAULT_ATTESTATION_POLICY, &tdx_refs(&[])).unwrap();
        assert_eq!(
            policy
                .evaluate(tdx_input(["r0", "r1", "r2"], Value::Null))
                .unwrap(),
            Decision::Allow
        );
        assert_eq!(
            policy
                .evaluate(tdx_input(["r0", "r1", "evil"], Value::Null))
                .unwrap(),
            deny(&["rtmr2 (initrd and command line) is not a reference value"])
        );
        assert_eq!(
            policy
                .evaluate(tdx_input(["r0", "evil", "r2"], Value::Null))
                .unwrap(),
            deny(&["rtmr1 (kernel) is not a reference value"])
        );
        // RTMR0 only when configured.
        let with_r0 = Policy::compile(
            DEFAULT_ATTESTATION_POLICY,
            &tdx_refs(&[("tdx_rtmr0", "r0")]),
        )
        .unwrap();
        assert_eq!(
            with_r0
                .evaluate(tdx_input(["x", "r1", "r2"], Value::Null))
                .unwrap(),
            deny(&["rtmr0 is not a reference value"])
        );
        // Component digests from the event log, when configured; no log means no match.
        let parts = Policy::compile(
            DEFAULT_ATTESTATION_POLICY,
            &tdx_refs(&[
                ("tdx_kernel", "k"),
                ("tdx_initrd", "i"),
                ("tdx_cmdline", "c"),
            ]),
        )
        .unwrap();
        let log = |k: &str, i: &str, c: &str| json!({"kernel": k, "initrd": i, "cmdline": c});
        assert_eq!(
            parts
                .evaluate(tdx_input(["r0", "r1", "r2"], log("k", "i", "c")))
                .unwrap(),
            Decision::Allow
        );
        assert_eq!(
            parts
                .evaluate(tdx_input(["r0", "r1", "evil"], log("k", "evil", "c")))
                .unwrap(),
            deny(&[
                "initrd digest in rtmr2's event log is not a reference value",
                "rtmr2 (initrd and command line) is not a reference value",
            ])
        );
        assert_eq!(
            parts
                .evaluate(tdx_input(["r0", "r1", "r2"], Value::Null))
                .unwrap(),
            deny(&[
                "command line digest in rtmr2's event log is not a reference value",
                "initrd digest in rtmr2's event log is not a reference value",
                "kernel digest in rtmr1's event log is not a reference value",
            ])
        );
    }

    /// The claims of a token the broker would issue for `tee` evidence.
    fn token(tee: &str, debug: bool, simulated: bool, init_data: Option<&str>) -> Value {
        let claims = crate::token::TokenClaims::new(
            crate::token::Attested {
                tee: tee.into(),
                claims: json!({"tee": tee, "measurement": "aa", "debug": debug, "svn": 2}),
                debug,
                simulated,
                init_data: init_data.map(str::to_owned),
                init_data_claims: init_data.map(|_| json!({"aa.toml": {}})),
                report_data: "01".repeat(64),
                tee_pubkey: json!({"kty": "EC"}),
                nonce: "bm9uY2U=".into(),
            },
            0,
            300,
        );
        serde_json::to_value(claims).unwrap()
    }

    fn decide(policy: &Policy, claims: Value, path: &str, opted_in: bool) -> Decision {
        let path = ResourcePath::parse(path).unwrap();
        let request = ResourceRequest {
            path: &path,
            insecure_release_to_simulated: opted_in,
        };
        policy.evaluate_resource(claims, &request).unwrap()
    }

    #[test]
    fn default_resource_policy_releases_to_affirmed_guests_and_simulated_ones_only_if_opted_in() {
        let policy = Policy::compile(DEFAULT_RESOURCE_POLICY, &refs()).unwrap();
        let real = token("snp", false, false, None);
        assert_eq!(
            decide(&policy, real, "default/key/1", false),
            Decision::Allow
        );
        let simulated = token("snp", false, true, None);
        assert_eq!(
            decide(&policy, simulated.clone(), "default/key/1", false),
            Decision::Deny(vec![
                "the guest's evidence is simulated and this broker does not release resources to \
                 simulated guests"
                    .into()
            ])
        );
        assert_eq!(
            decide(&policy, simulated, "default/key/1", true),
            Decision::Allow
        );
        // Debug on is a warning, not affirming: refused, with the status named.
        assert_eq!(
            decide(
                &policy,
                token("snp", true, false, None),
                "default/key/1",
                false
            ),
            Decision::Deny(vec![
                "the guest's appraisal is warning, not affirming".into()
            ])
        );
        // A token without an appraisal (not one this broker issues) gets nothing.
        assert_eq!(
            decide(&policy, json!({"submods": {}}), "default/key/1", true),
            Decision::Deny(vec![])
        );
    }

    /// Policies written to Trustee's documented resource-policy input (its sample policies and
    /// integration tests read these paths) decide on tsuba's tokens as they would on Trustee's.
    #[test]
    fn trustee_style_resource_policies_decide_on_tsuba_tokens() {
        let compile = |text: &str| {
            let policy = Policy::compile(text, &refs()).unwrap();
            policy.check_decides(PolicyKind::Resource).unwrap();
            policy
        };
        let snp = token("snp", false, false, None);
        let sample = token("sample", false, false, None);

        // Trustee's default: any token but one from the sample TEE.
        let not_sample = compile(
            "package policy\ndefault allow = false\nallow if {\n  data.plugin == \"resource\"\n  \
             not input[\"submods\"][\"cpu0\"][\"ear.veraison.annotated-evidence\"][\"sample\"]\n}\n",
        );
        assert_eq!(
            decide(&not_sample, snp.clone(), "a/b/c", false),
            Decision::Allow
        );
        assert_eq!(
            decide(&not_sample, sample, "a/b/c", false),
            Decision::Deny(vec![])
        );

        // Every appraisal affirming.
        let affirming = compile(
            "package policy\ndefault allow = false\nallow if {\n  count(input.submods) > 0\n  \
             every _, submod in input.submods { submod[\"ear.status\"] == \"affirming\" }\n}\n",
        );
        assert_eq!(
            decide(&affirming, snp.clone(), "a/b/c", false),
            Decision::Allow
        );
        for refused in [
            token("snp", true, false, None),
            token("snp", false, true, None),
        ] {
            assert_eq!(
                decide(&affirming, refused, "a/b/c", false),
                Decision::Deny(vec![])
            );
        }

        // Not contraindicated (Trustee's integration tests): debug passes, simulated does not.
        let not_contraindicated = compile(
            "package policy\ndefault allow = false\nallow if \
             input[\"submods\"][\"cpu0\"][\"ear.status\"] != \"contraindicated\"\n",
        );
        assert_eq!(
            decide(
                &not_contraindicated,
                token("snp", true, false, None),
                "a/b/c",
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &not_contraindicated,
                token("snp", false, true, None),
                "a/b/c",
                false
            ),
            Decision::Deny(vec![])
        );

        // The resource path as an array, and evidence claims beside it.
        let by_path = compile(
            "package policy\ndefault allow = false\nsvn_needed := {\"one\": 2, \"two\": 3}\n\
             allow if {\n  data.plugin == \"resource\"\n  count(data[\"resource-path\"]) == 3\n  \
             data[\"resource-path\"][0] == \"myrepo\"\n  \
             svn_needed[data[\"resource-path\"][2]] <= \
             input.submods.cpu0[\"ear.veraison.annotated-evidence\"].snp.svn\n}\n",
        );
        assert_eq!(
            decide(&by_path, snp.clone(), "myrepo/secret/one", false),
            Decision::Allow
        );
        for path in [
            "myrepo/secret/two",
            "other/secret/one",
            "myrepo/secret/three",
        ] {
            assert_eq!(
                decide(&by_path, snp.clone(), path, false),
                Decision::Deny(vec![]),
                "{path}"
            );
        }

        // Tied to one initdata document.
        let hex = "ab".repeat(32);
        let tied = compile(&format!(
            "package policy\ndefault allow := false\nallow if \
             input.submods.cpu0[\"ear.veraison.annotated-evidence\"].init_data == \"{hex}\"\n"
        ));
        assert_eq!(
            decide(
                &tied,
                token("snp", false, false, Some(&hex)),
                "a/b/c",
                false
            ),
            Decision::Allow
        );
        for other in [Some("cd".repeat(32)), None] {
            let claims = token("snp", false, false, other.as_deref());
            assert_eq!(
                decide(&tied, claims, "a/b/c", false),
                Decision::Deny(vec![])
            );
        }
    }

    #[test]
    fn bad_policies_are_refused_at_load() {
        assert!(matches!(
            Policy::compile("package policy\nallow if {", &refs()),
            Err(PolicyError::Compile(_))
        ));
        let huge = "#".repeat(MAX_POLICY_LEN + 1);
        assert!(matches!(
            Policy::compile(&huge, &refs()),
            Err(PolicyError::TooLarge)
        ));
    }

    #[test]
    fn the_default_policies_decide_a_representative_input() {
        for (text, kind) in [
            (DEFAULT_ATTESTATION_POLICY, PolicyKind::Attestation),
            (DEFAULT_RESOURCE_POLICY, PolicyKind::Resource),
        ] {
            Policy::compile(text, &refs())
                .unwrap()
                .check_decides(kind)
                .unwrap();
        }
    }

    #[test]
    fn a_policy_that_leaves_allow_undefined_is_refused_naming_the_fix() {
        // Written to Trustee's resource-policy input: `data.plugin`, `data["resource-path"]`.
        let trustee_style = "package policy\n\
            allow if {\n  data.plugin == \"resource\"\n  \
            data[\"resource-path\"][0] == \"production\"\n}\n";
        let policy = Policy::compile(trustee_style, &refs()).unwrap();
        let err = policy.check_decides(PolicyKind::Resource).unwrap_err();
        assert!(
            matches!(&err, PolicyError::Undecided { kind: "resource", found } if found == "undefined"),
            "{err:?}"
        );
        assert!(err.to_string().contains("default allow := false"), "{err}");
        // The same rule with a default decides, and denies this input.
        let with_default = format!("{trustee_style}default allow := false\n");
        let policy = Policy::compile(&with_default, &refs()).unwrap();
        policy.check_decides(PolicyKind::Resource).unwrap();
        // A rule that only matches other inputs is as undecided for attestation policies.
        let narrow = "package policy\nallow if input.claims.tee == \"tdx\"\n";
        let policy = Policy::compile(narrow, &refs()).unwrap();
        assert!(matches!(
            policy.check_decides(PolicyKind::Attestation),
            Err(PolicyError::Undecided {
                kind: "attestation",
                ..
            })
        ));
        // An attestation policy written for Trustee computes a trust vector and has no allow:
        // refused at upload rather than refusing every guest.
        let trust_claims = "package policy\ndefault executables := 33\n\
            trust_claims := {\"executables\": executables}\n";
        let err = Policy::compile(trust_claims, &refs()).unwrap_err();
        assert!(matches!(err, PolicyError::NoAllow), "{err:?}");
        assert!(err.to_string().contains("trust_claims"), "{err}");
        // A non-boolean allow is named.
        let policy = Policy::compile("package policy\nallow := \"yes\"\n", &refs()).unwrap();
        let err = policy.check_decides(PolicyKind::Resource).unwrap_err();
        assert!(
            matches!(&err, PolicyError::Undecided { found, .. } if found == "\"yes\""),
            "{err:?}"
        );
    }

    #[test]
    fn non_boolean_allow_is_an_error() {
        let policy = Policy::compile("package policy\nallow := \"yes\"\n", &refs()).unwrap();
        assert!(matches!(
            policy.evaluate(json!({})),
            Err(PolicyError::Eval(_))
        ));
    }
}
