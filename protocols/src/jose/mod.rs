//! JOSE, once for the whole project: the JWE (RFC 7516) that a key broker encrypts resources in
//! and the guest opens, and that ocicrypt wraps layer keys in; the keys these go to, read from PEM
//! or a JWK; the Concat KDF of ECDH-ES (RFC 7518). The broker, the guest's KBS client and image-rs
//! all use this one implementation.

mod jwe;
mod kdf;
mod keys;

pub use jwe::{
    FlattenedJwe, JweError, KeyWrap, MAX_JWE_LEN, MAX_RECIPIENTS, decrypt, encrypt_flattened,
    encrypt_general,
};
pub use kdf::concat_kdf;
pub use keys::{KeyError, PrivateKey, PublicKey, RSA_TEE_KEY_BITS};
