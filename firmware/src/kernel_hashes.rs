//! The SEV kernel-hashes table: the SHA-256 of the kernel, initrd and command line that QEMU
//! writes into the firmware's hashes page for measured direct boot (`kernel-hashes=on`), and
//! that OVMF checks before it starts the kernel.
//!
//! Layout (QEMU `target/i386/sev.c`, `SevHashTable`): a header GUID and `u16` length, then three
//! entries (cmdline, initrd, kernel), each a GUID, a `u16` length and a SHA-256; the whole table
//! is zero-padded to a multiple of 16 bytes. The command line is hashed with its terminating NUL;
//! a missing initrd hashes as the empty string.

use sha2::{Digest, Sha256};

use crate::ovmf::{Guid, guid};

/// 9438d606-4f22-4cc9-b479-a793d411fd21
const TABLE_HEADER_GUID: Guid = guid(
    0x9438_d606,
    0x4f22,
    0x4cc9,
    [0xb4, 0x79, 0xa7, 0x93, 0xd4, 0x11, 0xfd, 0x21],
);
/// 4de79437-abd2-427f-b835-d5b172d2045b
const KERNEL_ENTRY_GUID: Guid = guid(
    0x4de7_9437,
    0xabd2,
    0x427f,
    [0xb8, 0x35, 0xd5, 0xb1, 0x72, 0xd2, 0x04, 0x5b],
);
/// 44baf731-3a2f-4bd7-9af1-41e29169781d
const INITRD_ENTRY_GUID: Guid = guid(
    0x44ba_f731,
    0x3a2f,
    0x4bd7,
    [0x9a, 0xf1, 0x41, 0xe2, 0x91, 0x69, 0x78, 0x1d],
);
/// 97d02dd8-bd20-4c94-aa78-e7714d36ab2a
const CMDLINE_ENTRY_GUID: Guid = guid(
    0x97d0_2dd8,
    0xbd20,
    0x4c94,
    [0xaa, 0x78, 0xe7, 0x71, 0x4d, 0x36, 0xab, 0x2a],
);

const ENTRY_LEN: usize = 16 + 2 + 32;
const TABLE_LEN: usize = 16 + 2 + 3 * ENTRY_LEN;
/// The table as QEMU writes it, padded to 16 bytes.
pub(crate) const PADDED_TABLE_LEN: usize = TABLE_LEN.next_multiple_of(16);

/// The three SHA-256 digests of a measured direct boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelHashes {
    /// SHA-256 of the kernel image.
    pub kernel: [u8; 32],
    /// SHA-256 of the initrd (of the empty string when there is none).
    pub initrd: [u8; 32],
    /// SHA-256 of the command line followed by its NUL terminator.
    pub cmdline: [u8; 32],
}

impl KernelHashes {
    /// The digests of in-memory images; `cmdline` is hashed with its NUL.
    pub fn of(kernel: &[u8], initrd: Option<&[u8]>, cmdline: Option<&str>) -> Self {
        Self {
            kernel: Sha256::digest(kernel).into(),
            initrd: Sha256::digest(initrd.unwrap_or_default()).into(),
            cmdline: cmdline_sha256(cmdline),
        }
    }

    /// The table bytes as QEMU writes them (176 bytes).
    pub fn table(&self) -> [u8; PADDED_TABLE_LEN] {
        let mut t = [0u8; PADDED_TABLE_LEN];
        t[..16].copy_from_slice(&TABLE_HEADER_GUID);
        t[16..18].copy_from_slice(&len_u16(TABLE_LEN).to_le_bytes());
        let entries = [
            (CMDLINE_ENTRY_GUID, &self.cmdline),
            (INITRD_ENTRY_GUID, &self.initrd),
            (KERNEL_ENTRY_GUID, &self.kernel),
        ];
        for (i, (id, hash)) in entries.into_iter().enumerate() {
            let at = 18 + i * ENTRY_LEN;
            t[at..at + 16].copy_from_slice(&id);
            t[at + 16..at + 18].copy_from_slice(&len_u16(ENTRY_LEN).to_le_bytes());
            t[at + 18..at + ENTRY_LEN].copy_from_slice(hash);
        }
        t
    }
}

/// SHA-256 of the command line as QEMU hashes it: the bytes followed by a NUL.
pub(crate) fn cmdline_sha256(cmdline: Option<&str>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(cmdline.unwrap_or_default().as_bytes());
    h.update([0u8]);
    h.finalize().into()
}

fn len_u16(n: usize) -> u16 {
    // Both lengths are small compile-time constants.
    u16::try_from(n).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_layout_matches_qemu() {
        let h = KernelHashes {
            kernel: [0xaa; 32],
            initrd: [0xbb; 32],
            cmdline: [0xcc; 32],
        };
        let t = h.table();
        assert_eq!(t.len(), 0xb0);
        // Header GUID in EFI byte order, then length 0xa8.
        assert_eq!(hex::encode(&t[..16]), "06d63894224fc94cb479a793d411fd21");
        assert_eq!(&t[16..18], &[0xa8, 0x00]);
        // cmdline entry first, length 0x32, then its hash.
        assert_eq!(hex::encode(&t[18..34]), "d82dd09720bd944caa78e7714d36ab2a");
        assert_eq!(&t[34..36], &[0x32, 0x00]);
        assert_eq!(&t[36..68], &[0xcc; 32]);
        assert_eq!(&t[68 + 18..68 + 50], &[0xbb; 32]);
        assert_eq!(
            hex::encode(&t[118..134]),
            "3794e74dd2ab7f42b835d5b172d2045b"
        );
        assert_eq!(&t[136..168], &[0xaa; 32]);
        assert_eq!(&t[168..], &[0u8; 8]);
    }

    #[test]
    fn cmdline_is_hashed_with_its_nul_and_missing_initrd_as_empty() {
        let h = KernelHashes::of(b"kernel", None, None);
        // sha256 of a single NUL byte: printf '\0' | sha256sum
        assert_eq!(
            hex::encode(h.cmdline),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        // sha256 of the empty string.
        assert_eq!(
            hex::encode(h.initrd),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let h2 = KernelHashes::of(b"kernel", Some(b""), Some(""));
        assert_eq!(h, h2);
        assert_ne!(
            KernelHashes::of(b"kernel", None, Some("x")).cmdline,
            h.cmdline
        );
    }
}
