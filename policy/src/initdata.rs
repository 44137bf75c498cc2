//! The initdata document and the digest that binds it into a launch.
//!
//! Initdata is the Confidential Containers document (TOML: `version`, `algorithm`, `[data]`) that
//! the host hands to the guest at launch: the agent policy, the attestation agent's configuration,
//! and so on. The host is untrusted, so the document's digest is bound into the hardware launch
//! measurement, and the guest compares the document it received against its own attestation report
//! before it uses any of it.
//!
//! The digest follows the CoCo initdata specification (Trustee `kbs/docs/initdata.md`, as Kata and
//! guest-components implement it):
//! - it is the document's `algorithm` (sha256, sha384 or sha512) over the document's exact bytes,
//!   as given, not over a re-serialisation;
//! - it is then fitted to the platform's field: truncated when longer, zero-padded on the right
//!   when shorter. SNP `HOST_DATA` is 32 bytes, TDX `MRCONFIGID` is 48 bytes.
//!
//! This is the ONE definition of that digest in tsuba: the launcher, `tsuba measure`, the key
//! broker and the agent all call it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256, Sha384, Sha512};

/// The only initdata specification version there is.
pub const INITDATA_VERSION: &str = "0.1.0";

/// The largest initdata document accepted, in bytes.
///
/// The document travels in a pod annotation and is parsed by the guest before anything else runs;
/// a bound keeps a hostile host from making either side parse an unbounded document.
pub const MAX_INITDATA_LEN: usize = 256 * 1024;

/// Length of SNP `HOST_DATA` in the attestation report.
pub const HOST_DATA_LEN: usize = 32;

/// Length of TDX `MRCONFIGID` in the TD report.
pub const MR_CONFIG_ID_LEN: usize = 48;

/// Errors from parsing or checking an initdata document.
#[derive(Debug, thiserror::Error)]
pub enum InitdataError {
    /// The document is larger than [`MAX_INITDATA_LEN`].
    #[error("initdata document is {len} bytes, the limit is {max}")]
    TooLarge {
        /// Length of the document offered.
        len: usize,
        /// The limit, [`MAX_INITDATA_LEN`].
        max: usize,
    },
    /// The document is not UTF-8, so it cannot be TOML.
    #[error("initdata document is not utf-8")]
    NotUtf8(#[source] std::str::Utf8Error),
    /// The document is not TOML of the initdata shape.
    #[error("initdata document is not valid initdata toml")]
    Toml(#[source] toml::de::Error),
    /// The document names a specification version other than [`INITDATA_VERSION`].
    #[error("unsupported initdata version {0:?}, expected \"0.1.0\"")]
    UnsupportedVersion(String),
    /// The document names a digest algorithm other than sha256, sha384 or sha512.
    #[error("unsupported initdata algorithm {0:?}, expected sha256, sha384 or sha512")]
    UnsupportedAlgorithm(String),
    /// The digest in the attestation evidence is not the digest of this document.
    #[error("initdata digest does not match the one bound into the launch ({field})")]
    DigestMismatch {
        /// Which evidence field was compared: `HOST_DATA` or `MRCONFIGID`.
        field: &'static str,
    },
}

/// The digest algorithm an initdata document names for itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitdataAlgorithm {
    /// SHA-256 (32-byte digest).
    Sha256,
    /// SHA-384 (48-byte digest).
    Sha384,
    /// SHA-512 (64-byte digest).
    Sha512,
}

impl InitdataAlgorithm {
    fn from_name(name: &str) -> Result<Self, InitdataError> {
        match name {
            "sha256" => Ok(Self::Sha256),
            "sha384" => Ok(Self::Sha384),
            "sha512" => Ok(Self::Sha512),
            other => Err(InitdataError::UnsupportedAlgorithm(other.to_owned())),
        }
    }

