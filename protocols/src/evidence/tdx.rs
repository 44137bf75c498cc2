//! The Intel TDX DCAP quote, versions 4 and 5 (Intel "TDX DCAP Quoting Library API", appendix
//! "Quote format"), all integers little-endian.
//!
//! Layout: a 48-byte header; in v5 a body descriptor (type u16, size u32); the TD report body
//! (TDX 1.0: 584 bytes, TDX 1.5: 648 bytes); a u32 length and the signature data. The signature
//! data holds the attestation key's ECDSA P-256 signature over header and body, the attestation
//! key, and certification data of type 6: the QE report, its signature by the PCK, the QE
//! authentication data and the inner certification data (type 5: the PCK chain as PEM).
//!
//! Parsing bounds every length by the input; it does not verify any signature. A verifier checks
//! signatures over the original bytes (`raw[..quote.signed_len()]` and the QE report bytes).

use thiserror::Error;

use super::wire::{Reader, Writer};

/// Largest quote accepted; real quotes with a PEM PCK chain are about 5 KiB.
pub const TDX_QUOTE_MAX_LEN: usize = 64 * 1024;
/// Length of the quote header.
pub const TDX_HEADER_LEN: usize = 48;
/// Length of a TDX 1.0 TD report body.
pub const TD_REPORT10_LEN: usize = 584;
/// Length of a TDX 1.5 TD report body.
pub const TD_REPORT15_LEN: usize = 648;
/// Length of an SGX enclave report (the QE report).
pub const ENCLAVE_REPORT_LEN: usize = 384;
/// TEE type of a TDX quote.
pub const TEE_TYPE_TDX: u32 = 0x81;
/// Attestation key type ECDSA P-256 with SHA-256.
pub const ATTESTATION_KEY_ECDSA_P256: u16 = 2;
/// Certification data type: QE report certification data.
pub const CERT_TYPE_QE_REPORT: u16 = 6;
/// Certification data type: PCK leaf, intermediate and root certificates, PEM.
pub const CERT_TYPE_PCK_CHAIN: u16 = 5;
/// Intel's QE vendor id.
pub const INTEL_QE_VENDOR_ID: [u8; 16] = [
    0x93, 0x9A, 0x72, 0x33, 0xF7, 0x9C, 0x4C, 0xA9, 0x94, 0x0A, 0x0D, 0xB3, 0x95, 0x7F, 0x06, 0x07,
];

const BODY_TYPE_TD10: u16 = 2;
const BODY_TYPE_TD15: u16 = 3;

/// Errors from parsing or writing a TDX quote.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TdxQuoteError {
    /// The input ended inside the named structure.
    #[error("tdx quote truncated in {0}")]
    Truncated(&'static str),
    /// The input is larger than [`TDX_QUOTE_MAX_LEN`].
    #[error("tdx quote of {0} bytes exceeds the limit")]
    Oversized(usize),
    /// Non-zero bytes follow the signature data, or a length field leaves bytes unaccounted for.
    #[error("{0} unexpected trailing bytes in tdx quote")]
    TrailingBytes(usize),
    /// Not quote version 4 or 5.
    #[error("unsupported tdx quote version {0}")]
    UnsupportedVersion(u16),
    /// Not a TDX quote (e.g. an SGX one).
    #[error("unsupported tee type {0:#x}")]
    UnsupportedTeeType(u32),
    /// A v5 body type other than TDX 1.0 or 1.5.
    #[error("unsupported quote body type {0}")]
    UnsupportedBodyType(u16),
    /// A v5 body size that does not match its type.
    #[error("quote body size {size} does not match body type {body_type}")]
    BodySize {
        /// Body type.
        body_type: u16,
        /// Declared size.
        size: u32,
    },
    /// The outer certification data is not QE report certification data.
    #[error("unsupported certification data type {0}")]
    UnsupportedCertType(u16),
    /// A TDX 1.5 body cannot be written in a v4 quote.
    #[error("a tdx 1.5 report body needs quote version 5")]
    BodyNeedsV5,
    /// A variable-length field is too long for its length prefix.
    #[error("{0} is too long to encode")]
    FieldTooLong(&'static str),
}

/// Quote format versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TdxQuoteVersion {
    /// Version 4: the body is always a TDX 1.0 report.
    V4,
    /// Version 5: a typed body (TDX 1.0 or 1.5).
    V5,
}

