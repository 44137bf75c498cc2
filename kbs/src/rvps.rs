//! Reference values in the message format of Trustee's reference value provider (RVPS), which
//! its `kbs-client config set-sample-reference-value` sends to `POST /kbs/v0/reference-value`:
//! `{"version": "0.1.0", "type": "sample", "payload": <standard base64 of a JSON object>}`, the
//! object naming each reference value and its value or list of values. Each name it carries
//! replaces that name's values; other names stay. Values are kept as text, as every reference
//! value of this broker is: a number or a boolean as its JSON text.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::Value;

/// The only message version there is.
const VERSION: &str = "0.1.0";

/// Most names in one message, values per name, and characters in a name or a value.
const MAX_NAMES: usize = 256;
const MAX_VALUES: usize = 256;
const MAX_NAME_LEN: usize = 128;
const MAX_VALUE_LEN: usize = 1024;

/// Why a message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RvpsError {
    /// Not JSON of the message's shape.
    #[error("not a reference value message ({{\"version\", \"type\", \"payload\"}})")]
    Malformed,
    /// A version other than 0.1.0.
    #[error("message version {0:?} is not supported, only \"0.1.0\"")]
    Version(String),
    /// A type other than `sample`.
    #[error(
        "message type {0:?} is not supported, only \"sample\" (swid and corim provenance is not \
         read by this broker)"
    )]
    Type(String),
    /// The payload is not base64 of a JSON object.
    #[error("payload is not base64 of a json object of names and values")]
    Payload,
    /// A value is neither text, a number, a boolean, nor a list of those.
    #[error("reference value {0:?} is not text, a number, a boolean, or a list of those")]
    Value(String),
    /// A bound was exceeded.
    #[error(
        "too large: at most {MAX_NAMES} names, {MAX_VALUES} values per name, names of \
         {MAX_NAME_LEN} and values of {MAX_VALUE_LEN} characters"
    )]
    TooLarge,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Message {
    #[serde(default)]
    version: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    payload: String,
}

/// The reference values a message sets, name to values.
pub(crate) fn parse(body: &[u8]) -> Result<BTreeMap<String, Vec<String>>, RvpsError> {
    let message: Message = serde_json::from_slice(body).map_err(|_| RvpsError::Malformed)?;
    let version = message.version.unwrap_or_else(|| VERSION.to_owned());
    if version != VERSION {
        return Err(RvpsError::Version(bounded(&version)));
    }
    if message.kind != "sample" {
        return Err(RvpsError::Type(bounded(&message.kind)));
    }
    let payload = STANDARD
        .decode(message.payload.trim())
        .map_err(|_| RvpsError::Payload)?;
    let Ok(Value::Object(names)) = serde_json::from_slice::<Value>(&payload) else {
        return Err(RvpsError::Payload);
    };
    if names.len() > MAX_NAMES {
        return Err(RvpsError::TooLarge);
    }
    let mut values = BTreeMap::new();
    for (name, value) in names {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(RvpsError::TooLarge);
        }
        let list = match value {
            Value::Array(items) => items,
            single => vec![single],
        };
        if list.len() > MAX_VALUES {
            return Err(RvpsError::TooLarge);
        }
        let texts = list
            .into_iter()
            .map(|item| match item {
                Value::String(text) => Ok(text),
                Value::Number(_) | Value::Bool(_) => Ok(item.to_string()),
                _ => Err(RvpsError::Value(bounded(&name))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if texts.iter().any(|text| text.len() > MAX_VALUE_LEN) {
            return Err(RvpsError::TooLarge);
        }
        values.insert(name, texts);
    }
    Ok(values)
}

/// At most 100 characters of client-chosen text, for a refusal.
pub(crate) fn bounded(text: &str) -> String {
    text.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: &str, payload: &Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "version": "0.1.0", "type": kind, "payload": STANDARD.encode(payload.to_string()),
        }))
        .unwrap()
    }

    #[test]
    fn kbs_client_messages_set_text_numbers_and_booleans() {
        // What set-sample-reference-value sends: a string by default, a list unless
        // --as-single-value, a number or a boolean with --as-integer / --as-bool.
        let body = message(
            "sample",
            &serde_json::json!({
                "measurement": ["ab12"], "svn": 3, "smt": [true], "single": "x",
            }),
        );
        let values = parse(&body).unwrap();
        assert_eq!(values["measurement"], ["ab12"]);
        assert_eq!(values["svn"], ["3"]);
        assert_eq!(values["smt"], ["true"]);
        assert_eq!(values["single"], ["x"]);
        // The version may be left out; it defaults to the one there is.
        let body = serde_json::json!({"type": "sample", "payload": STANDARD.encode(r#"{"a":[]}"#)});
        assert_eq!(
            parse(body.to_string().as_bytes()).unwrap()["a"],
            Vec::<String>::new()
        );
    }

    #[test]
    fn other_messages_are_refused_saying_why() {
        let ok = serde_json::json!({"a": ["b"]});
        assert_eq!(
            parse(&message("swid", &ok)),
            Err(RvpsError::Type("swid".into()))
        );
        let body = serde_json::json!({"version": "0.2.0", "type": "sample", "payload": ""});
        assert_eq!(
            parse(body.to_string().as_bytes()),
            Err(RvpsError::Version("0.2.0".into()))
        );
        for bad in [
            &b""[..],
            b"{}",
            b"[]",
            br#"{"type":"sample","payload":"x","extra":1}"#,
        ] {
            assert_eq!(parse(bad), Err(RvpsError::Malformed));
        }
        for payload in ["!!", &STANDARD.encode("[1]"), &STANDARD.encode("not json")] {
            let body = serde_json::json!({"type": "sample", "payload": payload});
            assert_eq!(parse(body.to_string().as_bytes()), Err(RvpsError::Payload));
        }
        assert_eq!(
            parse(&message("sample", &serde_json::json!({"a": {"nested": 1}}))),
            Err(RvpsError::Value("a".into()))
        );
        assert_eq!(
            parse(&message("sample", &serde_json::json!({"a": [null]}))),
            Err(RvpsError::Value("a".into()))
        );
    }

    #[test]
    fn sizes_are_bounded() {
        let many: serde_json::Map<String, Value> = (0..=MAX_NAMES)
            .map(|i| (format!("n{i}"), Value::from("v")))
            .collect();
        for payload in [
            Value::Object(many),
            serde_json::json!({"a": vec!["v"; MAX_VALUES + 1]}),
            serde_json::json!({"a": "v".repeat(MAX_VALUE_LEN + 1)}),
            serde_json::json!({"n".repeat(MAX_NAME_LEN + 1): "v"}),
            serde_json::json!({"": "v"}),
        ] {
            assert_eq!(
                parse(&message("sample", &payload)),
                Err(RvpsError::TooLarge)
            );
        }
        let long = "t".repeat(10_000);
        match parse(&message(&long, &serde_json::json!({}))) {
            Err(RvpsError::Type(kind)) => assert_eq!(kind.len(), 100),
            other => panic!("{other:?}"),
        }
    }
}
