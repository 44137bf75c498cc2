//! The AMD SEV-SNP ATTESTATION_REPORT structure (SEV-SNP firmware ABI, table "ATTESTATION_REPORT
//! Structure"): 1184 bytes, versions 2, 3 and 5, all integers little-endian.
//!
//! Parsing checks the length and the version and nothing else: it does not verify the signature.
//! A verifier hashes the original bytes `raw[..SNP_SIGNED_LEN]` (never a re-serialisation, which
//! would zero reserved bytes that the signature covers) and checks them against the VCEK or VLEK.

use thiserror::Error;

use super::wire::{Reader, Writer};

/// Length in bytes of an SNP attestation report.
pub const SNP_REPORT_LEN: usize = 1184;
/// Length of the region the signature covers (bytes 0x000 to 0x29F).
pub const SNP_SIGNED_LEN: usize = 0x2A0;
/// Length of each ECDSA P-384 scalar in the report: little-endian, zero-extended to 72 bytes.
pub const SNP_SIG_COMPONENT_LEN: usize = 72;
/// Value of SIGNATURE_ALGO for ECDSA P-384 with SHA-384, the only one hardware uses.
pub const SNP_SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;

/// Errors from parsing an SNP attestation report.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SnpReportError {
    /// The input is not exactly one report long (truncated or oversized).
    #[error("snp report must be {SNP_REPORT_LEN} bytes, got {0}")]
    Length(usize),
    /// The VERSION field names a layout this parser does not know.
    #[error("unsupported snp report version {0}")]
    UnsupportedVersion(u32),
}

/// The report layouts this crate reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnpReportVersion {
    /// Version 2 (SNP firmware before 1.55): no CPUID fields, no mitigation vectors.
    V2,
    /// Version 3: adds CPUID family, model and stepping.
    V3,
    /// Version 5: adds the launch and current mitigation vectors.
    V5,
}

impl SnpReportVersion {
    /// The value of the VERSION field.
    pub fn number(self) -> u32 {
        match self {
            Self::V2 => 2,
            Self::V3 => 3,
            Self::V5 => 5,
        }
    }

    fn from_number(n: u32) -> Result<Self, SnpReportError> {
        match n {
            2 => Ok(Self::V2),
            3 => Ok(Self::V3),
            5 => Ok(Self::V5),
            other => Err(SnpReportError::UnsupportedVersion(other)),
        }
    }
}

/// The guest policy the guest was launched with (a 64-bit field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GuestPolicy(pub u64);

impl GuestPolicy {
    /// Bit 17 is reserved and must be one in every valid policy.
    pub const RESERVED_MUST_BE_ONE: u64 = 1 << 17;
    /// Bit 16: simultaneous multithreading allowed.
    pub const SMT: u64 = 1 << 16;
    /// Bit 18: association with a migration agent allowed.
    pub const MIGRATE_MA: u64 = 1 << 18;
    /// Bit 19: debugging allowed (the hypervisor can read and write guest memory).
    pub const DEBUG: u64 = 1 << 19;
    /// Bit 20: the guest may be activated only on one socket.
    pub const SINGLE_SOCKET: u64 = 1 << 20;

    /// Minimum ABI minor version the guest needs.
    pub fn abi_minor(self) -> u8 {
        self.0.to_le_bytes()[0]
    }

    /// Minimum ABI major version the guest needs.
    pub fn abi_major(self) -> u8 {
        self.0.to_le_bytes()[1]
    }

    /// Whether the policy allows debugging: such a guest has no confidentiality.
    pub fn debug(self) -> bool {
        self.0 & Self::DEBUG != 0
    }

    /// Whether SMT is allowed.
    pub fn smt(self) -> bool {
        self.0 & Self::SMT != 0
    }

    /// Whether a migration agent is allowed.
    pub fn migrate_ma(self) -> bool {
        self.0 & Self::MIGRATE_MA != 0
    }

    /// Whether the guest is restricted to one socket.
    pub fn single_socket(self) -> bool {
        self.0 & Self::SINGLE_SOCKET != 0
    }
}

/// Which key signed the report (bits 4:2 of the key-info field at 0x48).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKey {
    /// The versioned chip endorsement key.
    Vcek,
    /// The versioned loaded endorsement key.
    Vlek,
    /// No key: the report is unsigned.
    None,
    /// A value the ABI reserves.
    Reserved(u8),
}

/// The key-info field at offset 0x48.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyInfo(pub u32);

