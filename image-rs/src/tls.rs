//! Which certificate authorities the image client's HTTPS connections trust: the registry, its
//! token service, and signature lookaside stores all use the same [`TlsRoots`].
//!
//! On the host the system store is right. In the guest there is no system store, and whatever
//! the platform verifier would find there was written by someone: the guest passes the roots
//! measured with its agent explicitly, and a client that cannot be built with them is an error,
//! never a client with other roots.

use std::fmt;

/// The roots HTTPS connections are checked against.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum TlsRoots {
    /// The platform's store (rustls-platform-verifier over the system certificates).
    #[default]
    System,
    /// Exactly these DER certificates, and no others.
    Only(Vec<Vec<u8>>),
}

impl fmt::Debug for TlsRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::System => f.write_str("System"),
            Self::Only(certs) => write!(f, "Only({} certificates)", certs.len()),
        }
    }
}

/// The roots cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsRootsError {
    /// An explicit list with nothing in it would fall back to the platform's roots.
    #[error("the explicit TLS root list is empty: give at least one CA certificate")]
    Empty,
    /// A certificate does not parse, or the HTTP client cannot be built.
    #[error("cannot build an HTTPS client with these TLS roots")]
    Client(#[source] reqwest::Error),
}

impl TlsRoots {
    /// `builder` trusting these roots.
    pub(crate) fn apply(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, TlsRootsError> {
        match self {
            Self::System => Ok(builder),
            Self::Only(certs) if certs.is_empty() => Err(TlsRootsError::Empty),
            Self::Only(certs) => {
                let certs = certs
                    .iter()
                    .map(|der| reqwest::Certificate::from_der(der))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(TlsRootsError::Client)?;
                Ok(builder.tls_certs_only(certs))
            }
        }
    }

    /// The same roots for oci-client's configuration (`tls_certs_only`, which it leaves unused
    /// when empty: [`TlsRoots::Only`] refuses to be empty for that reason).
    pub(crate) fn oci_certs_only(
        &self,
    ) -> Result<Vec<oci_client::client::Certificate>, TlsRootsError> {
        match self {
            Self::System => Ok(Vec::new()),
            Self::Only(certs) if certs.is_empty() => Err(TlsRootsError::Empty),
            Self::Only(certs) => Ok(certs
                .iter()
                .map(|der| oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Der,
                    data: der.clone(),
                })
                .collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_explicit_list_is_refused_rather_than_read_as_system() {
        let empty = TlsRoots::Only(Vec::new());
        assert!(matches!(
            empty.apply(reqwest::Client::builder()),
            Err(TlsRootsError::Empty)
        ));
        assert!(matches!(empty.oci_certs_only(), Err(TlsRootsError::Empty)));
    }

    #[test]
    fn a_certificate_that_does_not_parse_is_an_error() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let roots = TlsRoots::Only(vec![b"not a certificate".to_vec()]);
        let client = roots
            .apply(reqwest::Client::builder())
            .and_then(|b| b.build().map_err(TlsRootsError::Client));
        assert!(matches!(client, Err(TlsRootsError::Client(_))));
    }

    #[test]
    fn debug_shows_the_count_not_the_bytes() {
        let roots = TlsRoots::Only(vec![vec![1, 2, 3], vec![4]]);
        assert_eq!(format!("{roots:?}"), "Only(2 certificates)");
    }
}
