//! Evidence formats: the SEV-SNP attestation report, the TDX quote, and the typed claims read
//! from either. Pure parsing and serialisation; signatures are verified elsewhere (the key
//! broker), always over the original bytes.

pub mod ccel;
mod claims;
mod report_data;
mod snp;
mod snp_certs;
mod tdx;
pub(crate) mod wire;

pub use claims::{Claims, SnpClaims, TdxClaims, TeeKind};
pub use report_data::{REPORT_DATA_LEN, ReportData};
pub use snp::{
    CpuId, FirmwareVersion, GuestPolicy, KeyInfo, SNP_REPORT_LEN, SNP_SIG_ALGO_ECDSA_P384_SHA384,
    SNP_SIG_COMPONENT_LEN, SNP_SIGNED_LEN, SigningKey, SnpReport, SnpReportError, SnpReportVersion,
    SnpSignature, TcbLayout, TcbParts, TcbVersion,
};
pub use snp_certs::{
    GUID_ARK, GUID_ASK, GUID_CRL, GUID_VCEK, GUID_VLEK, SNP_CERT_TABLE_MAX_ENTRIES,
    SNP_CERT_TABLE_MAX_LEN, SnpCertEntry, SnpCertTable, SnpCertTableError,
};
pub use tdx::{
    ATTESTATION_KEY_ECDSA_P256, CERT_TYPE_PCK_CHAIN, CERT_TYPE_QE_REPORT, CertificationData,
    ENCLAVE_REPORT_LEN, EnclaveReport, INTEL_QE_VENDOR_ID, QeReportCertData, QuoteHeader,
    QuoteSignature, TD_REPORT10_LEN, TD_REPORT15_LEN, TDX_HEADER_LEN, TDX_QUOTE_MAX_LEN,
    TEE_TYPE_TDX, TdReport, TdReport15Ext, TdxQuote, TdxQuoteError, TdxQuoteVersion,
};
