//! TDX: the TDVF metadata of an OVMF image and the MRTD it produces.
//!
//! The TDVF metadata (Intel "TDX Virtual Firmware Design Guide", section 11) is found through the
//! footer-table entry `e47a6535-…`, a `u32` offset counted back from the end of the image, to a
//! `TDVF` descriptor (`u32` length, `u32` version 1, `u32` section count) followed by sections of
//! (`u32` data offset, `u32` raw size, `u64` memory address, `u64` memory size, `u32` type,
//! `u32` attributes).
//!
//! QEMU adds each section to the TD with `KVM_TDX_INIT_MEM_REGION`, in metadata order. For each
//! page the TDX module extends MRTD (a running SHA-384) with a 128-byte `MEM.PAGE.ADD` record
//! (the ASCII name, zero padded to 16 bytes, then the page GPA), unless the section is accepted
//! later (`PAGE_AUG`); when the section has `MR_EXTEND`, it also extends each 256-byte chunk with
//! a 128-byte `MR.EXTEND` record (name, chunk GPA) followed by the chunk's 256 bytes.
//!
//! The interleaving of the two depends on the QEMU/KVM generation ([`TdxPageOrder`]).

use std::fmt;

use serde::{Serialize, Serializer};
use sha2::{Digest, Sha384};

use crate::ovmf::{Firmware, OvmfError, PAGE_SIZE, len_u64, read_u32, read_u64, usize_from};

const DESCRIPTOR_LEN: usize = 16;
const SECTION_LEN: usize = 32;
const ATTR_MR_EXTEND: u32 = 0x1;
const ATTR_PAGE_AUG: u32 = 0x2;
const CHUNK: usize = 256;
/// At most this much memory may be added (measured) at launch: bounds the work a malformed
/// image can cause. Real TDVF images add a few MiB.
const MAX_ADDED_BYTES: u64 = 256 * 1024 * 1024;

/// Errors from parsing TDVF metadata.
#[derive(Debug, thiserror::Error)]
pub enum TdvfError {
    /// The image's footer table is unreadable.
    #[error("firmware footer table is unreadable")]
    Firmware(#[source] OvmfError),
    /// The image has no TDX metadata, so it cannot launch a TD.
    #[error("firmware has no tdx (tdvf) metadata: it cannot launch a tdx guest")]
    NoTdxMetadata,
    /// Metadata points outside the image.
    #[error("firmware tdvf {what} points outside the file (offset {offset:#x}, length {len:#x})")]
    OutOfBounds {
        /// Which structure.
        what: &'static str,
        /// Offset in the image.
        offset: u64,
        /// Length claimed.
        len: u64,
    },
    /// The descriptor does not start with `TDVF`.
    #[error("firmware tdvf descriptor has a bad signature")]
    BadSignature,
    /// The descriptor's version is not 1.
    #[error("firmware tdvf descriptor has unsupported version {0}")]
    UnsupportedVersion(u32),
    /// A section type QEMU does not load (TD-Shim payload types and the like).
    #[error("firmware tdvf section {index} has unsupported type {kind}")]
    UnsupportedSectionType {
        /// Section index.
        index: usize,
        /// Its type.
        kind: u32,
    },
    /// A section is misaligned, smaller than its raw data, wraps, or extends memory it has no
    /// data for.
    #[error("firmware tdvf section {index} is malformed: {why}")]
    BadSection {
        /// Section index.
        index: usize,
        /// What is wrong.
        why: &'static str,
    },
    /// The sections add more memory than [`MAX_ADDED_BYTES`].
    #[error("firmware tdvf sections add more than {MAX_ADDED_BYTES} bytes at launch")]
    TooMuchMemory,
}

/// TDVF section types QEMU loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TdvfSectionKind {
    /// Boot firmware volume (code), copied from the image.
    Bfv,
    /// Configuration firmware volume (variables), copied from the image.
    Cfv,
    /// The TD HOB page(s), built by QEMU.
    TdHob,
    /// Temporary memory, zero.
    TempMem,
    /// Permanent memory, accepted by the guest later.
    PermMem,
}

