//! The guest's TLS trust roots, installed where TLS libraries look for the system's.
//!
//! The initrd has no CA store, and the registry client (oci-client over reqwest's platform
//! verifier) cannot even be built without one. The agent carries Mozilla's roots
//! (`webpki-root-certs`), so they are measured with the agent, and writes them as a PEM bundle at
//! the path the platform verifier probes first on Debian-like systems.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use thiserror::Error;

/// Where the bundle goes in the guest.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Writing the bundle failed.
#[derive(Debug, Error)]
#[error("cannot write the TLS root bundle {path}")]
pub struct TlsRootsError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// Writes the built-in roots as PEM to `path` (creating its folder); returns how many.
pub fn install_tls_roots(path: &Path) -> Result<usize, TlsRootsError> {
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
    fn the_bundle_holds_every_root_as_pem_that_decodes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/ssl/certs/ca-certificates.crt");
        let n = install_tls_roots(&path).unwrap();
        assert!(n > 50, "Mozilla's store has well over 50 roots, got {n}");
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
        let err = install_tls_roots(&blocker.join("ca.crt")).unwrap_err();
        assert_eq!(err.path, blocker.join("ca.crt"));
    }
}