    /// The name used in the document (`sha256`, `sha384`, `sha512`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    fn digest(self, bytes: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => Sha256::digest(bytes).to_vec(),
            Self::Sha384 => Sha384::digest(bytes).to_vec(),
            Self::Sha512 => Sha512::digest(bytes).to_vec(),
        }
    }
}

impl fmt::Display for InitdataAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The document's shape on the wire. Unknown keys are refused: a key the guest would ignore is
/// still covered by the digest, and silently carrying it hides mistakes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    version: String,
    algorithm: String,
    data: BTreeMap<String, String>,
}

/// A parsed initdata document, holding the exact text it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initdata {
    text: String,
    algorithm: InitdataAlgorithm,
    data: BTreeMap<String, String>,
}

impl Initdata {
    /// Parses a document from bytes (bounded, UTF-8, TOML of the initdata shape).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InitdataError> {
        check_len(bytes.len())?;
        let text = std::str::from_utf8(bytes).map_err(InitdataError::NotUtf8)?;
        Self::parse(text)
    }

    /// Parses a document from text (bounded, TOML of the initdata shape).
    pub fn parse(text: &str) -> Result<Self, InitdataError> {
        check_len(text.len())?;
        let doc: Document = toml::from_str(text).map_err(InitdataError::Toml)?;
        if doc.version != INITDATA_VERSION {
            return Err(InitdataError::UnsupportedVersion(doc.version));
        }
        let algorithm = InitdataAlgorithm::from_name(&doc.algorithm)?;
        Ok(Self {
            text: text.to_owned(),
            algorithm,
            data: doc.data,
        })
    }

    /// The exact document text; the digest covers these bytes.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The digest algorithm the document names.
    pub fn algorithm(&self) -> InitdataAlgorithm {
        self.algorithm
    }

    /// The `[data]` table: file name to content (e.g. `policy.rego`, `aa.toml`).
    pub fn data(&self) -> &BTreeMap<String, String> {
        &self.data
    }

    /// One entry of the `[data]` table.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.data.get(key).map(String::as_str)
    }

    /// The full digest of the document with its own algorithm (32, 48 or 64 bytes).
    pub fn digest(&self) -> Vec<u8> {
        self.algorithm.digest(self.text.as_bytes())
    }

    /// The digest as it goes into SNP `HOST_DATA` (truncated or zero-padded to 32 bytes).
    pub fn host_data(&self) -> HostData {
        HostData(fit(&self.digest()))
    }

    /// The digest as it goes into TDX `MRCONFIGID` (truncated or zero-padded to 48 bytes).
    pub fn mr_config_id(&self) -> MrConfigId {
        MrConfigId(fit(&self.digest()))
    }

    /// Checks this document against the `HOST_DATA` of an SNP attestation report.
    pub fn verify_host_data(&self, reported: &[u8; HOST_DATA_LEN]) -> Result<(), InitdataError> {
        if self.host_data().as_bytes() == reported {
            Ok(())
        } else {
            Err(InitdataError::DigestMismatch { field: "HOST_DATA" })
        }
    }

    /// Checks this document against the `MRCONFIGID` of a TDX quote.
    pub fn verify_mr_config_id(
        &self,
        reported: &[u8; MR_CONFIG_ID_LEN],
    ) -> Result<(), InitdataError> {
        if self.mr_config_id().as_bytes() == reported {
            Ok(())
        } else {
            Err(InitdataError::DigestMismatch {
                field: "MRCONFIGID",
            })
        }
    }
}

fn check_len(len: usize) -> Result<(), InitdataError> {
    if len > MAX_INITDATA_LEN {
        return Err(InitdataError::TooLarge {
            len,
            max: MAX_INITDATA_LEN,
        });
    }
    Ok(())
}

/// Truncates `digest` to `N` bytes, or zero-pads it on the right up to `N` bytes.
fn fit<const N: usize>(digest: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = digest.len().min(N);
    out[..n].copy_from_slice(&digest[..n]);
    out
}