/// One TDVF section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdvfSection {
    /// Offset of the section's data in the image.
    pub data_offset: u32,
    /// Bytes of data in the image.
    pub raw_size: u32,
    /// Guest-physical start (page aligned).
    pub address: u64,
    /// Guest memory size (page multiple, at least `raw_size`).
    pub size: u64,
    /// What the section is.
    pub kind: TdvfSectionKind,
    /// `MR_EXTEND` (bit 0) and `PAGE_AUG` (bit 1).
    pub attributes: u32,
}

/// The order in which `MEM.PAGE.ADD` and `MR.EXTEND` reach the TDX module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TdxPageOrder {
    /// QEMU >= 9 with upstream KVM: each page is added, then its chunks extended, page by page.
    #[default]
    PerPage,
    /// QEMU 8 with the earlier KVM TDX patches: all pages of a section are added, then all of
    /// its chunks extended.
    PerSection,
}

/// Parsed TDVF metadata.
#[derive(Debug, Clone)]
pub struct TdvfMetadata {
    sections: Vec<TdvfSection>,
}

impl TdvfMetadata {
    /// Parses and validates the TDVF metadata of `firmware`.
    pub fn parse(firmware: &Firmware) -> Result<Self, TdvfError> {
        let fw = firmware.bytes();
        let len = fw.len();
        let offset_from_end = firmware
            .tdx_metadata_offset()
            .map_err(TdvfError::Firmware)?
            .ok_or(TdvfError::NoTdxMetadata)?;
        let out_of_bounds = |what, offset: u64, n: usize| TdvfError::OutOfBounds {
            what,
            offset,
            len: len_u64(n),
        };
        let start = usize_from(offset_from_end)
            .and_then(|o| len.checked_sub(o))
            .ok_or(out_of_bounds(
                "descriptor",
                u64::from(offset_from_end),
                DESCRIPTOR_LEN,
            ))?;
        let desc = fw.get(start..start + DESCRIPTOR_LEN).ok_or(out_of_bounds(
            "descriptor",
            len_u64(start),
            DESCRIPTOR_LEN,
        ))?;
        if &desc[..4] != b"TDVF" {
            return Err(TdvfError::BadSignature);
        }
        let version = read_u32(desc, 8).unwrap_or(0);
        if version != 1 {
            return Err(TdvfError::UnsupportedVersion(version));
        }
        let count = usize_from(read_u32(desc, 12).unwrap_or(0)).unwrap_or(usize::MAX);
        let table_len = count
            .checked_mul(SECTION_LEN)
            .and_then(|n| n.checked_add(DESCRIPTOR_LEN))
            .unwrap_or(usize::MAX);
        let table = fw
            .get(start..start.saturating_add(table_len))
            .ok_or(out_of_bounds("sections", len_u64(start), table_len))?;

        let mut added = 0u64;
        let sections = table[DESCRIPTOR_LEN..]
            .chunks_exact(SECTION_LEN)
            .enumerate()
            .map(|(index, raw)| {
                let s = parse_section(index, raw, len)?;
                if s.attributes & ATTR_PAGE_AUG == 0 {
                    added = added.saturating_add(s.size);
                    if added > MAX_ADDED_BYTES {
                        return Err(TdvfError::TooMuchMemory);
                    }
                }
                Ok(s)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { sections })
    }

    /// The sections in metadata (= load) order.
    pub fn sections(&self) -> &[TdvfSection] {
        &self.sections
    }

    /// The MRTD a TD launched from `firmware` (which these metadata were parsed from) reports.
    pub fn mrtd(&self, firmware: &Firmware, order: TdxPageOrder) -> Mrtd {
        let fw = firmware.bytes();
        let mut h = Sha384::new();
        for s in &self.sections {
            let pages = s.size / PAGE_SIZE;
            match order {
                TdxPageOrder::PerPage => {
                    for p in 0..pages {
                        page_add(&mut h, s, p);
                        extend_page(&mut h, fw, s, p);
                    }
                }
                TdxPageOrder::PerSection => {
                    for p in 0..pages {
                        page_add(&mut h, s, p);
                    }
                    for p in 0..pages {
                        extend_page(&mut h, fw, s, p);
                    }
                }
            }
        }
        Mrtd(h.finalize().into())
    }
}

fn parse_section(index: usize, raw: &[u8], image_len: usize) -> Result<TdvfSection, TdvfError> {
    let data_offset = read_u32(raw, 0).unwrap_or(0);
    let raw_size = read_u32(raw, 4).unwrap_or(0);
    let address = read_u64(raw, 8).unwrap_or(0);
    let size = read_u64(raw, 16).unwrap_or(0);
    let kind_raw = read_u32(raw, 24).unwrap_or(0);
    let attributes = read_u32(raw, 28).unwrap_or(0);
    let kind = match kind_raw {
        0 => TdvfSectionKind::Bfv,
        1 => TdvfSectionKind::Cfv,
        2 => TdvfSectionKind::TdHob,
        3 => TdvfSectionKind::TempMem,
        4 => TdvfSectionKind::PermMem,
        kind => return Err(TdvfError::UnsupportedSectionType { index, kind }),
    };
    let bad = |why| TdvfError::BadSection { index, why };
    if !address.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) || size == 0 {
        return Err(bad("address or size not page aligned"));
    }
    if address.checked_add(size).is_none() {
        return Err(bad("address range wraps"));
    }
    if u64::from(raw_size) > size {
        return Err(bad("raw data larger than its memory"));
    }
    if attributes & !(ATTR_MR_EXTEND | ATTR_PAGE_AUG) != 0 {
        return Err(bad("unknown attribute bits"));
    }
    let has_image_data = matches!(kind, TdvfSectionKind::Bfv | TdvfSectionKind::Cfv);
    if has_image_data {
        // QEMU copies `size` bytes of the image from `data_offset` into the TD.
        let end = u64::from(data_offset) + size;
        if end > len_u64(image_len) {
            return Err(TdvfError::OutOfBounds {
                what: "section data",
                offset: u64::from(data_offset),
                len: size,
            });
        }
    } else if attributes & ATTR_MR_EXTEND != 0 {
        // The contents would be QEMU's HOB or zero memory, not the image: not measurable here.
        return Err(bad("mr.extend on a section without image data"));
    }
    Ok(TdvfSection {
        data_offset,
        raw_size,
        address,
        size,
        kind,
        attributes,
    })
}