impl KeyInfo {
    /// Bit 0: the author key digest is present.
    pub fn author_key_en(self) -> bool {
        self.0 & 1 != 0
    }

    /// Bit 1: the chip id was masked (zeroed) at the guest's request.
    pub fn mask_chip_key(self) -> bool {
        self.0 & 2 != 0
    }

    /// Which key signed the report.
    pub fn signing_key(self) -> SigningKey {
        match (self.0 >> 2) & 0b111 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            7 => SigningKey::None,
            other => SigningKey::Reserved(other.to_le_bytes()[0]),
        }
    }

    /// Key info for a report signed by `key` with the given flags.
    pub fn new(key: SigningKey, author_key_en: bool, mask_chip_key: bool) -> Self {
        let code: u32 = match key {
            SigningKey::Vcek => 0,
            SigningKey::Vlek => 1,
            SigningKey::None => 7,
            SigningKey::Reserved(v) => u32::from(v & 0b111),
        };
        Self((code << 2) | (u32::from(mask_chip_key) << 1) | u32::from(author_key_en))
    }
}

/// How the eight bytes of a TCB_VERSION are laid out: it depends on the processor generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcbLayout {
    /// Milan and Genoa: boot loader, TEE, 4 reserved, SNP, microcode.
    Legacy,
    /// Turin and later: FMC, boot loader, TEE, SNP, 3 reserved, microcode.
    Turin,
}

/// A TCB_VERSION as stored in the report (little-endian u64 of per-component SVNs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcbVersion(pub u64);

/// The security version numbers inside a [`TcbVersion`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcbParts {
    /// SVN of the FMC firmware (Turin and later only).
    pub fmc: Option<u8>,
    /// SVN of the PSP boot loader.
    pub bootloader: u8,
    /// SVN of the PSP operating system.
    pub tee: u8,
    /// SVN of the SNP firmware.
    pub snp: u8,
    /// Lowest current patch level of all cores.
    pub microcode: u8,
}

impl TcbVersion {
    /// The components, read with the given layout.
    pub fn parts(self, layout: TcbLayout) -> TcbParts {
        let b = self.0.to_le_bytes();
        match layout {
            TcbLayout::Legacy => TcbParts {
                fmc: None,
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
            },
            TcbLayout::Turin => TcbParts {
                fmc: Some(b[0]),
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            },
        }
    }

    /// The TCB_VERSION holding `parts` in the given layout (`fmc` is ignored in the legacy one).
    pub fn from_parts(parts: TcbParts, layout: TcbLayout) -> Self {
        let b = match layout {
            TcbLayout::Legacy => [
                parts.bootloader,
                parts.tee,
                0,
                0,
                0,
                0,
                parts.snp,
                parts.microcode,
            ],
            TcbLayout::Turin => [
                parts.fmc.unwrap_or(0),
                parts.bootloader,
                parts.tee,
                parts.snp,
                0,
                0,
                0,
                parts.microcode,
            ],
        };
        Self(u64::from_le_bytes(b))
    }
}

/// CPUID family, model and stepping of the machine (reports version 3 and later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuId {
    /// Combined extended family and family (0x19 Milan/Genoa, 0x1A Turin).
    pub family: u8,
    /// Combined extended model and model.
    pub model: u8,
    /// Stepping.
    pub stepping: u8,
}

/// A firmware version `major.minor.build`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FirmwareVersion {
    /// Major version.
    pub major: u8,
    /// Minor version.
    pub minor: u8,
    /// Build number.
    pub build: u8,
}

/// The ECDSA P-384 signature: r and s little-endian, each zero-extended to 72 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnpSignature {
    /// The r component, little-endian.
    pub r: [u8; SNP_SIG_COMPONENT_LEN],
    /// The s component, little-endian.
    pub s: [u8; SNP_SIG_COMPONENT_LEN],
}

impl Default for SnpSignature {
    fn default() -> Self {
        Self {
            r: [0; SNP_SIG_COMPONENT_LEN],
            s: [0; SNP_SIG_COMPONENT_LEN],
        }
    }
}

impl SnpSignature {
    /// Build from big-endian 48-byte scalars, as ECDSA libraries produce them.
    pub fn from_p384_be(r: &[u8; 48], s: &[u8; 48]) -> Self {
        let mut out = Self::default();
        for (dst, src) in out.r.iter_mut().zip(r.iter().rev()) {
            *dst = *src;
        }
        for (dst, src) in out.s.iter_mut().zip(s.iter().rev()) {
            *dst = *src;
        }
        out
    }

