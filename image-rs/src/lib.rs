//! Confidential container images, handled inside the guest.
//!
//! Pulls images from a registry with every digest checked, enforces the containers-policy.json
//! signature policy before any layer is fetched, decrypts ocicrypt-encrypted layers (keys obtained
//! through a key-provider trait, never from the host) and unpacks them safely into a rootfs in guest
//! memory, so the host never holds workload plaintext.

#![forbid(unsafe_code)]

mod copy;
mod credential_guard;
mod digest;
mod image;
mod layout;
pub mod oci;
pub mod ocicrypt;
mod policy;
mod pull;
pub mod signature;
mod tls;
mod unpack;

pub use copy::CopyError;
pub use digest::{Digest, DigestError};
pub use image::{
    ImageError, ImageStats, apply_layer, decrypt_layout, encrypt_layout, layer_key,
    layer_plaintext, unpack_from_layout,
};
pub use layout::{BlobWriter, LayoutError, OciLayout};
pub use policy::{Policy, PolicyError, Requirement};
pub use pull::{
    BlobSink, Credentials, ImageVerifier, Progress, ProgressEvent, PullError, Registry,
    RegistryOptions, ResolvedImage, VerifyFuture, media_type_of,
};
pub use signature::SignedIdentity;
pub use tls::{TlsRoots, TlsRootsError};
pub use unpack::{
    Compression, DeviceNodes, LayerStats, Ownership, RootfsError, UnpackError, UnpackOptions,
    unpack_layer, unpack_layer_sniffed,
};
