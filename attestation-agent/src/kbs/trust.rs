//! How the client knows it talks to the real broker: TLS, authenticated by trust anchors the
//! caller names (a CA, or the SHA-256 of a public key pinned in measured configuration). There are
//! no built-in roots, and plain HTTP exists only as an explicitly insecure choice.
//!
//! Without this the broker's answers could come from anyone: the JWE they are sealed in is
//! encrypted to a key the guest sends in the clear, so an impostor can forge every answer (the
//! signature policy, the registry credentials) as easily as the broker can.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

/// The SHA-256 of a certificate's DER SubjectPublicKeyInfo: the broker's own key, or a CA's key
/// that issued the broker's certificate (then the broker must send that CA in its chain).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpkiPin([u8; 32]);

impl SpkiPin {
    /// Text form prefix: `sha256:<64 hex digits>`.
    const PREFIX: &'static str = "sha256:";

    /// Parses `sha256:<64 lowercase or uppercase hex digits>`.
    pub fn parse(text: &str) -> Result<Self, TrustError> {
        let hex = text
            .strip_prefix(Self::PREFIX)
            .ok_or(TrustError::PinSyntax)?;
        let bytes = hex::decode(hex).map_err(|_| TrustError::PinSyntax)?;
        let digest = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| TrustError::PinSyntax)?;
        Ok(Self(digest))
    }

    /// The pin of a certificate's public key (DER certificate).
    pub fn of_certificate(der: &[u8]) -> Result<Self, TrustError> {
        let cert = CertificateDer::from(der);
        let anchor =
            webpki::anchor_from_trusted_cert(&cert).map_err(|_| TrustError::BadCertificate)?;
        let spki = webpki::spki_for_anchor(&anchor);
        Ok(Self(Sha256::digest(spki.as_ref()).into()))
    }

    /// The pin of the first certificate in a PEM file (the CA or the broker's certificate).
    pub fn of_pem_certificate(pem: &[u8]) -> Result<Self, TrustError> {
        let cert = CertificateDer::pem_slice_iter(pem)
            .next()
            .ok_or(TrustError::NoCertificate)?
            .map_err(|_| TrustError::NoCertificate)?;
        Self::of_certificate(&cert)
    }
}

impl fmt::Display for SpkiPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, hex::encode(self.0))
    }
}

impl fmt::Debug for SpkiPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What authenticates the broker.
#[derive(Clone, PartialEq, Eq)]
pub enum BrokerTrust {
    /// HTTPS; the broker's certificate must chain to one of these CA certificates (DER) and name
    /// the host of the URL. No other root is trusted.
    CaCertificates(Vec<CertificateDer<'static>>),
    /// HTTPS; the broker's certificate carries this key, or the broker sends a CA certificate
    /// with this key that issued its certificate for the host of the URL.
    Pin(SpkiPin),
    /// Plain `http://`: the answers are not authenticated at all, so anyone on the path can
    /// answer as the broker. Only for tests and development on loopback or in simulation.
    InsecurePlainHttp,
}

impl BrokerTrust {
    /// Trust the CA certificates of a PEM bundle.
    pub fn ca_pem(pem: &[u8]) -> Result<Self, TrustError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| TrustError::NoCertificate)?;
        if certs.is_empty() {
            return Err(TrustError::NoCertificate);
        }
        Ok(Self::CaCertificates(certs))
    }

    /// The rustls configuration under this trust (for plain HTTP: one that trusts nothing, so
    /// no HTTPS request can succeed either).
    pub(crate) fn tls_config(&self) -> Result<rustls::ClientConfig, TrustError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(TrustError::Tls)?;
        let verifier: Arc<dyn ServerCertVerifier> = match self {
            Self::InsecurePlainHttp => {
                return Ok(builder
                    .with_root_certificates(RootCertStore::empty())
                    .with_no_client_auth());
            }
            Self::CaCertificates(certs) => {
                let mut roots = RootCertStore::empty();
                for cert in certs {
                    roots
                        .add(cert.clone())
                        .map_err(|_| TrustError::BadCertificate)?;
                }
                webpki_verifier(roots, &provider)?
            }
            Self::Pin(pin) => Arc::new(PinnedVerifier {
                pin: *pin,
                provider: Arc::clone(&provider),
            }),
        };
        Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth())
    }
}

