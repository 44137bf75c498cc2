//! The simulated Intel SGX/TDX PKI, shaped like Intel's: a self-signed root CA, a PCK platform CA
//! and a TCB signing certificate issued by the root, a PCK certificate (with Intel's SGX
//! extension: PPID, TCB, PCE-ID, FMSPC, SGX type) issued by the platform CA, and a CRL from each
//! CA. All keys are ECDSA P-256 and all signatures ECDSA with SHA-256, as Intel's. Every subject
//! says "SIMULATED".

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use der::asn1::{BitString, OctetString};
use der::oid::ObjectIdentifier;
use der::{Encode, flagset::FlagSet};
use p256::ecdsa::{DerSignature, SigningKey, signature::Signer};
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::crl::{CertificateList, TbsCertList};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};

use crate::snp::CertError;

const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const OID_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const OID_CRL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.20");
const OID_SGX_EXTENSION: &str = "1.2.840.113741.1.13.1";

pub(crate) const ROOT_SUBJECT: &str =
    "CN=SIMULATED Intel SGX Root CA,O=tsuba tee-sim (SIMULATED - not Intel),C=US";
pub(crate) const PLATFORM_CA_SUBJECT: &str =
    "CN=SIMULATED Intel SGX PCK Platform CA,O=tsuba tee-sim (SIMULATED - not Intel),C=US";
pub(crate) const PCK_SUBJECT: &str =
    "CN=SIMULATED Intel SGX PCK Certificate,O=tsuba tee-sim (SIMULATED - not Intel),C=US";
pub(crate) const TCB_SIGNING_SUBJECT: &str =
    "CN=SIMULATED Intel SGX TCB Signing,O=tsuba tee-sim (SIMULATED - not Intel),C=US";

/// How long certificates and CRLs of the simulated PKI are valid.
const VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);

/// The platform values that the PCK certificate carries and the TCB info matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PlatformTcb {
    pub(crate) ppid: [u8; 16],
    pub(crate) cpu_svn: [u8; 16],
    pub(crate) pce_svn: u16,
    pub(crate) pce_id: [u8; 2],
    pub(crate) fmspc: [u8; 6],
}

fn algorithm() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: ECDSA_WITH_SHA256,
        parameters: None,
    }
}

fn ext(id: ObjectIdentifier, critical: bool, value: Vec<u8>) -> Result<Extension, CertError> {
    Ok(Extension {
        extn_id: id,
        critical,
        extn_value: OctetString::new(value)?,
    })
}

fn ca_exts(path_len: Option<u8>) -> Result<Vec<Extension>, CertError> {
    let bc = BasicConstraints {
        ca: true,
        path_len_constraint: path_len,
    };
    let ku = KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign);
    Ok(vec![
        ext(OID_BASIC_CONSTRAINTS, true, bc.to_der()?)?,
        ext(OID_KEY_USAGE, true, ku.to_der()?)?,
    ])
}

fn leaf_exts() -> Result<Vec<Extension>, CertError> {
    let bc = BasicConstraints {
        ca: false,
        path_len_constraint: None,
    };
    let ku: FlagSet<KeyUsages> = KeyUsages::DigitalSignature | KeyUsages::NonRepudiation;
    Ok(vec![
        ext(OID_BASIC_CONSTRAINTS, true, bc.to_der()?)?,
        ext(OID_KEY_USAGE, true, KeyUsage(ku).to_der()?)?,
    ])
}

/// Issue a certificate for `subject_key` signed by `issuer_key`.
fn issue(
    issuer_key: &SigningKey,
    issuer: &str,
    subject: &str,
    subject_key: &p256::ecdsa::VerifyingKey,
    serial: u8,
    extensions: Vec<Extension>,
) -> Result<Vec<u8>, CertError> {
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::from(serial),
        signature: algorithm(),
        issuer: Name::from_str(issuer)?,
        validity: Validity::from_now(VALIDITY)?,
        subject: Name::from_str(subject)?,
        subject_public_key_info: SubjectPublicKeyInfoOwned::from_key(*subject_key)?,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let sig: DerSignature = issuer_key.sign(&tbs.to_der()?);
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: algorithm(),
        signature: BitString::from_bytes(sig.as_bytes())?,
    };
    Ok(cert.to_der()?)
}

pub(crate) fn root_cert(root: &SigningKey) -> Result<Vec<u8>, CertError> {
    issue(
        root,
        ROOT_SUBJECT,
        ROOT_SUBJECT,
        root.verifying_key(),
        1,
        ca_exts(Some(1))?,
    )
}

pub(crate) fn platform_ca_cert(
    root: &SigningKey,
    platform_ca: &SigningKey,
) -> Result<Vec<u8>, CertError> {
    issue(
        root,
        ROOT_SUBJECT,
        PLATFORM_CA_SUBJECT,
        platform_ca.verifying_key(),
        2,
        ca_exts(Some(0))?,
    )
}

