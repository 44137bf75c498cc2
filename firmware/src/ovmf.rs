//! OVMF firmware image: the footer GUID table, the SEV metadata, the SEV-ES reset block and the
//! SEV kernel-hashes table location.
//!
//! Layout facts (from edk2 `OvmfPkg/ResetVector` and QEMU `hw/i386/pc_sysfw_ovmf.c`):
//! - the image is mapped so that it ends at 4 GiB;
//! - the last 32 bytes hold the reset vector; just before them sits the table footer: a `u16`
//!   total table length (footer included) and the footer GUID;
//! - the table grows downwards from the footer: each entry is its data followed by a `u16`
//!   length (data + 18) and its GUID, so it is walked from the end;
//! - the SEV metadata entry holds a `u32` offset, counted back from the end of the image, of an
//!   `ASEV` header (`u32` length, `u32` version 1, `u32` item count) followed by items of
//!   (`u32` gpa, `u32` size, `u32` type).
//!
//! Parsing is strict: a firmware image is an input that decides what the launch measurement
//! means, so anything out of bounds, misaligned or ambiguous is refused with a typed error.

use std::ops::Range;

/// The largest firmware image accepted (QEMU maps it below 4 GiB; real OVMF builds are 2-4 MiB).
pub const MAX_FIRMWARE_LEN: usize = 32 * 1024 * 1024;

/// Size of a guest page.
pub(crate) const PAGE_SIZE: u64 = 4096;

/// Bytes after the footer entry: the reset vector area at the very end of the image.
const BYTES_AFTER_FOOTER: usize = 32;
/// A table entry's trailer: `u16` length and 16-byte GUID.
const ENTRY_HEADER_LEN: usize = 18;
/// The SEV metadata header: signature, length, version, item count.
const SEV_METADATA_HEADER_LEN: usize = 16;
/// One SEV metadata item: gpa, size, type.
const SEV_METADATA_ITEM_LEN: usize = 12;
/// Top of the firmware mapping.
const FOUR_GIB: u64 = 1 << 32;

/// A GUID in the mixed-endian byte order EFI stores it in.
pub(crate) type Guid = [u8; 16];

/// Encodes a GUID given as its canonical fields into EFI byte order.
pub(crate) const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5],
        d4[6], d4[7],
    ]
}