impl TdxQuoteVersion {
    /// The version number in the header.
    pub fn number(self) -> u16 {
        match self {
            Self::V4 => 4,
            Self::V5 => 5,
        }
    }
}

/// The quote header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuoteHeader {
    /// Quote version.
    pub version: TdxQuoteVersion,
    /// Attestation key type (2 = ECDSA P-256).
    pub attestation_key_type: u16,
    /// TEE type (0x81 = TDX).
    pub tee_type: u32,
    /// Security version of the quoting enclave.
    pub qe_svn: u16,
    /// Security version of the provisioning certification enclave.
    pub pce_svn: u16,
    /// Vendor of the quoting enclave.
    pub qe_vendor_id: [u8; 16],
    /// Custom data; Intel's QE puts the QE id in its first 16 bytes.
    pub user_data: [u8; 20],
}

/// Fields added by TDX 1.5 to the TD report body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdReport15Ext {
    /// Second TEE TCB SVN.
    pub tee_tcb_svn2: [u8; 16],
    /// Measurement of the service TDs bound to this TD.
    pub mr_servicetd: [u8; 48],
}

/// The TD report body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdReport {
    /// TEE TCB SVN of the TDX module.
    pub tee_tcb_svn: [u8; 16],
    /// Measurement of the TDX module.
    pub mr_seam: [u8; 48],
    /// Signer of the TDX module (zero for Intel's).
    pub mr_signer_seam: [u8; 48],
    /// Attributes of the TDX module.
    pub seam_attributes: [u8; 8],
    /// TD attributes (bit 0: debug).
    pub td_attributes: [u8; 8],
    /// Extended features available to the TD.
    pub xfam: [u8; 8],
    /// Measurement of the initial TD contents (firmware).
    pub mr_td: [u8; 48],
    /// Software-defined config id (tsuba: the initdata digest).
    pub mr_config_id: [u8; 48],
    /// Software-defined owner id.
    pub mr_owner: [u8; 48],
    /// Software-defined owner configuration.
    pub mr_owner_config: [u8; 48],
    /// Runtime measurement registers 0 to 3.
    pub rtmr: [[u8; 48]; 4],
    /// The TD's 64 bytes of data.
    pub report_data: [u8; 64],
    /// TDX 1.5 fields (v5 quotes with body type 3 only).
    pub v15: Option<TdReport15Ext>,
}

impl TdReport {
    /// TD attribute bit 0: the TD is debuggable (no confidentiality).
    pub fn debug(&self) -> bool {
        self.td_attributes[0] & 1 != 0
    }

    /// Wire length of this body.
    pub fn len(&self) -> usize {
        if self.v15.is_some() {
            TD_REPORT15_LEN
        } else {
            TD_REPORT10_LEN
        }
    }

    /// Always false: a report body has a fixed, non-zero length.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// An SGX enclave report (here: the quoting enclave's), kept whole so it re-serialises exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnclaveReport {
    /// CPU security version.
    pub cpu_svn: [u8; 16],
    /// MISCSELECT.
    pub misc_select: u32,
    /// Reserved (offset 20).
    pub reserved1: [u8; 28],
    /// Enclave attributes.
    pub attributes: [u8; 16],
    /// MRENCLAVE.
    pub mr_enclave: [u8; 32],
    /// Reserved (offset 96).
    pub reserved2: [u8; 32],
    /// MRSIGNER.
    pub mr_signer: [u8; 32],
    /// Reserved (offset 160).
    pub reserved3: [u8; 96],
    /// ISV product id.
    pub isv_prod_id: u16,
    /// ISV security version.
    pub isv_svn: u16,
    /// Reserved (offset 260).
    pub reserved4: [u8; 60],
    /// Report data: for the QE, SHA-256(attestation key || QE auth data) then 32 zero bytes.
    pub report_data: [u8; 64],
}

