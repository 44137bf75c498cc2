//! Confidential container images, handled inside the guest.
//!
//! Pulls images from a registry with every digest checked, enforces the containers-policy.json
//! signature policy before any layer is fetched, decrypts ocicrypt-encrypted layers (keys obtained
//! through a key-provider trait, never from the host) and unpacks them safely into a rootfs in guest
//! memory, so the host never holds workload plaintext.

#![forbid(unsafe_code)]

mod digest;
pub mod ocicrypt;
mod unpack;

pub use digest::{Digest, DigestError};
pub use unpack::{
    Compression, DeviceNodes, LayerStats, Ownership, RootfsError, UnpackError, UnpackOptions,
    unpack_layer, unpack_layer_sniffed,
};
