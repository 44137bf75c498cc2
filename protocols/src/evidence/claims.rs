//! A typed view of what a report or quote claims, shared by the key broker's verifiers and by the
//! guest agent (which compares its own HOST_DATA / MRCONFIGID with the initdata digest).
//!
//! Claims are only as trustworthy as the signature check that preceded building them: this
//! module does not verify anything.

use super::report_data::ReportData;
use super::snp::{GuestPolicy, SigningKey, SnpReport, TcbParts};
use super::tdx::TdxQuote;

/// The kind of TEE that produced the evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TeeKind {
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX.
    Tdx,
}

/// What an SNP report claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpClaims {
    /// Launch measurement.
    pub measurement: [u8; 48],
    /// HOST_DATA given at launch.
    pub host_data: [u8; 32],
    /// The guest's report data.
    pub report_data: ReportData,
    /// Guest policy.
    pub policy: GuestPolicy,
    /// VMPL the report came from.
    pub vmpl: u32,
    /// Guest SVN.
    pub guest_svn: u32,
    /// The TCB the signing key was derived for.
    pub reported_tcb: TcbParts,
    /// The platform's current TCB.
    pub current_tcb: TcbParts,
    /// The platform's committed TCB.
    pub committed_tcb: TcbParts,
    /// The TCB at launch.
    pub launch_tcb: TcbParts,
    /// Chip id (`None` when masked).
    pub chip_id: Option<[u8; 64]>,
    /// Family id from the ID block.
    pub family_id: [u8; 16],
    /// Image id from the ID block.
    pub image_id: [u8; 16],
    /// Digest of the ID key.
    pub id_key_digest: [u8; 48],
    /// Which key signed the report.
    pub signing_key: SigningKey,
}

impl From<&SnpReport> for SnpClaims {
    fn from(r: &SnpReport) -> Self {
        let layout = r.tcb_layout();
        let masked = r.key_info.mask_chip_key() || r.chip_id.iter().all(|b| *b == 0);
        Self {
            measurement: r.measurement,
            host_data: r.host_data,
            report_data: ReportData(r.report_data),
            policy: r.policy,
            vmpl: r.vmpl,
            guest_svn: r.guest_svn,
            reported_tcb: r.reported_tcb.parts(layout),
            current_tcb: r.current_tcb.parts(layout),
            committed_tcb: r.committed_tcb.parts(layout),
            launch_tcb: r.launch_tcb.parts(layout),
            chip_id: (!masked).then_some(r.chip_id),
            family_id: r.family_id,
            image_id: r.image_id,
            id_key_digest: r.id_key_digest,
            signing_key: r.key_info.signing_key(),
        }
    }
}

/// What a TDX quote claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxClaims {
    /// MRTD: measurement of the initial TD (firmware).
    pub mr_td: [u8; 48],
    /// MRCONFIGID (tsuba: the initdata digest).
    pub mr_config_id: [u8; 48],
    /// MROWNER.
    pub mr_owner: [u8; 48],
    /// MROWNERCONFIG.
    pub mr_owner_config: [u8; 48],
    /// RTMR 0 to 3.
    pub rtmr: [[u8; 48]; 4],
    /// The TD's report data.
    pub report_data: ReportData,
    /// TD attributes as a little-endian integer.
    pub td_attributes: u64,
    /// XFAM as a little-endian integer.
    pub xfam: u64,
    /// TEE TCB SVN.
    pub tee_tcb_svn: [u8; 16],
    /// Measurement of the TDX module.
    pub mr_seam: [u8; 48],
    /// QE security version.
    pub qe_svn: u16,
    /// PCE security version.
    pub pce_svn: u16,
}

impl From<&TdxQuote> for TdxClaims {
    fn from(q: &TdxQuote) -> Self {
        let b = &q.body;
        Self {
            mr_td: b.mr_td,
            mr_config_id: b.mr_config_id,
            mr_owner: b.mr_owner,
            mr_owner_config: b.mr_owner_config,
            rtmr: b.rtmr,
            report_data: ReportData(b.report_data),
            td_attributes: u64::from_le_bytes(b.td_attributes),
            xfam: u64::from_le_bytes(b.xfam),
            tee_tcb_svn: b.tee_tcb_svn,
            mr_seam: b.mr_seam,
            qe_svn: q.header.qe_svn,
            pce_svn: q.header.pce_svn,
        }
    }
}