    /// The scalars as big-endian 48-byte values, or `None` when a scalar has bits beyond 384
    /// (no valid P-384 signature has).
    pub fn to_p384_be(&self) -> Option<([u8; 48], [u8; 48])> {
        Some((component_be(&self.r)?, component_be(&self.s)?))
    }
}

fn component_be(le: &[u8; SNP_SIG_COMPONENT_LEN]) -> Option<[u8; 48]> {
    let (low, high) = le.split_at(48);
    if high.iter().any(|b| *b != 0) {
        return None;
    }
    let mut be = [0u8; 48];
    for (dst, src) in be.iter_mut().zip(low.iter().rev()) {
        *dst = *src;
    }
    Some(be)
}

/// A parsed SNP attestation report; every field of the ABI, reserved ones left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpReport {
    /// Layout version.
    pub version: SnpReportVersion,
    /// Guest SVN from the ID block.
    pub guest_svn: u32,
    /// Guest policy.
    pub policy: GuestPolicy,
    /// Family id from the ID block.
    pub family_id: [u8; 16],
    /// Image id from the ID block.
    pub image_id: [u8; 16],
    /// VMPL the report was requested from.
    pub vmpl: u32,
    /// Signature algorithm (1 = ECDSA P-384 with SHA-384).
    pub signature_algo: u32,
    /// Current TCB of the platform.
    pub current_tcb: TcbVersion,
    /// Platform information flags (SMT enabled, TSME enabled, ...).
    pub platform_info: u64,
    /// Author-key, chip-id masking and signing-key flags.
    pub key_info: KeyInfo,
    /// The guest's 64 bytes of data.
    pub report_data: [u8; 64],
    /// Launch measurement.
    pub measurement: [u8; 48],
    /// Data the hypervisor gave at launch (tsuba: the initdata digest).
    pub host_data: [u8; 32],
    /// SHA-384 of the ID public key.
    pub id_key_digest: [u8; 48],
    /// SHA-384 of the author public key.
    pub author_key_digest: [u8; 48],
    /// Report id of this guest.
    pub report_id: [u8; 32],
    /// Report id of this guest's migration agent.
    pub report_id_ma: [u8; 32],
    /// TCB used to derive the VCEK that signed this report.
    pub reported_tcb: TcbVersion,
    /// CPUID identification (`None` in version 2 reports).
    pub cpuid: Option<CpuId>,
    /// Chip identifier (zero when masked).
    pub chip_id: [u8; 64],
    /// Committed TCB.
    pub committed_tcb: TcbVersion,
    /// Current firmware version.
    pub current_version: FirmwareVersion,
    /// Committed firmware version.
    pub committed_version: FirmwareVersion,
    /// Current TCB when the guest was launched.
    pub launch_tcb: TcbVersion,
    /// Mitigation vector at launch (version 5 only).
    pub launch_mit_vector: Option<u64>,
    /// Current mitigation vector (version 5 only).
    pub current_mit_vector: Option<u64>,
    /// The signature over bytes 0x000 to 0x29F.
    pub signature: SnpSignature,
}

impl SnpReport {
    /// Parse one report. The input must be exactly [`SNP_REPORT_LEN`] bytes.
    pub fn parse(raw: &[u8]) -> Result<Self, SnpReportError> {
        if raw.len() != SNP_REPORT_LEN {
            return Err(SnpReportError::Length(raw.len()));
        }
        // The length is checked above, so every read below is in bounds; a failure can only be
        // a bug here, reported as a length error rather than a panic.
        parse_fields(raw).ok_or(SnpReportError::Length(raw.len()))?
    }

    /// The layout of the TCB_VERSION fields: from the CPUID family when present, else from the
    /// shape of the chip id (a Turin chip id uses only its first 8 bytes).
    pub fn tcb_layout(&self) -> TcbLayout {
        match self.cpuid {
            Some(CpuId { family, .. }) if family >= 0x1A => TcbLayout::Turin,
            Some(_) => TcbLayout::Legacy,
            None => {
                let (head, tail) = self.chip_id.split_at(8);
                if tail.iter().all(|b| *b == 0) && head.iter().any(|b| *b != 0) {
                    TcbLayout::Turin
                } else {
                    TcbLayout::Legacy
                }
            }
        }
    }