impl EnclaveReport {
    /// Parse the 384-byte structure.
    pub fn parse(raw: &[u8]) -> Result<Self, TdxQuoteError> {
        if raw.len() != ENCLAVE_REPORT_LEN {
            return Err(TdxQuoteError::Truncated("enclave report"));
        }
        let mut r = Reader::new(raw);
        read_enclave_report(&mut r).ok_or(TdxQuoteError::Truncated("enclave report"))
    }

    /// The 384-byte wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(ENCLAVE_REPORT_LEN);
        self.write(&mut w);
        w.into_vec()
    }

    fn write(&self, w: &mut Writer) {
        w.bytes(&self.cpu_svn)
            .u32(self.misc_select)
            .bytes(&self.reserved1)
            .bytes(&self.attributes)
            .bytes(&self.mr_enclave)
            .bytes(&self.reserved2)
            .bytes(&self.mr_signer)
            .bytes(&self.reserved3)
            .u16(self.isv_prod_id)
            .u16(self.isv_svn)
            .bytes(&self.reserved4)
            .bytes(&self.report_data);
    }
}

/// Certification data: a type and an opaque body (for type 5, the PEM PCK chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificationData {
    /// Certification data type.
    pub cert_type: u16,
    /// The body.
    pub data: Vec<u8>,
}

/// QE report certification data (certification data type 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QeReportCertData {
    /// The quoting enclave's report.
    pub qe_report: EnclaveReport,
    /// ECDSA P-256 signature (r || s, big-endian) of the QE report by the PCK.
    pub qe_report_signature: [u8; 64],
    /// QE authentication data, hashed into the QE report's report data.
    pub qe_auth_data: Vec<u8>,
    /// Inner certification data (type 5 in practice).
    pub certification: CertificationData,
}

/// The quote's signature data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteSignature {
    /// ECDSA P-256 signature (r || s, big-endian) of header and body by the attestation key.
    pub signature: [u8; 64],
    /// The attestation public key (x || y, big-endian).
    pub attestation_key: [u8; 64],
    /// QE report certification data.
    pub qe: QeReportCertData,
}

impl QuoteSignature {
    /// The PCK certificate chain (PEM) when the inner certification data is of type 5.
    pub fn pck_chain_pem(&self) -> Option<&[u8]> {
        (self.qe.certification.cert_type == CERT_TYPE_PCK_CHAIN)
            .then_some(self.qe.certification.data.as_slice())
    }
}

/// A parsed TDX quote (v4 or v5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxQuote {
    /// Header.
    pub header: QuoteHeader,
    /// TD report body.
    pub body: TdReport,
    /// Signature data.
    pub signature: QuoteSignature,
}

