//! The SEV-SNP launch digest: what the AMD-SP reports as `MEASUREMENT` for a QEMU launch.
//!
//! The AMD-SP folds every page QEMU hands to `SNP_LAUNCH_UPDATE` into a running SHA-384 over
//! `PAGE_INFO` structures (SNP firmware ABI, "PAGE_INFO"; 0x70 bytes: the digest so far, the
//! page's contents digest, length, page type, IMI flag, VMPL permissions and GPA). QEMU's order:
//! 1. the whole firmware image as normal pages, from its GPA upwards;
//! 2. each SEV metadata section in firmware order: SEC memory and the SVSM calling area as zero
//!    pages, the secrets page, the CPUID page, and the kernel-hashes page (the hashes table in a
//!    normal page when measured direct boot is on, else a zero page);
//! 3. one VMSA page per vCPU (the boot processor's, then the application processors').
//!
//! The VMSA pages come from the `sev` crate's measurement module, which builds the SEV-ES save
//! area QEMU/KVM set up (segment registers, the CPUID signature in RDX, the SEV features). The
//! rest (image parsing with typed refusals, the digest chain, the hashes table) is owned here.

use std::fmt;
use std::num::NonZeroU32;

use serde::{Serialize, Serializer};
use sev::measurement::vmsa::{GuestFeatures as SevGuestFeatures, VMMType, VMSA};
use sev::parser::ByteParser;
use sha2::{Digest, Sha384};

use crate::kernel_hashes::{KernelHashes, PADDED_TABLE_LEN};
use crate::ovmf::{Firmware, OvmfError, PAGE_SIZE, SevSectionKind, len_u64, usize_from};
use crate::vcpu::{GuestFeatures, VcpuType};

/// The most vCPUs a launch may have (KVM's limit).
pub const MAX_VCPUS: u32 = 4096;

/// `PAGE_INFO` page types.
const PAGE_TYPE_NORMAL: u8 = 0x01;
const PAGE_TYPE_VMSA: u8 = 0x02;
const PAGE_TYPE_ZERO: u8 = 0x03;
const PAGE_TYPE_SECRETS: u8 = 0x05;
const PAGE_TYPE_CPUID: u8 = 0x06;
/// VMSA pages are measured at GPA `-1` page-aligned and cut to 52 bits.
const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;
const PAGE_INFO_LEN: usize = 0x70;

/// Errors from computing an SNP launch digest.
#[derive(Debug, thiserror::Error)]
pub enum SnpError {
    /// The firmware image's SEV structures are malformed.
    #[error("firmware cannot be measured for snp")]
    Firmware(#[source] OvmfError),
    /// The firmware has no SEV metadata, so it cannot launch an SNP guest.
    #[error("firmware has no sev metadata: it cannot launch an snp guest")]
    NoSevMetadata,
    /// A kernel was given but the firmware cannot measure it: without an SNP kernel-hashes
    /// section the kernel, initrd and command line would run unmeasured.
    #[error(
        "firmware has no snp kernel-hashes section: a launch with a kernel would leave the \
         kernel, initrd and command line unmeasured (use the AmdSev OVMF build)"
    )]
    MissingKernelHashes,
    /// The kernel-hashes section and the hashes-table address disagree.
    #[error(
        "firmware kernel-hashes table at {table_gpa:#x} does not fit in its section at \
         {section_gpa:#x}"
    )]
    BadKernelHashesSection {
        /// Address from the footer table.
        table_gpa: u64,
        /// Start of the kernel-hashes section.
        section_gpa: u64,
    },
    /// The vCPU count is zero or above [`MAX_VCPUS`].
    #[error("vcpu count {0} is out of range 1..={MAX_VCPUS}")]
    VcpuCount(u32),
    /// The `sev` crate could not build the VMSA pages.
    #[error("building the vmsa pages failed")]
    Vmsa(#[source] sev::error::MeasurementError),
    /// The firmware's SEV-ES reset block has a zero entry point, so APs cannot start.
    #[error("firmware sev-es reset block has a zero entry point")]
    ZeroResetEip,
}

/// The parameters of an SNP launch that the digest depends on, besides the images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SnpLaunch {
    /// Number of vCPUs (one VMSA each).
    pub vcpus: NonZeroU32,
    /// The vCPU model (its CPUID signature is in each VMSA).
    pub vcpu_type: VcpuType,
    /// SEV features in each VMSA.
    pub guest_features: GuestFeatures,
}