    /// Serialise to the 1184-byte wire form (reserved bytes zero).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(SNP_REPORT_LEN);
        w.u32(self.version.number())
            .u32(self.guest_svn)
            .u64(self.policy.0)
            .bytes(&self.family_id)
            .bytes(&self.image_id)
            .u32(self.vmpl)
            .u32(self.signature_algo)
            .u64(self.current_tcb.0)
            .u64(self.platform_info)
            .u32(self.key_info.0)
            .zeros(4)
            .bytes(&self.report_data)
            .bytes(&self.measurement)
            .bytes(&self.host_data)
            .bytes(&self.id_key_digest)
            .bytes(&self.author_key_digest)
            .bytes(&self.report_id)
            .bytes(&self.report_id_ma)
            .u64(self.reported_tcb.0);
        match (self.version, self.cpuid) {
            (SnpReportVersion::V2, _) | (_, None) => w.zeros(24),
            (_, Some(c)) => w.u8(c.family).u8(c.model).u8(c.stepping).zeros(21),
        };
        w.bytes(&self.chip_id)
            .u64(self.committed_tcb.0)
            .u8(self.current_version.build)
            .u8(self.current_version.minor)
            .u8(self.current_version.major)
            .zeros(1)
            .u8(self.committed_version.build)
            .u8(self.committed_version.minor)
            .u8(self.committed_version.major)
            .zeros(1)
            .u64(self.launch_tcb.0);
        if self.version == SnpReportVersion::V5 {
            w.u64(self.launch_mit_vector.unwrap_or(0))
                .u64(self.current_mit_vector.unwrap_or(0));
        }
        let pad = SNP_SIGNED_LEN.saturating_sub(w.len());
        w.zeros(pad)
            .bytes(&self.signature.r)
            .bytes(&self.signature.s);
        let pad = SNP_REPORT_LEN.saturating_sub(w.len());
        w.zeros(pad);
        w.into_vec()
    }
}

