//! The tsuba key broker service.
//!
//! Speaks the Confidential Containers KBS protocol v0.4.0 (auth, attest, resource) byte-compatibly
//! with Trustee's broker and guest-components' client. It verifies SNP, TDX and (only when
//! explicitly enabled) simulated evidence, appraises it against reference values with a Rego
//! policy, and releases resources encrypted to the attested guest's ephemeral key.

#![forbid(unsafe_code)]
