//! The CAs the guest trusts for registries, their token services and signature stores:
//! Mozilla's roots as `webpki-root-certs` carries them, compiled into the agent and so measured
//! with it.
//!
//! They are handed to the image client explicitly. The guest also writes the same roots as its
//! system store ([`install_system_store`]), because oci-client builds a throwaway default HTTP
//! client whenever it builds one (its `..Default::default()`), and that default loads the system
//! store and panics when there is none. No connection of ours uses that store, and it holds
//! nothing but the measured roots: the initrd has no store of its own, and the host cannot write
//! into guest memory.
//! The key broker is not among these: the KBS client trusts only the measured pin.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tsuba_image_rs::TlsRoots;

/// Where Debian-like systems, and so rustls' platform verifier, keep the system store.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Writing the system store failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the TLS root bundle {path}")]
pub struct TlsRootsError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// The roots for registry and signature-store connections.
pub fn registry_tls_roots() -> TlsRoots {
    TlsRoots::Only(
        webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .map(|der| der.as_ref().to_vec())
            .collect(),
    )
}

/// Writes the compiled-in roots as a PEM bundle at `path` (creating its folder); returns how
/// many.
pub fn install_system_store(path: &Path) -> Result<usize, TlsRootsError> {
    let error = |source| TlsRootsError {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(error)?;
    }
    let roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS;
    let mut file = std::fs::File::create(path).map_err(error)?;
    for cert in roots {
        file.write_all(pem(cert).as_bytes()).map_err(error)?;
    }
    file.sync_all().map_err(error)?;
    Ok(roots.len())
}

fn pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut text = String::with_capacity(body.len() + body.len() / 64 + 64);
    text.push_str("-----BEGIN CERTIFICATE-----\n");
    // Base64 is ASCII, so every 64-byte chunk is a whole str.
    for line in body.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).unwrap_or_default());
        text.push('\n');
    }
    text.push_str("-----END CERTIFICATE-----\n");
    text
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

    #[test]
    fn the_system_store_holds_the_same_roots_as_pem_that_decodes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/ssl/certs/ca-certificates.crt");
        let n = install_system_store(&path).unwrap();
        assert_eq!(n, webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
        let text = std::fs::read_to_string(&path).unwrap();
        let blocks: Vec<&str> = text
            .split("-----BEGIN CERTIFICATE-----\n")
            .skip(1)
            .collect();
        assert_eq!(blocks.len(), n);
        for (block, der) in blocks.iter().zip(webpki_root_certs::TLS_SERVER_ROOT_CERTS) {
            let body: String = block
                .trim_end()
                .strip_suffix("-----END CERTIFICATE-----")
                .unwrap()
                .lines()
                .inspect(|l| assert!(l.len() <= 64))
                .collect();
            assert_eq!(STANDARD.decode(body).unwrap(), der.as_ref());
        }
    }

    #[test]
    fn an_unwritable_place_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let err = install_system_store(&blocker.join("ca.crt")).unwrap_err();
        assert_eq!(err.path, blocker.join("ca.crt"));
    }
}