impl TdxQuote {
    /// Parse a whole quote. Zero padding after the signature data is ignored (real quotes come
    /// in fixed-size buffers); any other trailing byte is an error.
    pub fn parse(raw: &[u8]) -> Result<Self, TdxQuoteError> {
        if raw.len() > TDX_QUOTE_MAX_LEN {
            return Err(TdxQuoteError::Oversized(raw.len()));
        }
        let mut r = Reader::new(raw);
        let header = read_header(&mut r)?;
        let body = match header.version {
            TdxQuoteVersion::V4 => read_td_report(&mut r, false)?,
            TdxQuoteVersion::V5 => {
                let body_type = r.u16().ok_or(TdxQuoteError::Truncated("body descriptor"))?;
                let size = r.u32().ok_or(TdxQuoteError::Truncated("body descriptor"))?;
                let (v15, expected) = match body_type {
                    BODY_TYPE_TD10 => (false, TD_REPORT10_LEN),
                    BODY_TYPE_TD15 => (true, TD_REPORT15_LEN),
                    other => return Err(TdxQuoteError::UnsupportedBodyType(other)),
                };
                if usize::try_from(size).ok() != Some(expected) {
                    return Err(TdxQuoteError::BodySize { body_type, size });
                }
                read_td_report(&mut r, v15)?
            }
        };
        let sig_len = r
            .u32()
            .ok_or(TdxQuoteError::Truncated("signature length"))?;
        let sig_len = usize::try_from(sig_len).map_err(|_| TdxQuoteError::Oversized(usize::MAX))?;
        let sig_bytes = r
            .bytes(sig_len)
            .ok_or(TdxQuoteError::Truncated("signature data"))?;
        // Quotes read from a fixed-size buffer (configfs-tsm, the QGS) carry zero padding after
        // the signature data; anything else after it is refused.
        let rest = r.bytes(r.remaining()).unwrap_or_default();
        if rest.iter().any(|b| *b != 0) {
            return Err(TdxQuoteError::TrailingBytes(rest.len()));
        }
        let signature = read_signature(sig_bytes)?;
        Ok(Self {
            header,
            body,
            signature,
        })
    }

    /// Length of the prefix the attestation key signs (header, v5 descriptor, body).
    pub fn signed_len(&self) -> usize {
        let descriptor = match self.header.version {
            TdxQuoteVersion::V4 => 0,
            TdxQuoteVersion::V5 => 6,
        };
        TDX_HEADER_LEN + descriptor + self.body.len()
    }

    /// Serialise header and body: the bytes the attestation key signs.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, TdxQuoteError> {
        let mut w = Writer::with_capacity(self.signed_len());
        self.write_signed(&mut w)?;
        Ok(w.into_vec())
    }

    /// Serialise the whole quote.
    pub fn to_bytes(&self) -> Result<Vec<u8>, TdxQuoteError> {
        let mut w = Writer::with_capacity(self.signed_len().saturating_add(4096));
        self.write_signed(&mut w)?;
        let sig = signature_bytes(&self.signature)?;
        w.u32(len_u32(sig.len(), "signature data")?).bytes(&sig);
        Ok(w.into_vec())
    }

    fn write_signed(&self, w: &mut Writer) -> Result<(), TdxQuoteError> {
        let h = &self.header;
        w.u16(h.version.number())
            .u16(h.attestation_key_type)
            .u32(h.tee_type)
            .u16(h.qe_svn)
            .u16(h.pce_svn)
            .bytes(&h.qe_vendor_id)
            .bytes(&h.user_data);
        match (h.version, self.body.v15.is_some()) {
            (TdxQuoteVersion::V4, true) => return Err(TdxQuoteError::BodyNeedsV5),
            (TdxQuoteVersion::V4, false) => {}
            (TdxQuoteVersion::V5, v15) => {
                let (ty, len) = if v15 {
                    (BODY_TYPE_TD15, TD_REPORT15_LEN)
                } else {
                    (BODY_TYPE_TD10, TD_REPORT10_LEN)
                };
                w.u16(ty).u32(len_u32(len, "body")?);
            }
        }
        let b = &self.body;
        w.bytes(&b.tee_tcb_svn)
            .bytes(&b.mr_seam)
            .bytes(&b.mr_signer_seam)
            .bytes(&b.seam_attributes)
            .bytes(&b.td_attributes)
            .bytes(&b.xfam)
            .bytes(&b.mr_td)
            .bytes(&b.mr_config_id)
            .bytes(&b.mr_owner)
            .bytes(&b.mr_owner_config);
        for rtmr in &b.rtmr {
            w.bytes(rtmr);
        }
        w.bytes(&b.report_data);
        if let Some(ext) = &b.v15 {
            w.bytes(&ext.tee_tcb_svn2).bytes(&ext.mr_servicetd);
        }
        Ok(())
    }
}

