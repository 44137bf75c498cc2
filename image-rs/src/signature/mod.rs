//! Image signatures: the payload that signers sign, the `signedIdentity` rules that say which
//! identity a signature may claim, and the formats that carry them (GPG simple signing, cosign).
//!
//! Every signature format ends in the same check: the cryptographic signature over the
//! payload bytes verifies with a key from the policy, then the payload is parsed strictly and
//! its manifest digest and identity are matched against the image that was resolved
//! ([`SignedPayload::check_claims`]).

mod cosign_key;
mod identity;
mod lookaside;
mod payload;
mod sigstore;
mod simple_signing;

pub use cosign_key::{CosignKeyError, CosignPrivateKey, CosignPublicKey, KdfStrength};
pub use identity::{DockerReference, IdentityError, SignedIdentity};
pub use lookaside::{
    Lookaside, LookasideConfig, LookasideError, LookasideNamespace, MAX_SIGNATURE_BYTES,
    MAX_SIGNATURES,
};
pub use payload::{MAX_PAYLOAD_BYTES, PayloadError, PayloadKind, SignedPayload};
pub use sigstore::{
    Rejections, SIGNATURE_ANNOTATION, SIGNATURE_MEDIA_TYPE, SignatureRejection, SignedImage,
    SigstoreError, attachment_tag, policy_public_key, sign_image, verify_sigstore_signed,
};
pub use simple_signing::{
    GpgKeyring, KeyringError, MAX_KEYRING_BYTES, SignatureFailure, SimpleSigningError,
    VerifiedSignature, open_signature, verify_simple_signing,
};