/// A 48-byte SNP launch digest (the report's `MEASUREMENT`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SnpLaunchDigest(pub [u8; 48]);

impl SnpLaunchDigest {
    /// Lowercase hex, as `sev-snp-measure` prints it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for SnpLaunchDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SnpLaunchDigest({})", self.to_hex())
    }
}

impl Serialize for SnpLaunchDigest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

/// The running `PAGE_INFO` chain.
struct Chain([u8; 48]);

impl Chain {
    fn update(&mut self, page_type: u8, gpa: u64, contents: &[u8; 48]) {
        let mut info = [0u8; PAGE_INFO_LEN];
        info[..48].copy_from_slice(&self.0);
        info[48..96].copy_from_slice(contents);
        info[96..98].copy_from_slice(&0x70u16.to_le_bytes());
        info[98] = page_type;
        // 99: IMI page = 0; 100..103: VMPL3..1 permissions = 0; 103: reserved.
        info[104..112].copy_from_slice(&gpa.to_le_bytes());
        self.0 = Sha384::digest(info).into();
    }

    fn zero_pages(&mut self, page_type: u8, gpa: u64, size: u64) {
        let mut at = 0;
        while at < size {
            self.update(page_type, gpa + at, &[0u8; 48]);
            at += PAGE_SIZE;
        }
    }
}

/// Computes the launch digest of `firmware` with an optional measured direct boot.
///
/// `kernel_hashes` must be `Some` whenever QEMU is given a kernel: the firmware then has to carry
/// an SNP kernel-hashes section, or the launch is refused ([`SnpError::MissingKernelHashes`]).
pub fn snp_launch_digest(
    firmware: &Firmware,
    launch: &SnpLaunch,
    kernel_hashes: Option<&KernelHashes>,
) -> Result<SnpLaunchDigest, SnpError> {
    let vcpus = launch.vcpus.get();
    if vcpus > MAX_VCPUS {
        return Err(SnpError::VcpuCount(vcpus));
    }
    let sections = firmware.sev_sections().map_err(SnpError::Firmware)?;
    if sections.is_empty() {
        return Err(SnpError::NoSevMetadata);
    }
    let has_hashes_section = sections
        .iter()
        .any(|s| s.kind == SevSectionKind::SnpKernelHashes);
    if kernel_hashes.is_some() && !has_hashes_section {
        return Err(SnpError::MissingKernelHashes);
    }
    let reset_eip = firmware.sev_es_reset_eip().map_err(SnpError::Firmware)?;
    if reset_eip == 0 {
        return Err(SnpError::ZeroResetEip);
    }

    let mut chain = Chain([0u8; 48]);
    let page_digests = page_digests(firmware.bytes());
    for (i, d) in page_digests.iter().enumerate() {
        chain.update(PAGE_TYPE_NORMAL, firmware.gpa() + len_u64(i) * PAGE_SIZE, d);
    }

    for s in &sections {
        match s.kind {
            SevSectionKind::SnpSecMem | SevSectionKind::SvsmCaa => {
                chain.zero_pages(PAGE_TYPE_ZERO, s.gpa, s.size);
            }
            SevSectionKind::SnpSecrets => chain.update(PAGE_TYPE_SECRETS, s.gpa, &[0u8; 48]),
            SevSectionKind::Cpuid => chain.update(PAGE_TYPE_CPUID, s.gpa, &[0u8; 48]),
            SevSectionKind::SnpKernelHashes => match kernel_hashes {
                None => chain.zero_pages(PAGE_TYPE_ZERO, s.gpa, s.size),
                Some(h) => {
                    let page = hashes_page(firmware, s.gpa, s.size, h)?;
                    chain.update(PAGE_TYPE_NORMAL, s.gpa, &Sha384::digest(page).into());
                }
            },
        }
    }

    let [bsp, ap] = vmsa_digests(u64::from(reset_eip), launch)?;
    chain.update(PAGE_TYPE_VMSA, VMSA_GPA, &bsp);
    for _ in 1..vcpus {
        chain.update(PAGE_TYPE_VMSA, VMSA_GPA, &ap);
    }
    Ok(SnpLaunchDigest(chain.0))
}