fn record(name: &[u8], gpa: u64) -> [u8; 128] {
    let mut r = [0u8; 128];
    r[..name.len()].copy_from_slice(name);
    r[16..24].copy_from_slice(&gpa.to_le_bytes());
    r
}

fn page_add(h: &mut Sha384, s: &TdvfSection, page: u64) {
    if s.attributes & ATTR_PAGE_AUG == 0 {
        h.update(record(b"MEM.PAGE.ADD", s.address + page * PAGE_SIZE));
    }
}

fn extend_page(h: &mut Sha384, fw: &[u8], s: &TdvfSection, page: u64) {
    if s.attributes & ATTR_MR_EXTEND == 0 {
        return;
    }
    // In bounds: parse checked data_offset + size <= image length for sections with data.
    let base = usize_from(u64::from(s.data_offset) + page * PAGE_SIZE).unwrap_or(usize::MAX);
    let Some(page_bytes) = fw.get(base..base.saturating_add(4096)) else {
        return;
    };
    for (i, chunk) in page_bytes.chunks_exact(CHUNK).enumerate() {
        let gpa = s.address + page * PAGE_SIZE + len_u64(i * CHUNK);
        h.update(record(b"MR.EXTEND", gpa));
        h.update(chunk);
    }
}

/// A 48-byte TDX MRTD.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mrtd(pub [u8; 48]);