/// 96b582de-1fb2-45f7-baea-a366c55a082d
const TABLE_FOOTER_GUID: Guid = guid(
    0x96b5_82de,
    0x1fb2,
    0x45f7,
    [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
);
/// 7255371f-3a3b-4b04-927b-1da6efa8d454
const SEV_HASH_TABLE_RV_GUID: Guid = guid(
    0x7255_371f,
    0x3a3b,
    0x4b04,
    [0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4, 0x54],
);
/// 00f771de-1a7e-4fcb-890e-68c77e2fb44e
const SEV_ES_RESET_BLOCK_GUID: Guid = guid(
    0x00f7_71de,
    0x1a7e,
    0x4fcb,
    [0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e],
);
/// dc886566-984a-4798-a75e-5585a7bf67cc
const SEV_METADATA_GUID: Guid = guid(
    0xdc88_6566,
    0x984a,
    0x4798,
    [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc],
);
/// e47a6535-984a-4798-865e-4685a7bf8ec2
pub(crate) const TDX_METADATA_GUID: Guid = guid(
    0xe47a_6535,
    0x984a,
    0x4798,
    [0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2],
);

/// Errors from parsing an OVMF image.
#[derive(Debug, thiserror::Error)]
pub enum OvmfError {
    /// The image is too short to hold a footer table, or truncated below a page multiple.
    #[error("firmware is truncated: {len} bytes")]
    Truncated {
        /// Length of the image.
        len: usize,
    },
    /// The image is larger than [`MAX_FIRMWARE_LEN`].
    #[error("firmware is {len} bytes, the limit is {max}")]
    TooLarge {
        /// Length of the image.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The image's length is not a multiple of the 4 KiB page size.
    #[error("firmware length {len} is not a multiple of 4096")]
    NotPageMultiple {
        /// Length of the image.
        len: usize,
    },
    /// The GUID before the reset vector is not the OVMF table footer GUID: not an OVMF image.
    #[error("firmware has no OVMF footer table (bad footer guid)")]
    BadFooterGuid,
    /// The footer table, or one of its entries, has a length that does not fit.
    #[error("firmware footer table is malformed at offset {offset:#x}")]
    BadTable {
        /// Offset in the image where the bad length was read.
        offset: usize,
    },
    /// The same GUID appears twice in the footer table.
    #[error("firmware footer table has a duplicate entry")]
    DuplicateEntry,
    /// A table entry is shorter than the value it must hold.
    #[error("firmware footer table entry {what} is too short")]
    ShortEntry {
        /// Which entry.
        what: &'static str,
    },
    /// Metadata points outside the image.
    #[error("firmware {what} points outside the file (offset {offset:#x}, length {len:#x})")]
    OutOfBounds {
        /// Which structure.
        what: &'static str,
        /// Offset it points to, counted from the start of the image.
        offset: u64,
        /// Length it claims.
        len: u64,
    },
    /// The SEV metadata header does not start with `ASEV`.
    #[error("firmware sev metadata has a bad signature")]
    BadSevSignature,
    /// The SEV metadata has a version other than 1.
    #[error("firmware sev metadata has unsupported version {0}")]
    UnsupportedSevVersion(u32),
    /// A SEV metadata section has a type this code does not know.
    #[error("firmware sev metadata section has unknown type {0:#x}")]
    UnknownSectionType(u32),
    /// A SEV metadata section is empty, not page aligned or wraps around.
    #[error("firmware sev metadata section at {gpa:#x} (size {size:#x}) is not page aligned")]
    MisalignedSection {
        /// Section start.
        gpa: u32,
        /// Section size.
        size: u32,
    },
    /// The SEV-ES reset block, needed to start application processors, is missing.
    #[error("firmware has no sev-es reset block")]
    MissingResetBlock,
}

/// Kinds of SEV metadata sections (edk2 `OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SevSectionKind {
    /// Memory the SEC phase uses, pre-validated as zero pages.
    SnpSecMem,
    /// The SNP secrets page.
    SnpSecrets,
    /// The CPUID page.
    Cpuid,
    /// The SVSM calling-area page, zero.
    SvsmCaa,
    /// The page holding the kernel/initrd/cmdline hashes table.
    SnpKernelHashes,
}

impl SevSectionKind {
    fn from_raw(raw: u32) -> Result<Self, OvmfError> {
        match raw {
            1 => Ok(Self::SnpSecMem),
            2 => Ok(Self::SnpSecrets),
            3 => Ok(Self::Cpuid),
            4 => Ok(Self::SvsmCaa),
            0x10 => Ok(Self::SnpKernelHashes),
            other => Err(OvmfError::UnknownSectionType(other)),
        }
    }
}

/// One SEV metadata section: a guest-physical range and what the launch puts there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SevSection {
    /// Guest-physical start (page aligned).
    pub gpa: u64,
    /// Size in bytes (a non-zero multiple of 4096).
    pub size: u64,
    /// What the section holds.
    pub kind: SevSectionKind,
}

/// A parsed OVMF image: its bytes and its footer table.
#[derive(Debug, Clone)]
pub struct Firmware {
    bytes: Vec<u8>,
    /// (GUID, data range in `bytes`), in table order from the footer down.
    table: Vec<(Guid, Range<usize>)>,
}