fn len_u32(len: usize, what: &'static str) -> Result<u32, TdxQuoteError> {
    u32::try_from(len).map_err(|_| TdxQuoteError::FieldTooLong(what))
}

/// Serialise the signature data (what follows the u32 length in the quote).
fn signature_bytes(sig: &QuoteSignature) -> Result<Vec<u8>, TdxQuoteError> {
    let qe = &sig.qe;
    let mut inner = Writer::with_capacity(ENCLAVE_REPORT_LEN + 64 + qe.certification.data.len());
    qe.qe_report.write(&mut inner);
    let auth_len = u16::try_from(qe.qe_auth_data.len())
        .map_err(|_| TdxQuoteError::FieldTooLong("qe auth data"))?;
    inner
        .bytes(&qe.qe_report_signature)
        .u16(auth_len)
        .bytes(&qe.qe_auth_data)
        .u16(qe.certification.cert_type)
        .u32(len_u32(qe.certification.data.len(), "certification data")?)
        .bytes(&qe.certification.data);
    let inner = inner.into_vec();
    let mut w = Writer::with_capacity(inner.len() + 134);
    w.bytes(&sig.signature)
        .bytes(&sig.attestation_key)
        .u16(CERT_TYPE_QE_REPORT)
        .u32(len_u32(inner.len(), "qe certification data")?)
        .bytes(&inner);
    Ok(w.into_vec())
}

fn read_header(r: &mut Reader<'_>) -> Result<QuoteHeader, TdxQuoteError> {
    let t = || TdxQuoteError::Truncated("header");
    let version = match r.u16().ok_or_else(t)? {
        4 => TdxQuoteVersion::V4,
        5 => TdxQuoteVersion::V5,
        other => return Err(TdxQuoteError::UnsupportedVersion(other)),
    };
    let attestation_key_type = r.u16().ok_or_else(t)?;
    let tee_type = r.u32().ok_or_else(t)?;
    if tee_type != TEE_TYPE_TDX {
        return Err(TdxQuoteError::UnsupportedTeeType(tee_type));
    }
    Ok(QuoteHeader {
        version,
        attestation_key_type,
        tee_type,
        qe_svn: r.u16().ok_or_else(t)?,
        pce_svn: r.u16().ok_or_else(t)?,
        qe_vendor_id: r.array().ok_or_else(t)?,
        user_data: r.array().ok_or_else(t)?,
    })
}

fn read_td_report(r: &mut Reader<'_>, v15: bool) -> Result<TdReport, TdxQuoteError> {
    read_td_report_fields(r, v15).ok_or(TdxQuoteError::Truncated("td report body"))
}

fn read_td_report_fields(r: &mut Reader<'_>, v15: bool) -> Option<TdReport> {
    let mut report = TdReport {
        tee_tcb_svn: r.array()?,
        mr_seam: r.array()?,
        mr_signer_seam: r.array()?,
        seam_attributes: r.array()?,
        td_attributes: r.array()?,
        xfam: r.array()?,
        mr_td: r.array()?,
        mr_config_id: r.array()?,
        mr_owner: r.array()?,
        mr_owner_config: r.array()?,
        rtmr: [r.array()?, r.array()?, r.array()?, r.array()?],
        report_data: r.array()?,
        v15: None,
    };
    if v15 {
        report.v15 = Some(TdReport15Ext {
            tee_tcb_svn2: r.array()?,
            mr_servicetd: r.array()?,
        });
    }
    Some(report)
}

fn read_enclave_report(r: &mut Reader<'_>) -> Option<EnclaveReport> {
    Some(EnclaveReport {
        cpu_svn: r.array()?,
        misc_select: r.u32()?,
        reserved1: r.array()?,
        attributes: r.array()?,
        mr_enclave: r.array()?,
        reserved2: r.array()?,
        mr_signer: r.array()?,
        reserved3: r.array()?,
        isv_prod_id: r.u16()?,
        isv_svn: r.u16()?,
        reserved4: r.array()?,
        report_data: r.array()?,
    })
}