impl Mrtd {
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Mrtd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mrtd({})", self.to_hex())
    }
}

impl Serialize for Mrtd {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovmf::TDX_METADATA_GUID;
    use crate::ovmf::tests::image_with_table;

    type RawSection = (u32, u32, u64, u64, u32, u32);

    fn image(pages: usize, sections: &[RawSection]) -> Vec<u8> {
        let off = 0x400usize;
        let mut img = image_with_table(
            pages,
            &[(
                TDX_METADATA_GUID,
                u32::try_from(off).unwrap().to_le_bytes().to_vec(),
            )],
        );
        let start = img.len() - off;
        img[start..start + 4].copy_from_slice(b"TDVF");
        let n = u32::try_from(sections.len()).unwrap();
        img[start + 4..start + 8].copy_from_slice(&(16 + 32 * n).to_le_bytes());
        img[start + 8..start + 12].copy_from_slice(&1u32.to_le_bytes());
        img[start + 12..start + 16].copy_from_slice(&n.to_le_bytes());
        for (i, s) in sections.iter().enumerate() {
            let o = start + 16 + 32 * i;
            img[o..o + 4].copy_from_slice(&s.0.to_le_bytes());
            img[o + 4..o + 8].copy_from_slice(&s.1.to_le_bytes());
            img[o + 8..o + 16].copy_from_slice(&s.2.to_le_bytes());
            img[o + 16..o + 24].copy_from_slice(&s.3.to_le_bytes());
            img[o + 24..o + 28].copy_from_slice(&s.4.to_le_bytes());
            img[o + 28..o + 32].copy_from_slice(&s.5.to_le_bytes());
        }
        img
    }

    fn parse(img: Vec<u8>) -> Result<TdvfMetadata, TdvfError> {
        TdvfMetadata::parse(&Firmware::parse(img).unwrap())
    }

    #[test]
    fn records_follow_the_tdx_module_layout() {
        let r = record(b"MEM.PAGE.ADD", 0xffe0_0000);
        assert_eq!(&r[..12], b"MEM.PAGE.ADD");
        assert_eq!(&r[12..16], &[0u8; 4]);
        assert_eq!(&r[16..24], &0xffe0_0000u64.to_le_bytes());
        assert!(r[24..].iter().all(|&b| b == 0));
    }

    #[test]
    fn single_added_page_matches_hand_computed_mrtd() {
        // One TEMP_MEM page (added, not extended): MRTD = SHA-384 of one MEM.PAGE.ADD record.
        let img = image(2, &[(0, 0, 0x80_0000, 0x1000, 3, 0)]);
        let fw = Firmware::parse(img.clone()).unwrap();
        let md = TdvfMetadata::parse(&fw).unwrap();
        let mut expect = vec![0u8; 128];
        expect[..12].copy_from_slice(b"MEM.PAGE.ADD");
        expect[16..24].copy_from_slice(&0x80_0000u64.to_le_bytes());
        let expect: [u8; 48] = Sha384::digest(&expect).into();
        assert_eq!(md.mrtd(&fw, TdxPageOrder::PerPage).0, expect);
        // A PAGE_AUG section adds nothing.
        let aug = Firmware::parse(image(2, &[(0, 0, 0x80_0000, 0x1000, 4, 2)])).unwrap();
        let empty: [u8; 48] = Sha384::digest([]).into();
        assert_eq!(
            TdvfMetadata::parse(&aug)
                .unwrap()
                .mrtd(&aug, TdxPageOrder::PerPage)
                .0,
            empty
        );
    }