impl Firmware {
    /// Parses the footer table of an OVMF image. The SEV and TDX metadata are parsed on demand,
    /// so that an image usable for one TEE is not refused for the other's defects.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, OvmfError> {
        let len = bytes.len();
        if len > MAX_FIRMWARE_LEN {
            return Err(OvmfError::TooLarge {
                len,
                max: MAX_FIRMWARE_LEN,
            });
        }
        if len < BYTES_AFTER_FOOTER + ENTRY_HEADER_LEN || len < 4096 {
            return Err(OvmfError::Truncated { len });
        }
        if !len.is_multiple_of(4096) {
            return Err(OvmfError::NotPageMultiple { len });
        }
        let table = parse_footer_table(&bytes)?;
        Ok(Self { bytes, table })
    }

    /// The image bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The guest-physical address the image is mapped at (it ends at 4 GiB).
    pub fn gpa(&self) -> u64 {
        FOUR_GIB - len_u64(self.bytes.len())
    }

    fn entry(&self, guid: &Guid) -> Option<&[u8]> {
        self.table
            .iter()
            .find(|(g, _)| g == guid)
            .map(|(_, range)| &self.bytes[range.clone()])
    }

    fn entry_u32(&self, guid: &Guid, what: &'static str) -> Result<Option<u32>, OvmfError> {
        match self.entry(guid) {
            None => Ok(None),
            Some(data) => read_u32(data, 0)
                .map(Some)
                .ok_or(OvmfError::ShortEntry { what }),
        }
    }

    /// The SEV-ES reset block's entry point for application processors (its `u32` EIP).
    pub fn sev_es_reset_eip(&self) -> Result<u32, OvmfError> {
        self.entry_u32(&SEV_ES_RESET_BLOCK_GUID, "sev-es reset block")?
            .ok_or(OvmfError::MissingResetBlock)
    }

    /// Where the firmware expects the kernel-hashes table: `Some(gpa)` only when the image
    /// reserves a non-zero address for it (plain OVMF carries the entry with address 0).
    pub fn sev_hashes_table_gpa(&self) -> Result<Option<u64>, OvmfError> {
        Ok(self
            .entry_u32(&SEV_HASH_TABLE_RV_GUID, "sev hashes table")?
            .filter(|&gpa| gpa != 0)
            .map(u64::from))
    }

    /// The SEV metadata sections, in the order the launch measures them. An image without SEV
    /// metadata has none.
    pub fn sev_sections(&self) -> Result<Vec<SevSection>, OvmfError> {
        let Some(offset_from_end) = self.entry_u32(&SEV_METADATA_GUID, "sev metadata")? else {
            return Ok(Vec::new());
        };
        let len = self.bytes.len();
        let start = usize_from(offset_from_end)
            .and_then(|o| len.checked_sub(o))
            .ok_or(OvmfError::OutOfBounds {
                what: "sev metadata",
                offset: u64::from(offset_from_end),
                len: len_u64(SEV_METADATA_HEADER_LEN),
            })?;
        let header = self
            .bytes
            .get(start..start + SEV_METADATA_HEADER_LEN)
            .ok_or(OvmfError::OutOfBounds {
                what: "sev metadata",
                offset: len_u64(start),
                len: len_u64(SEV_METADATA_HEADER_LEN),
            })?;
        if &header[..4] != b"ASEV" {
            return Err(OvmfError::BadSevSignature);
        }
        let declared = read_u32(header, 4).unwrap_or(0);
        let version = read_u32(header, 8).unwrap_or(0);
        let count = read_u32(header, 12).unwrap_or(0);
        if version != 1 {
            return Err(OvmfError::UnsupportedSevVersion(version));
        }
        let items_len = u64::from(count) * len_u64(SEV_METADATA_ITEM_LEN);
        let needed = len_u64(SEV_METADATA_HEADER_LEN) + items_len;
        let end = len_u64(start) + needed.max(u64::from(declared));
        if u64::from(declared) < needed || end > len_u64(len) {
            return Err(OvmfError::OutOfBounds {
                what: "sev metadata",
                offset: len_u64(start),
                len: needed.max(u64::from(declared)),
            });
        }
        let items = &self.bytes[start + SEV_METADATA_HEADER_LEN..];
        items
            .chunks_exact(SEV_METADATA_ITEM_LEN)
            .take(usize_from(count).unwrap_or(0))
            .map(|item| {
                let gpa = read_u32(item, 0).unwrap_or(0);
                let size = read_u32(item, 4).unwrap_or(0);
                let kind = SevSectionKind::from_raw(read_u32(item, 8).unwrap_or(0))?;
                let end = u64::from(gpa) + u64::from(size);
                if size == 0
                    || !u64::from(gpa).is_multiple_of(PAGE_SIZE)
                    || !u64::from(size).is_multiple_of(PAGE_SIZE)
                    || end > FOUR_GIB
                {
                    return Err(OvmfError::MisalignedSection { gpa, size });
                }
                Ok(SevSection {
                    gpa: u64::from(gpa),
                    size: u64::from(size),
                    kind,
                })
            })
            .collect()
    }

    /// The TDX metadata entry's `u32` offset from the end of the image, if the image has one.
    pub(crate) fn tdx_metadata_offset(&self) -> Result<Option<u32>, OvmfError> {
        self.entry_u32(&TDX_METADATA_GUID, "tdx metadata")
    }
}

