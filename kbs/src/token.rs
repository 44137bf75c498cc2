//! The attestation token: an ES256 JWT that the broker issues after a successful attestation and
//! accepts back as a bearer token on resource requests. Its claims are an EAR (EAT Attestation
//! Result, draft-ietf-rats-ear) in the shape Trustee's attestation service issues: one appraisal
//! per attester under `submods` (the CPU is `cpu0`), each with its status, trustworthiness vector
//! and the verified evidence as `ear.veraison.annotated-evidence` (the TEE's claims under its
//! name, `init_data`, `init_data_claims`, `report_data`, `runtime_data_claims` with the guest's
//! `tee-pubkey`). A resource policy written for Trustee reads the same paths here. Like Trustee's,
//! the header embeds the signer's public JWK; the broker itself trusts only its own key.
//!
//! The key is kept and stored as a `p256` key (PKCS#8 PEM, JWK); signing and checking go through
//! `ring`, whose P-256 is about ten times faster than `p256`'s (one of each per handshake).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::elliptic_curve::zeroize::Zeroizing;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest token accepted as a bearer token.
pub(crate) const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Issuer name in every token.
pub(crate) const ISSUER: &str = "tsuba-kbs";

/// Errors while issuing or checking a token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token is not three base64url parts of JSON.
    #[error("token is malformed")]
    Malformed,
    /// The token is longer than [`MAX_TOKEN_LEN`].
    #[error("token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    /// The header names an algorithm other than ES256.
    #[error("token algorithm is not es256")]
    Algorithm,
    /// The signature does not verify under the broker's key.
    #[error("token signature is invalid")]
    Signature,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// The claims could not be serialised.
    #[error("token claims could not be serialised")]
    Serialize(#[source] serde_json::Error),
    /// The stored signing key could not be read.
    #[error("token signing key is not a valid pkcs#8 p-256 key")]
    Key(#[source] p256::pkcs8::Error),
    /// The signature code refused the key pair.
    #[error("token signing key was refused")]
    KeyRejected(#[source] ring::error::KeyRejected),
    /// Signing failed (no randomness).
    #[error("token signing failed")]
    Sign(#[source] ring::error::Unspecified),
}

/// The EAT profile of the claims: Trustee's, whose claim set tsuba's tokens follow.
pub const EAR_PROFILE: &str = "tag:github.com,2024:confidential-containers/Trustee";

/// The submodule of the primary attester (Trustee names submodules `<class><n>`, CPU first).
pub const PRIMARY_SUBMOD: &str = "cpu0";

/// `ear.appraisal-policy-id` of every appraisal: the broker has one attestation policy.
pub(crate) const APPRAISAL_POLICY_ID: &str = "default";

/// What the broker asserts about an attested guest: an EAR.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenClaims {
    /// Always [`EAR_PROFILE`].
    pub eat_profile: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Which verifier appraised the evidence.
    #[serde(rename = "ear.verifier-id")]
    pub verifier_id: VerifierId,
    /// One appraisal per attester; the broker verifies the CPU's evidence only
    /// ([`PRIMARY_SUBMOD`]).
    pub submods: BTreeMap<String, Appraisal>,
    /// Expires at (Unix seconds).
    pub exp: u64,
    /// Always [`ISSUER`].
    pub iss: String,
}

/// EAR's `ear.verifier-id`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerifierId {
    /// Who built the verifier.
    pub developer: String,
    /// Which build of it.
    pub build: String,
}

impl VerifierId {
    /// This broker.
    pub fn this_broker() -> Self {
        Self {
            developer: "tsuba".into(),
            build: concat!("tsuba-kbs ", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}

/// The appraisal of one attester's evidence.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Appraisal {
    /// The worst tier of the trustworthiness vector.
    #[serde(rename = "ear.status")]
    pub status: Status,
    /// The AR4SI trustworthiness claims.
    #[serde(rename = "ear.trustworthiness-vector")]
    pub trust_vector: TrustVector,
    /// Which attestation policy appraised the evidence ([`APPRAISAL_POLICY_ID`]).
    #[serde(rename = "ear.appraisal-policy-id")]
    pub policy_id: String,
    /// The verified evidence the policies saw.
    #[serde(rename = "ear.veraison.annotated-evidence")]
    pub evidence: AnnotatedEvidence,
    /// tsuba's mark, where Trustee has no claim: the evidence was simulated (tee-sim's roots or
    /// Trustee's unsigned `sample` TEE) or the broker runs with an insecure evidence option.
    /// Never production.
    #[serde(rename = "tsuba.simulated")]
    pub simulated: bool,
}

/// EAR's `ear.status`, ordered from best to worst as EAR ranks tiers.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// No claim was made.
    None,
    /// Every claim is in the affirming tier.
    Affirming,
    /// Some claim is in the warning tier.
    Warning,
    /// Some claim is in the contraindicated tier.
    Contraindicated,
}

impl Status {
    /// The tier of one AR4SI claim value (draft-ietf-rats-ar4si: -1..1 none, 2..31 and -32..-2
    /// affirming, 32..95 and -96..-33 warning, the rest contraindicated).
    fn of(value: i8) -> Self {
        match value {
            -1..=1 => Self::None,
            2..=31 | -32..=-2 => Self::Affirming,
            32..=95 | -96..=-33 => Self::Warning,
            _ => Self::Contraindicated,
        }
    }
}

/// AR4SI's eight trustworthiness claims (0: no claim).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct TrustVector {
    /// The attester's identity.
    pub instance_identity: i8,
    /// Its configuration (debug, policy bits).
    pub configuration: i8,
    /// What it booted (the launch measurement and what it covers).
    pub executables: i8,
    /// Its file system.
    pub file_system: i8,
    /// Its hardware and firmware (genuine: signed by the vendor's roots).
    pub hardware: i8,
    /// Its runtime memory's opacity.
    pub runtime_opaque: i8,
    /// Its storage's opacity.
    pub storage_opaque: i8,
    /// Data it took from elsewhere.
    pub sourced_data: i8,
}

/// AR4SI `executables`: only approved executables were loaded (the launch measurement, and what
/// it covers, is a reference value). Trustee's default policy gives the same for a match.
pub(crate) const EXECUTABLES_APPROVED: i8 = 3;
/// AR4SI `hardware`: genuine (the evidence chains to the vendor's roots).
pub(crate) const HARDWARE_GENUINE: i8 = 2;
/// AR4SI `hardware`: unrecognised, what simulated roots are.
pub(crate) const HARDWARE_UNRECOGNISED: i8 = 97;
/// AR4SI `configuration`: an approved configuration (debug off).
pub(crate) const CONFIGURATION_APPROVED: i8 = 2;
/// AR4SI `configuration`: an unsafe configuration (debug on).
pub(crate) const CONFIGURATION_UNSAFE: i8 = 32;

impl TrustVector {
    /// The vector of evidence the attestation policy allowed: the policy checked what the guest
    /// booted (the default one: the launch measurement and, on TDX, the RTMRs), the verifier the
    /// signature chain (to real roots unless `simulated`), and the evidence says whether debug
    /// is on.
    pub fn of_allowed(debug: bool, simulated: bool) -> Self {
        Self {
            executables: EXECUTABLES_APPROVED,
            hardware: if simulated {
                HARDWARE_UNRECOGNISED
            } else {
                HARDWARE_GENUINE
            },
            configuration: if debug {
                CONFIGURATION_UNSAFE
            } else {
                CONFIGURATION_APPROVED
            },
            ..Self::default()
        }
    }

    /// `ear.status`: the worst tier of any claim.
    pub fn status(&self) -> Status {
        [
            self.instance_identity,
            self.configuration,
            self.executables,
            self.file_system,
            self.hardware,
            self.runtime_opaque,
            self.storage_opaque,
            self.sourced_data,
        ]
        .into_iter()
        .map(Status::of)
        .max()
        .unwrap_or(Status::None)
    }
}

/// `ear.veraison.annotated-evidence` as Trustee fills it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AnnotatedEvidence {
    /// The verifier's claims under the TEE's name (`snp`, `tdx`, `sample`): one entry.
    #[serde(flatten)]
    pub tee: BTreeMap<String, Value>,
    /// The initdata digest the guest presented its document for and the evidence binds (SNP
    /// `HOST_DATA` or TDX `MRCONFIGID`, lowercase hex); `None` (null) when the guest presented
    /// no init-data.
    pub init_data: Option<String>,
    /// That document's `[data]` table as Trustee shows it (`aa.toml` and `cdh.toml` as JSON, a
    /// `policy.rego`'s `policy_data` as `agent_policy_claims`); `None` (null) without init-data.
    pub init_data_claims: Option<Value>,
    /// The evidence's report data, lowercase hex.
    pub report_data: String,
    /// What the guest sent beside its evidence.
    pub runtime_data_claims: RuntimeDataClaims,
}

