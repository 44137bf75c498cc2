//! The init-data a guest presents at attestation, checked against the evidence.
//!
//! The attestation request may carry `"init-data": {"format": "toml", "body": <document>}`: the
//! initdata document the guest was launched with. Its digest (the one definition, in
//! `tsuba_policy::Initdata`) was bound by the launcher into SNP `HOST_DATA` or TDX `MRCONFIGID`,
//! which the hardware signs. The broker takes the document only when its digest is the one in
//! the verified evidence; then the policies see it as Trustee's attestation service shows it:
//!
//! * `init_data`: the binding field the document matched (32 bytes for SNP, 48 for TDX), lowercase
//!   hex, as Trustee's verifiers report it (`deps/verifier/src/snp/mod.rs`: `init_data` is
//!   `hex(HOST_DATA)`; `tdx/claims.rs`: `hex(MR_CONFIG_ID)`);
//! * `init_data_claims`: the document's `[data]` table, transformed as Trustee's
//!   `attestation-service/src/lib.rs` (`parse_init_data`) does: `aa.toml` and `cdh.toml` as JSON
//!   objects, and a `policy.rego`'s `policy_data` object as `agent_policy_claims` in its place.
//!
//! Without init-data in the request both are `null` (the raw field is still `claims.host_data`).

use std::collections::BTreeMap;

use serde_json::Value;
use tsuba_policy::{HOST_DATA_LEN, Initdata, InitdataError, MR_CONFIG_ID_LEN};

use crate::verifier::Claims;

/// The only init-data format there is (Trustee refuses others too).
const FORMAT_TOML: &str = "toml";

/// Longest piece of client-chosen text quoted back in a refusal.
const MAX_QUOTED: usize = 200;

/// Why the init-data of an attestation request was refused.
#[derive(Debug, thiserror::Error)]
pub enum InitDataError {
    /// The init-data names a format other than `toml`.
    #[error("init-data format {format:?} is not supported, only \"toml\"")]
    UnsupportedFormat {
        /// The format named (at most 200 characters of it).
        format: String,
    },
    /// The body is not an initdata document (too large, not TOML of the initdata shape, an
    /// unknown version or algorithm).
    #[error("init-data is not a valid initdata document: {reason}")]
    Malformed {
        /// What is wrong (at most 200 characters).
        reason: String,
    },
    /// The document's digest is not the one the evidence carries.
    #[error("init-data does not match the {field} bound into the evidence")]
    Mismatch {
        /// `HOST_DATA` (SNP) or `MRCONFIGID` (TDX).
        field: &'static str,
    },
    /// The evidence has no field init-data can be bound to (Trustee's unsigned `sample` TEE).
    #[error("{tee} evidence carries no HOST_DATA or MRCONFIGID to check init-data against")]
    Unbound {
        /// The TEE of the evidence.
        tee: String,
    },
}

impl InitDataError {
    /// Whether the request itself is wrong (400), rather than refused against the evidence (401).
    pub(crate) fn is_malformed_request(&self) -> bool {
        matches!(
            self,
            Self::UnsupportedFormat { .. } | Self::Malformed { .. }
        )
    }
}

/// Parses the request's init-data, if any, before anything is verified.
pub(crate) fn parse(
    init_data: Option<&kbs_types::InitData>,
) -> Result<Option<Initdata>, InitDataError> {
    let Some(init_data) = init_data else {
        return Ok(None);
    };
    if init_data.format != FORMAT_TOML {
        return Err(InitDataError::UnsupportedFormat {
            format: quoted(&init_data.format),
        });
    }
    Initdata::parse(&init_data.body)
        .map(Some)
        .map_err(|err| InitDataError::Malformed {
            reason: quoted(&err.to_string()),
        })
}

/// Init-data whose digest the verified evidence carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VerifiedInitData {
    /// The binding field it matched, lowercase hex (Trustee's `init_data`).
    pub(crate) digest: String,
    /// The `[data]` table as Trustee shows it (its `init_data_claims`): see [`data_claims`].
    pub(crate) data: Value,
}

/// The entries of `[data]` that Trustee shows as JSON rather than text.
const TOML_ENTRIES: [&str; 2] = ["aa.toml", "cdh.toml"];

/// Where a Kata or tsuba agent policy declares the data its rules read.
const POLICY_DATA: &str = "policy_data := ";

