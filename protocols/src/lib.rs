//! Wire definitions shared by host and guest.
//!
//! The agent API (ttrpc over vsock or virtio-serial), the sim-device protocol between tee-sim and
//! its guest client, the binary evidence formats (SNP attestation report, TDX quote) with their
//! parsed claims, and JOSE (the JWE of the KBS protocol and of ocicrypt). A leaf crate: it does no
//! I/O.

#![forbid(unsafe_code)]

pub mod agent;
pub mod evidence;
pub mod guest_image;
pub mod jose;
pub mod kbs_binding;
pub mod simdev;