/// The runtime data of the attestation request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RuntimeDataClaims {
    /// The guest's ephemeral public key (JWK) that resources are encrypted to, as sent.
    #[serde(rename = "tee-pubkey")]
    pub tee_pubkey: Value,
    /// The session's nonce.
    pub nonce: String,
}

/// What one successful attestation established: the input of [`TokenClaims::new`].
#[derive(Debug, Clone)]
pub struct Attested {
    /// The TEE of the evidence (`snp`, `tdx`, `sample`).
    pub tee: String,
    /// The verifier's claims.
    pub claims: Value,
    /// Whether the guest runs with debug enabled.
    pub debug: bool,
    /// Simulated evidence, or a broker with an insecure evidence option.
    pub simulated: bool,
    /// The initdata binding, when the guest presented its document.
    pub init_data: Option<String>,
    /// That document's `[data]`, as Trustee shows it.
    pub init_data_claims: Option<Value>,
    /// The evidence's report data, lowercase hex.
    pub report_data: String,
    /// The guest's key, as sent.
    pub tee_pubkey: Value,
    /// The session's nonce.
    pub nonce: String,
}

impl TokenClaims {
    /// The EAR for `attested`, issued at `iat` for `ttl_secs`: one `cpu0` appraisal whose
    /// vector is [`TrustVector::of_allowed`] (the broker issues tokens only for evidence its
    /// attestation policy allowed).
    pub fn new(attested: Attested, iat: u64, ttl_secs: u64) -> Self {
        let trust_vector = TrustVector::of_allowed(attested.debug, attested.simulated);
        let appraisal = Appraisal {
            status: trust_vector.status(),
            trust_vector,
            policy_id: APPRAISAL_POLICY_ID.into(),
            evidence: AnnotatedEvidence {
                tee: BTreeMap::from([(attested.tee, attested.claims)]),
                init_data: attested.init_data,
                init_data_claims: attested.init_data_claims,
                report_data: attested.report_data,
                runtime_data_claims: RuntimeDataClaims {
                    tee_pubkey: attested.tee_pubkey,
                    nonce: attested.nonce,
                },
            },
            simulated: attested.simulated,
        };
        Self {
            eat_profile: EAR_PROFILE.into(),
            iat,
            verifier_id: VerifierId::this_broker(),
            submods: BTreeMap::from([(PRIMARY_SUBMOD.to_owned(), appraisal)]),
            exp: iat.saturating_add(ttl_secs),
            iss: ISSUER.into(),
        }
    }

