//! The PE Authenticode digest of a UEFI image: what OVMF extends into RTMR1 (TDX) when it loads
//! the kernel, and what a Secure Boot signature signs.
//!
//! The digest covers the headers (without the optional header's checksum and its certificate
//! table directory entry), then each section's raw data in file order, then any data after the
//! last section that is not the certificate table (Microsoft's "Windows Authenticode Portable
//! Executable Signature Format", section "Calculating the PE Image Hash"; EDK2 hashes the same
//! ranges when it measures an image).

use sha2::Digest;
use sha2::digest::Output;

/// The PE/COFF offsets the digest needs.
const DOS_MAGIC: &[u8; 2] = b"MZ";
const PE_MAGIC: &[u8; 4] = b"PE\0\0";
const PE32_MAGIC: u16 = 0x10b;
const PE32_PLUS_MAGIC: u16 = 0x20b;
/// Index of the certificate table in the data directories.
const CERT_TABLE_INDEX: usize = 4;
const SECTION_HEADER_LEN: usize = 40;

/// Why an image has no Authenticode digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthenticodeError {
    /// A header or section runs past the end of the image.
    #[error("pe image is truncated at {what}")]
    Truncated {
        /// Which part.
        what: &'static str,
    },
    /// The image is not a PE image (no `MZ` / `PE` signature, or an unknown optional header).
    #[error("not a pe image: {what}")]
    NotPe {
        /// What was wrong.
        what: &'static str,
    },
}

fn u16_at(b: &[u8], at: usize, what: &'static str) -> Result<u16, AuthenticodeError> {
    b.get(at..at.saturating_add(2))
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(AuthenticodeError::Truncated { what })
}

fn u32_at(b: &[u8], at: usize, what: &'static str) -> Result<usize, AuthenticodeError> {
    b.get(at..at.saturating_add(4))
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .and_then(|v| usize::try_from(v).ok())
        .ok_or(AuthenticodeError::Truncated { what })
}

fn range<'a>(
    b: &'a [u8],
    start: usize,
    end: usize,
    what: &'static str,
) -> Result<&'a [u8], AuthenticodeError> {
    b.get(start..end)
        .ok_or(AuthenticodeError::Truncated { what })
}

/// The Authenticode digest of `image` with the digest algorithm `D` (SHA-384 for TDX RTMRs).
pub fn authenticode_digest<D: Digest>(image: &[u8]) -> Result<Output<D>, AuthenticodeError> {
    if image.get(..2) != Some(&DOS_MAGIC[..]) {
        return Err(AuthenticodeError::NotPe {
            what: "no mz header",
        });
    }
    let pe = u32_at(image, 0x3c, "dos header")?;
    if image.get(pe..pe.saturating_add(4)) != Some(&PE_MAGIC[..]) {
        return Err(AuthenticodeError::NotPe {
            what: "no pe signature",
        });
    }
    let coff = pe + 4;
    let sections = usize::from(u16_at(image, coff + 2, "coff header")?);
    let optional_len = usize::from(u16_at(image, coff + 16, "coff header")?);
    let opt = coff + 20;
    let (count_at, dirs_at) = match u16_at(image, opt, "optional header")? {
        PE32_MAGIC => (opt + 92, opt + 96),
        PE32_PLUS_MAGIC => (opt + 108, opt + 112),
        _ => {
            return Err(AuthenticodeError::NotPe {
                what: "unknown optional header magic",
            });
        }
    };
    let checksum_at = opt + 64;
    let headers_len = u32_at(image, opt + 60, "optional header")?;
    let dir_count = u32_at(image, count_at, "optional header")?;
    let mut hasher = D::new();
    hasher.update(range(image, 0, checksum_at, "optional header")?);
    let mut cert_size = 0;
    if dir_count > CERT_TABLE_INDEX {
        let cert_dir = dirs_at + 8 * CERT_TABLE_INDEX;
        cert_size = u32_at(image, cert_dir + 4, "data directories")?;
        hasher.update(range(image, checksum_at + 4, cert_dir, "data directories")?);
        hasher.update(range(image, cert_dir + 8, headers_len, "headers")?);
    } else {
        hasher.update(range(image, checksum_at + 4, headers_len, "headers")?);
    }
    let table = opt + optional_len;
    let mut raw: Vec<(usize, usize)> = Vec::with_capacity(sections.min(image.len() / 40));
    for i in 0..sections {
        let header = table + i * SECTION_HEADER_LEN;
        let size = u32_at(image, header + 16, "section table")?;
        let ptr = u32_at(image, header + 20, "section table")?;
        if size > 0 {
            raw.push((ptr, size));
        }
    }
    raw.sort_unstable();
    let mut hashed = headers_len;
    for (ptr, size) in raw {
        let end = ptr
            .checked_add(size)
            .ok_or(AuthenticodeError::Truncated { what: "section" })?;
        hasher.update(range(image, ptr, end, "section")?);
        hashed = hashed.saturating_add(size);
    }
    if image.len() > hashed.saturating_add(cert_size) {
        hasher.update(range(
            image,
            hashed,
            image.len() - cert_size,
            "trailing data",
        )?);
    }
    Ok(hasher.finalize())
}

#[cfg(test)]
pub(crate) mod tests {
    use sha2::{Sha256, Sha384};

    use super::*;

