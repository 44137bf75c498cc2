//! X.509 certificates of the simulated AMD key hierarchy, shaped like AMD's: ARK (self-signed)
//! and ASK are RSA-4096 with RSA-PSS/SHA-384 signatures, the VCEK is an ECDSA P-384 key signed
//! by the ASK and carries AMD's extensions (TCB SPLs, product name, hwID). Every subject says
//! "SIMULATED" so no one can mistake these for AMD's.

use std::str::FromStr;
use std::time::Duration;

use der::asn1::{BitString, Ia5String, OctetString};
use der::{Encode, oid::ObjectIdentifier};
use rsa::pss::SigningKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha384;
use thiserror::Error;
use tsuba_protocols::evidence::TcbParts;
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::BasicConstraints;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{DynSignatureAlgorithmIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::time::Validity;

/// Product name in the VCEK (the sim reports CPUID family 0x19 model 0x11, a Genoa part).
pub(crate) const PRODUCT_NAME: &str = "Genoa";

const OID_STRUCT_VERSION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.1");
const OID_PRODUCT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.2");
const OID_BL_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.1");
const OID_TEE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.2");
const OID_SNP_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.3");
const OID_UCODE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.8");
const OID_HW_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4");
const OID_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");

const ARK_SUBJECT: &str =
    "CN=SIMULATED ARK-Genoa,O=tsuba tee-sim (SIMULATED - not AMD),OU=Engineering,C=US";
const ASK_SUBJECT: &str =
    "CN=SIMULATED SEV-Genoa,O=tsuba tee-sim (SIMULATED - not AMD),OU=Engineering,C=US";
const VCEK_SUBJECT: &str =
    "CN=SIMULATED SEV-VCEK,O=tsuba tee-sim (SIMULATED - not AMD),OU=Engineering,C=US";

/// Errors from building a certificate.
#[derive(Debug, Error)]
pub enum CertError {
    /// DER encoding failed.
    #[error("der encoding")]
    Der(#[from] der::Error),
    /// The public key could not be encoded.
    #[error("public key encoding")]
    PublicKey(#[from] x509_cert::spki::Error),
    /// The RSA signature failed.
    #[error("rsa-pss signing")]
    Sign(#[from] rsa::signature::Error),
}

/// The simulated ARK certificate, self-signed.
pub(crate) fn ark_cert(ark: &RsaPrivateKey) -> Result<Certificate, CertError> {
    let subject = Name::from_str(ARK_SUBJECT)?;
    let spki = SubjectPublicKeyInfoOwned::from_key(RsaPublicKey::from(ark))?;
    let ca = ca_extensions()?;
    sign(ark, &subject, subject.clone(), spki, 1, ca)
}

/// The simulated ASK certificate, signed by the ARK.
pub(crate) fn ask_cert(ark: &RsaPrivateKey, ask: &RsaPrivateKey) -> Result<Certificate, CertError> {
    let issuer = Name::from_str(ARK_SUBJECT)?;
    let spki = SubjectPublicKeyInfoOwned::from_key(RsaPublicKey::from(ask))?;
    let ca = ca_extensions()?;
    sign(ark, &issuer, Name::from_str(ASK_SUBJECT)?, spki, 2, ca)
}

/// The simulated VCEK certificate for one TCB, signed by the ASK.
pub(crate) fn vcek_cert(
    ask: &RsaPrivateKey,
    vcek: &p384::ecdsa::VerifyingKey,
    tcb: TcbParts,
    hw_id: &[u8; 64],
) -> Result<Certificate, CertError> {
    let issuer = Name::from_str(ASK_SUBJECT)?;
    let spki = SubjectPublicKeyInfoOwned::from_key(*vcek)?;
    let int = |v: u8| v.to_der();
    let exts = vec![
        ext(OID_STRUCT_VERSION, int(1)?)?,
        ext(OID_PRODUCT_NAME, Ia5String::new(PRODUCT_NAME)?.to_der()?)?,
        ext(OID_BL_SPL, int(tcb.bootloader)?)?,
        ext(OID_TEE_SPL, int(tcb.tee)?)?,
        ext(OID_SNP_SPL, int(tcb.snp)?)?,
        ext(OID_UCODE_SPL, int(tcb.microcode)?)?,
        // AMD puts the raw 64 hwID bytes in the extension value, not a nested OCTET STRING.
        ext(OID_HW_ID, hw_id.to_vec())?,
    ];
    sign(ask, &issuer, Name::from_str(VCEK_SUBJECT)?, spki, 0, exts)
}

fn ca_extensions() -> Result<Vec<Extension>, CertError> {
    let bc = BasicConstraints {
        ca: true,
        path_len_constraint: None,
    };
    Ok(vec![Extension {
        extn_id: OID_BASIC_CONSTRAINTS,
        critical: true,
        extn_value: OctetString::new(bc.to_der()?)?,
    }])
}

fn ext(id: ObjectIdentifier, value: Vec<u8>) -> Result<Extension, CertError> {
    Ok(Extension {
        extn_id: id,
        critical: false,
        extn_value: OctetString::new(value)?,
    })
}

fn sign(
    signer: &RsaPrivateKey,
    issuer: &Name,
    subject: Name,
    spki: SubjectPublicKeyInfoOwned,
    serial: u8,
    extensions: Vec<Extension>,
) -> Result<Certificate, CertError> {
    let key = SigningKey::<Sha384>::new(signer.clone());
    let algorithm = key.signature_algorithm_identifier()?;
    // Twenty years is inside UTCTime's range, which ends in 2049.
    let validity = Validity::from_now(Duration::from_secs(20 * 365 * 24 * 3600))?;
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::from(serial),
        signature: algorithm.clone(),
        issuer: issuer.clone(),
        validity,
        subject,
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let message = tbs.to_der()?;
    let signature = key.try_sign_with_rng(&mut rand_core::OsRng, &message)?;
    Ok(Certificate {
        tbs_certificate: tbs,
        signature_algorithm: algorithm,
        signature: BitString::from_bytes(&signature.to_vec())?,
    })
}

/// DER bytes of a certificate.
pub(crate) fn to_der(cert: &Certificate) -> Result<Vec<u8>, CertError> {
    Ok(cert.to_der()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_values_match_amds_encoding() {
        // Values taken from a real Milan VCEK: INTEGER 0x73 and IA5String "Milan-B0".
        assert_eq!(0x73u8.to_der().unwrap(), vec![0x02, 0x01, 0x73]);
        // A value with the top bit set needs a leading zero to stay positive.
        assert_eq!(0xC8u8.to_der().unwrap(), vec![0x02, 0x02, 0x00, 0xC8]);
        assert_eq!(
            Ia5String::new("Milan-B0").unwrap().to_der().unwrap(),
            hex::decode("16084D696C616E2D4230").unwrap()
        );
    }
}