/// Claims of either TEE, with accessors for what both have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claims {
    /// From an SNP report.
    Snp(SnpClaims),
    /// From a TDX quote.
    Tdx(TdxClaims),
}

impl Claims {
    /// The TEE kind.
    pub fn tee(&self) -> TeeKind {
        match self {
            Self::Snp(_) => TeeKind::Snp,
            Self::Tdx(_) => TeeKind::Tdx,
        }
    }

    /// The launch measurement: SNP MEASUREMENT or TDX MRTD (both 48 bytes).
    pub fn measurement(&self) -> &[u8; 48] {
        match self {
            Self::Snp(c) => &c.measurement,
            Self::Tdx(c) => &c.mr_td,
        }
    }

    /// The launcher-supplied binding of the initdata: SNP HOST_DATA (32 bytes) or TDX
    /// MRCONFIGID (48 bytes).
    pub fn init_data_binding(&self) -> &[u8] {
        match self {
            Self::Snp(c) => &c.host_data,
            Self::Tdx(c) => &c.mr_config_id,
        }
    }

    /// The guest's report data.
    pub fn report_data(&self) -> &ReportData {
        match self {
            Self::Snp(c) => &c.report_data,
            Self::Tdx(c) => &c.report_data,
        }
    }

    /// Whether the guest is debuggable (SNP policy bit 19, TD attribute bit 0): such a guest
    /// has no confidentiality and must not receive secrets.
    pub fn debug(&self) -> bool {
        match self {
            Self::Snp(c) => c.policy.debug(),
            Self::Tdx(c) => c.td_attributes & 1 != 0,
        }
    }
}

impl From<&SnpReport> for Claims {
    fn from(r: &SnpReport) -> Self {
        Self::Snp(r.into())
    }
}

impl From<&TdxQuote> for Claims {
    fn from(q: &TdxQuote) -> Self {
        Self::Tdx(q.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(path: &str) -> Vec<u8> {
        let path = format!(
            "{}/testdata/real-evidence/{path}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }

    #[test]
    fn snp_claims_follow_the_report() {
        let raw = testdata("snp/trustee-test-report.bin");
        let report = SnpReport::parse(&raw).unwrap();
        let claims = Claims::from(&report);
        assert_eq!(claims.tee(), TeeKind::Snp);
        assert_eq!(claims.measurement(), &raw[0x90..0xC0]);
        assert_eq!(claims.init_data_binding(), &raw[0xC0..0xE0]);
        assert_eq!(claims.report_data().as_bytes(), &raw[0x50..0x90]);
        assert_eq!(claims.debug(), raw[0x0A] & 0x08 != 0);
        let Claims::Snp(snp) = claims else {
            panic!("not snp")
        };
        assert_eq!(
            snp.chip_id.as_ref().map(|c| &c[..]),
            Some(&raw[0x1A0..0x1E0])
        );
        assert_eq!(snp.reported_tcb.microcode, raw[0x187]);
        assert_eq!(snp.reported_tcb.bootloader, raw[0x180]);
        assert_eq!(snp.signing_key, SigningKey::Vcek);
    }

    #[test]
    fn snp_debug_and_masked_chip_id() {
        let raw = testdata("snp/trustee-test-report.bin");
        let mut report = SnpReport::parse(&raw).unwrap();
        report.policy.0 |= GuestPolicy::DEBUG;
        report.chip_id = [0; 64];
        let claims = Claims::from(&report);
        assert!(claims.debug());
        let Claims::Snp(snp) = claims else {
            panic!("not snp")
        };
        assert_eq!(snp.chip_id, None);
    }

    #[test]
    fn tdx_claims_follow_the_quote() {
        let raw = testdata("tdx/dcapqvl-tdx_quote");
        let quote = TdxQuote::parse(&raw).unwrap();
        let claims = Claims::from(&quote);
        assert_eq!(claims.tee(), TeeKind::Tdx);
        // Offsets inside a v4 quote: header 48, then MRTD at body offset 136.
        assert_eq!(claims.measurement(), &raw[48 + 136..48 + 184]);
        assert_eq!(claims.init_data_binding(), &raw[48 + 184..48 + 232]);
        assert_eq!(claims.report_data().as_bytes(), &raw[48 + 520..48 + 584]);
        assert_eq!(claims.debug(), raw[48 + 120] & 1 != 0);
        let Claims::Tdx(tdx) = claims else {
            panic!("not tdx")
        };
        assert_eq!(&tdx.rtmr[3], &raw[48 + 472..48 + 520]);
    }
}
