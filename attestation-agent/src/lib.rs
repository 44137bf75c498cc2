//! The guest's attestation agent.
//!
//! It gathers evidence from the TEE the guest runs in (SNP through configfs-tsm or
//! `/dev/sev-guest`, TDX through configfs-tsm, or the tee-sim device in sim mode), chosen explicitly
//! and never by silent fallback, and runs the KBS protocol (request, challenge, attestation,
//! response) against a key broker to fetch resources such as image decryption keys. It implements
//! the key-provider trait that `image-rs` asks for keys through.

#![forbid(unsafe_code)]

pub mod attester;
pub mod kbs;