    #[test]
    fn page_order_matters_only_for_multi_page_extended_sections() {
        let one = image(4, &[(0, 0x1000, 0xffff_c000, 0x1000, 0, 1)]);
        let fw = Firmware::parse(one).unwrap();
        let md = TdvfMetadata::parse(&fw).unwrap();
        assert_eq!(
            md.mrtd(&fw, TdxPageOrder::PerPage),
            md.mrtd(&fw, TdxPageOrder::PerSection)
        );
        let two = image(4, &[(0, 0x2000, 0xffff_c000, 0x2000, 0, 1)]);
        let fw = Firmware::parse(two).unwrap();
        let md = TdvfMetadata::parse(&fw).unwrap();
        assert_ne!(
            md.mrtd(&fw, TdxPageOrder::PerPage),
            md.mrtd(&fw, TdxPageOrder::PerSection)
        );
    }

    #[test]
    fn extended_contents_change_the_mrtd() {
        let mut img = image(4, &[(0, 0x2000, 0xffff_c000, 0x2000, 0, 1)]);
        let fw = Firmware::parse(img.clone()).unwrap();
        let a = TdvfMetadata::parse(&fw)
            .unwrap()
            .mrtd(&fw, TdxPageOrder::PerPage);
        img[0x1fff] ^= 1;
        let fw = Firmware::parse(img).unwrap();
        let b = TdvfMetadata::parse(&fw)
            .unwrap()
            .mrtd(&fw, TdxPageOrder::PerPage);
        assert_ne!(a, b);
    }

    #[test]
    fn refuses_missing_and_out_of_bounds_metadata() {
        assert!(matches!(
            parse(image_with_table(1, &[])),
            Err(TdvfError::NoTdxMetadata)
        ));
        let far = image_with_table(1, &[(TDX_METADATA_GUID, 0x9000u32.to_le_bytes().to_vec())]);
        assert!(matches!(
            parse(far),
            Err(TdvfError::OutOfBounds {
                what: "descriptor",
                ..
            })
        ));
        // Section count running past the end of the image.
        let mut img = image(2, &[(0, 0, 0x80_0000, 0x1000, 3, 0)]);
        let start = img.len() - 0x400;
        img[start + 12..start + 16].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(
            parse(img),
            Err(TdvfError::OutOfBounds {
                what: "sections",
                ..
            })
        ));
        // Section data beyond the image.
        let img = image(2, &[(0x1000, 0x2000, 0xffff_c000, 0x2000, 0, 1)]);
        assert!(matches!(
            parse(img),
            Err(TdvfError::OutOfBounds {
                what: "section data",
                ..
            })
        ));
    }

    #[test]
    fn refuses_bad_descriptor_and_sections() {
        let mut img = image(2, &[(0, 0, 0x80_0000, 0x1000, 3, 0)]);
        let start = img.len() - 0x400;
        img[start] = b'X';
        assert!(matches!(parse(img), Err(TdvfError::BadSignature)));
        let mut img = image(2, &[(0, 0, 0x80_0000, 0x1000, 3, 0)]);
        img[start + 8] = 2;
        assert!(matches!(parse(img), Err(TdvfError::UnsupportedVersion(2))));
        for (s, what) in [
            ((0, 0, 0x80_0800, 0x1000, 3, 0), "misaligned"),
            ((0, 0, 0x80_0000, 0, 3, 0), "empty"),
            ((0, 0x2000, 0x80_0000, 0x1000, 3, 0), "raw > size"),
            ((0, 0, 0x80_0000, 0x1000, 3, 1), "extend without data"),
            ((0, 0, 0x80_0000, 0x1000, 3, 4), "unknown attribute"),
            ((0, 0, u64::MAX - 0xfff, 0x2000, 3, 0), "wraps"),
        ] {
            assert!(
                matches!(parse(image(2, &[s])), Err(TdvfError::BadSection { .. })),
                "{what}"
            );
        }
        assert!(matches!(
            parse(image(2, &[(0, 0, 0x80_0000, 0x1000, 5, 0)])),
            Err(TdvfError::UnsupportedSectionType { kind: 5, .. })
        ));
        assert!(matches!(
            parse(image(
                2,
                &[(0, 0, 0x80_0000, MAX_ADDED_BYTES + 0x1000, 3, 0)]
            )),
            Err(TdvfError::TooMuchMemory)
        ));
    }
}