/// The 32 bytes of SNP `HOST_DATA` that bind an initdata document into an SNP launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostData([u8; HOST_DATA_LEN]);

impl HostData {
    /// The raw bytes, as in the report and as passed to QEMU (`host-data`, base64).
    pub fn as_bytes(&self) -> &[u8; HOST_DATA_LEN] {
        &self.0
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl Serialize for HostData {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

/// The 48 bytes of TDX `MRCONFIGID` that bind an initdata document into a TDX launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MrConfigId([u8; MR_CONFIG_ID_LEN]);

impl MrConfigId {
    /// The raw bytes, as in the TD report and as passed to QEMU (`mrconfigid`, base64).
    pub fn as_bytes(&self) -> &[u8; MR_CONFIG_ID_LEN] {
        &self.0
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl Serialize for MrConfigId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC_SHA384: &str = r#"version = "0.1.0"
algorithm = "sha384"

[data]
"policy.rego" = '''
package agent_policy
default AllowRequestsFailingPolicy := false
'''
"aa.toml" = '''
[token_configs.kbs]
url = "https://127.0.0.1:8080"
'''
"#;

    fn with_algorithm(algorithm: &str) -> String {
        DOC_SHA384.replace("sha384", algorithm)
    }

    // Expected digests were computed once, independently of this code, with coreutils over the
    // exact document bytes, e.g.
    //   printf '%s' "$DOC" | sha384sum
    // Truncation and padding then follow the CoCo rule (cut when longer, zero-pad when shorter).

    #[test]
    fn parses_fields_and_keeps_exact_text() {
        let doc = Initdata::parse(DOC_SHA384).unwrap();
        assert_eq!(doc.algorithm(), InitdataAlgorithm::Sha384);
        assert_eq!(doc.as_str(), DOC_SHA384);
        assert_eq!(doc.data().len(), 2);
        assert!(
            doc.get("policy.rego")
                .unwrap()
                .contains("package agent_policy")
        );
        assert!(doc.get("missing").is_none());
    }

    #[test]
    fn digest_is_over_exact_bytes_not_a_reserialisation() {
        let doc = Initdata::parse(DOC_SHA384).unwrap();
        assert_eq!(doc.digest(), Sha384::digest(DOC_SHA384.as_bytes()).to_vec());
        // The same document with one extra blank line parses to the same data, but it is a
        // different document and must have a different digest.
        let spaced = format!("{DOC_SHA384}\n");
        let other = Initdata::parse(&spaced).unwrap();
        assert_eq!(other.data(), doc.data());
        assert_ne!(other.digest(), doc.digest());
    }

    #[test]
    fn sha384_fills_mrconfigid_and_is_cut_for_host_data() {
        let doc = Initdata::parse(DOC_SHA384).unwrap();
        let full = Sha384::digest(DOC_SHA384.as_bytes());
        assert_eq!(doc.mr_config_id().as_bytes().as_slice(), &full[..]);
        assert_eq!(doc.host_data().as_bytes().as_slice(), &full[..32]);
    }

    #[test]
    fn sha256_is_zero_padded_for_mrconfigid() {
        let text = with_algorithm("sha256");
        let doc = Initdata::parse(&text).unwrap();
        let full = Sha256::digest(text.as_bytes());
        assert_eq!(doc.host_data().as_bytes().as_slice(), &full[..]);
        let mr = doc.mr_config_id();
        assert_eq!(&mr.as_bytes()[..32], &full[..]);
        assert_eq!(&mr.as_bytes()[32..], &[0u8; 16]);
    }

    #[test]
    fn sha512_is_cut_for_both_fields() {
        let text = with_algorithm("sha512");
        let doc = Initdata::parse(&text).unwrap();
        let full = Sha512::digest(text.as_bytes());
        assert_eq!(doc.digest().len(), 64);
        assert_eq!(doc.host_data().as_bytes().as_slice(), &full[..32]);
        assert_eq!(doc.mr_config_id().as_bytes().as_slice(), &full[..48]);
    }

    #[test]
    fn golden_host_data_for_a_minimal_document() {
        // printf 'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n' | sha256sum
        let text = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n";
        let doc = Initdata::parse(text).unwrap();
        assert!(doc.data().is_empty());
        assert_eq!(
            doc.host_data().to_hex(),
            "af398df379eb475aff9f02cd056d0d1f5d496b7a073927cb3ea92407d8ad61a3"
        );
    }

    #[test]
    fn verify_accepts_own_digest_and_refuses_others() {
        let doc = Initdata::parse(DOC_SHA384).unwrap();
        doc.verify_host_data(doc.host_data().as_bytes()).unwrap();
        doc.verify_mr_config_id(doc.mr_config_id().as_bytes())
            .unwrap();

        let mut tampered = *doc.host_data().as_bytes();
        tampered[31] ^= 1;
        assert!(matches!(
            doc.verify_host_data(&tampered),
            Err(InitdataError::DigestMismatch { field: "HOST_DATA" })
        ));
        assert!(matches!(
            doc.verify_mr_config_id(&[0u8; 48]),
            Err(InitdataError::DigestMismatch {
                field: "MRCONFIGID"
            })
        ));
    }

    #[test]
    fn refuses_unsupported_version() {
        let text = DOC_SHA384.replace("0.1.0", "0.2.0");
        assert!(matches!(
            Initdata::parse(&text),
            Err(InitdataError::UnsupportedVersion(v)) if v == "0.2.0"
        ));
    }

    #[test]
    fn refuses_unsupported_algorithm() {
        let text = with_algorithm("md5");
        assert!(matches!(
            Initdata::parse(&text),
            Err(InitdataError::UnsupportedAlgorithm(a)) if a == "md5"
        ));
    }

    #[test]
    fn refuses_malformed_and_incomplete_documents() {
        for text in [
            "",
            "version = \"0.1.0\"\nalgorithm = \"sha384\"\n",
            "algorithm = \"sha384\"\n[data]\n",
            "version = \"0.1.0\"\n[data]\n",
            "version = \"0.1.0\"\nalgorithm = \"sha384\"\nextra = 1\n[data]\n",
            "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\nkey = 5\n",
            "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data\n",
            // Truncated in the middle of a multi-line string.
            &DOC_SHA384[..DOC_SHA384.len() - 20],
        ] {
            assert!(
                matches!(Initdata::parse(text), Err(InitdataError::Toml(_))),
                "accepted {text:?}"
            );
        }
    }

    #[test]
    fn refuses_oversized_and_non_utf8_input() {
        let big = format!(
            "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\nk = \"{}\"\n",
            "a".repeat(MAX_INITDATA_LEN)
        );
        assert!(matches!(
            Initdata::parse(&big),
            Err(InitdataError::TooLarge {
                max: MAX_INITDATA_LEN,
                ..
            })
        ));
        assert!(matches!(
            Initdata::from_bytes(big.as_bytes()),
            Err(InitdataError::TooLarge { .. })
        ));
        assert!(matches!(
            Initdata::from_bytes(b"version = \"\xff\"\n"),
            Err(InitdataError::NotUtf8(_))
        ));
        // At the limit exactly, the size check passes and parsing decides.
        let at_limit = "#".repeat(MAX_INITDATA_LEN);
        assert!(matches!(
            Initdata::parse(&at_limit),
            Err(InitdataError::Toml(_))
        ));
    }

    #[test]
    fn digests_serialise_as_hex() {
        let doc = Initdata::parse(DOC_SHA384).unwrap();
        let json = serde_json::to_string(&doc.host_data()).unwrap();
        assert_eq!(json, format!("\"{}\"", doc.host_data().to_hex()));
        assert_eq!(doc.mr_config_id().to_hex().len(), 96);
    }
}