/// The page QEMU fills for measured direct boot: the hashes table at the firmware's table
/// address, zeros elsewhere. The section must be exactly the one page holding the table.
fn hashes_page(
    firmware: &Firmware,
    section_gpa: u64,
    section_size: u64,
    hashes: &KernelHashes,
) -> Result<Vec<u8>, SnpError> {
    let table_gpa = firmware
        .sev_hashes_table_gpa()
        .map_err(SnpError::Firmware)?
        .ok_or(SnpError::MissingKernelHashes)?;
    let bad = SnpError::BadKernelHashesSection {
        table_gpa,
        section_gpa,
    };
    let offset = table_gpa
        .checked_sub(section_gpa)
        .filter(|&o| section_size == PAGE_SIZE && o + len_u64(PADDED_TABLE_LEN) <= PAGE_SIZE)
        .and_then(usize_from)
        .ok_or(bad)?;
    let mut page = vec![0u8; 4096];
    page[offset..offset + PADDED_TABLE_LEN].copy_from_slice(&hashes.table());
    Ok(page)
}

/// SHA-384 of every 4 KiB page of `image`, hashed on up to four threads (the chain that
/// consumes them is sequential, the page hashes are not).
fn page_digests(image: &[u8]) -> Vec<[u8; 48]> {
    let pages: Vec<&[u8]> = image.chunks(4096).collect();
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .clamp(1, 4);
    let per_thread = pages.len().div_ceil(threads).max(1);
    let mut out = vec![[0u8; 48]; pages.len()];
    std::thread::scope(|scope| {
        for (dst, src) in out.chunks_mut(per_thread).zip(pages.chunks(per_thread)) {
            scope.spawn(move || {
                for (d, p) in dst.iter_mut().zip(src) {
                    *d = Sha384::digest(p).into();
                }
            });
        }
    });
    out
}