    /// The primary attester's appraisal (every token the broker issues has one).
    pub fn primary(&self) -> Option<&Appraisal> {
        self.submods.get(PRIMARY_SUBMOD)
    }

    /// The TEE the primary evidence came from.
    pub fn tee(&self) -> &str {
        self.primary()
            .and_then(|appraisal| appraisal.evidence.tee.keys().next())
            .map_or("", String::as_str)
    }

    /// The guest's key that resources are encrypted to (Trustee's path
    /// `/submods/cpu0/ear.veraison.annotated-evidence/runtime_data_claims/tee-pubkey`).
    pub fn tee_pubkey(&self) -> Option<&Value> {
        self.primary()
            .map(|appraisal| &appraisal.evidence.runtime_data_claims.tee_pubkey)
    }
}

/// Signs and checks attestation tokens with the broker's P-256 key.
pub(crate) struct TokenSigner {
    /// The key as stored (PKCS#8 round trip).
    key: SigningKey,
    /// The same key, for signing.
    signer: ring::signature::EcdsaKeyPair,
    /// The uncompressed SEC1 public point, for checking.
    public: Vec<u8>,
    rng: ring::rand::SystemRandom,
    header_b64: String,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner").finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// Generates a new signing key.
    pub(crate) fn generate() -> Result<Self, TokenError> {
        Self::from_key(SigningKey::random(&mut rand::rngs::OsRng))
    }

    /// Loads a key from PKCS#8 PEM.
    pub(crate) fn from_pkcs8_pem(pem: &str) -> Result<Self, TokenError> {
        Self::from_key(SigningKey::from_pkcs8_pem(pem).map_err(TokenError::Key)?)
    }