/// Walks the footer table from the end of the image downwards.
fn parse_footer_table(bytes: &[u8]) -> Result<Vec<(Guid, Range<usize>)>, OvmfError> {
    let footer_start = bytes.len() - BYTES_AFTER_FOOTER - ENTRY_HEADER_LEN;
    let footer = &bytes[footer_start..footer_start + ENTRY_HEADER_LEN];
    if footer[2..] != TABLE_FOOTER_GUID {
        return Err(OvmfError::BadFooterGuid);
    }
    let table_len = usize::from(u16::from_le_bytes([footer[0], footer[1]]));
    let data_len = table_len
        .checked_sub(ENTRY_HEADER_LEN)
        .ok_or(OvmfError::BadTable {
            offset: footer_start,
        })?;
    let table_start = footer_start
        .checked_sub(data_len)
        .ok_or(OvmfError::BadTable {
            offset: footer_start,
        })?;

    let mut entries: Vec<(Guid, Range<usize>)> = Vec::new();
    let mut end = footer_start;
    while end > table_start {
        let header_start = end
            .checked_sub(ENTRY_HEADER_LEN)
            .filter(|&s| s >= table_start)
            .ok_or(OvmfError::BadTable { offset: end })?;
        let header = &bytes[header_start..end];
        let entry_len = usize::from(u16::from_le_bytes([header[0], header[1]]));
        let entry_start = end
            .checked_sub(entry_len)
            .filter(|&s| s >= table_start && entry_len >= ENTRY_HEADER_LEN)
            .ok_or(OvmfError::BadTable {
                offset: header_start,
            })?;
        let mut id = [0u8; 16];
        id.copy_from_slice(&header[2..]);
        if entries.iter().any(|(g, _)| *g == id) {
            return Err(OvmfError::DuplicateEntry);
        }
        entries.push((id, entry_start..header_start));
        end = entry_start;
    }
    Ok(entries)
}

pub(crate) fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

pub(crate) fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

/// `usize` to `u64`: lossless on every target this code builds for.
pub(crate) fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