fn read_signature(raw: &[u8]) -> Result<QuoteSignature, TdxQuoteError> {
    let t = |what| move || TdxQuoteError::Truncated(what);
    let mut r = Reader::new(raw);
    let signature = r.array().ok_or_else(t("quote signature"))?;
    let attestation_key = r.array().ok_or_else(t("attestation key"))?;
    let cert_type = r.u16().ok_or_else(t("certification data"))?;
    if cert_type != CERT_TYPE_QE_REPORT {
        return Err(TdxQuoteError::UnsupportedCertType(cert_type));
    }
    let outer = read_sized_u32(&mut r).ok_or_else(t("certification data"))?;
    if r.remaining() != 0 {
        return Err(TdxQuoteError::TrailingBytes(r.remaining()));
    }
    let mut r = Reader::new(outer);
    let qe_report = read_enclave_report(&mut r).ok_or_else(t("qe report"))?;
    let qe_report_signature = r.array().ok_or_else(t("qe report signature"))?;
    let auth_len = r.u16().ok_or_else(t("qe auth data"))?;
    let qe_auth_data = r
        .bytes(usize::from(auth_len))
        .ok_or_else(t("qe auth data"))?
        .to_vec();
    let inner_type = r.u16().ok_or_else(t("inner certification data"))?;
    let inner = read_sized_u32(&mut r).ok_or_else(t("inner certification data"))?;
    if r.remaining() != 0 {
        return Err(TdxQuoteError::TrailingBytes(r.remaining()));
    }
    Ok(QuoteSignature {
        signature,
        attestation_key,
        qe: QeReportCertData {
            qe_report,
            qe_report_signature,
            qe_auth_data,
            certification: CertificationData {
                cert_type: inner_type,
                data: inner.to_vec(),
            },
        },
    })
}