fn parse_fields(raw: &[u8]) -> Option<Result<SnpReport, SnpReportError>> {
    let mut r = Reader::new(raw);
    let version = match SnpReportVersion::from_number(r.u32()?) {
        Ok(v) => v,
        Err(e) => return Some(Err(e)),
    };
    let guest_svn = r.u32()?;
    let policy = GuestPolicy(r.u64()?);
    let family_id = r.array()?;
    let image_id = r.array()?;
    let vmpl = r.u32()?;
    let signature_algo = r.u32()?;
    let current_tcb = TcbVersion(r.u64()?);
    let platform_info = r.u64()?;
    let key_info = KeyInfo(r.u32()?);
    r.skip(4)?;
    let report_data = r.array()?;
    let measurement = r.array()?;
    let host_data = r.array()?;
    let id_key_digest = r.array()?;
    let author_key_digest = r.array()?;
    let report_id = r.array()?;
    let report_id_ma = r.array()?;
    let reported_tcb = TcbVersion(r.u64()?);
    let cpuid_bytes: [u8; 3] = r.array()?;
    r.skip(21)?;
    let cpuid = (version != SnpReportVersion::V2).then_some(CpuId {
        family: cpuid_bytes[0],
        model: cpuid_bytes[1],
        stepping: cpuid_bytes[2],
    });
    let chip_id = r.array()?;
    let committed_tcb = TcbVersion(r.u64()?);
    let [build, minor, major, _] = r.array::<4>()?;
    let current_version = FirmwareVersion {
        major,
        minor,
        build,
    };
    let [build, minor, major, _] = r.array::<4>()?;
    let committed_version = FirmwareVersion {
        major,
        minor,
        build,
    };
    let launch_tcb = TcbVersion(r.u64()?);
    let (launch_mit_vector, current_mit_vector) = if version == SnpReportVersion::V5 {
        (Some(r.u64()?), Some(r.u64()?))
    } else {
        (None, None)
    };
    r.skip(SNP_SIGNED_LEN.checked_sub(r.position())?)?;
    let sig_r = r.array()?;
    let sig_s = r.array()?;
    Some(Ok(SnpReport {
        version,
        guest_svn,
        policy,
        family_id,
        image_id,
        vmpl,
        signature_algo,
        current_tcb,
        platform_info,
        key_info,
        report_data,
        measurement,
        host_data,
        id_key_digest,
        author_key_digest,
        report_id,
        report_id_ma,
        reported_tcb,
        cpuid,
        chip_id,
        committed_tcb,
        current_version,
        committed_version,
        launch_tcb,
        launch_mit_vector,
        current_mit_vector,
        signature: SnpSignature { r: sig_r, s: sig_s },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/testdata/real-evidence/snp/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }

    fn milan_hex_report() -> Vec<u8> {
        let text = String::from_utf8(testdata("sev-report_milan.hex")).unwrap();
        hex::decode(text.trim()).unwrap()
    }

    /// The `sev` crate is the reference parser; each field of ours must equal its view.
    fn assert_matches_sev(raw: &[u8]) {
        use sev::parser::ByteParser;
        let ours = SnpReport::parse(raw).unwrap();
        let theirs = sev::firmware::guest::AttestationReport::from_bytes(raw).unwrap();
        assert_eq!(ours.version.number(), theirs.version);
        assert_eq!(ours.guest_svn, theirs.guest_svn);
        assert_eq!(ours.policy.0, u64::from(theirs.policy));
        assert_eq!(ours.policy.debug(), theirs.policy.debug_allowed());
        assert_eq!(ours.policy.smt(), theirs.policy.smt_allowed());
        assert_eq!(ours.family_id, theirs.family_id);
        assert_eq!(ours.image_id, theirs.image_id);
        assert_eq!(ours.vmpl, theirs.vmpl);
        assert_eq!(ours.signature_algo, theirs.sig_algo);
        assert_eq!(ours.platform_info, u64::from(theirs.plat_info));
        assert_eq!(ours.key_info.0, u32::from(theirs.key_info));
        assert_eq!(ours.report_data, theirs.report_data);
        assert_eq!(ours.measurement, theirs.measurement);
        assert_eq!(ours.host_data, theirs.host_data);
        assert_eq!(ours.id_key_digest, theirs.id_key_digest);
        assert_eq!(ours.author_key_digest, theirs.author_key_digest);
        assert_eq!(ours.report_id, theirs.report_id);
        assert_eq!(ours.report_id_ma, theirs.report_id_ma);
        assert_eq!(ours.chip_id, theirs.chip_id);
        assert_eq!(ours.cpuid.map(|c| c.family), theirs.cpuid_fam_id);
        assert_eq!(ours.cpuid.map(|c| c.model), theirs.cpuid_mod_id);
        assert_eq!(ours.cpuid.map(|c| c.stepping), theirs.cpuid_step);
        assert_eq!(ours.launch_mit_vector, theirs.launch_mit_vector);
        assert_eq!(ours.current_mit_vector, theirs.current_mit_vector);
        assert_eq!(
            (
                ours.current_version.major,
                ours.current_version.minor,
                ours.current_version.build
            ),
            (
                theirs.current.major,
                theirs.current.minor,
                theirs.current.build
            )
        );
        assert_eq!(
            (
                ours.committed_version.major,
                ours.committed_version.minor,
                ours.committed_version.build
            ),
            (
                theirs.committed.major,
                theirs.committed.minor,
                theirs.committed.build
            )
        );
        let layout = ours.tcb_layout();
        for (mine, sev_tcb) in [
            (ours.current_tcb, theirs.current_tcb),
            (ours.reported_tcb, theirs.reported_tcb),
            (ours.committed_tcb, theirs.committed_tcb),
            (ours.launch_tcb, theirs.launch_tcb),
        ] {
            let p = mine.parts(layout);
            assert_eq!(p.fmc, sev_tcb.fmc);
            assert_eq!(p.bootloader, sev_tcb.bootloader);
            assert_eq!(p.tee, sev_tcb.tee);
            assert_eq!(p.snp, sev_tcb.snp);
            assert_eq!(p.microcode, sev_tcb.microcode);
        }
        assert_eq!(&ours.signature.r, theirs.signature.r());
        assert_eq!(&ours.signature.s, theirs.signature.s());
    }

    #[test]
    fn real_reports_parse_like_the_sev_crate() {
        for raw in [
            testdata("trustee-test-report.bin"),
            testdata("trustee-test-vlek-report.bin"),
            milan_hex_report(),
        ] {
            assert_matches_sev(&raw);
        }
    }

    #[test]
    fn real_reports_round_trip_byte_for_byte() {
        for raw in [
            testdata("trustee-test-report.bin"),
            testdata("trustee-test-vlek-report.bin"),
            milan_hex_report(),
        ] {
            let report = SnpReport::parse(&raw).unwrap();
            assert_eq!(report.to_bytes(), raw);
        }
    }

    #[test]
    fn trustee_report_fields() {
        let report = SnpReport::parse(&testdata("trustee-test-report.bin")).unwrap();
        assert_eq!(report.version, SnpReportVersion::V2);
        assert_eq!(report.cpuid, None);
        assert_eq!(report.signature_algo, SNP_SIG_ALGO_ECDSA_P384_SHA384);
        assert_eq!(report.key_info.signing_key(), SigningKey::Vcek);
        assert_eq!(report.tcb_layout(), TcbLayout::Legacy);
        // Bit 17 is always set by hardware.
        assert_ne!(report.policy.0 & GuestPolicy::RESERVED_MUST_BE_ONE, 0);
        assert!(report.signature.to_p384_be().is_some());
        let vlek = SnpReport::parse(&testdata("trustee-test-vlek-report.bin")).unwrap();
        assert_eq!(vlek.key_info.signing_key(), SigningKey::Vlek);
    }

    #[test]
    fn truncated_and_oversized_are_length_errors() {
        let raw = testdata("trustee-test-report.bin");
        assert_eq!(
            SnpReport::parse(&raw[..SNP_REPORT_LEN - 1]),
            Err(SnpReportError::Length(SNP_REPORT_LEN - 1))
        );
        assert_eq!(SnpReport::parse(&[]), Err(SnpReportError::Length(0)));
        let mut long = raw.clone();
        long.push(0);
        assert_eq!(
            SnpReport::parse(&long),
            Err(SnpReportError::Length(SNP_REPORT_LEN + 1))
        );
    }

    #[test]
    fn unknown_versions_are_refused() {
        let mut raw = testdata("trustee-test-report.bin");
        for v in [0u32, 1, 4, 6, u32::MAX] {
            raw[..4].copy_from_slice(&v.to_le_bytes());
            assert_eq!(
                SnpReport::parse(&raw),
                Err(SnpReportError::UnsupportedVersion(v))
            );
        }
    }

    #[test]
    fn v5_fields_round_trip_and_sev_agrees() {
        let mut report = SnpReport::parse(&milan_hex_report()).unwrap();
        report.version = SnpReportVersion::V5;
        report.cpuid = Some(CpuId {
            family: 0x19,
            model: 0x11,
            stepping: 1,
        });
        report.launch_mit_vector = Some(0x1122_3344_5566_7788);
        report.current_mit_vector = Some(0x99);
        let raw = report.to_bytes();
        assert_eq!(raw.len(), SNP_REPORT_LEN);
        assert_eq!(&raw[0x1F8..0x200], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(raw[0x188], 0x19);
        assert_eq!(SnpReport::parse(&raw).unwrap(), report);
        assert_matches_sev(&raw);
    }

    #[test]
    fn tcb_layouts() {
        let t = TcbVersion(u64::from_le_bytes([1, 2, 3, 4, 5, 6, 7, 8]));
        let legacy = t.parts(TcbLayout::Legacy);
        assert_eq!(
            (
                legacy.fmc,
                legacy.bootloader,
                legacy.tee,
                legacy.snp,
                legacy.microcode
            ),
            (None, 1, 2, 7, 8)
        );
        let turin = t.parts(TcbLayout::Turin);
        assert_eq!(
            (
                turin.fmc,
                turin.bootloader,
                turin.tee,
                turin.snp,
                turin.microcode
            ),
            (Some(1), 2, 3, 4, 8)
        );
        assert_eq!(
            TcbVersion::from_parts(turin, TcbLayout::Turin).0,
            u64::from_le_bytes([1, 2, 3, 4, 0, 0, 0, 8])
        );
        assert_eq!(
            TcbVersion::from_parts(legacy, TcbLayout::Legacy).0,
            u64::from_le_bytes([1, 2, 0, 0, 0, 0, 7, 8])
        );
    }

    #[test]
    fn signature_scalars_convert_both_ways() {
        let mut r = [0u8; 48];
        let mut s = [0u8; 48];
        r[0] = 0xAB;
        r[47] = 0x01;
        s[10] = 0x7F;
        let sig = SnpSignature::from_p384_be(&r, &s);
        assert_eq!(sig.r[0], 0x01);
        assert_eq!(sig.r[47], 0xAB);
        assert_eq!(sig.to_p384_be(), Some((r, s)));
        let mut wide = sig;
        wide.s[48] = 1;
        assert_eq!(wide.to_p384_be(), None);
    }

    #[test]
    fn key_info_bits() {
        let k = KeyInfo::new(SigningKey::Vlek, true, false);
        assert_eq!(k.0, 0b101);
        assert!(k.author_key_en());
        assert!(!k.mask_chip_key());
        assert_eq!(KeyInfo(7 << 2).signing_key(), SigningKey::None);
        assert_eq!(KeyInfo(3 << 2).signing_key(), SigningKey::Reserved(3));
    }
}