impl fmt::Debug for BrokerTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CaCertificates(certs) => {
                write!(f, "CaCertificates({} certificates)", certs.len())
            }
            Self::Pin(pin) => write!(f, "Pin({pin})"),
            Self::InsecurePlainHttp => f.write_str("InsecurePlainHttp"),
        }
    }
}

/// A trust setting that cannot be used.
#[derive(Debug, Error)]
pub enum TrustError {
    /// A pin is not `sha256:` followed by 64 hex digits.
    #[error("a broker key pin must be sha256: followed by 64 hex digits")]
    PinSyntax,
    /// The PEM holds no certificate.
    #[error("no PEM certificate found")]
    NoCertificate,
    /// A certificate does not parse as X.509.
    #[error("a certificate does not parse as X.509")]
    BadCertificate,
    /// rustls refused the configuration.
    #[error("the TLS configuration is invalid")]
    Tls(#[source] rustls::Error),
    /// The certificate verifier could not be built.
    #[error("the certificate verifier cannot be built")]
    Verifier(#[source] rustls::client::VerifierBuilderError),
}

/// The broker presented no certificate whose key is the pinned one.
#[derive(Error)]
#[error("the broker's certificate chain has no key matching the measured pin {0}")]
pub struct PinMismatch(SpkiPin);

// rustls shows a verifier's own error with `Debug`: make that the sentence the host reads.
impl fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn webpki_verifier(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, TrustError> {
    let verifier: Arc<dyn ServerCertVerifier> =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
            .build()
            .map_err(TrustError::Verifier)?;
    Ok(verifier)
}

/// Accepts the broker when its own key is the pin (the handshake signature proves it holds the
/// key), or when a certificate it sends has the pinned key and issued the broker's certificate
/// for the URL's host (checked as any CA chain, with that one certificate as the only root).
#[derive(Debug)]
struct PinnedVerifier {
    pin: SpkiPin,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if SpkiPin::of_certificate(end_entity).ok() == Some(self.pin) {
            return Ok(ServerCertVerified::assertion());
        }
        for (i, ca) in intermediates.iter().enumerate() {
            if SpkiPin::of_certificate(ca).ok() != Some(self.pin) {
                continue;
            }
            let mut roots = RootCertStore::empty();
            roots
                .add(ca.clone().into_owned())
                .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
            let verifier = webpki_verifier(roots, &self.provider).map_err(|e| {
                rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
            })?;
            let rest: Vec<CertificateDer<'_>> = intermediates
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, c)| c.clone())
                .collect();
            return verifier.verify_server_cert(end_entity, &rest, server_name, ocsp_response, now);
        }
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(PinMismatch(self.pin))),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_only_in_their_one_form() {
        let hex = "ab".repeat(32);
        let pin = SpkiPin::parse(&format!("sha256:{hex}")).unwrap();
        assert_eq!(pin.to_string(), format!("sha256:{hex}"));
        assert_eq!(
            SpkiPin::parse(&format!("sha256:{}", hex.to_uppercase())).unwrap(),
            pin
        );
        for bad in [
            hex.clone(),
            format!("sha384:{hex}"),
            format!("sha256:{}", &hex[2..]),
            format!("sha256:{hex}00"),
            format!("sha256:{}zz", &hex[2..]),
            "sha256:".to_owned(),
        ] {
            assert!(
                matches!(SpkiPin::parse(&bad), Err(TrustError::PinSyntax)),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_ca_bundle_without_certificates_is_refused() {
        assert!(matches!(
            BrokerTrust::ca_pem(b"not a pem"),
            Err(TrustError::NoCertificate)
        ));
        assert!(matches!(
            SpkiPin::of_pem_certificate(b""),
            Err(TrustError::NoCertificate)
        ));
        assert!(matches!(
            SpkiPin::of_certificate(b"\x30\x03\x02\x01\x01"),
            Err(TrustError::BadCertificate)
        ));
    }
}