    /// The key as PKCS#8 PEM, for storage.
    pub(crate) fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, TokenError> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(TokenError::Key)
    }

    fn from_key(key: SigningKey) -> Result<Self, TokenError> {
        let public = p256::PublicKey::from(key.verifying_key());
        let mut jwk: Value = serde_json::from_str(&public.to_jwk_string()).unwrap_or(Value::Null);
        // The key's algorithm in the JWK too: Trustee reads it there when it checks a token
        // as a passport ("Failed to find key_algorithm in Jwk" without it).
        if let Some(members) = jwk.as_object_mut() {
            members.insert("alg".into(), Value::from("ES256"));
        }
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "jwk": jwk});
        let point = public.to_encoded_point(false).as_bytes().to_vec();
        let rng = ring::rand::SystemRandom::new();
        let signer = ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &Zeroizing::new(key.to_bytes())[..],
            &point,
            &rng,
        )
        .map_err(TokenError::KeyRejected)?;
        Ok(Self {
            key,
            signer,
            public: point,
            rng,
            header_b64: URL_SAFE_NO_PAD.encode(header.to_string()),
        })
    }

    /// Issues a token carrying `claims`.
    pub(crate) fn issue(&self, claims: &TokenClaims) -> Result<String, TokenError> {
        let payload = serde_json::to_vec(claims).map_err(TokenError::Serialize)?;
        let signing_input = format!("{}.{}", self.header_b64, URL_SAFE_NO_PAD.encode(payload));
        // ES256 in JWS form: r || s, 32 bytes each (ring's "fixed" encoding).
        let signature = self
            .signer
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(TokenError::Sign)?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }

    /// Checks a token's signature, algorithm and expiry at `now` (Unix seconds).
    pub(crate) fn verify(&self, token: &str, now: u64) -> Result<TokenClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Value = decode_json(header)?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return Err(TokenError::Algorithm);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .ok()
            .and_then(|bytes| Signature::from_slice(&bytes).ok())
            .ok_or(TokenError::Malformed)?;
        let signing_input_len = token.len() - signature_len(token);
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            &self.public,
        )
        .verify(
            &token.as_bytes()[..signing_input_len],
            &signature.to_bytes(),
        )
        .map_err(|_| TokenError::Signature)?;
        let claims: TokenClaims = decode_json(payload)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// Length of the `.signature` suffix of a three-part token.
