//! The CAs the guest trusts for registries, their token services and signature stores:
//! Mozilla's roots as `webpki-root-certs` carries them, compiled into the agent and so measured
//! with it.
//!
//! They are handed to the image client explicitly. The guest has no system store and writes
//! none: a store on disk is one more thing whose origin would have to be trusted, and a client
//! that looked for one and fell back to other roots when it was missing would trust what it found.
//! The key broker is not among these: the KBS client trusts only the measured pin.

use tsuba_image_rs::TlsRoots;

/// The roots for registry and signature-store connections.
pub fn registry_tls_roots() -> TlsRoots {
    TlsRoots::Only(
        webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .map(|der| der.as_ref().to_vec())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roots_are_mozillas_set_exactly() {
        let TlsRoots::Only(roots) = registry_tls_roots() else {
            panic!("the guest must not use the platform's roots");
        };
        assert!(roots.len() > 50, "Mozilla's store has well over 50 roots");
        assert_eq!(roots.len(), webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
        for (root, der) in roots.iter().zip(webpki_root_certs::TLS_SERVER_ROOT_CERTS) {
            assert_eq!(root.as_slice(), der.as_ref());
        }
    }
}
