//! KBS report-data binding: how the guest ties its ephemeral key and the broker's nonce to its
//! evidence. Defined once here, for the broker (`kbs`) and the guest's client (`attestation-agent`).
//!
//! The guest puts `SHA-384(JCS(runtime data))` into the report data of its evidence, where the
//! runtime data is `{"additional-evidence": <string>, "nonce": <challenge nonce>, "tee-pubkey": <JWK>}`
//! and JCS is canonical JSON (keys sorted, no whitespace). A TEE whose report data is 64 bytes gets
//! the 48-byte digest followed by 16 zero bytes.

use serde_json::Value;
use sha2::{Digest, Sha384};

use crate::evidence::REPORT_DATA_LEN;

/// The SHA-384 digest that binds runtime data into the evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingDigest([u8; 48]);

impl BindingDigest {
    /// Computes the digest over the runtime data exactly as Trustee's broker does.
    pub fn compute(nonce: &str, tee_pubkey: &Value, additional_evidence: &str) -> Self {
        let runtime = serde_json::json!({
            "additional-evidence": additional_evidence,
            "nonce": nonce,
            "tee-pubkey": tee_pubkey,
        });
        let mut canonical = String::new();
        write_canonical(&runtime, &mut canonical);
        Self(Sha384::digest(canonical.as_bytes()).into())
    }

    /// The 48 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 48] {
        &self.0
    }

    /// The digest zero-padded to the 64-byte report-data field of SNP and TDX.
    pub fn padded(&self) -> [u8; REPORT_DATA_LEN] {
        let mut out = [0u8; REPORT_DATA_LEN];
        out[..48].copy_from_slice(&self.0);
        out
    }
}

/// Writes `value` as JCS canonical JSON. Object keys are sorted here explicitly, so the output does
/// not depend on whether serde_json's `preserve_order` feature is enabled somewhere in the build.
pub fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            // JCS sorts by UTF-16 code units; for the ASCII keys of the KBS protocol that is byte order.
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (key, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(val, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde_json::json;

    use super::*;

    /// The vector captured between Trustee's broker and guest-components' client
    /// (`/work/shared/kbs-wire-format.md`, exchange 2).
    fn wire_doc_key() -> Value {
        json!({"kty":"EC","crv":"P-256","alg":"ECDH-ES+A256KW",
               "x":"ISay32SReECBKxm3b6oHae_hDdMVXheaZhZfbobcSFs",
               "y":"yeuk_WlNiO0QdY8rZL5W8_IRLhfSZoXCwLLRDC7rwVo"})
    }

    #[test]
    fn digest_matches_wire_capture() {
        let digest = BindingDigest::compute(
            "uj+BMN4gKqa1c2QVvmwu5gpJiVlXCaM2g7OugqdxUEo=",
            &wire_doc_key(),
            "",
        );
        assert_eq!(
            STANDARD.encode(digest.as_bytes()),
            "1tlxhsV83aZibT86quy6A/MjCQcTfUUIYIc519rIpQ/buu9h+IE+OGiljUdpLCws"
        );
    }

    #[test]
    fn digest_depends_on_every_field() {
        let base = BindingDigest::compute("n", &wire_doc_key(), "");
        assert_ne!(base, BindingDigest::compute("m", &wire_doc_key(), ""));
        assert_ne!(base, BindingDigest::compute("n", &wire_doc_key(), "x"));
        assert_ne!(base, BindingDigest::compute("n", &json!({"kty":"EC"}), ""));
    }

    #[test]
    fn padded_is_digest_then_zeros() {
        let digest = BindingDigest::compute("n", &wire_doc_key(), "");
        let padded = digest.padded();
        assert_eq!(&padded[..48], digest.as_bytes());
        assert!(padded[48..].iter().all(|b| *b == 0));
    }

    #[test]
    fn canonical_sorts_nested_keys_and_escapes() {
        let mut out = String::new();
        write_canonical(&json!({"b":[{"z":1,"a":"\"q\""}],"a":null}), &mut out);
        assert_eq!(out, r#"{"a":null,"b":[{"a":"\"q\"","z":1}]}"#);
    }
}