fn read_sized_u32<'a>(r: &mut Reader<'a>) -> Option<&'a [u8]> {
    let len = usize::try_from(r.u32()?).ok()?;
    r.bytes(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/testdata/real-evidence/tdx/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }

    const REAL: [&str; 4] = [
        "dcapqvl-tdx_quote",
        "dcapqvl-tdx_quote_outdated",
        "trustee-tdx_quote_4.dat",
        "trustee-tdx_quote_5.dat",
    ];

    /// dcap-qvl is the reference parser; our fields must equal its view of the same bytes.
    fn assert_matches_dcap_qvl(raw: &[u8]) {
        let ours = TdxQuote::parse(raw).unwrap();
        let theirs = dcap_qvl::quote::Quote::parse(raw).unwrap();
        let h = &theirs.header;
        assert_eq!(ours.header.version.number(), h.version);
        assert_eq!(ours.header.attestation_key_type, h.attestation_key_type);
        assert_eq!(ours.header.tee_type, h.tee_type);
        assert_eq!(ours.header.qe_svn, h.qe_svn);
        assert_eq!(ours.header.pce_svn, h.pce_svn);
        assert_eq!(ours.header.qe_vendor_id, h.qe_vendor_id);
        assert_eq!(ours.header.user_data, h.user_data);
        let td = theirs.report.as_td10().unwrap();
        let b = &ours.body;
        assert_eq!(b.tee_tcb_svn, td.tee_tcb_svn);
        assert_eq!(b.mr_seam, td.mr_seam);
        assert_eq!(b.mr_signer_seam, td.mr_signer_seam);
        assert_eq!(b.seam_attributes, td.seam_attributes);
        assert_eq!(b.td_attributes, td.td_attributes);
        assert_eq!(b.xfam, td.xfam);
        assert_eq!(b.mr_td, td.mr_td);
        assert_eq!(b.mr_config_id, td.mr_config_id);
        assert_eq!(b.mr_owner, td.mr_owner);
        assert_eq!(b.mr_owner_config, td.mr_owner_config);
        assert_eq!(b.rtmr, [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3]);
        assert_eq!(b.report_data, td.report_data);
        match (theirs.report.as_td15(), &b.v15) {
            (Some(t15), Some(e)) => {
                assert_eq!(e.tee_tcb_svn2, t15.tee_tcb_svn2);
                assert_eq!(e.mr_servicetd, t15.mr_service_td);
            }
            (None, None) => {}
            other => panic!("tdx 1.5 presence differs: {other:?}"),
        }
        assert_eq!(ours.signed_len(), theirs.signed_length());
        let auth = theirs.auth_data.clone().into_v3();
        assert_eq!(ours.signature.signature, auth.ecdsa_signature);
        assert_eq!(ours.signature.attestation_key, auth.ecdsa_attestation_key);
        assert_eq!(ours.signature.qe.qe_report.to_bytes(), auth.qe_report);
        assert_eq!(
            ours.signature.qe.qe_report_signature,
            auth.qe_report_signature
        );
        assert_eq!(ours.signature.qe.qe_auth_data, auth.qe_auth_data.data);
        assert_eq!(
            ours.signature.qe.certification.cert_type,
            theirs.inner_cert_type()
        );
        assert_eq!(
            ours.signature.qe.certification.data,
            theirs.inner_cert_data()
        );
    }

    #[test]
    fn real_quotes_parse_like_dcap_qvl() {
        for name in REAL {
            assert_matches_dcap_qvl(&testdata(name));
        }
    }

    #[test]
    fn real_quotes_round_trip_byte_for_byte() {
        for name in REAL {
            let raw = testdata(name);
            let quote = TdxQuote::parse(&raw).unwrap();
            let encoded = quote.to_bytes().unwrap();
            assert_eq!(encoded, raw[..encoded.len()], "{name}");
            assert!(raw[encoded.len()..].iter().all(|b| *b == 0), "{name}");
            assert_eq!(quote.signed_bytes().unwrap(), raw[..quote.signed_len()]);
        }
    }

    #[test]
    fn real_quote_shapes() {
        let v4 = TdxQuote::parse(&testdata("trustee-tdx_quote_4.dat")).unwrap();
        assert_eq!(v4.header.version, TdxQuoteVersion::V4);
        assert_eq!(v4.header.attestation_key_type, ATTESTATION_KEY_ECDSA_P256);
        assert_eq!(v4.header.qe_vendor_id, INTEL_QE_VENDOR_ID);
        let v5 = TdxQuote::parse(&testdata("trustee-tdx_quote_5.dat")).unwrap();
        assert_eq!(v5.header.version, TdxQuoteVersion::V5);
        let pem = v5.signature.pck_chain_pem().unwrap();
        let text = String::from_utf8_lossy(pem);
        assert_eq!(text.matches("-----BEGIN CERTIFICATE-----").count(), 3);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let raw = testdata("dcapqvl-tdx_quote");
        let len = TdxQuote::parse(&raw).unwrap().to_bytes().unwrap().len();
        for len in 0..len {
            assert!(TdxQuote::parse(&raw[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn trailing_and_oversized_input_is_refused() {
        let mut raw = testdata("trustee-tdx_quote_4.dat");
        raw.push(0);
        assert!(TdxQuote::parse(&raw).is_ok(), "zero padding is accepted");
        raw.push(1);
        assert_eq!(TdxQuote::parse(&raw), Err(TdxQuoteError::TrailingBytes(2)));
        let big = vec![0u8; TDX_QUOTE_MAX_LEN + 1];
        assert_eq!(
            TdxQuote::parse(&big),
            Err(TdxQuoteError::Oversized(TDX_QUOTE_MAX_LEN + 1))
        );
    }

    #[test]
    fn lying_length_fields_are_refused() {
        let raw = testdata("trustee-tdx_quote_4.dat");
        let sig_len_at = TDX_HEADER_LEN + TD_REPORT10_LEN;
        let mut bad = raw.clone();
        bad[sig_len_at..sig_len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            TdxQuote::parse(&bad),
            Err(TdxQuoteError::Truncated("signature data"))
        );
        // Outer certification data size pointing past the signature data.
        let cert_len_at = sig_len_at + 4 + 128 + 2;
        let mut bad = raw.clone();
        bad[cert_len_at..cert_len_at + 4].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
        assert_eq!(
            TdxQuote::parse(&bad),
            Err(TdxQuoteError::Truncated("certification data"))
        );
        let mut bad = raw;
        bad[sig_len_at + 4 + 128..sig_len_at + 4 + 130].copy_from_slice(&5u16.to_le_bytes());
        assert_eq!(
            TdxQuote::parse(&bad),
            Err(TdxQuoteError::UnsupportedCertType(5))
        );
    }

    #[test]
    fn wrong_version_tee_and_body_are_typed_errors() {
        let raw = testdata("trustee-tdx_quote_5.dat");
        let mut bad = raw.clone();
        bad[0..2].copy_from_slice(&3u16.to_le_bytes());
        assert_eq!(
            TdxQuote::parse(&bad),
            Err(TdxQuoteError::UnsupportedVersion(3))
        );
        let mut bad = raw.clone();
        bad[4..8].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            TdxQuote::parse(&bad),
            Err(TdxQuoteError::UnsupportedTeeType(0))
        );
        let mut bad = raw.clone();
        bad[48..50].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(
            TdxQuote::parse(&bad),
            Err(TdxQuoteError::UnsupportedBodyType(1))
        );
        let mut bad = raw;
        bad[50..54].copy_from_slice(&600u32.to_le_bytes());
        assert!(matches!(
            TdxQuote::parse(&bad),
            Err(TdxQuoteError::BodySize { size: 600, .. })
        ));
    }

    #[test]
    fn td15_body_round_trips_in_v5_and_is_refused_in_v4() {
        let mut quote = TdxQuote::parse(&testdata("trustee-tdx_quote_4.dat")).unwrap();
        quote.body.v15 = Some(TdReport15Ext {
            tee_tcb_svn2: [7; 16],
            mr_servicetd: [9; 48],
        });
        assert_eq!(quote.to_bytes(), Err(TdxQuoteError::BodyNeedsV5));
        quote.header.version = TdxQuoteVersion::V5;
        let raw = quote.to_bytes().unwrap();
        assert_eq!(quote.signed_len(), TDX_HEADER_LEN + 6 + TD_REPORT15_LEN);
        assert_eq!(TdxQuote::parse(&raw).unwrap(), quote);
        assert_matches_dcap_qvl(&raw);
    }

    /// Mutated real quotes (random bytes overwritten, random cuts) give errors or quotes, never
    /// panics; a deterministic xorshift keeps the run reproducible.
    #[test]
    fn mutated_quotes_never_panic() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for name in REAL {
            let raw = testdata(name);
            for _ in 0..2000 {
                let mut m = raw.clone();
                for _ in 0..(next() % 8 + 1) {
                    let i = usize::try_from(next() % m.len() as u64).unwrap();
                    m[i] = next().to_le_bytes()[0];
                }
                let cut = usize::try_from(next() % (m.len() as u64 + 1)).unwrap();
                let _ = TdxQuote::parse(&m);
                let _ = TdxQuote::parse(&m[..cut]);
            }
        }
    }

    #[test]
    fn debug_bit() {
        let mut quote = TdxQuote::parse(&testdata("dcapqvl-tdx_quote")).unwrap();
        quote.body.td_attributes[0] |= 1;
        assert!(quote.body.debug());
        quote.body.td_attributes[0] &= !1;
        assert!(!quote.body.debug());
    }
}