fn signature_len(token: &str) -> usize {
    token.rfind('.').map_or(0, |dot| token.len() - dot)
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> TokenClaims {
        TokenClaims::new(
            Attested {
                tee: "sample".into(),
                claims: serde_json::json!({"measurement": "ab"}),
                debug: false,
                simulated: true,
                init_data: Some("cd".repeat(32)),
                init_data_claims: Some(serde_json::json!({"aa.toml": {"x": 1}})),
                report_data: "ef".repeat(64),
                tee_pubkey: serde_json::json!({"kty": "EC"}),
                nonce: "bm9uY2U=".into(),
            },
            100,
            exp - 100,
        )
    }

    #[test]
    fn claims_are_an_ear_at_trustees_paths() {
        let json = serde_json::to_value(claims(200)).unwrap();
        assert_eq!(json["eat_profile"], EAR_PROFILE);
        assert_eq!(json["ear.verifier-id"]["developer"], "tsuba");
        assert_eq!(
            (json["iat"].as_u64(), json["exp"].as_u64()),
            (Some(100), Some(200))
        );
        let cpu = &json["submods"]["cpu0"];
        // Simulated roots are unrecognised hardware: contraindicated, whatever else passed.
        assert_eq!(cpu["ear.status"], "contraindicated");
        assert_eq!(
            cpu["ear.trustworthiness-vector"],
            serde_json::json!({
                "instance-identity": 0, "configuration": 2, "executables": 3, "file-system": 0,
                "hardware": 97, "runtime-opaque": 0, "storage-opaque": 0, "sourced-data": 0,
            })
        );
        assert_eq!(cpu["ear.appraisal-policy-id"], "default");
        assert_eq!(cpu["tsuba.simulated"], true);
        let evidence = &cpu["ear.veraison.annotated-evidence"];
        assert_eq!(evidence["sample"]["measurement"], "ab");
        assert_eq!(evidence["init_data"], "cd".repeat(32));
        assert_eq!(evidence["init_data_claims"]["aa.toml"]["x"], 1);
        assert_eq!(evidence["report_data"], "ef".repeat(64));
        // Where Trustee's broker looks for the key to encrypt a resource to.
        assert_eq!(
            json.pointer(
                "/submods/cpu0/ear.veraison.annotated-evidence/runtime_data_claims/tee-pubkey"
            ),
            Some(&serde_json::json!({"kty": "EC"}))
        );
        let read: TokenClaims = serde_json::from_value(json).unwrap();
        assert_eq!(read, claims(200));
        assert_eq!(read.tee(), "sample");

        // Without init-data both say null, not absent.
        let mut none = claims(200);
        let appraisal = none.submods.get_mut(PRIMARY_SUBMOD).unwrap();
        appraisal.evidence.init_data = None;
        appraisal.evidence.init_data_claims = None;
        let json = serde_json::to_value(none).unwrap();
        let evidence = &json["submods"]["cpu0"]["ear.veraison.annotated-evidence"];
        assert!(evidence["init_data"].is_null() && evidence.get("init_data_claims").is_some());
    }

    #[test]
    fn status_is_the_worst_tier_of_the_vector() {
        assert_eq!(TrustVector::default().status(), Status::None);
        assert_eq!(
            TrustVector::of_allowed(false, false).status(),
            Status::Affirming
        );
        assert_eq!(
            TrustVector::of_allowed(true, false).status(),
            Status::Warning
        );
        assert_eq!(
            TrustVector::of_allowed(false, true).status(),
            Status::Contraindicated
        );
        assert_eq!(
            TrustVector::of_allowed(true, true).status(),
            Status::Contraindicated
        );
        // AR4SI's tier edges, negative values included.
        for (value, tier) in [
            (-1, Status::None),
            (1, Status::None),
            (2, Status::Affirming),
            (31, Status::Affirming),
            (-2, Status::Affirming),
            (-32, Status::Affirming),
            (32, Status::Warning),
            (95, Status::Warning),
            (-33, Status::Warning),
            (-96, Status::Warning),
            (96, Status::Contraindicated),
            (-97, Status::Contraindicated),
            (i8::MIN, Status::Contraindicated),
        ] {
            let vector = TrustVector {
                sourced_data: value,
                ..TrustVector::default()
            };
            assert_eq!(vector.status(), tier, "{value}");
        }
    }

    #[test]
    fn issue_then_verify() {
        let signer = TokenSigner::generate().unwrap();
        let token = signer.issue(&claims(200)).unwrap();
        assert_eq!(signer.verify(&token, 150).unwrap(), claims(200));
        let header: Value = decode_json(token.split('.').next().unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["jwk"]["crv"], "P-256");
        assert_eq!(
            header["jwk"]["alg"], "ES256",
            "Trustee needs the JWK's algorithm"
        );
    }

    #[test]
    fn expired_tampered_and_foreign_tokens_are_refused() {
        let signer = TokenSigner::generate().unwrap();
        let token = signer.issue(&claims(200)).unwrap();
        assert!(matches!(
            signer.verify(&token, 200),
            Err(TokenError::Expired)
        ));

        // Swap in a payload claiming real, affirmed hardware: the signature no longer matches.
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = claims(200);
        let appraisal = forged.submods.get_mut(PRIMARY_SUBMOD).unwrap();
        appraisal.simulated = false;
        appraisal.status = Status::Affirming;
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let forged_token = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert!(matches!(
            signer.verify(&forged_token, 150),
            Err(TokenError::Signature)
        ));

        let other = TokenSigner::generate().unwrap();
        assert!(matches!(
            other.verify(&token, 150),
            Err(TokenError::Signature)
        ));

        let none_alg = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            parts[1]
        );
        assert!(matches!(
            signer.verify(&none_alg, 150),
            Err(TokenError::Algorithm)
        ));
        assert!(matches!(
            signer.verify("a.b", 150),
            Err(TokenError::Malformed)
        ));
        assert!(matches!(
            signer.verify("a.b.c.d", 150),
            Err(TokenError::Malformed)
        ));
        assert!(matches!(
            signer.verify(&"a".repeat(MAX_TOKEN_LEN + 1), 150),
            Err(TokenError::TooLong)
        ));
    }

    #[test]
    fn signature_is_standard_es256_for_an_independent_verifier() {
        use p256::ecdsa::signature::{Signer, Verifier};

        let signer = TokenSigner::generate().unwrap();
        let token = signer.issue(&claims(200)).unwrap();
        let (input, sig) = token.rsplit_once('.').unwrap();
        let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
        let verifying = signer.key.verifying_key();
        verifying.verify(input.as_bytes(), &sig).unwrap();
        assert!(verifying.verify(b"other input", &sig).is_err());

        // And the other way round: a JWS signed by `p256` verifies here.
        let header = token.split('.').next().unwrap();
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(300)).unwrap());
        let input = format!("{header}.{payload}");
        let sig: Signature = signer.key.sign(input.as_bytes());
        let foreign = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
        assert_eq!(signer.verify(&foreign, 150).unwrap().exp, 300);
    }

    #[test]
    fn key_survives_pem_round_trip() {
        let signer = TokenSigner::generate().unwrap();
        let token = signer.issue(&claims(200)).unwrap();
        let pem = signer.to_pkcs8_pem().unwrap();
        let reloaded = TokenSigner::from_pkcs8_pem(pem.as_str()).unwrap();
        assert_eq!(reloaded.verify(&token, 150).unwrap().tee(), "sample");
        assert!(TokenSigner::from_pkcs8_pem("not a pem").is_err());
    }
}