pub(crate) fn usize_from(n: impl TryInto<usize>) -> Option<usize> {
    n.try_into().ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a synthetic OVMF-like image of `pages` pages with the given footer table entries
    /// (GUID, data), placed just before the footer, in order from the footer down.
    pub(crate) fn image_with_table(pages: usize, entries: &[(Guid, Vec<u8>)]) -> Vec<u8> {
        let mut img = vec![0u8; pages * 4096];
        let footer_start = img.len() - BYTES_AFTER_FOOTER - ENTRY_HEADER_LEN;
        let mut end = footer_start;
        let mut total = ENTRY_HEADER_LEN;
        for (id, data) in entries {
            let entry_len = data.len() + ENTRY_HEADER_LEN;
            let start = end - entry_len;
            img[start..start + data.len()].copy_from_slice(data);
            let h = start + data.len();
            img[h..h + 2].copy_from_slice(&u16::try_from(entry_len).unwrap().to_le_bytes());
            img[h + 2..h + 18].copy_from_slice(id);
            end = start;
            total += entry_len;
        }
        img[footer_start..footer_start + 2]
            .copy_from_slice(&u16::try_from(total).unwrap().to_le_bytes());
        img[footer_start + 2..footer_start + 18].copy_from_slice(&TABLE_FOOTER_GUID);
        img
    }

    /// The footer-table entry pointing at SEV metadata `offset_from_end` bytes before the end.
    pub(crate) fn sev_metadata_entry(offset_from_end: u32) -> (Guid, Vec<u8>) {
        (SEV_METADATA_GUID, offset_from_end.to_le_bytes().to_vec())
    }

    /// Writes an `ASEV` header with `items` (gpa, size, type) at `offset_from_end`.
    pub(crate) fn write_sev_metadata(
        img: &mut [u8],
        offset_from_end: usize,
        items: &[(u32, u32, u32)],
    ) {
        let start = img.len() - offset_from_end;
        let total = 16 + 12 * items.len();
        img[start..start + 4].copy_from_slice(b"ASEV");
        img[start + 4..start + 8].copy_from_slice(&u32::try_from(total).unwrap().to_le_bytes());
        img[start + 8..start + 12].copy_from_slice(&1u32.to_le_bytes());
        img[start + 12..start + 16]
            .copy_from_slice(&u32::try_from(items.len()).unwrap().to_le_bytes());
        for (i, (gpa, size, kind)) in items.iter().enumerate() {
            let o = start + 16 + 12 * i;
            img[o..o + 4].copy_from_slice(&gpa.to_le_bytes());
            img[o + 4..o + 8].copy_from_slice(&size.to_le_bytes());
            img[o + 8..o + 12].copy_from_slice(&kind.to_le_bytes());
        }
    }

    pub(crate) fn reset_block(eip: u32) -> (Guid, Vec<u8>) {
        (SEV_ES_RESET_BLOCK_GUID, eip.to_le_bytes().to_vec())
    }

    pub(crate) fn hashes_table_entry(gpa: u32, size: u32) -> (Guid, Vec<u8>) {
        let mut d = gpa.to_le_bytes().to_vec();
        d.extend_from_slice(&size.to_le_bytes());
        (SEV_HASH_TABLE_RV_GUID, d)
    }

    fn sample() -> Vec<u8> {
        let mut img = image_with_table(4, &[reset_block(0x0080_b004), sev_metadata_entry(0x800)]);
        write_sev_metadata(
            &mut img,
            0x800,
            &[
                (0x80_0000, 0x9000, 1),
                (0x80_d000, 0x1000, 2),
                (0x80_e000, 0x1000, 3),
            ],
        );
        img
    }

    #[test]
    fn guid_encoding_is_efi_mixed_endian() {
        // uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le.hex()
        assert_eq!(
            hex::encode(TABLE_FOOTER_GUID),
            "de82b596b21ff745baeaa366c55a082d"
        );
    }

    #[test]
    fn parses_synthetic_table_and_metadata() {
        let fw = Firmware::parse(sample()).unwrap();
        assert_eq!(fw.gpa(), FOUR_GIB - 4 * 4096);
        assert_eq!(fw.sev_es_reset_eip().unwrap(), 0x0080_b004);
        assert_eq!(fw.sev_hashes_table_gpa().unwrap(), None);
        let s = fw.sev_sections().unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[0],
            SevSection {
                gpa: 0x80_0000,
                size: 0x9000,
                kind: SevSectionKind::SnpSecMem
            }
        );
        assert_eq!(s[2].kind, SevSectionKind::Cpuid);
        assert_eq!(fw.tdx_metadata_offset().unwrap(), None);
    }

    #[test]
    fn refuses_truncated_and_oversized_images() {
        assert!(matches!(
            Firmware::parse(vec![0u8; 40]),
            Err(OvmfError::Truncated { len: 40 })
        ));
        assert!(matches!(
            Firmware::parse(Vec::new()),
            Err(OvmfError::Truncated { len: 0 })
        ));
        let mut img = sample();
        img.truncate(img.len() - 100);
        assert!(matches!(
            Firmware::parse(img),
            Err(OvmfError::NotPageMultiple { .. })
        ));
        // Cutting a whole page off the end removes the footer: not an OVMF image any more.
        let mut img = sample();
        img.truncate(img.len() - 4096);
        assert!(matches!(
            Firmware::parse(img),
            Err(OvmfError::BadFooterGuid)
        ));
        assert!(matches!(
            Firmware::parse(vec![0u8; MAX_FIRMWARE_LEN + 4096]),
            Err(OvmfError::TooLarge { .. })
        ));
    }

    #[test]
    fn refuses_bad_footer_guid() {
        let mut img = sample();
        let at = img.len() - BYTES_AFTER_FOOTER - 1;
        img[at] ^= 0xff;
        assert!(matches!(
            Firmware::parse(img),
            Err(OvmfError::BadFooterGuid)
        ));
    }

    #[test]
    fn refuses_table_lengths_that_do_not_fit() {
        let footer_len_at = |img: &Vec<u8>| img.len() - BYTES_AFTER_FOOTER - ENTRY_HEADER_LEN;
        // Table length smaller than the footer itself.
        let mut img = sample();
        let at = footer_len_at(&img);
        img[at..at + 2].copy_from_slice(&5u16.to_le_bytes());
        assert!(matches!(
            Firmware::parse(img),
            Err(OvmfError::BadTable { .. })
        ));
        // Table length larger than the image.
        let mut img = image_with_table(1, &[]);
        let at = footer_len_at(&img);
        img[at..at + 2].copy_from_slice(&0xffffu16.to_le_bytes());
        assert!(matches!(
            Firmware::parse(img),
            Err(OvmfError::BadTable { .. })
        ));
        // An entry whose length runs past the start of the table.
        let mut img = sample();
        let entry_len_at = footer_len_at(&img) - ENTRY_HEADER_LEN;
        img[entry_len_at..entry_len_at + 2].copy_from_slice(&0x300u16.to_le_bytes());
        assert!(matches!(
            Firmware::parse(img),
            Err(OvmfError::BadTable { .. })
        ));
        // An entry with a length below its own header.
        let mut img = sample();
        img[entry_len_at..entry_len_at + 2].copy_from_slice(&3u16.to_le_bytes());
        assert!(matches!(
            Firmware::parse(img),
            Err(OvmfError::BadTable { .. })
        ));
    }

    #[test]
    fn refuses_duplicate_entries() {
        let img = image_with_table(1, &[reset_block(1), reset_block(2)]);
        assert!(matches!(
            Firmware::parse(img),
            Err(OvmfError::DuplicateEntry)
        ));
    }

    #[test]
    fn refuses_sev_metadata_outside_the_file() {
        let img = image_with_table(1, &[(SEV_METADATA_GUID, 0x2000u32.to_le_bytes().to_vec())]);
        let fw = Firmware::parse(img).unwrap();
        assert!(matches!(
            fw.sev_sections(),
            Err(OvmfError::OutOfBounds {
                what: "sev metadata",
                ..
            })
        ));
        // Header inside the file, but its item count runs past the end.
        let mut img = image_with_table(2, &[sev_metadata_entry(0x100)]);
        write_sev_metadata(&mut img, 0x100, &[(0x1000, 0x1000, 1)]);
        let start = img.len() - 0x100;
        img[start + 12..start + 16].copy_from_slice(&1000u32.to_le_bytes());
        let fw = Firmware::parse(img).unwrap();
        assert!(matches!(
            fw.sev_sections(),
            Err(OvmfError::OutOfBounds { .. })
        ));
    }

    #[test]
    fn refuses_bad_sev_metadata_contents() {
        let build = |items: &[(u32, u32, u32)], patch: &dyn Fn(&mut [u8], usize)| {
            let mut img = image_with_table(4, &[sev_metadata_entry(0x800)]);
            write_sev_metadata(&mut img, 0x800, items);
            let start = img.len() - 0x800;
            patch(&mut img, start);
            Firmware::parse(img).unwrap().sev_sections()
        };
        let ok = [(0x80_0000, 0x1000, 1)];
        assert!(matches!(
            build(&ok, &|img, s| img[s] = b'X'),
            Err(OvmfError::BadSevSignature)
        ));
        assert!(matches!(
            build(&ok, &|img, s| img[s + 8] = 2),
            Err(OvmfError::UnsupportedSevVersion(2))
        ));
        assert!(matches!(
            build(&[(0x80_0000, 0x1000, 7)], &|_, _| {}),
            Err(OvmfError::UnknownSectionType(7))
        ));
        assert!(matches!(
            build(&[(0x80_0800, 0x1000, 1)], &|_, _| {}),
            Err(OvmfError::MisalignedSection { .. })
        ));
        assert!(matches!(
            build(&[(0x80_0000, 0, 1)], &|_, _| {}),
            Err(OvmfError::MisalignedSection { .. })
        ));
        assert!(build(&ok, &|_, _| {}).unwrap().len() == 1);
    }

    #[test]
    fn missing_reset_block_and_short_entries_are_typed() {
        let fw = Firmware::parse(image_with_table(1, &[])).unwrap();
        assert!(matches!(
            fw.sev_es_reset_eip(),
            Err(OvmfError::MissingResetBlock)
        ));
        assert!(fw.sev_sections().unwrap().is_empty());
        let fw = Firmware::parse(image_with_table(
            1,
            &[(SEV_ES_RESET_BLOCK_GUID, vec![1, 2])],
        ))
        .unwrap();
        assert!(matches!(
            fw.sev_es_reset_eip(),
            Err(OvmfError::ShortEntry { .. })
        ));
    }
}