pub(crate) fn tcb_signing_cert(
    root: &SigningKey,
    tcb_signing: &SigningKey,
) -> Result<Vec<u8>, CertError> {
    issue(
        root,
        ROOT_SUBJECT,
        TCB_SIGNING_SUBJECT,
        tcb_signing.verifying_key(),
        3,
        leaf_exts()?,
    )
}

pub(crate) fn pck_cert(
    platform_ca: &SigningKey,
    pck: &SigningKey,
    tcb: &PlatformTcb,
) -> Result<Vec<u8>, CertError> {
    let mut exts = leaf_exts()?;
    exts.push(ext(
        ObjectIdentifier::new_unwrap(OID_SGX_EXTENSION),
        false,
        sgx_extension(tcb),
    )?);
    issue(
        platform_ca,
        PLATFORM_CA_SUBJECT,
        PCK_SUBJECT,
        pck.verifying_key(),
        4,
        exts,
    )
}

/// An empty CRL (v2, with a CRL number) issued by `issuer_key`.
pub(crate) fn crl(issuer_key: &SigningKey, issuer: &str) -> Result<Vec<u8>, CertError> {
    let now = SystemTime::now();
    let tbs = TbsCertList {
        version: Version::V2,
        signature: algorithm(),
        issuer: Name::from_str(issuer)?,
        this_update: Time::try_from(now)?,
        next_update: Some(Time::try_from(now + VALIDITY)?),
        revoked_certificates: None,
        crl_extensions: Some(vec![ext(OID_CRL_NUMBER, false, 1u8.to_der()?)?]),
    };
    let sig: DerSignature = issuer_key.sign(&tbs.to_der()?);
    let list = CertificateList {
        tbs_cert_list: tbs,
        signature_algorithm: algorithm(),
        signature: BitString::from_bytes(sig.as_bytes())?,
    };
    Ok(list.to_der()?)
}

/// DER TLV with a definite length.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap_or(0));
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = &bytes[skip..];
        out.push(0x80 | u8::try_from(significant.len()).unwrap_or(0));
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

fn oid_tlv(oid: &str) -> Vec<u8> {
    let oid = ObjectIdentifier::new_unwrap(oid);
    tlv(0x06, oid.as_bytes())
}

fn integer(v: u16) -> Vec<u8> {
    let b = v.to_be_bytes();
    let content: Vec<u8> = match (b[0], b[1]) {
        (0, lo) if lo < 0x80 => vec![lo],
        (0, lo) => vec![0, lo],
        (hi, lo) if hi >= 0x80 => vec![0, hi, lo],
        (hi, lo) => vec![hi, lo],
    };
    tlv(0x02, &content)
}

fn entry(oid: &str, value: Vec<u8>) -> Vec<u8> {
    let mut content = oid_tlv(oid);
    content.extend(value);
    tlv(0x30, &content)
}

/// Intel's SGX extension: SEQUENCE of (OID, value) pairs, the TCB one nesting its components.
fn sgx_extension(tcb: &PlatformTcb) -> Vec<u8> {
    let base = OID_SGX_EXTENSION;
    let mut tcb_content = Vec::new();
    for (i, svn) in tcb.cpu_svn.iter().enumerate() {
        tcb_content.extend(entry(
            &format!("{base}.2.{}", i + 1),
            integer(u16::from(*svn)),
        ));
    }
    tcb_content.extend(entry(&format!("{base}.2.17"), integer(tcb.pce_svn)));
    tcb_content.extend(entry(&format!("{base}.2.18"), tlv(0x04, &tcb.cpu_svn)));
    let mut content = entry(&format!("{base}.1"), tlv(0x04, &tcb.ppid));
    content.extend(entry(&format!("{base}.2"), tlv(0x30, &tcb_content)));
    content.extend(entry(&format!("{base}.3"), tlv(0x04, &tcb.pce_id)));
    content.extend(entry(&format!("{base}.4"), tlv(0x04, &tcb.fmspc)));
    // SGX type: 0 (Standard), as ENUMERATED.
    content.extend(entry(&format!("{base}.5"), tlv(0x0A, &[0])));
    tlv(0x30, &content)
}

/// PEM text of DER certificates, in order.
pub(crate) fn pem_chain(ders: &[&[u8]]) -> Result<String, CertError> {
    let mut out = String::new();
    for der in ders {
        out.push_str(
            &der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, der)
                .map_err(der::Error::from)?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_helpers() {
        assert_eq!(integer(11), vec![2, 1, 11]);
        assert_eq!(integer(0x80), vec![2, 2, 0, 0x80]);
        assert_eq!(integer(0x1234), vec![2, 2, 0x12, 0x34]);
        assert_eq!(integer(0x8001), vec![2, 3, 0, 0x80, 1]);
        let long = tlv(0x04, &[0; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2C]);
    }
}