/// `[data]` as Trustee's attestation service shows it to policies and in the token: each entry's
/// text, except `aa.toml` and `cdh.toml` parsed into JSON (kept as text when they do not parse),
/// and a `policy.rego` that declares `policy_data := {...}` replaced by that object, named
/// `agent_policy_claims`. tsuba's generated policies declare `policy_data` before their rules;
/// Kata's put it last; the first JSON value after the declaration is read either way.
pub(crate) fn data_claims(data: &BTreeMap<String, String>) -> Value {
    let mut claims = serde_json::Map::new();
    for (name, text) in data {
        let value = if TOML_ENTRIES.contains(&name.as_str()) {
            toml::from_str::<Value>(text).unwrap_or_else(|_| Value::from(text.as_str()))
        } else {
            Value::from(text.as_str())
        };
        claims.insert(name.clone(), value);
    }
    if let Some(policy_data) = data.get("policy.rego").and_then(|rego| policy_data(rego)) {
        claims.remove("policy.rego");
        claims.insert("agent_policy_claims".into(), policy_data);
    }
    Value::Object(claims)
}

/// The object a Rego policy declares as `policy_data`, if it declares one.
fn policy_data(rego: &str) -> Option<Value> {
    let start = rego.find(POLICY_DATA)? + POLICY_DATA.len();
    let rest = rego.get(start..)?;
    if !rest.starts_with('{') {
        return None;
    }
    serde_json::Deserializer::from_str(rest)
        .into_iter::<Value>()
        .next()?
        .ok()
        .filter(Value::is_object)
}

/// Checks `document` against the binding field of verified `claims`: 32 bytes are SNP
/// `HOST_DATA`, 48 bytes TDX `MRCONFIGID`; anything else cannot bind a document.
pub(crate) fn check(
    document: &Initdata,
    claims: &Claims,
) -> Result<VerifiedInitData, InitDataError> {
    let unbound = || InitDataError::Unbound {
        tee: quoted(&claims.tee),
    };
    let field = hex::decode(&claims.host_data).map_err(|_| unbound())?;
    let outcome = if let Ok(host_data) = <[u8; HOST_DATA_LEN]>::try_from(field.as_slice()) {
        document.verify_host_data(&host_data)
    } else if let Ok(mr_config_id) = <[u8; MR_CONFIG_ID_LEN]>::try_from(field.as_slice()) {
        document.verify_mr_config_id(&mr_config_id)
    } else {
        return Err(unbound());
    };
    match outcome {
        Ok(()) => Ok(VerifiedInitData {
            digest: hex::encode(&field),
            data: data_claims(document.data()),
        }),
        Err(InitdataError::DigestMismatch { field }) => Err(InitDataError::Mismatch { field }),
        Err(other) => Err(InitDataError::Malformed {
            reason: quoted(&other.to_string()),
        }),
    }
}