/// Digests of the boot processor's VMSA and of an application processor's VMSA.
fn vmsa_digests(reset_eip: u64, launch: &SnpLaunch) -> Result<[[u8; 48]; 2], SnpError> {
    let features = SevGuestFeatures::from_bytes(&launch.guest_features.0.to_le_bytes())
        .map_err(|e| SnpError::Vmsa(e.into()))?;
    let vmsa = VMSA::new(
        reset_eip,
        launch.vcpu_type.cpu_type(),
        VMMType::QEMU,
        Some(u64::from(launch.vcpus.get())),
        features,
    );
    let pages = vmsa.pages(2).map_err(SnpError::Vmsa)?;
    match pages.as_slice() {
        [bsp, ap] => Ok([Sha384::digest(bsp).into(), Sha384::digest(ap).into()]),
        _ => Err(SnpError::ZeroResetEip),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovmf::tests::{
        hashes_table_entry, image_with_table, reset_block, sev_metadata_entry, write_sev_metadata,
    };

    fn launch(vcpus: u32, vcpu_type: &str) -> SnpLaunch {
        SnpLaunch {
            vcpus: NonZeroU32::new(vcpus).unwrap(),
            vcpu_type: vcpu_type.parse().unwrap(),
            guest_features: GuestFeatures::default(),
        }
    }

    /// A 4-page image with SEC memory, secrets, CPUID and (optionally) a kernel-hashes page.
    fn image(with_hashes: bool, table_gpa: u32) -> Firmware {
        let mut entries = vec![reset_block(0x0080_b004), sev_metadata_entry(0x800)];
        let mut items = vec![
            (0x80_0000, 0x2000, 1),
            (0x80_2000, 0x1000, 2),
            (0x80_3000, 0x1000, 3),
        ];
        if with_hashes {
            entries.push(hashes_table_entry(table_gpa, 0x400));
            items.push((0x80_4000, 0x1000, 0x10));
        }
        let mut img = image_with_table(4, &entries);
        write_sev_metadata(&mut img, 0x800, &items);
        Firmware::parse(img).unwrap()
    }

    #[test]
    fn page_info_chain_matches_the_abi_layout() {
        // One update from zero, recomputed by hand from the PAGE_INFO layout.
        let mut c = Chain([0u8; 48]);
        c.update(PAGE_TYPE_ZERO, 0x1234_5000, &[0u8; 48]);
        let mut info = vec![0u8; 96];
        info.extend_from_slice(&[0x70, 0x00, 0x03, 0x00, 0, 0, 0, 0]);
        info.extend_from_slice(&0x1234_5000u64.to_le_bytes());
        assert_eq!(info.len(), 0x70);
        let expect: [u8; 48] = Sha384::digest(&info).into();
        assert_eq!(c.0, expect);
    }

    #[test]
    fn parallel_page_hashing_matches_sequential() {
        let img: Vec<u8> = (0..37 * 4096)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        let par = page_digests(&img);
        assert_eq!(par.len(), 37);
        for (i, d) in par.iter().enumerate() {
            let seq: [u8; 48] = Sha384::digest(&img[i * 4096..(i + 1) * 4096]).into();
            assert_eq!(*d, seq, "page {i}");
        }
    }

    #[test]
    fn every_input_changes_the_digest() {
        let fw = image(true, 0x80_4010);
        let hashes = KernelHashes::of(b"kernel", Some(b"initrd"), Some("console=ttyS0"));
        let base = snp_launch_digest(&fw, &launch(2, "EPYC-Milan"), Some(&hashes)).unwrap();
        let variants = [
            snp_launch_digest(&fw, &launch(3, "EPYC-Milan"), Some(&hashes)).unwrap(),
            snp_launch_digest(&fw, &launch(2, "EPYC-Genoa"), Some(&hashes)).unwrap(),
            snp_launch_digest(&fw, &launch(2, "EPYC-Milan"), None).unwrap(),
            snp_launch_digest(
                &fw,
                &SnpLaunch {
                    guest_features: GuestFeatures(0x21),
                    ..launch(2, "EPYC-Milan")
                },
                Some(&hashes),
            )
            .unwrap(),
            snp_launch_digest(
                &fw,
                &launch(2, "EPYC-Milan"),
                Some(&KernelHashes::of(
                    b"kernel",
                    Some(b"initrd"),
                    Some("console=ttyS1"),
                )),
            )
            .unwrap(),
            snp_launch_digest(
                &image(true, 0x80_4020),
                &launch(2, "EPYC-Milan"),
                Some(&hashes),
            )
            .unwrap(),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(*v, base, "variant {i}");
        }
        // Deterministic.
        assert_eq!(
            snp_launch_digest(&fw, &launch(2, "EPYC-Milan"), Some(&hashes)).unwrap(),
            base
        );
    }

    #[test]
    fn kernel_without_hashes_section_is_refused() {
        let fw = image(false, 0);
        let hashes = KernelHashes::of(b"k", None, None);
        assert!(matches!(
            snp_launch_digest(&fw, &launch(1, "EPYC"), Some(&hashes)),
            Err(SnpError::MissingKernelHashes)
        ));
        snp_launch_digest(&fw, &launch(1, "EPYC"), None).unwrap();
    }

    #[test]
    fn hashes_table_outside_its_section_is_refused() {
        let hashes = KernelHashes::of(b"k", None, None);
        for table_gpa in [0x80_3ff0, 0x80_4f80, 0x80_5000] {
            let fw = image(true, table_gpa);
            assert!(
                matches!(
                    snp_launch_digest(&fw, &launch(1, "EPYC"), Some(&hashes)),
                    Err(SnpError::BadKernelHashesSection { .. })
                ),
                "{table_gpa:#x}"
            );
        }
        // A zero table address means the firmware reserved no table.
        let fw = image(true, 0);
        assert!(matches!(
            snp_launch_digest(&fw, &launch(1, "EPYC"), Some(&hashes)),
            Err(SnpError::MissingKernelHashes)
        ));
    }

    #[test]
    fn firmware_without_sev_metadata_or_reset_block_is_refused() {
        let fw = Firmware::parse(image_with_table(2, &[reset_block(0x1000)])).unwrap();
        assert!(matches!(
            snp_launch_digest(&fw, &launch(1, "EPYC"), None),
            Err(SnpError::NoSevMetadata)
        ));
        let mut img = image_with_table(4, &[sev_metadata_entry(0x800)]);
        write_sev_metadata(&mut img, 0x800, &[(0x80_0000, 0x1000, 1)]);
        let fw = Firmware::parse(img).unwrap();
        assert!(matches!(
            snp_launch_digest(&fw, &launch(1, "EPYC"), None),
            Err(SnpError::Firmware(OvmfError::MissingResetBlock))
        ));
        let mut img = image_with_table(4, &[sev_metadata_entry(0x800), reset_block(0)]);
        write_sev_metadata(&mut img, 0x800, &[(0x80_0000, 0x1000, 1)]);
        let fw = Firmware::parse(img).unwrap();
        assert!(matches!(
            snp_launch_digest(&fw, &launch(1, "EPYC"), None),
            Err(SnpError::ZeroResetEip)
        ));
    }

    #[test]
    fn vcpu_count_is_bounded() {
        let fw = image(false, 0);
        assert!(matches!(
            snp_launch_digest(&fw, &launch(MAX_VCPUS + 1, "EPYC"), None),
            Err(SnpError::VcpuCount(_))
        ));
    }
}
