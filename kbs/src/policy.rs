//! Attestation and resource policies in Rego, evaluated with regorus.
//!
//! Both policies live in `package policy` and define `allow` (a boolean) and may define `reasons`
//! (a set of strings saying why a request was refused; they end up in the refusal the guest sees).
//!
//! * The attestation policy sees `input.claims` (the verified [`Claims`](crate::Claims)) and
//!   `input.expected_report_data`; `data.reference_values` holds the reference values.
//! * The resource policy sees `input.claims`, `input.tee`, `input.simulated`,
//!   `input.resource` (`repo`, `type`, `tag`) and `input.broker.insecure_release_to_simulated`
//!   (the administrator's opt-in to releasing resources to simulated guests).

use std::collections::BTreeMap;

use serde_json::Value;

/// Default attestation policy: the measurement must be a reference value, debug must be off and
/// the report data must carry this session's binding.
pub const DEFAULT_ATTESTATION_POLICY: &str = r#"package policy

default allow := false

measurement_ok if {
    input.claims.measurement in data.reference_values.measurement
}

report_data_ok if {
    input.claims.report_data == input.expected_report_data
}

allow if {
    measurement_ok
    not input.claims.debug
    report_data_ok
}

reasons contains "measurement is not a reference value" if not measurement_ok
reasons contains "debug is enabled" if input.claims.debug
reasons contains "report data does not match" if not report_data_ok
"#;

/// Default resource policy: any guest that passed attestation may read any resource, unless its
/// token is marked simulated (simulated or sample evidence, or a broker running with an insecure
/// evidence option) and the broker was not started with
/// `--insecure-release-resources-to-simulated`.
pub const DEFAULT_RESOURCE_POLICY: &str = r#"package policy

default allow := false

attested if {
    input.claims.measurement != ""
}

simulated_ok if {
    not input.simulated
}

simulated_ok if {
    input.broker.insecure_release_to_simulated
}

allow if {
    attested
    simulated_ok
}

reasons contains "the guest's evidence is simulated and this broker does not release resources to simulated guests" if not simulated_ok
"#;

/// Largest policy text accepted.
pub(crate) const MAX_POLICY_LEN: usize = 64 * 1024;

/// Errors while loading or evaluating a policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy text does not compile.
    #[error("policy does not compile")]
    Compile(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The policy is larger than [`MAX_POLICY_LEN`].
    #[error("policy is larger than {MAX_POLICY_LEN} bytes")]
    TooLarge,
    /// Evaluation failed (a runtime error in the policy, or `allow` is not a boolean).
    #[error("policy evaluation failed")]
    Eval(#[source] Box<dyn std::error::Error + Send + Sync>),
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
        let mut probe = engine.clone();
        probe.set_input(regorus::Value::from(serde_json::json!({})));
        probe
            .eval_rule("data.policy.allow".into())
            .map_err(|err| PolicyError::Compile(err.into()))?;
        Ok(Self {
            engine,
            text: text.into(),
        })
    }

    /// The policy text.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// Evaluates the policy over `input`.
    pub(crate) fn evaluate(&self, input: Value) -> Result<Decision, PolicyError> {
        let mut engine = self.engine.clone();
        engine.set_input(regorus::Value::from(input));
        let allow = engine
            .eval_rule("data.policy.allow".into())
            .map_err(|err| PolicyError::Eval(err.into()))?;
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
        let empty = Policy::compile(DEFAULT_ATTESTATION_POLICY, &BTreeMap::new()).unwrap();
        assert!(matches!(
            empty.evaluate(input("aa", false, "0102")).unwrap(),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn default_resource_policy_refuses_simulated_tokens_unless_opted_in() {
        let policy = Policy::compile(DEFAULT_RESOURCE_POLICY, &refs()).unwrap();
        let input = |simulated: bool, opted_in: bool| {
            json!({
                "claims": {"measurement": "aa"},
                "tee": "snp",
                "simulated": simulated,
                "resource": {"repo": "default", "type": "key", "tag": "1"},
                "broker": {"insecure_release_to_simulated": opted_in},
            })
        };
        assert_eq!(
            policy.evaluate(input(false, false)).unwrap(),
            Decision::Allow
        );
        assert_eq!(
            policy.evaluate(input(true, false)).unwrap(),
            Decision::Deny(vec![
                "the guest's evidence is simulated and this broker does not release resources to \
                 simulated guests"
                    .into()
            ])
        );
        assert_eq!(policy.evaluate(input(true, true)).unwrap(), Decision::Allow);
        let mut unattested = input(false, false);
        unattested["claims"]["measurement"] = json!("");
        assert_eq!(policy.evaluate(unattested).unwrap(), Decision::Deny(vec![]));
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
    fn non_boolean_allow_is_an_error() {
        let policy = Policy::compile("package policy\nallow := \"yes\"\n", &refs()).unwrap();
        assert!(matches!(
            policy.evaluate(json!({})),
            Err(PolicyError::Eval(_))
        ));
    }
}