    /// A minimal PE32+ image: headers (0x200), two sections, trailing data, a certificate table.
    pub(crate) fn tiny_pe(cert: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 0x200];
        img[..2].copy_from_slice(b"MZ");
        img[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        img[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = 0x84;
        img[coff + 2..coff + 4].copy_from_slice(&2u16.to_le_bytes());
        img[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
        let opt = coff + 20;
        img[opt..opt + 2].copy_from_slice(&PE32_PLUS_MAGIC.to_le_bytes());
        img[opt + 60..opt + 64].copy_from_slice(&0x200u32.to_le_bytes());
        img[opt + 64..opt + 68].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        img[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
        let table = opt + 240;
        // Section table out of file order: the second header points at the earlier data.
        for (i, (ptr, size)) in [(0x300u32, 0x80u32), (0x200, 0x100)].iter().enumerate() {
            let h = table + i * 40;
            img[h + 16..h + 20].copy_from_slice(&size.to_le_bytes());
            img[h + 20..h + 24].copy_from_slice(&ptr.to_le_bytes());
        }
        img.extend((0..0x180u32).map(|i| u8::try_from(i % 251).unwrap()));
        img.extend_from_slice(b"trailing");
        let cert_at = u32::try_from(img.len()).unwrap();
        let cert_dir = opt + 112 + 8 * 4;
        img[cert_dir..cert_dir + 4].copy_from_slice(&cert_at.to_le_bytes());
        img[cert_dir + 4..cert_dir + 8]
            .copy_from_slice(&u32::try_from(cert.len()).unwrap().to_le_bytes());
        img.extend_from_slice(cert);
        img
    }

    #[test]
    fn digest_skips_checksum_cert_entry_and_cert_table() {
        let a = tiny_pe(b"signature one");
        let b = tiny_pe(b"another, longer signature");
        let da = authenticode_digest::<Sha384>(&a).unwrap();
        assert_eq!(da, authenticode_digest::<Sha384>(&b).unwrap());
        // By hand: the hashed ranges of the image, sections in file order, trailing data.
        let opt = 0x84 + 20;
        let cert_dir = opt + 112 + 32;
        let mut h = Sha384::new();
        h.update(&a[..opt + 64]);
        h.update(&a[opt + 68..cert_dir]);
        h.update(&a[cert_dir + 8..0x200]);
        h.update(&a[0x200..0x300]);
        h.update(&a[0x300..0x380]);
        h.update(b"trailing");
        assert_eq!(da, h.finalize());
        // The checksum does not count; section data does.
        let mut c = a.clone();
        c[opt + 64] ^= 0xff;
        assert_eq!(authenticode_digest::<Sha384>(&c).unwrap(), da);
        let mut d = a.clone();
        d[0x210] ^= 1;
        assert_ne!(authenticode_digest::<Sha384>(&d).unwrap(), da);
    }

    #[test]
    fn refuses_non_pe_and_truncated_images() {
        let img = tiny_pe(b"sig");
        assert_eq!(
            authenticode_digest::<Sha384>(b"\x7fELF...."),
            Err(AuthenticodeError::NotPe {
                what: "no mz header"
            })
        );
        let mut no_pe = img.clone();
        no_pe[0x80] = b'X';
        assert_eq!(
            authenticode_digest::<Sha384>(&no_pe),
            Err(AuthenticodeError::NotPe {
                what: "no pe signature"
            })
        );
        assert_eq!(
            authenticode_digest::<Sha384>(&img[..0x100]),
            Err(AuthenticodeError::Truncated {
                what: "optional header"
            })
        );
        assert_eq!(
            authenticode_digest::<Sha384>(&img[..0x320]),
            Err(AuthenticodeError::Truncated { what: "section" })
        );
        let mut huge = img.clone();
        let h = 0x84 + 20 + 240;
        huge[h + 16..h + 20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            authenticode_digest::<Sha384>(&huge),
            Err(AuthenticodeError::Truncated { what: "section" })
        );
        assert_eq!(
            authenticode_digest::<Sha384>(b"MZ"),
            Err(AuthenticodeError::Truncated { what: "dos header" })
        );
    }

    /// Debian's signed cloud kernel (what `scripts/setup` caches): its embedded Authenticode
    /// signature carries Debian's own SHA-256 image digest, an independent reference
    /// (`osslsigncode verify -in vmlinuz` prints it as "Current message digest").
    const DEBIAN_KERNEL: &str = ".cache/tsuba/kernel/linux-image-6.12.95+deb12-cloud-amd64_6.12.95-1~bpo12+1/boot/vmlinuz-6.12.95+deb12-cloud-amd64";
    const DEBIAN_KERNEL_SIGNED_SHA256: &str =
        "c830f84c0c40deb7d49de5df2f4c1c471b7e7678d992d7ebb6a1c29b61fb2a7a";

    #[test]
    fn debian_kernel_matches_its_signed_digest() {
        let path = std::env::var_os("TSUBA_TEST_KERNEL").map_or_else(
            || {
                std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(DEBIAN_KERNEL)
            },
            std::path::PathBuf::from,
        );
        let image = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "kernel missing at {} ({e}): scripts/setup caches it, or point \
                 TSUBA_TEST_KERNEL at Debian's signed 6.12.95 cloud kernel",
                path.display()
            )
        });
        assert_eq!(
            hex::encode(authenticode_digest::<Sha256>(&image).unwrap()),
            DEBIAN_KERNEL_SIGNED_SHA256
        );
    }
}