/// At most [`MAX_QUOTED`] characters of `text`, so a refusal never echoes a large request.
fn quoted(text: &str) -> String {
    text.chars().take(MAX_QUOTED).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str =
        "version = \"0.1.0\"\nalgorithm = \"sha384\"\n\n[data]\n\"aa.toml\" = \"x\"\n";

    fn request(format: &str, body: &str) -> kbs_types::InitData {
        kbs_types::InitData {
            format: format.into(),
            body: body.into(),
        }
    }

    fn claims(tee: &str, host_data: &str) -> Claims {
        Claims {
            tee: tee.into(),
            simulated: true,
            measurement: String::new(),
            debug: false,
            report_data: String::new(),
            host_data: host_data.into(),
            details: serde_json::Value::Null,
            trustee: serde_json::Map::new(),
        }
    }

    #[test]
    fn no_init_data_is_nothing_to_check() {
        assert!(parse(None).unwrap().is_none());
    }

    #[test]
    fn only_toml_is_accepted_and_the_format_is_quoted_bounded() {
        for format in ["json", "TOML", "", "toml "] {
            assert!(matches!(
                parse(Some(&request(format, DOC))),
                Err(InitDataError::UnsupportedFormat { format: f }) if f == format
            ));
        }
        let long = "x".repeat(10_000);
        match parse(Some(&request(&long, DOC))) {
            Err(err @ InitDataError::UnsupportedFormat { .. }) => {
                assert!(err.is_malformed_request());
                assert!(err.to_string().len() < 300, "{err}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn malformed_documents_are_refused_with_a_bounded_reason() {
        let oversized = format!("{DOC}#{}\n", "a".repeat(tsuba_policy::MAX_INITDATA_LEN));
        for body in [
            "",
            "not toml [",
            &DOC.replace("0.1.0", "9.9.9"),
            &DOC.replace("sha384", "md5"),
            &DOC[..DOC.len() - 6],
            &oversized,
        ] {
            match parse(Some(&request("toml", body))) {
                Err(err @ InitDataError::Malformed { .. }) => {
                    assert!(err.is_malformed_request());
                    assert!(err.to_string().len() < 300, "{err}");
                }
                other => panic!("accepted {body:.40?}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_snp_digest_matches_host_data_and_another_does_not() {
        let doc = parse(Some(&request("toml", DOC))).unwrap().unwrap();
        let host_data = doc.host_data().to_hex();
        let verified = check(&doc, &claims("snp", &host_data)).unwrap();
        assert_eq!(verified.digest, host_data);
        // Not TOML: kept as text.
        assert_eq!(verified.data["aa.toml"], "x");

        let mut tampered = *doc.host_data().as_bytes();
        tampered[0] ^= 0x80;
        let err = check(&doc, &claims("snp", &hex::encode(tampered))).unwrap_err();
        assert!(matches!(
            err,
            InitDataError::Mismatch { field: "HOST_DATA" }
        ));
        assert!(!err.is_malformed_request());
        assert_eq!(
            err.to_string(),
            "init-data does not match the HOST_DATA bound into the evidence"
        );
    }

    #[test]
    fn the_tdx_digest_matches_mrconfigid_and_another_does_not() {
        let doc = parse(Some(&request("toml", DOC))).unwrap().unwrap();
        let mr_config_id = doc.mr_config_id().to_hex();
        assert_eq!(
            check(&doc, &claims("tdx", &mr_config_id)).unwrap().digest,
            mr_config_id
        );
        // Another document (one blank line more) has another digest.
        let other = Initdata::parse(&format!("{DOC}\n")).unwrap();
        assert!(matches!(
            check(&other, &claims("tdx", &mr_config_id)),
            Err(InitDataError::Mismatch {
                field: "MRCONFIGID"
            })
        ));
        assert!(matches!(
            check(&doc, &claims("tdx", &"00".repeat(48))),
            Err(InitDataError::Mismatch {
                field: "MRCONFIGID"
            })
        ));
    }

    #[test]
    fn evidence_without_a_binding_field_cannot_take_init_data() {
        let doc = parse(Some(&request("toml", DOC))).unwrap().unwrap();
        for host_data in ["", "zz", &"00".repeat(31), &"00".repeat(64)] {
            assert!(
                matches!(
                    check(&doc, &claims("sample", host_data)),
                    Err(InitDataError::Unbound { ref tee }) if tee == "sample"
                ),
                "{host_data}"
            );
        }
    }

    #[test]
    fn claims_show_the_toml_files_as_json_and_the_agent_policy_data_as_trustee_does() {
        let rego = tsuba_policy::agent::render_policy(&tsuba_policy::agent::PolicyData::default());
        let data = BTreeMap::from([
            (
                "aa.toml".to_owned(),
                "[token_configs.kbs]\nurl = \"https://kbs:8080\"\n".to_owned(),
            ),
            (
                "cdh.toml".to_owned(),
                "[kbc]\nname = \"cc_kbc\"\n".to_owned(),
            ),
            ("tsuba.toml".to_owned(), "kbs_pin = \"x\"\n".to_owned()),
            ("policy.rego".to_owned(), rego),
        ]);
        let claims = data_claims(&data);
        assert_eq!(
            claims["aa.toml"]["token_configs"]["kbs"]["url"],
            "https://kbs:8080"
        );
        assert_eq!(claims["cdh.toml"]["kbc"]["name"], "cc_kbc");
        // Trustee converts only its own two files.
        assert_eq!(claims["tsuba.toml"], "kbs_pin = \"x\"\n");
        // tsuba's generated policy declares its data before the rules.
        assert!(claims.get("policy.rego").is_none());
        assert_eq!(
            claims["agent_policy_claims"],
            serde_json::to_value(tsuba_policy::agent::PolicyData::default()).unwrap()
        );

        // Kata's genpolicy puts the data last; a policy without data stays text, as does a
        // TOML file that does not parse.
        let kata = "package agent_policy\ndefault x := 1\npolicy_data := {\"containers\": []}\n";
        let other = BTreeMap::from([
            ("policy.rego".to_owned(), kata.to_owned()),
            ("aa.toml".to_owned(), "not toml [".to_owned()),
        ]);
        let claims = data_claims(&other);
        assert_eq!(
            claims["agent_policy_claims"],
            serde_json::json!({"containers": []})
        );
        assert_eq!(claims["aa.toml"], "not toml [");
        for rego in [
            "package p\n",
            "policy_data := [1]\n",
            "policy_data := {broken\n",
        ] {
            let text = BTreeMap::from([("policy.rego".to_owned(), rego.to_owned())]);
            assert_eq!(data_claims(&text)["policy.rego"], rego, "{rego}");
        }
    }
}
